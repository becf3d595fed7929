"""Measurement, one definition for every paper.

- ``params``: every parameter of the model (weights, biases, BatchNorm affine parameters).
- ``nonzero_params``: parameters that are not exactly zero.
- ``param_compression = params / nonzero_params`` (the ratio pruning papers report).
- ``storage_bits``: the size of the encoding a method actually produces. A method describes its
  encoding as a list of :class:`Encoded` parts (what each tensor became and how many bits it takes);
  a dense fp32 model is ``32 * params`` bits.
- ``storage_compression = 32 * params(baseline) / storage_bits(compressed)``.
- ``flops``: FLOPs of one forward pass of one example, counted by ``torch.utils.flop_counter`` (a
  multiply-add counts as two FLOPs; MACs are half); ``effective_flops`` scales each layer's count by
  the fraction of its weights that are non-zero (the work a sparse kernel has to do).
- ``latency_ms``: median wall time of a forward pass over a batch, measured here.
- ``latency_us`` / :func:`kernel_latency`: median time of one call (torch.utils.benchmark's
  ``Timer.blocked_autorange``): how the reproductions time their encoded layers, run through
  ``atlas_kernels``, against the same layers dense in fp32, in the same run.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FP32_BITS = 32


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())



def accuracy_change(baseline: float, accuracy: float) -> dict[str, float]:
    """The three numbers every compression claim records: ``baseline_accuracy`` (the uncompressed
    model), ``accuracy`` (the compressed one) and ``accuracy_change_pp`` (compressed minus uncompressed)."""
    return {"baseline_accuracy": baseline, "accuracy": accuracy, "accuracy_change_pp": accuracy - baseline}

def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def dense_bits(model: nn.Module, bits: int = FP32_BITS) -> int:
    return bits * count_params(model)


@dataclass(frozen=True)
class Encoded:
    """One tensor's (or table's) share of a compressed model's storage."""

    name: str
    bits: int
    what: str = ""  # e.g. "5-bit relative indices", "Huffman-coded 4-bit cluster ids", "fp32 codebook"


def encoded(name: str, packed: Any, what: str) -> Encoded:
    """One tensor's share as the bytes its encoding really occupies: ``packed`` is an
    ``atlas_kernels`` packed weight (anything with ``storage_bytes()``)."""
    return Encoded(name, 8 * int(packed.storage_bytes()), what)


def storage_bits(parts: Iterable[Encoded]) -> int:
    return sum(p.bits for p in parts)


def fp32_parts(model: nn.Module, skip: Sequence[str] = ()) -> list[Encoded]:
    """Dense fp32 storage of every parameter not named in ``skip`` (e.g. the biases a method leaves
    uncompressed)."""
    return [Encoded(n, FP32_BITS * p.numel(), "fp32") for n, p in model.named_parameters() if n not in skip]


def flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on a single example of ``input_shape`` (C, H, W)."""
    model.eval()
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def effective_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs left when each Linear/Conv layer skips its zero weights: the layer's counted FLOPs times
    its weight density. Layers without weights count in full."""
    model.eval()
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    per_module = counter.get_flop_counts()
    total = float(counter.get_total_flops())
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d) or not name:
            continue
        key = f"{type(model).__name__}.{name}" if f"{type(model).__name__}.{name}" in per_module else None
        key = key or next((k for k in per_module if k.endswith("." + name)), None)
        if key is None:
            continue
        layer = float(sum(per_module[key].values()))
        w = module.weight.detach()
        density = float(torch.count_nonzero(w)) / w.numel()
        total -= layer * (1.0 - density)
    return int(round(total))


@torch.no_grad()
def latency_ms(model: nn.Module, input_shape: Sequence[int], *, batch: int = 64, repeats: int = 20,
               warmup: int = 3) -> float:
    """Median wall time (ms) of one forward pass over ``batch`` examples."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.randn(batch, *input_shape, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def latency_us(fn: Callable[[], Any], *, min_run_time: float = 0.03, num_threads: int = 1) -> float:
    """Median time (µs) of one call of ``fn``: ``torch.utils.benchmark.Timer.blocked_autorange`` (blocks
    of calls until ``min_run_time`` seconds have run; CUDA is synchronised by the timer), on
    ``num_threads`` CPU threads."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=num_threads)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median) * 1e6


def kernel_latency(dense: Callable[[], Any], encoded: Callable[[], Any], *,
                   min_run_time: float = 0.03) -> dict[str, float]:
    """``dense_latency_us``, ``encoded_latency_us`` and ``speedup`` (their ratio) of two calls computing
    the same layers, timed one after the other by :func:`latency_us`."""
    dense_us = latency_us(dense, min_run_time=min_run_time)
    encoded_us = latency_us(encoded, min_run_time=min_run_time)
    return {"dense_latency_us": dense_us, "encoded_latency_us": encoded_us, "speedup": dense_us / encoded_us}


