"""How evaluation batch size changes the time to predict 10,000 28x28 images on this CPU, for the harness's
models: the figure behind ``training.predict``'s batches of 256.

Usage:  python benchmarks/bench_eval_batch.py [--repeats 3] [--out benchmarks/results/NAME.md]

Each figure is the median over ``--repeats`` of one pass over 10,000 random images in eval mode
(``torch.no_grad``), at batch sizes 128, 256, 500 and 1,000.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atlas.harness.models import build  # noqa: E402

BATCHES = (128, 256, 500, 1000)
MODELS = [
    ("hinton-student", {}),
    ("lenet-300-100", {}),
    ("lenet-5", {}),
    ("staged-conv", {"chans": [8, 16, 32], "per_stage": 1}),
    ("staged-conv", {"chans": [6, 12, 24], "per_stage": 3}),
    ("vgg-small", {"width": 0.1875}),
]


@torch.no_grad()
def pass_time(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(10000, 1, 28, 28)
    from atlas.provenance import device_description

    lines = ["# Evaluation batch size: seconds to predict 10,000 images", "",
             f"- machine: {device_description('cpu')}, {platform.platform()}, torch {torch.__version__}",
             f"- median of {args.repeats} passes", "",
             "| model | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
             "| --- |" + " ---: |" * len(BATCHES)]
    for name, spec in MODELS:
        model = build(name, (1, 28, 28), 10, **spec).eval()
        cells = [statistics.median(pass_time(model, x, b) for _ in range(args.repeats)) for b in BATCHES]
        label = name + (f" {spec}" if spec else "")
        lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
