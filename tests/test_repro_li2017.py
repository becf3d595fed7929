"""Li et al.'s L1-norm filter pruning: the ranking, the surgery into a smaller dense model, its FLOPs."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.li2017 import (
    conv_layers,
    filter_l1,
    n_pruned,
    prune_filters,
    remove_filters,
    select_filters,
    weight_compression,
)
from torch import nn

from atlas.harness import measure, models

SHAPE = (1, 12, 12)


def _net(seed: int = 0) -> nn.Module:
    """A 6-12-24 ConvNet (two convs a stage) with random batch-norm statistics and affine parameters."""
    torch.manual_seed(seed)
    model = models.build("staged-conv", SHAPE, 5, chans=[6, 12, 24], per_stage=2)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _kill(model: nn.Module, layer: int, filters: list[int]) -> None:
    """Make ``filters`` of convolution ``layer`` dead: zero weights and a batch norm that outputs 0."""
    index = int(conv_layers(model)[layer].rsplit(".", 1)[-1])  # features.<index>: conv, then its BN
    conv, bn = model.features[index], model.features[index + 1]
    with torch.no_grad():
        conv.weight[filters] = 0.0
        bn.weight[filters] = 0.0
        bn.bias[filters] = 0.0


def test_removing_dead_filters_leaves_the_output_unchanged() -> None:
    model = _net()
    _kill(model, 1, [0, 4])  # a middle convolution: the next convolution's kernels go as well
    _kill(model, 5, [3, 7, 20])  # the last one: the classifier's columns go
    kept = [torch.arange(c.out_channels) for c in (model.get_submodule(n) for n in conv_layers(model))]
    kept[1] = torch.tensor([1, 2, 3, 5])
    kept[5] = torch.tensor([i for i in range(24) if i not in (3, 7, 20)])
    small = remove_filters(model, kept)
    x = torch.randn(7, *SHAPE)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert small.get_submodule(conv_layers(small)[1]).out_channels == 4
    assert small.get_submodule(conv_layers(small)[2]).in_channels == 4
    assert small.classifier[-1].in_features == 21
    assert measure.count_params(small) < measure.count_params(model)


def test_removing_live_filters_changes_the_output() -> None:
    model = _net()
    kept = [torch.arange(c.out_channels) for c in (model.get_submodule(n) for n in conv_layers(model))]
    kept[1] = torch.tensor([1, 2, 3, 5])
    x = torch.randn(7, *SHAPE)
    assert not torch.allclose(remove_filters(model, kept)(x), model(x), atol=1e-3)


def test_filter_l1_sums_every_kernel_or_only_the_kept_inputs() -> None:
    conv = nn.Conv2d(3, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24, dtype=torch.float32).view(2, 3, 2, 2) - 12)
    # filter 0: |-12..-1| = 78; filter 1: 0..11 = 66
    assert filter_l1(conv).tolist() == [78.0, 66.0]
    # greedy: input channel 0 already removed -> filter 0: |-8..-1| = 36, filter 1: 4..11 = 60
    assert filter_l1(conv, torch.tensor([1, 2])).tolist() == [36.0, 60.0]


def test_the_smallest_filters_are_removed_and_greedy_can_choose_otherwise() -> None:
    model = _net()
    convs = [model.get_submodule(n) for n in conv_layers(model)]
    rates = [0.5, 0.0, 0.0, 0.0, 0.25, 0.5]
    kept = select_filters(model, rates)
    for conv, k, rate in zip(convs, kept, rates, strict=True):
        scores = filter_l1(conv)
        assert len(k) == conv.out_channels - n_pruned(conv.out_channels, rate)
        removed = sorted(set(range(conv.out_channels)) - set(k.tolist()))
        if removed:
            assert scores[removed].max() <= scores[k].min()
    # make the first layer's largest-L1 kernels of conv 2 read a removed map: greedy ranks them otherwise
    with torch.no_grad():
        gone = sorted(set(range(6)) - set(kept[0].tolist()))
        convs[1].weight[:3, gone] += 10.0
    independent, greedy = select_filters(model, [0.5, 0.5, 0, 0, 0, 0]), select_filters(
        model, [0.5, 0.5, 0, 0, 0, 0], "greedy")
    assert set(range(3)) <= set(independent[1].tolist())
    assert independent[1].tolist() != greedy[1].tolist()


def test_pruning_m_of_n_filters_removes_m_over_n_of_two_layers_flops() -> None:
    """Sec. 3: pruning m filters of layer i removes m / n_{i+1} of the operations of layers i and i + 1."""
    model = _net()
    rates = [0.0, 0.0, 0.5, 0.0, 0.0, 0.0]  # the first convolution of stage 2: 6 of 12 filters
    small = prune_filters(model, rates)
    h = SHAPE[1] // 2  # stage 2 runs at half resolution

    def conv_flops(cin: int, cout: int) -> int:
        return 2 * cin * cout * 9 * h * h

    expected = 0.5 * (conv_flops(6, 12) + conv_flops(12, 12))
    assert measure.flops(model, SHAPE) - measure.flops(small, SHAPE) == pytest.approx(expected)


def test_weight_compression_counts_the_removed_weights() -> None:
    model = _net()
    small = prune_filters(model, [0.5, 0.0, 0.0, 0.0, 0.0, 0.0])  # conv1 3 of 6; conv2 reads 3 of 6 maps
    dense_w = 6 * 9 + 6 * 6 * 9 + 12 * 6 * 9 + 12 * 12 * 9 + 24 * 12 * 9 + 24 * 24 * 9 + 5 * 24
    small_w = dense_w - 3 * 9 - 6 * 3 * 9
    assert weight_compression(model, small) == pytest.approx(dense_w / small_w)
