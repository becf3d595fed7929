"""Zhou et al.'s sparse constraints on neurons: the proximal operators, forward-backward splitting and
the compaction of the zeroed neurons into a smaller dense network."""

from __future__ import annotations

import torch
from atlas_reproductions.zhou2016 import compact, group_norms, hidden_linears, prox_group, prox_l1
from torch import nn

from atlas.harness import measure, models


def test_group_prox_shrinks_each_neuron_by_the_threshold_or_zeroes_it() -> None:
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])  # norms 5, 0.5, 0
    prox_group(w, 1.0)
    # row 0: scaled by 1 - 1/5 (norm 5 -> 4, same direction); row 1: norm 0.5 < 1 -> exactly zero
    torch.testing.assert_close(w, torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]]))
    assert group_norms(w).tolist()[0] == 4.0


def test_l1_prox_soft_thresholds_each_weight() -> None:
    w = torch.tensor([[1.5, -0.2, -2.0, 0.5]])
    prox_l1(w, 0.5)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, -1.5, 0.0]]))


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 8, 8), 5).eval()
    with torch.no_grad():
        model[1].bias.uniform_(-1, 1)  # some zeroed neurons output a positive constant, some zero
    return model


def test_compacting_zeroed_neurons_leaves_the_output_unchanged() -> None:
    model = _mlp()
    with torch.no_grad():
        model[1].weight[:200] = 0.0
    assert hidden_linears(model) == [1, 3]
    small, zeroed = compact(model, 1, 100)
    assert zeroed == 200 and small[1].out_features == 100 and small[3].in_features == 100
    x = torch.randn(64, 1, 8, 8)
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    assert measure.count_params(model) - measure.count_params(small) == 200 * (64 + 1) + 200 * 100
    # keeping some zeroed neurons (a level above what the constraint reached) is exact as well
    wider, zeroed = compact(model, 1, 130)
    assert zeroed == 170
    torch.testing.assert_close(wider(x), model(x), atol=1e-5, rtol=1e-5)


def test_compacting_past_the_zeroed_neurons_removes_the_smallest_and_changes_the_output() -> None:
    model = _mlp()
    with torch.no_grad():
        model[1].weight[:200] = 0.0
        model[1].weight[200:210] *= 0.01  # the ten smallest non-zero neurons
    small, zeroed = compact(model, 1, 90)
    assert zeroed == 200
    kept_norms = sorted(group_norms(small[1].weight).tolist())
    assert kept_norms[0] > 0.01 * group_norms(model[1].weight)[200:210].max().item() * 50
    x = torch.randn(64, 1, 8, 8)
    assert not torch.allclose(small(x), model(x), atol=1e-4)
