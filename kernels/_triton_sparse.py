"""Triton kernels for pruned (sparse) weights: CSR, block-sparse (BSR) and EIE compressed columns."""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_lowbit import _dot_acc


@triton.jit
def csr_kernel(
    x_ptr, rowptr_ptr, col_ptr, val_ptr, y_ptr,
    M, stride_xm, stride_ym,
    BM: tl.constexpr, BNZ: tl.constexpr,
):
    """Y[m, n] = sum_{i in row n} val[i] * X[m, col[i]]; one program per (weight row, M tile)."""
    n = tl.program_id(0)
    om = tl.program_id(1) * BM + tl.arange(0, BM)
    mmask = om < M
    start = tl.load(rowptr_ptr + n)
    end = tl.load(rowptr_ptr + n + 1)
    acc = tl.zeros((BM,), dtype=tl.float32)
    for i in range(start, end, BNZ):
        oi = i + tl.arange(0, BNZ)
        msk = oi < end
        c = tl.load(col_ptr + oi, mask=msk, other=0)
        v = tl.load(val_ptr + oi, mask=msk, other=0.0).to(tl.float32)
        xv = tl.load(x_ptr + om[:, None] * stride_xm + c[None, :], mask=mmask[:, None] & msk[None, :], other=0.0)
        acc += tl.sum(xv.to(tl.float32) * v[None, :], axis=1)
    tl.store(y_ptr + om * stride_ym + n, acc.to(y_ptr.dtype.element_ty), mask=mmask)


@triton.jit
def bsr_kernel(
    x_ptr, browptr_ptr, bcol_ptr, blocks_ptr, y_ptr,
    M, N, K, stride_xm, stride_ym,
    X_F32: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr,
):
    """Block-sparse: for each stored [BR, BC] block of block-row r, acc += X[:, cols] @ block.T (tl.dot)."""
    r = tl.program_id(0)
    om = tl.program_id(1) * BM + tl.arange(0, BM)
    mmask = om < M
    orr = tl.arange(0, BR)
    occ = tl.arange(0, BC)
    start = tl.load(browptr_ptr + r)
    end = tl.load(browptr_ptr + r + 1)
    acc = tl.zeros((BM, BR), dtype=tl.float32)
    for b in range(start, end):
        bc = tl.load(bcol_ptr + b)
        ok = bc * BC + occ
        xv = tl.load(x_ptr + om[:, None] * stride_xm + ok[None, :], mask=mmask[:, None] & (ok < K)[None, :], other=0.0)
        wb = tl.load(blocks_ptr + b * (BR * BC) + orr[:, None] * BC + occ[None, :])
        acc = _dot_acc(xv, wb, acc, X_F32)
    on = r * BR + orr
    tl.store(y_ptr + om[:, None] * stride_ym + on[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mmask[:, None] & (on < N)[None, :])


@triton.jit
def eie_kernel(
    x_ptr, colptr_ptr, ent_ptr, cb_ptr, y_ptr,
    M, stride_xm, stride_ym,
    BM: tl.constexpr, BE: tl.constexpr,
):
    """EIE column kernel: one program per input column k (and M tile). Skips the column when X[:, k] is
    all zero (EIE's activation sparsity); otherwise decodes the 4-bit relative row indices with a prefix
    sum, looks the 4-bit weight codes up in the 16-entry codebook and scatters X[m, k] * w into Y
    with atomic adds (Y must be zero-initialised)."""
    k = tl.program_id(0)
    om = tl.program_id(1) * BM + tl.arange(0, BM)
    mmask = om < M
    xk = tl.load(x_ptr + om * stride_xm + k, mask=mmask, other=0.0).to(tl.float32)
    if tl.max(tl.abs(xk), axis=0) != 0.0:
        start = tl.load(colptr_ptr + k)
        end = tl.load(colptr_ptr + k + 1)
        base = start * 0 - 1
        for i in range(start, end, BE):
            oi = i + tl.arange(0, BE)
            msk = oi < end
            e = tl.load(ent_ptr + oi, mask=msk, other=0).to(tl.int32)
            code = e & 15
            step = tl.where(msk, (e >> 4) + 1, 0)
            row = base + tl.cumsum(step, axis=0)
            base = base + tl.sum(step, axis=0)
            wv = tl.load(cb_ptr + code)
            contrib = xk[:, None] * wv[None, :]
            tl.atomic_add(y_ptr + om[:, None] * stride_ym + row[None, :], contrib,
                          mask=mmask[:, None] & (msk & (code != 0))[None, :])
