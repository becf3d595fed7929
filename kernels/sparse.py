"""Sparse matrix-vector / matrix-matrix products for pruned weights.

Serves magnitude pruning (Han, Pool, Tran & Dally 2015 "Learning both weights and connections"; Deep
Compression 2016: ``reproductions/han2015.py`` and ``han2016.py`` prune with their own rule and store
and run their pruned layers as :class:`CSRWeight`), structured / block pruning, and EIE (Han et al.
2016, "EIE: Efficient Inference Engine on Compressed Deep Neural Network"), whose compressed-column
format is reproduced here.

Formats (weight ``W [N, K]``, ``Y = X @ W.T``):
* CSR (:class:`CSRWeight`): ``rowptr`` int32 ``[N+1]``, ``col`` int32 ``[nnz]``, ``val`` ``[nnz]``
  (fp32 or fp16). ``storage_bytes = 4(N+1) + 4 nnz + sizeof(val) nnz``.
* Blocked (:class:`BlockSparseWeight`, BSR): the weight is tiled into ``[BR, BC]`` blocks (powers of two,
  >= 16 for the Triton path, since they feed tl.dot); blocks with any nonzero are kept densely.
  ``block_rowptr`` int32 ``[ceil(N/BR)+1]``, ``block_col`` int32 ``[nb]``, ``blocks`` ``[nb, BR, BC]``.
  ``storage_bytes = 4(ceil(N/BR)+1) + 4 nb + sizeof(val) nb BR BC``.
* EIE compressed columns (:class:`EIEWeight`): per input column ``k`` the nonzeros in row order, one
  byte each: low nibble ``v`` = 4-bit index into a 16-entry shared codebook (``codebook[0] = 0`` is
  reserved), high nibble ``z`` = number of zero rows skipped since the previous entry; a gap of more
  than 15 zeros inserts a padding entry ``(z=15, v=0)``. ``colptr`` int32 ``[K+1]`` (EIE stores it per
  PE; one flat array here). ``storage_bytes = E + 4(K+1) + 64`` with ``E = nnz + padding entries``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from ._backend import Backend, cdiv, interpreting, next_pow2, resolve_backend, triton_module
from ._common import PackedTensor, float_matmul_operands, prepare_out

__all__ = [
    "BlockSparseWeight",
    "CSRWeight",
    "EIEWeight",
    "sparse_matmul",
    "sparse_matmul_reference",
    "to_bsr",
    "to_csr",
    "to_eie",
]


@dataclass
class CSRWeight(PackedTensor):
    rowptr: torch.Tensor  # int32 [N+1]
    col: torch.Tensor  # int32 [nnz]
    val: torch.Tensor  # float [nnz]
    shape: tuple[int, int]

    def to_dense(self) -> torch.Tensor:
        n, k = self.shape
        counts = (self.rowptr[1:] - self.rowptr[:-1]).long()
        rows = torch.repeat_interleave(torch.arange(n, device=self.col.device), counts)
        d = torch.zeros(n, k, dtype=torch.float32, device=self.col.device)
        d[rows, self.col.long()] = self.val.float()
        return d

    def to_torch(self) -> torch.Tensor:
        """The same matrix as a ``torch.sparse_csr_tensor`` (int64 indices)."""
        return torch.sparse_csr_tensor(self.rowptr.long(), self.col.long(), self.val, self.shape)

    @functools.cached_property
    def _torch_fp32(self) -> torch.Tensor:
        """A ``torch.sparse_csr_tensor`` over the same index arrays (no copy; fp32 values), built once:
        the CPU fallback's operand. Not a dataclass field, so not counted in ``storage_bytes()``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(self.rowptr, self.col, self.val.float(), self.shape)


@dataclass
class BlockSparseWeight(PackedTensor):
    block_rowptr: torch.Tensor  # int32 [ceil(N/BR)+1]
    block_col: torch.Tensor  # int32 [nb]
    blocks: torch.Tensor  # float [nb, BR, BC]
    block: tuple[int, int]
    shape: tuple[int, int]

    def to_dense(self) -> torch.Tensor:
        n, k = self.shape
        br, bc = self.block
        nbr = self.block_rowptr.numel() - 1
        d = torch.zeros(nbr * br, cdiv(k, bc) * bc, dtype=torch.float32, device=self.blocks.device)
        counts = (self.block_rowptr[1:] - self.block_rowptr[:-1]).long()
        brow = torch.repeat_interleave(torch.arange(nbr, device=d.device), counts)
        for i in range(self.block_col.numel()):
            r, c = int(brow[i]), int(self.block_col[i])
            d[r * br:(r + 1) * br, c * bc:(c + 1) * bc] = self.blocks[i].float()
        return d[:n, :k]


