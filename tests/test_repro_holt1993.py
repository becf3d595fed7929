"""Holt & Hwang 1993: each rounding an independent uniform error, propagated to first order through the
weighted sums and the ReLU; the prediction against the simulated fixed-point network."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.holt1993 import (
    formats_of,
    integer_bits,
    measured_error,
    predicted_error,
    run_network,
)
from torch import nn


def test_integer_bits() -> None:
    assert [integer_bits(v) for v in (0.3, 0.9, 1.0, 3.0)] == [0, 1, 2, 3]


def test_prediction_of_one_weighted_sum_is_the_closed_form() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))
        model[1].bias.zero_()
    x = torch.tensor([[1.0, 0.5, -0.25]])
    formats = [(1, 2)]
    bits = 6
    var_a, var_w = 4.0 ** (1 - 6) / 12, 4.0 ** (2 - 6) / 12
    # neuron 0: (1 + 4 + 0.25) var_a + 1.3125 var_w; neuron 1: 2 var_a + 1.3125 var_w
    expected = ((5.25 + 2.0) * var_a + 2 * 1.3125 * var_w) / 2
    assert predicted_error(model, x, formats, bits, round_input=True) == pytest.approx(expected)
    # the network's input (the data) not rounded: the weights' term alone
    assert predicted_error(model, x, formats, bits) == pytest.approx(2 * 1.3125 * var_w / 2)


def test_fixed_point_network_rounds_inputs_and_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(5, 4)
    formats = formats_of(model, x)
    out, inputs, _ = run_network(model, x, formats, 6)
    assert torch.equal(inputs[0], x)  # the data enter as they are
    h = torch.relu(x @ ak.round_fixed_point(model[1].weight, 6, 6 - formats[0][1]).T + model[1].bias)
    assert torch.equal(inputs[1], ak.round_fixed_point(h, 6, 6 - formats[1][0]))
    _, inputs, _ = run_network(model, x, formats, 6, round_input=True)
    assert torch.equal(inputs[0], ak.round_fixed_point(x, 6, 6 - formats[0][0]))
    assert torch.allclose(run_network(model, x, formats, 16)[0], model(x), atol=1e-3)
    assert not torch.allclose(out, model(x))


def test_prediction_matches_simulation_for_independent_errors() -> None:
    # continuous random inputs and weights: the rounding errors are close to independent and uniform,
    # so the first-order prediction should match the simulated error within 10%
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10)).eval()
    x = torch.randn(3000, 100)
    formats = formats_of(model, x)
    for bits in (8, 10, 12):
        for round_input in (False, True):
            pred = predicted_error(model, x, formats, bits, round_input)
            meas, _ = measured_error(model, x, formats, bits, round_input)
            assert pred == pytest.approx(meas, rel=0.1)
    # four times smaller per bit
    assert predicted_error(model, x, formats, 9) == pytest.approx(predicted_error(model, x, formats, 8) / 4)
