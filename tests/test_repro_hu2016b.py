"""Hu et al.'s network trimming: the APoZ, the neuron-removal surgery and the smaller dense network."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.hu2016b import (
    apoz,
    apoz_of,
    keep_lowest,
    targets,
    trim,
    trim_at_random,
    trim_by_apoz,
    trimmable,
    weight_count,
    widths,
)
from torch import nn

from atlas.harness import measure, models


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (6,), 3, hidden=(16, 8)).eval()


def _kill(model: nn.Module, layer: int, neurons: list[int]) -> None:
    """Make ``neurons`` of trimmable layer ``layer`` dead: zero incoming weights and a negative bias,
    so that their ReLU output is 0 on every input (APoZ 100%)."""
    seq, i, _ = trimmable(model)[layer]
    with torch.no_grad():
        seq[i].weight[neurons] = 0.0
        seq[i].bias[neurons] = -1.0


def test_apoz_values() -> None:
    out = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 3.0, 0.0], [0.0, 4.0, 5.0]])
    torch.testing.assert_close(apoz_of(out), torch.tensor([1.0, 0.25, 0.5]))
    # a channel's APoZ counts every position of its map (N x M outputs)
    maps = torch.zeros(2, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # channel 0: one non-zero of 8
    maps[:, 1] = 1.0  # channel 1: never zero
    torch.testing.assert_close(apoz_of(maps), torch.tensor([7 / 8, 0.0]))


def test_apoz_of_a_network_finds_its_dead_neurons() -> None:
    model = _mlp()
    _kill(model, 0, [2, 5])
    _kill(model, 1, [7])
    a = apoz(model, torch.randn(200, 6), batch=64)
    assert [len(x) for x in a] == [16, 8]
    assert a[0][2].item() == a[0][5].item() == a[1][7].item() == 1.0
    assert (a[0] < 1.0).sum().item() == 14  # a random layer leaves no other neuron always off
    # the APoZ agrees with the layer's ReLU output computed by hand
    x = torch.randn(50, 6)
    seq, i, _ = trimmable(model)[0]
    with torch.no_grad():
        hand = (torch.relu(seq[i](x)) == 0).float().mean(0)
    torch.testing.assert_close(apoz(model, x)[0], hand)


def test_trimming_dead_neurons_leaves_the_output_unchanged() -> None:
    model = _mlp()
    _kill(model, 0, [2, 5])
    _kill(model, 1, [7])
    x = torch.randn(100, 6)
    small = trim_by_apoz(model, x, [14, 7])
    assert widths(small) == [14, 7]
    seq, i, j = trimmable(small)[0]
    assert seq[i].out_features == 14 and seq[j].in_features == 14
    # each removed neuron takes its incoming weights, its bias and its outgoing weights
    assert measure.count_params(small) == measure.count_params(model) - 2 * (6 + 1 + 8) - 1 * (14 + 1 + 3)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x))


def test_trimming_live_neurons_changes_the_output() -> None:
    """The counterpart that lets the test above fail: the same number of neurons removed at random
    (live ones) changes the network's function, and so does removing the lowest-APoZ neurons."""
    model = _mlp()
    _kill(model, 0, [2, 5])
    x = torch.randn(100, 6)
    live = [torch.tensor([i for i in range(16) if i not in (0, 1)]), torch.arange(8)]
    with torch.no_grad():
        assert not torch.allclose(trim(model, live)(x), model(x))
        rand = trim_at_random(model, [14, 8], torch.Generator().manual_seed(0))
        assert widths(rand) == [14, 8]


def test_trim_keeps_the_rows_and_columns_of_the_kept_neurons() -> None:
    model = _mlp()
    kept = [torch.tensor([9, 1, 4]), torch.tensor([0, 6])]
    small = trim(model, kept)
    (s0, i0, j0), (s1, i1, j1) = trimmable(model)
    (t0, k0, l0), (t1, k1, l1) = trimmable(small)
    torch.testing.assert_close(t0[k0].weight, s0[i0].weight[[1, 4, 9]])
    torch.testing.assert_close(t0[k0].bias, s0[i0].bias[[1, 4, 9]])
    torch.testing.assert_close(t1[k1].weight, s1[i1].weight[[0, 6]][:, [1, 4, 9]])
    torch.testing.assert_close(t1[l1].weight, s1[j1].weight[:, [0, 6]])
    assert weight_count(small) == 6 * 3 + 3 * 2 + 2 * 3


def test_lenet5_trims_its_fully_connected_layer() -> None:
    model = models.build("lenet-5", (1, 28, 28), 10).eval()
    assert widths(model) == [500]  # the convolutions have no ReLU: only ip1 has an APoZ
    small = trim(model, [torch.arange(250)])
    x = torch.randn(2, 1, 28, 28)
    assert small(x).shape == (2, 10)
    assert measure.flops(small, (1, 28, 28)) < measure.flops(model, (1, 28, 28))


def test_keep_lowest_and_the_round_targets() -> None:
    assert keep_lowest(torch.tensor([0.9, 0.1, 0.5, 0.1]), 2).tolist() == [1, 3]
    assert targets([300, 100], 0.5, 2) == [[212, 71], [150, 50]]
    assert targets([300, 100], 0.5, 1) == [[150, 50]]
    with pytest.raises(ValueError):
        trim(_mlp(), [torch.arange(3)])  # one index set per trimmable layer
