"""ThiNet: the next layer's channel contributions, the greedy selection (Algorithm 1), the least-squares
rescaling (Eq. 6) and the pruned layer's surgery."""

from __future__ import annotations

import torch
from atlas_reproductions.luo2017b import (
    greedy_removal,
    least_squares_scales,
    next_layer_samples,
    thinet_layer,
)
from torch import nn

from atlas.harness import models


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = models.build("staged-conv", (1, 8, 8), 10, chans=[6, 8, 8], per_stage=2)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_channel_contributions_sum_to_the_next_convolutions_output() -> None:
    net = _net()
    images = torch.randn(12, 1, 8, 8)
    xhat, y = next_layer_samples(net, "features.3", images, 7, torch.Generator().manual_seed(0))
    assert xhat.shape == (84, 6) and y.shape == (84,)
    torch.testing.assert_close(xhat.sum(1), y, rtol=1e-4, atol=1e-5)
    assert float(xhat.abs().sum()) > 0


def test_greedy_removal_takes_the_smallest_then_the_cancelling_channel() -> None:
    e = torch.eye(4)
    # columns: a (norm 1), -1.01 a, 3 b, 1.5 c: first a (the smallest), then the channel that cancels it
    xhat = torch.stack([e[0], -1.01 * e[0], 3 * e[1], 1.5 * e[2]], dim=1)
    assert greedy_removal(xhat, 2).tolist() == [0, 1]
    assert greedy_removal(xhat, 3).tolist() == [0, 1, 3]
    # by norm alone the second channel would be the last-but-one to go
    assert sorted(range(4), key=lambda j: float(xhat[:, j].norm()))[:2] == [0, 1]
    xhat2 = torch.stack([e[0], 1.2 * e[1], -0.9 * e[1], 2 * e[2]], dim=1)
    assert greedy_removal(xhat2, 2).tolist() == [2, 1]  # -0.9 b first, then 1.2 b (|0.3 b|² < |a - 0.9 b|²)


def test_least_squares_rescaling_restores_a_proportional_channel() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    xhat = torch.stack([a, 0.5 * a, b], dim=1)
    y = xhat.sum(1)
    scales = least_squares_scales(xhat, y, torch.tensor([0, 2]))
    torch.testing.assert_close(scales, torch.tensor([1.5, 1.0]), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def _next_conv_output(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out: list[torch.Tensor] = []
    h = net.features[3].register_forward_hook(lambda m, i, o: out.append(o))
    net(images)
    h.remove()
    return out[0]


def test_thinet_layer_removes_filters_and_rescaling_reduces_the_reconstruction_error() -> None:
    net = _net()
    images = torch.randn(64, 1, 8, 8)
    before = _next_conv_output(net, images)
    pruned = thinet_layer(net, 0, 0.5, images, 10, torch.Generator().manual_seed(0))
    plain = thinet_layer(net, 0, 0.5, images, 10, torch.Generator().manual_seed(0), rescale=False)
    assert pruned.features[0].out_channels == 3 and pruned.features[3].in_channels == 3
    assert pruned.features[1].num_features == 3
    err = float((_next_conv_output(pruned.eval(), images) - before).pow(2).mean())
    err_plain = float((_next_conv_output(plain.eval(), images) - before).pow(2).mean())
    assert err < err_plain
    by_weight = thinet_layer(net, 0, 0.5, images, 10, torch.Generator().manual_seed(0), criterion="weight")
    l1 = net.features[0].weight.abs().sum(dim=(1, 2, 3))
    kept = torch.topk(l1, 3).indices.sort().values
    torch.testing.assert_close(by_weight.features[0].weight, net.features[0].weight[kept])
