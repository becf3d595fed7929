"""Structured Bayesian Pruning: the truncated log-normal's moments, SNR and KL to the truncated
log-uniform prior, the noise layer, and the smaller dense network left by removing low-SNR units."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.neklyudov2017 import (
    A,
    B,
    kl_log_uniform,
    log_moment,
    sample_log_theta,
    sbp_layers,
    sbp_network,
    shrink,
    snr,
    threshold_for_ratio,
    unit_masks,
    weights_of,
)
from atlas_reproductions.neklyudov2017 import folded as fold
from torch import nn

from atlas.harness import measure, models

MU = torch.tensor([0.0, -1.0, -5.0, -19.0, 2.0, -10.0], dtype=torch.float64)
LOG_SIGMA = torch.tensor([-5.0, 0.0, 1.0, 0.5, -1.0, 2.0], dtype=torch.float64)


def test_samples_have_the_closed_form_mean_and_snr() -> None:
    gen = torch.Generator().manual_seed(0)
    sigma = LOG_SIGMA.exp()
    theta = sample_log_theta(MU, sigma, torch.rand(100_000, 6, generator=gen, dtype=torch.float64)).exp()
    assert bool(((theta > 0) & (theta <= 1.0)).all())  # log θ in [-20, 0]
    torch.testing.assert_close(theta.mean(0), log_moment(MU, sigma, 1).exp(), rtol=0.02, atol=0.0)
    light = [0, 1, 2, 4, 5]  # the fourth (μ = -19, σ = e^0.5) has tails too heavy for a 3% estimate
    torch.testing.assert_close((theta.mean(0) / theta.std(0))[light], snr(MU, sigma)[light], rtol=0.03, atol=0.0)


def test_snr_of_an_untruncated_log_normal() -> None:
    # far from the bounds the truncation vanishes: SNR = 1 / sqrt(exp(σ²) - 1)
    sigma = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    mu = torch.full_like(sigma, -10.0)
    expected = 1.0 / torch.sqrt(torch.expm1(sigma**2))
    torch.testing.assert_close(snr(mu, sigma), expected, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(log_moment(mu, sigma, 1), mu + sigma**2 / 2, rtol=0.0, atol=1e-9)


def test_kl_is_the_numerical_divergence_to_the_log_uniform() -> None:
    x = torch.linspace(A, B, 400_001, dtype=torch.float64)
    for mu, log_sigma in zip(MU.tolist(), LOG_SIGMA.tolist(), strict=True):
        sigma = math.exp(log_sigma)
        if sigma < 0.01:
            continue  # too narrow for the grid
        dens = torch.exp(-0.5 * ((x - mu) / sigma) ** 2)
        q = dens / torch.trapezoid(dens, x)
        integrand = torch.where(q > 0, q * (torch.log(q.clamp_min(1e-300)) + math.log(B - A)), torch.zeros_like(q))
        numeric = float(torch.trapezoid(integrand, x))
        closed = float(kl_log_uniform(torch.tensor(mu, dtype=torch.float64), torch.tensor(log_sigma, dtype=torch.float64)))
        assert closed == pytest.approx(numeric, abs=1e-4)
    # the prior itself (σ -> ∞ around the middle) is the KL's minimum, 0
    wide = float(kl_log_uniform(torch.tensor(-10.0, dtype=torch.float64), torch.tensor(8.0, dtype=torch.float64)))
    assert wide == pytest.approx(0.0, abs=1e-3)
    # a narrow posterior costs about log((b - a) / σ) - ½ log(2πe) (Z = ½ at μ = b)
    narrow = float(kl_log_uniform(torch.tensor(0.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)))
    assert narrow == pytest.approx(math.log(20.0) + 5.0 - 0.5 * math.log(2 * math.pi * math.e) + math.log(2.0),
                                   abs=1e-6)


def _remove(layer, units: list[int]) -> None:
    with torch.no_grad():
        layer.noise.mu[units] = -19.0  # mass spread over [-20, 0]: SNR < 1
        layer.noise.log_sigma[units] = 3.0


def test_removing_low_snr_units_of_an_mlp_keeps_the_function() -> None:
    torch.manual_seed(0)
    shape = (1, 3, 3)
    sbp = sbp_network(models.build("mlp", shape, 4, hidden=(6, 5)))
    fc1, fc2, fc3 = (m for _, m in sbp_layers(sbp))
    _remove(fc1, [0, 4])  # two pixels
    _remove(fc2, [1, 2])  # two of fc1's units
    _remove(fc3, [3])  # one of fc2's units
    units = unit_masks(sbp)
    assert [int(i.sum()) for _, i in units] == [7, 4, 4]
    assert [int(o.sum()) for o, _ in units] == [4, 4, 4]
    small = shrink(fold(sbp, models.build("mlp", shape, 4, hidden=(6, 5))), units)
    x = torch.randn(16, *shape)
    torch.testing.assert_close(small(x), sbp.eval()(x), rtol=1e-5, atol=1e-6)
    assert weights_of(units, sbp) == (9 * 6 + 6 * 5 + 5 * 4, 7 * 4 + 4 * 4 + 4 * 4)
    assert measure.flops(small, shape) < measure.flops(models.build("mlp", shape, 4, hidden=(6, 5)), shape)
    # without the removal the network differs: the removed units carried signal
    plain = fold(sbp, models.build("mlp", shape, 4, hidden=(6, 5)), threshold=0.0)
    assert not torch.allclose(plain(x), small(x), atol=1e-3)


def test_removing_channels_of_a_lenet5_keeps_the_function() -> None:
    torch.manual_seed(1)
    shape = (1, 8, 8)
    sbp = sbp_network(models.build("lenet-5", shape, 10))
    conv1, conv2, fc1, fc2 = (m for _, m in sbp_layers(sbp))
    assert isinstance(conv1.layer, nn.Conv2d) and isinstance(fc1.layer, nn.Linear)
    _remove(conv1, list(range(5)))
    _remove(conv2, list(range(10, 30)))
    _remove(fc1, list(range(fc1.layer.in_features // 2)))  # the first half of the flattened features
    _remove(fc2, list(range(100, 500)))
    units = unit_masks(sbp)
    assert int(units[0][0].sum()) == 15 and int(units[1][1].sum()) == 15
    assert int(units[3][1].sum()) == 100 and int(units[2][0].sum()) == 100
    small = shrink(fold(sbp, models.build("lenet-5", shape, 10)), units)
    x = torch.randn(8, *shape)
    torch.testing.assert_close(small(x), sbp.eval()(x), rtol=1e-4, atol=1e-5)
    assert measure.flops(small, shape) < 0.8 * measure.flops(models.build("lenet-5", shape, 10), shape)


def test_a_raised_threshold_reaches_the_ratio() -> None:
    torch.manual_seed(2)
    sbp = sbp_network(models.build("mlp", (1, 4, 4), 3, hidden=(8, 8)))
    for _, m in sbp_layers(sbp):
        with torch.no_grad():
            m.noise.log_sigma.copy_(torch.linspace(-3.0, 1.0, m.noise.mu.numel()))
    total, kept = weights_of(unit_masks(sbp), sbp)
    t = threshold_for_ratio(sbp, 3.0)
    total, kept = weights_of(unit_masks(sbp, t), sbp)
    assert t > 1.0 and total / kept >= 3.0
    assert threshold_for_ratio(sbp, 1.0) == 1.0
