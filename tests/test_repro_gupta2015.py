"""Gupta et al. 2015: training in fixed point <IL, FL>. The layers round their outputs and each
example's error into the format, the SGD update is stored back in it (lost below eps/2 to
round-to-nearest, kept in expectation by stochastic rounding), and the stored parameters are the
fixed-point encoding's values exactly."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.gupta2015 import (
    FixedPointLinear,
    RoundThrough,
    encode_parameters,
    fixed_point_storage,
    round_parameters,
    to_fixed_point,
)
from torch import nn

from atlas.harness import measure


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_conversion_puts_every_parameter_on_the_grid() -> None:
    model = to_fixed_point(_mlp(), 12, 8, "stochastic")
    layers = [m for m in model.modules() if isinstance(m, FixedPointLinear)]
    assert len(layers) == 2
    for p in model.parameters():
        assert torch.equal(p * 256, torch.round(p * 256))  # multiples of eps = 2^-8
        assert p.abs().max() <= 8.0  # IL = 4: [-8, 8 - 2^-8]


def test_layer_output_is_rounded_and_saturated() -> None:
    layer = to_fixed_point(nn.Sequential(nn.Linear(2, 2, bias=False)), 6, 2, "nearest")[0]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [4.0, 4.0]]))
    y = layer.eval()(torch.tensor([[0.3, 0.1], [0.13, 2.0]]))
    # <4, 2>: eps 0.25, range [-8, 7.75]; 0.3 -> 0.25, 1.6 -> 1.5, 0.13 -> 0.25 (above eps/2), 8.52 saturates
    assert y.tolist() == [[0.25, 1.5], [0.25, 7.75]]


def test_backward_rounds_each_examples_error() -> None:
    x = torch.zeros(4, 3, requires_grad=True)
    y = RoundThrough.apply(x, 8, 4, "nearest", "nearest")
    # the batch-mean loss's gradient is 1/4 of each example's error: errors 0.03 (below eps/2 = 1/32)
    # vanish, 0.04 rounds to 1/16
    grad = torch.tensor([[0.03, 0.04, -0.2]] * 4) / 4
    y.backward(grad)
    assert torch.allclose(x.grad, torch.tensor([[0.0, 0.0625, -0.1875]] * 4) / 4)


def test_update_below_half_a_step_is_lost_to_nearest_kept_by_stochastic_rounding() -> None:
    torch.manual_seed(0)
    results = {}
    for rounding in ("nearest", "stochastic"):
        model = to_fixed_point(nn.Sequential(nn.Linear(200, 200)), 12, 8, rounding)  # type: ignore[arg-type]
        before = model[0].weight.detach().clone()
        with torch.no_grad():
            model[0].weight -= 2.0**-10  # an SGD update of a quarter of eps
        round_parameters(model)
        results[rounding] = (model[0].weight.detach() - before).mean().item()
    assert results["nearest"] == 0.0
    assert results["stochastic"] == pytest.approx(-(2.0**-10), rel=0.05)


def test_storage_is_the_packed_16_bit_codes_and_decodes_exactly() -> None:
    model = to_fixed_point(_mlp(), 16, 12, "stochastic")
    encoded = encode_parameters(model)
    params = dict(model.named_parameters())
    assert sorted(encoded) == sorted(params)
    for name, q in encoded.items():
        assert torch.equal(q.dequantize().reshape(params[name].shape), params[name].detach())
    # 16-bit codes: two per int32 word, one row of words per output unit (a bias is one row)
    bits = {p.name: p.bits for p in fixed_point_storage(model)}
    assert bits == {"1.weight": 32 * 5 * 3, "1.bias": 32 * 3, "3.weight": 32 * 3 * 3, "3.bias": 32 * 2}
    # 53 parameters at 16 bits (848) plus each row's zero-padded half word (5 + 1 + 3 + 1 rows x 16)
    assert measure.storage_bits(fixed_point_storage(model)) == 16 * 53 + 16 * 5 == 928
    assert isinstance(next(iter(encoded.values())), ak.FixedPointWeight)
