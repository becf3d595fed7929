"""Triton kernels for the binary (±1) GEMM. Imported lazily by :mod:`atlas_kernels.binary`."""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def popcount32(x):
    """Shift-and-mask (SWAR) popcount of int32 lanes; works in the interpreter, unlike libdevice.popc."""
    u = x.to(tl.uint32, bitcast=True)
    u = u - ((u >> 1) & 0x55555555)
    u = (u & 0x33333333) + ((u >> 2) & 0x33333333)
    u = (u + (u >> 4)) & 0x0F0F0F0F
    u = u + (u >> 8)
    u = u + (u >> 16)
    return (u & 0x3F).to(tl.int32)


@triton.jit
def binary_xnor_kernel(
    a_ptr, b_ptr, alpha_ptr, beta_ptr, c_ptr,
    M, N, KW, K,
    stride_am, stride_bn, stride_cm,
    HAS_BETA: tl.constexpr, HW_POPC: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BKW: tl.constexpr,
):
    """C[m, n] = (K - 2 * popcount(A[m] xor B[n])) * alpha[n] (* beta[m]); A, B packed 32 signs per int32."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    om = pid_m * BM + tl.arange(0, BM)
    on = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for kw0 in range(0, KW, BKW):
        ok = kw0 + tl.arange(0, BKW)
        a = tl.load(a_ptr + om[:, None] * stride_am + ok[None, :], mask=(om[:, None] < M) & (ok[None, :] < KW), other=0)
        b = tl.load(b_ptr + on[:, None] * stride_bn + ok[None, :], mask=(on[:, None] < N) & (ok[None, :] < KW), other=0)
        x = a[:, None, :] ^ b[None, :, :]
        if HW_POPC:  # noqa: SIM108 (constexpr branch: only one side is compiled)
            cnt = libdevice.popc(x)
        else:
            cnt = popcount32(x)
        acc += tl.sum(cnt, axis=2)
    dot = K - 2 * acc
    alpha = tl.load(alpha_ptr + on, mask=on < N, other=0.0)
    y = dot.to(tl.float32) * alpha[None, :]
    if HAS_BETA:
        beta = tl.load(beta_ptr + om, mask=om < M, other=0.0)
        y = y * beta[:, None]
    tl.store(c_ptr + om[:, None] * stride_cm + on[None, :], y, mask=(om[:, None] < M) & (on[None, :] < N))


@triton.jit
def binary_mma_kernel(
    a_ptr, b_ptr, alpha_ptr, beta_ptr, c_ptr,
    M, N, KW, K,
    stride_am, stride_bn, stride_cm,
    HAS_BETA: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BKW: tl.constexpr,
):
    """Same product, but the packed words are expanded to ±1 int8 in registers and fed to tl.dot (int8
    tensor cores, int32 accumulate). Padding bits are 0 (= -1) on both sides, so they add +1 each and are
    subtracted at the end."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    om = pid_m * BM + tl.arange(0, BM)
    on = pid_n * BN + tl.arange(0, BN)
    sh = tl.arange(0, 32)
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for kw0 in range(0, KW, BKW):
        ok = kw0 + tl.arange(0, BKW)
        a = tl.load(a_ptr + om[:, None] * stride_am + ok[None, :], mask=(om[:, None] < M) & (ok[None, :] < KW), other=0)
        b = tl.load(b_ptr + on[:, None] * stride_bn + ok[None, :], mask=(on[:, None] < N) & (ok[None, :] < KW), other=0)
        abits = (a[:, :, None] >> sh[None, None, :]) & 1
        bbits = (b[:, :, None] >> sh[None, None, :]) & 1
        av = tl.reshape((2 * abits - 1).to(tl.int8), (BM, BKW * 32))
        bv = tl.reshape((2 * bbits - 1).to(tl.int8), (BN, BKW * 32))
        acc = tl.dot(av, tl.trans(bv), acc, out_dtype=tl.int32)
    total = tl.cdiv(KW, BKW) * BKW * 32
    dot = acc + (K - total)
    alpha = tl.load(alpha_ptr + on, mask=on < N, other=0.0)
    y = dot.to(tl.float32) * alpha[None, :]
    if HAS_BETA:
        beta = tl.load(beta_ptr + om, mask=om < M, other=0.0)
        y = y * beta[:, None]
    tl.store(c_ptr + om[:, None] * stride_cm + on[None, :], y, mask=(om[:, None] < M) & (on[None, :] < N))
