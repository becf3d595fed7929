"""Lin et al. 2016: SQNR-optimal per-layer bit widths (half a bit less for twice the parameters), the
least-squared-error fractional length, and the encoded size of a per-layer fixed-point network."""

from __future__ import annotations

import atlas_kernels as ak
import torch
from atlas_reproductions.lin2016 import (
    KAPPA_DB_PER_BIT,
    Allocation,
    allocate_for_size,
    best_frac_length,
    encode_layers,
    encoded_bits,
    optimal_bit_widths,
    with_weights,
)
from torch import nn


def test_kappa_is_six_db_per_bit() -> None:
    assert abs(KAPPA_DB_PER_BIT - 6.0206) < 1e-4


def test_four_times_the_parameters_get_one_bit_less() -> None:
    # beta_i - beta_j = 0.5 log2(rho_j / rho_i): sizes 1, 4, 16 differ by one bit each
    bits = optimal_bit_widths([100, 400, 1600], 6.0)
    assert bits[0] - bits[1] == 1 and bits[1] - bits[2] == 1
    # L = (100*2 + 400*2.602 + 1600*3.204) / 2100 = 3.032: beta = 6 + (L - log10 rho) / 0.602 = 7.71, 6.71, 5.71
    # (sum rho_i beta_i = 12600 = 6 * 2100, the budget), rounded
    assert bits == [8, 7, 6]
    assert optimal_bit_widths([10, 10], 4.0) == [4, 4]  # equal layers: equal widths
    assert optimal_bit_widths([1, 10**6], 3.0, min_bits=2, max_bits=8) == [8, 3]  # clamped


def test_best_frac_length_minimises_the_squared_error() -> None:
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) * 0.1
    for bits in (3, 6):
        fl = best_frac_length(w, bits)
        err = float((ak.round_fixed_point(w, bits, fl) - w).pow(2).sum())
        for other in (fl - 1, fl + 1):
            assert err <= float((ak.round_fixed_point(w, bits, other) - w).pow(2).sum())


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 4))


def test_encoding_decodes_into_the_network_and_counts_packed_bits() -> None:
    model = _mlp()
    enc = encode_layers(model, [3, 8])
    assert sorted(enc) == ["1.weight", "3.weight"]
    # 3-bit codes: 10 per int32 word -> 4 words per row of 40; 8-bit: 4 per word -> 8 words per row of 32
    assert encoded_bits(enc) == 32 * (32 * 4 + 4 * 8)
    quantized = with_weights(model, enc)
    assert torch.equal(quantized[1].weight, enc["1.weight"].dequantize())
    assert torch.equal(quantized[1].bias, model[1].bias)  # biases untouched
    assert not torch.equal(quantized[1].weight, model[1].weight)


def test_allocation_meets_the_size_budget() -> None:
    model = _mlp()
    cfg = Allocation(equal_bits=6, size_reduction=0.2, curve_bits=[4, 5, 6], min_bits=2, max_bits=16)
    eq = encoded_bits(encode_layers(model, [6, 6]))
    avg, bits = allocate_for_size(model, int(0.8 * eq), 6.0, cfg)
    assert encoded_bits(encode_layers(model, bits)) <= 0.8 * eq
    assert avg < 6.0 and bits[0] <= bits[1]  # the larger layer gets no more bits than the smaller
