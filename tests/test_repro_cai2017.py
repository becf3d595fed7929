"""HWGQ (cai2017): the optimal uniform step of the half-Gaussian quantizer (the released code's 0.538), the
quantizer's forward levels and thresholds, its clipped and log-tailed backward, the network surgery on XNOR-Net's
layers, and the packed binary weights' round trip."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.cai2017 import (
    HWGQ,
    PROFILES,
    half_gaussian_mse,
    hwgq_forward,
    hwgq_network,
    optimal_uniform_step,
)
from atlas_reproductions.rastegari2016 import BWNLinear, binary_weight, network, storage
from torch import nn


def test_optimal_uniform_step_is_the_released_codes_0_538() -> None:
    step = optimal_uniform_step(3)
    assert step == pytest.approx(0.538, abs=0.002)  # centers 0.538 1.076 1.614 (alex-hwgq-3ne)
    assert half_gaussian_mse(step, 3) < min(half_gaussian_mse(step * 0.9, 3), half_gaussian_mse(step * 1.1, 3))
    # one level (1 bit): the mean of the half Gaussian, sqrt(2 / pi) = 0.798, minimises the MSE
    assert optimal_uniform_step(1) == pytest.approx(0.7979, abs=0.002)


def test_hwgq_forward_maps_to_zero_and_the_three_levels() -> None:
    centers = torch.tensor([0.538, 1.076, 1.614])
    x = torch.tensor([-1.0, 0.0, 0.01, 0.80, 0.81, 1.34, 1.35, 5.0])
    expected = torch.tensor([0.0, 0.0, 0.538, 0.538, 1.076, 1.076, 1.614, 1.614])
    assert torch.allclose(hwgq_forward(x, centers), expected)


def test_clipped_backward_passes_the_gradient_on_zero_to_the_largest_level() -> None:
    q = HWGQ(0.538, 3)
    x = torch.tensor([-0.5, 0.3, 1.6, 1.7, 3.0], requires_grad=True)
    y = q(x)
    assert torch.allclose(y, torch.tensor([0.0, 0.538, 1.614, 1.614, 1.614]))
    y.backward(torch.ones(5))
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0]))


def test_log_tailed_backward_decays_as_one_over_x_minus_tau() -> None:
    q = HWGQ(0.538, 3, mode="log-tailed")
    x = torch.tensor([-0.5, 0.3, 1.714, 2.614], requires_grad=True)
    q(x).backward(torch.ones(4))
    tau = 1.614 - 1.0
    assert torch.allclose(x.grad, torch.tensor([0.0, 1.0, 1 / (1.714 - tau), 1 / (2.614 - tau)]), atol=1e-5)
    with pytest.raises(ValueError):
        HWGQ(0.5, 3, mode="tanh")


def test_hwgq_network_binarises_the_inner_layers_and_quantizes_their_inputs() -> None:
    torch.manual_seed(0)
    fp = network((1, 8, 8), 10, [], [32, 32, 32])
    net = hwgq_network(fp, 0.538)
    lin = [m for m in net if isinstance(m, nn.Linear)]
    assert [isinstance(m, BWNLinear) for m in lin] == [False, True, True, False]
    assert [type(m).__name__ for m in net] == ["Flatten", "Linear", "BatchNorm1d", "HWGQ", "BWNLinear",
                                                "BatchNorm1d", "HWGQ", "BWNLinear", "BatchNorm1d", "ReLU", "Linear"]
    # the same initial weights as the fp32 network
    assert torch.equal(net[4].weight, fp[4].weight)
    # the input of every binary layer is on the HWGQ grid {0, 0.538, 1.076, 1.614}
    seen: list[torch.Tensor] = []
    for i in (4, 7):
        net[i].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    net.eval()
    net(torch.randn(7, 1, 8, 8))
    grid = torch.tensor([0.0, 0.538, 1.076, 1.614])
    assert len(seen) == 2 and all(bool(torch.isin(t, grid).all()) for t in seen)


def test_binary_encoding_round_trips_and_counts_32x() -> None:
    torch.manual_seed(1)
    net = hwgq_network(network((1, 16, 16), 10, [], [256, 256, 256]), 0.538)
    for m in net:
        if isinstance(m, BWNLinear):
            enc = ak.binarize_weight(m.weight.detach(), scale=True)
            assert torch.allclose(enc.dequantize(), binary_weight(m.weight.detach()), atol=1e-6)
    parts = storage(net)
    binary = [p for p in parts if p.what.startswith("1-bit")]
    assert len(binary) == 2
    n = 2 * 256 * 256
    assert sum(p.bits for p in binary) == n + 2 * 256 * 32  # signs + one fp32 alpha a filter: 28.4x
    assert 32 * n / sum(p.bits for p in binary) == pytest.approx(32 * 256 / 288)


def test_quick_profile_has_three_seeds() -> None:
    assert PROFILES["quick"]["seeds"] >= 3
