"""Ko et al.'s JPEG weight codec: the DCT, the run-length and Huffman coding (decode(encode(w)) is the
lossy reconstruction, bit for bit), the size it counts, and the sensitivity tiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from atlas_reproductions.ko2017 import (
    EOB,
    ZIGZAG,
    ZRL,
    assign_tiers,
    block_sensitivity,
    canonical_codes,
    coefficients,
    compress,
    decode,
    encode,
    encoded_bits,
    fit_base,
    huffman_lengths,
    lossy,
    reconstruct,
    run_length,
    symbol_counts,
    tier_multipliers,
    to_blocks,
)
from torch import nn


def _w(n: int = 30, k: int = 21, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_dct_is_orthonormal_and_a_constant_block_has_only_dc() -> None:
    w = torch.full((8, 8), 0.25)
    c = coefficients(w)
    assert c.shape == (1, 64)
    assert c[0, 0].item() == pytest.approx(0.25 * 8)
    assert c[0, 1:].abs().max().item() < 1e-12
    x = torch.randn(16, 24, dtype=torch.float64)
    assert torch.allclose((coefficients(x) ** 2).sum(), (x**2).sum())  # Parseval
    assert ZIGZAG[:6].tolist() == [0, 1, 8, 16, 9, 2]  # JPEG's scan


def test_run_length_symbols_with_zrl_and_eob() -> None:
    q = torch.zeros(2, 64, dtype=torch.long)
    q[0, 0], q[0, 3], q[0, 40] = 5, -2, 1  # runs 0, 2, 36 = 16 + 16 + 4
    stream = run_length(q).tolist()
    assert stream == [5 * 16 + 0, -2 * 16 + 2, ZRL, ZRL, 1 * 16 + 4, EOB, EOB]
    assert symbol_counts(q) == {80: 1, -30: 1, ZRL: 2, 20: 1, EOB: 2}


def test_huffman_lengths_are_optimal_and_prefix_free() -> None:
    lengths = huffman_lengths({1: 45, 2: 13, 3: 12, 4: 16, 5: 9, 6: 5})  # the textbook example
    assert sum(lengths[s] * c for s, c in {1: 45, 2: 13, 3: 12, 4: 16, 5: 9, 6: 5}.items()) == 224
    codes = list(canonical_codes(lengths).values())
    assert not any(a != b and b.startswith(a) for a in codes for b in codes)
    assert huffman_lengths({7: 3}) == {7: 1}


@pytest.mark.parametrize("base", [0.02, 0.5, 4.0])
def test_decode_of_encode_is_the_lossy_reconstruction(base: float) -> None:
    w = _w()
    tier = torch.arange(to_blocks(w).shape[0]) % 4
    mult = tier_multipliers(4, 2.0)
    enc = encode(w, base, tier, mult)
    assert torch.equal(decode(enc), lossy(w, base, tier, mult))
    assert enc.storage_bits() == encoded_bits(w, base, tier, mult)
    assert not torch.equal(lossy(w, base, tier, mult), w)  # lossy: can fail


def test_zrl_stream_round_trips() -> None:
    q = torch.zeros(4, 64, dtype=torch.long)
    q[0, 0], q[0, 50], q[2, 20], q[3, 63] = 9, -3, 2, 1
    scales = torch.ones(4, dtype=torch.float64)
    w = reconstruct(q, 1 / 127, scales, (16, 16)).double()
    w[0, 0] = w.abs().max() * 1.0  # keep delta = max|w| / 127 as built
    enc = encode(w.float(), 1.0, torch.zeros(4, dtype=torch.long), [1.0])
    assert ZRL in enc.table
    assert torch.equal(decode(enc), lossy(w.float(), 1.0, torch.zeros(4, dtype=torch.long), [1.0]))


def test_coarser_factor_means_fewer_bits_and_more_error() -> None:
    w = _w(64, 64, seed=1)
    tier = torch.zeros(64, dtype=torch.long)
    bits = [encoded_bits(w, s, tier, [1.0]) for s in (0.1, 1.0, 10.0)]
    err = [(lossy(w, s, tier, [1.0]) - w).norm().item() for s in (0.1, 1.0, 10.0)]
    assert bits[0] > bits[1] > bits[2]
    assert err[0] < err[1] < err[2]


def test_tiers_follow_sensitivity_and_multipliers() -> None:
    sens = {"a.weight": torch.tensor([0.1, 5.0, 0.3]), "b.weight": torch.tensor([2.0, 0.0, 9.0, 1.0, 0.2])}
    tiers = assign_tiers(sens, 4)
    assert tiers["a.weight"].tolist() == [0, 3, 1]  # ranks 1, 6, 3 of 8
    assert tiers["b.weight"].tolist() == [2, 0, 3, 2, 1]  # ranks 5, 0, 7, 4, 2
    assert tier_multipliers(4, 2.0) == pytest.approx([2**1.5, 2**0.5, 2**-0.5, 2**-1.5])


def test_sensitivity_is_zero_where_the_inputs_are_zero_and_fit_meets_the_target() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(32, 16)
    x[:, 8:] = 0  # the second block column of the first layer sees no input
    sens = block_sensitivity(model, x, torch.randint(0, 4, (32,)))
    assert sens["0.weight"].tolist()[1] == 0 and sens["0.weight"].tolist()[3] == 0
    assert sens["0.weight"][0] > 0
    tiers = assign_tiers(sens, 2)
    mult = tier_multipliers(2, 2.0)
    target = 32 * (16 * 16 + 16 * 4) / 4
    base = fit_base(model, target, tiers, mult)
    c = compress(model, base, tiers, mult)
    assert c.weight_bits <= target
    assert math.isfinite(base) and base > 0
    assert np.isclose(c.weight_bits, sum(p.bits for p in c.parts if p.name in tiers))
