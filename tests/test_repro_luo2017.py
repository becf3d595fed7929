"""Luo & Wu's entropy criterion: the entropy of the pooled responses, the filters it removes, the
layer-by-layer schedule's surgery."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.li2017 import conv_layers
from atlas_reproductions.luo2017 import (
    filter_apoz,
    filter_entropy,
    importance,
    prune_layer,
    response_entropy,
    schedule_steps,
)
from torch import nn

from atlas.harness import models

SHAPE = (1, 12, 12)


def test_entropy_of_known_distributions() -> None:
    n = 8
    pooled = torch.stack([
        torch.full((n,), 3.0),  # one value: entropy 0
        torch.tensor([0.0, 1.0] * 4),  # two equally likely values: log 2
        torch.arange(n, dtype=torch.float32),  # eight values in eight bins: log 8
        torch.tensor([0.0] * 6 + [1.0, 1.0]),  # 3/4 and 1/4
    ], dim=1)
    h = response_entropy(pooled, bins=8)
    expected = [0.0, math.log(2), math.log(8), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    assert h.tolist() == pytest.approx(expected)
    # with fewer bins, neighbouring values share a bin: eight values in two bins of four
    assert response_entropy(pooled[:, 2:3], bins=2).item() == pytest.approx(math.log(2))
    # the entropy depends on the shape of the distribution, not on its scale or offset
    assert response_entropy(5 * pooled + 7, bins=8).tolist() == pytest.approx(expected)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("staged-conv", SHAPE, 5, chans=[6, 12, 24], per_stage=2).eval()


def _silence(model: nn.Module, layer: int, filters: list[int], value: float = 0.0) -> None:
    """Make ``filters`` of convolution ``layer`` answer every input with the same map: zero weights and
    a batch norm whose output is ``value`` before the ReLU."""
    index = int(conv_layers(model)[layer].rsplit(".", 1)[-1])
    conv, bn = model.features[index], model.features[index + 1]
    with torch.no_grad():
        conv.weight[filters] = 0.0
        bn.weight[filters] = 0.0
        bn.bias[filters] = value


def test_constant_filters_have_zero_entropy_and_are_removed_first() -> None:
    model = _net()
    _silence(model, 1, [2, 4], value=0.5)  # a constant positive map: no information, but never zero
    x = torch.randn(300, *SHAPE)
    h = filter_entropy(model, 1, x, bins=10)
    assert h[2].item() == h[4].item() == 0.0
    assert (h[[0, 1, 3, 5]] > 1.0).all()
    small = prune_layer(model, 1, importance(model, 1, "entropy", x, 10, torch.Generator()), 1 / 3)
    convs = [small.get_submodule(n) for n in conv_layers(small)]
    assert convs[1].out_channels == 4 and convs[2].in_channels == 4
    # a constant map removed changes the next layer's input by a constant; a dead filter's (zero) map does
    # not change it at all: removing dead filters by entropy leaves the output unchanged
    dead = _net()
    _silence(dead, 1, [2, 4], value=-1.0)  # ReLU(-1) = 0: a dead filter, APoZ 100%
    assert filter_apoz(dead, 1, x)[[2, 4]].tolist() == [1.0, 1.0]
    assert (filter_apoz(dead, 1, x)[[0, 1, 3, 5]] < 1.0).all()
    pruned = prune_layer(dead, 1, importance(dead, 1, "entropy", x, 10, torch.Generator()), 1 / 3)
    torch.testing.assert_close(pruned(x), dead(x), atol=1e-5, rtol=1e-5)


def test_removing_informative_filters_changes_the_output() -> None:
    """The counterpart of the surgery test: the two filters of *highest* entropy removed instead."""
    model = _net()
    _silence(model, 1, [2, 4], value=-1.0)
    x = torch.randn(300, *SHAPE)
    score = -importance(model, 1, "entropy", x, 10, torch.Generator())
    assert not torch.allclose(prune_layer(model, 1, score, 1 / 3)(x), model(x), atol=1e-3)


def test_weight_and_apoz_criteria_rank_as_their_papers_do() -> None:
    model = _net()
    x = torch.randn(200, *SHAPE)
    conv = model.get_submodule(conv_layers(model)[0])
    weight = importance(model, 0, "weight", x, 10, torch.Generator())
    assert weight.tolist() == pytest.approx(conv.weight.detach().abs().sum(dim=(1, 2, 3)).tolist())
    _silence(model, 0, [1], value=-1.0)
    apoz = importance(model, 0, "apoz", x, 10, torch.Generator())
    assert int(apoz.argmin()) == 1  # the highest APoZ is the least important


def test_the_schedule_fine_tunes_after_each_pruned_layer_and_at_the_end() -> None:
    assert schedule_steps([0.5, 0.5, 0.5, 0.5, 0.0, 0.0], per_layer=15, final=90) == 150
    assert schedule_steps([0.0, 0.25, 0.0], per_layer=7, final=3) == 10


def test_one_pass_for_all_layers_gives_each_layers_entropies() -> None:
    from atlas_reproductions.luo2017 import filter_entropies

    model = _net()
    x = torch.randn(100, *SHAPE)
    together = filter_entropies(model, list(range(6)), x, bins=10)
    for layer in (0, 3, 5):
        torch.testing.assert_close(together[layer], filter_entropy(model, layer, x, bins=10))
