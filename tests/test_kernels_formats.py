"""atlas_kernels' encodings round-trip and count their bytes, and the PyTorch CPU fallbacks compute the
dense product: decode(encode(w)) == w exactly for every format a reproduction stores its weights in.
Needs no Triton (these are the paths a CPU run takes)."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close_to_dense(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """The fallback's product against ``x @ w.T`` in float64, within fp32 rounding of a dot product."""
    ref = x.double() @ w.double().T
    bound = 1e-5 * (x.double().abs() @ w.double().abs().T) + 1e-12
    assert y.shape == ref.shape
    assert bool(((y.double() - ref).abs() <= bound).all())


@pytest.mark.parametrize("bits", list(range(1, 17)))
def test_pack_codes_round_trip_and_size(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (5, 37), generator=_gen(bits))
    codes[0, :] = 2**bits - 1  # all ones: the sign bit of a word may be set
    packed = ak.pack_codes(codes, bits)
    cpw = 32 // bits
    assert packed.dtype == torch.int32 and packed.shape == (5, -(-37 // cpw))
    assert torch.equal(ak.unpack_codes(packed, bits, 37), codes)
    flat = codes.flatten()  # a 1-D stream (Deep Compression's) packs the same way
    assert torch.equal(ak.unpack_codes(ak.pack_codes(flat, bits), bits, flat.numel()), flat)


def test_pack_codes_refuses_codes_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        ak.pack_codes(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match="bits"):
        ak.pack_codes(torch.tensor([1]), 17)


def test_binary_encoding_round_trips_and_counts_bytes() -> None:
    signs = torch.where(torch.randn(7, 70, generator=_gen(1)) >= 0, 1.0, -1.0)
    q = ak.encode_binary(signs)
    assert torch.equal(q.dequantize(), signs)
    # 70 signs -> 3 int32 words per row; two fp32 decode constants for the whole tensor
    assert q.storage_bytes() == 7 * 3 * 4 + 2 * 4
    alpha = torch.rand(7, generator=_gen(2))
    assert torch.equal(ak.encode_binary(signs, alpha).dequantize(), signs * alpha[:, None])
    with pytest.raises(ValueError, match=r"\+1 and -1"):
        ak.encode_binary(torch.zeros(2, 3))


def test_ternary_encoding_round_trips_and_counts_bytes() -> None:
    w = torch.randn(9, 50, generator=_gen(3))
    t = torch.sign(w) * (w.abs() > 0.7)
    q = ak.encode_ternary(t, 0.37)
    assert torch.equal(q.dequantize(), 0.37 * t)
    assert sorted(q.codes().unique().tolist()) == [0, 1, 2]
    assert q.storage_bytes() == 9 * 4 * 4 + 2 * 4  # 50 codes -> 4 words a row; alpha and zero point
    wp, wn = torch.rand(9, generator=_gen(4)), torch.rand(9, generator=_gen(5))
    ttq = ak.encode_ternary(t, wp, wn)
    assert torch.equal(ttq.dequantize(), torch.where(t > 0, wp[:, None], torch.where(t < 0, -wn[:, None], 0.0)))
    with pytest.raises(ValueError, match="scale"):
        ak.encode_ternary(t, torch.ones(4))
    with pytest.raises(ValueError, match="-1, 0 and \\+1"):
        ak.encode_ternary(2 * t, 1.0)


@pytest.mark.parametrize("bits,dim,groups", [(6, 1, 1), (3, 2, 3), (4, 4, 1)])
def test_codebook_encoding_round_trips(bits: int, dim: int, groups: int) -> None:
    n, k = 6, 30
    j = -(-k // dim)
    bpg = -(-j // groups)
    cb = torch.randn(-(-j // bpg), 2**bits, dim, generator=_gen(bits))
    idx = torch.randint(0, 2**bits, (n, j), generator=_gen(dim))
    q = ak.encode_codebook(idx, cb, k=k, bpg=bpg)
    assert torch.equal(q.indices(), idx)
    expected = torch.stack([cb[jj // bpg, idx[:, jj]] for jj in range(j)], dim=1).reshape(n, -1)[:, :k]
    assert torch.equal(q.dequantize(), expected)
    assert q.storage_bytes() == q.packed.numel() * 4 + cb.numel() * 4


def test_codebook_encoding_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="indices must lie"):
        ak.encode_codebook(torch.tensor([[0, 4]]), torch.zeros(4))
    with pytest.raises(ValueError, match="cannot index"):
        ak.encode_codebook(torch.tensor([[0, 3]]), torch.zeros(5), bits=2)


def test_csr_round_trips_and_counts_bytes() -> None:
    w = torch.randn(40, 33, generator=_gen(6)) * (torch.rand(40, 33, generator=_gen(7)) < 0.1)
    w[3] = 0  # an empty row
    q = ak.to_csr(w)
    nnz = int((w != 0).sum())
    assert torch.equal(q.to_dense(), w)
    assert q.storage_bytes() == 4 * 41 + 4 * nnz + 4 * nnz


def test_eie_round_trips() -> None:
    codes = torch.randint(1, 16, (70, 20), generator=_gen(8)) * (torch.rand(70, 20, generator=_gen(9)) < 0.1)
    codebook = torch.cat([torch.zeros(1), torch.randn(15, generator=_gen(10))])
    q = ak.to_eie(codes, codebook)
    assert torch.equal(q.to_dense(), codebook[codes])
    with pytest.raises(ValueError, match="entry 0"):
        ak.to_eie(codes, torch.ones(16))


@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_fallbacks_compute_the_dense_product(batch: int) -> None:
    w = torch.randn(30, 45, generator=_gen(11))
    x = torch.randn(batch, 45, generator=_gen(12))
    sparse = w * (torch.rand(30, 45, generator=_gen(13)) < 0.2)
    csr = ak.to_csr(sparse)
    _close_to_dense(ak.sparse_matmul(x, csr), x, sparse)
    assert ak.sparse_matmul(x[0], csr).shape == (30,)
    t = ak.encode_ternary(torch.sign(w) * (w.abs() > 0.7), 0.5)
    _close_to_dense(ak.lowbit_matmul(x, t), x, t.dequantize())
    b = ak.encode_binary(torch.where(w >= 0, 1.0, -1.0))
    _close_to_dense(ak.lowbit_matmul(x, b), x, b.dequantize())
    c = ak.encode_codebook(torch.randint(0, 64, (30, 45), generator=_gen(14)), torch.randn(64, generator=_gen(15)))
    _close_to_dense(ak.codebook_matmul(x, c), x, c.dequantize())
    out = torch.full((batch, 30), float("nan"))
    assert ak.sparse_matmul(x, csr, out=out) is out and not out.isnan().any()
