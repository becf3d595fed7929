"""IHT (jin2016): the hard-thresholding step per layer, the frozen connections re-activated with their
frozen values, the alternation's budget against the baseline's and the control's, and the final
network's sparsity."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions.jin2016 import (
    PROFILES,
    Config,
    hard_threshold,
    iht,
    iht_budget,
    layer_keep,
    layer_ratio,
    reactivate,
    unthresholded,
)
from torch import nn

from atlas.harness.profiles import validate_profile
from atlas.harness.run import Run


def _run(tmp_path, **changes) -> Run:
    config = copy.deepcopy(PROFILES["smoke"])
    config.update(changes)
    config = validate_profile("jin2016", "smoke", Config, config)
    return Run("jin2016", "smoke", config, seed=0, cache_dir=tmp_path, progress=False)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10))


def test_hard_threshold_keeps_each_layers_largest_weights_and_freezes_the_rest() -> None:
    model = _mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks, frozen = hard_threshold(model, 0.75)
    params = dict(model.named_parameters())
    assert set(masks) == {"1.weight", "3.weight"}  # biases are never thresholded
    for name, mask in masks.items():
        w = before[name]
        assert int(mask.sum()) == round(0.25 * w.numel())  # per layer, not one global threshold
        assert w.abs()[mask].min() >= w.abs()[~mask].max()
        assert torch.equal(params[name].detach(), w * mask)  # H_k(W): dropped weights are zero
        assert torch.equal(frozen[name][~mask], w[~mask])  # ... and their values are kept aside
        assert torch.all(frozen[name][mask] == 0)
    assert torch.equal(params["1.bias"], before["1.bias"])


def test_reactivate_restores_frozen_values_and_keeps_the_fine_tuned_ones() -> None:
    model = _mlp()
    original = model[1].weight.detach().clone()
    masks, frozen = hard_threshold(model, 0.5)
    with torch.no_grad():
        model[1].weight.add_(0.5 * masks["1.weight"])  # pretend phase I moved the kept weights
    tuned = model[1].weight.detach().clone()
    reactivate(model, masks, frozen)
    w, m = model[1].weight.detach(), masks["1.weight"]
    assert torch.equal(w[~m], original[~m])  # the frozen value, not zero (unlike DSD's re-dense step)
    assert torch.equal(w[m], tuned[m])
    assert torch.count_nonzero(w) == w.numel()


def test_iht_ends_sparse_at_the_level_and_the_baseline_and_control_get_its_steps(tmp_path) -> None:
    run = _run(tmp_path, dense={**PROFILES["smoke"]["dense"], "steps": 2},
               sparse={**PROFILES["smoke"]["sparse"], "steps": 3},
               redense={**PROFILES["smoke"]["redense"], "steps": 4}, cycles=2)
    cfg = Config.model_validate(run.config)
    dense = run.model("lenet-300-100")
    start = len(run.budgets)
    model, masks = iht(run, dense, 0.9)
    # phase I, phase II, phase I, phase II, last phase I
    assert [b["steps"] for b in run.budgets[start:]] == [3, 4, 3, 4, 3]
    params = dict(model.named_parameters())
    for name, keep in layer_keep(model, 0.9).items():
        w = params[name].detach()
        assert int(torch.count_nonzero(w)) == int(masks[name].sum()) == round(keep * w.numel())
    start = len(run.budgets)
    base = unthresholded(run, dense)
    assert sum(b["steps"] for b in run.budgets[start:]) == iht_budget(cfg).steps == 17
    assert torch.count_nonzero(base[1].weight) == base[1].weight.numel()
    assert not torch.equal(dense[1].weight, model[1].weight)  # the dense network itself is untouched


def test_curve_levels_are_the_per_layer_ratios() -> None:
    model = _mlp()  # 64*20 + 20*10 = 1480 weights
    assert layer_ratio(model, 0.5) == pytest.approx(2.0)
    assert layer_ratio(model, 0.75) == pytest.approx(4.0)
    assert layer_ratio(model, 0.9) == pytest.approx(1480 / 148)


def test_profiles_put_the_claims_sparsity_on_a_three_point_curve() -> None:
    for values in PROFILES.values():
        cfg = Config.model_validate(values)
        assert cfg.sparsity in cfg.curve_sparsities and len(cfg.curve_sparsities) >= 3
    with pytest.raises(ValueError, match="one of the curve"):
        Config.model_validate({**PROFILES["smoke"], "sparsity": 0.6})
