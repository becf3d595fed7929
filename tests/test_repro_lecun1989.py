"""Optimal Brain Damage: the diagonal second derivatives, the saliency and the delete/retrain recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from atlas_reproductions import lecun1989
from atlas_reproductions.lecun1989 import (
    gauss_newton_diagonal,
    kept_for,
    lowest_saliency_masks,
    n_weights,
    obd,
    output_hessian_factor,
    per_example_loss,
    quadratic_form,
    saliencies,
    training_loss,
)
from torch import nn
from torch.nn import functional as F

from atlas.harness import controls
from atlas.harness.run import Run


def _hessian_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      loss: str = "cross-entropy") -> dict[str, torch.Tensor]:
    """The diagonal of the true Hessian of the objective's mean, parameter by parameter (autograd)."""
    params = dict(model.named_parameters())
    out = {}
    for name, p in params.items():
        def mean_loss(v: torch.Tensor, name: str = name, p: torch.Tensor = p) -> torch.Tensor:
            state = {k: (v.view_as(p) if k == name else q.detach()) for k, q in params.items()}
            return per_example_loss(torch.func.functional_call(model, state, (x,)), y, loss).mean()

        out[name] = torch.autograd.functional.hessian(mean_loss, p.detach().flatten()).diagonal().view_as(p)
    return out


def _mlp(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), act(), nn.Linear(5, 4), act(), nn.Linear(4, 3)).double()


def test_output_hessian_factor_squares_to_the_softmax_cross_entropy_hessian() -> None:
    logits = torch.randn(4, 5, dtype=torch.float64)
    p = logits.softmax(-1)
    s = output_hessian_factor(logits)
    assert torch.allclose(s @ s.transpose(1, 2), torch.diag_embed(p) - p[:, :, None] * p[:, None, :], atol=1e-14)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_diagonal_is_the_exact_hessian_diagonal_of_a_relu_mlp(loss: str) -> None:
    """A ReLU network is piecewise linear in any single weight, so the Levenberg-Marquardt (Gauss-Newton)
    diagonal loses nothing: it equals the true Hessian's diagonal, whatever the batching."""
    model = _mlp()
    x, y = torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,))
    h = gauss_newton_diagonal(model, x, batch_size=7, with_bias=True, loss=loss)
    exact = _hessian_diagonal(model, x, y, loss)
    assert set(h) == set(exact)
    for name in h:
        assert torch.allclose(h[name], exact[name], rtol=1e-9, atol=1e-14), name
    assert all(float(v.min()) >= 0 for v in h.values())  # guaranteed positive (Sec. 2.1)


def test_squared_error_is_the_papers_objective_and_training_loss() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([2])
    assert float(per_example_loss(logits, y, "mse")) == pytest.approx(0.25 + 1.0 + 1.0)
    assert torch.equal(output_hessian_factor(logits, "mse")[0], 2.0**0.5 * torch.eye(3, dtype=torch.float64))
    model = _mlp()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    with torch.no_grad():
        assert float(training_loss("mse")(model, x, y, torch.arange(4))) == pytest.approx(
            float(per_example_loss(model(x), y, "mse").mean()))


def test_diagonal_of_a_convolution_sums_the_shared_weight_before_squaring() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4, 3)).double()
    x, y = torch.randn(10, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    h = gauss_newton_diagonal(model, x, batch_size=4, with_bias=True)
    exact = _hessian_diagonal(model, x, y)
    for name in h:
        assert torch.allclose(h[name], exact[name], rtol=1e-9, atol=1e-14), name


def test_the_gauss_newton_diagonal_drops_the_curvature_of_a_smooth_network() -> None:
    """The test above can fail: with tanh units the f'' terms the Levenberg-Marquardt approximation
    drops are not zero, and the true diagonal differs from the one computed here."""
    model = _mlp(nn.Tanh)
    x, y = torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,))
    h = gauss_newton_diagonal(model, x)
    exact = _hessian_diagonal(model, x, y)
    assert not torch.allclose(h["1.weight"], exact["1.weight"], rtol=1e-3)


def test_saliency_is_the_second_order_cost_of_deleting_one_weight() -> None:
    """Eq. 3 with Eq. 1: deleting weight k (du_k = -u_k) changes E by -g_k u_k + h_kk u_k^2 / 2 + O(u_k^3);
    for a small weight, the saliency is that second-order term."""
    model = _mlp()
    x, y = torch.randn(50, 6, dtype=torch.float64), torch.randint(0, 3, (50,))
    w = model[3].weight
    with torch.no_grad():
        w[1, 2] = 1e-3
    s = saliencies(model, gauss_newton_diagonal(model, x))["3.weight"][1, 2]
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, w)
    with torch.no_grad():
        w[1, 2] = 0.0
        deleted = F.cross_entropy(model(x), y)
    second_order = float(deleted - loss.detach()) + float(g[1, 2]) * 1e-3
    assert float(s) > 0
    assert second_order == pytest.approx(float(s), rel=1e-3)


