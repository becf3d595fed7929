"""Network slimming: the L1 penalty on the BN scales, the global channel ranking and the narrow network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from atlas_reproductions.liu2017 import (
    PAPER_RATIO,
    conv_bn_pairs,
    init_scaling_factors,
    keep_by_threshold,
    keep_for_ratio,
    scaling_factors,
    slim,
    slimming_loss,
    weight_ratio,
)

from atlas.harness import controls, measure, models


def _net(seed: int = 0) -> torch.nn.Module:
    """vgg-small at width 1/8 (8-8-16-16-32-32 channels) on 1x8x8 inputs, random BN scales and shifts,
    and BN statistics of random inputs (so that every layer passes its input's signal on)."""
    torch.manual_seed(seed)
    model = models.build("vgg-small", (1, 8, 8), 10, width=0.125)
    with torch.no_grad():
        for _, bn in conv_bn_pairs(model):
            layer = model.get_submodule(bn)
            layer.weight.uniform_(0.2, 1.0)
            layer.bias.uniform_(-0.1, 0.1)
            layer.momentum = None  # cumulative statistics
        model.train()
        for _ in range(4):
            model(torch.randn(64, 1, 8, 8))
    return model.eval()


def _silence(model: torch.nn.Module, layer: int, channels: list[int]) -> None:
    """Give ``channels`` of conv-BN ``layer`` a zero scale and a zero shift: after the ReLU they are 0."""
    bn = model.get_submodule(conv_bn_pairs(model)[layer][1])
    with torch.no_grad():
        bn.weight[channels] = 0.0
        bn.bias[channels] = 0.0


def test_removing_channels_whose_scale_and_shift_are_zero_leaves_the_output_unchanged() -> None:
    model = _net()
    _silence(model, 1, [0, 3, 5])
    _silence(model, 4, list(range(0, 32, 2)))
    kept = keep_by_threshold(model, fraction=(3 + 16) / 112)
    assert [len(k) for k in kept] == [8, 5, 16, 16, 16, 32]
    assert 3 not in kept[1].tolist() and kept[4].tolist() == list(range(1, 32, 2))
    small = slim(model, kept)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(small.features(x), model.features(x)[:, kept[5]], rtol=1e-5, atol=1e-5)
    # a narrower dense network: fewer parameters and FLOPs, no zeros needed
    assert measure.count_params(small) < measure.count_params(model)
    assert measure.flops(small, (1, 8, 8)) < measure.flops(model, (1, 8, 8))
    assert small.features[3].weight.shape == (5, 8, 3, 3) and small.features[7].weight.shape == (16, 5, 3, 3)
    assert small.classifier[2].weight.shape == (10, 32)


def test_removing_channels_that_carry_signal_changes_the_output() -> None:
    """What makes the test above able to fail: the same channels removed while their scales are not 0."""
    model = _net()
    kept = [torch.arange(8), torch.tensor([1, 2, 4, 6, 7]), *(torch.arange(n) for n in (16, 16, 32, 32))]
    small = slim(model, kept)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():  # the last block's features (all 32 channels kept) differ
        assert not torch.allclose(small.features(x), model.features(x), rtol=1e-2, atol=1e-2)


def test_the_threshold_is_global_over_all_layers() -> None:
    model = _net()
    with torch.no_grad():
        for i, gamma in enumerate(scaling_factors(model)):
            gamma.fill_(1.0 + i)  # later layers have larger scales
        scaling_factors(model)[5][:4] = torch.tensor([-0.05, 0.1, 0.2, 0.3])  # sign does not matter: |gamma|
    kept = keep_by_threshold(model, fraction=10 / 112)
    # the 10 smallest |gamma|: the four in layer 5 and six of layer 0's eight equal ones (a tie at the
    # threshold prunes them all), so layer 0 loses all 8 but keeps its min_channels
    assert kept[5].tolist() == list(range(4, 32))
    assert len(kept[0]) == 1 and [len(k) for k in kept[1:5]] == [8, 16, 16, 32]


def test_pruning_to_a_ratio_follows_the_global_ranking_and_reaches_the_ratio() -> None:
    model = _net()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for gamma in scaling_factors(model):
            gamma.copy_(torch.rand(gamma.shape, generator=gen))
    kept = keep_for_ratio(model, 4.0, min_channels=2)
    small = slim(model, kept)
    assert weight_ratio(model, small) >= 4.0
    gammas = [g.detach().abs() for g in scaling_factors(model)]
    kept_values = torch.cat([g[k] for g, k in zip(gammas, kept, strict=True)])
    removed = torch.cat([g[[c for c in range(g.numel()) if c not in set(k.tolist())]]
                         for g, k in zip(gammas, kept, strict=True)])
    # every removed channel ranks below every kept one, except those a layer's minimum saved
    saved = sum(1 for g, k in zip(gammas, kept, strict=True) if len(k) == 2 and g[k].min() < removed.max())
    assert saved > 0 or removed.max() <= kept_values.min()
    assert all(len(k) >= 2 for k in kept)
    # and no channel more than needed: putting back the last one removed exceeds the budget
    assert weight_ratio(model, slim(model, keep_for_ratio(model, 3.9, min_channels=2))) < weight_ratio(model, small) + 1


def test_weight_ratio_counts_convolution_and_linear_weights() -> None:
    model = _net()
    kept = [torch.arange(4), torch.arange(4), torch.arange(8), torch.arange(8), torch.arange(16), torch.arange(16)]
    small = slim(model, kept)
    dense_w = 1 * 8 * 9 + 8 * 8 * 9 + 8 * 16 * 9 + 16 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9 + 32 * 10
    small_w = 1 * 4 * 9 + 4 * 4 * 9 + 4 * 8 * 9 + 8 * 8 * 9 + 8 * 16 * 9 + 16 * 16 * 9 + 16 * 10
    assert weight_ratio(model, small) == pytest.approx(dense_w / small_w)
    assert controls.compression_ratio(small) == 1.0  # dense: the control's ratio would not see the shrinking


def test_the_penalty_adds_lambda_sign_gamma_to_the_scales_gradient() -> None:
    model = init_scaling_factors(_net(), 0.5)
    with torch.no_grad():
        scaling_factors(model)[2][0] = -0.5
    model.train()
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    F.cross_entropy(model(x), y).backward()
    plain = [g.grad.clone() for g in scaling_factors(model)]
    model.zero_grad()
    slimming_loss(0.01)(model, x, y, torch.arange(8)).backward()
    for gamma, before in zip(scaling_factors(model), plain, strict=True):
        torch.testing.assert_close(gamma.grad, before + 0.01 * torch.sign(gamma.detach()))
    assert scaling_factors(model)[2].grad[0] == pytest.approx(plain[2][0].item() - 0.01, abs=1e-6)


def test_the_claims_level_is_the_papers_parameter_reduction_and_an_unreachable_one_is_refused() -> None:
    assert pytest.approx(20.04 / 2.30, abs=0.05) == PAPER_RATIO  # Table 1(a): 20.04M -> 2.30M
    with pytest.raises(ValueError, match="cannot reach"):
        keep_for_ratio(_net(), 1000.0, min_channels=1)  # one channel per layer is still 1/330 of the weights
