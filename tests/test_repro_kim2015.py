"""Bitwise Neural Networks (kim2015): the noisy sign and its backward pass, Eq. 1-2 with the bias as the
weight matrix's extra column, the two rounds' modes, the packed encoding (round trip and bit count), the
network run as XNOR + popcount products (the same logits) and the control's plain copy."""

from __future__ import annotations

import math

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.kim2015 import (
    PROFILES,
    BitwiseLinear,
    as_plain,
    bipolar,
    deployed_forward,
    encode,
    network,
    noisy_sign,
    set_mode,
    storage,
)


def test_noisy_sign_is_the_sign_forward_and_the_tanh_derivative_backward() -> None:
    x = torch.tensor([-2.0, -0.5, -1e-8, 0.0, 0.3, 1.5], requires_grad=True)
    y = noisy_sign(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]  # exact bipolar values, 0 -> +1
    y.backward(torch.ones(6))
    expected = 1 - torch.tanh(x.detach()) ** 2
    assert torch.allclose(x.grad, expected)
    assert x.grad[0] == pytest.approx(1 - math.tanh(2.0) ** 2, rel=1e-5)


def test_a_bitwise_layer_is_eq1_with_the_bias_as_its_last_column() -> None:
    torch.manual_seed(0)
    layer = BitwiseLinear(5, 3, mode="bitwise")
    z = bipolar(torch.randn(4, 5))
    w = bipolar(layer.weight.detach())
    # a_i = b_i + sum_j w_ij XNOR z_j: on ±1 values XNOR is the product
    expected = (w[:, 5][None, :] + z @ w[:, :5].T) / math.sqrt(6)
    assert torch.equal(layer(z), expected)
    layer.mode = "real"  # weight compression: tanh of the latent values, the bias included
    real = (torch.tanh(layer.weight[:, 5])[None, :] + z @ torch.tanh(layer.weight[:, :5]).T) / math.sqrt(6)
    assert torch.allclose(layer(z), real.detach(), atol=1e-6)


def test_noisy_backpropagation_reaches_the_latent_weights_through_the_sign_units() -> None:
    torch.manual_seed(1)
    real = network((1, 4, 4), 3, [7])
    bitwise = set_mode(real, "bitwise")
    assert all(getattr(m, "mode", "bitwise") == "bitwise" for m in bitwise)
    assert all(getattr(m, "mode", "real") == "real" for m in real)  # the real network is left as it was
    for a, b in zip(real.parameters(), bitwise.parameters(), strict=True):
        assert torch.equal(a, b) and a is not b
    h = bitwise(torch.randn(6, 1, 4, 4))
    torch.nn.functional.cross_entropy(h, torch.arange(6) % 3).backward()
    first = bitwise[1].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_encoding_decodes_to_the_bits_and_counts_padded_words() -> None:
    torch.manual_seed(2)
    model = set_mode(network((1, 4, 10), 3, [40]), "bitwise")
    encoded = encode(model)
    assert sorted(encoded) == ["1.weight", "3.weight"]
    for name, q in encoded.items():
        assert isinstance(q, ak.BinaryWeight) and q.alpha is None
        assert torch.equal(q.dequantize(), bipolar(dict(model.named_parameters())[name].detach()))
    # 40 inputs + bias = 41 bits -> 2 words a row; 40 units + bias = 41 -> 2 words: nothing else is stored
    assert {p.name: p.bits for p in storage(model)} == {"1.weight": 40 * 2 * 32, "3.weight": 3 * 2 * 32}


def test_the_network_on_packed_bits_gives_the_bitwise_logits_exactly() -> None:
    torch.manual_seed(3)
    model = set_mode(network((1, 8, 8), 4, [70, 33]), "bitwise").eval()
    x = torch.randn(50, 1, 8, 8)
    expected = model(x)
    encoded = encode(model)
    assert torch.equal(deployed_forward(model, encoded, x), expected)
    # without the bias bit the products differ: the comparison can fail
    wrong = dict(encoded)
    w = encoded["1.weight"].dequantize()
    w[:, -1] = -w[:, -1]
    wrong["1.weight"] = ak.binarize_weight(w, scale=False)
    assert not torch.equal(deployed_forward(model, wrong, x), expected)


def test_the_controls_plain_copy_is_the_real_valued_network() -> None:
    torch.manual_seed(4)
    real = network((1, 4, 4), 3, [9, 5])
    x = torch.randn(8, 1, 4, 4)
    plain = as_plain(real)
    assert sum(isinstance(m, torch.nn.Linear) for m in plain) == 3
    assert torch.allclose(plain(x), real(x), atol=1e-6)
    assert not torch.allclose(plain(x), set_mode(real, "bitwise")(x), atol=1e-3)


def test_profiles() -> None:
    assert PROFILES["quick"]["seeds"] >= 3 and len(PROFILES["quick"]["control_bits"]) >= 3
    assert PROFILES["paper"]["hidden"][0] == 1024  # Sec. 1: 1024-unit hidden layers
