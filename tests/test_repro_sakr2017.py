"""Sakr et al. 2017: the noise gains back-propagated from each class margin, the bound on the mismatch
probability they give at B bits, and the fixed-point network the bound is compared with."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.sakr2017 import (
    chosen_precision,
    formats_of,
    forward,
    integer_bits,
    measured_mismatch,
    mismatch_bound,
    noise_gains,
)
from torch import nn


def test_integer_bits_hold_the_largest_magnitude() -> None:
    assert [integer_bits(v) for v in (0.3, 0.9, 1.0, 3.0, 4.0)] == [0, 1, 2, 3, 4]
    for v in (0.3, 0.9, 1.0, 3.0, 6.5):
        il = integer_bits(v)
        assert v < 2.0 ** (il - 1) and (v >= 2.0 ** (il - 2) or il <= 0)


def test_noise_gains_of_a_single_layer_match_the_closed_form() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[2.0, 0.0], [0.5, 1.0]]))
        model[1].bias.zero_()
    x = torch.tensor([[1.0, 0.5]])  # Z = (2, 1): decision 0, margin D_1 = -1
    e_a, e_w = noise_gains(model, x)
    # dD/da = W_1 - W_0 = (-1.5, 1): 3.25; dD/dz = (-1, 1): 2, times ||a||^2 = 1.25
    assert e_a == [pytest.approx(3.25 / 24)]
    assert e_w == [pytest.approx(2 * 1.25 / 24)]
    formats = {0: (1, 2)}
    # B = 4: Delta_A = 2^(1-4), Delta_W = 2^(2-4)
    assert mismatch_bound(e_a, e_w, formats, 4) == pytest.approx(3.25 / 24 / 64 + 2.5 / 24 / 16)


def test_noise_gains_are_the_per_example_gradients_of_a_deeper_network() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    x = torch.randn(6, 5)
    e_a, e_w = noise_gains(model, x, batch=4)  # two batches
    # the same sums by brute force, one example and one class at a time
    ref_a, ref_w = [0.0, 0.0], [0.0, 0.0]
    for xi in x:
        logits = model(xi[None])[0]
        y = int(logits.argmax())
        for i in range(3):
            if i == y:
                continue
            a = xi[None].clone().requires_grad_(True)
            out = model(a)[0]
            d = out[i] - out[y]
            hidden = torch.relu(model[1](a))
            g_in = torch.autograd.grad(d, [a], retain_graph=True)[0]
            h = hidden.detach().clone().requires_grad_(True)
            d2 = model[3](h)[0]
            g_hidden = torch.autograd.grad(d2[i] - d2[y], h)[0]
            ws = [model[1].weight, model[3].weight]
            g_w = torch.autograd.grad(d, ws)
            scale = 1 / (24 * float(d.detach()) ** 2)
            ref_a[0] += float(g_in.pow(2).sum()) * scale
            ref_a[1] += float(g_hidden.pow(2).sum()) * scale
            ref_w[0] += float(g_w[0].pow(2).sum()) * scale
            ref_w[1] += float(g_w[1].pow(2).sum()) * scale
    assert e_a == pytest.approx([v / 6 for v in ref_a], rel=1e-4)
    assert e_w == pytest.approx([v / 6 for v in ref_w], rel=1e-4)


def test_fixed_point_forward_rounds_inputs_and_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(5, 4)
    formats = formats_of(model, x)
    assert formats[0][0] == integer_bits(float(x.abs().max()))
    out, inputs, _ = forward(model, x, formats, 6)
    il_a, il_w = formats[0]
    assert torch.equal(inputs[0], ak.round_fixed_point(x, 6, 6 - il_a))
    h = torch.relu(ak.round_fixed_point(x, 6, 6 - il_a) @ ak.round_fixed_point(model[1].weight, 6, 6 - il_w).T
                   + model[1].bias)
    assert torch.equal(inputs[1], ak.round_fixed_point(h, 6, 6 - formats[1][0]))
    assert not torch.allclose(out, model(x))
    assert torch.allclose(forward(model, x, formats, 16)[0], model(x), atol=1e-3)


def test_bound_exceeds_the_simulated_mismatch_of_a_random_network() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(4000, 20)
    formats = formats_of(model, x)
    e_a, e_w = noise_gains(model, x)
    for bits in (5, 6, 7, 8):
        bound = mismatch_bound(e_a, e_w, formats, bits)
        measured, _ = measured_mismatch(model, x, formats, bits)
        assert 0 < measured <= bound
    # the bound falls by 4x per bit
    assert mismatch_bound(e_a, e_w, formats, 7) == pytest.approx(mismatch_bound(e_a, e_w, formats, 6) / 4)


def test_chosen_precision_is_the_smallest_within_the_target() -> None:
    assert chosen_precision({4: 0.5, 6: 0.02, 8: 0.004, 10: 0.0003}, 0.01) == 8
    assert chosen_precision({4: 0.5, 6: 0.2}, 0.01) == 6
