"""Low-bit weight GEMM / GEMV: packed 2-bit, 4-bit, k-bit and power-of-two codes, unpacked on the fly.

Serves
* binary weights with real-valued activations: BinaryConnect (Courbariaux, Bengio & David 2015), stored
  as 1-bit codes (:func:`encode_binary`; ``reproductions/courbariaux2015.py``);
* ternary weights: TWN (Li, Zhang & Liu 2016, symmetric ``{-a, 0, +a}``; ``reproductions/li2016.py``)
  and TTQ (Zhu, Han, Mao & Dally 2017, asymmetric ``{-Wn, 0, +Wp}``), stored as 2-bit codes
  (:func:`encode_ternary`: the encoding only; the threshold and scales are each paper's);
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

``scale``, ``zero`` and ``scale_neg`` hold one value per output channel (``[N]``) or one for the whole
tensor (``[1]``: TWN's per-layer ``alpha``, BinaryConnect's constant decode).

``storage_bytes()`` = ``4*N*ceil(K/cpw)`` (packed codes) + 4 bytes per value of each fp32 decode vector
present (``scale``, plus ``zero`` for affine, plus ``scale_neg`` for TTQ; ``N`` or 1 values each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._backend import Backend, cdiv, interpreting, next_pow2, resolve_backend, triton_module
from ._common import (
    PackedTensor,
    float_matmul_operands,
    pack_codes,
    prepare_out,
    unpack_codes,
    unpack_codes_int32,
)

__all__ = [
    "LowBitWeight",
    "encode_binary",
    "encode_ternary",
    "lowbit_matmul",
    "lowbit_matmul_reference",
    "quantize_pow2",
    "quantize_uniform",
]



@dataclass
class LowBitWeight(PackedTensor):
    """Packed ``bits``-bit codes of a ``[N, K]`` weight plus its decode parameters (per output channel
    or per tensor)."""

    packed: torch.Tensor  # int32 [N, ceil(K / (32 // bits))]
    scale: torch.Tensor  # float32 [N] or [1]
    zero: torch.Tensor | None  # float32 [N] or [1] (affine) or None (pow2)
    scale_neg: torch.Tensor | None  # float32 [N] or [1] (TTQ) or None
    bits: int
    scheme: str  # "affine" | "pow2"
    shape: tuple[int, int]

    def codes(self) -> torch.Tensor:
        return unpack_codes(self.packed, self.bits, self.shape[1])

    def dequantize(self) -> torch.Tensor:
        """Dense fp32 ``[N, K]`` weight the kernel computes with (the reference uses this)."""
        c = unpack_codes_int32(self.packed, self.bits, self.shape[1])
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


def _per_tensor_or_channel(v: torch.Tensor | float, n: int, name: str) -> torch.Tensor:
    t = (v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(v)).to(torch.float32).reshape(-1)
    if t.numel() not in (1, n):
        raise ValueError(f"{name} must be a scalar (per tensor) or have {n} values (per output channel), "
                         f"got {t.numel()}")
    return t.contiguous()


def encode_binary(signs: torch.Tensor, scale: torch.Tensor | float | None = None) -> LowBitWeight:
    """A ``±1`` weight ``[N, K]`` (times ``scale``: none, per tensor or per channel) as 1-bit codes
    (1 = +1, 0 = -1) for :func:`lowbit_matmul` with real-valued activations (BinaryConnect: the signs
    are the paper's, this is only their storage). Decodes as ``(code - 1/2) * 2 * scale``, exactly."""
    _check_w(signs)
    if not bool(((signs == 1) | (signs == -1)).all()):
        raise ValueError("encode_binary needs a tensor of +1 and -1 values")
    n, k = signs.shape
    s = 2.0 * _per_tensor_or_channel(1.0 if scale is None else scale, n, "scale")
    codes = (signs > 0).to(torch.int64)
    return LowBitWeight(pack_codes(codes, 1), s.to(signs.device), torch.full((1,), 0.5, device=signs.device),
                        None, 1, "affine", (n, k))


def encode_ternary(ternary: torch.Tensor, scale: torch.Tensor | float,
                   scale_neg: torch.Tensor | float | None = None) -> LowBitWeight:
    """A ternary weight ``W_t in {-1, 0, +1}`` ``[N, K]`` with its scale (TWN: one ``alpha`` per layer;
    per channel also allowed) as 2-bit codes ``W_t + 1`` (0 = negative, 1 = zero, 2 = positive);
    ``scale_neg`` scales the negative values (TTQ's ``W_n``). Decodes as ``(code - 1) * scale``
    (``scale_neg`` below zero), i.e. exactly ``scale * W_t``. The threshold and scales are the paper's."""
    _check_w(ternary)
    if not bool(((ternary == 1) | (ternary == 0) | (ternary == -1)).all()):
        raise ValueError("encode_ternary needs a tensor of -1, 0 and +1 values")
    n, k = ternary.shape
    dev = ternary.device
    codes = ternary.to(torch.int64) + 1
    neg = None if scale_neg is None else _per_tensor_or_channel(scale_neg, n, "scale_neg").to(dev)
    return LowBitWeight(pack_codes(codes, 2), _per_tensor_or_channel(scale, n, "scale").to(dev),
                        torch.ones(1, device=dev), neg, 2, "affine", (n, k))


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
    x2, n, k, out_shape = float_matmul_operands(x, w.shape)
    m = x2.shape[0]
    if resolve_backend(backend, x, w.packed) == "reference":
        y = lowbit_matmul_reference(x2, w).reshape(out_shape)
        return y if out is None else prepare_out(out, out_shape, x.dtype, w.packed.device).copy_(y)
    res = prepare_out(out, out_shape, x.dtype, w.packed.device)
    if m == 0 or n == 0:
        return res
    tk = triton_module("lowbit")
    xc = x2.contiguous()
    p = w.packed.contiguous()
    # per-tensor decode values (one number for the layer) are broadcast to one per output channel here
    scale = w.scale.float().expand(n).contiguous()
    zero = w.zero.float().expand(n).contiguous() if w.zero is not None else scale
    sneg = w.scale_neg.float().expand(n).contiguous() if w.scale_neg is not None else scale
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
