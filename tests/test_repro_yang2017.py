"""Unit tests of yang2017 (energy-aware pruning): the energy model, the least-squares restore, the
energy order and the target weight count."""
from __future__ import annotations

import pytest
import torch
from atlas_reproductions.yang2017 import (
    EYERISS_COST,
    GRID,
    Pruning,
    energy,
    energy_aware_prune,
    energy_order,
    layer_energy,
    layer_shapes,
    restore_linear,
)
from torch import nn


def test_layer_energy_by_hand() -> None:
    # 12 MACs, 4 inputs, 3 outputs, 6 of 12 weights kept: 6 MACs x (1 + 3) + (200+6+2) x (6+4+3)
    assert layer_energy(12, 4, 3, 6, 12) == pytest.approx(6 * 4 + 208 * 13)
    assert EYERISS_COST["dram"] == 200.0


def test_layer_shapes_and_energy_of_mlp() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    shapes = layer_shapes(model, (1, 4, 4))
    assert shapes == {"1.weight": (128, 16, 8), "3.weight": (16, 8, 2)}
    dense = energy(model, (1, 4, 4))
    assert dense == pytest.approx(layer_energy(128, 16, 8, 128, 128) + layer_energy(16, 8, 2, 16, 16))
    with torch.no_grad():
        model[1].weight[:, :8] = 0
    assert energy(model, (1, 4, 4)) < dense
    assert energy_order(model, (1, 4, 4)) == ["1.weight", "3.weight"]


def test_conv_macs_count_weight_reuse() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    shapes = layer_shapes(model, (1, 6, 6))
    assert shapes["0.weight"] == (2 * 4 * 4 * 9, 36, 32)


def test_restore_recovers_sparse_weights_exactly() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 10, dtype=torch.float64)
    w = torch.randn(4, 10, dtype=torch.float64)
    mask = torch.rand(4, 10) < 0.5
    y = x @ (w * mask).T
    got = restore_linear(torch.zeros_like(w), mask, x, y, ridge=0.0)
    assert torch.allclose(got, w * mask, atol=1e-8)
    assert torch.all(got[~mask] == 0)


def test_restore_beats_plain_pruning_on_output_error() -> None:
    torch.manual_seed(1)
    x = torch.randn(300, 12) @ torch.randn(12, 12)  # correlated inputs
    w = torch.randn(5, 12)
    y = x @ w.T
    mask = w.abs() >= w.abs().flatten().kthvalue(30).values
    pruned = w * mask
    restored = restore_linear(w, mask, x, y)
    err_pruned = (x @ pruned.T - y).pow(2).sum()
    err_restored = (x @ restored.T - y).pow(2).sum()
    assert err_restored < 0.9 * err_pruned


def test_prune_reaches_target_weight_count() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 3))
    x = torch.randn(256, 1, 4, 4)
    y = model(x).argmax(1)
    cfg = Pruning(ratios=[4.0], claim_ratio=4.0, keep_grid=GRID, max_drop_pp=100.0, val_samples=256)
    pruned, masks = energy_aware_prune(model, x, y, 4.0, cfg, (1, 4, 4))
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == pytest.approx((16 * 20 + 20 * 3) / 4, abs=2)
    # the pruned copy's zeros are its masks; the dense model is untouched
    assert int(torch.count_nonzero(pruned[1].weight)) <= int(masks["1.weight"].sum())
    assert int(torch.count_nonzero(model[1].weight)) == 320
