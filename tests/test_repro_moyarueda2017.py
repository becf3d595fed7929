"""Moya Rueda et al.'s maxout neuron pruning: the maxout layer, the local relevance (each unit's
shares sum to one), the selection that keeps a neuron a unit, and the surgery (a neuron that never wins
is removed without changing the output; removing a winning one changes it)."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.moyarueda2017 import MaxoutMLP, linear_units_pct, prune_neurons, relevance, select


def _net(seed: int = 0) -> MaxoutMLP:
    torch.manual_seed(seed)
    return MaxoutMLP(6, [3, 2], 3, 4).eval()


def test_a_maxout_unit_outputs_the_max_of_its_neurons() -> None:
    model = _net()
    x = torch.randn(5, 6)
    z = model.pieces_of(0, x)
    expected = z.view(5, 3, 3).max(dim=2).values  # units of 3 consecutive neurons
    torch.testing.assert_close(model.maxout(0, z), expected)


def test_relevance_is_each_neurons_share_of_wins_in_its_unit() -> None:
    model = _net()
    x = torch.randn(400, 6)
    shares = relevance(model, x)
    assert [len(s) for s in shares] == [9, 6]
    for s, i in zip(shares, range(2), strict=True):
        per_unit = torch.zeros(model.units[i], dtype=torch.float64).index_add_(0, model.group(i), s)
        assert per_unit.tolist() == pytest.approx([1.0] * model.units[i])


def test_selection_removes_the_lowest_and_keeps_a_neuron_a_unit() -> None:
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    score = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert select(score, group, 2).tolist() == [0, 1, 2, 5]  # the two zero-share neurons of unit 1
    assert select(score, group, 4).tolist() == [0, 5]  # at most all but one neuron a unit
    dead = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.3, 0.5], dtype=torch.float64)
    assert select(dead, group, 4).tolist() == [0, 5]  # a unit that never wins still keeps one neuron


def test_removing_a_neuron_that_never_wins_leaves_the_output_unchanged() -> None:
    model = _net(1)
    with torch.no_grad():
        model.hidden[0].bias[4] = -1e4  # neuron 4 (unit 1) never wins
    x = torch.randn(50, 6)
    assert relevance(model, x)[0][4] == 0.0
    kept = [torch.tensor([0, 1, 2, 3, 5, 6, 7, 8]), torch.arange(6)]
    small = prune_neurons(model, kept)
    assert small.hidden[0].out_features == 8
    torch.testing.assert_close(small(x), model(x))
    # the counterpart: removing every neuron of unit 0 but its least frequent winner changes the output
    wins = relevance(model, x)[0][:3]
    keep_one = int(wins.argmin())
    other = prune_neurons(model, [torch.tensor([keep_one, 3, 4, 5, 6, 7, 8]), torch.arange(6)])
    assert not torch.allclose(other(x), model(x))
    assert linear_units_pct(other) == pytest.approx(100 * 1 / 5)  # unit 0 of layer 0 is now linear
