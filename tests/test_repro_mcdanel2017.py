"""Incomplete dot products: the linear profile, and the network run at a channel share as the narrower
dense network it is (equal to the full network with the unused channels' coefficients set to zero)."""

from __future__ import annotations

import torch
from atlas_reproductions.mcdanel2017 import (
    IDP,
    keep_count,
    linear_profile,
    share_for_flop_reduction,
    truncate,
    weight_count,
    with_profile,
)

from atlas.harness import measure, models

SHAPE = (1, 28, 28)


def _net(seed: int = 0) -> models.LeNet5:
    torch.manual_seed(seed)
    return models.build("lenet-5", SHAPE, 10, width=0.5).eval()


def test_linear_profile_and_keep_count() -> None:
    torch.testing.assert_close(linear_profile(4), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    assert [keep_count(10, s) for s in (1.0, 0.5, 0.25, 0.01)] == [10, 5, 3, 1]


def test_profile_scales_each_input_channel() -> None:
    net = with_profile(_net())
    fc1 = net.classifier[1]
    assert isinstance(fc1, IDP) and fc1.per_channel == 16  # 25 channels of 4x4 positions
    x = torch.randn(3, fc1.layer.in_features)
    expected = fc1.layer(x * linear_profile(25).repeat_interleave(16))
    torch.testing.assert_close(fc1(x), expected)


def test_truncated_network_is_the_incomplete_dot_product() -> None:
    net = with_profile(_net(1))
    x = torch.randn(5, *SHAPE)
    torch.testing.assert_close(truncate(net, 1.0)(x), net(x), atol=1e-5, rtol=1e-5)
    share = 0.5
    small = truncate(net, share)
    # the same network with every coefficient beyond the kept channels set to zero
    with torch.no_grad():
        for layer in (net.features[2], net.classifier[1], net.classifier[3]):
            layer.gamma[keep_count(len(layer.gamma), share):] = 0.0
    torch.testing.assert_close(small(x), net(x), atol=1e-5, rtol=1e-5)
    assert small[0].out_channels == 5 and small[2].out_channels == 13 and small[5].out_features == 125


def test_truncation_without_a_profile_drops_channels_of_the_standard_network() -> None:
    net = _net(2)
    x = torch.randn(5, *SHAPE)
    assert not torch.allclose(truncate(net, 0.5)(x), net(x), atol=1e-3)
    assert weight_count(net) / weight_count(truncate(net, 0.5)) > 3.5


def test_share_for_flop_reduction_is_the_largest_that_reaches_it() -> None:
    net = with_profile(_net())
    share = share_for_flop_reduction(net, SHAPE, 4.0)
    full = measure.flops(net, SHAPE)
    assert full / measure.flops(truncate(net, share), SHAPE) >= 4.0
    assert full / measure.flops(truncate(net, share + 1 / 64), SHAPE) < 4.0
