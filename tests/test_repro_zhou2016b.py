"""DoReFa-Net (zhou2016b): quantize_k and its straight-through gradient (Eq. 5), the k-bit and 1-bit weights
(Eq. 7, 9), the bounded quantized activations (Eq. 11), the noisy gradient quantizer (Eq. 12), the network
surgery, and the packed encodings' round trip."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.rastegari2016 import network
from atlas_reproductions.zhou2016b import (
    PROFILES,
    ActivationQuantizer,
    DoReFaLinear,
    GradientQuantizer,
    dorefa_network,
    encode,
    quantize_activation,
    quantize_gradient,
    quantize_k,
    quantize_weight,
    storage,
)
from torch import nn


def test_quantize_k_rounds_to_the_k_bit_grid_with_the_identity_gradient() -> None:
    r = torch.tensor([0.0, 0.1, 0.2, 0.5, 0.9, 1.0], requires_grad=True)
    q = quantize_k(r, 2)  # grid {0, 1/3, 2/3, 1}
    assert torch.allclose(q, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    q.backward(torch.arange(6.0))
    assert torch.equal(r.grad, torch.arange(6.0))


def test_k_bit_weights_are_the_tanh_normalised_grid() -> None:
    w = torch.tensor([[-2.0, -0.1, 0.05, 0.3, 2.0]])
    t = torch.tanh(w)
    u = t / (2 * t.abs().max()) + 0.5
    expected = 2 * torch.round(u * 3) / 3 - 1
    q = quantize_weight(w, 2)
    assert torch.allclose(q, expected)
    assert torch.allclose(q, torch.tensor([[-1.0, -1 / 3, 1 / 3, 1 / 3, 1.0]]))
    # 4 bits: 16 levels in [-1, 1], the largest |w| at +-1
    q4 = quantize_weight(torch.randn(50, 30, generator=torch.Generator().manual_seed(0)), 4)
    codes = (q4 + 1) * 15 / 2
    assert torch.allclose(codes, codes.round(), atol=1e-5) and float(q4.abs().max()) == pytest.approx(1.0)


def test_k_bit_weight_gradient_goes_through_tanh_and_the_max() -> None:
    w = torch.tensor([[0.3, -0.8, 1.5]], requires_grad=True)
    quantize_weight(w, 3).sum().backward()
    w2 = w.detach().clone().requires_grad_(True)
    t = torch.tanh(w2)
    (2 * (t / (2 * t.abs().max()) + 0.5) - 1).sum().backward()  # the same without the rounding (STE)
    assert torch.allclose(w.grad, w2.grad)


def test_one_bit_weights_are_the_layer_mean_magnitude_times_the_signs() -> None:
    w = torch.tensor([[0.5, -1.5], [0.0, -2.0]], requires_grad=True)  # E|w| = 1.0 over the layer
    q = quantize_weight(w, 1)
    assert torch.allclose(q, torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    q.backward(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(w.grad, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # identity (stop-gradient on E)


def test_activation_is_clipped_then_quantized() -> None:
    x = torch.tensor([-0.5, 0.1, 0.2, 0.6, 1.7], requires_grad=True)
    y = quantize_activation(x, 2)
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))  # clip's gradient, STE inside
    assert torch.allclose(ActivationQuantizer(None)(x), torch.tensor([0.0, 0.1, 0.2, 0.6, 1.0]))


def test_gradient_quantizer_is_on_the_per_example_grid_and_unbiased() -> None:
    gen = torch.Generator().manual_seed(0)
    dr = torch.tensor([[0.4, -0.1, 0.25, -0.4], [2.0, 1.0, -0.5, 0.0]])
    q = quantize_gradient(dr, 2, gen)
    m = dr.abs().amax(1, keepdim=True)
    levels = (q / (2 * m) + 0.5) * 3  # on the grid 2 m (i / 3 - 1/2)
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    assert bool((q.abs() <= m + 1e-6).all())
    # the noise makes the rounding stochastic and unbiased: the mean over many draws is dr
    mean = torch.stack([quantize_gradient(dr, 2, gen) for _ in range(20000)]).mean(0)
    assert torch.allclose(mean, dr, atol=0.02)
    # without the noise 0.25 / 0.8 + 1/2 = 0.8125 would always round to 2/3, i.e. 2 (0.4) (2/3 - 1/2) = 0.133
    assert abs(float(mean[0, 2]) - 0.25) < 0.01


def test_gradient_quantizer_module_quantizes_only_the_backward_pass() -> None:
    torch.manual_seed(0)
    g = GradientQuantizer(2).train()
    x = torch.randn(3, 5, requires_grad=True)
    y = g(x)
    assert torch.equal(y, x)
    up = torch.randn(3, 5)
    y.backward(up)
    m = up.abs().amax(1, keepdim=True)
    levels = (x.grad / (2 * m) + 0.5) * 3
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    assert not torch.allclose(x.grad, up)


def test_dorefa_network_quantizes_the_inner_layers_only() -> None:
    fp = network((1, 8, 8), 10, [], [32, 32, 32])
    net = dorefa_network(fp, 2, 2, 6)
    lin = [m for m in net if isinstance(m, nn.Linear)]
    assert [isinstance(m, DoReFaLinear) for m in lin] == [False, True, True, False]
    assert all(m.bits == 2 for m in lin if isinstance(m, DoReFaLinear))
    acts = [m.bits for m in net if isinstance(m, ActivationQuantizer)]
    assert acts == [2, 2, None]  # before the two quantized layers, clip only before the last
    assert sum(isinstance(m, GradientQuantizer) for m in net) == 3
    assert not any(isinstance(m, nn.ReLU) for m in net)
    # same initial weights as the fp32 network
    assert torch.equal(lin[1].weight, [m for m in fp if isinstance(m, nn.Linear)][1].weight)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_encoding_decodes_to_the_quantized_weights(bits: int) -> None:
    torch.manual_seed(bits)
    net = dorefa_network(network((1, 8, 8), 10, [], [40, 24, 16]), bits, 2, 6)
    enc = encode(net)
    assert len(enc) == 2
    for name, q in enc.items():
        layer = net[int(name.split(".")[0])]
        assert torch.allclose(q.dequantize(), quantize_weight(layer.weight.detach(), bits).flatten(1), atol=1e-6)
        assert q.bits == bits
    # storage: the packed codes, not 32 / bits of the weights
    parts = storage(net)
    coded = [p for p in parts if "DoReFa" in p.what]
    n_weights = sum(q.shape[0] * q.shape[1] for q in enc.values())
    rows = sum(q.shape[0] for q in enc.values())
    # at most one partly filled int32 word a row and two fp32 decode constants a row on top of the codes
    assert bits * n_weights <= sum(p.bits for p in coded) <= bits * n_weights + rows * (32 + 2 * 32)


def test_profiles_quick_has_three_seeds_and_three_weight_bit_widths() -> None:
    assert PROFILES["quick"]["seeds"] >= 3
    assert len(PROFILES["quick"]["bits"]["weights"]) >= 3
