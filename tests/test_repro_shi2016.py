"""FunHashNN (shi2016): the multiple hashes, the reconstruction network, HashedNets as its degenerate case,
the gradient of a shared value and the equal-storage budget."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from atlas_reproductions.chen2015 import HashedLinear, bucket_hash, buckets_for, hash32, sign_hash
from atlas_reproductions.shi2016 import (
    FunHashedLinear,
    funhash_layers,
    funhash_virtual_params,
    reconstruction_size,
    storage_parts,
)

from atlas.harness import measure, models


def test_every_entry_fetches_u_signed_values_with_u_hash_functions() -> None:
    torch.manual_seed(0)
    layer = FunHashedLinear(5, 3, ratio=2, layer=1, hashes=3, hidden=2, seed=7)
    assert buckets_for(18, 2) - reconstruction_size(3, 2) < 1 and layer.buckets == 1  # g larger than the budget
    layer = FunHashedLinear(20, 6, ratio=2, layer=1, hashes=3, hidden=2, seed=7)
    assert layer.buckets == round(21 * 6 / 2) - (2 * 5 + 1)
    z = layer.fetched()  # rows in input-major order: row r = (j, i) with j = r // out, i = r % out
    for r in (0, 7, 50, 125):
        j, i = divmod(r, 6)
        for u in range(3):
            h = int(hash32(7, 1, i, j, 2 * u)) % layer.buckets
            xi = 1.0 - 2.0 * (int(hash32(7, 1, i, j, 1 + 2 * u)) & 1)
            assert z[r, u].item() == xi * layer.weight[h].item()
    # the hash functions differ: an entry's U buckets are not all the same
    assert (layer.index[:, 0] != layer.index[:, 1]).float().mean() > 0.8


def test_virtual_matrix_is_g_of_the_fetched_values() -> None:
    torch.manual_seed(1)
    layer = FunHashedLinear(8, 4, ratio=1.5, layer=0, hashes=2, hidden=3)
    z = layer.fetched()
    g = layer.second(torch.tanh(layer.first(z))).squeeze(-1)
    v = layer.virtual()
    torch.testing.assert_close(v, g.view(9, 4).T)
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), x @ v[:, :8].T + v[:, 8], atol=1e-6, rtol=0)


def test_hashednets_is_the_degenerate_case() -> None:
    """U = 1 and a linear g with weight 1: exactly chen2015's HashedLinear (same hashes, same buckets)."""
    torch.manual_seed(2)
    fun = FunHashedLinear(12, 5, ratio=4, layer=2, hashes=1, hidden=0, seed=1691)
    with torch.no_grad():
        fun.mix.fill_(1.0)
    hashed = HashedLinear(12, 5, ratio=4, layer=2, seed=1691)
    assert fun.buckets == hashed.buckets - 1  # the one weight of g comes out of the budget
    h = bucket_hash(1691, 2, 5, 13, fun.buckets)
    xi = sign_hash(1691, 2, 5, 13)
    torch.testing.assert_close(fun.virtual(), xi * fun.weight[h])


def test_gradient_of_a_value_sums_over_every_fetch() -> None:
    torch.manual_seed(3)
    layer = FunHashedLinear(6, 4, ratio=1.2, layer=0, hashes=3, hidden=0)
    x = torch.randn(3, 6)
    target = torch.randn(3, 4)
    F.mse_loss(layer(x), target).backward()
    v = layer.virtual().detach().requires_grad_(True)
    F.mse_loss(F.linear(x, v[:, :-1], v[:, -1]), target).backward()
    dv = v.grad.T.reshape(-1)  # input-major rows, as fetched()
    expected = torch.zeros(layer.buckets)
    for u in range(3):
        expected.index_add_(0, layer.index[:, u], layer.mix[u].item() * layer.sign[:, u] * dv)
    torch.testing.assert_close(layer.weight.grad, expected, atol=1e-6, rtol=1e-5)


def test_storage_equals_the_hashednet_at_the_same_ratio() -> None:
    torch.manual_seed(4)
    fun = funhash_layers(models.build("mlp", (1, 28, 28), 10, hidden=[128]), ratio=8, hashes=4, hidden=4)
    dense = models.build("mlp", (1, 28, 28), 10, hidden=[128])
    assert funhash_virtual_params(fun) == measure.count_params(dense)
    hashed_buckets = buckets_for(785 * 128, 8) + buckets_for(129 * 10, 8)
    assert measure.count_params(fun) == hashed_buckets
    assert measure.storage_bits(storage_parts(fun)) == 32 * hashed_buckets
    state = fun.state_dict()
    assert not any("index" in k or "sign" in k for k in state)  # the hashes are recomputed
    again = funhash_layers(models.build("mlp", (1, 28, 28), 10, hidden=[128]), ratio=8, hashes=4, hidden=4)
    x = torch.randn(2, 1, 28, 28)
    again.load_state_dict(state)
    assert torch.equal(again(x), fun(x))
