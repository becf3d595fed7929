"""Triton kernel for int8 x int8 -> int32 GEMM with per-channel scales. Imported lazily."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def int8_gemm_kernel(
    a_ptr, b_ptr, sa_ptr, sb_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_bn, stride_cm,
    SCALED: tl.constexpr, HAS_BIAS: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """acc[m, n] = sum_k A[m, k] * B[n, k] (exact int32). SCALED: C = acc * sa[m] * sb[n] (+ bias[n])."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    om = pid_m * BM + tl.arange(0, BM)
    on = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in range(0, K, BK):
        ok = k0 + tl.arange(0, BK)
        a = tl.load(a_ptr + om[:, None] * stride_am + ok[None, :], mask=(om[:, None] < M) & (ok[None, :] < K), other=0)
        b = tl.load(b_ptr + on[:, None] * stride_bn + ok[None, :], mask=(on[:, None] < N) & (ok[None, :] < K), other=0)
        acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.int32)
    cmask = (om[:, None] < M) & (on[None, :] < N)
    cptr = c_ptr + om[:, None] * stride_cm + on[None, :]
    if SCALED:
        sa = tl.load(sa_ptr + om, mask=om < M, other=0.0)
        sb = tl.load(sb_ptr + on, mask=on < N, other=0.0)
        y = acc.to(tl.float32) * sa[:, None] * sb[None, :]
        if HAS_BIAS:
            bias = tl.load(bias_ptr + on, mask=on < N, other=0.0)
            y = y + bias[None, :]
        tl.store(cptr, y, mask=cmask)
    else:
        tl.store(cptr, acc, mask=cmask)
