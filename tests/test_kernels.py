"""Triton kernels vs their PyTorch references (Triton interpreter on CPU unless ATLAS_KERNELS_TEST_CUDA=1).

Integer kernels must match exactly. Float kernels are checked elementwise against the bound
``|y - ref| <= tol * (|X| @ |W|.T)`` (the natural scale of a dot product's rounding error) with
``tol = 1e-5`` for fp32 activations and ``tol = 2e-3`` for fp16 activations (weights are rounded to fp16
before the tensor-core product: 2^-11 relative, plus the fp16 rounding of the output). Every output
buffer is poisoned first (NaN, or INT32_MIN for int32) so an unwritten element fails.
"""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_kernels import _backend
from kernels_env import DEVICE  # sets TRITON_INTERPRET=1 (before any kernel is defined: they are lazy)

pytestmark = pytest.mark.skipif(
    not ak.triton_available(), reason=f"triton not importable: {ak.triton_unavailable_reason()}"
)

INT_SENTINEL = torch.iinfo(torch.int32).min
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}

# (M, N, K): 1x1x1, GEMV, sizes not multiples of tiles or of 32 bits, several tiles in M/N/K.
SHAPES = [(1, 1, 1), (1, 37, 33), (3, 64, 64), (17, 130, 257)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _poisoned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
    return torch.full(shape, INT_SENTINEL, dtype=dtype, device=DEVICE)


def _with_edge_rows(w: torch.Tensor) -> torch.Tensor:
    w = w.clone()
    w[0] = 0  # an all-zero output channel
    return w


def _assert_close(y: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, wdense: torch.Tensor) -> None:
    assert not torch.isnan(y).any(), "unwritten (NaN-poisoned) output elements"
    scale = x.float().abs().reshape(-1, x.shape[-1]) @ wdense.float().abs().T
    err = (y.float().reshape(scale.shape) - ref.float().reshape(scale.shape)).abs()
    tol = TOL[x.dtype]
    bad = err > tol * scale + 1e-30
    assert not bad.any(), f"max err/scale {(err / (scale + 1e-30)).max().item():.3e} > {tol}"


# ----------------------------------------------------------------------------------------- binary


@pytest.mark.parametrize("m,n,k", SHAPES + [(33, 70, 300)])
@pytest.mark.parametrize("algorithm", ["xnor", "mma"])
@pytest.mark.parametrize("with_beta", [False, True])
def test_binary_exact(m: int, n: int, k: int, algorithm: str, with_beta: bool) -> None:
    x = _randn(m, k, seed=m * 7 + k)
    w = _with_edge_rows(_randn(n, k, seed=n * 11 + k))
    if m > 1:
        x[-1] = 0.0  # sign(0) = +1: a row of all +1
    xa = ak.binarize_activation(x.to(DEVICE), scale=with_beta)
    wb = ak.binarize_weight(w.to(DEVICE))
    ref = ak.binary_matmul_reference(xa, wb)
    # independent check of the reference against a dense ±1 product
    sx = torch.where(x >= 0, 1.0, -1.0).double()
    sw = torch.where(w >= 0, 1.0, -1.0).double()
    dense = (sx @ sw.T).float() * wb.alpha.cpu()[None, :]
    if with_beta:
        dense = dense * xa.beta.cpu()[:, None]
    assert torch.equal(ref.cpu(), dense)
    out = _poisoned((m, n), torch.float32)
    y = ak.binary_matmul(xa, wb, backend="triton", algorithm=algorithm, out=out)
    assert y is out
    assert torch.equal(y, ref)


def test_binary_float_input_and_vector() -> None:
    k, n = 70, 45
    w = ak.binarize_weight(_randn(n, k, seed=1).to(DEVICE), scale=False)
    x = _randn(k, seed=2).to(DEVICE)
    y = ak.binary_matmul(x, w, backend="triton")
    assert y.shape == (n,)
    assert torch.equal(y, ak.binary_matmul(x, w, backend="reference"))
    xb = _randn(2, 3, k, seed=3).to(DEVICE)
    assert ak.binary_matmul(xb, w, backend="triton").shape == (2, 3, n)


def test_binary_pack_roundtrip_and_storage() -> None:
    x = torch.where(_randn(5, 65, seed=4) >= 0, 1.0, -1.0)
    bits = ak.pack_signs(x)
    assert bits.shape == (5, 3) and bits.dtype == torch.int32
    assert torch.equal(ak.unpack_signs(bits, 65), x)
    # bit k%32 of word k//32, 1 = +1
    v = torch.full((1, 32), -1.0)
    v[0, 31] = 1.0
    assert ak.pack_signs(v).item() == -(2**31)
    w = ak.binarize_weight(_randn(10, 65, seed=5))
    assert w.storage_bytes() == 4 * 10 * 3 + 4 * 10


# ----------------------------------------------------------------------------------------- int8


@pytest.mark.parametrize("m,n,k", SHAPES + [(33, 170, 300)])
def test_int8_exact(m: int, n: int, k: int) -> None:
    g = _gen(m + n + k)
    xq = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    wq = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    wq[0] = 0
    if m > 2:
        xq[1] = 0
    if k >= 32:  # extremes: accumulator far beyond int16
        xq[0], wq[-1] = -128, -128
    w = ak.Int8Weight(wq.to(DEVICE), (torch.rand(n, generator=g) + 0.01).to(DEVICE), (n, k))
    sx = (torch.rand(m, generator=g) + 0.01).to(DEVICE)
    xq = xq.to(DEVICE)
    exact = (xq.cpu().long() @ wq.long().T).to(torch.int32)
    y32 = ak.int8_matmul(xq, w, backend="triton", out_dtype=torch.int32, out=_poisoned((m, n), torch.int32))
    assert torch.equal(y32.cpu(), exact)
    assert torch.equal(ak.int8_matmul_reference(xq, w, out_dtype=torch.int32).cpu(), exact)
    bias = torch.randn(n, generator=g).to(DEVICE)
    yf = ak.int8_matmul(xq, w, sx, bias=bias, backend="triton", out=_poisoned((m, n), torch.float32))
    ref = ak.int8_matmul_reference(xq, w, sx, bias)
    assert not torch.isnan(yf).any()
    torch.testing.assert_close(yf, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 31, 64, 65, 200])
