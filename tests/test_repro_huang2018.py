"""Sparse structure selection: the APG step on the scaling factors and the removal of zero-factor neurons."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from atlas_reproductions.huang2018 import (
    APG,
    factors,
    neurons_for_ratio,
    remove_neurons,
    selected_neurons,
    soft_threshold,
    weight_count,
    with_scaling_factors,
)

from atlas.harness import models


def _mlp(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return with_scaling_factors(models.build("mlp", (6,), 3, hidden=(8, 5)))


def test_soft_threshold() -> None:
    z = torch.tensor([-2.0, -0.3, 0.0, 0.2, 0.5, 3.0])
    torch.testing.assert_close(soft_threshold(z, 0.5), torch.tensor([-1.5, 0.0, 0.0, 0.0, 0.0, 2.5]))


def test_apg_step_on_the_factors_matches_the_released_update() -> None:
    """Two steps of the authors' APGNAG on one factor vector, computed by hand."""
    lam = torch.nn.Parameter(torch.tensor([1.0, 0.05, 0.5]))
    opt = APG([{"params": [lam], "gamma": 0.5, "weight_decay": 0.0}], lr=0.1, momentum=0.9, weight_decay=0.0)
    grads = [torch.tensor([0.2, 0.1, -1.0]), torch.tensor([0.0, 0.0, 0.0])]
    ref, mom = torch.tensor([1.0, 0.05, 0.5]), torch.zeros(3)
    for step, g in enumerate(grads):
        lam.grad = g.clone()
        opt.step()
        z = ref - 0.1 * g
        z = torch.sign(z) * (z.abs() - 0.05).clamp_min(0)
        mom = 0.9 * mom + z - ref
        ref = (z + 0.9 * mom).clamp_min(0)
        torch.testing.assert_close(lam.detach(), ref)
        if step == 0:  # by hand: z = S(1 - 0.02) = 0.93, v = -0.07, lambda = 0.93 - 0.063; 0.04 -> 0; 0.6 -> 0.55
            torch.testing.assert_close(lam.detach(), torch.tensor([0.867, 0.0, 0.595]))
    assert lam[1].item() == 0.0  # the soft-threshold gives exact zeros


def test_the_weights_take_momentum_sgd_with_weight_decay() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = APG([{"params": [w]}], lr=0.1, momentum=0.9, weight_decay=0.01)
    ref = torch.optim.SGD([torch.nn.Parameter(torch.tensor([1.0, -2.0]))], lr=0.1, momentum=0.9, weight_decay=0.01)
    for g in (torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 0.2])):
        w.grad = g.clone()
        ref.param_groups[0]["params"][0].grad = g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(w.detach(), ref.param_groups[0]["params"][0].detach())


def test_removing_zero_factor_neurons_leaves_the_function_unchanged() -> None:
    model = _mlp()
    with torch.no_grad():
        f0, f1 = factors(model)
        f0.copy_(torch.tensor([0.0, 1.5, 0.0, 0.7, 2.0, 0.0, 0.3, 1.0]))
        f1.copy_(torch.tensor([0.4, 0.0, 1.2, 0.9, 0.0]))
    kept = selected_neurons(model)
    assert [k.tolist() for k in kept] == [[1, 3, 4, 6, 7], [0, 2, 3]]
    small = remove_neurons(model, kept)
    assert [m.weight.shape for m in small if isinstance(m, torch.nn.Linear)] == [(5, 6), (3, 5), (3, 3)]
    assert not any(p.numel() == 8 for p in small.parameters())  # no factors left: a plain MLP
    x = torch.randn(32, 6)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-6)


def test_removing_a_neuron_whose_factor_is_not_zero_changes_the_function() -> None:
    model = _mlp()
    kept = [torch.tensor([1, 3, 4, 6, 7]), torch.arange(5)]
    with torch.no_grad():
        assert not torch.allclose(remove_neurons(model, kept)(torch.randn(32, 6)), model(torch.randn(32, 6)))


def test_neurons_for_ratio_removes_the_smallest_factors_first() -> None:
    model = _mlp()
    with torch.no_grad():
        f0, f1 = factors(model)
        f0.copy_(torch.tensor([0.0, 1.5, 0.1, 0.7, 2.0, 0.0, 0.3, 1.0]))
        f1.copy_(torch.tensor([0.4, 0.05, 1.2, 0.9, 0.2]))
    dense = 6 * 8 + 8 * 5 + 5 * 3
    kept = neurons_for_ratio(model, 2.0)
    small = remove_neurons(model, kept)
    assert weight_count(small) <= dense / 2
    # the order is 0.0, 0.0 (layer 0), 0.05 (layer 1), 0.1, 0.2, 0.3, ...: after the zeros, 0.05 and 0.1
    removed0 = set(range(8)) - set(kept[0].tolist())
    assert {0, 5} <= removed0 and 1 not in kept[1].tolist()
    assert 4 in kept[0].tolist() and 2 in kept[1].tolist()  # the largest stay


def test_apg_training_zeroes_factors_of_useless_neurons() -> None:
    """On data that only the first input explains, a strong penalty switches off most neurons while
    the network still fits."""
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] > 0).long()
    model = with_scaling_factors(models.build("mlp", (6,), 2, hidden=(16,)))
    params = {id(f) for f in factors(model)}
    opt = APG([{"params": [p for p in model.parameters() if id(p) not in params]},
               {"params": factors(model), "gamma": 0.05, "weight_decay": 0.0}], lr=0.05, momentum=0.9,
              weight_decay=0.0)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    kept = selected_neurons(model)
    assert 0 < len(kept[0]) < 16
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    assert all(float(f.detach().min()) >= 0 for f in factors(model))
