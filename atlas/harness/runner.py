"""Running a reproduction: each seed, aggregation over seeds, verdicts against the claims in
papers.yaml, provenance, and the atomic write of the record. A record whose configuration and code
are unchanged is reused unless ``force``."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from atlas import __version__, results
from atlas.catalogue import Catalogue, load_catalogue
from atlas.errors import ReproductionError
from atlas.harness import registry
from atlas.harness.run import Measured, Run, stable_hash
from atlas.provenance import device_description, git_commit
from atlas.verdict import combine, judge

HARNESS_DIR = Path(__file__).resolve().parent


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


def code_hash(repro: registry.Reproduction) -> str:
    """Hash of the code that produced a record: the paper's file, the files it builds on, the harness."""
    digest = hashlib.sha256()
    for path in [*repro.code_files(), *sorted(HARNESS_DIR.glob("*.py"))]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def default_seeds(repro: registry.Reproduction, profile: str) -> list[int]:
    return list(range(int(repro.profiles[profile].get("seeds", 1))))


def aggregate(per_seed: list[list[Measured]]) -> dict[str, tuple[Measured, dict[str, dict]]]:
    """claim -> (first seed's description, metric -> {mean, std, values})."""
    out: dict[str, tuple[Measured, dict[str, dict]]] = {}
    claims = [m.claim for m in per_seed[0]]
    for claim in claims:
        rows = [next(m for m in seed if m.claim == claim) for seed in per_seed if any(m.claim == claim for m in seed)]
        names = [k for k in rows[0].metrics if all(k in r.metrics for r in rows)]
        stats = {}
        for name in names:
            values = [r.metrics[name] for r in rows]
            stats[name] = {"mean": statistics.fmean(values),
                           "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                           "values": values}
        out[claim] = (rows[0], stats)
    return out


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
    seeds = req.seeds if req.seeds is not None else default_seeds(repro, req.profile)
    is_default = not req.dataset and req.seeds is None
    device_kind = torch.device(req.device).type
    config_hash = stable_hash({"key": req.key, "profile": req.profile, "config": config, "seeds": seeds,
                               "device": device_kind})
    chash = code_hash(repro)
    root = results.results_dir(req.results_dir)
    path = results.record_path(root, req.key, req.profile, config_hash, is_default)
    if path.exists() and not req.force:
        old = results.load(path)
        if old.config_hash == config_hash and old.code_hash == chash:
            return old, True

    started = time.perf_counter()
    per_seed: list[list[Measured]] = []
    for i, seed in enumerate(seeds):
        if on_seed:
            on_seed(i, seed)
        run = Run(req.key, req.profile, config, seed, device=req.device, data_dir=req.data_dir,
                  allow_download=req.download, progress=req.progress)
        repro.fn(run)
        if not run.measured:
            raise ReproductionError(f"reproductions/{req.key}.py recorded nothing (it must call run.record)")
        per_seed.append(run.measured)
    wall = time.perf_counter() - started

    outcomes = []
    for claim_id, (first, stats) in aggregate(per_seed).items():
        claim = paper.claim(claim_id)
        verdict, checks = judge(claim, {k: v["mean"] for k, v in stats.items()})
        differs = first.differs
        if claim.dataset and claim.dataset.lower().replace("-", "") != first.dataset.lower().replace("-", ""):
            note = (f"measured on {first.dataset}, the paper on {claim.dataset}: absolute numbers differ; "
                    "the checks compare relative quantities")
            differs = f"{differs}; {note}" if differs else note
        outcomes.append(results.Outcome(claim_id, first.model, first.dataset, stats, verdict,
                                        [c.to_dict() for c in checks], differs, first.notes))
    provenance = {
        **git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": req.profile, "seeds": seeds, "dataset": config.get("dataset"),
        "torch": torch.__version__, "python": platform.python_version(), "atlas": __version__,
        "platform": platform.platform(), "device": device_description(req.device),
        "wall_time_s": round(wall, 2), "config_hash": config_hash, "code_hash": chash,
        "command": " ".join(["atlas", *sys.argv[1:]]) if os.path.basename(sys.argv[0]) == "atlas" else None,
    }
    record = results.Record(req.key, req.profile, config, config_hash, chash, seeds, outcomes,
                            combine(o.verdict for o in outcomes), provenance)
    results.save(record, path)
    return record, False
