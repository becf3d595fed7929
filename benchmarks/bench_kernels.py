# ruff: noqa: B023, E731  (timing closures are called immediately, inside the loop that binds them)
"""Benchmark the atlas_kernels compressed GEMM / GEMV kernels against dense PyTorch.

Usage:  python benchmarks/bench_kernels.py [--quick] [--out benchmarks/results/NAME.md]

On a CUDA device it times the Triton kernels (``backend="triton"``) against cuBLAS fp16
(``torch.matmul``) at ``N = K = 4096`` (``--quick``: 2048) for batch 1 / 16 / 256, plus binary GEMM at
8192^3 (not with --quick), and reports achieved bandwidth (bytes really moved: compressed weight +
activations + output) and ops/s next to the card's roofline bound.

On CPU it times what PyTorch itself offers for compressed weights - ``torch._int_mm`` and the
dynamically quantized int8 ``Linear`` (fbgemm/onednn), ``torch.sparse_csr`` SpMV/SpMM - against dense
fp32, plus our kernels' PyTorch reference paths (which densify the weight on every call: they are a
correctness reference, not a fast path). The ratio column is ``t_dense / t_kernel`` (> 1 = faster).

Writes a markdown report to benchmarks/results/<device-name>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # allow running from a source checkout
try:
    import atlas_kernels as ak
except ImportError:  # pragma: no cover - not installed: load kernels/ under its package name
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "atlas_kernels", Path(__file__).resolve().parents[1] / "kernels" / "__init__.py"
    )
    assert _spec and _spec.loader
    ak = importlib.util.module_from_spec(_spec)
    sys.modules["atlas_kernels"] = ak
    _spec.loader.exec_module(ak)



# The weights the kernels run are chosen by the papers' own algorithms (reproductions/): the kernels
# only encode and compute.
def _twn(w: torch.Tensor) -> ak.LowBitWeight:
    from atlas_reproductions.li2016 import ternary_scale, ternary_sign, ternary_threshold

    delta = ternary_threshold(w)
    return ak.encode_ternary(ternary_sign(w, delta), ternary_scale(w, delta))


def _shared(w: torch.Tensor, bits: int, iters: int) -> ak.CodebookWeight:
    """Deep Compression's scalar weight sharing (han2016's k-means) of a dense weight."""
    from atlas_reproductions.han2016 import kmeans_1d

    centroids, labels = kmeans_1d(w.flatten(), 2**bits, iters)
    return ak.encode_codebook(labels.view_as(w), centroids)


def _pruned(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Han et al. 2015's magnitude pruning of one layer."""
    from atlas_reproductions.han2015 import magnitude_mask

    return w * magnitude_mask(w, 1.0 - sparsity)


def _eie(w: torch.Tensor, iters: int = 15) -> ak.EIEWeight:
    """A pruned weight's non-zeros shared into 15 centroids (han2016's k-means), in EIE's format."""
    from atlas_reproductions.han2016 import kmeans_1d

    nz = w != 0
    centroids, labels = kmeans_1d(w[nz], 15, iters)
    codes = torch.zeros_like(w, dtype=torch.long)
    codes[nz] = labels + 1
    return ak.to_eie(codes, torch.cat([torch.zeros(1), centroids]))


# Datasheet figures (NVIDIA H100 / H200 Tensor Core GPU datasheets; dense, i.e. without 2:4 sparsity).
ROOFLINES = {
    "H100 SXM": {"bw": 3.35e12, "fp16": 989.4e12, "int8": 1979e12, "src": "NVIDIA H100 datasheet (SXM5)"},
    "H100 PCIe": {"bw": 2.0e12, "fp16": 756e12, "int8": 1513e12, "src": "NVIDIA H100 datasheet (PCIe)"},
    "H100 NVL": {"bw": 3.9e12, "fp16": 835e12, "int8": 1670e12, "src": "NVIDIA H100 datasheet (NVL)"},
    "H200": {"bw": 4.8e12, "fp16": 989.4e12, "int8": 1979e12, "src": "NVIDIA H200 datasheet (SXM)"},
}

