"""kiaee2016 (ADMM with an l0 penalty): the F-update (the penalty's prox, per layer), the dual update,
the augmented term's gradient, the convergence of W to the sparse point, and the budgets of the
method, its baseline and its control."""

from __future__ import annotations

import copy

import pytest
import torch
from atlas_reproductions.kiaee2016 import (
    PROFILES,
    RHO_REACH,
    Admm,
    Config,
    admm_prune,
    continued,
    method_budget,
    sparse_point,
)
from torch import nn

from atlas.harness.profiles import validate_profile
from atlas.harness.run import Run


def _run(tmp_path, **changes) -> Run:
    config = copy.deepcopy(PROFILES["smoke"])
    config.update(changes)
    config = validate_profile("kiaee2016", "smoke", Config, config)
    return Run("kiaee2016", "smoke", config, seed=0, cache_dir=tmp_path, progress=False)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 10))


def test_f_update_keeps_the_largest_entries_of_w_plus_u() -> None:
    v = torch.tensor([[0.4, -0.1, 0.05, -0.8], [0.2, 0.0, -0.3, 0.01]])
    assert torch.equal(sparse_point(v, 0.5), torch.tensor([[0.4, 0.0, 0.0, -0.8], [0.2, 0.0, -0.3, 0.0]]))


def test_dual_update_accumulates_the_residual_and_f_follows_w_plus_u() -> None:
    model = _mlp()
    admm = Admm(keep=0.25, rho=1.0)
    admm.start(model)
    w = model[1].weight.detach().clone()
    assert torch.equal(admm.F["1.weight"], sparse_point(w, 0.25)) and torch.all(admm.U["1.weight"] == 0)
    assert set(admm.F) == {"1.weight", "3.weight"}  # biases carry no penalty
    residual = admm.update(model)  # W unchanged: F = top of W, U = the pruned part of W
    assert torch.equal(admm.U["1.weight"], w - sparse_point(w, 0.25))
    assert 0 < residual < 1
    u1 = admm.U["1.weight"].clone()
    admm.update(model)  # W still unchanged: F = the top of W + U, and U grows by the new residual
    f2 = sparse_point(w + u1, 0.25)
    assert torch.equal(admm.F["1.weight"], f2)
    assert torch.allclose(admm.U["1.weight"], u1 + w - f2)
    assert not torch.equal(f2, sparse_point(w, 0.25))  # a W that does not move lets the support drift


def test_penalty_gradient_is_rho_times_w_minus_f_plus_u() -> None:
    model = _mlp()
    admm = Admm(keep=0.25, rho=3.0)
    admm.start(model)
    admm.update(model)
    model.zero_grad()
    admm.penalty(model).backward()
    name = "1.weight"
    expected = 3.0 * (model[1].weight.detach() - admm.F[name] + admm.U[name])
    assert torch.allclose(model[1].weight.grad, expected)
    assert model[1].bias.grad is None


def test_admm_brings_w_to_its_sparse_point_then_prunes_and_fine_tunes(tmp_path) -> None:
    run = _run(tmp_path)
    cfg = Config.model_validate(run.config)
    assert cfg.rho * cfg.admm_step.lr * cfg.admm_step.steps == pytest.approx(RHO_REACH)
    dense = run.model("lenet-300-100")
    start = len(run.budgets)
    out = admm_prune(run, dense, 10.0)
    steps = [b["steps"] for b in run.budgets[start:]]
    assert steps == [cfg.admm_step.steps] * cfg.iterations + [cfg.finetune.steps]
    assert out.residual < 0.2  # W close to F after the iterations (with rho 0.01 it stays above 1)
    params = dict(out.model.named_parameters())
    for name, mask in out.masks.items():
        assert int(mask.sum()) == round(0.1 * mask.numel())
        assert torch.all(params[name].detach()[~mask] == 0)
    start = len(run.budgets)
    continued(run, dense)
    assert sum(b["steps"] for b in run.budgets[start:]) == method_budget(cfg).steps == sum(steps)


def test_profiles_put_the_claims_level_on_a_three_point_curve() -> None:
    for values in PROFILES.values():
        cfg = Config.model_validate(values)
        assert cfg.ratio in cfg.curve and len(cfg.curve) >= 3
    with pytest.raises(ValueError, match="one of the curve"):
        Config.model_validate({**PROFILES["smoke"], "ratio": 5.0})
