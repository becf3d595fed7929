"""Thom & Palm's sparseness-enforcing projection (thom2013): Hoyer's measure by hand, the projection's
constraints and its optimality (the closed form of the projection onto fixed L1 and L2 norms), the
signs kept, idempotence, sparse connectivity on a layer's rows and the sparse-activity transfer
function's gradient."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.thom2013 import (
    PROFILES,
    SparseActivity,
    hidden_layers,
    hoyer_sparseness,
    project_connectivity,
    project_nonnegative,
    sparseness_projection,
    target_l1,
)
from torch import nn


def test_hoyer_sparseness_by_hand() -> None:
    assert hoyer_sparseness(torch.tensor([0.0, 0.0, 3.0, 0.0])).item() == pytest.approx(1.0)
    assert hoyer_sparseness(torch.tensor([2.0, -2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    # n = 4, L1 = 3, L2 = sqrt(5): (2 - 3 / sqrt(5)) / (2 - 1)
    assert hoyer_sparseness(torch.tensor([1.0, 2.0, 0.0, 0.0])).item() == pytest.approx(2 - 3 / math.sqrt(5))


@pytest.mark.parametrize("sigma", [0.3, 0.6, 0.9])
def test_projection_reaches_the_target_at_the_same_norm_and_keeps_signs(sigma: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(20, 50)
    p = sparseness_projection(x, sigma)
    assert torch.allclose(hoyer_sparseness(p), torch.full((20,), sigma), atol=1e-5)
    assert torch.allclose(p.norm(dim=1), x.norm(dim=1), atol=1e-5)
    assert bool(((p == 0) | (torch.sign(p) == torch.sign(x))).all())
    assert torch.allclose(sparseness_projection(p, sigma), p, atol=1e-5)  # a projection: idempotent


def test_projection_is_the_closest_point_a_shrunk_soft_threshold() -> None:
    """The projection onto {s >= 0, ||s||_1 = l1, ||s||_2 = l2} is beta * max(x - t, 0) for some
    t and beta > 0 (its optimality condition); here against a scan over the support size, and no
    random feasible point is closer."""
    torch.manual_seed(1)
    x = torch.rand(12)
    l2 = torch.tensor(1.0)
    l1 = target_l1(l2, 12, 0.7)
    p = project_nonnegative(x[None], l1[None], l2[None])[0]
    support = p > 0
    # on its support p is an affine, increasing function of x with slope beta; off it x is smaller
    xs, ps = x[support], p[support]
    beta = (ps.max() - ps.min()) / (xs.max() - xs.min())
    t = xs.max() - ps.max() / beta
    assert torch.allclose(p, beta * (x - t).clamp_min(0), atol=1e-5)
    assert x[~support].max() <= xs.min()
    best = float((p - x).norm())
    for _ in range(300):  # random feasible points: shrunk soft thresholds of random vectors
        y = torch.rand(12)
        q = project_nonnegative(y[None], l1[None], l2[None])[0]
        assert float((q - x).norm()) >= best - 1e-6


def test_sparser_target_leaves_more_exact_zeros() -> None:
    torch.manual_seed(2)
    x = torch.randn(8, 100)
    zeros = [int((sparseness_projection(x, s) == 0).sum()) for s in (0.4, 0.6, 0.8)]
    assert zeros[0] < zeros[1] < zeros[2]


def test_connectivity_projects_hidden_rows_and_leaves_the_classifier() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3))
    last = model[4].weight.detach().clone()
    project_connectivity(model, 0.8)
    assert [id(m) for m in hidden_layers(model)] == [id(model[0]), id(model[2])]
    for layer in hidden_layers(model):
        assert torch.allclose(hoyer_sparseness(layer.weight.detach()), torch.tensor(0.8), atol=1e-5)
    assert torch.equal(model[4].weight.detach(), last)


def test_sparse_activity_hits_the_target_and_passes_gradients() -> None:
    torch.manual_seed(4)
    x = torch.randn(5, 40, requires_grad=True)
    h = SparseActivity(0.8)(x)
    assert bool((h >= 0).all())
    assert torch.allclose(hoyer_sparseness(h), torch.tensor(0.8), atol=1e-5)
    h.pow(2).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_profiles_check_a_level_on_the_curve() -> None:
    for profile in PROFILES.values():
        assert profile["headline_sigma"] in profile["sigma_levels"]
        assert len(profile["sigma_levels"]) >= 3 and len(profile["control_ratios"]) >= 3
