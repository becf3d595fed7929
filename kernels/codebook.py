"""Codebook GEMM: weights stored as small indices into a per-layer codebook, looked up in the kernel.

Serves Deep Compression's weight sharing (Han, Mao & Dally 2016: ``bits``-bit indices into ``2^bits``
shared scalars; ``reproductions/han2016.py`` clusters with its own k-means and encodes with
:func:`encode_codebook`), vector quantization / product quantization of weights (Gong, Liu, Yang &
Bourdev 2014: sub-vectors of ``dim`` weights share a codeword; PQ uses a separate codebook per group of
sub-vectors) and HashedNets (Chen et al. 2015: a hash picks the shared bucket; here the hash is
evaluated at encode time and its indices are stored, see :func:`hashednets_weight`).

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
from ._common import (
    PackedTensor,
    float_matmul_operands,
    pack_codes,
    prepare_out,
    unpack_codes,
    unpack_codes_int32,
)
from .lowbit import _gemm_tiles

__all__ = [
    "CodebookWeight",
    "codebook_matmul",
    "codebook_matmul_reference",
    "encode_codebook",
    "hashednets_weight",
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
        if self.codebook.shape[0] == 1 and self.dim == 1:  # scalar weight sharing: one 1-D lookup
            return self.codebook.float().reshape(-1)[unpack_codes_int32(self.packed, self.bits, k)]
        idx = self.indices()  # [N, J]
        j = torch.arange(idx.shape[1], device=idx.device)
        g = (j // self.bpg)[None, :].expand_as(idx)
        vec = self.codebook.float()[g, idx]  # [N, J, dim]
        return vec.reshape(n, -1)[:, :k]


def encode_codebook(indices: torch.Tensor, codebook: torch.Tensor, *, bits: int | None = None,
                    k: int | None = None, bpg: int | None = None) -> CodebookWeight:
    """Shared weights as stored: ``indices [N, J]`` into ``codebook``, packed at ``bits`` bits (default:
    the fewest that hold the codebook's ``C`` entries). ``codebook`` is ``[C]`` (scalar weight sharing,
    Deep Compression: ``W[n, k] = codebook[indices[n, k]]``) or ``[G, C, dim]`` (sub-vectors of ``dim``
    weights, ``bpg`` consecutive sub-vectors per group; ``k``: the in-features, default ``J * dim``).
    The clustering that chose the codebook is the paper's, not this package's."""
    if indices.dim() != 2:
        raise ValueError("indices must be [N, J]")
    cb = codebook.detach()
    if cb.dim() == 1:
        cb = cb.reshape(1, -1, 1)
    if cb.dim() != 3:
        raise ValueError("codebook must be [C] or [G, C, dim]")
    g_count, c, dim = cb.shape
    n, j_count = indices.shape
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= c):
        raise ValueError(f"indices must lie in [0, {c}) (the codebook's entries)")
    bits = bits if bits is not None else max(1, (c - 1).bit_length())
    if (1 << bits) < c:
        raise ValueError(f"{bits} bits cannot index {c} codebook entries")
    bpg = bpg if bpg is not None else cdiv(j_count, g_count)
    if cdiv(j_count, bpg) != g_count:
        raise ValueError(f"{j_count} sub-vectors in groups of {bpg} need {cdiv(j_count, bpg)} codebooks, got {g_count}")
    k = k if k is not None else j_count * dim
    if cdiv(k, dim) != j_count:
        raise ValueError(f"{k} in-features make {cdiv(k, dim)} sub-vectors of {dim}, not {j_count}")
    return CodebookWeight(pack_codes(indices, bits), cb.contiguous(), bits, dim, bpg, (n, k))


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
    x2, n, k, out_shape = float_matmul_operands(x, w.shape)
    m = x2.shape[0]
    if resolve_backend(backend, x, w.packed, w.codebook) == "reference":
        y = codebook_matmul_reference(x2, w).reshape(out_shape)
        return y if out is None else prepare_out(out, out_shape, x.dtype, w.packed.device).copy_(y)
    res = prepare_out(out, out_shape, x.dtype, w.packed.device)
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
