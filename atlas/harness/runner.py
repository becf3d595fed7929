"""Running a reproduction: each seed, the per-seed values gathered into one record with its
provenance, and the atomic write of the record. A record whose configuration and code are unchanged
is reused unless ``force``. Verdicts are not decided here: every reader judges a record against the
claims' current checks (:mod:`atlas.verdict`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atlas import __version__, results
from atlas.catalogue import Catalogue, Paper, load_catalogue
from atlas.errors import ReproductionError
from atlas.harness import registry
from atlas.harness.run import Measured, Run, stable_hash
from atlas.provenance import device_description, git_commit


@dataclass
class Request:
    key: str
    profile: str = "quick"
    seeds: list[int] | None = None  # None: the profile's default (config["seeds"] seeds from 0)
    device: str = "cpu"
    dataset: str | None = None
    data_dir: Path | None = None
    download: bool = False
    force: bool = False
    results_dir: Path | None = None
    progress: bool = True
    train_size: int | None = None  # train on the first N training examples only

    @property
    def is_default(self) -> bool:
        """The profile's own configuration: its record is the published one."""
        return self.dataset is None and self.seeds is None and self.train_size is None


def code_hash(repro: registry.Reproduction) -> str:
    """Hash of the code that produced a record: the paper's file, the files it builds on, the harness."""
    return registry.files_hash(repro.code_files())


def default_seeds(repro: registry.Reproduction, profile: str) -> list[int]:
    return list(range(int(repro.profiles[profile].get("seeds", 1))))


def _differs(first: Measured, claim_dataset: str) -> str:
    """The reproduction's own note, plus the data-set difference when the paper used another set."""
    if not claim_dataset or claim_dataset.lower().replace("-", "") == first.dataset.lower().replace("-", ""):
        return first.differs
    note = (f"measured on {first.dataset}, the paper on {claim_dataset}: absolute numbers differ; "
            "the checks compare relative quantities")
    return f"{first.differs}; {note}" if first.differs else note


def gather(per_seed: list[list[Measured]], seeds: list[int], paper: Paper) -> list[results.Outcome]:
    """One outcome per claim with every metric's per-seed values (in the order of ``seeds``)."""
    key = paper.key
    outcomes = []
    for first in per_seed[0]:
        rows = []
        for seed, measured in zip(seeds, per_seed, strict=True):
            row = next((m for m in measured if m.claim == first.claim), None)
            if row is None:
                raise ReproductionError(f"reproductions/{key}.py recorded claim '{first.claim}' for seed "
                                        f"{seeds[0]} but not for seed {seed}")
            rows.append(row)
        names = [k for k in first.metrics if all(k in r.metrics for r in rows)]
        metrics = {n: results.Metric(values=[r.metrics[n] for r in rows]) for n in names}
        baseline = results.Baseline(**first.baseline) if first.baseline else None
        outcomes.append(results.Outcome(claim=first.claim, model=first.model, dataset=first.dataset,
                                        metrics=metrics, baseline=baseline,
                                        differs=_differs(first, paper.claim(first.claim).dataset),
                                        notes=first.notes, diagnosis=first.diagnosis,
                                        curves=_curves(key, first.claim, [r.curves for r in rows], seeds)))
    return outcomes


def _curves(key: str, claim: str, per_seed: list[list[Any]], seeds: list[int]) -> list[results.Curve]:
    """A claim's curves (:class:`~atlas.harness.controls.Series` per seed) with each level's per-seed
    values; every seed must record the same curves at the same levels."""
    curves = []
    for series in per_seed[0]:
        rows = []
        for seed, recorded in zip(seeds, per_seed, strict=True):
            row = next((s for s in recorded if s.label == series.label), None)
            if row is None or set(row.points) != set(series.points):
                raise ReproductionError(f"reproductions/{key}.py: claim '{claim}', curve '{series.label}' is "
                                        f"recorded at other levels (or not at all) for seed {seed} than for "
                                        f"seed {seeds[0]}")
            rows.append(row)
        points = [results.CurvePoint(x=float(x), y=results.Metric(values=[float(r.points[x]) for r in rows]))
                  for x in sorted(series.points)]
        curves.append(results.Curve(label=series.label, x=series.x, y=series.y, control=series.control,
                                    points=points))
    return curves


