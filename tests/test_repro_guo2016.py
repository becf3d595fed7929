"""Unit tests of guo2016 (dynamic network surgery): the mask function h_k with its two thresholds, the
released code's threshold and probability rules, the level-setting update, and the property the
method rests on: the dense weights of pruned connections keep receiving the masked network's
gradient, so that a connection pruned by mistake can be spliced back (han2015's retraining cannot)."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions import guo2016
from atlas_reproductions.guo2016 import (
    Surgeon,
    Surgery,
    hysteresis_scores,
    layer_threshold,
    level_masks,
    magnitude_stats,
    plan_surgery,
    surgery_probability,
    update_mask,
)
from atlas_reproductions.han2015 import apply_masks
from torch import nn


def test_h_prunes_below_a_splices_above_b_and_leaves_the_band_alone() -> None:
    w = torch.tensor([0.05, -0.15, 0.25, -0.05, 0.15, -0.25, 0.10, 0.20])
    mask = torch.tensor([True, True, True, False, False, False, True, False])
    # a = 0.1, b = 0.2: kept and |w| <= a -> pruned; pruned and |w| > b -> spliced; otherwise unchanged
    out = update_mask(w, mask, 0.1, 0.2)
    assert out.tolist() == [False, True, True, False, False, True, False, False]


def test_threshold_is_the_mean_plus_c_std_of_the_magnitudes_clamped_at_zero() -> None:
    w = torch.tensor([[1.0, -3.0], [-1.0, 3.0]])  # |w|: mean 2, population std 1
    assert magnitude_stats(w) == pytest.approx((2.0, 1.0))
    assert layer_threshold(w, 2.0) == pytest.approx(4.0)
    assert layer_threshold(w, -0.5) == pytest.approx(1.5)
    assert layer_threshold(w, -5.0) == 0.0  # max(mu + c sigma, 0), as CCMaskCalc


def test_surgery_probability_falls_as_the_code_computes_it() -> None:
    assert surgery_probability(0, 1e-4, 1.0) == 1.0
    assert surgery_probability(10_000, 1e-4, 1.0) == pytest.approx(0.5)
    assert surgery_probability(10_000, 1e-4, 2.0) == pytest.approx(0.25)
    probs = [surgery_probability(t, 1e-3, 1.0) for t in range(0, 2000, 100)]
    assert probs == sorted(probs, reverse=True)
    # the short profiles scale gamma so that sigma at iter_stop is the README example's (1 / 2.4)
    cfg = Surgery.model_validate(guo2016._surgery(400, 0.02, 64, 0.75))
    assert surgery_probability(300, cfg.gamma, cfg.power) == pytest.approx(1 / (1 + 1e-4 * 14_000))


def test_hysteresis_scores_reproduce_h_at_scale_one() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(40, 30, generator=gen)
    mask = torch.rand(40, 30, generator=gen) > 0.5
    theta, margin = 0.8, 0.1
    kept = hysteresis_scores(w, mask, theta, margin) > 1
    # update_mask prunes at |w| <= a and splices at |w| > b: the same set, except exact ties
    assert torch.equal(kept, update_mask(w, mask, (1 - margin) * theta, (1 + margin) * theta))


def test_level_masks_are_h_with_all_thresholds_scaled_by_one_factor_keeping_exactly_keep() -> None:
    gen = torch.Generator().manual_seed(1)
    weights = {"a": torch.randn(50, 20, generator=gen), "b": 3 * torch.randn(10, 50, generator=gen)}
    masks = {n: torch.rand(w.shape, generator=gen) > 0.3 for n, w in weights.items()}
    thetas = {"a": 0.9, "b": 2.5}
    margin, s = 0.1, 1.3
    expected = {n: update_mask(w, masks[n], s * (1 - margin) * thetas[n], s * (1 + margin) * thetas[n])
                for n, w in weights.items()}
    keep = sum(int(m.sum()) for m in expected.values())
    got, scale = level_masks(weights, masks, thetas, margin, keep)
    assert all(torch.equal(got[n], expected[n]) for n in weights)
    assert sum(int(m.sum()) for m in got.values()) == keep
    assert scale > s  # the smallest kept score lies above the scaled threshold
    # the kept set shrinks with keep and stays nested inside the larger one
    fewer, _ = level_masks(weights, masks, thetas, margin, keep // 2)
    assert sum(int(m.sum()) for m in fewer.values()) == keep // 2
    assert all(bool((fewer[n] <= got[n]).all()) for n in weights)


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    return model, x, y


def _sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, surgeon: Surgeon | None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    if surgeon is not None:
        surgeon.before_step(model)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if surgeon is not None:
        surgeon.after_step(model)


def test_the_step_taken_at_w_times_t_is_applied_to_every_dense_weight() -> None:
    model, x, y = _tiny()
    names = ["0.weight", "2.weight"]
    surgeon = Surgeon(thetas={n: 0.0 for n in names}, gamma=0.0, power=1.0, stop=0)  # T frozen
    params = dict(model.named_parameters())
    surgeon.masks = {n: params[n].detach().abs() > params[n].detach().abs().median() for n in names}
    surgeon._kept = {n: m.float() for n, m in surgeon.masks.items()}
    dense = {n: p.detach().clone() for n, p in params.items()}

    # the expected step: the gradient of the masked network, taken at W * T, added to the dense W
    masked = copy.deepcopy(model)
    apply_masks(masked, surgeon.masks)
    loss = nn.functional.cross_entropy(masked(x), y)
    grads = dict(zip(dict(masked.named_parameters()), torch.autograd.grad(loss, list(masked.parameters())),
                     strict=True))

    _sgd_step(model, x, y, 0.5, surgeon)
    for n, p in model.named_parameters():
        assert torch.allclose(p.detach(), dense[n] - 0.5 * grads[n], atol=1e-6), n
    pruned = ~surgeon.masks["0.weight"]
    assert bool((params["0.weight"].detach()[pruned] != dense["0.weight"][pruned]).any())  # they learn


def test_masked_retraining_of_han2015_leaves_pruned_weights_dead_where_surgery_splices_them() -> None:
    model, x, y = _tiny()
    name = "0.weight"
    w = dict(model.named_parameters())[name]
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[0, 0] = False
    with torch.no_grad():
        w[0, 0] = 0.0

    # han2015: the pruned connection is re-zeroed after every step, it can never come back
    han = copy.deepcopy(model)
    for _ in range(5):
        opt = torch.optim.SGD(han.parameters(), lr=0.5)
        loss = nn.functional.cross_entropy(han(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        apply_masks(han, {name: mask})
    assert float(dict(han.named_parameters())[name].detach()[0, 0]) == 0.0

    # surgery: the pruned weight's dense value moves with the masked network's gradient ...
    surgeon = Surgeon(thetas={name: 0.0, "2.weight": 0.0}, gamma=0.0, power=1.0, stop=0)
    surgeon.masks = {name: mask.clone(), "2.weight": torch.ones(3, 5, dtype=torch.bool)}
    surgeon._kept = {n: m.float() for n, m in surgeon.masks.items()}
    for _ in range(5):
        _sgd_step(model, x, y, 0.5, surgeon)
    moved = float(dict(model.named_parameters())[name].detach()[0, 0])
    assert moved != 0.0
    # ... and once |w| passes b the next update splices the connection back
    assert bool(update_mask(torch.tensor([moved]), torch.tensor([False]), 0.0, abs(moved) / 2)[0])


def test_surgeon_keeps_the_level_and_leaves_w_times_t_in_the_model() -> None:
    model, x, y = _tiny()
    surgeon = plan_surgery(model, 4.0, Surgery.model_validate(guo2016._surgery(8, 0.1, 16, 0.75)),
                           {"fc1": 1.0, "fc2": 0.5})
    total = 6 * 5 + 5 * 3
    assert surgeon.keep == round(total / 4.0) and surgeon.stop == 6
    assert set(surgeon.thetas) == {"0.weight", "2.weight"}
    for _ in range(8):
        _sgd_step(model, x, y, 0.1, surgeon)
    masks = surgeon.close(model)
    assert surgeon.updates >= 1 and surgeon.step == 8
    assert sum(int(m.sum()) for m in masks.values()) == surgeon.keep
    params = dict(model.named_parameters())
    assert sum(int(torch.count_nonzero(params[n])) for n in masks) <= surgeon.keep
    assert all(bool((params[n][~m] == 0).all()) for n, m in masks.items())
    with pytest.raises(ValueError, match="crate names"):
        plan_surgery(model, 4.0, Surgery.model_validate(guo2016._surgery(8, 0.1, 16, 0.75)), {"fc1": 1.0})


def test_profiles_take_the_authors_c_rates_and_put_the_claim_on_the_curve() -> None:
    assert guo2016.CRATE_LENET_5 == {"conv1": 1.0, "conv2": 3.0, "fc1": 4.0, "fc2": 2.5}
    for profile in guo2016.PROFILES.values():
        for arch, values in profile["archs"].items():
            cfg = guo2016.ArchConfig.model_validate(values)
            assert cfg.ratio in guo2016.levels(cfg) and len(guo2016.levels(cfg)) >= 3
            assert guo2016.CLAIMS[arch] == arch