def test_pack_signs_cpu_path_is_pack_codes_of_the_signs(k: int) -> None:
    from atlas_kernels._common import pack_codes

    x = _randn(2, 5, k, seed=k)
    x[0, 0, 0] = 0.0  # 0 -> +1
    assert torch.equal(ak.pack_signs(x), pack_codes((x >= 0).to(torch.int64), 1))


def test_binary_cpu_fallback_is_xnor_popcount_and_exact() -> None:
    """On CPU tensors binary_matmul runs XNOR + popcount on the packed words (several row blocks here);
    it must equal the unpacked reference exactly (scales applied the same way)."""
    a, b = _randn(9, 100, seed=21), _randn(7, 100, seed=22)
    dots = ak.xnor_popcount_cpu(ak.pack_signs(a), ak.pack_signs(b), 100, block=64)
    assert torch.equal(dots, (torch.where(a >= 0, 1, -1) @ torch.where(b >= 0, 1, -1).T).to(torch.int32))
    x, w = ak.binarize_activation(a, scale=True), ak.binarize_weight(b)
    torch.testing.assert_close(ak.binary_matmul(x, w, backend="reference"), ak.binary_matmul_reference(x, w),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("m,n,k", [(1, 300, 784), (33, 170, 300), (5, 3, 7)])
def test_int8_cpu_fallback_is_exact_int8_arithmetic(m: int, n: int, k: int) -> None:
    """On CPU tensors the fallback runs ``torch._int_mm``; it must equal the int64 reference exactly."""
    g = _gen(7 * m + n + k)
    xq = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    xq[0] = -128
    w = ak.Int8Weight(torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8).index_fill_(0, torch.tensor([n - 1]), -128),
                      torch.rand(n, generator=g) + 0.01, (n, k))
    sx, bias = torch.rand(m, generator=g) + 0.01, torch.randn(n, generator=g)
    exact = (xq.long() @ w.q.long().T).to(torch.int32)
    assert torch.equal(ak.int8_matmul(xq, w, backend="reference", out_dtype=torch.int32), exact)
    assert abs(int(exact.abs().max())) > 2**15  # beyond int16: the int32 accumulator is exercised
    torch.testing.assert_close(ak.int8_matmul(xq, w, sx, bias=bias, backend="reference"),
                               ak.int8_matmul_reference(xq, w, sx, bias), rtol=1e-6, atol=1e-6)