def reproduce(req: Request, *, catalogue: Catalogue | None = None,
              on_seed: Callable[[int, int], None] | None = None) -> tuple[results.Record, bool]:
    """Run (or reuse) a reproduction; returns the record and whether it was reused."""
    catalogue = catalogue or load_catalogue()
    paper = catalogue.get(req.key)  # unknown key -> UnknownKeyError with suggestions
    repro = registry.get(paper.key)
    if req.profile not in repro.profiles:
        raise ReproductionError(f"{req.key} has no profile '{req.profile}'; it declares: {', '.join(repro.profiles)}")
    config = dict(repro.profiles[req.profile])
    if req.dataset:
        config["dataset"] = req.dataset
    seeds = list(req.seeds) if req.seeds is not None else default_seeds(repro, req.profile)
    if not seeds:
        raise ReproductionError("no seeds to run")
    device_kind = torch.device(req.device).type
    config_hash = stable_hash({"key": req.key, "profile": req.profile, "config": config, "seeds": seeds,
                               "device": device_kind, "train_size": req.train_size})
    chash = code_hash(repro)
    root = results.results_dir(req.results_dir)
    path = results.record_path(root, req.key, req.profile, config_hash, req.is_default)

    def waiting(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # One run of a paper and profile at a time: a second waits, then reuses the first's record.
    with results.record_lock(root, req.key, req.profile, on_wait=waiting):
        if path.exists() and not req.force:
            # A damaged record or one of an older schema: StaleRecord naming the file and the fix
            # (--force), never silently replaced.
            old = results.load(path)
            if old.config_hash == config_hash and old.code_hash == chash:
                return old, True

        started = time.perf_counter()
        per_seed: list[list[Measured]] = []
        budgets, cache_hits, trained_here = [], {}, set()
        for i, seed in enumerate(seeds):
            if on_seed:
                on_seed(i, seed)
            run = Run(req.key, req.profile, config, seed, device=req.device, data_dir=req.data_dir,
                      allow_download=req.download, progress=req.progress, train_size=req.train_size)
            repro.fn(run)
            if not run.measured:
                raise ReproductionError(f"reproductions/{req.key}.py recorded nothing (it must call run.record)")
            for m in run.measured:
                paper.claim(m.claim)  # a claim id papers.yaml does not know -> a clear error
            per_seed.append(run.measured)
            budgets = budgets or run.budgets
            trained_here.update(run.cache_trained)
            # Models this run trained for an earlier seed and reused for this one do not make it warm.
            earlier = [h for h in run.cache_hits if h["file"] not in trained_here]
            if earlier:
                cache_hits[str(seed)] = earlier
        wall = time.perf_counter() - started

        outcomes = gather(per_seed, seeds, paper)
        provenance = {
            **git_commit(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "profile": req.profile, "seeds": seeds, "dataset": config.get("dataset"),
            "train_size": req.train_size,
            "torch": torch.__version__, "python": platform.python_version(), "atlas": __version__,
            "platform": platform.platform(), "device": device_description(req.device),
            "wall_time_s": round(wall, 2),
            # cold: every model this run used it trained itself; otherwise the cached models it loaded
            # (trained by an earlier run), per seed, with the code hash of the code that trained them.
            "cold": not cache_hits, "cache_hits": cache_hits,
            "training": budgets,
            "config_hash": config_hash, "code_hash": chash,
            "command": " ".join(["atlas", *sys.argv[1:]]) if os.path.basename(sys.argv[0]) == "atlas" else None,
        }
        record = results.Record(key=req.key, profile=req.profile, seeds=seeds, config_hash=config_hash,
                                code_hash=chash, config=config, outcomes=outcomes, provenance=provenance)
        results.save(record, path)
    return record, False