TARGETS_H100 = [
    ("binary GEMM (XNOR/popcount or bit-expanded int8 MMA)", "8192^3", ">= 2x cuBLAS fp16 throughput"),
    ("2-bit and 4-bit weight GEMV", "4096x4096, batch 1", ">= 80% of the HBM bandwidth roofline"),
    ("90%-sparse GEMV (CSR / blocked)", "4096x4096, batch 1", ">= 3x dense fp16 GEMV"),
    ("codebook GEMV", "4096x4096, batch 1", ">= 70% of the HBM bandwidth roofline"),
]


@dataclass
class Row:
    kernel: str
    fmt: str
    shape: str
    ms: float
    bytes_moved: int
    ops: int
    dense_ms: float
    bound_ms: float | None
    weight_bytes: int
    note: str = ""

    @property
    def gbps(self) -> float:
        return self.bytes_moved / (self.ms * 1e-3) / 1e9

    @property
    def gops(self) -> float:
        return self.ops / (self.ms * 1e-3) / 1e9


def timeit(fn: Callable[[], object], cuda: bool, budget_s: float, min_reps: int = 3, max_reps: int = 200) -> float:
    """Median wall time in ms (CUDA-synchronised), after one warm-up call."""
    fn()
    if cuda:
        torch.cuda.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def roofline_for(name: str) -> dict | None:
    for key in ("H100 PCIe", "H100 NVL", "H200", "H100"):
        if key.split()[0] in name and (len(key.split()) == 1 or key.split()[1] in name):
            return ROOFLINES["H100 SXM" if key == "H100" else key]
    return None


def measure_copy_bw(budget_s: float) -> float:
    """Rough CPU memory bandwidth: a 256 MiB tensor copy (read + write)."""
    a = torch.empty(64 * 2**20, dtype=torch.float32).fill_(1.0)
    b = torch.empty_like(a)
    ms = timeit(lambda: b.copy_(a), False, budget_s)
    return 2 * a.numel() * 4 / (ms * 1e-3)


# ------------------------------------------------------------------------------------------- GPU


