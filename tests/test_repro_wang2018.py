"""Evolutionary compression: the masked fitness equals the smaller network's loss, the genetic operations
keep each layer's count, and the evolution finds the one good filter a norm ranking misses."""

from __future__ import annotations

import torch
from atlas_reproductions.wang2018 import (
    Evolution,
    build,
    crossover,
    evolve,
    fitness,
    kept_counts,
    l1_individual,
    masked_loss,
    mutate,
    random_individual,
    removed_large_pct,
    roulette,
)
from torch import nn
from torch.nn import functional as F

from atlas.harness import models


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = models.build("staged-conv", (1, 8, 8), 10, chans=[6, 8, 8], per_stage=2)
    with torch.no_grad():  # non-trivial batch-norm statistics and shifts
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@torch.no_grad()
def test_masked_loss_is_the_loss_of_the_smaller_network() -> None:
    net = _net()
    x, y = torch.randn(20, 1, 8, 8), torch.arange(20) % 10
    ind = random_individual([6, 6, 8, 8, 8, 8], kept_counts(net, [0.5] * 6), torch.Generator().manual_seed(0))
    assert [int(b.sum()) for b in ind] == [3, 3, 4, 4, 4, 4]
    small = build(net, ind).eval()
    assert small.features[0].out_channels == 3 and small.features[3].in_channels == 3
    expected = float(F.cross_entropy(small(x), y))
    assert abs(masked_loss(net, ind, x, y) - expected) < 1e-5
    full = [torch.ones(n, dtype=torch.bool) for n in (6, 6, 8, 8, 8, 8)]
    assert abs(masked_loss(net, full, x, y) - float(F.cross_entropy(net(x), y))) < 1e-6
    assert abs(masked_loss(net, ind, x, y) - masked_loss(net, full, x, y)) > 1e-4  # the masks act
    assert not net.features[1]._forward_hooks  # the masks' hooks are removed


def test_genetic_operations_keep_each_layers_count() -> None:
    gen = torch.Generator().manual_seed(3)
    a = random_individual([6, 8], [2, 5], gen)
    b = random_individual([6, 8], [2, 5], gen)
    for _ in range(20):
        c1, c2 = crossover(a, b, gen)
        for c in (c1, c2, mutate(c1, 1.0, gen)):
            assert [int(v.sum()) for v in c] == [2, 5]
        for layer in range(2):  # each child layer is one parent's, and the two children take both
            assert {tuple(c1[layer].tolist()), tuple(c2[layer].tolist())} == {tuple(a[layer].tolist()),
                                                                             tuple(b[layer].tolist())}
    m = mutate(a, 1.0, gen)
    assert all(int((x != y).sum()) == 2 for x, y in zip(m, a, strict=True))  # one swap per layer
    assert all(torch.equal(x, y) for x, y in zip(mutate(a, 0.0, gen), a, strict=True))


def test_roulette_draws_in_proportion_to_fitness() -> None:
    assert fitness(0.5) == 2.0 and fitness(2.0) == 0.5
    draws = roulette(torch.tensor([1.0, 3.0, 0.0]), 4000, torch.Generator().manual_seed(0))
    share = torch.bincount(draws, minlength=3).float() / 4000
    assert abs(float(share[1]) - 0.75) < 0.03 and int(share[2] * 4000) == 0


@torch.no_grad()
def test_evolution_finds_the_useful_small_filter_that_the_l1_norm_drops() -> None:
    # one convolution of 6 filters; only filter 0 (the smallest by L1) carries the signal the classifier reads
    torch.manual_seed(1)
    net = models.build("staged-conv", (1, 4, 4), 2, chans=[6], per_stage=1).eval()
    conv, bn, fc = net.features[0], net.features[1], net.classifier[2]
    conv.weight.zero_()
    conv.weight[0, 0, 1, 1] = 0.1
    conv.weight[1:] = torch.randn(5, 1, 3, 3)
    bn.running_mean.zero_(), bn.running_var.fill_(1.0), bn.weight.fill_(1.0), bn.bias.zero_()
    bn.weight[0] = 50.0
    fc.weight.zero_(), fc.bias.zero_()
    fc.weight[0, 0], fc.weight[1, 0] = 1.0, -1.0
    x = torch.zeros(64, 1, 4, 4)
    y = torch.arange(64) % 2
    x[y == 0] = torch.rand(32, 1, 4, 4) + 0.5  # class 0: bright images, class 1: dark
    x[y == 1] = -torch.rand(32, 1, 4, 4) - 0.5
    l1 = l1_individual(net, [2])
    assert not bool(l1[0][0])  # the norm drops the useful filter
    assert removed_large_pct(net, l1) < 50.0
    evo = Evolution(population=8, steps=6, batch_size=64, crossover=0.7, mutation=0.5)
    best, loss = evolve(net, [2], x, y, evo, torch.Generator().manual_seed(0))
    assert bool(best[0][0]) and int(best[0].sum()) == 2
    assert loss < masked_loss(net, l1, x, y) - 0.1
