"""HashedNets (chen2015): the hash, the virtual matrix rebuilt from the buckets, the gradient shared by a
bucket, the storage (the buckets and nothing else) and the equivalent-size network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from atlas_reproductions.chen2015 import (
    HashedLinear,
    bucket_hash,
    buckets_for,
    equivalent_hidden,
    hash32,
    hash_layers,
    hashed_layers,
    mlp_params,
    sign_hash,
    storage_parts,
    virtual_params,
)
from torch import nn

from atlas.harness import measure, models

M32 = 0xFFFFFFFF


def _xxh_python(seed: int, *keys: int) -> int:
    """The same xxHash32-style mixing with Python's unbounded integers (no int64 wrap-around)."""
    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & M32

    acc = (seed + 374761393) & M32
    for k in keys:
        acc = (acc + (k & M32) * 3266489917) & M32
        acc = (rotl(acc, 17) * 668265263) & M32
    acc ^= acc >> 15
    acc = (acc * 2246822519) & M32
    acc ^= acc >> 13
    acc = (acc * 3266489917) & M32
    return acc ^ (acc >> 16)


def test_hash_matches_an_unbounded_integer_computation() -> None:
    i = torch.arange(40)[:, None]
    j = torch.arange(7)[None, :]
    got = hash32(1691, 2, i, j, 0)
    expected = torch.tensor([[_xxh_python(1691, 2, a, b, 0) for b in range(7)] for a in range(40)])
    assert torch.equal(got, expected)
    assert int(got.min()) >= 0 and int(got.max()) <= M32


def test_hash_is_deterministic_and_depends_on_seed_layer_and_tag() -> None:
    a = bucket_hash(1691, 0, 30, 20, 97)
    assert torch.equal(a, bucket_hash(1691, 0, 30, 20, 97))
    assert not torch.equal(a, bucket_hash(1691, 1, 30, 20, 97))
    assert not torch.equal(a, bucket_hash(7, 0, 30, 20, 97))
    s = sign_hash(1691, 0, 30, 20)
    assert set(s.unique().tolist()) == {-1.0, 1.0}
    # the sign is another hash than the bucket's: its parity is not the bucket's parity
    assert not torch.equal((s < 0).long(), hash32(1691, 0, torch.arange(30)[:, None], torch.arange(20)[None, :], 0) & 1)


def test_buckets_are_filled_uniformly_and_signs_are_balanced() -> None:
    k = 785 * 300 // 8
    idx = bucket_hash(1691, 0, 300, 785, k)
    counts = torch.bincount(idx.flatten(), minlength=k).float()
    assert counts.numel() == k and abs(counts.mean().item() - 8) < 1e-3
    assert abs(counts.std().item() - 8 ** 0.5) < 0.15  # Poisson(8): std sqrt(8)
    s = sign_hash(1691, 0, 300, 785)
    assert abs(s.mean().item()) < 0.01


def test_virtual_matrix_is_rebuilt_from_the_buckets() -> None:
    torch.manual_seed(0)
    layer = HashedLinear(6, 4, ratio=3.5, layer=2, seed=11)
    assert layer.buckets == buckets_for(7 * 4, 3.5) == 8
    v = layer.virtual()
    h = bucket_hash(11, 2, 4, 7, 8)
    xi = sign_hash(11, 2, 4, 7)
    for i in range(4):
        for j in range(7):
            assert v[i, j].item() == xi[i, j].item() * layer.weight[h[i, j]].item()
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), x @ v[:, :6].T + v[:, 6], rtol=0, atol=1e-6)


def test_gradient_of_a_bucket_is_the_signed_sum_over_its_connections() -> None:
    torch.manual_seed(1)
    layer = HashedLinear(10, 6, ratio=4, layer=0)
    x = torch.randn(3, 10)
    target = torch.randn(3, 6)
    F.mse_loss(layer(x), target).backward()
    # dL/dV of the same function with V a free matrix
    v = layer.virtual().detach().requires_grad_(True)
    F.mse_loss(F.linear(x, v[:, :-1], v[:, -1]), target).backward()
    h = bucket_hash(1691, 0, 6, 11, layer.buckets)
    xi = sign_hash(1691, 0, 6, 11)
    expected = torch.zeros(layer.buckets).index_add_(0, h.flatten(), (xi * v.grad).flatten())
    torch.testing.assert_close(layer.weight.grad, expected)
    assert (expected != 0).sum() > layer.buckets // 2  # most buckets receive a gradient


def test_storage_is_the_buckets_and_the_hash_is_recomputed() -> None:
    torch.manual_seed(2)
    model = hash_layers(models.build("lenet-300-100", (1, 28, 28), 10), ratio=8)
    layers = hashed_layers(model)
    assert [m.buckets for m in layers] == [round(785 * 300 / 8), round(301 * 100 / 8), round(101 * 10 / 8)]
    state = model.state_dict()
    assert sorted(state) == ["1.weight", "3.weight", "5.weight"]  # no index, no sign, no bias
    assert all(t.dtype == torch.float32 for t in state.values())
    assert measure.storage_bits(storage_parts(model)) == 32 * sum(m.buckets for m in layers)
    assert virtual_params(model) == measure.count_params(models.build("lenet-300-100", (1, 28, 28), 10))
    assert abs(virtual_params(model) / measure.count_params(model) - 8) < 0.01
    # a fresh network with the same seed, given only the stored buckets, computes the same function
    torch.manual_seed(3)
    again = hash_layers(models.build("lenet-300-100", (1, 28, 28), 10), ratio=8)
    x = torch.randn(4, 1, 28, 28)
    assert not torch.allclose(again(x), model(x))
    again.load_state_dict(state)
    assert torch.equal(again(x), model(x))


def test_every_linear_layer_is_hashed_with_its_own_hash() -> None:
    model = hash_layers(nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 5))), ratio=2)
    first, second = hashed_layers(model)
    assert (first.layer, second.layer) == (0, 1)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert not torch.equal(first.index, second.index)


def test_equivalent_size_network_follows_the_papers_example() -> None:
    # "a single hidden layer of 1000 units and a storage compression factor of 1/10 -> 100 units"
    full = mlp_params(784, [1000], 10)
    assert equivalent_hidden(784, [1000], 10, round(full / 10)) == [100]
    assert equivalent_hidden(784, [128], 10, 12721) == [16]
    two = equivalent_hidden(784, [300, 100], 10, 33326)
    assert two == [42, 14] and abs(mlp_params(784, two, 10) - 33326) < 785
