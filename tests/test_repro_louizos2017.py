"""Bayesian Compression (BC-GNJ): the group layers' KL and moments, the group pruning and the
smaller network it leaves, the bit precision from the posterior variance and its fixed-point encoding."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.louizos2017 import (
    K1,
    GroupNJConv2d,
    GroupNJLinear,
    bayesian,
    encode_fixed_point,
    exponent_bits,
    group_layers,
    mean_network,
    round_to_bits,
    shrink,
    significant_bits,
    thresholds_for_ratio,
    unit_masks,
    weights_ratio,
)
from torch import nn

from atlas.harness import measure, models


def test_kl_of_the_weights_is_the_closed_form_and_of_z_vanishes_for_large_alpha() -> None:
    torch.manual_seed(0)
    layer = GroupNJLinear(nn.Linear(3, 2))
    with torch.no_grad():
        layer.weight_logvar.copy_(torch.tensor([[-1.0, 0.0, 0.5], [-2.0, -0.3, 0.2]]))
        layer.bias_logvar.fill_(-1.0)
        layer.z_logvar.fill_(30.0)  # log α = 30: the log-uniform KL tends to 0
    total = float(layer.kl().detach())
    closed = 0.0
    for mu, logvar in ((layer.weight_mu, layer.weight_logvar), (layer.bias_mu, layer.bias_logvar)):
        var = logvar.detach().exp()
        closed += float((0.5 * (var + mu.detach() ** 2) - 0.5 * var.log() - 0.5).sum())
    assert total == pytest.approx(closed, abs=1e-4)
    # at log α = 0: -(k1 σ(k2) - ½ softplus(0) - k1) per group
    with torch.no_grad():
        layer.z_logvar.copy_(torch.log(layer.z_mu.detach() ** 2 + 1e-8))
    per_group = -(K1 / (1 + math.exp(-1.87320)) - 0.5 * math.log(2.0) - K1)
    assert float(layer.kl().detach()) - closed == pytest.approx(3 * per_group, rel=1e-4)


def test_local_reparameterisation_has_the_posterior_moments() -> None:
    torch.manual_seed(0)
    layer = GroupNJLinear(nn.Linear(4, 3))
    with torch.no_grad():
        layer.z_mu.copy_(torch.tensor([1.0, 0.5, 2.0, 1.0]))
        layer.z_logvar.copy_(torch.log(torch.tensor([0.04, 0.01, 0.09, 0.0001])))
        layer.weight_logvar.fill_(math.log(0.01))
        layer.bias_logvar.fill_(math.log(0.0001))
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]]).expand(20000, -1)
    out = layer.train()(x).detach()
    expected_mean = layer.eval()(x[:1]).detach()[0]  # E[z] μ
    torch.testing.assert_close(out.mean(0), expected_mean, atol=0.03, rtol=0.0)
    # Var = Σ_j x_j² (E[z_j²] σ² + Var(z_j) μ²) + σ_b²
    z_mu, z_var = layer.z_mu.detach(), layer.z_logvar.detach().exp()
    mu, var = layer.weight_mu.detach(), layer.weight_logvar.detach().exp()
    x0 = x[0]
    expected_var = (x0**2 * ((z_mu**2 + z_var) * var + z_var * mu**2)).sum(1) + layer.bias_logvar.detach().exp()
    torch.testing.assert_close(out.var(0), expected_var, rtol=0.05, atol=1e-3)


def _pruned_mlp() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    bayes = bayesian(models.build("mlp", (1, 3, 3), 4, hidden=(6, 5)))
    fc1, fc2, fc3 = (m for _, m in group_layers(bayes))
    with torch.no_grad():  # groups with μ_z near 0 have a large log α: pixels 0, 4; fc2 inputs 1, 2; fc3 input 3
        fc1.z_mu[[0, 4]] = 1e-4
        fc2.z_mu[[1, 2]] = 1e-4
        fc3.z_mu[3] = 1e-4
    return bayes, models.build("mlp", (1, 3, 3), 4, hidden=(6, 5))


def test_group_pruning_removes_units_on_both_sides_and_shrink_keeps_the_function() -> None:
    bayes, plain = _pruned_mlp()
    units = unit_masks(bayes, [-3.0, -3.0, -3.0])
    assert [int(i.sum()) for _, i in units] == [7, 4, 4]  # inputs kept
    assert [int(o.sum()) for o, _ in units] == [4, 4, 4]  # outputs: the next layer's inputs; all classes
    masked = mean_network(bayes, plain, units)
    small = shrink(masked, units)
    x = torch.randn(16, 1, 3, 3)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-6)
    assert measure.count_params(small) == 7 * 4 + 4 + 4 * 4 + 4 + 4 * 4 + 4
    assert weights_ratio(bayes, units) == pytest.approx((9 * 6 + 6 * 5 + 5 * 4) / (7 * 4 + 4 * 4 + 4 * 4))
    # the masked network is the unpruned mean network minus the pruned groups' tiny contributions
    full = mean_network(bayes, models.build("mlp", (1, 3, 3), 4, hidden=(6, 5)))
    torch.testing.assert_close(full(x), masked(x), rtol=1e-3, atol=1e-3)


def test_shrinking_a_lenet5_through_its_convolutions_keeps_the_function() -> None:
    torch.manual_seed(1)
    bayes = bayesian(models.build("lenet-5", (1, 8, 8), 10))
    conv1, conv2, fc1, fc2 = (m for _, m in group_layers(bayes))
    assert isinstance(conv1, GroupNJConv2d) and isinstance(fc1, GroupNJLinear)
    with torch.no_grad():
        conv1.z_mu[:5] = 1e-4  # 5 of 20 filters
        conv2.z_mu[10:30] = 1e-4  # 20 of 50 filters
        fc1.z_mu[: fc1.z_mu.numel() // 2] = 1e-4  # half of the flattened inputs
        fc2.z_mu[100:] = 1e-4
    units = unit_masks(bayes, [-3.0] * 4)
    assert int(units[0][0].sum()) == 15 and int(units[1][1].sum()) == 15
    masked = mean_network(bayes, models.build("lenet-5", (1, 8, 8), 10), units)
    small = shrink(masked, units)
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)
    assert measure.flops(small, (1, 8, 8)) < measure.flops(masked, (1, 8, 8))


def test_thresholds_for_a_ratio_reach_it() -> None:
    bayes, _ = _pruned_mlp()
    shifted = thresholds_for_ratio(bayes, [-3.0, -3.0, -3.0], 2.5)
    assert weights_ratio(bayes, unit_masks(bayes, shifted)) >= 2.5


def test_significant_bits_from_the_posterior_variance() -> None:
    # 2V = 2^-11: the round-offs 2^-1 .. 2^-10 are above it, so 10 bits
    assert significant_bits(torch.full((4,), 2.0**-12)) == 10
    # the mean count over the layer, rounded up: (10 + 3) / 2 -> 7
    assert significant_bits(torch.tensor([2.0**-12, 2.0**-5])) == 7
    assert significant_bits(torch.tensor([1e-30])) == 23
    assert exponent_bits(2.0) == 2 and exponent_bits(0.3) == 1


def test_fixed_point_encoding_decodes_to_the_rounded_weights() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 10) * 0.3
    bits = 6
    q = round_to_bits(w, bits)
    assert float((q - w).abs().max()) <= 2.0**-bits / 2 + 1e-7
    encoded = encode_fixed_point(q, bits)
    assert torch.equal(encoded.dequantize(), q)
    k = int((q.abs() / 2.0**-bits).round().max())
    assert encoded.bits == math.ceil(math.log2(2 * k + 1))
    assert encoded.storage_bytes() < 4 * w.numel()