def bench_gpu(args: argparse.Namespace, rows: list[Row], roof: dict | None) -> None:
    dev = "cuda"
    size = 2048 if args.quick else 4096
    n = k = size
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(n, k, generator=g) / k**0.5
    wh = w.to(dev, torch.float16)
    enc = {
        "binary": ak.binarize_weight(w).to(dev),
        "ternary 2-bit (TWN)": _twn(w).to(dev),
        "uniform 4-bit": ak.quantize_uniform(w, 4).to(dev),
        "INQ pow2 5-bit": ak.quantize_pow2(w, 5).to(dev),
        "codebook 4-bit (DC)": _shared(w, 4, iters=8).to(dev),
        "codebook 8-bit (DC)": _shared(w, 8, iters=8).to(dev),
        # VQ's codewords would come from a paper's k-means over sub-vectors; the kernel's speed does not
        # depend on their values, so random codes into a random codebook
        "VQ d=4, 8-bit": ak.encode_codebook(torch.randint(0, 256, (n, k // 4), generator=g),
                                            torch.randn(1, 256, 4, generator=g), k=k).to(dev),
        "int8 per-channel": ak.quantize_int8_weight(w).to(dev),
    }
    w90 = _pruned(w, 0.9)
    blk = torch.rand(n // 32, k // 32, generator=g) < 0.1  # 90% block-pruned (32x32 blocks)
    w90b = w * blk.repeat_interleave(32, 0).repeat_interleave(32, 1)
    enc["CSR 90% fp16"] = ak.to_csr(w90, torch.float16).to(dev)
    enc["BSR 32x32 90% fp16"] = ak.to_bsr(w90b, (32, 32), torch.float16).to(dev)
    enc["EIE 90% (4-bit code + 4-bit gap)"] = _eie(w90).to(dev)

    for m in (1, 16, 256):
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        dense_ms = timeit(lambda: x @ wh.T, True, args.budget)
        ops = 2 * m * n * k
        act_bytes = m * k * 2 + m * n * 2

        def bound(wbytes: int, peak: str, act: int = act_bytes, ops: int = ops) -> float | None:
            if roof is None:
                return None
            return max((wbytes + act) / roof["bw"], ops / roof[peak]) * 1e3

        rows.append(Row("dense", "fp16 cuBLAS", f"{m}x{n}x{k}", dense_ms, n * k * 2 + act_bytes, ops, dense_ms,
                        bound(n * k * 2, "fp16"), n * k * 2))
        for name, q in enc.items():
            wb = q.storage_bytes()
            try:
                if name == "binary":
                    xa = ak.binarize_activation(x.float())
                    for alg in ("xnor", "mma"):
                        ms = timeit(lambda alg=alg: ak.binary_matmul(xa, q, backend="triton", algorithm=alg), True, args.budget)
                        rows.append(Row("binary", f"{alg}", f"{m}x{n}x{k}", ms, wb + xa.storage_bytes() + m * n * 4,
                                        ops, dense_ms, bound(wb, "int8", xa.storage_bytes() + m * n * 4), wb))
                    continue
                if name.startswith("int8"):
                    xq, sx = ak.quantize_int8_activation(x)
                    fn = lambda xq=xq, sx=sx, q=q: ak.int8_matmul(xq, q, sx, backend="triton")
                    rows.append(Row("int8", name, f"{m}x{n}x{k}", timeit(fn, True, args.budget), wb + m * k + m * n * 4,
                                    ops, dense_ms, bound(wb, "int8", m * k + m * n * 4), wb))
                    continue
                if isinstance(q, ak.LowBitWeight):
                    fn = lambda q=q: ak.lowbit_matmul(x, q, backend="triton")
                    fam = "lowbit"
                elif isinstance(q, ak.CodebookWeight):
                    fn = lambda q=q: ak.codebook_matmul(x, q, backend="triton")
                    fam = "codebook"
                else:
                    fn = lambda q=q: ak.sparse_matmul(x, q, backend="triton")
                    fam = "sparse"
                rows.append(Row(fam, name, f"{m}x{n}x{k}", timeit(fn, True, args.budget), wb + act_bytes, ops, dense_ms,
                                bound(wb, "fp16"), wb))
            except Exception as exc:  # keep going: report the failure in the table
                rows.append(Row(name.split()[0], name, f"{m}x{n}x{k}", float("nan"), 0, ops, dense_ms, None, wb,
                                note=f"FAILED: {type(exc).__name__}: {str(exc)[:80]}"))
    if not args.quick:
        s = 8192
        a = torch.randn(s, s, device=dev, dtype=torch.float16)
        b = torch.randn(s, s, device=dev, dtype=torch.float16)
        dense_ms = timeit(lambda: a @ b.T, True, args.budget)
        ops = 2 * s**3
        rows.append(Row("dense", "fp16 cuBLAS", f"{s}^3", dense_ms, 3 * s * s * 2, ops, dense_ms,
                        ops / roof["fp16"] * 1e3 if roof else None, s * s * 2))
        xa, wq = ak.binarize_activation(a.float()), ak.binarize_weight(b.float())
        for alg in ("xnor", "mma"):
            ms = timeit(lambda alg=alg: ak.binary_matmul(xa, wq, backend="triton", algorithm=alg), True, args.budget)
            rows.append(Row("binary", alg, f"{s}^3", ms, 2 * wq.storage_bytes() + s * s * 4, ops, dense_ms,
                            ops / roof["int8"] * 1e3 if roof else None, wq.storage_bytes()))


# ------------------------------------------------------------------------------------------- CPU


def bench_cpu(args: argparse.Namespace, rows: list[Row], bw: float) -> None:
    size = 2048 if args.quick else 4096
    n = k = size
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=g) / k**0.5
    w90 = _pruned(w, 0.9)
    w90csr = w90.to_sparse_csr()
    wq = ak.quantize_int8_weight(w)
    qlin = None
    try:
        import torch.ao.nn.quantized.dynamic as nnqd

        qlin = nnqd.Linear(k, n, dtype=torch.qint8)
        qw = torch.quantize_per_channel(w, wq.scale.double(), torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        qlin.set_weight_bias(qw, None)
    except Exception as exc:  # pragma: no cover - depends on the build
        print(f"torch.ao dynamic quantized Linear unavailable: {exc}")
    refs = {
        "binary (ref)": ak.binarize_weight(w),
        "ternary 2-bit (ref)": _twn(w),
        "uniform 4-bit (ref)": ak.quantize_uniform(w, 4),
        "codebook 4-bit (ref)": _shared(w, 4, iters=5),
        "CSR 90% (ref)": ak.to_csr(w90),
        "int8 (ref)": wq,
    }

    for m in (1, 16, 256):
        x = torch.randn(m, k, generator=g)
        ops = 2 * m * n * k
        act = m * k * 4 + m * n * 4
        budget = args.budget

        def bound(wbytes: int, act: int = act) -> float:
            return (wbytes + act) / bw * 1e3

        dense_ms = timeit(lambda: x @ w.T, False, budget)
        rows.append(Row("dense", "fp32 torch.matmul", f"{m}x{n}x{k}", dense_ms, n * k * 4 + act, ops, dense_ms,
                        bound(n * k * 4), n * k * 4))
        # PyTorch's own int8 kernels
        xq, sx = ak.quantize_int8_activation(x)
        try:
            if m <= 16:  # torch._int_mm wants M > 16 on some builds: pad the batch
                xpad = torch.zeros(32, k, dtype=torch.int8)
                xpad[:m] = xq
            else:
                xpad = xq
            wqt = wq.q.T.contiguous()
            ms = timeit(lambda: torch._int_mm(xpad, wqt), False, budget)
            rows.append(Row("int8", "torch._int_mm (int32 out)", f"{m}x{n}x{k}", ms, n * k + xpad.numel() + xpad.shape[0] * n * 4,
                            ops, dense_ms, bound(n * k, xpad.numel() + xpad.shape[0] * n * 4), n * k,
                            note="batch padded to 32" if m <= 16 else ""))
        except Exception as exc:
            rows.append(Row("int8", "torch._int_mm", f"{m}x{n}x{k}", float("nan"), 0, ops, dense_ms, None, n * k,
                            note=f"unavailable: {str(exc)[:60]}"))
        if qlin is not None:
            ms = timeit(lambda: qlin(x), False, budget)
            wbytes = n * k + 8 * n
            rows.append(Row("int8", "torch.ao dynamic qint8 Linear", f"{m}x{n}x{k}", ms, wbytes + act, ops, dense_ms,
                            bound(wbytes), wbytes, note="per-channel, fp32 in/out"))
        # PyTorch's sparse CSR
        csr_bytes = (n + 1) * 8 + w90csr.col_indices().numel() * 8 + w90csr.values().numel() * 4
        xt = x[0].clone() if m == 1 else x.T.contiguous()  # SpMV for batch 1, SpMM otherwise
        ms = timeit(lambda: w90csr @ xt, False, budget)
        rows.append(Row("sparse", "torch.sparse_csr 90%", f"{m}x{n}x{k}", ms, csr_bytes + act, ops, dense_ms,
                        bound(csr_bytes), csr_bytes, note="int64 indices (PyTorch's)"))
        # our reference paths (densify every call)
        for name, q in refs.items():
            if name.startswith("binary"):
                xa = ak.binarize_activation(x)
                fn = lambda q=q, xa=xa: ak.binary_matmul(xa, q, backend="reference")
            elif name.startswith("int8"):
                fn = lambda q=q: ak.int8_matmul(xq, q, sx, backend="reference")
            elif isinstance(q, ak.LowBitWeight):
                fn = lambda q=q: ak.lowbit_matmul(x, q, backend="reference")
            elif isinstance(q, ak.CodebookWeight):
                fn = lambda q=q: ak.codebook_matmul(x, q, backend="reference")
            else:
                fn = lambda q=q: ak.sparse_matmul(x, q, backend="reference")
            ms = timeit(fn, False, budget, min_reps=2)
            wb = q.storage_bytes()
            fam = {"ternary": "lowbit", "uniform": "lowbit", "CSR": "sparse"}.get(name.split()[0], name.split()[0])
            rows.append(Row(fam, name, f"{m}x{n}x{k}", ms, wb + act, ops, dense_ms, bound(wb), wb,
                            note="reference path: dequantizes per call"))


# ------------------------------------------------------------------------------------------- report


def fmt_ms(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.3f}"


def report(rows: list[Row], header: list[str], footer: list[str]) -> str:
    lines = list(header)
    lines += [
        "| family | kernel / format | M x N x K | time ms | GB/s moved | GOP/s | roofline ms | % of roofline | weight MiB | dense ms | ratio to dense | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ok = r.ms == r.ms
        pct = f"{100 * r.bound_ms / r.ms:.0f}%" if (ok and r.bound_ms) else "n/a"
        ratio = f"{r.dense_ms / r.ms:.2f}x" if ok else "n/a"
        lines.append(
            f"| {r.kernel} | {r.fmt} | {r.shape} | {fmt_ms(r.ms)} | {r.gbps:.1f} | {r.gops:.1f} | {fmt_ms(r.bound_ms)} | {pct} | "
            f"{r.weight_bytes / 2**20:.2f} | {fmt_ms(r.dense_ms)} | {ratio} | {r.note} |"
            if ok else
            f"| {r.kernel} | {r.fmt} | {r.shape} | n/a | n/a | n/a | n/a | n/a | {r.weight_bytes / 2**20:.2f} | {fmt_ms(r.dense_ms)} | n/a | {r.note} |"
        )
    lines += [""] + footer
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2048x2048 instead of 4096x4096, no 8192^3 GEMM")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per measurement")
    ap.add_argument("--out", type=Path, default=None, help="markdown output path")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = ap.parse_args()
    if args.budget is None:
        args.budget = 0.3 if args.quick else 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    rows: list[Row] = []
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"torch {torch.__version__}, triton {_triton_version()}, Python {platform.python_version()}"
    if cuda:
        name = torch.cuda.get_device_name()
        roof = roofline_for(name)
        bench_gpu(args, rows, roof)
        src = (f"roofline: {roof['src']}: {roof['bw'] / 1e12:.2f} TB/s, {roof['fp16'] / 1e12:.0f} TFLOP/s fp16 dense, "
               f"{roof['int8'] / 1e12:.0f} TOPS int8 dense" if roof else "roofline: unknown card, no bound")
        fname = slug(name)
        header = [f"# Kernel benchmark: {name}", "", f"{now}; {versions}; {'quick' if args.quick else 'full'} run.", "",
                  f"- {src}; bound = max(bytes moved / bandwidth, 2MNK / peak).",
                  "- ratio to dense = t(cuBLAS fp16 torch.matmul) / t(kernel); > 1 is faster.", ""]
    else:
        name = cpu_name()
        threads = torch.get_num_threads()
        bw = measure_copy_bw(args.budget)
        bench_cpu(args, rows, bw)
        fname = "cpu-" + slug(name)
        header = [
            f"# Kernel benchmark: CPU ({name}, {threads} torch threads)", "",
            f"{now}; {versions}; {'quick' if args.quick else 'full'} run.", "",
            "**No GPU was lent to the session that produced this file**: the Triton kernels were not timed here "
            "(they are checked for correctness under the Triton interpreter by tests/test_kernels.py). This table "
            "shows what PyTorch's own CPU int8 and sparse-CSR kernels give against dense fp32, and the cost of "
            "our kernels' PyTorch reference paths.", "",
            f"- roofline: memory-bound time = bytes moved / {bw / 1e9:.1f} GB/s, the bandwidth of a 256 MiB tensor "
            "copy measured on this machine (no compute peak is assumed, so compute-bound rows show a loose bound).",
            "- ratio to dense = t(dense fp32 `x @ W.T`) / t(kernel); > 1 is faster.",
            "- bytes moved = the weight's real storage + fp32 activations in and out.",
            "- each time is the median of repeated calls after a warm-up; on a machine shared with other jobs "
            "single rows can still be off by 2x or more, compare within a batch size.", "",
        ]
    footer = [
        "## Targets on an H100 (not measured in this file unless the header names an H100)", "",
        "| kernel | shape | goal |", "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in TARGETS_H100],
        "",
        "H100 SXM figures used for the bound (NVIDIA H100 Tensor Core GPU datasheet, SXM5 column, dense): "
        "3.35 TB/s HBM3, 989 TFLOP/s fp16, 1979 TOPS int8. A 4096x4096 fp16 GEMV moves 32 MiB, so its floor is "
        "~10 us; at 2 bits the weight is 4 MiB (~1.3 us floor). XNOR+popcount runs on the integer ALUs "
        "(no tensor cores), so the 2x-over-fp16 goal is only plausible for the `mma` variant (bits expanded to "
        "int8 +-1 in registers, int8 tensor cores at 2x the fp16 rate) - to be verified on the card.",
    ]
    text = report(rows, header, footer)
    print(text)
    out = args.out or Path(__file__).resolve().parent / "results" / f"{fname}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


def _triton_version() -> str:
    if not ak.triton_available():
        return "not installed"
    import triton

    return triton.__version__


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