def test_int8_quantizers_and_storage() -> None:
    w = _randn(20, 50, seed=6)
    w[3] = 0
    q = ak.quantize_int8_weight(w)
    assert q.q.abs().max() <= 127 and q.storage_bytes() == 20 * 50 + 4 * 20
    assert (q.dequantize() - w).abs().max() <= q.scale.max() / 2 + 1e-6
    x = _randn(4, 50, seed=7)
    xq, sx = ak.quantize_int8_activation(x)
    y = ak.int8_matmul(xq.to(DEVICE), q.to(DEVICE), sx.to(DEVICE), backend="triton")
    assert (y.cpu() - x @ w.T).abs().max() < 0.1 * (x.abs() @ w.abs().T).max()


# ----------------------------------------------------------------------------------------- low-bit

def _ternary(w: torch.Tensor) -> torch.Tensor:
    """Some ternary weights (the threshold is irrelevant here: the kernels only encode and compute)."""
    return torch.sign(w) * (w.abs() > 0.5)


LOWBIT = {
    "binary": lambda w: ak.encode_binary(torch.where(w >= 0, 1.0, -1.0)),
    "binary_scaled": lambda w: ak.encode_binary(torch.where(w >= 0, 1.0, -1.0), w.abs().mean(dim=1)),
    "twn": lambda w: ak.encode_ternary(_ternary(w), 0.7),
    "ttq": lambda w: ak.encode_ternary(_ternary(w), w.abs().amax(dim=1), 0.3),
    "uniform4": lambda w: ak.quantize_uniform(w, 4),
    "uniform3": lambda w: ak.quantize_uniform(w, 3),
    "dorefa2": lambda w: ak.quantize_uniform(w, 2, "dorefa"),
    "dorefa8": lambda w: ak.quantize_uniform(w, 8, "dorefa"),
    "inq5": lambda w: ak.quantize_pow2(w, 5),
}


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("fmt", sorted(LOWBIT))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lowbit(m: int, n: int, k: int, fmt: str, dtype: torch.dtype) -> None:
    w = _with_edge_rows(_randn(n, k, seed=n + k))
    q = LOWBIT[fmt](w).to(DEVICE)
    x = _randn(m, k, seed=m + 3 * k).to(dtype).to(DEVICE)
    if m > 2:
        x[1] = 0
    ref = ak.lowbit_matmul_reference(x, q)
    y = ak.lowbit_matmul(x, q, backend="triton", out=_poisoned((m, n), dtype))
    _assert_close(y, ref, x, q.dequantize())


