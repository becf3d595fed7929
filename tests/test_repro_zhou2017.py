"""Unit tests of INQ's pieces (zhou2017): the code book of Eq. 2-3, the nearest-level rule of Eq. 4, the
magnitude partition with accumulated portions, the frozen group during retraining, and the b-bit
power-of-two encoding that decodes back to the quantized weights exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from atlas_reproductions import zhou2017
from atlas_reproductions.zhou2017 import (
    PORTIONS,
    encode_pow2,
    exponent_range,
    inq_storage,
    partition,
    quantize_pow2,
)

from atlas.harness import registry
from atlas.harness.run import Run


def test_exponent_range_eq_2_3() -> None:
    w = torch.tensor([0.3, -1.0, 0.01])  # s = 1: n1 = floor(log2(4/3)) = 0
    assert exponent_range(w, 5) == (0, -7)  # 2^(b-2) = 8 magnitudes: 2^0 .. 2^-7
    assert exponent_range(w, 3) == (0, -1)
    assert exponent_range(w, 2) == (0, 0)  # ternary {±1, 0}
    assert exponent_range(torch.tensor([0.76]), 5)[0] == 0  # 4 * 0.76 / 3 > 1
    assert exponent_range(torch.tensor([0.74]), 5)[0] == -1


def test_quantize_pow2_nearest_level() -> None:
    n1, n2 = 0, -2  # P = {±1, ±1/2, ±1/4, 0}
    w = torch.tensor([1.4, 0.76, 0.74, -0.3, 0.126, 0.124, 0.0, -2.0])
    q = quantize_pow2(w, n1, n2)
    assert q.tolist() == [1.0, 1.0, 0.5, -0.25, 0.25, 0.0, 0.0, -1.0]
    # every value is the nearest element of P (Eq. 4 and the released code's rule agree)
    levels = torch.tensor([0.0, 1, 0.5, 0.25, -1, -0.5, -0.25])
    x = torch.linspace(-1.4, 1.4, 2001)
    nearest = levels[(x[:, None] - levels[None]).abs().argmin(dim=1)]
    assert torch.equal(quantize_pow2(x, n1, n2), nearest)
    assert torch.equal(quantize_pow2(q, n1, n2), q)  # idempotent


def test_partition_accumulates_largest_first() -> None:
    w = torch.tensor([0.9, -0.1, 0.5, -0.7, 0.2, 0.05, -0.3, 0.8])
    frozen = torch.zeros_like(w, dtype=torch.bool)
    sizes = []
    for portion in PORTIONS:
        new = partition(w, frozen, portion)
        assert bool((new | ~frozen).all()) and bool(new[frozen].all())  # frozen stays frozen
        frozen = new
        sizes.append(int(frozen.sum()))
    assert sizes == [4, 6, 7, 8]
    first = partition(w, torch.zeros_like(frozen), 0.5)
    assert set(torch.nonzero(first).flatten().tolist()) == {0, 2, 3, 7}  # the 4 largest |w|
    # a frozen weight that is small keeps its place; the rest are taken by magnitude
    pinned = torch.zeros_like(frozen)
    pinned[5] = True
    assert set(torch.nonzero(partition(w, pinned, 0.5)).flatten().tolist()) == {5, 0, 7, 3}


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_encoding_round_trip(bits: int) -> None:
    torch.manual_seed(bits)
    w = torch.randn(7, 45) * 0.1
    n1, n2 = exponent_range(w, bits)
    q = quantize_pow2(w, n1, n2)
    enc = encode_pow2(q, n1, n2, bits)
    assert torch.equal(enc.dequantize(), q)
    assert enc.storage_bytes() == 4 * 7 * -(-45 // (32 // bits)) + 4
    assert torch.equal(encode_pow2(w, n1, n2, bits).dequantize(), q)  # encoding quantizes by Eq. 4


def test_smoke_inq_model_is_on_code_book_and_stored(tmp_path: Path) -> None:
    cfg = copy.deepcopy(registry.get("zhou2017").profiles["smoke"])
    run = Run("zhou2017", "smoke", cfg, 0, cache_dir=tmp_path, progress=False)
    dense = zhou2017.train_dense(run)
    model = zhou2017.inq(run, dense, 3)
    params, before = dict(model.named_parameters()), dict(dense.named_parameters())
    for name, (n1, n2) in model._inq_ranges.items():
        w = params[name].detach()
        assert n1 - n2 + 1 == 2  # 3 bits: 2 magnitudes
        allowed = torch.tensor([0.0] + [s * 2.0 ** e for e in range(n2, n1 + 1) for s in (1, -1)])
        assert bool(torch.isin(w, allowed).all()), name
        assert not torch.equal(w, before[name].detach())
    # retraining moved the full-precision group: not the same as quantizing the dense model at once
    one_shot = {n: quantize_pow2(before[n], *r) for n, r in model._inq_ranges.items()}
    assert any(not torch.equal(params[n].detach(), q) for n, q in one_shot.items())
    parts = inq_storage(model, 3)
    n_weights = sum(params[n].numel() for n in model._inq_ranges)
    code_bits = sum(p.bits for p in parts if p.what.endswith("power-of-two codes"))
    assert 3 * n_weights <= code_bits < 3.5 * n_weights
