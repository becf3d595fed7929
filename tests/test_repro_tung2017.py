"""Fine-pruning: the per-layer thresholds reach the step's sparsity exactly and keep earlier pruning,
the objective leaves the network unchanged, the expected improvement's values, and the Bayesian
optimization finding a known optimum faster than random search."""

from __future__ import annotations

import math

import numpy as np
import torch
from atlas_reproductions.tung2017 import (
    Search,
    bayesian_optimization,
    expected_improvement,
    masks_for,
    objective,
    sparsity_schedule,
)
from scipy.stats import norm
from torch import nn


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))


def test_masks_reach_the_sparsity_and_theta_moves_pruning_between_layers() -> None:
    net = _mlp()
    total = 20 * 40 + 40 * 30 + 30 * 5
    m1 = masks_for(net, np.ones(3), 0.5)
    assert sum(int((~m).sum()) for m in m1.values()) == round(0.5 * total)
    # theta = 1: one threshold in units of each layer's std, |w| < alpha * std_l
    params = dict(net.named_parameters())
    for name, m in m1.items():
        w = params[name].detach()
        ratio = w.abs() / w.std()
        if (~m).any() and m.any():
            assert float(ratio[~m].max()) <= float(ratio[m].min()) + 1e-6
    # a larger theta for the first layer prunes more of it, and less elsewhere, at the same sparsity
    m2 = masks_for(net, np.array([3.0, 1.0, 1.0]), 0.5)
    assert int((~m2["0.weight"]).sum()) > int((~m1["0.weight"]).sum())
    assert sum(int((~m).sum()) for m in m2.values()) == round(0.5 * total)
    # a later step keeps every weight pruned earlier
    m3 = masks_for(net, np.array([0.3, 3.0, 1.0]), 0.7, previous=m2)
    assert all(bool((m3[n] <= m2[n]).all()) for n in m2)
    assert sum(int((~m).sum()) for m in m3.values()) == round(0.7 * total)


def test_objective_is_the_masked_accuracy_and_leaves_the_weights() -> None:
    net = _mlp()
    x, y = torch.randn(50, 20), torch.arange(50) % 5
    before = [p.detach().clone() for p in net.parameters()]
    full = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if n.endswith("weight")}
    with torch.no_grad():
        expected = 100.0 * float((net(x).argmax(1) == y).float().mean())
    assert objective(net, full, x, y) == expected
    empty = {n: torch.zeros_like(m) for n, m in full.items()}
    assert objective(net, empty, x, y) in {100.0 * float((y == c).float().mean()) for c in range(5)}  # one class
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_expected_improvement_values() -> None:
    mu, sd = np.array([1.0, 0.0, 2.0, 1.5]), np.array([1.0, 1.0, 0.0, 0.0])
    ei = expected_improvement(mu, sd, best=1.0, xi=0.0)
    assert math.isclose(ei[0], norm.pdf(0.0), rel_tol=1e-12)  # mu = best: sigma * phi(0)
    assert math.isclose(ei[1], -1.0 * norm.cdf(-1.0) + norm.pdf(-1.0), rel_tol=1e-12)
    assert ei[2] == 1.0 and ei[3] == 0.5  # no uncertainty: the plain improvement
    assert ei[0] > ei[1] > 0


def test_schedule_reaches_the_target() -> None:
    s = sparsity_schedule(0.1, 3)
    assert len(s) == 3 and all(a < b for a, b in zip(s, s[1:], strict=False))
    assert math.isclose(s[-1], 0.9) and math.isclose(s[0], 1 - 0.1 ** (1 / 3))


def test_bayesian_optimization_beats_random_search_on_a_smooth_objective() -> None:
    target = np.array([0.8, -0.5])

    def f(x: np.ndarray) -> float:
        return -float(((x - target) ** 2).sum())

    search = Search(n_init=4, steps=10, candidates=256, log_range=1.5, xi=0.01, batch_size=1)
    bo, rs = [], []
    for seed in range(3):
        _, value, history = bayesian_optimization(f, 2, search, np.random.default_rng(seed))
        assert len(history) == 14 and value == max(v for _, v in history)
        bo.append(value)
        rng = np.random.default_rng(100 + seed)
        rs.append(max(f(rng.uniform(-1.5, 1.5, 2)) for _ in range(14)))
    assert np.mean(bo) > np.mean(rs) and min(bo) > -0.05
