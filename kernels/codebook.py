"""Codebook GEMM: weights stored as small indices into a per-layer codebook, looked up in the kernel.

Serves Deep Compression's weight sharing (Han, Mao & Dally 2016: k-means on each layer, ``bits``-bit
indices into ``2^bits`` shared scalars), vector quantization / product quantization of weights (Gong,
Liu, Yang & Bourdev 2014: sub-vectors of ``dim`` weights share a codeword; PQ uses a separate codebook
per group of sub-vectors) and HashedNets (Chen et al. 2015: a hash picks the shared bucket; here the
hash is evaluated at encode time and its indices are stored, see :func:`hashednets_weight`).

Format: a weight ``[N, K]`` is cut along K into ``J = ceil(K / dim)`` sub-vectors per row; sub-vector
``j`` of row ``n`` is ``codebook[j // bpg, idx[n, j], :]`` (``codebook`` is ``[G, C, dim]``, ``bpg``
sub-vectors per group, ``G = ceil(J / bpg)``; scalar sharing is ``dim = 1, G = 1``). The indices are
packed along J with ``bits`` per index exactly like the low-bit codes (``32 // bits`` per int32 word).

``storage_bytes()`` = ``4*N*ceil(J / (32 // bits))`` (indices) + ``G*C*dim*sizeof(codebook dtype)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._backend import Backend, cdiv, resolve_backend, triton_module
from ._common import PackedTensor, as_2d, pack_codes, prepare_out, unpack_codes
from .lowbit import _FLOAT_ACTS, _gemm_tiles

__all__ = [
    "CodebookWeight",
    "codebook_matmul",
    "codebook_matmul_reference",
    "hashednets_weight",
    "kmeans_codebook",
]


@dataclass
class CodebookWeight(PackedTensor):
    """Packed codebook indices ``[N, J]`` plus the codebook ``[G, C, dim]``."""

    packed: torch.Tensor  # int32 [N, ceil(J / (32 // bits))]
    codebook: torch.Tensor  # float32/float16 [G, C, dim]
    bits: int
    dim: int
    bpg: int  # sub-vectors per codebook group
    shape: tuple[int, int]

    def indices(self) -> torch.Tensor:
        n, k = self.shape
        return unpack_codes(self.packed, self.bits, cdiv(k, self.dim))

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        idx = self.indices()  # [N, J]
        j = torch.arange(idx.shape[1], device=idx.device)
        g = (j // self.bpg)[None, :].expand_as(idx)
        vec = self.codebook.float()[g, idx]  # [N, J, dim]
        return vec.reshape(n, -1)[:, :k]


def _kmeans(points: torch.Tensor, c: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd k-means; linear initialisation for scalars (Deep Compression), random points otherwise."""
    p, d = points.shape
    if d == 1:
        lo, hi = points.min(), points.max()
        cent = torch.linspace(float(lo), float(hi), c).reshape(c, 1)
    else:
        cent = points[torch.randperm(p, generator=gen)[:c]].clone()
        if cent.shape[0] < c:
            cent = torch.cat([cent, torch.zeros(c - cent.shape[0], d)])
    assign = torch.zeros(p, dtype=torch.int64)
    for _ in range(iters):
        assign = torch.cdist(points, cent).argmin(dim=1)
        sums = torch.zeros_like(cent).index_add_(0, assign, points)
        cnt = torch.bincount(assign, minlength=c).to(points.dtype)[:, None]
        cent = torch.where(cnt > 0, sums / cnt.clamp(min=1), cent)
    assign = torch.cdist(points, cent).argmin(dim=1)
    return cent, assign


