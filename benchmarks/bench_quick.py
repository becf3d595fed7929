"""How long a person waits: every paper's quick profile, cold and warm, and the harness's training
loop against a bare PyTorch loop.

Usage:  python benchmarks/bench_quick.py [KEY ...] [--category CAT] [--profile quick]
                                         [--out benchmarks/results/NAME.md] [--publish]

For each paper: ``atlas reproduce KEY --force`` as a whole process, first with an empty model cache
(cold: every teacher and dense model trained in the run) and then again with the cache it filled
(warm), each into a temporary results folder so no published record is touched. Then the harness's
``training.train`` against a plain PyTorch loop (same model, data, batch size, optimizer, steps),
timed alternately in the same process; the ratio is ``t_bare / t_harness`` (goal >= 0.97).

The report ends with each family's total (a paper counts in every category papers.yaml gives it)
against its goal: the whole quick pruning family in at most 90 min, quantization in 75 min. With
``--with-records``, a family's total also counts every reproduction of it that this run did not time,
at the wall time its published cold record states (the run inside the process, without the
interpreter's start), and says how many figures came from records.

``--publish`` writes each cold run's record into the published results folder (``results/``), so one
run both times the profile cold and publishes records whose provenance says ``cold: true``; the warm
rerun still goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_reproduce(key: str, profile: str, cache: Path, results: Path) -> tuple[float, int]:
    env = {**os.environ, "ATLAS_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "atlas.cli", "reproduce", key, "--profile", profile, "--force", "--quiet",
           "--results-dir", str(results)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
    return wall, proc.returncode


def verdict_line(results: Path, key: str, profile: str) -> str:
    from atlas import results as rec_mod
    from atlas.catalogue import load_catalogue
    from atlas.reference import load_references
    from atlas.verdict import judge_record

    path = results / key / f"{profile}.json"
    if not path.exists():
        return "no record"
    record = rec_mod.load(path)
    return f"{judge_record(record, load_catalogue().get(key), load_references()).verdict} (n={len(record.seeds)})"


def loop_overhead(steps: int = 300, repeats: int = 5) -> tuple[float, float, float]:
    """(median harness s, median bare s, bare / harness) for hinton-student on Fashion-MNIST-sized data."""
    import torch
    import torch.nn.functional as F

    from atlas.harness import models, training
    from atlas.harness.data import Split
    from atlas.harness.training import TrainConfig

    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(6000, 1, 28, 28, generator=gen), torch.randint(0, 10, (6000,), generator=gen))
    cfg = TrainConfig(steps=steps, batch_size=128, optimizer="adam", lr=1e-3, schedule="cosine")

    def harness() -> None:
        torch.manual_seed(0)
        model = models.build("hinton-student", (1, 28, 28), 10)
        training.train(model, split, cfg, generator=torch.Generator().manual_seed(0), progress=False)

    def bare() -> None:
        torch.manual_seed(0)
        model = models.build("hinton-student", (1, 28, 28), 10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        g = torch.Generator().manual_seed(0)
        model.train()
        step = 0
        while step < steps:
            order = torch.randperm(len(split), generator=g)
            for start in range(0, len(split), 128):
                if step >= steps:
                    break
                idx = order[start:start + 128]
                loss = F.cross_entropy(model(split.x[idx]), split.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1

    harness(), bare()  # warm-up
    th, tb = [], []
    for _ in range(repeats):
        for fn, out in ((harness, th), (bare, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    mh, mb = statistics.median(th), statistics.median(tb)
    return mh, mb, mb / mh


#: The issues' goals for a whole family's quick profiles, cold, on 2 cores (minutes).
FAMILY_GOALS_MIN = {"pruning": 90.0, "quantization": 75.0}


def recorded_cold_times(keys: list[str], profile: str) -> dict[str, float]:
    """The wall time each paper's published cold record of ``profile`` states (papers without one
    are left out)."""
    from atlas import results as rec_mod

    out = {}
    for key in keys:
        path = ROOT / "results" / key / f"{profile}.json"
        if path.exists():
            prov = rec_mod.load(path).provenance
            if prov.get("cold") and prov.get("wall_time_s"):
                out[key] = float(prov["wall_time_s"])
    return out


def family_totals(cold: dict[str, float], categories: dict[str, list[str]],
                  recorded: dict[str, float] | None = None) -> list[str]:
    """A table of each category's summed cold time, its paper count, its slowest paper and its goal;
    ``recorded`` adds the published records' times of papers this run did not time."""
    recorded = {k: v for k, v in (recorded or {}).items() if k not in cold}
    times = {**recorded, **cold}
    families = sorted({c for k in cold for c in categories[k]})
    if not families:
        return []
    lines = ["## Families", "", "| family | papers | of them from records | cold total (min) | slowest (s) | goal (min) |",
             "| --- | ---: | ---: | ---: | --- | ---: |"]
    for fam in families:
        keys = [k for k in times if fam in categories[k]]
        slowest = max(keys, key=lambda k: times[k])
        goal = FAMILY_GOALS_MIN.get(fam)
        total = sum(times[k] for k in keys) / 60
        verdict = "–" if goal is None else f"{goal:.0f} ({'met' if total <= goal else 'NOT met'})"
        n_rec = sum(k in recorded for k in keys)
        lines.append(f"| {fam} | {len(keys)} | {n_rec} | {total:.1f} | {slowest} {times[slowest]:.1f} | {verdict} |")
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("keys", nargs="*", help="papers (default: every reproduction)")
    ap.add_argument("--category", help="only the reproductions of this category (papers.yaml)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--no-warm", action="store_true", help="cold runs only")
    ap.add_argument("--out", type=Path, help="also write the report here (markdown)")
    ap.add_argument("--with-records", action="store_true",
                    help="family totals also count the published cold records of papers not timed here")
    ap.add_argument("--publish", action="store_true",
                    help="write the cold runs' records into results/ (the published records)")
    args = ap.parse_args()

    from atlas.catalogue import load_catalogue
    from atlas.harness import registry
    from atlas.provenance import device_description, git_commit

    catalogue = load_catalogue()
    keys = args.keys or list(registry.discover())
    if args.category:
        keys = [k for k in keys if args.category in catalogue.get(k).categories]
    commit = git_commit()
    lines = [
        f"# Quick-profile wall times ({args.profile})",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {device_description('cpu')}, {os.cpu_count()} cores, {platform.platform()}",
        f"- commit: {commit.get('commit', '?')[:10]}{' (dirty)' if commit.get('dirty') else ''}",
        "- each figure: one `atlas reproduce KEY --force` process, start to exit (imports included);",
        "  cold = empty model cache, warm = the cache the cold run filled",
        "",
        "| paper | cold (s) | warm (s) | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    print("\n".join(lines), flush=True)
    total_cold = total_warm = 0.0
    cold_by_key: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        for key in keys:
            cache, res = Path(tmp) / key / "cache", Path(tmp) / key / "results"
            published = ROOT / "results" if args.publish else res
            cold, rc = timed_reproduce(key, args.profile, cache, published)
            warm, rc2 = (float("nan"), 0) if args.no_warm else timed_reproduce(key, args.profile, cache, res)
            total_cold += cold
            cold_by_key[key] = cold
            total_warm += 0.0 if args.no_warm else warm
            status = verdict_line(published, key, args.profile) if rc == 0 else f"error (exit {rc})"
            line = f"| {key} | {cold:.1f} | {'–' if args.no_warm else f'{warm:.1f}'} | {status} |"
            lines.append(line)
            print(line, flush=True)
    tail = [f"| **total** | **{total_cold:.0f}** | **{total_warm:.0f}** | |", ""]
    every = list(registry.discover())
    recorded = recorded_cold_times(every, args.profile) if args.with_records else {}
    tail += family_totals(cold_by_key, {k: catalogue.get(k).categories for k in every}, recorded)
    mh, mb, ratio = loop_overhead()
    tail += [
        "## Training loop: harness against bare PyTorch",
        "",
        "hinton-student (784-800-800-10), 6,000 random 28x28 examples, batch 128, Adam, cosine, 300 steps;",
        "median of 5 alternating runs in one process.",
        "",
        f"- harness `training.train`: {mh:.3f} s",
        f"- bare PyTorch loop: {mb:.3f} s",
        f"- ratio bare / harness: **{ratio:.3f}** (goal >= 0.97)",
        "",
    ]
    lines += tail
    print("\n".join(tail), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
