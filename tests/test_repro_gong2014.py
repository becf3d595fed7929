"""Gong et al.'s vector quantization of dense layers: k-means, the four quantizers, their encodings
(decode(encode(w)) is the quantized weight, bit for bit) and the storage they count."""

from __future__ import annotations

import math

import pytest
import torch
from atlas_reproductions.gong2014 import (
    assign,
    binarize,
    dense_storage_compression,
    kmeans,
    kmeans_plusplus,
    product_quantize,
    quantize_network,
    residual_quantize,
    scalar_kmeans,
)
from torch import nn

from atlas.harness import measure, models


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weight(n: int = 30, k: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=_gen(seed)) * 0.1


# ------------------------------------------------------------------------------------ k-means
@pytest.mark.parametrize("d", [1, 3])
def test_assign_is_the_nearest_centroid(d: int) -> None:
    x = torch.randn(2, 200, d, generator=_gen(1))
    c = torch.randn(2, 7, d, generator=_gen(2))
    brute = torch.cdist(x, c).argmin(-1)
    assert torch.equal(assign(x, c), brute)


def test_kmeans_finds_well_separated_clusters_exactly() -> None:
    """Three tight clusters around -1, 0 and 2 (scalars): every point lands with its own cluster and the
    centroids are the clusters' means."""
    gen = _gen(3)
    centres = torch.tensor([-1.0, 0.0, 2.0])
    truth = torch.arange(3).repeat_interleave(50)
    x = (centres[truth] + 0.01 * torch.randn(150, generator=gen)).reshape(1, -1, 1)
    c, labels = kmeans(x, 3, iters=50, generator=gen)
    assert torch.unique(c.reshape(-1).round()).tolist() == [-1.0, 0.0, 2.0]
    for j in range(3):  # each true cluster is exactly one k-means cluster, its centroid its mean
        members = labels[0, truth == j]
        assert (members == members[0]).all()
        torch.testing.assert_close(c[0, members[0], 0], x[0, truth == j, 0].mean())


def test_kmeans_lowers_the_error_of_its_initialisation_and_is_seeded() -> None:
    x = torch.randn(3, 120, 4, generator=_gen(4))
    init = kmeans_plusplus(x, 8, _gen(5))
    c, labels = kmeans(x, 8, iters=30, generator=_gen(5))
    def sse(cc: torch.Tensor) -> float:
        return float(((x - cc[torch.arange(3)[:, None], assign(x, cc)]) ** 2).sum())
    assert sse(c) < 0.9 * sse(init)
    c2, labels2 = kmeans(x, 8, iters=30, generator=_gen(5))
    assert torch.equal(c, c2) and torch.equal(labels, labels2)
    assert not torch.equal(kmeans(x, 8, iters=30, generator=_gen(6))[0], c)


def test_kmeans_plusplus_picks_distinct_points_of_the_data() -> None:
    x = torch.randn(1, 50, 2, generator=_gen(7))
    c = kmeans_plusplus(x, 10, _gen(8))[0]
    rows = [int(((x[0] - v).abs().sum(1) == 0).nonzero()[0]) for v in c]
    assert len(set(rows)) == 10  # a point already chosen has distance 0 and cannot be drawn again


def test_k_is_capped_at_the_number_of_vectors() -> None:
    x = torch.randn(1, 5, 2, generator=_gen(9))
    c, labels = kmeans(x, 16, iters=10, generator=_gen(9))
    assert c.shape == (1, 5, 2)
    torch.testing.assert_close(c[0, labels[0]], x[0])  # every vector its own codeword: lossless


# --------------------------------------------------------------------------------- quantizers
def test_binarization_is_the_sign_with_the_mean_magnitude() -> None:
    w = _weight()
    q = binarize(w)
    a = w.abs().mean()
    assert torch.equal(q.weight, torch.where(w >= 0, a, -a))
    assert torch.equal(q.decode(), q.weight)
    assert q.encodings[0].bits == 1


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_scalar_kmeans_uses_2_to_the_bits_shared_values(bits: int) -> None:
    w = _weight(40, 50)
    q = scalar_kmeans(w, bits, iters=30, generator=_gen(1))
    assert len(torch.unique(q.weight)) == 2**bits
    assert torch.equal(q.decode(), q.weight)  # decode(encode(w)) is the quantized weight, bit for bit
    # each weight takes its nearest shared value
    values = torch.unique(q.weight)
    nearest = values[(w[..., None] - values).abs().argmin(-1)]
    assert torch.equal(q.weight, nearest)
    # storage: bits-bit codes packed 32 // bits to an int32 word per row, plus 2^bits fp32 centroids
    per_word = 32 // bits
    assert q.storage_bits() == 32 * 40 * math.ceil(50 / per_word) + 32 * 2**bits


