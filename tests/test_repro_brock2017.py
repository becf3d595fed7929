"""FreezeOut: the per-layer schedule, the freezing that takes layers out of the backward pass."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.brock2017 import (
    FreezeOut,
    estimated_saving,
    freeze_points,
    freeze_units,
    layer_flops,
    layer_lr,
)
from torch import nn

from atlas.harness import TrainConfig, models


def _conv() -> nn.Module:
    torch.manual_seed(0)
    return models.build("staged-conv", (1, 8, 8), 10, chans=(4, 8, 8), per_stage=1)


def test_units_pair_each_conv_with_its_batch_norm_and_end_with_the_classifier() -> None:
    units = freeze_units(_conv())
    assert [[type(m).__name__ for m in u] for u in units] == [
        ["Conv2d", "BatchNorm2d"], ["Conv2d", "BatchNorm2d"], ["Conv2d", "BatchNorm2d"], ["Linear"]]
    resnet = models.build("resnet-20", (3, 32, 32), 10)
    # stem conv+bn, nine residual blocks, the classifier
    assert len(freeze_units(resnet)) == 11


def test_freeze_points_follow_the_codes_spacing() -> None:
    assert freeze_points(4, 0.8, "cubic") == pytest.approx([0.512, (0.8 + 0.2 / 3) ** 3, (0.8 + 0.4 / 3) ** 3, 1.0])
    assert freeze_points(3, 0.5, "linear") == pytest.approx([0.5, 0.75, 1.0])


def test_layer_lr_is_a_cosine_to_zero_at_the_freeze_point() -> None:
    assert layer_lr(0.1, 0.5, 0, 100, scale_lr=True) == pytest.approx(0.2)  # alpha / t_i
    assert layer_lr(0.1, 0.5, 0, 100, scale_lr=False) == pytest.approx(0.1)
    assert layer_lr(0.1, 0.5, 25, 100, scale_lr=False) == pytest.approx(0.05)  # halfway down its cosine
    assert layer_lr(0.1, 0.5, 50, 100, scale_lr=False) == 0.0
    assert layer_lr(0.1, 1.0, 99, 100, scale_lr=True) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.99)))


def test_a_frozen_layer_gets_no_gradient_and_keeps_its_weights() -> None:
    model = _conv()
    cfg = TrainConfig(steps=10, lr=0.1)
    fo = FreezeOut(model, [0.2, 0.5, 0.8, 1.0], cfg, scale_lr=True, nesterov=True)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    first = freeze_units(model)[0][0].weight
    for step in range(10):
        fo.before_step(model)
        if step == 2:
            before = first.detach().clone()
            bn_mean = freeze_units(model)[0][1].running_mean.clone()
        loss = nn.functional.cross_entropy(model(x), y)
        fo.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        fo.optimizer.step()
        if step >= 2:  # frozen from step 2 (0.2 x 10): no gradient, no update, batch norm statistics kept
            assert first.grad is None
    assert fo.frozen == [True, True, True, False]
    assert torch.equal(first, before)
    assert torch.equal(freeze_units(model)[0][1].running_mean, bn_mean)
    assert freeze_units(model)[-1][0].weight.grad is not None  # the classifier trains to the end


def test_without_freezing_the_first_layer_does_change() -> None:
    """The control that makes the test above able to fail."""
    model = _conv()
    fo = FreezeOut(model, [1.0] * 4, TrainConfig(steps=10, lr=0.1), scale_lr=True, nesterov=True)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    first = freeze_units(model)[0][0].weight
    start = first.detach().clone()
    for _ in range(10):
        fo.before_step(model)
        loss = nn.functional.cross_entropy(model(x), y)
        fo.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        fo.optimizer.step()
    assert fo.frozen == [False] * 4
    assert not torch.equal(first, start)


def test_estimated_saving_counts_each_layers_backward_for_its_time() -> None:
    assert estimated_saving([1.0, 1.0], [0.5, 1.0]) == pytest.approx(100 * (1 - 3.5 / 4))
    assert estimated_saving([3.0, 1.0], [1.0, 1.0]) == pytest.approx(0.0)
    flops = layer_flops(models.build("staged-conv", (1, 8, 8), 10, chans=(4, 8, 8), per_stage=1), (1, 8, 8))
    # conv1: 4 channels x 8x8 positions x 1 input x 3x3 x 2; the classifier: 8 -> 10
    assert flops[0] == 2 * 4 * 64 * 9
    assert flops[-1] == 2 * 8 * 10
