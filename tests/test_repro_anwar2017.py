"""Anwar, Hwang & Sung's structured pruning: intra-kernel strided patterns, the lowered products they
shrink, and the particle filter's weighting, resampling and result."""

from __future__ import annotations

import torch
from atlas_reproductions.anwar2016 import full_masks
from atlas_reproductions.anwar2017 import (
    _filter_offsets,
    apply_strides,
    importance_weights,
    lowered_products,
    lowered_rows,
    nominal_ratio,
    particle_filter,
    strided_pattern,
)
from torch import nn

from atlas.harness import models


def test_strided_pattern_keeps_one_residue_per_input_map() -> None:
    pat = strided_pattern(torch.tensor([0, 1]), 3, 2)
    assert pat[0].flatten().tolist() == [True, False, True, False, True, False, True, False, True]
    assert pat[1].flatten().tolist() == [False, True, False, True, False, True, False, True, False]
    assert lowered_rows(torch.tensor([0, 1, 1]), 3, 2) == 5 + 4 + 4


def test_strided_weights_give_the_same_reduced_lowered_product() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    offsets = torch.tensor([1, 0, 1])
    model = nn.Sequential(conv, nn.BatchNorm2d(4))
    apply_strides(model, {0: offsets}, 2)
    x = torch.randn(1, 3, 6, 6)
    (w, cols), (wk, ck) = lowered_products(conv, x, offsets, 2)
    assert ck.shape == (13, 36) and cols.shape == (27, 36)
    assert torch.allclose(w @ cols, wk @ ck, atol=1e-5)
    assert torch.allclose((w @ cols).view(1, 4, 6, 6), conv(x), atol=1e-5)  # the lowering is the convolution
    # without the pattern the reduced product misses the dropped rows' contributions
    conv2 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    (w2, c2), (wk2, ck2) = lowered_products(conv2, x, offsets, 2)
    assert not torch.allclose(w2 @ c2, wk2 @ ck2, atol=1e-3)


def test_importance_weights_favour_low_misclassification() -> None:
    w = importance_weights(torch.tensor([0.1, 0.2, 0.4]))
    assert torch.allclose(w, torch.tensor([4.0, 2.0, 1.0]) / 7.0)


def test_particle_filter_finds_the_pattern_of_least_score() -> None:
    # patterns: which 2 of 6 units are removed; the score is the removed units' index sum / 10
    def score(mask: torch.Tensor) -> float:
        return float((~mask).nonzero().sum()) / 10 + 0.01

    def init() -> torch.Tensor:
        m = torch.ones(6, dtype=torch.bool)
        m[torch.randperm(6, generator=gen)[:2]] = False
        return m

    def perturb(m: torch.Tensor) -> torch.Tensor:
        m = m.clone()
        kept, gone = m.nonzero().flatten(), (~m).nonzero().flatten()
        m[kept[torch.randint(len(kept), (1,), generator=gen)]] = False
        m[gone[torch.randint(len(gone), (1,), generator=gen)]] = True
        return m

    gen = torch.Generator().manual_seed(0)
    best, best_score = particle_filter(score, init, perturb, particles=12, rounds=8, generator=gen)
    assert (~best).nonzero().flatten().tolist() == [0, 1] and abs(best_score - 0.11) < 1e-9


def test_offsets_stay_balanced_and_the_nominal_ratio_counts_them() -> None:
    gen = torch.Generator().manual_seed(0)
    offsets = _filter_offsets(lambda o: float(o[0]) + 0.1, 5, 2, 4, 3, gen)
    assert sorted(offsets.tolist()) == [0, 0, 0, 1, 1] and int(offsets[0]) == 0
    torch.manual_seed(0)
    net = models.build("staged-conv", (1, 8, 8), 3, chans=[2, 4, 4], per_stage=1)
    weights = 2 * 9 + 4 * 2 * 9 + 4 * 4 * 9 + 4 * 3
    # every kernel kept, layer 2 strided at 2: its 16 kernels count 4.5 positions each
    assert abs(nominal_ratio(net, full_masks(net), {2: offsets}, 2) - weights / (weights - 16 * 4.5)) < 1e-9
