"""Yu et al.'s low-rank plus sparse decomposition fitted to feature maps: the budget, the two steps of
the alternation, and the compressed layer that stores r (m + n) + c numbers."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.yu2017 import (
    LowRankSparseLinear,
    budget,
    compress,
    decompose,
    hard_threshold,
    reconstruction_error,
    reduced_rank_fit,
    stored_compression,
)

from atlas.harness import models


def test_budget_splits_the_stored_numbers_between_the_factors_and_the_sparse_part() -> None:
    # 30 x 50 at 5x: 300 numbers; half to L: r = 150 // 80 = 1 (80 numbers), the rest (220) to S
    assert budget(30, 50, 5.0, 0.5) == (1, 220)
    assert budget(30, 50, 5.0, 0.0) == (0, 300)  # pruning connections: the special case r = 0
    assert budget(30, 50, 5.0, 1.0) == (3, 0)  # low rank alone
    assert budget(10, 100, 15.0, 1.0) == (1, 0)  # 67 numbers, less than one rank (110): rank 1 all the same
    assert budget(10, 100, 15.0, 0.5) == (0, 66)


def test_hard_threshold_keeps_the_largest_entries() -> None:
    a = torch.tensor([[0.1, -3.0], [2.0, -0.5]])
    assert hard_threshold(a, 2).tolist() == [[0.0, -3.0], [2.0, 0.0]]
    assert hard_threshold(a, 0).abs().sum().item() == 0.0


def test_reduced_rank_fit_recovers_a_low_rank_map_exactly() -> None:
    torch.manual_seed(0)
    true = torch.randn(8, 2) @ torch.randn(2, 12)  # rank 2
    x = torch.randn(12, 200)
    u, v = reduced_rank_fit(true @ x, x, 2)
    torch.testing.assert_close(u @ v, true, atol=1e-3, rtol=1e-3)
    assert u.shape == (8, 2) and v.shape == (2, 12)


def test_decomposition_reconstructs_a_low_rank_plus_sparse_layer_better_than_either_part() -> None:
    torch.manual_seed(1)
    spikes = torch.zeros(20, 30)
    spikes.view(-1)[torch.randperm(600)[:40]] = 3 * torch.randn(40)
    w = torch.randn(20, 3) @ torch.randn(3, 30) + spikes  # rank 3 plus 40 large entries
    x = torch.randn(30, 500)
    both = reconstruction_error(decompose(w, x, 3, 40), w, x)
    low = reconstruction_error(decompose(w, x, 3, 0), w, x)
    sparse = reconstruction_error(decompose(w, x, 0, 40), w, x)
    assert both < 0.05
    assert both < low / 5 and both < sparse / 5


def test_feature_map_fit_beats_the_weight_space_approximation() -> None:
    """Fitting the outputs on the data, not the weights, is the point: with correlated inputs the
    reconstruction error of the fitted L is below that of the truncated SVD of W."""
    torch.manual_seed(2)
    w = torch.randn(20, 30)
    x = torch.randn(30, 5) @ torch.randn(5, 400) + 0.05 * torch.randn(30, 400)  # inputs near a 5-dim space
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    svd_err = float(((w - (u[:, :4] * s[:4]) @ vh[:4]) @ x).norm() / (w @ x).norm())
    assert reconstruction_error(decompose(w, x, 4, 0), w, x) < svd_err / 3


def test_compressed_network_counts_what_it_stores_and_keeps_the_sparse_pattern() -> None:
    torch.manual_seed(3)
    dense = models.build("mlp", (1, 4, 4), 3, hidden=(10,)).eval()  # 16-10-3
    x = torch.randn(64, 1, 4, 4)
    model, parts = compress(dense, x, 4.0, 0.5, 5, 3)
    layers = [m for m in model.modules() if isinstance(m, LowRankSparseLinear)]
    assert len(layers) == 2
    # 16 x 10 at 4x: 40 numbers, r = 20 // 26 = 0, c = 40; 10 x 3: 7 numbers, r = 0, c = 7
    assert [m.stored() for m in layers] == [40, 7]
    assert stored_compression(dense, model) == pytest.approx((160 + 30) / 47)
    with torch.no_grad():
        layers[0].s.add_(1.0)
    layers[0].apply_mask()
    assert int((layers[0].s != 0).sum()) == 40
