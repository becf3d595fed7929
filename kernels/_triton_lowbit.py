"""Triton kernels for packed low-bit weights and codebook weights. Imported lazily."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot_acc(x, w, acc, X_F32: tl.constexpr):
    """acc += x @ w.T; fp32 activations use exact (ieee) fp32 products, fp16/bf16 use tensor cores."""
    if X_F32:
        acc = tl.dot(x, tl.trans(w.to(tl.float32)), acc, input_precision="ieee")
    else:
        acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    return acc


@triton.jit
def lowbit_gemm_kernel(
    x_ptr, w_ptr, scale_ptr, zero_ptr, scale_neg_ptr, y_ptr,
    M, N, K, KW,
    stride_xm, stride_wn, stride_ym,
    BITS: tl.constexpr, SCHEME: tl.constexpr, ASYM: tl.constexpr, X_F32: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """Y[m, n] = sum_k X[m, k] * deq(code[n, k]); codes unpacked from int32 words on the fly.

    SCHEME 0 (affine):  w = (code - zero[n]) * (scale[n] if code >= zero[n] else scale_neg[n])
    SCHEME 1 (pow2):    code = sign<<(BITS-1) | e;  w = 0 if e == 0 else (-1)^sign * 2^(1-e) * scale[n]
    """
    CPW: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    om = pid_m * BM + tl.arange(0, BM)
    on = pid_n * BN + tl.arange(0, BN)
    nmask = on < N
    scale = tl.load(scale_ptr + on, mask=nmask, other=0.0)
    if SCHEME == 0:
        zero = tl.load(zero_ptr + on, mask=nmask, other=0.0)
        if ASYM:
            scale_neg = tl.load(scale_neg_ptr + on, mask=nmask, other=0.0)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ok = k0 + tl.arange(0, BK)
        kmask = ok < K
        x = tl.load(x_ptr + om[:, None] * stride_xm + ok[None, :], mask=(om[:, None] < M) & kmask[None, :], other=0.0)
        words = tl.load(w_ptr + on[:, None] * stride_wn + (ok // CPW)[None, :],
                        mask=nmask[:, None] & kmask[None, :], other=0)
        code = (words >> ((ok % CPW) * BITS)[None, :]) & MASK
        if SCHEME == 0:
            q = code.to(tl.float32) - zero[:, None]
            if ASYM:  # noqa: SIM108 (constexpr branch)
                w = q * tl.where(q >= 0, scale[:, None], scale_neg[:, None])
            else:
                w = q * scale[:, None]
        else:
            e = code & ((1 << (BITS - 1)) - 1)
            neg = (code >> (BITS - 1)) != 0
            # exact power of two 2^(1-e) built from its IEEE-754 exponent field
            p2 = ((128 - e) << 23).to(tl.float32, bitcast=True)
            mag = p2 * scale[:, None]
            w = tl.where(e == 0, 0.0, tl.where(neg, -mag, mag))
        w = tl.where(kmask[None, :], w, 0.0)
        acc = _dot_acc(x, w, acc, X_F32)
    tl.store(y_ptr + om[:, None] * stride_ym + on[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(om[:, None] < M) & nmask[None, :])


@triton.jit
def codebook_gemm_kernel(
    x_ptr, idx_ptr, cb_ptr, y_ptr,
    M, N, K, KW, C, BPG,
    stride_xm, stride_in, stride_ym,
    BITS: tl.constexpr, D: tl.constexpr, X_F32: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """Y[m, n] = sum_k X[m, k] * codebook[g, idx[n, j], k % D] with j = k // D, g = j // BPG.

    The ``BITS``-bit indices are unpacked from int32 words and looked up in the (L1/L2-resident)
    codebook ``[G, C, D]`` inside the kernel."""
    CPW: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    om = pid_m * BM + tl.arange(0, BM)
    on = pid_n * BN + tl.arange(0, BN)
    nmask = on < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ok = k0 + tl.arange(0, BK)
        kmask = ok < K
        x = tl.load(x_ptr + om[:, None] * stride_xm + ok[None, :], mask=(om[:, None] < M) & kmask[None, :], other=0.0)
        j = ok // D
        wmask = nmask[:, None] & kmask[None, :]
        words = tl.load(idx_ptr + on[:, None] * stride_in + (j // CPW)[None, :], mask=wmask, other=0)
        code = (words >> ((j % CPW) * BITS)[None, :]) & MASK
        g = j // BPG
        w = tl.load(cb_ptr + ((g[None, :] * C + code) * D + (ok % D)[None, :]), mask=wmask, other=0.0)
        acc = _dot_acc(x, w.to(tl.float32), acc, X_F32)
    tl.store(y_ptr + om[:, None] * stride_ym + on[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(om[:, None] < M) & nmask[None, :])