def test_a_large_weight_on_a_dead_input_has_no_saliency() -> None:
    """'Magnitude equals saliency' is what OBD moves beyond: a large weight that reads an input which is
    always zero changes nothing when deleted; OBD deletes it first, magnitude deletion last."""
    model = _mlp()
    x = torch.randn(30, 6, dtype=torch.float64)
    x[:, 4] = 0.0
    with torch.no_grad():
        model[1].weight[2, 4] = 10.0
    scores = saliencies(model, gauss_newton_diagonal(model, x))
    assert float(scores["1.weight"][2, 4]) == 0.0
    total = n_weights(model)
    worthless = sum(int((s == 0).sum()) for s in scores.values())  # with the weights of dead units
    assert 0 < worthless < total // 2
    by_saliency = lowest_saliency_masks(scores, total - worthless)
    assert not by_saliency["1.weight"][2, 4]
    by_magnitude = controls.global_magnitude_masks(model, total / (total - worthless))
    assert by_magnitude["1.weight"][2, 4]  # the largest weight of all


def test_masks_keep_the_highest_scores_and_never_revive_a_deleted_weight() -> None:
    scores = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.5]], dtype=torch.float64),
              "b": torch.tensor([4.0, 2.0, 0.1], dtype=torch.float64)}
    masks = lowest_saliency_masks(scores, 3)
    assert masks["a"].tolist() == [[True, False], [True, False]] and masks["b"].tolist() == [True, False, False]
    # ``alive``: the 5.0 weight was deleted earlier, so it stays deleted even though it scores highest
    alive = {"a": torch.tensor([[False, True], [True, True]]), "b": torch.ones(3, dtype=torch.bool)}
    again = lowest_saliency_masks(scores, 3, alive)
    assert again["a"].tolist() == [[False, False], [True, False]] and again["b"].tolist() == [True, True, False]


def test_the_recipe_reaches_the_ratio_and_keeps_deleted_weights_at_zero(tmp_path: Path) -> None:
    cfg = {"dataset": "digits", "train_limit": 300, "test_limit": 200, "model": "lenet-300-100",
           "dense": {"steps": 5}, "deletion": {"examples": 100, "rounds": 2, "retrain": {"steps": 4, "lr": 0.05},
                                              "ratios": [2.0, 4.0, 8.0]}}
    run = Run("lecun1989", "smoke", cfg, 0, cache_dir=tmp_path, progress=False)
    dense = run.model("lenet-300-100")
    x = run.dataset().train.x[:100]
    pruned, masks = obd(run, dense, 4.0, x, rounds=2, retrain=run.train_config(lr=0.05, steps=4))
    assert controls.compression_ratio(pruned) == pytest.approx(n_weights(dense) / kept_for(dense, 4.0))
    params = dict(pruned.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)
        assert torch.count_nonzero(params[name][mask]) == int(mask.sum())  # the survivors were retrained
    assert [b["steps"] for b in run.budgets] == [4, 4]
    assert lecun1989.retrain_budget(run).steps == 8  # the baseline's and the control's budget


def test_paper_levels() -> None:
    assert lecun1989.ratio_after_deleting(1500) == pytest.approx(2578 / 1078)
    assert lecun1989.ratio_after_deleting(800) == pytest.approx(2578 / 1778)


def test_the_quadratic_form_keeps_the_cross_terms_the_diagonal_drops() -> None:
    model = _mlp()
    x, y = torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,))
    exact = _hessian_diagonal(model, x, y)
    params = dict(model.named_parameters())
    one = {"3.weight": torch.zeros_like(params["3.weight"])}
    one["3.weight"][1, 2] = 0.5
    # one weight: the quadratic form is its diagonal term ...
    assert quadratic_form(model, x, y, one, batch_size=7) == pytest.approx(0.25 * float(exact["3.weight"][1, 2]))
    # ... two weights of one unit: their cross term as well (the full Hessian, by autograd)
    two = {"1.weight": torch.zeros_like(params["1.weight"])}
    two["1.weight"][0, :2] = torch.tensor([0.3, -0.2], dtype=torch.float64)

    def along(t: torch.Tensor) -> torch.Tensor:
        state = {k: (v.detach() + t * two[k] if k in two else v.detach()) for k, v in params.items()}
        return F.cross_entropy(torch.func.functional_call(model, state, (x,)), y)

    second = torch.autograd.functional.hessian(along, torch.zeros((), dtype=torch.float64))
    assert quadratic_form(model, x, y, two, batch_size=7) == pytest.approx(float(second), rel=1e-9)
    diagonal = float((exact["1.weight"] * two["1.weight"] ** 2).sum())
    assert abs(float(second) - diagonal) > 1e-6 * abs(diagonal)
