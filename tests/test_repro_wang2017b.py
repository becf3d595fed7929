"""Wang et al.'s density-diversity penalty: the sorting trick's value and gradient against the
pairwise sum, and the weight sharing applied after training."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.wang2017b import (
    density_diversity,
    diversity,
    mean_pairwise_distance,
    penalised_loss,
    rank_coefficients,
    share_values,
)
from torch import nn


def _pairwise(w: torch.Tensor) -> torch.Tensor:
    v = w.flatten()
    return (v[:, None] - v[None, :]).abs().sum()


def test_sorting_trick_equals_the_sum_over_every_pair() -> None:
    assert diversity(torch.tensor([3.0, -1.0, 0.5])).item() == pytest.approx(2 * (4 + 2.5 + 1.5))
    torch.manual_seed(0)
    w = torch.randn(7, 5)
    assert diversity(w).item() == pytest.approx(_pairwise(w).item(), rel=1e-5)


def test_sorting_trick_gradient_is_algorithm_1s_rank_rule() -> None:
    torch.manual_seed(1)
    w = torch.randn(4, 6, requires_grad=True)
    diversity(w).backward()
    ref = w.detach().clone().requires_grad_(True)
    _pairwise(ref).backward()
    torch.testing.assert_close(w.grad, ref.grad)
    # the smallest weight is pushed up hardest, the largest down: 2 (2k - n + 1)
    n = w.numel()
    assert w.grad.flatten()[w.detach().flatten().argmin()].item() == pytest.approx(2 * (1 - n))
    assert w.grad.flatten()[w.detach().flatten().argmax()].item() == pytest.approx(2 * (n - 1))


def test_density_diversity_adds_the_p_norm() -> None:
    w = torch.tensor([[3.0, 4.0]])
    # pairs: 2 * |3 - 4| = 2; ||w||_2 = 5
    assert density_diversity(w, 0.5, 2.0).item() == pytest.approx(0.5 * (2 + 5))
    assert density_diversity(w, 1.0, 1.0).item() == pytest.approx(2 + 7)


def test_equal_weights_have_no_diversity() -> None:
    assert diversity(torch.full((3, 3), 0.7)).item() == pytest.approx(0.0, abs=1e-5)
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 3.0]]))
    # mean absolute difference over the 16 ordered pairs: 3 * 2 * 2 / 16
    assert mean_pairwise_distance(model) == [pytest.approx(12 / 16)]


def test_share_values_keeps_zeros_and_limits_distinct_values() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(50, 40))
    with torch.no_grad():
        model[0].weight[:, :10] = 0.0
    before = model[0].weight.detach().clone()
    assert share_values(model, 2) == 3  # 2^2 - 1 shared non-zero values
    w = model[0].weight.detach()
    assert bool((w[:, :10] == 0).all())
    assert torch.unique(w[:, 10:]).numel() == 3
    # each weight moved to a nearby centroid, not far away
    assert float((w - before).abs().max()) < float(before.abs().max())


def test_the_training_loss_has_the_exact_penalty_gradient_when_ranks_are_fresh() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    penalised_loss(0.1, 2.0)(model, x, y, torch.arange(8)).backward()
    got = [m.weight.grad.clone() for m in (model[1], model[3])]
    model.zero_grad()
    exact = nn.functional.cross_entropy(model(x), y) + sum(
        density_diversity(m.weight, 0.1 / m.weight.numel(), 2.0) for m in (model[1], model[3]))
    exact.backward()
    for g, m in zip(got, (model[1], model[3]), strict=True):
        torch.testing.assert_close(g, m.weight.grad)
    w = torch.tensor([0.3, -2.0, 1.0])
    assert rank_coefficients(w).tolist() == [0.0, -4.0, 4.0]  # ranks 1, 0, 2 of n = 3


def test_stale_ranks_are_reused_until_the_next_refresh() -> None:
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
    loss = penalised_loss(1.0, 2.0, rank_every=2)
    x, y = torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)
    loss(model, x, y, torch.arange(1))  # ranks of (1, 2): coefficients (-2, 2)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[2.0, 1.0]]))  # the order flips
    model.zero_grad()
    loss(model, x, y, torch.arange(1)).backward()  # step 2 reuses the old ranks
    norm_grad = torch.tensor([2.0, 1.0]) / 5 ** 0.5
    torch.testing.assert_close(model[0].weight.grad.flatten(), (torch.tensor([-2.0, 2.0]) + norm_grad) / 2)
