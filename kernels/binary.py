"""Binary (±1) GEMM by XNOR + popcount.

Serves BinaryNet / BNN (Hubara, Courbariaux et al. 2016: binary weights *and* activations) and XNOR-Net
(Rastegari et al. 2016: binary weights and activations with a per-output-channel weight scale
``alpha = mean|W[n]|`` and an activation scale ``beta``). BinaryConnect (binary weights, real-valued
activations) runs on the low-bit GEMM with 1-bit codes instead (:func:`atlas_kernels.encode_binary`).

Format: a ±1 tensor ``[R, K]`` is packed along K into ``ceil(K/32)`` int32 words per row; element ``k`` is
bit ``k % 32`` of word ``k // 32`` (bit 1 = +1, bit 0 = -1, so ``x >= 0`` maps to +1). Padding bits are 0
on both operands, so the dot product of two packed rows is ``K - 2 * popcount(a xor b)`` (the padding
agrees and never counts). The result is ``Y[m, n] = (K - 2*popcount) * alpha[n] * beta[m]``.

``storage_bytes()`` of a :class:`BinaryWeight` = ``4*N*ceil(K/32)`` (bits) + ``4*N`` (fp32 alpha; none
when the weight has no scale, BNN).

Backends: Triton on CUDA (``algorithm`` ``"xnor"`` or ``"mma"``); on a CPU, XNOR + popcount on the
packed words themselves (:func:`xnor_popcount_cpu`: numpy's ``bitwise_xor`` and hardware
``bitwise_count`` over the words read as 64-bit, in row blocks), so that timings of the fallback
measure bitwise arithmetic. :func:`binary_matmul_reference` (unpacked ±1 products) is the independent
reference the tests compare both against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._backend import Backend, cdiv, interpreting, next_pow2, resolve_backend, triton_module
from ._common import PackedTensor, as_2d, pack_codes, prepare_out, unpack_codes

__all__ = [
    "BinaryActivation",
    "BinaryWeight",
    "binarize_activation",
    "binarize_weight",
    "binary_matmul",
    "binary_matmul_reference",
    "pack_signs",
    "unpack_signs",
    "xnor_popcount_cpu",
]


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Pack ``sign(x)`` (``x >= 0`` -> +1) along the last dim, 32 per int32 word (on a CPU by numpy's
    ``packbits``, little-endian bit order: the same words as ``pack_codes`` of the 0/1 signs)."""
    if x.device.type != "cpu" or x.dim() == 0:
        return pack_codes((x >= 0).to(torch.int64), 1)
    k = x.shape[-1]
    flat = (x.detach().reshape(-1, k) >= 0).numpy()
    b = np.packbits(flat, axis=1, bitorder="little")
    pad = -b.shape[1] % 4
    if pad:
        b = np.pad(b, ((0, 0), (0, pad)))
    words = torch.from_numpy(np.ascontiguousarray(b).view(np.int32).copy())
    return words.reshape(*x.shape[:-1], -1)


def _as_words64(bits: torch.Tensor) -> np.ndarray:
    """int32 sign words ``[R, W]`` read as uint64 words ``[R, ceil(W/2)]`` (zero padded: sign ``k`` stays
    bit ``k % 64`` of word ``k // 64``)."""
    b = bits.detach().cpu().contiguous()
    if b.shape[1] % 2:
        b = torch.nn.functional.pad(b, (0, 1))
    return b.numpy().view(np.uint64)