def test_lowbit_formats() -> None:
    w = _randn(6, 40, seed=8)
    t = ak.encode_ternary(_ternary(w), 0.25)
    assert set(t.codes().unique().tolist()) <= {0, 1, 2}
    assert torch.equal(t.dequantize(), 0.25 * _ternary(w))
    p = ak.quantize_pow2(w, 5)
    mags = p.dequantize().abs()
    nz = mags[mags > 0]
    assert torch.equal(torch.log2(nz), torch.round(torch.log2(nz)))  # exact powers of two
    assert (nz <= p.scale.max()).all()
    u = ak.quantize_uniform(w, 3)
    assert u.packed.shape == (6, 4)  # 10 three-bit codes per word
    assert u.storage_bytes() == 4 * 6 * 4 + 2 * 4 * 6
    ttq = ak.encode_ternary(_ternary(w), torch.rand(6, generator=_gen(1)), torch.rand(6, generator=_gen(2)))
    assert ttq.storage_bytes() == 4 * 6 * 3 + 2 * 4 * 6 + 4  # W_p and W_n per channel, one zero point
    codes = torch.randint(0, 8, (3, 21), generator=_gen(9))
    assert torch.equal(ak.unpack_codes(ak.pack_codes(codes, 3), 3, 21), codes)


# ----------------------------------------------------------------------------------------- codebook

