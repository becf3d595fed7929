"""DSD (han2017): the S step's per-layer magnitude pruning at one sparsity, the mask held through its
retraining, the re-dense step's release of the mask (pruned weights from zero, then free to grow
back), the baselines' budgets, and the curve's compression ratios."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions.han2017 import (
    PROFILES,
    Config,
    continued_training,
    layer_keep,
    layer_ratio,
    low_lr_training,
    nonzero_percent,
    redense_step,
    release_mask,
    sparse_step,
)
from torch import nn

from atlas.harness.controls import trainable_copy
from atlas.harness.profiles import validate_profile
from atlas.harness.run import Run


def _run(tmp_path, **changes) -> Run:
    config = copy.deepcopy(PROFILES["smoke"])
    config.update(changes)
    config = validate_profile("han2017", "smoke", Config, config)
    return Run("han2017", "smoke", config, seed=0, cache_dir=tmp_path, progress=False)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10))


def test_every_layer_keeps_one_minus_the_sparsity_and_biases_are_not_pruned() -> None:
    model = _mlp()
    assert layer_keep(model, 0.3) == {"1.weight": pytest.approx(0.7), "3.weight": pytest.approx(0.7)}


def test_layer_ratio_is_one_over_one_minus_s() -> None:
    # 64*20 + 20*10 = 1480 weights; 30%: 896 + 140 kept -> 1480 / 1036; 50%: 2x; 70%: 384 + 60 kept
    model = _mlp()
    assert layer_ratio(model, 0.3) == pytest.approx(1480 / 1036)
    assert layer_ratio(model, 0.5) == pytest.approx(2.0)
    assert layer_ratio(model, 0.7) == pytest.approx(1480 / 444)


def test_sparse_step_prunes_the_smallest_weights_of_each_layer_and_holds_the_mask(tmp_path) -> None:
    run = _run(tmp_path, sparse={**PROFILES["smoke"]["sparse"], "steps": 5})
    model = run.model("lenet-300-100")
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in layer_keep(model, 0.5)}
    masks = sparse_step(run, model, 0.5, run.train_config("sparse"))
    for name, w in before.items():
        mask = masks[name]
        assert int(mask.sum()) == round(0.5 * w.numel())  # exactly half of each layer kept
        # every kept weight was at least as large as every pruned one (per layer, not global)
        assert w.abs()[mask].min() >= w.abs()[~mask].max()
        # after 5 masked steps the pruned weights are still exactly zero, the kept ones have moved
        assert torch.all(params[name].detach()[~mask] == 0)
        assert not torch.equal(params[name].detach()[mask], w[mask])
    assert nonzero_percent(model) == pytest.approx(50.0, abs=0.01)


def test_redense_step_starts_pruned_weights_at_zero_and_lets_them_grow(tmp_path) -> None:
    run = _run(tmp_path, redense={**PROFILES["smoke"]["redense"], "steps": 5})
    model = run.model("lenet-300-100")
    params = dict(model.named_parameters())
    name = "1.weight"
    mask = torch.rand_like(params[name]) > 0.3
    masks = {name: mask}
    with torch.no_grad():
        params[name].add_(1.0)  # pretend the pruned weights are not zero: release_mask must zero them
    kept = params[name].detach()[mask].clone()
    release_mask(model, masks)
    assert torch.all(params[name].detach()[~mask] == 0)
    assert torch.equal(params[name].detach()[mask], kept)  # the survivors keep their values
    redense_step(run, model, masks, run.train_config("redense"))
    revived = params[name].detach()[~mask]
    assert torch.count_nonzero(revived) / revived.numel() > 0.9  # no mask any more: they grew back


def test_baselines_get_the_s_and_redense_steps_without_a_mask(tmp_path) -> None:
    run = _run(tmp_path)
    cfg = Config.model_validate(run.config)
    dense = run.model("lenet-300-100")
    start = len(run.budgets)
    same = continued_training(run, dense)
    low = low_lr_training(run, dense)
    stages = run.budgets[start:]
    assert [b["steps"] for b in stages] == [cfg.sparse.steps, cfg.redense.steps, cfg.sparse.steps + cfg.redense.steps]
    assert nonzero_percent(same) == pytest.approx(100.0) and nonzero_percent(low) == pytest.approx(100.0)
    assert not torch.equal(same[1].weight, dense[1].weight)  # the dense network itself is untouched:
    assert not torch.equal(same[1].weight, low[1].weight)  # they are trained copies


def test_trainable_copy_is_not_the_shared_dense_network() -> None:
    model = _mlp()
    model._atlas_shared = "dense.pt"
    clone = trainable_copy(model)
    assert not hasattr(clone, "_atlas_shared") and model._atlas_shared == "dense.pt"
    assert torch.equal(clone[1].weight, model[1].weight) and clone[1].weight is not model[1].weight


def test_profiles_redense_at_a_lower_rate_and_curve_at_three_sparsities() -> None:
    for values in PROFILES.values():
        cfg = Config.model_validate(values)
        assert cfg.redense.lr < cfg.dense.lr
        assert cfg.sparsity in cfg.curve_sparsities and len(cfg.curve_sparsities) >= 3
    bad = {**PROFILES["smoke"], "redense": {**PROFILES["smoke"]["redense"], "lr": 1.0}}
    with pytest.raises(ValueError, match="lower learning rate"):
        Config.model_validate(bad)
