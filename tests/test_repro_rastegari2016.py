"""XNOR-Net (rastegari2016): the scaled sign of the weights and its gradient (Sec. 3.1), the XNOR layers
with their input scales ``beta`` / ``K`` (Sec. 3.2), the packed encodings (round trip and bit count) and
the run-time XNOR-popcount path (the same values as the PyTorch layers)."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
import torch.nn.functional as F
from atlas_reproductions.rastegari2016 import (
    PROFILES,
    BWNConv2d,
    BWNLinear,
    XnorConv2d,
    XnorLinear,
    binarize,
    binary_weight,
    deployed_forward,
    encode,
    network,
    op_count_speedup,
    pack_rows,
    patch_scale,
    scaled_sign,
    storage,
    xnor_conv2d,
    xnor_linear,
    xnor_popcount,
)
from torch import nn


def test_binary_weight_is_the_per_filter_mean_magnitude_times_the_signs() -> None:
    w = torch.tensor([[0.5, -1.5, 0.0, 2.0], [-0.1, -0.3, 0.2, 0.2]])
    assert torch.allclose(binary_weight(w), torch.tensor([[1.0, -1.0, 1.0, 1.0], [-0.2, -0.2, 0.2, 0.2]]))
    # alpha = mean|W| is the least-squares scale of the signs (Eq. 4): any other scale is worse
    signs = torch.where(w >= 0, 1.0, -1.0)
    best = (w - binary_weight(w)).pow(2).sum(1)
    for f in (0.9, 1.1):
        assert bool(((w - f * binary_weight(w)).pow(2).sum(1) > best).all())
    assert torch.allclose(binary_weight(w) / signs, w.abs().mean(1, keepdim=True).expand_as(w))


def test_scaled_sign_gradient_is_one_over_n_plus_alpha_inside_the_clip_range() -> None:
    w = torch.tensor([[0.5, -1.5, 0.2, 3.0]], requires_grad=True)  # alpha = 1.3, n = 4
    y = scaled_sign(w)
    assert torch.allclose(y, torch.tensor([[1.3, -1.3, 1.3, 1.3]]))
    y.backward(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    # dC/dW = g (1/n + alpha 1_{|W| <= 1}) (Sec. 3.1): alpha drops out where |W| > 1
    expected = torch.tensor([[1.0 * (0.25 + 1.3), 2.0 * 0.25, 3.0 * (0.25 + 1.3), 4.0 * 0.25]])
    assert torch.allclose(w.grad, expected)


def test_xnor_linear_layer_is_the_sign_product_scaled_by_alpha_and_beta() -> None:
    torch.manual_seed(0)
    layer = XnorLinear(6, 3, bias=False)
    x = torch.randn(4, 6)
    sx, sw = torch.where(x >= 0, 1.0, -1.0), torch.where(layer.weight >= 0, 1.0, -1.0)
    alpha = layer.weight.abs().mean(1)
    beta = x.abs().mean(1, keepdim=True)
    assert torch.allclose(layer(x), (sx @ sw.T) * alpha * beta, atol=1e-6)
    # and a BWN layer keeps the real input
    bwn = BWNLinear(6, 3, bias=False)
    bwn.weight.data.copy_(layer.weight)
    assert torch.allclose(bwn(x), x @ (sw * alpha[:, None]).T, atol=1e-6)


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0), (1, 0)])
def test_k_is_the_mean_magnitude_of_every_patch(stride: int, padding: int) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 2, 3, stride=stride, padding=padding)
    x = torch.randn(2, 3, 7, 7)
    cols = F.unfold(x, 3, padding=padding, stride=stride).abs().mean(1)  # zero padding counted
    assert torch.allclose(patch_scale(x, conv).flatten(1), cols, atol=1e-6)


def test_xnor_popcount_is_the_scaled_sign_product() -> None:
    torch.manual_seed(3)
    a, b = torch.randn(9, 100), torch.randn(7, 100)
    a[0, 0] = 0.0  # 0 -> +1
    w = ak.binarize_weight(b, scale=True)
    beta = a.abs().mean(1)
    signs = torch.where(a >= 0, 1.0, -1.0) @ torch.where(b >= 0, 1.0, -1.0).T
    assert torch.allclose(xnor_popcount(pack_rows(a), beta, w), signs * w.alpha[None, :] * beta[:, None])
    assert torch.equal(xnor_popcount(pack_rows(a), None, ak.binarize_weight(b, scale=False)), signs)


def test_encoding_decodes_to_the_binary_weights_and_counts_its_bits() -> None:
    torch.manual_seed(4)
    model = binarize(network((1, 8, 8), 3, [], [40, 33]), "bwn")
    enc = encode(model)
    assert sorted(enc) == ["4.weight"]  # the first and the last layer stay real
    w = model[4].weight.detach()
    assert torch.equal(enc["4.weight"].dequantize(), binary_weight(w))
    bits = {p.name: p.bits for p in storage(model)}
    assert bits["4.weight"] == 33 * 2 * 32 + 33 * 32  # ceil(40/32) words a row and one fp32 alpha a filter
    assert bits["1.weight"] == 32 * 40 * 64  # fp32


def test_binarize_keeps_the_weights_and_removes_the_relu_before_an_xnor_layer() -> None:
    torch.manual_seed(5)
    fp32 = network((3, 8, 8), 4, [6, 6], [10])
    xnor = binarize(fp32, "xnor")
    kinds = [type(m).__name__ for m in xnor]
    assert kinds == ["Conv2d", "BatchNorm2d", "Identity", "XnorConv2d", "MaxPool2d", "BatchNorm2d", "Identity",
                     "Flatten", "XnorLinear", "BatchNorm1d", "ReLU", "Linear"]
    assert [type(m).__name__ for m in binarize(fp32, "bwn")].count("BWNConv2d") == 1
    assert [type(m).__name__ for m in fp32].count("ReLU") == 3  # the fp32 network is left as it was
    for a, b in zip(fp32.parameters(), xnor.parameters(), strict=True):
        assert torch.equal(a, b)


def _trained_like(model: nn.Sequential) -> nn.Sequential:
    with torch.no_grad():  # BN statistics as after training, so that eval is not trivial
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize(("conv", "shape"), [([], (1, 4, 16)), ([5, 8], (3, 8, 8))])
def test_deployed_xnor_network_computes_the_pytorch_network(conv: list[int], shape: tuple[int, ...]) -> None:
    torch.manual_seed(6)
    xnor = _trained_like(binarize(network(shape, 3, conv, [20, 12]), "xnor"))
    x = torch.randn(11, *shape)
    with torch.no_grad():
        expected = xnor(x)
    assert torch.allclose(deployed_forward(xnor, encode(xnor), x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("stride", "padding", "bias"), [(1, 1, False), (2, 1, True), (1, 0, False)])
def test_packed_xnor_convolution_is_the_xnor_layer(stride: int, padding: int, bias: bool) -> None:
    torch.manual_seed(7)
    layer = XnorConv2d(6, 4, 3, stride=stride, padding=padding, bias=bias)
    x = torch.randn(2, 6, 9, 9)
    enc = ak.binarize_weight(layer.weight.detach().flatten(1), scale=True)
    with torch.no_grad():
        assert torch.allclose(xnor_conv2d(x, enc, layer), layer(x), atol=1e-5)
    lin = XnorLinear(6 * 81, 5, bias=True)
    enc = ak.binarize_weight(lin.weight.detach(), scale=True)
    with torch.no_grad():
        assert torch.allclose(xnor_linear(x, enc, lin.bias), lin(x.flatten(1)), atol=1e-5)


def test_gradient_reaches_the_latent_weights_of_every_binary_layer() -> None:
    torch.manual_seed(8)
    xnor = binarize(network((3, 8, 8), 4, [6, 6], [10]), "xnor").train()
    F.cross_entropy(xnor(torch.randn(5, 3, 8, 8)), torch.arange(5) % 4).backward()
    for m in xnor:
        if isinstance(m, (XnorConv2d, XnorLinear, BWNConv2d)):
            assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0


def test_operation_count_and_profiles() -> None:
    assert op_count_speedup(256, 9) == pytest.approx(62.27, abs=0.01)  # 64 c N_W / (c N_W + 64)
    assert PROFILES["quick"]["seeds"] >= 3
