"""FreshNets (chen2015b): the DCT, the frequency bands and their buckets, the filters rebuilt from the
shared frequency coefficients, the gradient through the inverse DCT, and the storage."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from atlas_reproductions.chen2015 import HashedLinear, hash32
from atlas_reproductions.chen2015b import (
    FREQUENCY,
    SPATIAL,
    HashedConv2d,
    band_buckets,
    bands,
    codebook_encoding,
    dct2,
    dct_matrix,
    hash_network,
    idct2,
    indexed_storage_bits,
    storage_parts,
    virtual_weights,
)
from torch import nn

from atlas.harness import measure, models


def test_dct_matrix_is_orthonormal_and_matches_the_textbook_dct() -> None:
    c = dct_matrix(5)
    torch.testing.assert_close(c @ c.T, torch.eye(5), atol=1e-6, rtol=0)
    # DCT-II of a constant signal: all energy in the first coefficient, sqrt(d) * value
    y = c @ torch.full((5,), 2.0)
    torch.testing.assert_close(y, torch.tensor([2.0 * math.sqrt(5), 0, 0, 0, 0]), atol=1e-5, rtol=0)
    x = torch.tensor([1.0, -2.0, 0.5, 3.0])
    k = 2  # X_k = sqrt(2/N) sum_n x_n cos(pi (2n+1) k / 2N)
    expected = math.sqrt(2 / 4) * sum(float(x[n]) * math.cos(math.pi * (2 * n + 1) * k / 8) for n in range(4))
    assert abs(float((dct_matrix(4) @ x)[k]) - expected) < 1e-5


def test_inverse_dct_undoes_the_dct_and_a_smooth_filter_is_low_frequency() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 2, 5, 5)
    torch.testing.assert_close(idct2(dct2(w)), w, atol=1e-5, rtol=0)
    torch.testing.assert_close(dct2(w).pow(2).sum(), w.pow(2).sum(), rtol=1e-5, atol=0)  # energy kept
    g = torch.arange(5.0)
    smooth = torch.exp(-((g[:, None] - 2) ** 2 + (g[None, :] - 2) ** 2) / 8)
    v = dct2(smooth).pow(2)
    low = v[bands(5) <= 2].sum()
    assert low / v.sum() > 0.95


def test_band_buckets_fall_with_frequency_and_sum_to_the_budget() -> None:
    counts = [int((bands(5) == p).sum()) * 250 for p in range(9)]  # 25 x 10 filters of 5 x 5
    assert counts == [250, 500, 750, 1000, 1250, 1000, 750, 500, 250]
    k = band_buckets(counts, 390, alpha=1.0, beta=2.0)
    assert sum(k) == 390 and all(1 <= a <= c for a, c in zip(k, counts, strict=True))
    per_coefficient = [a / c for a, c in zip(k, counts, strict=True)]
    assert all(x >= y - 1e-3 for x, y in zip(per_coefficient, per_coefficient[1:], strict=False))  # falls
    assert per_coefficient[0] > 5 * per_coefficient[-1]
    # Beta(1, 1) is uniform: every band gets the same share of its coefficients
    flat = band_buckets(counts, 390, alpha=1.0, beta=1.0)
    assert max(flat[p] / counts[p] for p in range(9)) - min(flat[p] / counts[p] for p in range(9)) < 0.01
    assert band_buckets([4, 4], 100, 1.0, 2.0) == [4, 4]  # never more buckets than coefficients


def test_frequency_filters_are_the_inverse_dct_of_the_hashed_coefficients() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 5)
    layer = HashedConv2d(conv, ratio=6, layer=1, domain=FREQUENCY, seed=11)
    assert layer.buckets == round(4 * 3 * 25 / 6) == sum(layer.band_sizes)
    offsets = [sum(layer.band_sizes[:p]) for p in range(9)]
    v = layer.virtual()
    for k in range(4):
        for i in range(3):
            for j1 in range(5):
                for j2 in range(5):
                    p = j1 + j2
                    h = int(hash32(11, 1, k, i, j1, j2, 0)) % layer.band_sizes[p] + offsets[p]
                    xi = 1.0 - 2.0 * (int(hash32(11, 1, k, i, j1, j2, 1)) & 1)
                    assert v[k, i, j1, j2].item() == xi * layer.weight[h].item()
    w = layer.filters()
    torch.testing.assert_close(w, idct2(v), atol=1e-6, rtol=0)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(layer(x), F.conv2d(x, w, layer.bias), atol=1e-5, rtol=0)


def test_spatial_domain_is_hashednets_on_the_filters() -> None:
    layer = HashedConv2d(nn.Conv2d(2, 3, 3), ratio=4, layer=0, domain=SPATIAL)
    assert layer.band_sizes == [round(54 / 4)]
    torch.testing.assert_close(layer.filters(), layer.virtual())
    with pytest.raises(ValueError):
        HashedConv2d(nn.Conv2d(2, 3, 3), ratio=4, layer=0, domain="time")


def test_gradient_of_a_bucket_is_the_signed_sum_through_the_inverse_dct() -> None:
    torch.manual_seed(2)
    layer = HashedConv2d(nn.Conv2d(2, 3, 3, bias=False), ratio=3, layer=0)
    x = torch.randn(4, 2, 6, 6)
    target = torch.randn(4, 3, 4, 4)
    F.mse_loss(layer(x), target).backward()
    w = layer.filters().detach().requires_grad_(True)
    F.mse_loss(F.conv2d(x, w), target).backward()
    grad_v = dct2(w.grad)  # dL/dV = C dL/dW C^T (W = C^T V C)
    expected = torch.zeros(layer.buckets).index_add_(0, layer.index, (layer.sign.view_as(grad_v) * grad_v).flatten())
    torch.testing.assert_close(layer.weight.grad, expected, atol=1e-6, rtol=1e-5)


def test_network_stores_only_the_buckets_and_the_biases() -> None:
    torch.manual_seed(3)
    dense = models.build("lenet-5", (1, 28, 28), 10, width=0.5)
    model = hash_network(models.build("lenet-5", (1, 28, 28), 10, width=0.5), ratio=16, domain=FREQUENCY)
    convs = [m for m in model.modules() if isinstance(m, HashedConv2d)]
    linears = [m for m in model.modules() if isinstance(m, HashedLinear)]
    assert len(convs) == 2 and len(linears) == 2
    assert [c.buckets for c in convs] == [round(250 / 16), round(6250 / 16)]
    assert virtual_weights(model) == measure.count_params(dense)
    state = model.state_dict()
    assert sorted(state) == ["classifier.1.weight", "classifier.3.weight", "features.0.bias", "features.0.weight",
                             "features.2.bias", "features.2.weight"]  # no hash, no DCT matrix
    assert measure.storage_bits(storage_parts(model)) == 32 * measure.count_params(model)
    assert 15 < measure.count_params(dense) / measure.count_params(model) < 16.1
    # a fresh network with the same seed, given the stored buckets, computes the same function
    again = hash_network(models.build("lenet-5", (1, 28, 28), 10, width=0.5), ratio=16, domain=FREQUENCY)
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(again(x), model(x))
    again.load_state_dict(state)
    assert torch.equal(again(x), model(x))


def test_codebook_encoding_decodes_to_the_virtual_coefficients() -> None:
    torch.manual_seed(4)
    model = hash_network(models.build("lenet-5", (1, 28, 28), 10, width=0.5), ratio=16, domain=FREQUENCY)
    conv = next(m for m in model.modules() if isinstance(m, HashedConv2d) and m.shape[1] > 1)
    enc = codebook_encoding(conv)
    assert torch.equal(enc.dequantize().view(conv.shape), conv.virtual().detach())
    assert enc.bits == (2 * conv.buckets - 1).bit_length()
    fc = next(m for m in model.modules() if isinstance(m, HashedLinear))
    assert torch.equal(codebook_encoding(fc).dequantize(), fc.virtual().detach())
    # storing the indices costs more than the buckets alone (what FreshNets stores)
    assert indexed_storage_bits(model) > measure.storage_bits(storage_parts(model))
