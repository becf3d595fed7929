"""collins2014 (l0-projected SGD): the projection onto each layer's budget, the periodic projections
that let zeroed weights grow back, the budgets' ratios, the CSR memory and the baseline's budget."""

from __future__ import annotations

import copy

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions.collins2014 import (
    PROFILES,
    Config,
    Projector,
    budgets,
    constrained_training,
    csr_parts,
    l0_mask,
    unconstrained,
)
from torch import nn

from atlas.harness import measure
from atlas.harness.profiles import validate_profile
from atlas.harness.run import Run


def _run(tmp_path, **changes) -> Run:
    config = copy.deepcopy(PROFILES["smoke"])
    config.update(changes)
    config = validate_profile("collins2014", "smoke", Config, config)
    return Run("collins2014", "smoke", config, seed=0, cache_dir=tmp_path, progress=False)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10))


def test_l0_projection_keeps_the_k_largest_magnitudes() -> None:
    w = torch.tensor([[0.3, -0.9, 0.1], [-0.2, 0.5, -0.05]])
    assert l0_mask(w, 3).tolist() == [[True, True, False], [False, True, False]]  # 0.9, 0.5, 0.3
    assert int(l0_mask(w, 0).sum()) == 1 and bool(l0_mask(w, 10).all())


def test_budgets_are_one_over_the_ratio_of_every_layer_and_spare_the_biases() -> None:
    model = _mlp()
    assert budgets(model, 8.0) == {"1.weight": 160, "3.weight": 25}
    proj = Projector(budgets(model, 4.0), every=3)
    masks = proj.project(model)
    assert {n: int(m.sum()) for n, m in masks.items()} == {"1.weight": 320, "3.weight": 50}
    assert torch.count_nonzero(model[1].weight) == 320 and torch.count_nonzero(model[1].bias) == 20


def test_projection_is_periodic_so_zeroed_weights_can_grow_back() -> None:
    model = _mlp()
    proj = Projector(budgets(model, 4.0), every=3)
    first = proj.project(model)["1.weight"].clone()
    with torch.no_grad():  # a "gradient step" that makes some pruned weights large
        model[1].weight.add_(torch.where(first, 0.0, 10.0) * (torch.rand_like(model[1].weight) > 0.9))
    proj.after_step(model)
    proj.after_step(model)
    assert torch.count_nonzero(model[1].weight) > 320  # no projection yet: the grown weights are there
    proj.after_step(model)  # the third step projects
    assert torch.count_nonzero(model[1].weight) == 320
    masks = proj.close(model)
    assert not torch.equal(masks["1.weight"], first)  # the support changed
    assert proj.regrown() > 0  # weights zeroed by the first projection are kept at the end


def test_constrained_training_ends_within_budget_and_baseline_gets_the_same_steps(tmp_path) -> None:
    run = _run(tmp_path, constrained={**PROFILES["smoke"]["constrained"], "steps": 7})
    dense = run.model("lenet-300-100")
    start = len(run.budgets)
    model, proj = constrained_training(run, dense, 8.0)
    base = unconstrained(run, dense)
    assert [b["steps"] for b in run.budgets[start:]] == [7, 7]
    params = dict(model.named_parameters())
    for name, k in proj.k.items():
        assert int(torch.count_nonzero(params[name])) == k
    assert torch.count_nonzero(base[1].weight) == base[1].weight.numel()
    assert not torch.equal(dense[1].weight, model[1].weight)  # the dense network is untouched


def test_csr_memory_decodes_to_the_weights_and_is_about_4x_at_8x_weights() -> None:
    model = _mlp()
    Projector(budgets(model, 8.0), every=1).project(model)
    w = model[1].weight.detach()
    assert torch.equal(ak.to_csr(w).to_dense(), w)
    bits = measure.storage_bits(csr_parts(model))
    # per kept weight 32 + 32 bits, int32 row pointers, fp32 biases
    assert bits == 64 * (160 + 25) + 32 * (21 + 11) + 32 * (20 + 10)
    assert measure.dense_bits(model) / bits == pytest.approx(32 * 1510 / bits)
    assert 3.0 < measure.dense_bits(model) / bits < 4.5


def test_profiles_put_the_claims_level_on_a_three_point_curve() -> None:
    for values in PROFILES.values():
        cfg = Config.model_validate(values)
        assert cfg.ratio in cfg.curve and len(cfg.curve) >= 3
    with pytest.raises(ValueError, match="one of the curve"):
        Config.model_validate({**PROFILES["smoke"], "ratio": 5.0})
