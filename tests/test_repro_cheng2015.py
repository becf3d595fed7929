"""EBP (cheng2015): the mean-field pass's moments, the update against the released code's formulas
(Binary_EBP_minibatch.m), EBP-D and its packed encodings."""

from __future__ import annotations

import math

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.cheng2015 import (
    PROFILES,
    EBPNetwork,
    binary_forward,
    bipolar_targets,
    deployed_forward,
    ebp_loss,
    encode,
    posterior_sample,
    sign,
    storage,
)

Phi = torch.special.ndtr


def _pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _net(seed: int = 0, widths: tuple[int, ...] = (6, 5)) -> EBPNetwork:
    torch.manual_seed(seed)
    net = EBPNetwork((1, 2, 4), 3, list(widths)).double()
    with torch.no_grad():
        for m in net.layers:
            m.h.mul_(8.0)  # means away from 0, so that the formulas are exercised
            m.bias.uniform_(-0.5, 0.5)
    return net


def test_first_layer_moments_are_the_factorised_posteriors() -> None:
    net = _net()
    layer = net.layers[0]
    x = torch.randn(4, 8, dtype=torch.float64)
    mean_u, var_u = layer.mean_field(x, None)
    m = torch.tanh(layer.h.detach())
    # Monte Carlo over binary weights drawn from the posterior P(W = +1) = (1 + m) / 2
    gen = torch.Generator().manual_seed(0)
    w = torch.where(torch.rand(20000, *m.shape, generator=gen, dtype=torch.float64) < (1 + m) / 2, 1.0, -1.0).double()
    u = (torch.einsum("snk,bk->sbn", w, x) + layer.bias.detach()) / 3.0  # sqrt(K + 1) = 3
    assert torch.allclose(mean_u.detach(), u.mean(0), atol=0.03)
    # the code's variance carries the bias's unit variance in it as well: (sum (1 - m^2) x^2 + 1) / (K + 1)
    assert torch.allclose(var_u, u.var(0) + 1 / 9, atol=0.03)


def test_the_update_is_the_released_codes() -> None:
    """One EBP step by autograd and SGD(lr=1) equals Binary_EBP_minibatch.m's update, written out."""
    net = _net(1)
    x = torch.randn(7, 1, 2, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    ebp_loss(net, x, y, torch.arange(7)).backward()
    # the released code's backward pass
    l1, l2, l3 = net.layers
    with torch.no_grad():
        v0 = x.flatten(1)
        mu1, s1 = l1.mean_field(v0, None)
        v1 = 2 * Phi(mu1 / s1.sqrt()) - 1
        mu2, s2 = l2.mean_field(v1, 1 - v1**2)
        v2 = 2 * Phi(mu2 / s2.sqrt()) - 1
        mu3, s3 = l3.mean_field(v2, 1 - v2**2)
        yy = bipolar_targets(y, 3).double()
        g3 = 2 * (_pdf(mu3 / s3.sqrt()) / s3.sqrt()) / Phi(yy * mu3 / s3.sqrt()) / math.sqrt(l3.in_features + 1)
        dh3 = 0.5 * (yy * g3).T @ v2
        d2 = (yy * g3) @ torch.tanh(l3.h)
        g2 = 2 * _pdf(mu2 / s2.sqrt()) / s2.sqrt() / math.sqrt(l2.in_features + 1)
        dh2 = 0.5 * (d2 * g2).T @ v1
        d1 = (d2 * g2) @ torch.tanh(l2.h)
        g1 = 2 * _pdf(mu1 / s1.sqrt()) / s1.sqrt() / math.sqrt(l1.in_features + 1)
        dh1 = 0.5 * (d1 * g1).T @ v0
        db1 = 0.5 * (d1 * g1).sum(0)
    # SGD with lr 1 moves h by -grad: the code's +dh
    for layer, dh in ((l3, dh3), (l2, dh2), (l1, dh1)):
        assert torch.allclose(-layer.h.grad, dh, rtol=1e-9, atol=1e-12)
    assert torch.allclose(-l1.bias.grad, db1, rtol=1e-9, atol=1e-12)


def test_ebp_d_is_the_deterministic_binary_network() -> None:
    net = _net(2).float()
    x = torch.randn(5, 1, 2, 4)
    v = x.flatten(1)
    for i, m in enumerate(net.layers):
        v = v @ sign(m.h.detach()).T + m.bias.detach()
        if i < 2:
            v = torch.where(v >= 0, 1.0, -1.0)
    assert torch.allclose(net(x), v)


def test_posterior_samples_follow_the_means_and_sign_h_gives_ebp_d() -> None:
    net = _net(4).float()
    gen = torch.Generator().manual_seed(0)
    draws = [posterior_sample(net, gen) for _ in range(400)]
    for i, m in enumerate(net.layers):
        w = torch.stack([d[i] for d in draws])
        assert set(w.unique().tolist()) <= {-1.0, 1.0}
        assert torch.allclose(w.mean(0), torch.tanh(m.h.detach()), atol=0.2)  # 400 draws: sd <= 0.05
    x = torch.randn(5, 1, 2, 4)
    assert torch.allclose(binary_forward(net, [sign(m.h.detach()) for m in net.layers], x), net(x))


def test_encodings_decode_to_the_signs_and_the_deployed_network_is_ebp_d() -> None:
    torch.manual_seed(3)
    net = EBPNetwork((1, 4, 16), 4, [70, 40])
    with torch.no_grad():
        for m in net.layers:
            m.bias.uniform_(-3, 3)
    enc = encode(net)
    assert isinstance(enc["layers.0.h"], ak.LowBitWeight)  # the image is real: 1-bit codes, float product
    assert all(isinstance(enc[f"layers.{i}.h"], ak.BinaryWeight) for i in (1, 2))  # ±1 input: XNOR
    for i, m in enumerate(net.layers):
        assert torch.equal(enc[f"layers.{i}.h"].dequantize(), sign(m.h.detach()))
    x = torch.randn(64, 1, 4, 16)
    assert torch.allclose(deployed_forward(net, enc, x), net(x), atol=1e-4)
    bits = {p.name: p.bits for p in storage(net)}
    # 70 rows of 2 words (64 inputs) + encode_binary's two fp32 constants; 40 x 3 words; 4 x 2 words; biases fp32
    assert bits["layers.1.h"] == 40 * 3 * 32 and bits["layers.2.h"] == 4 * 2 * 32
    assert bits["layers.0.h"] == 70 * 2 * 32 + 64 and bits["layers.0.bias"] == 70 * 32


def test_profiles_use_the_released_codes_step() -> None:
    for name in ("smoke", "quick", "paper"):
        ebp = PROFILES[name]["ebp"]
        assert (ebp["optimizer"], ebp["lr"], ebp["momentum"], ebp["schedule"]) == ("sgd", 1.0, 0.0, "constant")
        assert PROFILES[name]["backprop"]["steps"] == ebp["steps"]
    assert PROFILES["quick"]["seeds"] >= 3


@pytest.mark.parametrize("y", [0, 2])
def test_bipolar_targets(y: int) -> None:
    t = bipolar_targets(torch.tensor([y]), 3)
    assert t.tolist()[0] == [1.0 if k == y else -1.0 for k in range(3)]
