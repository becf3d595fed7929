"""Low-bit weight GEMM / GEMV: packed 2-bit, 4-bit, k-bit and power-of-two codes, unpacked on the fly.

Serves
* ternary weights: TWN (Li, Zhang & Liu 2016, symmetric ``{-a, 0, +a}``) and TTQ (Zhu, Han, Mao & Dally
  2017, asymmetric ``{-Wn, 0, +Wp}``), stored as 2-bit codes;
* k-bit uniform weights: DoReFa-Net (Zhou et al. 2016) and generic min/max affine 2-8 bit quantization
  (4-bit is the common case);
* power-of-two weights: INQ (Zhou, Yao, Guo, Xu & Chen 2017), ``{0, ±2^n2, ..., ±2^n1}``.
Activations stay fp32 / fp16 / bf16; the output has the activation dtype.

Format: codes ``[N, K]`` (``0 <= code < 2**bits``) packed along K into int32 words, ``cpw = 32 // bits``
codes per word; code ``k`` sits at bits ``[(k % cpw)*bits, (k % cpw + 1)*bits)`` of word ``k // cpw``
(for 3/5/6/7 bits the top ``32 - cpw*bits`` bits of a word are unused). Decoding:
* ``scheme="affine"``: ``w = (code - zero[n]) * scale[n]`` (``scale_neg[n]`` instead of ``scale[n]`` for
  codes below ``zero`` when ``scale_neg`` is set: TTQ). Ternary: ``bits=2, zero=1``, codes 0/1/2.
* ``scheme="pow2"``: top bit = sign, low ``bits-1`` bits = ``e``; ``w = 0`` if ``e == 0`` else
  ``(-1)^sign * 2^(1-e) * scale[n]`` (``scale[n] = 2^n2``, the largest level).

``storage_bytes()`` = ``4*N*ceil(K/cpw)`` (packed codes) + ``4*N`` per fp32 per-channel vector present
(``scale``, plus ``zero`` for affine, plus ``scale_neg`` for TTQ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._backend import Backend, cdiv, interpreting, next_pow2, resolve_backend, triton_module
from ._common import PackedTensor, as_2d, pack_codes, prepare_out, unpack_codes

__all__ = [
    "LowBitWeight",
    "lowbit_matmul",
    "lowbit_matmul_reference",
    "quantize_pow2",
    "quantize_ternary",
    "quantize_uniform",
]

_FLOAT_ACTS = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class LowBitWeight(PackedTensor):
    """Packed ``bits``-bit codes of a ``[N, K]`` weight plus per-output-channel decode parameters."""

    packed: torch.Tensor  # int32 [N, ceil(K / (32 // bits))]
    scale: torch.Tensor  # float32 [N]
    zero: torch.Tensor | None  # float32 [N] (affine) or None (pow2)
    scale_neg: torch.Tensor | None  # float32 [N] (TTQ) or None
    bits: int
    scheme: str  # "affine" | "pow2"
    shape: tuple[int, int]

    def codes(self) -> torch.Tensor:
        return unpack_codes(self.packed, self.bits, self.shape[1])

    def dequantize(self) -> torch.Tensor:
        """Dense fp32 ``[N, K]`` weight the kernel computes with (the reference uses this)."""
        c = self.codes()
        s = self.scale.float()[:, None]
        if self.scheme == "affine":
            assert self.zero is not None
            q = c.to(torch.float32) - self.zero.float()[:, None]
            if self.scale_neg is not None:
                return q * torch.where(q >= 0, s, self.scale_neg.float()[:, None])
            return q * s
        e = c & ((1 << (self.bits - 1)) - 1)
        neg = (c >> (self.bits - 1)) != 0
        mag = torch.ldexp(torch.ones(e.shape, device=e.device), (1 - e).to(torch.int32)) * s
        return torch.where(e == 0, torch.zeros_like(mag), torch.where(neg, -mag, mag))


def _check_w(w: torch.Tensor) -> None:
    if w.dim() != 2:
        raise ValueError("weight must be [N, K]")


def quantize_ternary(
    w: torch.Tensor, method: str = "twn", delta_factor: float = 0.7,
    wp: torch.Tensor | None = None, wn: torch.Tensor | None = None,
) -> LowBitWeight:
    """Ternary weights as 2-bit codes (0 -> negative, 1 -> zero, 2 -> positive).

    TWN: per-channel threshold ``delta = delta_factor * mean|W|`` and ``alpha = mean |W|`` over the
    weights above it. TTQ: separate positive / negative scales ``wp``, ``wn`` ([N] tensors, the trained
    factors; if None they are initialised as the mean of the positive / |negative| weights above the
    threshold, as in TTQ's initialisation)."""
    _check_w(w)
    wf = w.float()
    n, k = wf.shape
    delta = delta_factor * wf.abs().mean(dim=1, keepdim=True)
    pos = wf > delta
    neg = wf < -delta
    codes = torch.ones_like(wf, dtype=torch.int64)
    codes[pos] = 2
    codes[neg] = 0

    def _mean(mask: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        cnt = mask.sum(dim=1)
        return torch.where(cnt > 0, (vals * mask).sum(dim=1) / cnt.clamp(min=1), torch.zeros(n))

    zero = torch.ones(n)
    if method == "twn":
        alpha = _mean(pos | neg, wf.abs())
        return LowBitWeight(pack_codes(codes, 2), alpha.contiguous(), zero, None, 2, "affine", (n, k))
    if method == "ttq":
        wp_t = _mean(pos, wf) if wp is None else wp.float().reshape(-1).expand(n)
        wn_t = _mean(neg, -wf) if wn is None else wn.float().reshape(-1).expand(n)
        return LowBitWeight(pack_codes(codes, 2), wp_t.contiguous(), zero, wn_t.contiguous(), 2, "affine", (n, k))
    raise ValueError("method must be 'twn' or 'ttq'")


def quantize_uniform(w: torch.Tensor, bits: int, method: str = "minmax") -> LowBitWeight:
    """k-bit uniform weights (``bits`` in 1..8).

    ``"minmax"``: per-channel affine grid over ``[min W[n], max W[n]]`` (``zero`` need not be an
    integer). ``"dorefa"``: DoReFa-Net's ``w_q = 2 * quantize_k(tanh(W) / (2 max|tanh W|) + 1/2) - 1``
    (per layer), i.e. ``scale = 2 / (2^k - 1)``, ``zero = (2^k - 1) / 2``."""
    _check_w(w)
    if not 1 <= bits <= 8:
        raise ValueError("bits must be in 1..8")
    wf = w.float()
    n, k = wf.shape
    levels = (1 << bits) - 1
    if method == "minmax":
        lo = wf.amin(dim=1).clamp(max=0)
        hi = wf.amax(dim=1).clamp(min=0)
        scale = (hi - lo) / levels
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = -lo / scale
        codes = torch.round(wf / scale[:, None] + zero[:, None]).clamp_(0, levels).to(torch.int64)
    elif method == "dorefa":
        t = torch.tanh(wf)
        t = t / (2 * t.abs().max().clamp(min=1e-12)) + 0.5
        codes = torch.round(t * levels).clamp_(0, levels).to(torch.int64)
        scale = torch.full((n,), 2.0 / levels)
        zero = torch.full((n,), levels / 2.0)
    else:
        raise ValueError("method must be 'minmax' or 'dorefa'")
    return LowBitWeight(pack_codes(codes, bits), scale.contiguous(), zero.contiguous(), None, bits, "affine", (n, k))


def quantize_pow2(w: torch.Tensor, bits: int = 5) -> LowBitWeight:
    """INQ power-of-two weights: per channel ``n2 = floor(log2(4 s / 3))`` with ``s = max|W[n]|``,
    levels ``2^n2 ... 2^(n2 - L + 1)`` with ``L = 2^(bits-1) - 1``; ``|w|`` in ``[3/4 * 2^e, 3/2 * 2^e)``
    goes to ``2^e``, below half the smallest level to 0 (INQ's rule; the partition schedule is training)."""
    _check_w(w)
    if not 2 <= bits <= 8:
        raise ValueError("bits must be in 2..8")
    wf = w.float()
    n, k = wf.shape
    nlev = (1 << (bits - 1)) - 1
    s = wf.abs().amax(dim=1).clamp(min=1e-30)
    n2 = torch.floor(torch.log2(4 * s / 3))
    a = wf.abs()
    e_lvl = torch.floor(torch.log2((a * 4 / 3).clamp(min=1e-38)))
    e_lvl = torch.minimum(e_lvl, n2[:, None])
    idx = (n2[:, None] - e_lvl + 1)  # 1 .. : 1 is the largest level
    zero_mask = (idx > nlev) | (a == 0)
    idx = torch.where(zero_mask, torch.zeros_like(idx), idx).to(torch.int64)
    sign = (wf < 0).to(torch.int64) & (~zero_mask).to(torch.int64)
    codes = (sign << (bits - 1)) | idx
    scale = torch.pow(2.0, n2)
    return LowBitWeight(pack_codes(codes, bits), scale.contiguous(), None, None, bits, "pow2", (n, k))


def lowbit_matmul_reference(x: torch.Tensor, w: LowBitWeight) -> torch.Tensor:
    """PyTorch reference: dequantize to fp32, ``x.float() @ W.T`` in fp32, cast to ``x.dtype``."""
    return (x.float() @ w.dequantize().T).to(x.dtype)


def _gemm_tiles(m: int, n: int, k: int) -> tuple[int, int, int]:
    if interpreting():
        return min(64, max(16, next_pow2(m))), min(128, max(16, next_pow2(n))), min(128, max(16, next_pow2(k)))
    if m <= 16:  # GEMV-like: stream the weight with wide K tiles
        return 16, 64, 128
    return (64 if m <= 64 else 128), 128, 32


def lowbit_matmul(
    x: torch.Tensor, w: LowBitWeight, *, backend: Backend = "auto", out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = X @ W.T`` for a packed low-bit ``W [N, K]``; ``x`` is ``[K]`` or ``[..., K]`` fp32/fp16/bf16."""
    if x.dtype not in _FLOAT_ACTS:
        raise TypeError(f"activations must be one of {_FLOAT_ACTS}")
    n, k = w.shape
    x2, vec = as_2d(x, k)
    m = x2.shape[0]
    out_shape = (n,) if vec else (*x.shape[:-1], n)
    res = prepare_out(out, out_shape, x.dtype, w.packed.device)
    if resolve_backend(backend, x, w.packed) == "reference":
        res.copy_(lowbit_matmul_reference(x2, w).reshape(out_shape))
        return res
    if m == 0 or n == 0:
        return res
    tk = triton_module("lowbit")
    xc = x2.contiguous()
    p = w.packed.contiguous()
    scale = w.scale.float().contiguous()
    zero = w.zero.float().contiguous() if w.zero is not None else scale
    sneg = w.scale_neg.float().contiguous() if w.scale_neg is not None else scale
    y = res.view(m, n)
    bm, bn, bk = _gemm_tiles(m, n, k)
    grid = (cdiv(m, bm), cdiv(n, bn))
    tk.lowbit_gemm_kernel[grid](
        xc, p, scale, zero, sneg, y, m, n, k, p.shape[1], xc.stride(0), p.stride(0), y.stride(0),
        BITS=w.bits, SCHEME=0 if w.scheme == "affine" else 1, ASYM=w.scale_neg is not None,
        X_F32=x.dtype == torch.float32, BM=bm, BN=bn, BK=bk,
    )
    return res


def bits_needed(levels: int) -> int:
    """Smallest code width holding ``levels`` distinct codes."""
    return max(1, math.ceil(math.log2(max(2, levels))))
