"""Backend dispatch shared by every kernel family.

``backend="auto"`` runs the Triton kernel when Triton imports and every tensor argument lives on a CUDA
device, and the PyTorch reference otherwise. ``backend="triton"`` forces the Triton launch path (on CPU
tensors this only works under the Triton interpreter, ``TRITON_INTERPRET=1``, which must be set before
the first Triton kernel of this package is defined; the kernels live in private ``_triton_*`` modules
that are imported lazily for exactly that reason). ``backend="reference"`` forces the PyTorch reference.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType
from typing import Literal

import torch

Backend = Literal["auto", "triton", "reference"]

__all__ = [
    "Backend",
    "cdiv",
    "interpreting",
    "next_pow2",
    "resolve_backend",
    "triton_available",
    "triton_module",
]


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_available() -> bool:
    """True when ``import triton`` succeeds in this environment."""
    return _triton_import_error() is None


def triton_unavailable_reason() -> str:
    """Why Triton cannot be used ("" when it can)."""
    return _triton_import_error() or ""


def interpreting() -> bool:
    """True when the Triton interpreter (CPU emulation of kernels) is switched on."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def resolve_backend(backend: str, *tensors: torch.Tensor | None) -> Literal["triton", "reference"]:
    """Pick ``"triton"`` or ``"reference"`` for one call.

    Raises ``ValueError`` for an unknown backend name and ``RuntimeError`` when ``"triton"`` is forced
    but cannot run (Triton missing, or CPU tensors without the interpreter).
    """
    ts = [t for t in tensors if t is not None]
    on_cuda = bool(ts) and all(t.is_cuda for t in ts)
    if backend == "reference":
        return "reference"
    if backend == "auto":
        return "triton" if (on_cuda and triton_available()) else "reference"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"backend='triton' requested but triton cannot be imported ({triton_unavailable_reason()})")
        if not on_cuda and not interpreting():
            raise RuntimeError(
                "backend='triton' on non-CUDA tensors needs the Triton interpreter: set TRITON_INTERPRET=1 "
                "before the first kernel call"
            )
        return "triton"
    raise ValueError(f"unknown backend {backend!r}; expected 'auto', 'triton' or 'reference'")


def triton_module(name: str) -> ModuleType:
    """Import ``atlas_kernels._triton_<name>`` (the @triton.jit kernels) on first use."""
    return importlib.import_module(f"{__package__}._triton_{name}")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
