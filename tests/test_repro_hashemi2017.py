"""Hashemi et al. 2017: a network whose layer inputs and weights are B-bit fixed point with per-tensor
integer lengths, fine-tuned straight through the rounding, and its packed storage."""

from __future__ import annotations

import atlas_kernels as ak
import torch
from atlas_reproductions.hashemi2017 import (
    FixedPointLinear,
    encode_weights,
    fixed_point_storage,
    integer_bits,
    to_fixed_point,
    to_format,
)
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_integer_bits() -> None:
    assert [integer_bits(v) for v in (0.2, 0.3, 0.9, 1.0, 5.0)] == [-1, 0, 1, 2, 4]


def test_format_rounds_saturates_and_passes_the_gradient_inside_the_range() -> None:
    x = torch.tensor([0.3, -0.7, 1.85, 2.2, -3.0], requires_grad=True)
    y = to_format(x, 4, 2)  # <2, 2>: eps 0.25, range [-2, 1.75]
    assert y.tolist() == [0.25, -0.75, 1.75, 1.75, -2.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]  # 1.85 rounds to 1.75 (within eps/2), 2.2 saturates


def test_layer_rounds_its_input_and_weight() -> None:
    dense = _mlp()
    calib = torch.rand(32, 6) * 3
    fixed = to_fixed_point(dense, 6, calib)
    first, second = fixed[1], fixed[3]
    assert isinstance(first, FixedPointLinear) and isinstance(second, FixedPointLinear)
    assert first.input_int_length == integer_bits(float(calib.abs().max()))
    x = torch.rand(4, 6) * 3
    w = ak.round_fixed_point(dense[1].weight.detach(), 6, 6 - integer_bits(float(dense[1].weight.detach().abs().max())))
    assert torch.equal(first.quantized_weight(), w)
    expected = ak.round_fixed_point(x, 6, 6 - first.input_int_length) @ w.T + dense[1].bias
    assert torch.allclose(first(x), expected)
    assert not torch.allclose(fixed(x), dense(x))
    # 16 bits: the fixed-point network is the float one up to its rounding
    assert torch.allclose(to_fixed_point(dense, 16, calib)(x), dense(x), atol=1e-3)
    # the float weights receive the gradient (fine-tuning updates them)
    fixed.train()(x).sum().backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_storage_is_the_packed_codes_and_decodes_to_the_used_weights() -> None:
    fixed = to_fixed_point(_mlp(), 8, torch.rand(16, 6))
    encoded = encode_weights(fixed)
    assert sorted(encoded) == ["1.weight", "3.weight"]
    assert torch.equal(encoded["1.weight"].dequantize(), fixed[1].quantized_weight())
    assert torch.equal(encoded["3.weight"].dequantize(), fixed[3].quantized_weight())
    bits = {p.name: p.bits for p in fixed_point_storage(fixed)}
    # 8-bit codes, 4 per int32 word: 6 inputs -> 2 words per row; 5 inputs -> 2 words per row
    assert bits == {"1.weight": 32 * 2 * 5, "3.weight": 32 * 2 * 3, "1.bias": 32 * 5, "3.bias": 32 * 3}
