"""ShiftCNN's greedy power-of-two conversion, its packed encoding and the shift-and-add product."""

from __future__ import annotations

import pytest
import torch
from atlas_reproductions.gudovskiy2017 import (
    convert,
    decode,
    encode_layer,
    shift_add_matmul,
    shift_codes,
    shiftcnn_weight,
    storage,
)
from torch import nn

from atlas.harness import measure


def test_one_term_rounds_to_the_nearest_power_of_two_in_the_linear_domain() -> None:
    w = torch.tensor([1.0, 0.76, 0.74, -0.3, 0.01, 0.0])  # max 1: r = w
    # 0.76 > 0.75 -> 1; 0.74 -> 0.5; -0.3 in [0.1875, 0.375) -> -0.25; 0.01 -> 2^-7, beyond B=4's 2^-6 -> 0
    assert shiftcnn_weight(w, 1, 4).tolist() == [1.0, 1.0, 0.5, -0.25, 0.0, 0.0]


def test_terms_approximate_the_residual_greedily_and_the_codebook_saturates() -> None:
    w = torch.tensor([0.8, -0.3, 1.0])
    assert shiftcnn_weight(w, 1, 4).tolist() == [1.0, -0.25, 1.0]
    assert shiftcnn_weight(w, 2, 4).tolist() == [0.75, -0.3125, 1.0]  # residuals -0.2 -> -2^-2; -0.05 -> -2^-4
    assert shiftcnn_weight(w, 3, 4).tolist() == [0.8125, -0.296875, 1.0]  # +0.05 -> 2^-4; +0.0125 -> 2^-6
    codes, scale = shift_codes(w, 1, 2)  # B = 2: one shift only, {0, ±1}
    assert scale.item() == 1.0 and decode(codes, scale, 2).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        shift_codes(w, 1, 1)


def test_more_terms_never_increase_the_error() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    errs = [(shiftcnn_weight(w, n, 4) - w).pow(2).sum().item() for n in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]


def test_packed_terms_decode_to_the_converted_weight_and_shift_add_computes_its_product() -> None:
    torch.manual_seed(1)
    w = torch.randn(10, 37)
    enc = encode_layer(w, 2, 4)
    terms = enc.terms()
    assert torch.equal(sum(t.dequantize() for t in terms), shiftcnn_weight(w, 2, 4))
    assert torch.equal(enc.dequantize(), shiftcnn_weight(w, 2, 4))
    x = torch.randn(3, 37)
    assert torch.allclose(shift_add_matmul(x, enc), x @ enc.dequantize().T, atol=1e-5)
    # each term: 37 four-bit codes -> 5 int32 words a row, and one fp32 scale
    assert all(8 * t.storage_bytes() >= 10 * 5 * 32 + 32 for t in terms)


def test_conversion_storage_counts_every_term_and_the_biases() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(20, 6), nn.ReLU(), nn.Linear(6, 3))
    conv = convert(model, 2, 4)
    assert torch.equal(conv[0].weight, shiftcnn_weight(model[0].weight.detach(), 2, 4))
    parts = storage(model, 2, 4)
    assert sum(p.what == "fp32" for p in parts) == 2 and len(parts) == 2 * 2 + 2
    assert measure.storage_bits(parts) < measure.dense_bits(model)
