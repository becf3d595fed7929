"""HORQ (li2017d): the residual expansion and its error guarantee, the HORQ layers (order one is
XNOR-Net's layer), and the run-time path (one packed XNOR-popcount product per order)."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
import torch.nn.functional as F
from atlas_reproductions.li2017d import (
    PROFILES,
    HorqConv2d,
    HorqLinear,
    deployed_forward,
    horq_conv_packed,
    horq_network,
    horq_product,
    residual_approximation,
    residual_errors,
    residual_terms,
)
from atlas_reproductions.rastegari2016 import XnorConv2d, XnorLinear, binarize, encode, network
from torch import nn


def test_residual_terms_on_a_small_example() -> None:
    x = torch.tensor([[3.0, -1.0, 0.5, -0.5]])
    (b1, h1), (b2, h2) = residual_terms(x, 2)
    assert b1.item() == pytest.approx(1.25) and h1.tolist() == [[1.0, -1.0, 1.0, -1.0]]
    # R_1 = [1.75, 0.25, -0.75, 0.75]
    assert b2.item() == pytest.approx(0.875) and h2.tolist() == [[1.0, 1.0, -1.0, 1.0]]
    assert torch.allclose(residual_approximation(x, 2), torch.tensor([[2.125, -0.375, 0.375, -0.375]]))


def test_every_order_removes_n_beta_squared_from_the_residual() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 50)
    prev = x.pow(2).sum(1)
    for k in (1, 2, 3, 4):
        beta = residual_terms(x, k)[-1][0].squeeze(1)
        err = (x - residual_approximation(x, k)).pow(2).sum(1)
        assert torch.allclose(err, prev - 50 * beta.pow(2), rtol=1e-4, atol=1e-4)  # ||R_i||^2 = ||R_i-1||^2 - n b^2
        assert bool((err < prev).all())
        prev = err


def test_order_one_is_the_xnor_layer() -> None:
    torch.manual_seed(1)
    horq, xnor = HorqLinear(12, 5, bias=False, order=1), XnorLinear(12, 5, bias=False)
    xnor.weight.data.copy_(horq.weight)
    x = torch.randn(4, 12)
    assert torch.allclose(horq(x), xnor(x), atol=1e-6)
    conv_h, conv_x = HorqConv2d(3, 4, 3, padding=1, bias=False, order=1), XnorConv2d(3, 4, 3, padding=1, bias=False)
    conv_x.weight.data.copy_(conv_h.weight)
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(conv_h(x), conv_x(x), atol=1e-5)


def test_order_two_layer_is_the_sum_of_two_scaled_binary_products() -> None:
    torch.manual_seed(2)
    layer = HorqLinear(10, 3, bias=True, order=2)
    x = torch.randn(5, 10)
    wb = torch.where(layer.weight >= 0, 1.0, -1.0) * layer.weight.abs().mean(1, keepdim=True)
    expected = sum(b * (h @ wb.T) for b, h in residual_terms(x, 2)) + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert not torch.allclose(layer(x), _order(layer, 1)(x), atol=1e-3)  # order one differs


def _order(layer: HorqLinear, k: int) -> HorqLinear:
    other = HorqLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, order=k)
    other.load_state_dict(layer.state_dict())
    return other


@pytest.mark.parametrize("order", [1, 2, 3])
def test_packed_product_is_the_layer(order: int) -> None:
    torch.manual_seed(3)
    layer = HorqLinear(70, 6, bias=False, order=order)
    x = torch.randn(9, 70)
    enc = ak.binarize_weight(layer.weight.detach(), scale=True)
    with torch.no_grad():
        assert torch.allclose(horq_product(x, enc, order), layer(x), atol=1e-4)


@pytest.mark.parametrize(("conv", "shape"), [([], (1, 4, 16)), ([5, 8], (3, 8, 8))])
def test_deployed_network_computes_the_pytorch_network(conv: list[int], shape: tuple[int, ...]) -> None:
    torch.manual_seed(4)
    model = horq_network(network(shape, 3, conv, [20, 12]), 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(7, *shape)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(deployed_forward(model, encode(model), x), expected, atol=1e-4, rtol=1e-4)


def test_horq_network_has_xnor_nets_structure_and_weights() -> None:
    torch.manual_seed(5)
    fp32 = network((1, 8, 8), 4, [], [16, 16])
    horq, xnor = horq_network(fp32, 3), binarize(fp32, "xnor")
    assert [type(m).__name__.replace("Horq", "Xnor") for m in horq] == [type(m).__name__ for m in xnor]
    assert all(m.order == 3 for m in horq if isinstance(m, HorqLinear))
    for a, b in zip(fp32.parameters(), horq.parameters(), strict=True):
        assert torch.equal(a, b)
    F.cross_entropy(horq.train()(torch.randn(6, 1, 8, 8)), torch.arange(6) % 4).backward()
    assert horq[4].weight.grad is not None and horq[4].weight.grad.abs().sum() > 0


def test_residual_errors_fall_with_the_order() -> None:
    torch.manual_seed(6)
    model = horq_network(network((3, 8, 8), 4, [6, 6], [10]), 2)
    errors = residual_errors(model, torch.randn(4, 3, 8, 8), [1, 2, 3])
    assert 0 < errors[3] < errors[2] < errors[1] < 1
    assert PROFILES["quick"]["seeds"] >= 3


@pytest.mark.parametrize(("order", "stride", "padding", "bias"), [(2, 1, 1, False), (3, 2, 1, True), (2, 1, 0, False)])
def test_packed_convolution_is_the_horq_convolution(order: int, stride: int, padding: int, bias: bool) -> None:
    torch.manual_seed(7)
    layer = HorqConv2d(5, 4, 3, stride=stride, padding=padding, bias=bias, order=order)
    x = torch.randn(2, 5, 9, 9)
    enc = ak.binarize_weight(layer.weight.detach().flatten(1), scale=True)
    with torch.no_grad():
        assert torch.allclose(horq_conv_packed(x, enc, layer), layer(x), atol=1e-4)
        lower = HorqConv2d(5, 4, 3, stride=stride, padding=padding, bias=bias, order=order - 1)
        lower.load_state_dict(layer.state_dict())
        assert not torch.allclose(lower(x), layer(x), atol=1e-3)  # the extra order changes the output