@dataclass
class EIEWeight(PackedTensor):
    colptr: torch.Tensor  # int32 [K+1]
    entries: torch.Tensor  # uint8 [E]: (z << 4) | v
    codebook: torch.Tensor  # float32 [16], codebook[0] == 0
    shape: tuple[int, int]

    def to_dense(self) -> torch.Tensor:
        n, k = self.shape
        dev = self.entries.device
        ent = self.entries.to(torch.int64)
        counts = (self.colptr[1:] - self.colptr[:-1]).long()
        cols = torch.repeat_interleave(torch.arange(k, device=dev), counts)
        cs = torch.cumsum((ent >> 4) + 1, 0)
        before = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), cs])[self.colptr[:-1].long()]
        rows = cs - before[cols] - 1  # prefix sum of (z + 1) restarted at each column
        code = ent & 15
        d = torch.zeros(n, k, dtype=torch.float32, device=dev)
        keep = code != 0
        d[rows[keep], cols[keep]] = self.codebook.float()[code[keep]]
        return d


def to_csr(w: torch.Tensor, val_dtype: torch.dtype | None = None) -> CSRWeight:
    """Dense (pruned) ``[N, K]`` -> :class:`CSRWeight` keeping the exact nonzeros."""
    if w.dim() != 2:
        raise ValueError("weight must be [N, K]")
    n, k = w.shape
    nz = w != 0
    rows, cols = nz.nonzero(as_tuple=True)
    rowptr = torch.zeros(n + 1, dtype=torch.int64, device=w.device)
    rowptr[1:] = torch.cumsum(nz.sum(dim=1), 0)
    vals = w[rows, cols].to(val_dtype or w.dtype)
    return CSRWeight(rowptr.to(torch.int32), cols.to(torch.int32).contiguous(), vals.contiguous(), (n, k))


def to_bsr(w: torch.Tensor, block: tuple[int, int] = (16, 16), val_dtype: torch.dtype | None = None) -> BlockSparseWeight:
    """Dense ``[N, K]`` -> :class:`BlockSparseWeight` keeping every ``block`` tile with a nonzero."""
    br, bc = block
    if br < 1 or bc < 1 or br & (br - 1) or bc & (bc - 1):
        raise ValueError("block dims must be powers of two")
    n, k = w.shape
    nbr, nbc = cdiv(n, br), cdiv(k, bc)
    wp = torch.nn.functional.pad(w, (0, nbc * bc - k, 0, nbr * br - n))
    tiles = wp.reshape(nbr, br, nbc, bc).permute(0, 2, 1, 3)  # [nbr, nbc, br, bc]
    keep = (tiles != 0).flatten(2).any(dim=2)
    brow, bcol = keep.nonzero(as_tuple=True)
    rowptr = torch.zeros(nbr + 1, dtype=torch.int64, device=w.device)
    rowptr[1:] = torch.cumsum(keep.sum(dim=1), 0)
    blocks = tiles[brow, bcol].to(val_dtype or w.dtype).contiguous()
    return BlockSparseWeight(rowptr.to(torch.int32), bcol.to(torch.int32).contiguous(), blocks, (br, bc), (n, k))


