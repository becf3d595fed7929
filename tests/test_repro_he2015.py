"""He & Sun's constrained-time-cost comparisons: nets traded in depth, width and filter size at the
same FLOPs."""

from __future__ import annotations

import torch
from atlas_reproductions.he2015 import StagedNet, conv_cost, match_width, net_flops, scaled
from torch import nn

from atlas.harness import measure


def test_conv_cost_is_eqn1_by_hand() -> None:
    # stem 1->4 3x3 at 8x8; stage 4->6 5x5 at 4x4; stage 6->8 5x5 at 2x2
    assert conv_cost((1, 8, 8), [6, 8], 1, 5, stem=4) == 1 * 9 * 4 * 64 + 4 * 25 * 6 * 16 + 6 * 25 * 8 * 4
    # two 3x3 layers per stage: the second sees the stage's own filters
    assert conv_cost((1, 8, 8), [6], 2, 3, stem=4) == 1 * 9 * 4 * 64 + (4 * 9 * 6 + 6 * 9 * 6) * 16


def test_net_flops_equal_the_harness_counter() -> None:
    for shape, chans, per_stage, kernel in (((1, 28, 28), [16, 32], 1, 5), ((1, 28, 28), [16, 29], 2, 3),
                                            ((3, 32, 32), [7, 5], 3, 3)):
        net = StagedNet(shape, 10, chans, per_stage, kernel, stem=8)
        assert measure.flops(net, shape) == net_flops(shape, 10, chans, per_stage, kernel, stem=8)


def test_staged_net_layout() -> None:
    net = StagedNet((1, 28, 28), 10, [6, 9], 2, 3, stem=4)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 4, 3), (4, 6, 3), (6, 6, 3), (6, 9, 3), (9, 9, 3)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_match_width_reaches_the_reference_flops() -> None:
    shape = (1, 28, 28)
    ref = net_flops(shape, 10, [16, 32], 1, 5, stem=8)
    stacked = match_width(shape, 10, [16, 32], 2, 3, 8, ref)
    wide = match_width(shape, 10, [16, 32], 1, 3, 8, ref)
    for chans, per_stage in ((stacked, 2), (wide, 1)):
        assert abs(net_flops(shape, 10, chans, per_stage, 3, stem=8) / ref - 1) < 0.01
    # the same cost buys a 3x3 net with one layer per stage about twice the 5x5 net's filters (25/9 ~ 2.8
    # in each layer, less the fixed stem's share), and the two-layer net about the same filters
    assert wide[1] > 1.7 * 32 and stacked[1] < 32 < wide[1]
    # a matching that ignores the second layer of each stage would be ~40% over budget
    assert net_flops(shape, 10, wide, 2, 3, stem=8) > 1.4 * ref
    assert scaled([16, 32], 0.01) == [1, 1]