def _codebook(w: torch.Tensor, bits: int, dim: int = 1, groups: int = 1,
              dtype: torch.dtype = torch.float32) -> ak.CodebookWeight:
    """Random indices into a random codebook of ``2^bits`` codewords of ``dim`` weights per group
    (the clustering that would choose them is a paper's, not the kernels')."""
    n, k = w.shape
    j = -(-k // dim)
    bpg = -(-j // groups)
    g = _gen(n * k + bits)
    cb = torch.randn(-(-j // bpg), 2**bits, dim, generator=g).to(dtype)
    return ak.encode_codebook(torch.randint(0, 2**bits, (n, j), generator=g), cb, k=k, bpg=bpg)


CODEBOOK = {
    "dc4": lambda w: _codebook(w, 4),
    "dc8_fp16": lambda w: _codebook(w, 8, dtype=torch.float16),
    "vq4x6": lambda w: _codebook(w, 6, dim=4),
    "pq3x5x4": lambda w: _codebook(w, 5, dim=3, groups=4),
    "hashed": lambda w: ak.hashednets_weight(w.shape[0], w.shape[1], torch.linspace(-1, 1, 12)),
}


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("fmt", sorted(CODEBOOK))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_codebook(m: int, n: int, k: int, fmt: str, dtype: torch.dtype) -> None:
    w = _randn(n, k, seed=2 * n + k)
    q = CODEBOOK[fmt](w).to(DEVICE)
    x = _randn(m, k, seed=m + 5 * k).to(dtype).to(DEVICE)
    ref = ak.codebook_matmul_reference(x, q)
    y = ak.codebook_matmul(x, q, backend="triton", out=_poisoned((m, n), dtype))
    _assert_close(y, ref, x, q.dequantize())


def test_codebook_format_and_storage() -> None:
    idx = torch.randint(0, 16, (8, 30), generator=_gen(10))
    table = torch.randn(16, generator=_gen(11))
    q = ak.encode_codebook(idx, table)
    assert q.packed.shape == (8, 4) and q.codebook.shape == (1, 16, 1) and q.bits == 4
    assert q.storage_bytes() == 4 * 8 * 4 + 16 * 4
    assert torch.equal(q.dequantize(), table[idx])
    pq = _codebook(_randn(8, 30, seed=12), 3, dim=2, groups=3)  # J = 15 sub-vectors, 5 per group
    assert pq.codebook.shape == (3, 8, 2) and pq.bpg == 5
    assert pq.storage_bytes() == 4 * 8 * 2 + 3 * 8 * 2 * 4


# ----------------------------------------------------------------------------------------- sparse


def _sparse_weight(n: int, k: int, sparsity: float, seed: int) -> torch.Tensor:
    w = _randn(n, k, seed=seed)
    w = w * (torch.rand(n, k, generator=_gen(seed + 1)) >= sparsity)
    w[0] = 0
    if n > 3:
        w[n // 2] = 0
    return w


SPARSE = {
    "csr": lambda w: ak.to_csr(w),
    "csr_fp16": lambda w: ak.to_csr(w, torch.float16),
    "bsr16": lambda w: ak.to_bsr(w, (16, 16)),
    "bsr32x16": lambda w: ak.to_bsr(w, (32, 16)),
}


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("fmt", sorted(SPARSE))
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sparse(m: int, n: int, k: int, fmt: str, sparsity: float, dtype: torch.dtype) -> None:
    w = _sparse_weight(n, k, sparsity, seed=n * k)
    q = SPARSE[fmt](w.to(DEVICE))
    if fmt in ("csr", "bsr16", "bsr32x16"):
        assert torch.equal(q.to_dense().cpu(), w)
    x = _randn(m, k, seed=m + k).to(dtype).to(DEVICE)
    ref = ak.sparse_matmul_reference(x, q)
    y = ak.sparse_matmul(x, q, backend="triton", out=_poisoned((m, n), dtype))
    _assert_close(y, ref, x, q.to_dense())


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 70, 33), (5, 50, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sparse_eie(m: int, n: int, k: int, dtype: torch.dtype) -> None:
    w = _sparse_weight(n, k, 0.9, seed=n + k)  # 90% sparse: gaps > 15 need padding entries
    codes = torch.where(w != 0, torch.randint(1, 16, w.shape, generator=_gen(n * k)), 0)
    codebook = torch.cat([torch.zeros(1), torch.randn(15, generator=_gen(k))])
    q = ak.to_eie(codes.to(DEVICE), codebook)
    assert torch.equal(q.to_dense().cpu(), codebook[codes])
    x = _randn(m, k, seed=m * k).to(dtype).to(DEVICE)
    x[..., ::3] = 0  # zero activations are skipped by the kernel
    ref = ak.sparse_matmul_reference(x, q)
    y = ak.sparse_matmul(x, q, backend="triton", out=_poisoned((m, n), dtype))
    _assert_close(y, ref, x, q.to_dense())


def test_sparse_all_zero_and_storage() -> None:
    n, k = 40, 37
    w = torch.zeros(n, k)
    x = _randn(3, k, seed=11).to(DEVICE)
    for q in (ak.to_csr(w), ak.to_bsr(w), ak.to_eie(torch.zeros(n, k, dtype=torch.long), torch.zeros(16))):
        y = ak.sparse_matmul(x, q.to(DEVICE), backend="triton", out=_poisoned((3, n), torch.float32))
        assert torch.equal(y.cpu(), torch.zeros(3, n))
    w = _sparse_weight(64, 100, 0.9, seed=12)
    nnz = int((w != 0).sum())
    assert ak.to_csr(w).storage_bytes() == 4 * 65 + 8 * nnz
    b = ak.to_bsr(w, (16, 16))
    nb = b.block_col.numel()
    assert b.storage_bytes() == 4 * 5 + 4 * nb + 4 * nb * 256
    e = ak.to_eie((w != 0).long() * 3, torch.linspace(0, 1, 16))
    assert e.storage_bytes() == e.entries.numel() + 4 * 101 + 64
    assert e.entries.numel() >= nnz
    gaps = e.entries.to(torch.int64) >> 4
    assert gaps.max() <= 15


# ----------------------------------------------------------------------------------------- dispatch


def test_dispatch_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    w = ak.quantize_int8_weight(_randn(7, 9, seed=13))
    xq = torch.ones(2, 9, dtype=torch.int8)
    assert _backend.resolve_backend("auto", xq, w.q) == ("triton" if xq.is_cuda else "reference")
    assert _backend.resolve_backend("reference", xq) == "reference"
    with pytest.raises(ValueError):
        ak.int8_matmul(xq, w, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ak.int8_matmul(xq, w, out=torch.empty(3, 7))
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError):
        _backend.resolve_backend("triton", xq)
