"""Yoon & Hwang's CGES: the group and exclusive proximal steps of the released code, the per-layer
mix, and the smaller dense network the zero groups leave."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.yoon2017 import (
    cges_prox,
    compact,
    exclusive_prox,
    exclusivity,
    group_prox,
    groups,
    layer_shares,
    layers,
    omega,
    units_kept,
)
from torch import nn

from atlas.harness import models


def test_groups_are_the_weights_leaving_one_input_unit() -> None:
    fc = torch.arange(6.0).view(2, 3)  # 2 outputs, 3 inputs: group g is column g
    assert groups(fc)[:, 1].tolist() == [1.0, 4.0]
    conv = torch.arange(16.0).view(2, 2, 2, 2)  # group: one input channel at one kernel position
    assert groups(conv).shape == (2, 8)
    assert groups(conv)[:, 5].tolist() == [conv[0, 1, 0, 1].item(), conv[1, 1, 0, 1].item()]


def test_group_prox_shrinks_each_group_norm_by_the_threshold_or_zeroes_it() -> None:
    w = torch.tensor([[3.0, 0.3], [4.0, 0.4]])  # column norms 5 and 0.5
    out = group_prox(w, 1.0)
    assert out[:, 0].tolist() == pytest.approx([2.4, 3.2])  # norm 5 -> 4, direction kept
    assert out[:, 1].tolist() == [0.0, 0.0]


def test_group_prox_is_the_proximal_operator_of_the_group_norm() -> None:
    torch.manual_seed(0)
    w, t = torch.randn(4, 3), 0.7

    def objective(x: torch.Tensor) -> float:
        return float(0.5 * (x - w).pow(2).sum() + t * x.norm(dim=0).sum())

    best = objective(group_prox(w, t))
    for _ in range(50):
        assert best <= objective(group_prox(w, t) + 1e-2 * torch.randn(4, 3)) + 1e-7


def test_exclusive_prox_thresholds_each_weight_by_its_group_l1_norm() -> None:
    w = torch.tensor([[3.0], [-1.0], [0.5]])  # one group, l1 norm 4.5
    assert exclusive_prox(w, 0.1).flatten().tolist() == pytest.approx([2.55, -0.55, 0.05])
    # stronger: the small weights die, the largest survives (the outputs compete for the input)
    assert exclusive_prox(w, 0.25).flatten().tolist() == pytest.approx([1.875, 0.0, 0.0])


def test_layer_shares_follow_the_released_code_and_stay_in_range() -> None:
    assert layer_shares(4, 0.8, 0.2) == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert layer_shares(6, 0.8, 0.2)[-2:] == [0.0, 0.0]


def test_cges_prox_applies_the_group_step_then_the_exclusive_step_per_layer() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.1], [4.0, 0.1]]))
        model[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
    cges_prox(model, eta=1.0, strength=1.0, mu=0.8, chvar=0.2)
    # layer 0, mu 0.8: column 0 (norm 5) -> x0.84 = (2.52, 3.36), l1 5.88, cut 0.2 * 5.88 = 1.176;
    # column 1 (norm 0.141) -> 0
    assert model[0].weight[:, 0].tolist() == pytest.approx([2.52 - 1.176, 3.36 - 1.176])
    assert model[0].weight[:, 1].tolist() == [0.0, 0.0]
    # layer 1, mu 0.6: column norms 2 and 1 -> 1.4 and 0.4; cuts 0.4 * 1.4 and 0.4 * 0.4
    assert model[2].weight.flatten().tolist() == pytest.approx([1.4 - 0.56, -(0.4 - 0.16)])


def test_omega_is_the_mixed_group_and_exclusive_norm() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 1.0], [4.0, 0.0]]))
    # mu 0.8: 0.8 * (5 + 1) + 0.2 / 2 * (7^2 + 1^2)
    assert omega(model, 0.8, 0.2).item() == pytest.approx(0.8 * 6 + 0.1 * 50)


def test_exclusivity_counts_zeros_inside_surviving_groups_of_hidden_layers() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 4))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    assert exclusivity(model) == pytest.approx(0.25)  # column 1 is dead; column 0 has 1 zero of 4


def test_removing_zero_groups_leaves_the_function_unchanged() -> None:
    torch.manual_seed(0)
    model = models.build("mlp", (1, 3, 4), 3, hidden=(16, 5)).eval()
    first, second, third = layers(model)
    with torch.no_grad():
        first.weight[:, [0, 5]] = 0.0  # two input features nobody reads
        second.weight[:, 9] = 0.0  # hidden unit 9 is read by nobody
        third.weight[:, 2] = 0.0
    assert [int(k.sum()) for k in units_kept(model)] == [10, 15, 4]
    small = compact(model)
    x = torch.randn(32, 1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-6, rtol=1e-5)
        second.weight[0, 3] += 1.0  # what makes the test able to fail
        assert not torch.allclose(compact(model)(x), small(x), atol=1e-4)
    assert compact(models.build("lenet-5", (1, 28, 28), 10, width=0.5)) is None
