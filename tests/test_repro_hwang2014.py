"""Hwang & Sung 2014: ternary (or few-level) weights with a least-squares step per layer, fixed-point
signals after each hidden unit, retraining through both roundings, and the deployed encoding."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.hwang2014 import (
    FixedPointReLU,
    TernaryLinear,
    decode_weight,
    encode_weights,
    fixed_point_layers,
    fixed_point_storage,
    optimal_step,
    quantize_signal,
    signal_frac_length,
    to_fixed_point,
    weight_integers,
    weight_levels,
)
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_weight_levels() -> None:
    assert [weight_levels(b) for b in (2, 3, 4)] == [1, 3, 7]
    with pytest.raises(ValueError):
        weight_levels(1)
    w = torch.tensor([-3.0, -0.6, -0.4, 0.0, 0.4, 0.6, 3.0])
    assert weight_integers(w, 1.0, 1).tolist() == [-1, -1, 0, 0, 0, 1, 1]
    assert weight_integers(w, 0.5, 3).tolist() == [-3, -1, -1, 0, 1, 1, 3]


def test_step_is_the_least_squares_step() -> None:
    # ternary on {±1 (x4), 0 (x2)}: the step 1 is exact
    assert optimal_step(torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0]), 1) == pytest.approx(1.0)
    torch.manual_seed(0)
    w = torch.randn(4000) * 0.05
    for levels in (1, 3, 7):
        step = optimal_step(w, levels)

        def err(s: float, levels: int = levels) -> float:
            return float((w - s * weight_integers(w, s, levels)).pow(2).sum())

        grid = torch.linspace(0.002, 0.2, 600).tolist()
        # alternating least squares ends at a fixed point: within 0.1% of the best step on a fine grid
        assert err(step) <= min(err(s) for s in grid) * (1 + 1e-3)
    # Gaussian weights: the ternary step is near 1.22 sigma (Lloyd-Max's symmetric 3-level quantizer)
    assert optimal_step(w, 1) / 0.05 == pytest.approx(1.224, abs=0.05)


def test_signal_is_an_unsigned_fixed_point_number_with_a_clipped_straight_through_gradient() -> None:
    x = torch.tensor([0.2, 0.3, 1.26, 3.6, 5.0], requires_grad=True)
    y = quantize_signal(x, 3, 1)  # eps 0.5, range [0, 3.5]
    assert y.tolist() == [0.0, 0.5, 1.5, 3.5, 3.5]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]  # 3.6 rounds to the top level, 5.0 saturates
    assert torch.equal(quantize_signal(x.detach(), 3, 1), ak.round_fixed_point(x.detach(), 4, 1))


def test_signal_format_minimises_the_squared_error() -> None:
    # 0.5 and 3.0 are exact at FL = 1 (range 3.5); FL = 0 loses the 0.5, FL = 2 saturates the 3.0
    assert signal_frac_length(torch.tensor([0.5, 3.0]), 3) == 1
    assert signal_frac_length(torch.tensor([0.02, 0.1]), 3) == 6  # eps 1/64: 0.1 -> 6/64, 0.02 -> 1/64


def test_conversion_and_forward_use_the_quantized_weights_and_signals() -> None:
    dense = _mlp()
    calib = torch.rand(64, 6)
    fixed = to_fixed_point(dense, 2, 3, calib)
    layers = fixed_point_layers(fixed)
    assert [n for n, _ in layers] == ["1", "3"]
    relu = fixed[2]
    assert isinstance(relu, FixedPointReLU) and relu.bits == 3
    x = torch.rand(8, 6)
    ws = []
    for _, layer in layers:
        assert layer.levels == 1 and layer.step == pytest.approx(optimal_step(layer.weight, 1))
        q = layer.quantized_weight()
        assert set((q / layer.step).round().unique().tolist()) <= {-1.0, 0.0, 1.0}
        ws.append(q)
    hidden = ak.round_fixed_point(torch.relu(x @ ws[0].T + fixed[1].bias), 4, relu.frac_length)
    assert torch.allclose(fixed(x), hidden @ ws[1].T + fixed[3].bias)
    assert not torch.allclose(fixed(x), dense(x))
    # retraining updates the float weights: the gradient reaches them straight through the rounding
    fixed.train()(x).sum().backward()
    assert isinstance(fixed[1], TernaryLinear) and fixed[1].weight.grad is not None
    assert fixed[1].weight.grad.abs().sum() > 0


def test_storage_decodes_to_the_deployed_weights() -> None:
    for bits, word in ((2, 2), (3, 3), (4, 4)):
        fixed = to_fixed_point(_mlp(), bits, 3, torch.rand(16, 6))
        encoded = encode_weights(fixed)
        steps = {f"{n}.weight": layer for n, layer in fixed_point_layers(fixed)}
        for name, q in encoded.items():
            assert q.word_length == word and q.frac_length == 0
            assert torch.allclose(decode_weight(q, steps[name].step), steps[name].quantized_weight())
    parts = {p.name: p.bits for p in fixed_point_storage(to_fixed_point(_mlp(), 2, 3, torch.rand(16, 6)))}
    # 2-bit codes, 16 per int32 word: one word per row; one fp32 step per layer; fp32 biases
    assert parts == {"1.weight": 32 * 5, "1.weight.step": 32, "3.weight": 32 * 3, "3.weight.step": 32,
                     "1.bias": 32 * 5, "3.bias": 32 * 3}
