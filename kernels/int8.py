"""int8 x int8 -> int32 GEMM with per-channel scales (fixed-point inference).

Serves Vanhoucke, Senior & Mao 2011 ("Improving the speed of neural networks on CPUs": 8-bit linear
quantization of weights and activations, integer accumulation) and Lin, Talathi & Annapureddy 2016
("Fixed point quantization of deep convolutional networks"), and any symmetric per-channel int8 scheme.

Format: ``q`` int8 ``[N, K]`` row-major (one row per output channel), ``scale`` fp32 ``[N]`` with
``W ~ q * scale[:, None]``; activations int8 ``[M, K]`` with a per-row (or per-tensor, broadcast) fp32
scale. ``Y = (Xq @ Wq.T)_int32 * x_scale[m] * w_scale[n] (+ bias[n])``; with ``out_dtype=torch.int32``
the raw exact int32 accumulator is returned.

``storage_bytes()`` of an :class:`Int8Weight` = ``N*K`` + ``4*N``.

Backends: Triton on CUDA; on a CPU, PyTorch's own integer GEMM (``torch._int_mm``, exact int32
accumulation on the CPU's integer SIMD units), so that timings of the fallback measure int8
arithmetic, not an emulation of it. :func:`int8_matmul_reference` (int64 products) is the
independent reference the tests compare both against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._backend import Backend, cdiv, interpreting, next_pow2, resolve_backend, triton_module
from ._common import PackedTensor, as_2d, prepare_out

__all__ = [
    "Int8Weight",
    "int8_matmul",
    "int8_matmul_reference",
    "quantize_int8_activation",
    "quantize_int8_weight",
]


@dataclass
class Int8Weight(PackedTensor):
    """Symmetric per-output-channel int8 weight."""

    q: torch.Tensor  # int8 [N, K]
    scale: torch.Tensor  # float32 [N]
    shape: tuple[int, int]

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]


def quantize_int8_weight(w: torch.Tensor) -> Int8Weight:
    """Per-output-channel symmetric quantization: ``scale = max|W[n]| / 127``, ``q in [-127, 127]``."""
    if w.dim() != 2:
        raise ValueError("weight must be [N, K]")
    amax = w.abs().float().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w.float() / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(q.contiguous(), scale.contiguous(), (w.shape[0], w.shape[1]))


def quantize_int8_activation(x: torch.Tensor, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 activations: returns ``(q [M, K] int8, scale [M] fp32)`` (per-tensor if not per_row)."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k).float()
    amax = x2.abs().amax(dim=1) if per_row else x2.abs().amax().expand(x2.shape[0])
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(x2 / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def _row_scale(x_scale: torch.Tensor | float | None, m: int, device: torch.device) -> torch.Tensor:
    if x_scale is None:
        return torch.ones(m, device=device)
    s = torch.as_tensor(x_scale, dtype=torch.float32, device=device).reshape(-1)
    return (s.expand(m) if s.numel() == 1 else s).contiguous()


def int8_matmul_reference(
    xq: torch.Tensor, w: Int8Weight, x_scale: torch.Tensor | None = None, bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """PyTorch reference on ``[M, K]`` int8 input: exact int64 accumulation, then the fp32 scaling."""
    acc = (xq.to(torch.int64) @ w.q.to(torch.int64).T).to(torch.int32)
    if out_dtype == torch.int32:
        return acc
    sa = _row_scale(x_scale, xq.shape[0], xq.device)
    y = acc.to(torch.float32) * sa[:, None] * w.scale.float()[None, :]
    if bias is not None:
        y = y + bias.float()[None, :]
    return y


def _int8_gemm_cpu(
    xq: torch.Tensor, w: Int8Weight, x_scale: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype,
) -> torch.Tensor:
    """The CPU path: ``torch._int_mm`` (int8 x int8 -> exact int32), then the fp32 scaling."""
    acc = torch._int_mm(xq.contiguous(), w.q.t())
    if out_dtype == torch.int32:
        return acc
    y = acc.to(torch.float32) * x_scale[:, None] * w.scale.float()[None, :]
    return y + bias.float()[None, :] if bias is not None else y


def int8_matmul(
    xq: torch.Tensor,
    w: Int8Weight,
    x_scale: torch.Tensor | float | None = None,
    *,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    backend: Backend = "auto",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = Xq @ Wq.T`` (int32) scaled by ``x_scale[m] * w.scale[n]`` (+ bias) -> fp32, or raw int32.

    ``xq`` is int8 ``[K]`` or ``[..., K]``; ``x_scale`` a scalar, ``[M]`` tensor or None (= 1).
    """
    if xq.dtype != torch.int8:
        raise TypeError("xq must be int8 (see quantize_int8_activation)")
    if out_dtype not in (torch.float32, torch.int32):
        raise ValueError("out_dtype must be torch.float32 or torch.int32")
    n, k = w.shape
    x2, vec = as_2d(xq, k)
    m = x2.shape[0]
    out_shape = (n,) if vec else (*xq.shape[:-1], n)
    res = prepare_out(out, out_shape, out_dtype, w.q.device)
    be = resolve_backend(backend, xq, w.q)
    sa = _row_scale(x_scale, m, xq.device)
    if be == "reference":
        gemm = _int8_gemm_cpu if xq.device.type == "cpu" and m > 0 and n > 0 else int8_matmul_reference
        res.copy_(gemm(x2, w, sa, bias, out_dtype).reshape(out_shape))
        return res
    if m == 0 or n == 0:
        return res
    tk = triton_module("int8")
    a = x2.contiguous()
    b = w.q.contiguous()
    sb = w.scale.float().contiguous()
    bias_t = bias.float().contiguous() if bias is not None else sb
    if interpreting():
        bm, bn, bk = min(64, max(16, next_pow2(m))), 128, 128
    else:
        bm, bn, bk = (16 if m <= 16 else 128), (64 if m <= 16 else 128), (256 if m <= 16 else 64)
    c = res.view(m, n)
    grid = (cdiv(m, bm), cdiv(n, bn))
    tk.int8_gemm_kernel[grid](
        a, b, sa, sb, bias_t, c, m, n, k, a.stride(0), b.stride(0), c.stride(0),
        SCALED=out_dtype == torch.float32, HAS_BIAS=bias is not None, BM=bm, BN=bn, BK=bk,
    )
    return res
