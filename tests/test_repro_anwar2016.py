"""Anwar & Sung's coarse pruning: the masks at both granularities, the best-of-N selection, the sparsity
count and the surgery into a narrower dense network."""

from __future__ import annotations

import torch
from atlas_reproductions.anwar2016 import (
    Masks,
    apply_masks,
    best_of_random,
    conv_modules,
    conv_sparsity,
    full_masks,
    misclassification_rate,
    random_mask,
    shrink,
)
from torch import nn

from atlas.harness import models

SHAPE = (1, 12, 12)
CHANS = [4, 6, 8]


def _net(seed: int = 0) -> nn.Module:
    """A 4-6-8 staged-conv network (one conv a stage) with random batch-norm statistics."""
    torch.manual_seed(seed)
    model = models.build("staged-conv", SHAPE, 5, chans=CHANS, per_stage=1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_a_pruned_map_is_zero_and_its_readers_are_gone() -> None:
    model = _net()
    masks = full_masks(model)
    masks.maps[1][[0, 3]] = False
    apply_masks(model, masks)
    (c1, bn1), (c2, _) = conv_modules(model)[1], conv_modules(model)[2]
    assert c1.weight[[0, 3]].abs().sum() == 0 and bn1.weight[[0, 3]].abs().sum() == 0
    assert bn1.bias[[0, 3]].abs().sum() == 0
    assert c2.weight[:, [0, 3]].abs().sum() == 0  # the next layer's kernels reading the removed maps
    assert c2.weight[:, [1, 2, 4, 5]].abs().sum() > 0
    # 2 of 6 maps of layer 1 (4 x 9 weights each) and 8 x 2 kernels of layer 2 of 36 + 216 + 432
    removed = 2 * 4 * 9 + 8 * 2 * 9
    assert abs(conv_sparsity(_net(), masks) - removed / (36 + 216 + 432)) < 1e-9


def test_kernel_pruning_zeroes_single_kernels() -> None:
    model = _net()
    masks = full_masks(model)
    masks.kernels[2][5, 1] = False
    apply_masks(model, masks)
    w = conv_modules(model)[2][0].weight
    assert w[5, 1].abs().sum() == 0 and int((w.abs().sum((2, 3)) == 0).sum()) == 1
    assert abs(conv_sparsity(model, masks) - 9 / (36 + 216 + 432)) < 1e-9


def test_random_mask_removes_the_rate_of_what_is_alive() -> None:
    alive = torch.tensor([[True, False, True, True], [True, True, False, True]])
    out = random_mask(alive, 0.5, torch.Generator().manual_seed(1))
    assert int(out.sum()) == 3 and not bool((out & ~alive).any())  # 6 alive -> 3 removed, none revived
    assert int(random_mask(torch.ones(3, dtype=torch.bool), 0.99, torch.Generator()).sum()) == 1


def test_best_of_random_keeps_the_candidate_of_least_mcr() -> None:
    model = _net()
    x, y = torch.randn(64, *SHAPE), torch.randint(0, 5, (64,))
    masks, scores = best_of_random(model, full_masks(model), 2, "map", 0.5, 6, x, y, torch.Generator().manual_seed(0))
    assert len(scores) == 6 and int(masks.maps[2].sum()) == 4
    chosen = misclassification_rate(apply_masks(_net(), masks), x, y)
    assert chosen == min(scores)


def test_shrink_computes_the_masked_network() -> None:
    model = _net()
    masks = Masks([m.clone() for m in full_masks(model).maps], [k.clone() for k in full_masks(model).kernels])
    masks.maps[0][1] = False
    masks.maps[2][[2, 5, 6]] = False
    masks.kernels[1][0, 2] = False
    small = shrink(model, masks)
    x = torch.randn(5, *SHAPE)
    masked = apply_masks(_net(), masks)
    assert torch.allclose(small(x), masked(x), atol=1e-5)
    assert [c.out_channels for c, _ in conv_modules(small)] == [3, 6, 5]
    assert not torch.allclose(small(x), _net()(x), atol=1e-3)  # the pruning did change the function
