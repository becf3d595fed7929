"""TT-layer: the contraction computes the product with the matrix the cores represent, that matrix is
the product of the cores' slices (the TT format's definition), the parameter count, and the He-scaled
initialisation."""

from __future__ import annotations

import math

import torch
from atlas_reproductions.novikov2015 import (
    Config,
    LowRankLinear,
    TTLinear,
    matrix_rank_for,
    stored_weights,
    tt_full,
    tt_matvec,
    tt_params,
    tt_ranks,
)
from torch import nn

from atlas.harness import registry


def _cores(ins: list[int], outs: list[int], rank: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = tt_ranks(len(ins), rank)
    return [torch.randn(r[k], m, n, r[k + 1], generator=g) for k, (m, n) in enumerate(zip(outs, ins, strict=True))]


def test_full_matrix_entries_are_products_of_core_slices() -> None:
    ins, outs = [2, 3, 2], [3, 2, 2]
    cores = _cores(ins, outs, 2)
    w = tt_full(cores)
    assert w.shape == (12, 12)
    # W((i1, j1), (i2, j2), (i3, j3)) = G1[i1, j1] G2[i2, j2] G3[i3, j3], row-major multi-indices
    for i, j in [(0, 0), (5, 7), (11, 3), (7, 11)]:
        i1, i2, i3 = i // 4, (i // 2) % 2, i % 2
        j1, j2, j3 = j // 6, (j // 2) % 3, j % 2
        prod = cores[0][:, i1, j1, :] @ cores[1][:, i2, j2, :] @ cores[2][:, i3, j3, :]
        torch.testing.assert_close(w[i, j], prod[0, 0])


def test_tt_matvec_is_the_product_with_the_full_matrix() -> None:
    ins, outs = [4, 7, 4, 7], [4, 8, 8, 4]
    cores = _cores(ins, outs, 3, seed=1)
    x = torch.randn(5, 784, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(tt_matvec(x, cores), x @ tt_full(cores).T, rtol=1e-4, atol=1e-3)


def test_rank_one_is_a_kronecker_product() -> None:
    cores = _cores([2, 3], [3, 2], 1, seed=3)
    expected = torch.kron(cores[0][0, :, :, 0], cores[1][0, :, :, 0])
    torch.testing.assert_close(tt_full(cores), expected)


def test_parameter_count_of_the_cores() -> None:
    # 1*4*4*8 + 8*8*7*8 + 8*8*4*8 + 8*4*7*1 = 128 + 3584 + 2048 + 224
    assert tt_params([4, 7, 4, 7], [4, 8, 8, 4], 8) == 5984
    layer = TTLinear([4, 7, 4, 7], [4, 8, 8, 4], 8)
    assert sum(c.numel() for c in layer.cores) == 5984
    net = nn.Sequential(nn.Flatten(), layer, nn.ReLU(), nn.Linear(1024, 10))
    assert stored_weights(net) == 5984 + 10240
    assert 784 * 1024 / 5984 > 134


def test_initialisation_has_he_variance() -> None:
    torch.manual_seed(0)
    layer = TTLinear([4, 7, 4, 7], [4, 8, 8, 4], 8)
    var = float(layer.weight_full().detach().var())
    assert abs(var - 2 / 784) < 0.35 * 2 / 784
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(layer(x), x.flatten(1) @ layer.weight_full().T + layer.bias, rtol=1e-4, atol=1e-4)


def test_gradients_reach_every_core() -> None:
    layer = TTLinear([2, 4], [4, 2], 3)
    layer(torch.randn(4, 8)).pow(2).sum().backward()
    assert all(c.grad is not None and float(c.grad.abs().sum()) > 0 for c in layer.cores)


def test_matrix_rank_baseline_of_the_same_size() -> None:
    r = matrix_rank_for(784, 1024, 5984)
    assert r == 3
    low = LowRankLinear(784, 1024, r)
    assert low(torch.randn(2, 784)).shape == (2, 1024)
    assert stored_weights(low) == 3 * (784 + 1024)


def test_profiles_validate() -> None:
    profiles = registry.get("novikov2015").profiles
    for name in ("smoke", "quick", "paper"):
        cfg = Config.model_validate(profiles[name])
        assert len(cfg.tt.curve_ranks) >= 3
    assert math.prod(Config.model_validate(profiles["quick"]).tt.input_modes) == 784
    assert profiles["quick"]["seeds"] >= 3