def to_eie(codes: torch.Tensor, codebook: torch.Tensor) -> EIEWeight:
    """A pruned, weight-shared ``[N, K]`` layer -> EIE compressed columns (4-bit weights, 4-bit gaps).

    ``codes`` are 4-bit indices into the 16-entry ``codebook`` with ``codebook[0] == 0`` reserved for
    pruned weights (and padding entries); the clustering that chose the codebook (Deep Compression's
    k-means) is the caller's."""
    if codes.dim() != 2:
        raise ValueError("codes must be [N, K]")
    cb = codebook.detach().float().reshape(-1).cpu()
    if cb.numel() != 16 or float(cb[0]) != 0.0:
        raise ValueError("the EIE codebook has 16 entries, entry 0 being 0 (pruned)")
    c = codes.detach().to(torch.int64).cpu()
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > 15):
        raise ValueError("EIE codes must lie in [0, 16)")
    n, k = c.shape
    # nonzeros in column-major order; gap = zero rows since the previous nonzero of the column
    cols, rows = (c.T != 0).nonzero(as_tuple=True)
    code = c[rows, cols]
    prev = torch.cat([torch.tensor([-1]), rows[:-1]])
    first = torch.ones_like(cols, dtype=torch.bool)
    first[1:] = cols[1:] != cols[:-1]
    prev = torch.where(first, torch.full_like(prev, -1), prev)
    gap = rows - prev - 1
    npad = gap // 16  # each padding entry (z=15, v=0) advances 16 rows
    z = gap - 16 * npad
    cnt = npad + 1
    ents = torch.full((int(cnt.sum()),), 15 << 4, dtype=torch.int64)
    ents[torch.cumsum(cnt, 0) - 1] = (z << 4) | code
    colptr = torch.zeros(k + 1, dtype=torch.int64)
    colptr[1:] = torch.cumsum(torch.zeros(k, dtype=torch.int64).index_add_(0, cols, cnt), 0)
    return EIEWeight(
        colptr.to(torch.int32).to(codes.device),
        ents.to(torch.uint8).to(codes.device),
        cb.to(codes.device),
        (n, k),
    )


SparseWeight = CSRWeight | BlockSparseWeight | EIEWeight


def sparse_matmul_reference(x: torch.Tensor, w: SparseWeight) -> torch.Tensor:
    """PyTorch reference, in fp32, cast to ``x.dtype``: a CSR weight runs torch's sparse CSR product
    over its own index arrays (a real sparse computation: the CPU fallback); the blocked and EIE
    formats are densified first."""
    if isinstance(w, CSRWeight):
        return (w._torch_fp32 @ x.float().T).T.contiguous().to(x.dtype)
    return (x.float() @ w.to_dense().to(x.device).T).to(x.dtype)


def sparse_matmul(
    x: torch.Tensor, w: SparseWeight, *, backend: Backend = "auto", out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = X @ W.T`` for a sparse ``W`` (CSR, blocked or EIE); ``x`` is ``[K]`` or ``[..., K]`` float.

    SpMV when ``x`` is a vector, SpMM otherwise."""
    x2, n, k, out_shape = float_matmul_operands(x, w.shape)
    m = x2.shape[0]
    dev = x.device
    tensors = [t for t in vars(w).values() if isinstance(t, torch.Tensor)]
    if resolve_backend(backend, x, *tensors) == "reference":
        y = sparse_matmul_reference(x2, w).reshape(out_shape)
        return y if out is None else prepare_out(out, out_shape, x.dtype, dev).copy_(y)
    res = prepare_out(out, out_shape, x.dtype, dev)
    if m == 0 or n == 0:
        return res
    tk = triton_module("sparse")
    xc = x2.contiguous()
    y = res.view(m, n)
    interp = interpreting()
    if isinstance(w, CSRWeight):
        bm = min(64, next_pow2(m)) if interp else min(16, next_pow2(m))
        tk.csr_kernel[(n, cdiv(m, bm))](
            xc, w.rowptr, w.col, w.val, y, m, xc.stride(0), y.stride(0), BM=bm, BNZ=128 if interp else 64,
        )
    elif isinstance(w, BlockSparseWeight):
        br, bc = w.block
        if br < 16 or bc < 16:
            raise ValueError("the Triton BSR kernel needs blocks of at least 16x16 (tl.dot)")
        bm = min(64, max(16, next_pow2(m))) if interp else (16 if m <= 16 else 64)
        tk.bsr_kernel[(w.block_rowptr.numel() - 1, cdiv(m, bm))](
            xc, w.block_rowptr, w.block_col, w.blocks, y, m, n, k, xc.stride(0), y.stride(0),
            X_F32=x.dtype == torch.float32, BR=br, BC=bc, BM=bm,
        )
    elif isinstance(w, EIEWeight):
        acc = torch.zeros(m, n, dtype=torch.float32, device=dev)  # atomics accumulate into zeros
        bm = min(64, next_pow2(m)) if interp else min(16, next_pow2(m))
        tk.eie_kernel[(k, cdiv(m, bm))](
            xc, w.colptr, w.entries, w.codebook.float().contiguous(), acc, m, xc.stride(0), acc.stride(0),
            BM=bm, BE=64,
        )
        y.copy_(acc)
    else:
        raise TypeError(f"unsupported sparse weight {type(w).__name__}")
    return res
