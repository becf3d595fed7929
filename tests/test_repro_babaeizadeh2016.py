"""NoiseOut's pieces: the correlation, the fitted line, the merge surgery, noise outputs, the smaller network."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.babaeizadeh2016 import (
    Noise,
    apply_plan,
    correlation,
    drop_noise_outputs,
    hidden_activations,
    linear_fit,
    max_correlation,
    merge_layer,
    merge_plan,
    noiseout_loss,
)
from torch import nn

from atlas.harness import measure, models


def _mlp_with_linear_twin(alpha: float = 2.0) -> nn.Module:
    """A 6-16-5-3 ReLU MLP whose first-layer neuron 3 is ``alpha`` times neuron 1 (so, after the
    ReLU, ``h_3 = alpha h_1`` exactly for alpha > 0)."""
    gen = torch.Generator().manual_seed(0)
    model = models.build("mlp", (6,), 3, hidden=(16, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-16, 17, p.shape, generator=gen).float() / 8)
        model[1].weight[3] = alpha * model[1].weight[1]
        model[1].bias[3] = alpha * model[1].bias[1]
    return model.eval()


def test_correlation_values_and_dead_neurons() -> None:
    acts = torch.tensor([[0.0, 1.0, 2.0, 5.0], [1.0, 3.0, 0.0, 5.0], [2.0, 5.0, 1.0, 5.0]])
    rho = correlation(acts)
    assert rho[0, 1].item() == pytest.approx(1.0)  # column 1 = 2 * column 0 + 1
    assert rho[0, 2].item() == pytest.approx(-0.5)
    assert rho[3, 0].item() == 1.0 and rho[2, 3].item() == 1.0  # a constant column is predicted by any
    assert torch.all(rho.diagonal() == 0)
    # the correlation gain measure ignores the constant column: 1, 1, max(0.5, 0.5) = 0.5
    assert max_correlation(acts) == pytest.approx((1 + 1 + 0.5) / 3)


def test_linear_fit_is_least_squares() -> None:
    b = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert linear_fit(3 * b - 1, b) == pytest.approx((3.0, -1.0))
    assert linear_fit(b, torch.full((4,), 7.0)) == pytest.approx((0.0, 1.5))  # constant h_b: the mean


def test_merge_plan_takes_the_most_correlated_pair_and_removes_the_smaller_variance() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.rand(50, 3, generator=g)
    acts = torch.cat([base, 0.5 * base[:, 1:2] + 0.25, torch.zeros(50, 1)], dim=1)  # 3 = line of 1; 4 dead
    plan = merge_plan(acts, 2)
    assert plan[0][0] == 4  # the dead neuron goes first (|rho| = 1 with any)
    assert plan[0][2] == 0.0
    a, b, alpha, beta = plan[1]
    assert (a, b) == (3, 1)  # var(h_3) = var(h_1) / 4: neuron 3 is removed into neuron 1
    assert (alpha, beta) == pytest.approx((0.5, 0.25))
    with pytest.raises(ValueError, match="cannot remove 5 of 5"):
        merge_plan(acts, 5)


def test_apply_plan_folds_the_fitted_line_into_the_next_layer() -> None:
    w = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    c = torch.tensor([0.5, 0.0])
    kept, w2, c2 = apply_plan(w, c, [(2, 0, 2.0, 1.0)])
    assert kept.tolist() == [0, 1]
    torch.testing.assert_close(w2, torch.tensor([[7.0, 2.0], [8.0, -1.0]]))
    torch.testing.assert_close(c2, torch.tensor([3.5, 4.0]))


def test_merging_a_linear_twin_leaves_the_output_unchanged_and_dropping_it_does_not() -> None:
    model = _mlp_with_linear_twin(alpha=2.0)
    x = torch.randint(-16, 17, (128, 6)).float() / 8
    pruned = merge_layer(model, 0, 15, x)
    assert pruned[1].out_features == 15
    assert measure.count_params(pruned) == measure.count_params(model) - (6 + 1 + 5)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)
        # the same neuron removed without the surgery changes the function
        acts = hidden_activations(model, 0, x)
        kept = [i for i in range(16) if i != merge_plan(acts, 1)[0][0]]
        dropped = models.build("mlp", (6,), 3, hidden=(15, 5))
        dropped.load_state_dict({**{k: v for k, v in model.state_dict().items() if not k.startswith(("1.", "3."))},
                                 "1.weight": model[1].weight[kept], "1.bias": model[1].bias[kept],
                                 "3.weight": model[3].weight[:, kept], "3.bias": model[3].bias})
        assert not torch.allclose(dropped(x), model(x), atol=1e-3)


def test_merge_layer_builds_a_smaller_lenet_300_100() -> None:
    model = models.build("lenet-300-100", (1, 28, 28), 14).eval()
    x = torch.randn(200, 1, 28, 28)
    small = merge_layer(merge_layer(model, 0, 30, x), 1, 10, x)
    assert (small[1].out_features, small[3].out_features, small[5].in_features) == (30, 10, 10)
    assert measure.flops(small, (1, 28, 28)) < measure.flops(model, (1, 28, 28)) / 9
    deployed = drop_noise_outputs(small, 10)
    assert deployed[5].out_features == 10
    torch.testing.assert_close(deployed(x[:4]), small(x[:4])[:, :10])


def test_noise_outputs_raise_the_loss_only_through_the_extra_outputs() -> None:
    torch.manual_seed(0)
    model = models.build("mlp", (4,), 5, hidden=(8,))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    ce = torch.nn.functional.cross_entropy(model(x)[:, :3], y)
    plain = noiseout_loss(3, Noise(outputs=0))(model, x, y, torch.arange(16))
    noisy = noiseout_loss(3, Noise(outputs=2))(model, x, y, torch.arange(16))
    assert plain.item() == pytest.approx(ce.item())
    assert noisy.item() > ce.item()
