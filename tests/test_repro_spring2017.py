"""LSH active sets (spring2017): pooling, SimHash codes, collision counts, the top-scored active set, the
masked layer (only active neurons output, only their weights get gradients) and the multiplication count."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.spring2017 import (
    LSHLayer,
    LSHNetwork,
    collision_counts,
    dense_multiplications,
    multiplications,
    pool,
    simhash,
    top_active,
)
from torch import nn

from atlas.harness import models


def test_pooling_averages_blocks_and_drops_the_remainder() -> None:
    x = torch.arange(10.0)[None, :]
    assert pool(x, 3).tolist() == [[1.0, 4.0, 7.0]]  # blocks of 3: (0,1,2), (3,4,5), (6,7,8); 9 dropped


def test_simhash_sets_a_bit_per_nonnegative_projection() -> None:
    planes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # one table, K = 3
    x = torch.tensor([[2.0, -1.0], [-1.0, 3.0], [1.0, 1.0]])
    # x0: +, -, + -> 1 + 4; x1: -, +, + -> 2 + 4; x2: all + -> 7
    assert simhash(x, planes).flatten().tolist() == [5, 6, 7]


def test_collision_counts_and_the_top_scored_active_set() -> None:
    neurons = torch.tensor([[1, 2, 3], [1, 0, 3], [0, 0, 0], [1, 2, 0]])  # 4 neurons, L = 3
    queries = torch.tensor([[1, 2, 3], [9, 9, 9]])
    counts = collision_counts(neurons, queries)
    assert counts.tolist() == [[3, 2, 0, 2], [0, 0, 0, 0]]
    top = top_active(counts, 1)
    assert top.tolist() == [[True, False, False, False], [False, False, False, False]]  # none: nothing collides
    two = top_active(counts, 3)
    assert two[0].tolist() == [True, True, False, True]  # never the neuron with no collision


def test_collisions_favour_the_largest_activations() -> None:
    torch.manual_seed(1)
    layer = LSHLayer(nn.Linear(40, 500), tables=50, bits=6, dims=8, fraction=0.05,
                     generator=torch.Generator().manual_seed(0))
    a = torch.randn(100, 40)
    m = layer.mask(a)
    assert m.sum(1).float().mean() <= 25
    with torch.no_grad():
        pooled = pool(a, 8) @ pool(layer.linear.weight, 8).T  # the similarity the hash estimates
    assert pooled[m].mean() > pooled.mean() + 1.0 * pooled.std()


def test_inactive_neurons_output_zero_and_get_no_gradient() -> None:
    torch.manual_seed(2)
    net = LSHNetwork(models.build("mlp", (1, 4, 4), 3, hidden=[40]), tables=10, bits=3, input_dims=4, hidden_dims=4,
                     fraction=0.25, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 1, 4, 4)
    layer = net.hidden[0]
    net(x).sum().backward()
    m = layer.last_mask[0]
    assert 0 < int(m.sum()) <= 10
    h = layer(x.flatten(1))[0]
    assert torch.all(h[~layer.last_mask[0]] == 0)
    grad = layer.linear.weight.grad
    assert torch.all(grad[~m] == 0) and bool((grad[m] != 0).any())  # sparse update: only the active rows


def test_random_control_draws_the_given_fraction() -> None:
    layer = LSHLayer(nn.Linear(8, 50), tables=1, bits=2, dims=2, fraction=0.1,
                     generator=torch.Generator().manual_seed(0), mode="random")
    assert layer.mask(torch.randn(7, 8)).sum(1).tolist() == [5] * 7
    with pytest.raises(ValueError):
        LSHLayer(nn.Linear(8, 50), tables=1, bits=2, dims=2, fraction=0.1, generator=torch.Generator(), mode="x")


def test_multiplications_count_the_active_neurons_and_the_dense_output() -> None:
    widths = [784, 1000, 10]
    assert dense_multiplications(widths) == 784 * 1000 + 10_000
    mults, with_hashing = multiplications(widths, [50.0], tables=100, bits=6, dims=[8])
    assert mults == 50 * 784 + 10_000
    assert with_hashing == mults + 100 * 6 * 8
    assert math.isclose(100 * mults / dense_multiplications(widths), 6.20, abs_tol=0.01)