def xnor_popcount_cpu(a: torch.Tensor, b: torch.Tensor, k: int, block: int = 1 << 16) -> torch.Tensor:
    """Exact ±1 dot products ``K - 2 popcount(a XOR b)`` of every row pair of two packed sign matrices
    (int32 words ``[M, W]`` and ``[N, W]``, :func:`pack_signs`), int32 ``[M, N]``: numpy's XOR and
    hardware popcount over 64-bit words, in row blocks of about ``block`` words."""
    a64, b64 = _as_words64(a), _as_words64(b)
    m, n = a64.shape[0], b64.shape[0]
    out = np.empty((m, n), dtype=np.int32)
    rows = max(1, block // max(1, n * a64.shape[1]))
    for i in range(0, m, rows):
        out[i:i + rows] = np.bitwise_count(np.bitwise_xor(a64[i:i + rows, None, :], b64[None, :, :])).sum(
            -1, dtype=np.int32)
    return torch.from_numpy(k - 2 * out)


def unpack_signs(bits: torch.Tensor, k: int) -> torch.Tensor:
    """Packed words -> ±1 float32 tensor with last dim ``k``."""
    return unpack_codes(bits, 1, k).to(torch.float32) * 2 - 1


@dataclass
class BinaryWeight(PackedTensor):
    """Binarized weight ``W ~ alpha[n] * sign(W[n, k])`` of a linear layer ``[N, K]``."""

    bits: torch.Tensor  # int32 [N, ceil(K/32)]
    alpha: torch.Tensor | None  # float32 [N], or None (= 1: no scale stored)
    shape: tuple[int, int]

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        signs = unpack_signs(self.bits, k)
        return signs if self.alpha is None else signs * self.alpha[:, None].float()


@dataclass
class BinaryActivation(PackedTensor):
    """Binarized activations ``X ~ beta[m] * sign(X[m, k])`` (``beta`` None means 1, as in BNN)."""

    bits: torch.Tensor  # int32 [M, ceil(K/32)]
    beta: torch.Tensor | None  # float32 [M] or None
    shape: tuple[int, int]


def binarize_weight(w: torch.Tensor, scale: bool = True) -> BinaryWeight:
    """``sign(W)`` packed, with XNOR-Net's ``alpha[n] = mean_k |W[n, k]|`` (or none, BNN)."""
    if w.dim() != 2:
        raise ValueError("weight must be [N, K]")
    n, k = w.shape
    alpha = w.abs().float().mean(dim=1).contiguous() if scale else None
    return BinaryWeight(pack_signs(w), alpha, (n, k))


def binarize_activation(x: torch.Tensor, scale: bool = False) -> BinaryActivation:
    """``sign(X)`` packed per row; with ``scale=True`` XNOR-Net's ``beta[m] = mean_k |X[m, k]|``."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    beta = x2.abs().float().mean(dim=1).contiguous() if scale else None
    return BinaryActivation(pack_signs(x2), beta, (x2.shape[0], k))


def binary_matmul_reference(x: BinaryActivation, w: BinaryWeight) -> torch.Tensor:
    """PyTorch reference: exact integer ±1 dot products (via popcount identity), then the scales."""
    m, k = x.shape
    if k != w.shape[1]:
        raise ValueError("in-feature mismatch")
    a = unpack_signs(x.bits, k).to(torch.int32)
    b = unpack_signs(w.bits, k).to(torch.int32)
    dot = (a.double() @ b.double().T).to(torch.int32)  # exact: |dot| <= K < 2**53
    y = dot.to(torch.float32)
    if w.alpha is not None:
        y = y * w.alpha.float()[None, :]
    if x.beta is not None:
        y = y * x.beta.float()[:, None]
    return y


def _launch(x: BinaryActivation, w: BinaryWeight, out: torch.Tensor, algorithm: str) -> None:
    tk = triton_module("binary")
    m, k = x.shape
    n = w.shape[0]
    kw = w.bits.shape[1]
    a = x.bits.contiguous()
    b = w.bits.contiguous()
    alpha = w.alpha.float().contiguous() if w.alpha is not None else torch.ones(n, device=w.bits.device)
    beta = x.beta.float().contiguous() if x.beta is not None else alpha
    interp = interpreting()
    if algorithm == "xnor":
        if interp:
            bm, bn, bkw = min(64, max(16, next_pow2(m))), 64, min(16, next_pow2(kw))
        else:
            bm, bn, bkw = min(32, max(16, next_pow2(m))), 32, 4
        grid = (cdiv(m, bm), cdiv(n, bn))
        tk.binary_xnor_kernel[grid](
            a, b, alpha, beta, out, m, n, kw, k, a.stride(0), b.stride(0), out.stride(0),
            HAS_BETA=x.beta is not None, HW_POPC=not interp, BM=bm, BN=bn, BKW=bkw,
        )
    elif algorithm == "mma":
        if interp:
            bm, bn, bkw = min(64, max(16, next_pow2(m))), 64, 2
        else:
            bm, bn, bkw = (16 if m <= 16 else 128), 128, 4
        grid = (cdiv(m, bm), cdiv(n, bn))
        tk.binary_mma_kernel[grid](
            a, b, alpha, beta, out, m, n, kw, k, a.stride(0), b.stride(0), out.stride(0),
            HAS_BETA=x.beta is not None, BM=bm, BN=bn, BKW=bkw,
        )
    else:
        raise ValueError(f"algorithm must be 'xnor' or 'mma', got {algorithm!r}")


def binary_matmul(
    x: BinaryActivation | torch.Tensor,
    w: BinaryWeight,
    *,
    backend: Backend = "auto",
    algorithm: str = "xnor",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = binarize(X) @ binarize(W).T`` scaled by ``alpha[n]`` (and ``beta[m]``), float32 ``[M, N]``.

    ``x`` is a :class:`BinaryActivation` or a float tensor ``[K]`` / ``[..., K]`` (binarized here without
    a scale, BNN-style). ``algorithm="xnor"`` is XNOR + popcount on integer ALUs; ``"mma"`` expands the
    bits to ±1 int8 inside the kernel and uses int8 tensor cores (both exact).
    """
    vec = False
    lead: tuple[int, ...] = ()
    if isinstance(x, torch.Tensor):
        _, vec = as_2d(x, w.shape[1])
        lead = tuple(x.shape[:-1])
        x = binarize_activation(x)
    else:
        lead = (x.shape[0],)
    m, k = x.shape
    n = w.shape[0]
    if k != w.shape[1]:
        raise ValueError(f"in-feature mismatch: activation K={k}, weight K={w.shape[1]}")
    out_shape = (n,) if vec else (*lead, n)
    res = prepare_out(out, out_shape, torch.float32, w.bits.device)
    be = resolve_backend(backend, x.bits, w.bits)
    if be == "reference" and x.bits.device.type == "cpu" and m > 0 and n > 0:
        y = xnor_popcount_cpu(x.bits, w.bits, k).to(torch.float32)
        if w.alpha is not None:
            y = y * w.alpha.float()[None, :]
        if x.beta is not None:
            y = y * x.beta.float().reshape(-1, 1)
        res.copy_(y.reshape(out_shape))
    elif be == "reference":
        res.copy_(binary_matmul_reference(x, w).reshape(out_shape))
    elif m > 0 and n > 0:
        _launch(x, w, res.view(m, n), algorithm)
    return res