def kmeans_codebook(
    w: torch.Tensor, bits: int, dim: int = 1, groups: int = 1, iters: int = 15, seed: int = 0,
    codebook_dtype: torch.dtype = torch.float32,
) -> CodebookWeight:
    """Weight sharing by k-means with ``2^bits`` codewords of ``dim`` weights, one codebook per each of
    ``groups`` consecutive ranges of sub-vectors along K (``groups > 1`` = product quantization)."""
    if w.dim() != 2:
        raise ValueError("weight must be [N, K]")
    if not 1 <= bits <= 16:
        raise ValueError("bits must be in 1..16")
    wf = w.detach().float().cpu()
    n, k = wf.shape
    j_count = cdiv(k, dim)
    wpad = torch.nn.functional.pad(wf, (0, j_count * dim - k))
    vecs = wpad.reshape(n, j_count, dim)
    bpg = cdiv(j_count, max(1, groups))
    g_count = cdiv(j_count, bpg)
    c = 1 << bits
    gen = torch.Generator().manual_seed(seed)
    cbs = torch.zeros(g_count, c, dim)
    idx = torch.zeros(n, j_count, dtype=torch.int64)
    for g in range(g_count):
        sl = slice(g * bpg, min(j_count, (g + 1) * bpg))
        pts = vecs[:, sl, :].reshape(-1, dim)
        cent, assign = _kmeans(pts, c, iters, gen)
        cbs[g] = cent
        idx[:, sl] = assign.reshape(n, -1)
    return CodebookWeight(
        pack_codes(idx, bits).to(w.device), cbs.to(codebook_dtype).to(w.device).contiguous(),
        bits, dim, bpg, (n, k),
    )


def hashednets_weight(n: int, k: int, buckets: torch.Tensor, seed: int = 0) -> CodebookWeight:
    """HashedNets' virtual weight ``V[n, k] = xi(n, k) * buckets[h(n, k)]`` as a codebook weight.

    ``h`` and the sign hash ``xi`` are a multiplicative hash of ``(seed, n, k)``; the sign is folded into
    a doubled codebook ``[buckets, -buckets]``. Note: HashedNets itself stores only the buckets; this
    encoding also stores the (recomputable) indices, and ``storage_bytes()`` counts them honestly."""
    b = buckets.numel()
    bits = max(1, (2 * b - 1).bit_length())
    lin = torch.arange(n * k, dtype=torch.int64) + seed * 0x9E3779B1
    h = (lin * 2654435761) % (2**32)
    h = (h ^ (h >> 15)) * 2246822519 % (2**32)
    bucket = (h >> 1) % b
    sign = h & 1
    idx = (bucket + sign * b).reshape(n, k)
    cb = torch.cat([buckets.float().reshape(-1), -buckets.float().reshape(-1)]).reshape(1, 2 * b, 1)
    return CodebookWeight(pack_codes(idx, bits).to(buckets.device), cb.to(buckets.device), bits, 1, cdiv(k, 1), (n, k))


def codebook_matmul_reference(x: torch.Tensor, w: CodebookWeight) -> torch.Tensor:
    """PyTorch reference: materialise the shared weights in fp32, ``x.float() @ W.T``, cast to x.dtype."""
    return (x.float() @ w.dequantize().T).to(x.dtype)


def codebook_matmul(
    x: torch.Tensor, w: CodebookWeight, *, backend: Backend = "auto", out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = X @ W.T`` with ``W`` given by codebook indices; ``x`` is ``[K]`` or ``[..., K]`` float."""
    if x.dtype not in _FLOAT_ACTS:
        raise TypeError(f"activations must be one of {_FLOAT_ACTS}")
    n, k = w.shape
    x2, vec = as_2d(x, k)
    m = x2.shape[0]
    out_shape = (n,) if vec else (*x.shape[:-1], n)
    res = prepare_out(out, out_shape, x.dtype, w.packed.device)
    if resolve_backend(backend, x, w.packed, w.codebook) == "reference":
        res.copy_(codebook_matmul_reference(x2, w).reshape(out_shape))
        return res
    if m == 0 or n == 0:
        return res
    tk = triton_module("lowbit")
    xc = x2.contiguous()
    p = w.packed.contiguous()
    cb = w.codebook.contiguous()
    y = res.view(m, n)
    bm, bn, bk = _gemm_tiles(m, n, k)
    grid = (cdiv(m, bm), cdiv(n, bn))
    tk.codebook_gemm_kernel[grid](
        xc, p, cb, y, m, n, k, p.shape[1], cb.shape[1], w.bpg, xc.stride(0), p.stride(0), y.stride(0),
        BITS=w.bits, D=w.dim, X_F32=x.dtype == torch.float32, BM=bm, BN=bn, BK=bk,
    )
    return res
