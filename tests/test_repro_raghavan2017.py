"""BitNet (raghavan2017): the per-layer quantizer on its own range, the regulariser and the sign step of
the bit-widths, the BitNet built from a float MLP, and the packed encoding at the learned bits (exact
round trip, bit count)."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.raghavan2017 import (
    MAX_BITS,
    BitLinear,
    bit_layers,
    bitnet,
    bitnet_storage,
    encode_layer,
    grid,
    mean_bits,
    quantize,
    regulariser,
    relative_error,
    update_bits,
)
from torch import nn

from atlas.harness import measure


def test_grid_spans_the_layer_range_with_2_to_the_b_levels() -> None:
    w = torch.tensor([[-0.3, -0.1, 0.0], [0.2, 0.4, 0.05]])
    q = quantize(w, 2)
    step = 0.7 / 3
    assert torch.allclose(q.unique(), torch.tensor([-0.3, -0.3 + step, -0.3 + 2 * step, 0.4]), atol=1e-6)
    assert float(q.min()) == pytest.approx(-0.3) and float(q.max()) == pytest.approx(0.4)
    codes, scale, zero = grid(w, 2)
    assert codes.min() == 0 and codes.max() == 3
    assert float(scale) == pytest.approx(step) and float(zero) == pytest.approx(0.3 / step)
    with pytest.raises(ValueError):
        quantize(w, 0)


def test_error_at_most_half_a_step_and_falls_with_bits() -> None:
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    errs = []
    for b in range(1, MAX_BITS + 1):
        step = float(w.max() - w.min()) / (2**b - 1)
        assert float((quantize(w, b) - w).abs().max()) <= step / 2 + 1e-5
        errs.append(float(relative_error(w, b)))
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False))


def test_decode_of_encoding_is_the_quantized_weight_and_its_bits_are_the_packed_words() -> None:
    w = torch.randn(10, 37, generator=torch.Generator().manual_seed(1))
    for b in (1, 2, 3, 5, 8):
        enc = encode_layer(w, b)
        assert torch.equal(enc.dequantize(), quantize(w, b))
        words = 10 * -(-37 // (32 // b))
        assert 8 * enc.storage_bytes() >= 32 * words  # the int32 words of the codes (+ the two constants)
        assert 8 * enc.storage_bytes() <= 32 * words + 4 * 32


def test_bitlinear_propagates_the_quantized_weight_with_a_straight_through_gradient() -> None:
    torch.manual_seed(0)
    model = bitnet(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), bits=3)
    assert [m.bits for m in bit_layers(model)] == [3, 3]
    layer = model[0]
    assert isinstance(layer, BitLinear)
    x = torch.randn(2, 5)
    assert torch.allclose(layer(x), x @ quantize(layer.weight, 3).T + layer.bias)
    layer(x).sum().backward()
    assert torch.allclose(layer.weight.grad, x.sum(0).expand(4, 5))  # d/dW of sum(x q(W)^T) via STE


def test_bits_move_one_step_down_under_a_large_bit_cost_and_up_under_a_small_one() -> None:
    torch.manual_seed(0)
    model = bitnet(nn.Sequential(nn.Linear(50, 20), nn.ReLU(), nn.Linear(20, 5)), bits=4)
    update_bits(model, lambda_q=1.0, lambda_b=10.0)
    assert [m.bits for m in bit_layers(model)] == [3, 3]
    for _ in range(10):
        update_bits(model, lambda_q=1.0, lambda_b=10.0)
    assert [m.bits for m in bit_layers(model)] == [1, 1]
    for _ in range(3):
        update_bits(model, lambda_q=1.0, lambda_b=0.0)  # only the error counts: more bits
    assert [m.bits for m in bit_layers(model)] == [4, 4]
    for _ in range(10):
        update_bits(model, lambda_q=1.0, lambda_b=0.0)
    assert [m.bits for m in bit_layers(model)] == [MAX_BITS, MAX_BITS]
    update_bits(model, lambda_q=1.0, lambda_b=10.0, cap=4)  # a cap below the bits: one step down
    assert [m.bits for m in bit_layers(model)] == [MAX_BITS - 1, MAX_BITS - 1]
    model = bitnet(nn.Sequential(nn.Linear(50, 20)), bits=2)
    for _ in range(5):
        update_bits(model, lambda_q=1.0, lambda_b=0.0, cap=3)
    assert [m.bits for m in bit_layers(model)] == [3]


def test_regulariser_is_error_plus_mean_bits_and_storage_counts_the_learned_bits() -> None:
    torch.manual_seed(0)
    model = bitnet(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    model[0].bits, model[2].bits = 3, 5
    mb = (3 * 64 * 32 + 5 * 32 * 10) / (64 * 32 + 32 * 10)
    assert mean_bits(model) == pytest.approx(mb)
    err = float((relative_error(model[0].weight, 3) + relative_error(model[2].weight, 5)).detach())
    assert float(regulariser(model, 2.0, 0.1).detach()) == pytest.approx(2.0 * err + 0.1 * mb, rel=1e-5)
    parts = bitnet_storage(model)
    codes = [p for p in parts if p.what.endswith("-bit codes")]
    assert [p.what for p in codes] == ["3-bit codes", "5-bit codes"]
    assert codes[0].bits >= 32 * 32 * 7  # 64 codes a row, 10 a word: 7 words a row
    fp32 = measure.storage_bits([p for p in parts if p.what == "fp32"])
    assert fp32 == 32 * (32 + 10)  # the biases
