"""GXNOR-Net (deng2018): the ternary activation and its derivative window, the released code's activation,
the discrete state transition, the state encoding's round trip, and the gated-operation count."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.deng2018 import (
    TernaryActivation,
    dst_update,
    encode_states,
    gxnor_storage,
    released_code_activation,
    snap,
    sparsity,
    state_step,
    ternary_activation,
)
from torch import nn


def test_ternary_activation_and_its_rectangular_window() -> None:
    x = torch.tensor([-2.0, -1.2, -0.7, -0.2, 0.0, 0.4, 0.6, 1.1, 1.6], requires_grad=True)
    y = ternary_activation(x, 1.0, 0.5)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]))
    y.sum().backward()
    # 1 / (2a) = 1 on 0.5 <= |x| <= 1.5, 0 elsewhere
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]))
    x2 = torch.tensor([0.3, 0.9], requires_grad=True)
    ternary_activation(x2, 0.5, 0.25).sum().backward()  # window [0.25, 0.75], height 2
    assert torch.equal(x2.grad, torch.tensor([2.0, 0.0]))


def test_released_code_activation_is_phi_with_r_1() -> None:
    x = torch.linspace(-3, 3, 601)
    x = x[(x.abs() - 1).abs() > 1e-4]  # the threshold itself is measure zero
    assert torch.equal(released_code_activation(x), ternary_activation(x, 1.0, 0.5))


def test_snap_puts_weights_on_the_states_of_z_n() -> None:
    assert state_step(1, 1.0) == 1.0 and state_step(3, 1.0) == 0.25
    w = torch.tensor([-1.7, -0.6, -0.4, 0.2, 0.51, 3.0])
    assert torch.equal(snap(w, 1, 1.0), torch.tensor([-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(snap(torch.tensor([0.3, -0.6]), 2, 1.0), torch.tensor([0.5, -0.5]))


def test_dst_moves_whole_states_plus_one_with_tanh_probability() -> None:
    n, h, m = 2, 1.0, 3.0  # dz = 0.5
    w = torch.zeros(200_000)
    delta = torch.full_like(w, 0.6)  # k = 1 state, v = 0.1: one more with p = tanh(3 * 0.2)
    new = dst_update(w, delta, n, h, m, torch.Generator().manual_seed(0))
    assert set(new.unique().tolist()) == {0.5, 1.0}
    p = float((new == 1.0).float().mean())
    assert p == pytest.approx(torch.tanh(torch.tensor(0.6)).item(), abs=0.005)
    # negative increments move down; the range is clipped at -H
    down = dst_update(torch.full((10,), -0.5), torch.full((10,), -2.0), n, h, m, torch.Generator().manual_seed(0))
    assert torch.equal(down, torch.full((10,), -1.0))
    # a zero increment never moves a weight
    assert torch.equal(dst_update(w[:10], torch.zeros(10), n, h, m), w[:10])


def test_state_encoding_round_trips_and_counts_two_bits_a_ternary_weight() -> None:
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 3):
        w = snap(torch.empty(7, 40).uniform_(-1, 1, generator=g), n, 1.0)
        q = encode_states(w, n, 1.0)
        assert torch.equal(q.dequantize(), w)
    ternary = snap(torch.empty(16, 64).uniform_(-1, 1, generator=g), 1, 1.0)
    assert encode_states(ternary, 1, 1.0).storage_bytes() == 16 * 64 * 2 // 8 + 8  # codes + step + zero
    model = nn.Sequential(nn.Linear(64, 16, bias=False), nn.BatchNorm1d(16))
    with torch.no_grad():
        model[0].weight.copy_(ternary)
    parts = {p.name: p.bits for p in gxnor_storage(model, 1, 1.0)}
    assert parts["0.weight"] == 8 * (16 * 64 * 2 // 8 + 8)
    assert parts["1.weight"] == 32 * 16 and parts["1.bias"] == 32 * 16


def test_gated_fraction_counts_products_with_both_operands_non_zero() -> None:
    model = nn.Sequential(nn.Identity(), TernaryActivation(1.0, 0.5), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))
    x = torch.tensor([[2.0, -2.0, 0.0, 3.0]])  # activations 1, -1, 0, 1
    out = sparsity(model, x)
    # gate open: (row 0: x0 w=1) + (row 1: x3 w=1) = 2 of 8 products
    assert out["gated_fraction"] == pytest.approx(2 / 8)
    assert out["activation_zero_fraction"] == pytest.approx(1 / 4)
    assert out["weight_zero_fraction"] == pytest.approx(4 / 8)
