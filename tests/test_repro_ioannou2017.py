"""Ioannou et al.'s root modules: hierarchical filter groups followed by 1x1 convolutions."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.ioannou2017 import RootModule, cpu_latency_ms, root_groups, rootify, weight_count
from torch import nn

from atlas.harness import controls, measure, models


def test_root_groups_halve_with_depth_and_fit_the_channels() -> None:
    assert [root_groups(8, d, 64, 64) for d in range(5)] == [8, 4, 2, 1, 1]
    assert root_groups(16, 0, 8, 16) == 8  # capped: a group needs at least one input channel
    assert root_groups(4, 0, 12, 24) == 4
    assert root_groups(8, 0, 12, 24) == 4  # 8 does not divide 12: the largest common divisor


def test_root_module_connects_each_filter_to_its_own_group_only() -> None:
    torch.manual_seed(0)
    module = RootModule(8, 16, groups=4).eval()
    conv = module[0]
    assert conv.weight.shape == (16, 2, 3, 3)  # each filter sees C_in / g = 2 channels
    x = torch.randn(1, 8, 5, 5)
    y = conv(x)
    x2 = x.clone()
    x2[:, 2:4] += 1.0  # change group 1's inputs only
    changed = (conv(x2) - y).abs().flatten(2).amax(dim=2)[0] > 0
    assert changed.tolist() == [False] * 4 + [True] * 4 + [False] * 8  # only group 1's 4 filters move
    # the 1x1 convolution mixes every group's output
    assert module[3].weight.shape == (16, 16, 1, 1)
    with pytest.raises(ValueError):
        RootModule(6, 16, groups=4)


def test_rootify_staged_conv_counts() -> None:
    dense = models.build("staged-conv", (1, 28, 28), 10, chans=(8, 16, 32), per_stage=1)
    assert weight_count(dense) == 72 + 8 * 16 * 9 + 16 * 32 * 9 + 320  # 6152
    root, groups = rootify(dense, 4)
    assert groups == [4, 2]  # conv2 N, conv3 N/2; conv1 (the image) stays dense
    # conv1 72; conv2 8*16*9/4 + 16*16; conv3 16*32*9/2 + 32*32; fc 320
    assert weight_count(root) == 72 + 288 + 256 + 2304 + 1024 + 320
    assert controls.compression_ratio(dense) == 1.0
    assert sum(isinstance(m, RootModule) for m in root.modules()) == 2
    assert root(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # the spatial convolutions' multiply-adds fall by their groups; the 1x1 ones are added
    hw2, hw3 = 14 * 14, 7 * 7
    saved = hw2 * (8 * 16 * 9 - 8 * 16 * 9 // 4 - 16 * 16) + hw3 * (16 * 32 * 9 - 16 * 32 * 9 // 2 - 32 * 32)
    assert measure.flops(dense, (1, 28, 28)) - measure.flops(root, (1, 28, 28)) == 2 * saved
    # a level whose groups are all 1 leaves the net as it is
    same, groups1 = rootify(dense, 1)
    assert groups1 == [1, 1] and weight_count(same) == weight_count(dense)
    assert not any(isinstance(m, RootModule) for m in same.modules())
    assert isinstance(dense.features[4], nn.Conv2d)  # the original is not modified


def test_cpu_latency_times_every_net() -> None:
    small = nn.Conv2d(1, 2, 1)
    big = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(40)])
    times = cpu_latency_ms([small, big], (1, 16, 16), batch=4, repeats=3)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert times[1] > times[0]  # forty layers cost more CPU time than one