@torch.no_grad()
def layers_latency(layers: Sequence[tuple[torch.Tensor, Any]], matmul: Callable[[torch.Tensor, Any], torch.Tensor],
                   *, batch: int = 1, min_run_time: float = 0.03) -> dict[str, float]:
    """:func:`kernel_latency` of a model's encoded layers: ``layers`` are ``(weight [N, K], encoding)``
    pairs, ``weight`` the dense fp32 values the encoding decodes to. Dense: ``F.linear(x, weight)`` for
    every layer; encoded: ``matmul(x, encoding)`` (an ``atlas_kernels`` entry point) for every layer; on
    ``batch`` fixed random examples. Both must compute the same products (checked first)."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, w.shape[1], generator=gen).to(w.device) for w, _ in layers]
    for x, (w, q) in zip(xs, layers, strict=True):
        err = (matmul(x, q).float() - F.linear(x, w.float())).abs()
        if bool((err > 1e-4 * (x.abs() @ w.float().abs().T) + 1e-6).any()):
            raise RuntimeError(f"the encoded layer [{w.shape[0]}, {w.shape[1]}] does not compute its dense product")

    def run_dense() -> None:
        for x, (w, _) in zip(xs, layers, strict=True):
            F.linear(x, w)

    def run_encoded() -> None:
        for x, (_, q) in zip(xs, layers, strict=True):
            matmul(x, q)

    return kernel_latency(run_dense, run_encoded, min_run_time=min_run_time)


def latency_note(kernel: str, on: torch.Tensor) -> str:
    """What :func:`layers_latency` measured, naming the kernel (``atlas_kernels.<entry point>`` and
    the format) and the backend it ran on for tensors like ``on``."""
    from atlas_kernels import resolve_backend

    triton = resolve_backend("auto", on) == "triton"
    return (f"speed-up measured with {kernel} ({'Triton kernel' if triton else 'PyTorch CPU fallback'}) on the "
            "fully-connected layers at batch 1, against the same weights dense in fp32 (F.linear), in the same "
            "run; torch.utils.benchmark blocked_autorange" + ("" if on.is_cuda else ", one CPU thread"))


def compression_metrics(baseline: nn.Module, compressed: nn.Module, input_shape: Sequence[int],
                        parts: Iterable[Encoded] | None = None) -> dict[str, float]:
    """The standard size metrics of a compressed model against its uncompressed baseline.

    ``parts`` is the method's actual encoding; without it the compressed model is stored as dense
    fp32 (so ``storage_compression`` is 1 unless the architecture shrank)."""
    params = count_params(compressed)
    nonzero = count_nonzero(compressed)
    bits = storage_bits(parts) if parts is not None else dense_bits(compressed)
    base_flops = flops(baseline, input_shape)
    eff = effective_flops(compressed, input_shape)
    return {
        "params": float(params),
        "nonzero_params": float(nonzero),
        "param_compression": count_params(baseline) / max(nonzero, 1),
        "storage_bits": float(bits),
        "storage_compression": dense_bits(baseline) / max(bits, 1),
        "flops": float(flops(compressed, input_shape)),
        "effective_flops": float(eff),
        "flop_reduction": base_flops / max(eff, 1),
    }


class SparseLinear(nn.Module):
    """A Linear layer executed as a sparse product of its non-zero weights: on a CUDA device the
    atlas's CSR Triton kernel (``atlas_kernels.sparse_matmul``), elsewhere torch's own sparse CSR
    kernels (which is what a CPU user would run)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach()
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.cuda_path = w.is_cuda
        if self.cuda_path:
            from atlas_kernels import to_csr

            self.packed = to_csr(w)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                self.csr = w.to_sparse_csr()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        if self.cuda_path:
            from atlas_kernels import sparse_matmul

            y = sparse_matmul(x, self.packed)
        else:
            y = (self.csr @ x.T).T
        return y if self.bias is None else y + self.bias


def sparse_executor(model: nn.Module, max_density: float = 0.5) -> nn.Module:
    """A copy of ``model`` whose Linear layers with at most ``max_density`` non-zero weights run as
    :class:`SparseLinear`."""
    import copy

    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        if isinstance(module, nn.Linear):
            density = float(torch.count_nonzero(module.weight)) / module.weight.numel()
            if density <= max_density:
                parent = clone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else clone
                setattr(parent, name.rsplit(".", 1)[-1], SparseLinear(module))
    return clone


def sparse_speedup(model: nn.Module, input_shape: Sequence[int], *, batch: int = 1, repeats: int = 50) -> float:
    """Measured speed-up of running the pruned ``model`` with sparse kernels over running the same
    weights densely, at ``batch`` examples (batch 1 is the setting of Deep Compression's and EIE's
    fully-connected benchmarks)."""
    dense = latency_ms(model, input_shape, batch=batch, repeats=repeats)
    sparse = latency_ms(sparse_executor(model), input_shape, batch=batch, repeats=repeats)
    return dense / sparse
