"""Sun et al.'s intra-layer nonuniform quantization: ENQ's equal-distance intervals with mean levels,
KNQ's 1-D k-means, their encodings (decode(encode(w)) is the quantized weight, bit for bit) and the
storage counted."""

from __future__ import annotations

import torch
from atlas_reproductions.sun2016 import (
    assign,
    encode_layer,
    encoded_weight_bits,
    enq,
    knq,
    quantize_network,
    smallest_within,
)
from torch import nn


def _w(seed: int = 0, shape: tuple[int, ...] = (40, 30)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_enq_levels_are_the_means_of_equal_width_intervals() -> None:
    w = torch.tensor([[0.0, 0.1, 0.2, 0.9], [1.0, 0.95, 0.3, 0.6]])
    codebook, codes = enq(w, 2)  # intervals [0, .25), [.25, .5), [.5, .75), [.75, 1]
    assert codes.tolist() == [[0, 0, 0, 3], [3, 3, 1, 2]]
    torch.testing.assert_close(codebook, torch.tensor([0.1, 0.3, 0.6, 0.95]))


def test_enq_empty_interval_keeps_its_midpoint() -> None:
    w = torch.tensor([0.0, 0.01, 1.0])
    codebook, codes = enq(w, 2)
    assert codes.tolist() == [0, 0, 3]
    torch.testing.assert_close(codebook[1:3], torch.tensor([0.375, 0.625]))


def test_knq_finds_separated_clusters_and_is_a_fixed_point() -> None:
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([-1.0, 0.2, 1.2, 2.0])
    truth = torch.arange(4).repeat_interleave(60)
    w = centres[truth] + 0.01 * torch.randn(240, generator=gen)
    levels, codes = knq(w, 2, iters=100)
    assert torch.equal(codes, truth)
    for j in range(4):
        torch.testing.assert_close(levels[j], w[truth == j].mean())
    assert torch.equal(assign(w, levels), codes)  # Lloyd converged: every weight at its nearest level


def test_knq_error_not_above_enq_and_falls_with_bits() -> None:
    w = _w(2)
    errs = {}
    for bits in (2, 3, 4):
        ce, ke = enq(w, bits), knq(w, bits, 50)
        e_enq = float((ce[0][ce[1]] - w).square().sum())
        e_knq = float((ke[0][ke[1]] - w).square().sum())
        assert e_knq <= e_enq + 1e-9  # KNQ starts where ENQ is and Lloyd steps never raise the error
        errs[bits] = e_knq
    assert errs[2] > errs[3] > errs[4]


def test_encoding_decodes_exactly_and_counts_packed_codes_plus_codebook() -> None:
    w = _w(3, (8, 3, 5, 5))  # a convolution: flattened to [8, 75]
    codebook, codes = knq(w, 3, 30)
    enc = encode_layer(w, codebook, codes)
    assert torch.equal(enc.dequantize().view_as(w), codebook[codes])
    words = -(-75 // (32 // 3))  # 10 three-bit codes per int32 word
    assert int(enc.storage_bytes()) == 4 * 8 * words + 4 * 8


def test_quantize_network_storage_and_levels_per_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    q = quantize_network(model, "knq", 2, 30)
    for layer in (q.model[0], q.model[2]):
        assert torch.unique(layer.weight).numel() <= 4
    assert q.weight_bits == 8 * (4 * 64 * 2 + 16 + 4 * 10 * 4 + 16)  # 16 codes per int32 word; 4 fp32 levels
    assert q.storage_bits == q.weight_bits + 32 * (64 + 10)
    assert encoded_weight_bits(q.model) == q.weight_bits  # same codes, same codebook size


def test_smallest_within() -> None:
    acc = {2: 80.0, 3: 88.5, 4: 89.2, 8: 89.5}
    assert smallest_within(acc, 89.6, 1.0) == 4
    assert smallest_within(acc, 89.4, 1.0) == 3
    assert smallest_within(acc, 99.0, 1.0) == 8
