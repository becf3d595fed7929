"""PerforatedCNNs: the perforated convolution (computed at the mask's positions, nearest-neighbour
interpolated elsewhere), the impact of a position, the masks and the FLOP-matched control."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from atlas_reproductions.figurnov2016 import (
    PerforatedConv2d,
    conv_flops,
    impact_mask,
    impacts,
    keep_fraction,
    magnitude_ratio_for_flops,
    nearest_kept,
    perforate,
)
from torch import nn

from atlas.harness import controls, measure, models


def test_nearest_kept_maps_every_position_to_its_nearest_computed_one() -> None:
    kept = torch.tensor([0, 8])  # (0, 0) and (2, 2) of a 3x3 output
    r = nearest_kept(kept, 3, 3).view(3, 3)
    # (1,2), (2,1) are nearer (2,2); the centre and the two other corners are ties -> the first
    assert r.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_unperforated_layer_equals_the_convolution() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 5)
    torch.testing.assert_close(PerforatedConv2d(conv, (6, 5), None)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_perforated_layer_computes_kept_positions_and_copies_the_nearest_elsewhere() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3)
    x = torch.randn(2, 2, 6, 6)  # 4x4 output
    kept = torch.tensor([0, 5, 15])
    layer = PerforatedConv2d(conv, (6, 6), kept)
    out, full = layer(x).flatten(2), conv(x).flatten(2)
    torch.testing.assert_close(out[:, :, kept], full[:, :, kept], atol=1e-5, rtol=1e-5)
    nearest = kept[nearest_kept(kept, 4, 4)]
    torch.testing.assert_close(out, full[:, :, nearest], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, full, atol=1e-3)  # the interpolated positions differ
    assert abs(layer.rate - (1 - 3 / 16)) < 1e-9


def test_impact_is_the_summed_absolute_gradient_times_output() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x, y = torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    got = impacts(model, x, y, batch=2)["0"]
    v = model[0](x).detach().requires_grad_(True)
    loss = F.cross_entropy(model[2](model[1](v)), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, v)
    torch.testing.assert_close(got, (g * v).abs().sum(dim=(0, 1)).detach() / 5)
    top = impact_mask(got, 3)
    assert set(top.tolist()) == set(torch.topk(got.flatten(), 3).indices.tolist())


def test_keep_fraction_gives_the_network_flop_reduction() -> None:
    shape = (1, 28, 28)
    model = models.build("lenet-5", shape, 10, width=0.5).eval()
    total, convs = measure.flops(model, shape), conv_flops(model, shape)
    assert convs == 2 * (10 * 24 * 24 * 25 + 25 * 8 * 8 * 250)
    q = keep_fraction(total, convs, 2.0)
    masks = {"features.0": torch.arange(int(q * 576)), "features.2": torch.arange(int(q * 64))}
    reduction = total / measure.flops(perforate(model, shape, masks), shape)
    assert 2.0 <= reduction < 2.1


def test_control_prunes_to_the_same_effective_flops() -> None:
    torch.manual_seed(3)
    shape = (1, 28, 28)
    model = models.build("lenet-5", shape, 10, width=0.5).eval()
    ratio = magnitude_ratio_for_flops(model, shape, 2.0)
    pruned = controls.global_magnitude_prune(None, model, ratio, None)  # type: ignore[arg-type]
    assert abs(measure.flops(model, shape) / measure.effective_flops(pruned, shape) - 2.0) < 0.01
