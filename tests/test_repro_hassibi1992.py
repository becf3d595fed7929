"""Optimal Brain Surgeon: the inverse-Hessian recursion, the saliency and update, layer-wise OBS."""

from __future__ import annotations

import torch
from atlas_reproductions.hassibi1992 import (
    inverse_hessian_recursive,
    layer_hessian,
    layer_inputs,
    obs_prune,
    obs_sequential,
    obs_step,
    optimal_update,
    prune_layer,
    saliency,
)
from torch import nn


def _spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)


def test_recursion_gives_the_inverse_of_alpha_plus_the_mean_outer_product() -> None:
    x = torch.randn(40, 6, dtype=torch.float64)
    alpha = 1e-3
    direct = torch.linalg.inv(alpha * torch.eye(6, dtype=torch.float64) + x.T @ x / len(x))
    assert torch.allclose(inverse_hessian_recursive(x, alpha), direct, rtol=1e-8, atol=1e-8)


def test_layer_hessian_appends_the_bias_input() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    h = layer_hessian(x, alpha=0.0)
    expected = torch.tensor([[5.0, 7.0, 2.0], [7.0, 10.0, 3.0], [2.0, 3.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(h, expected)


def test_obs_step_zeroes_the_weight_and_costs_exactly_its_saliency_on_a_quadratic() -> None:
    h = _spd(5)
    h_inv = torch.linalg.inv(h)
    w = torch.tensor([0.3, -1.0, 0.2, 0.8, -0.1], dtype=torch.float64)
    for q in range(5):
        new, _ = obs_step(w, h_inv, q)
        assert new[q] == 0.0
        dw = new - w
        assert torch.isclose(0.5 * dw @ h @ dw, saliency(w, h_inv)[q])
        # the update is optimal: any other change with w_q -> 0 costs more
        other = -w[q] * torch.eye(5, dtype=torch.float64)[q]
        assert 0.5 * other @ h @ other >= 0.5 * dw @ h @ dw - 1e-12


def test_obs_chooses_the_cheapest_deletion_where_magnitude_and_obd_do_not() -> None:
    """Two strongly correlated weights: deleting the larger one is almost free (the other absorbs it),
    which only the full inverse Hessian sees."""
    h = torch.tensor([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 0.9, 0.5], dtype=torch.float64)
    h_inv = torch.linalg.inv(h)
    cost = {}
    for q in range(3):
        new, _ = obs_step(w, h_inv, q)
        cost[q] = float(0.5 * (new - w) @ h @ (new - w))
    obd = h.diagonal() * w**2 / 2
    assert int(torch.argmin(w.abs())) == 2 and int(torch.argmin(obd)) == 2  # magnitude and OBD: weight 2
    assert int(torch.argmin(saliency(w, h_inv))) == min(cost, key=cost.get) != 2


def test_sequential_obs_lands_on_the_constrained_optimum_for_its_deleted_set() -> None:
    h = _spd(8, seed=1)
    w = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    final, order = obs_sequential(w, torch.linalg.inv(h), 4)
    deleted = torch.zeros(8, dtype=torch.bool)
    deleted[order] = True
    assert len(set(order)) == 4
    expected = optimal_update(w, h, deleted)
    assert torch.allclose(final, expected, atol=1e-10)
    assert torch.allclose(optimal_update(w, h, deleted, torch.linalg.inv(h)), expected, atol=1e-10)


def test_prune_layer_keeps_the_requested_counts_and_reconstructs_better_than_masking() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(12, 5).double()
    x = torch.randn(200, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64)  # correlated inputs
    h = layer_hessian(x, alpha=1e-6)
    levels = prune_layer(layer.weight, layer.bias, h, [40, 20], rounds=2)
    with torch.no_grad():
        dense_out = layer(x)
        for (w, b, alive), keep in zip(levels, [40, 20], strict=True):
            assert int(alive.sum()) == keep and int((w != 0).sum()) == keep
            updated = ((x @ w.T + b - dense_out) ** 2).mean()
            masked = ((x @ (layer.weight * alive).T + layer.bias - dense_out) ** 2).mean()
            assert updated < 0.5 * masked
    assert bool((levels[1][2] <= levels[0][2]).all())  # one deletion sequence: the levels are nested


def test_obs_prune_of_a_network_and_its_layer_inputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(64, 6, dtype=torch.float64)
    inputs = layer_inputs(model, x)
    assert torch.equal(inputs["1"], x) and torch.equal(inputs["3"], torch.relu(model[1](x)).detach())
    hessians = {n: layer_hessian(v, 1e-6) for n, v in inputs.items()}
    [(pruned, masks)] = obs_prune(model, hessians, [{"1.weight": 20, "3.weight": 10}], rounds=1)
    assert int(masks["1.weight"].sum()) == 20 and int((pruned[1].weight != 0).sum()) == 20
    assert int((pruned[3].weight != 0).sum()) == 10
    assert int((model[1].weight != 0).sum()) == 48  # the dense model is left alone
