"""Tuning on a validation split: the hyperparameter a paper tuned, chosen on data the verdict never
sees, with the same search for the baseline student.

Usage:  python benchmarks/tune.py [KEY ...] [--seeds 1000,1001] [--holdout 10000]
                                  [--out benchmarks/results/NAME.md]

A reproduction declares the hyperparameter its paper tuned as ``TUNED``
(:class:`atlas.harness.Tuned`: the profile key, a grid around the paper's value, what the paper says of
it). For each such paper, every run is the paper's own quick profile (its reproduction,
unchanged) with one value overridden, on a *validation* data set: the training set's last
``--holdout`` examples are the evaluation split and the teacher and students train on the rest
(:meth:`atlas.harness.data.Dataset.validation`); the test set is not read. Seeds are 1000 and up,
never the published records' 0-4.

- **The method's weight** (the paper's tuned value: KD's temperature, AT's beta, NST's lambda,
  FitNets' temperature) over a grid around the paper's value, at the profile's learning rate; the
  choice is the value with the best mean validation accuracy of the method's student.
- **The same search for the baseline**: the students' learning rate (shared by the hard-label and
  the method's students) over half, the profile's and twice the profile's value, at the paper's
  weight; the baseline's best learning rate is reported beside the profile's, so a reader sees
  whether the hard-label student was handicapped.

The script prints one table per paper and writes them with the machine and commit to ``--out``.
A profile that adopts a chosen value cites this file.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atlas.harness import Tuned  # noqa: E402


def declared() -> dict[str, Tuned]:
    """Every reproduction that declares ``TUNED`` (the hyperparameter its paper tuned)."""
    from atlas.harness import registry

    found = {}
    for key, repro in sorted(registry.discover().items()):
        tuned = getattr(importlib.import_module(repro.module_name), "TUNED", None)
        if tuned is not None:
            found[key] = tuned
    return found


def run_once(key: str, profile: str, config: dict[str, Any], seed: int, holdout: int) -> dict[str, float]:
    """The metrics of the paper's first recorded claim on the validation split, for one seed."""
    from atlas.harness import registry
    from atlas.harness.run import Run

    repro = registry.get(key)
    repro.config.model_validate(config)  # a value of the wrong type is refused, as in a profile
    run = Run(key, profile, config, seed, progress=False, validation=holdout)
    repro.fn(run)
    return run.measured[0].metrics


def _parent(config: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    """The section holding ``dotted`` (``"key"`` or ``"section.key"``) and the last key."""
    *path, last = dotted.split(".")
    for part in path:
        config = config[part]
    return config, last


def get_value(config: dict[str, Any], dotted: str) -> Any:
    section, key = _parent(config, dotted)
    return section[key]


def set_value(config: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = _parent(config, dotted)
    section[key] = value


def search(key: str, spec: Tuned, profile: str, seeds: list[int], holdout: int) -> list[str]:
    from atlas.harness import registry

    base = copy.deepcopy(registry.get(key).profiles[profile])
    paper_value, lr = get_value(base, spec.key), base[spec.lr_section]["lr"]
    rows: list[tuple[str, float, float]] = []  # (setting, method's accuracy, baseline's accuracy)
    method_acc: dict[float, float] = {}
    baseline_acc: dict[float, float] = {}
    started = time.perf_counter()
    settings = [(v, lr) for v in spec.grid] + [(paper_value, x) for x in (lr / 2, lr * 2)]
    for value, rate in settings:
        config = copy.deepcopy(base)
        config[spec.lr_section] = {**config[spec.lr_section], "lr": rate}
        set_value(config, spec.key, value)
        metrics = [run_once(key, profile, config, seed, holdout) for seed in seeds]
        acc = statistics.mean(m["accuracy"] for m in metrics)
        hard = statistics.mean(m["student_accuracy"] for m in metrics)
        rows.append((f"{spec.key} = {value:g}, lr = {rate:g}", acc, hard))
        if rate == lr:
            method_acc[value] = acc
        if value == paper_value:
            baseline_acc[rate] = hard
        print(f"  {key}: {rows[-1][0]}: method {acc:.2f}%, hard labels {hard:.2f}%", flush=True)
    best = max(method_acc, key=method_acc.__getitem__)
    best_lr = max(baseline_acc, key=baseline_acc.__getitem__)
    lines = [f"## {key}: {spec.key}", "",
             f"- the paper: {spec.source}; the profile: {spec.key} = {paper_value:g}, lr = {lr:g}",
             f"- {profile} profile, seeds {', '.join(map(str, seeds))}; validation: the last {holdout} training examples; "
             f"{time.perf_counter() - started:.0f} s", "",
             "| setting | method's student (%) | hard-label student (%) |", "| --- | ---: | ---: |"]
    lines += [f"| {s} | {a:.2f} | {h:.2f} |" for s, a, h in rows]
    lines += ["", f"- **chosen {spec.key}: {best:g}** (best mean validation accuracy of the method's student; "
              f"the paper's: {paper_value:g})",
              f"- the baseline's best learning rate: {best_lr:g} (the profile's: {lr:g})", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help="papers (default: every one that declares TUNED)")
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    parser.add_argument("--seeds", default="1000,1001", help="comma-separated seeds (not 0-4)")
    parser.add_argument("--holdout", type=int, default=10000, help="validation examples carved from the training set")
    parser.add_argument("--out", type=Path, help="write the tables as Markdown")
    args = parser.parse_args()
    searches = declared()
    keys = args.keys or list(searches)
    unknown = [k for k in keys if k not in searches]
    if unknown:
        parser.error(f"no TUNED declared by {', '.join(unknown)} (declared by: {', '.join(searches)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    if any(s < 5 for s in seeds):
        parser.error("tune on seeds the published records do not use (5 and up)")

    from atlas.provenance import device_description, git_commit

    source = git_commit()
    commit = f"{str(source['commit'])[:10]}{' (with uncommitted changes)' if source['dirty'] else ''}"
    out = ["# Hyperparameters tuned on a validation split", "",
           f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
           f"- machine: {device_description('cpu')}, {platform.platform()}",
           f"- commit: {commit}", "- command: `python benchmarks/tune.py "
           + " ".join(sys.argv[1:]) + "`", ""]
    for key in keys:
        out += search(key, searches[key], args.profile, seeds, args.holdout)
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
