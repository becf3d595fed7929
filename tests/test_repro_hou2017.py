"""LAB (hou2017): the closed-form proximal step (Proposition 3.1) against a brute-force minimisation, its
reduction to BWN when the curvature is uniform, the running second moment, the layer's propagations and
the 1-bit encoding with the layer's scale (round trip and bit count)."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.courbariaux2015 import bc_mlp, hinge
from atlas_reproductions.hou2017 import (
    BETA2,
    EPS,
    PROFILES,
    LABLinear,
    binarize_network,
    encode_lab,
    lab_after_step,
    lab_binarize,
    lab_scale,
    lab_storage,
)
from torch import nn

from atlas.harness import measure


def test_scale_is_the_curvature_weighted_mean_magnitude() -> None:
    w = torch.tensor([0.5, -0.2, 0.1, -1.0])
    d = torch.tensor([1.0, 3.0, 0.0, 4.0])
    # (0.5 + 0.6 + 0 + 4.0) / 8
    assert lab_scale(w, d).item() == pytest.approx(5.1 / 8)
    assert lab_binarize(w, d).tolist() == pytest.approx([5.1 / 8, -5.1 / 8, 5.1 / 8, -5.1 / 8])


def test_closed_form_minimises_the_diagonal_quadratic() -> None:
    """Proposition 3.1: alpha * sign(w) minimises (a b - w)^T D (a b - w) over a > 0, b in {-1, 1}^n."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, generator=gen)
    d = torch.rand(6, generator=gen) + 0.1

    def cost(x: torch.Tensor) -> float:
        return float((d * (x - w) ** 2).sum())

    best = cost(lab_binarize(w, d))
    signs = torch.tensor([[1.0 if (i >> j) & 1 else -1.0 for j in range(6)] for i in range(64)])
    for b in signs:
        for a in torch.linspace(0.01, 3, 300):
            assert cost(a * b) >= best - 1e-6
    # and it differs from BWN's scale when the curvature is not uniform (so the test can fail)
    assert cost(lab_binarize(w, torch.ones(6))) > best + 1e-6


def test_uniform_curvature_is_bwn() -> None:
    w = torch.randn(5, 7)
    assert torch.allclose(lab_binarize(w, torch.full_like(w, 2.5)), w.abs().mean() * torch.sign(w))


def _lab(curvature_weighted: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return binarize_network(bc_mlp((1, 4, 16), 3, [40, 33]), curvature_weighted)  # type: ignore[return-value]


def test_propagation_uses_scaled_signs_and_first_step_is_bwn() -> None:
    model = _lab()
    layer = model[1]
    assert isinstance(layer, LABLinear)
    w = layer.weight.detach()
    # v = 0 before the first step: d = eps everywhere, alpha = BWN's mean |w|
    assert torch.allclose(layer.propagation_weight(), w.abs().mean() * torch.where(w >= 0, 1.0, -1.0))


def test_second_moment_is_the_released_codes_moving_average_and_latent_weights_are_clipped() -> None:
    model = _lab()
    layer = model[1]
    x, y = torch.randn(8, 1, 4, 16), torch.arange(8) % 3
    hinge(model, x, y, torch.arange(8)).backward()
    g = layer.weight.grad.clone()
    with torch.no_grad():
        layer.weight[0, 0] = 3.0
    lab_after_step(model)
    assert torch.allclose(layer.second_moment, (1 - BETA2) * g * g)
    assert layer.weight[0, 0].item() == 1.0
    w = layer.weight.detach()
    d = layer.second_moment.sqrt() + EPS
    expected = (d * w).abs().sum() / d.sum() * torch.where(w >= 0, 1.0, -1.0)
    assert torch.allclose(layer.propagation_weight(), expected)
    assert not torch.allclose(expected.abs().max(), w.abs().mean())  # the curvature now weighs in
    # BWN keeps no curvature: its scale stays the plain mean magnitude
    bwn = _lab(curvature_weighted=False)
    hinge(bwn, x, y, torch.arange(8)).backward()
    lab_after_step(bwn)
    wb = bwn[1].weight.detach()
    assert torch.allclose(bwn[1].propagation_weight().abs().max(), wb.abs().mean())


def test_gradient_reaches_the_latent_weights_not_the_scale() -> None:
    model = _lab()
    hinge(model, torch.randn(8, 1, 4, 16), torch.arange(8) % 3, torch.arange(8)).backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_encoding_decodes_to_alpha_times_signs_and_counts_bits() -> None:
    model = _lab()
    hinge(model, torch.randn(8, 1, 4, 16), torch.arange(8) % 3, torch.arange(8)).backward()
    lab_after_step(model)
    encoded = encode_lab(model)
    assert sorted(encoded) == ["1.weight", "4.weight", "7.weight"]
    for name, q in encoded.items():
        layer = model.get_submodule(name.split(".")[0])
        assert torch.equal(q.dequantize(), layer.quantize(layer.weight.detach()))  # alpha * sign(w), exactly
    parts = lab_storage(model)
    words = sum(4 * m.out_features * -(-m.in_features // 32) + 8 for m in model if isinstance(m, LABLinear))
    bn = sum(2 * m.num_features * 4 for m in model if isinstance(m, nn.BatchNorm1d))
    assert measure.storage_bits(parts) == 8 * (words + bn)


def test_quick_profile_has_three_seeds_and_one_budget() -> None:
    assert PROFILES["quick"]["seeds"] >= 3
    assert PROFILES["quick"]["dataset"] == "fashion-mnist"
