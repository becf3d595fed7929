"""Bayes by Backprop: the reparameterised layer, the scale-mixture prior, the minibatch KL weights,
the one-sample complexity cost and pruning by signal-to-noise ratio."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.blundell2015 import (
    BayesLinear,
    ScaleMixturePrior,
    bayesian,
    complexity_cost,
    free_energy_loss,
    kl_weight,
    mean_network,
    prune_by_snr,
    signal_to_noise,
    snr_masks,
)
from torch import nn

from atlas.harness import controls, models


def test_graded_kl_weights_are_eq9_and_sum_to_one() -> None:
    m = 6
    weights = [kl_weight(i, m, "graded") for i in range(1, m + 1)]
    assert weights == pytest.approx([2 ** (m - i) / (2**m - 1) for i in range(1, m + 1)], rel=1e-12)
    assert sum(weights) == pytest.approx(1.0, rel=1e-12)
    assert weights[0] == pytest.approx(32 / 63)  # the first minibatch carries half the complexity cost
    # a long epoch (469 minibatches of Fashion-MNIST at 128) does not overflow: 2^-i
    long = [kl_weight(i, 469, "graded") for i in (1, 2, 469)]
    assert long[:2] == pytest.approx([0.5, 0.25]) and long[2] > 0.0 and math.isfinite(long[2])
    assert sum(kl_weight(i, 10, "uniform") for i in range(1, 11)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        kl_weight(0, 5, "graded")


def test_scale_mixture_prior_log_density() -> None:
    prior = ScaleMixturePrior(0.25, 1.0, math.exp(-6))
    w = torch.tensor([0.0, 0.01, -0.3, 2.0])

    def density(x: float) -> float:
        n = [math.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi)) for s in (1.0, math.exp(-6))]
        return 0.25 * n[0] + 0.75 * n[1]

    expected = sum(math.log(density(float(x))) for x in w)
    assert float(prior.log_prob(w)) == pytest.approx(expected, rel=1e-5)
    # pi = 1: a single Gaussian N(0, 1)
    one = ScaleMixturePrior(1.0, 1.0, 0.1)
    assert float(one.log_prob(w)) == pytest.approx(
        float(torch.distributions.Normal(0.0, 1.0).log_prob(w).sum()), rel=1e-6)


def _layer(rho: float = -2.0) -> BayesLinear:
    torch.manual_seed(0)
    return BayesLinear(nn.Linear(5, 3), ScaleMixturePrior(1.0, 0.5, 0.1), rho)


def test_a_sample_is_mean_plus_softplus_rho_times_noise() -> None:
    layer = _layer(rho=-1.0)
    x = torch.eye(5)
    torch.manual_seed(7)
    y = layer(x)  # training mode: one sample
    torch.manual_seed(7)
    eps_w = torch.randn(3, 5)
    eps_b = torch.randn(3)
    sigma = math.log1p(math.exp(-1.0))
    w = layer.weight_mu + sigma * eps_w
    b = layer.bias_mu + sigma * eps_b
    torch.testing.assert_close(y, x @ w.T + b)
    layer.eval()  # evaluation: the means
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)


def test_one_sample_complexity_cost_is_unbiased_for_the_closed_form_kl() -> None:
    """With a single-Gaussian prior N(0, s^2) the KL has a closed form; the average of the one-sample
    estimate log q(w) - log P(w) over many samples must match it (and its gradient flows to mu, rho)."""
    layer = _layer(rho=-1.5)
    torch.manual_seed(1)
    with torch.no_grad():
        layer.weight_mu.normal_(0, 0.3)
        layer.bias_mu.normal_(0, 0.3)
    s = 0.5
    mu = torch.cat([layer.weight_mu.flatten(), layer.bias_mu]).detach()
    sig = torch.cat([layer.weight_sigma.flatten(), layer.bias_sigma]).detach()
    closed = float((torch.log(s / sig) + (sig**2 + mu**2) / (2 * s**2) - 0.5).sum())
    x = torch.zeros(1, 5)
    estimates = []
    for _ in range(4000):
        layer(x)
        estimates.append(float(complexity_cost(layer).detach()))
    assert sum(estimates) / len(estimates) == pytest.approx(closed, rel=0.02)
    layer(x)
    complexity_cost(layer).backward()
    assert layer.weight_mu.grad is not None and layer.weight_rho.grad.abs().sum() > 0


def test_free_energy_weights_the_complexity_cost_by_position_in_the_epoch() -> None:
    torch.manual_seed(0)
    model = bayesian(models.build("mlp", (4,), 3, hidden=(6,)), ScaleMixturePrior(0.5, 1.0, 0.01), -3.0)
    x, y = torch.randn(8, 4), torch.arange(8) % 3
    loss = free_energy_loss(n_train=16, batch_size=8, weighting="graded")  # M = 2 minibatches
    values = []
    for _ in range(3):
        torch.manual_seed(3)
        total = loss(model, x, y, torch.arange(8))
        torch.manual_seed(3)  # the same sample again
        logits = model(x)
        kl = complexity_cost(model)
        ce = nn.functional.cross_entropy(logits, y, reduction="sum")
        values.append((float(total.detach()), float(kl.detach()), float(ce.detach())))
    # minibatch 1 of 2: pi_1 = 2/3; minibatch 2: 1/3; then a new epoch: 2/3 again
    for (total, kl, ce), pi in zip(values, (2 / 3, 1 / 3, 2 / 3), strict=True):
        assert total == pytest.approx((pi * kl + ce) / 8, rel=1e-5)


def _toy_bayes() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = models.build("mlp", (4,), 2, hidden=(3,))
    bayes = bayesian(models.build("mlp", (4,), 2, hidden=(3,)), ScaleMixturePrior(0.5, 1.0, 0.01), -3.0)
    with torch.no_grad():
        first, last = bayes[1], bayes[3]
        first.weight_mu.copy_(torch.tensor([[2.0, 0.1, -0.5, 0.3], [1.0, -1.5, 0.2, 0.05], [0.4, 0.6, -0.7, 0.8]]))
        last.weight_mu.copy_(torch.tensor([[1.2, -0.9, 0.25], [-0.6, 0.15, 1.1]]))
        # the largest mean (2.0) is the most uncertain weight: its SNR is the lowest
        first.weight_rho.fill_(-3.0)
        first.weight_rho[0, 0] = 3.0
        last.weight_rho.fill_(-3.0)
    return bayes, mean_network(bayes, plain)


def test_mean_network_computes_the_bayesian_networks_mean_function() -> None:
    bayes, mean = _toy_bayes()
    x = torch.randn(5, 4)
    torch.testing.assert_close(mean(x), bayes.eval()(x))


def test_snr_pruning_removes_an_uncertain_large_weight_that_magnitude_pruning_keeps() -> None:
    bayes, mean = _toy_bayes()
    snr = signal_to_noise(bayes)
    assert set(snr) == {"1.weight", "3.weight"}
    masks = snr_masks(snr, removed=0.5)
    assert sum(int(m.sum()) for m in masks.values()) == 9  # round(18 * 0.5) kept
    assert not masks["1.weight"][0, 0]  # |mu| = 2 but sigma = softplus(3): lowest SNR
    pruned = prune_by_snr(bayes, mean, 0.5)
    assert float(pruned[1].weight[0, 0].detach()) == 0.0
    assert controls.compression_ratio(pruned) == pytest.approx(2.0)
    magnitude = controls.global_magnitude_prune(None, mean, 2.0, None)  # type: ignore[arg-type]
    assert float(magnitude[1].weight[0, 0].detach()) == 2.0  # the control keeps it: the rankings differ
    # the kept weights keep their mean values
    kept = masks["3.weight"]
    torch.testing.assert_close(pruned[3].weight[kept], mean[3].weight[kept])
