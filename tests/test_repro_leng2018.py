"""ADMM low-bit networks (leng2018): the constraint sets, the iterative-quantization projection, the
ADMM updates, the extragradient step, and the binary encoding's round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions.leng2018 import (
    AdmmState,
    encode_binary_layers,
    extragradient_loss,
    levels,
    nearest,
    project,
)
from torch import nn


def test_sets_are_the_papers() -> None:
    assert levels("binary").tolist() == [-1.0, 1.0]
    assert levels("ternary").tolist() == [-1.0, 0.0, 1.0]
    assert levels("pow2-1").tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert levels("pow2-2").tolist() == [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0]
    assert nearest(torch.tensor([-3.1, -2.9, -0.4, 0.6, 1.6, 9.0]), levels("pow2-2")).tolist() == \
        [-4.0, -2.0, 0.0, 1.0, 2.0, 4.0]


def test_projection_alternates_to_the_least_squares_scale() -> None:
    v = torch.tensor([0.9, -1.1, 1.0, -0.05, 0.02, 3.0])
    alpha, codes = project(v, levels("binary"), 10)
    assert codes.tolist() == [1.0, -1.0, 1.0, -1.0, 1.0, 1.0]
    assert float(alpha) == pytest.approx(float(v.abs().mean()))  # the binary optimum: mean |v|
    alpha, codes = project(v, levels("ternary"), 10)
    # a fixed point: codes are v / alpha rounded, alpha is <v, q> / <q, q>
    assert torch.equal(codes, nearest(v / alpha, levels("ternary")))
    assert float(alpha) == pytest.approx(float((v * codes).sum() / (codes * codes).sum()))
    assert codes.tolist() == [1.0, -1.0, 1.0, 0.0, 0.0, 1.0]
    # it is no worse than the starting point
    start = v.abs().mean()
    q0 = nearest(v / start, levels("ternary"))
    assert float((v - alpha * codes).norm()) <= float((v - start * q0).norm()) + 1e-6


def test_admm_projection_and_dual_updates() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    state = AdmmState(model, levels("binary"), 2.0, 10)
    w = model[0].weight.detach().clone()
    assert torch.allclose(state.g["0.weight"], w.abs().mean() * torch.where(w >= 0, 1.0, -1.0))
    assert torch.equal(state.dual["0.weight"], torch.zeros_like(w))
    state.update(model)  # G = Proj(W + 0) again, then lambda = W - G
    assert torch.allclose(state.dual["0.weight"], w - state.g["0.weight"])
    # penalty: rho / 2 * ||W - G + lambda||^2 over the weights only (biases are not constrained)
    expected = sum(float((dict(model.named_parameters())[n].detach() - state.g[n] + state.dual[n]).pow(2).sum())
                   for n in ("0.weight", "2.weight"))
    assert float(state.penalty(dict(model.named_parameters())).detach()) == pytest.approx(expected)


def test_extragradient_step_follows_the_gradient_at_the_predictor() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    state = AdmmState(model, levels("ternary"), 5.0, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    extragradient_loss(state, opt)(model, x, y, torch.arange(8)).backward()
    twin = copy.deepcopy(model)

    def loss(m: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(m(x), y) + state.penalty(dict(m.named_parameters()))

    grads = torch.autograd.grad(loss(twin), list(twin.parameters()))
    with torch.no_grad():
        for p, g in zip(twin.parameters(), grads, strict=True):
            p -= 0.1 * g  # the predictor
    loss(twin).backward()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
        assert not torch.allclose(p.grad, torch.zeros_like(p.grad))


def test_binary_encoding_decodes_to_g() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    state = AdmmState(model, levels("binary"), 1.0, 10)
    params = dict(model.named_parameters())
    enc = encode_binary_layers(state, {n: params[n].shape for n in state.names})
    for n, q in enc.items():
        assert torch.allclose(q.dequantize().reshape(params[n].shape), state.g[n])
    assert enc["2.weight"].storage_bytes() < 4 * params["2.weight"].numel() / 16