def test_scalar_kmeans_error_falls_with_the_bits() -> None:
    w = _weight(40, 50)
    errors = [float(((scalar_kmeans(w, b, 30, generator=_gen(0)).weight - w) ** 2).sum()) for b in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.1 * errors[0]


def test_product_quantization_codewords_per_sub_space() -> None:
    """N = 30 rows, K = 10 columns in sub-vectors of d = 4 (the last padded): 3 sub-spaces, each with its
    own k = 5 codewords; every row's sub-vector is one of its sub-space's codewords."""
    w = _weight(30, 10)
    q = product_quantize(w, dim=4, k=5, iters=30, generator=_gen(2))
    assert q.weight.shape == w.shape
    assert torch.equal(q.decode(), q.weight)
    enc = q.encodings[0]
    assert enc.codebook.shape == (3, 5, 4) and enc.bits == 3 and enc.bpg == 1
    idx = enc.indices()  # [30, 3]: each row's codeword in each sub-space
    for i, cols in enumerate([slice(0, 4), slice(4, 8), slice(8, 10)]):
        sub = q.weight[:, cols]
        assert torch.equal(sub, enc.codebook[i, idx[:, i], : sub.shape[1]])
        assert len(torch.unique(sub, dim=0)) <= 5
        # each sub-vector's codeword is the nearest of its sub-space's codewords to it
        padded = torch.nn.functional.pad(w[:, cols], (0, 4 - sub.shape[1]))
        assert torch.equal(idx[:, i], torch.cdist(padded, enc.codebook[i]).argmin(1))
    # storage: 3-bit codes, 10 per int32 word (3 sub-vectors: one word per row) + 3 x 5 x 4 fp32
    assert q.storage_bits() == 32 * 30 * 1 + 32 * 3 * 5 * 4


def test_product_quantization_with_d_equal_1_and_k_at_n_is_lossless() -> None:
    w = _weight(6, 8)
    q = product_quantize(w, dim=1, k=6, iters=10, generator=_gen(3))
    torch.testing.assert_close(q.weight, w)


def test_residual_quantization_stages_reduce_the_error() -> None:
    w = _weight(40, 12)
    errs = [float(((residual_quantize(w, t, 4, 30, generator=_gen(4)).weight - w) ** 2).sum()) for t in (1, 2, 4)]
    assert errs[0] > errs[1] > errs[2]
    q = residual_quantize(w, 3, 4, 30, generator=_gen(4))
    assert len(q.encodings) == 3 and torch.equal(q.decode(), q.weight)
    # per stage: one 2-bit row index (one word per row) and a 4 x 12 fp32 codebook
    assert q.storage_bits() == 3 * (32 * 40 + 32 * 4 * 12)


# ---------------------------------------------------------------------------------- the network
def test_quantize_network_replaces_dense_weights_and_counts_their_encoding() -> None:
    torch.manual_seed(0)
    model = models.build("lenet-300-100", (1, 8, 8), 10)
    q = quantize_network(model, lambda w: scalar_kmeans(w, 2, 20, generator=_gen(0)), "2-bit k-means")
    for name, p in q.model.named_parameters():
        ref = dict(model.named_parameters())[name]
        if name.endswith("weight"):
            assert len(torch.unique(p)) == 4 and not torch.equal(p, ref)
        else:
            assert torch.equal(p, ref)  # biases untouched
    # 2-bit codes (16 a word) of 300x64, 100x300, 10x100 + three 4-entry codebooks + fp32 biases
    words = 300 * 4 + 100 * math.ceil(300 / 16) + 10 * math.ceil(100 / 16)
    expected = 32 * words + 3 * 4 * 32 + 32 * (300 + 100 + 10)
    assert measure.storage_bits(q.parts) == expected
    assert dense_storage_compression(model, q.parts) == pytest.approx(32 * measure.count_params(model) / expected)
    assert q.fp32_layers == []


def test_a_layer_whose_encoding_is_larger_stays_fp32() -> None:
    """RQ with 4 stages of 4 codewords of a 10-unit layer's 100-long rows stores more than the layer."""
    model = nn.Sequential(nn.Linear(100, 10))
    q = quantize_network(model, lambda w: residual_quantize(w, 4, 4, 10, generator=_gen(0)), "RQ")
    assert q.fp32_layers == ["0.weight"]
    assert torch.equal(q.model[0].weight, model[0].weight)
    assert measure.storage_bits(q.parts) == 32 * measure.count_params(model)
