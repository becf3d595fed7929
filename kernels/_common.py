"""Helpers shared by the kernel families: bit packing, storage accounting, shape handling."""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["PackedTensor", "as_2d", "pack_codes", "prepare_out", "unpack_codes", "unpack_codes_int32", "words_for"]


class PackedTensor:
    """Mixin for the dataclasses holding a compressed weight.

    ``storage_bytes()`` is what the representation really occupies: the sum of ``nbytes`` of every tensor
    field (packed words including their padding, scales, codebooks, index arrays). Python ints (shapes,
    bit widths) are metadata and not counted.
    """

    def storage_bytes(self) -> int:
        total = 0
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
        return total

    def dense_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the same weight stored densely as ``dtype`` (``shape`` must be ``(n, k)``)."""
        n, k = self.shape  # type: ignore[attr-defined]
        return n * k * torch.empty((), dtype=dtype).element_size()

    def bits_per_weight(self) -> float:
        n, k = self.shape  # type: ignore[attr-defined]
        return 8.0 * self.storage_bytes() / max(1, n * k)

    def to(self, device: torch.device | str):
        """Copy of this representation with every tensor moved to ``device``."""
        kw = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            kw[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return type(self)(**kw)


def words_for(k: int, bits: int) -> int:
    """Number of int32 words holding ``k`` codes of ``bits`` bits (``32 // bits`` codes per word)."""
    cpw = 32 // bits
    return -(-k // cpw)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes along the last dim into int32 words.

    ``codes[..., k]`` (``0 <= code < 2**bits``) goes to word ``k // cpw`` at bit offset ``(k % cpw) * bits``
    with ``cpw = 32 // bits`` codes per word (little-endian within the word; for 3, 5, 6, 7 bits the top
    ``32 - cpw*bits`` bits of each word stay 0). The last word is zero-padded.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    codes = codes.to(torch.int64)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= (1 << bits)):
        raise ValueError(f"codes out of range for {bits} bits")
    cpw = 32 // bits
    k = codes.shape[-1]
    kw = words_for(k, bits)
    pad = kw * cpw - k
    if pad:
        codes = torch.nn.functional.pad(codes, (0, pad))
    codes = codes.reshape(*codes.shape[:-1], kw, cpw)
    shifts = torch.arange(cpw, device=codes.device, dtype=torch.int64) * bits
    words = (codes << shifts).sum(dim=-1)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).contiguous()


def unpack_codes(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int32 words -> int64 codes, last dim ``k``."""
    return unpack_codes_int32(words, bits, k).to(torch.int64)


def unpack_codes_int32(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """:func:`unpack_codes` as int32 (the references' decode: int32 shifts are several times faster
    than int64 on a CPU). An arithmetic shift of a negative word only fills bits above the code's,
    which the mask clears, since a code never crosses bit 31."""
    cpw = 32 // bits
    shifts = torch.arange(cpw, device=words.device, dtype=torch.int32) * bits
    codes = (words.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*words.shape[:-1], -1)[..., :k]


#: The activation dtypes the float-activation kernels take.
FLOAT_ACTS = (torch.float32, torch.float16, torch.bfloat16)


def float_matmul_operands(x: torch.Tensor, weight_shape: tuple[int, int]
                          ) -> tuple[torch.Tensor, int, int, tuple[int, ...]]:
    """Float activations ``x`` (``[K]`` or ``[..., K]``) against a weight of ``weight_shape`` ``[N, K]``:
    ``x`` as ``[M, K]``, ``N``, ``K`` and the output's shape (``[N]`` or ``[..., N]``)."""
    if x.dtype not in FLOAT_ACTS:
        raise TypeError(f"activations must be one of {FLOAT_ACTS}")
    n, k = weight_shape
    x2, vec = as_2d(x, k)
    return x2, n, k, ((n,) if vec else (*x.shape[:-1], n))


def as_2d(x: torch.Tensor, k: int) -> tuple[torch.Tensor, bool]:
    """View a ``[K]`` vector or ``[..., K]`` batch as ``[M, K]``; also say whether it was 1-D."""
    if x.shape[-1] != k:
        raise ValueError(f"activation last dim {x.shape[-1]} != weight in-features {k}")
    vec = x.dim() == 1
    return x.reshape(-1, k), vec


def prepare_out(out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """Allocate the output, or check a caller-provided ``out`` (must be contiguous, right shape/dtype)."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    return out
