"""``atlas reproduce --executor ray``: every (paper, seed) a Ray task, the records written by the driver.

Each task runs one seed of one paper through the same runner as a local run
(:func:`atlas.harness.runner.reproduce` with that seed alone, into a scratch folder) and returns the
one-seed record; the driver gathers a paper's seeds, in order, into one record with the local run's
configuration hash, values, verdict rules and atomic write, and adds where each seed ran. A shared
teacher or dense model is trained by the paper's first seed: the other seeds' tasks depend on it in the
task graph (they are given its result) and load the model from the shared cache directory.

A task that fails (its exception, or a worker that died) is reported by paper and seed; the paper gets
no record and the other papers go on. Ctrl-C cancels the outstanding tasks; records already written
stay whole.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from atlas import results
from atlas.errors import AtlasError
from atlas.harness.run import stable_hash
from atlas.harness.runner import Request

#: Environment variables a task needs to see the driver's data, cache and results folders.
FORWARDED_ENV = ("ATLAS_CACHE_DIR", "ATLAS_DATA_DIR", "ATLAS_RESULTS_DIR", "ATLAS_REFERENCE_DIR",
                 "XDG_CACHE_HOME", "XDG_DATA_HOME")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AtlasError("--executor ray needs Ray, which is not installed",
                         hint="pip install '.[cluster]' (or pip install 'ray>=2.60')") from None
    return ray


def run_seed(req: Request, seed: int, after: Any = None, threads: int | None = None) -> dict[str, Any]:
    """One seed of ``req``'s paper, run as a local one-seed reproduction in a scratch folder; returns
    the record (as JSON-ready data) and where it ran. ``after``: the result of a task this one waits for
    (the paper's first seed, which trains the shared models). ``threads``: torch's CPU threads, the
    driver's, since another count changes the order of floating-point sums and so the trained weights."""
    scratch = tempfile.mkdtemp(prefix=f"atlas-{req.key}-{seed}-")
    try:
        import torch

        from atlas.harness.runner import reproduce

        if threads:
            torch.set_num_threads(threads)

        one = replace(req, seeds=[seed], results_dir=Path(scratch), force=True, progress=False)
        record, _ = reproduce(one)
        return {"record": record.model_dump(mode="json", by_alias=True), "host": socket.gethostname(),
                "node": _node_id(), "device": record.provenance.get("device")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (a test calling run_seed directly)
        return None


def config_hash(req: Request, config: dict[str, Any], seeds: list[int]) -> str:
    """The configuration hash a local run of ``req`` with ``seeds`` gives its record (the runner's)."""
    device_kind = "cuda" if req.device.startswith("cuda") else "cpu"
    return stable_hash({"key": req.key, "profile": req.profile, "config": config, "seeds": seeds,
                        "device": device_kind, "train_size": req.train_size})


def _curve_value(outcome: results.Outcome, label: str, x: float) -> float:
    """A one-seed record's value of curve ``label`` at level ``x``."""
    curve = next(c for c in outcome.curves if c.label == label)
    return next(p.y.values[0] for p in curve.points if p.x == x)


def merge(req: Request, seeds: list[int], parts: list[dict[str, Any]], wall: float) -> results.Record:
    """The seeds' one-seed records gathered into the record a local run of all of them writes: every
    metric's and every curve level's values in the order of ``seeds`` (a metric some seed lacks is left
    out, as locally), the
    first seed's configuration and notes, and the provenance of the whole run plus each seed's node."""
    records = [results.Record.model_validate(p["record"]) for p in parts]
    first = records[0]
    outcomes = []
    for outcome in first.outcomes:
        rows = [next(o for o in r.outcomes if o.claim == outcome.claim) for r in records]
        names = [n for n in outcome.metrics if all(n in row.metrics for row in rows)]
        metrics = {n: results.Metric(values=[row.metrics[n].values[0] for row in rows]) for n in names}
        curves = [curve.model_copy(update={"points": [
            point.model_copy(update={"y": results.Metric(values=[_curve_value(row, curve.label, point.x)
                                                                 for row in rows])})
            for point in curve.points]}) for curve in outcome.curves]
        outcomes.append(outcome.model_copy(update={"metrics": metrics, "curves": curves}))
    chash = config_hash(req, first.config, seeds)
    # The first seed trains the shared models the others then load from the cache, as a local run's
    # first seed does: the run is cold when the first seed was; otherwise every seed's hits are kept.
    cold = bool(first.provenance.get("cold"))
    cache_hits: dict[str, Any] = {}
    for record in records if not cold else []:
        cache_hits.update(record.provenance.get("cache_hits") or {})
    provenance = {
        **first.provenance, "seeds": seeds, "wall_time_s": round(wall, 2), "config_hash": chash,
        "cold": cold, "cache_hits": cache_hits,
        "executor": "ray",
        "nodes": {str(seed): {"host": p["host"], "node": p["node"], "device": p["device"]}
                  for seed, p in zip(seeds, parts, strict=True)},
        "command": " ".join(["atlas", *sys.argv[1:]]) if os.path.basename(sys.argv[0]) == "atlas" else None,
    }
    return results.Record(key=req.key, profile=req.profile, seeds=seeds, config_hash=chash,
                          code_hash=first.code_hash, config=first.config, outcomes=outcomes,
                          provenance=provenance)


@dataclass
class Outcome:
    """What the cluster run gave one paper: its record, or the failures of its seeds."""

    key: str
    record: results.Record | None = None
    errors: list[str] | None = None
    reused: bool = False  # the existing record, its configuration and code unchanged


def _default_seeds(req: Request) -> list[int]:
    from atlas.harness import registry
    from atlas.harness.runner import default_seeds

    return list(req.seeds) if req.seeds is not None else default_seeds(registry.get(req.key), req.profile)


def _reuse(req: Request, seeds: list[int]) -> results.Record | None:
    """The existing record of ``req`` when its configuration and code are unchanged (as locally)."""
    if req.force:
        return None
    from atlas.harness import registry
    from atlas.harness.runner import code_hash

    repro = registry.get(req.key)
    config = dict(repro.profiles[req.profile])
    if req.dataset:
        config["dataset"] = req.dataset
    chash = config_hash(req, config, seeds)
    path = results.record_path(results.results_dir(req.results_dir), req.key, req.profile, chash, req.is_default)
    if path.exists():
        old = results.load(path)
        if old.config_hash == chash and old.code_hash == code_hash(repro):
            return old
    return None


def reproduce(requests: Iterable[Request], *, address: str | None = None, num_cpus: int | None = None,
              threads: int | None = None, task: Callable[..., dict[str, Any]] = run_seed,
              on_done: Callable[[str, int, str | None], None] | None = None) -> list[Outcome]:
    """Run ``requests`` on a Ray cluster (``address``; a local one when ``None``), one task per paper
    and seed, and write each paper's record. Each task asks for ``threads`` CPUs and runs torch on as
    many (default: this process's torch threads, so that its numbers are a local run's); ``task`` is the
    function a task runs (tests replace it). ``on_done(key, seed, error)`` is told of every finished task."""
    import torch

    ray = _ray()
    threads = threads or torch.get_num_threads()
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus, runtime_env={"env_vars": env} if env else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = ray.remote(max_retries=0)(task)
    outcomes: list[Outcome] = []
    pending: dict[Any, tuple[int, int]] = {}  # object ref -> (paper index, seed)
    plans: list[tuple[Request, list[int], dict[int, Any], float]] = []
    for req in requests:
        seeds = _default_seeds(req)
        reused = _reuse(req, seeds)
        outcomes.append(Outcome(req.key, record=reused, reused=reused is not None))
        refs: dict[int, Any] = {}
        if reused is None:
            opts = {"num_gpus": 1 if req.device.startswith("cuda") else 0, "num_cpus": threads}
            first = remote.options(**opts).remote(req, seeds[0], None, threads)
            refs[seeds[0]] = first
            for seed in seeds[1:]:
                refs[seed] = remote.options(**opts).remote(req, seed, first, threads)
            for seed, ref in refs.items():
                pending[ref] = (len(plans), seed)
        plans.append((req, seeds, refs, time.perf_counter()))
    done: dict[Any, Any] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            index, seed = pending.pop(ref)
            try:
                done[ref] = ray.get(ref)
                error = None
            except Exception as exc:  # the task's own error, or a worker that died
                done[ref] = exc
                error = _describe(exc)
            if on_done:
                on_done(plans[index][0].key, seed, error)
            _finish_if_complete(plans[index], outcomes[index], done)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return outcomes


def _finish_if_complete(plan: tuple[Request, list[int], dict[int, Any], float], outcome: Outcome,
                        done: dict[Any, Any]) -> None:
    """Once every seed of a paper has finished: write its record, or note its failed seeds."""
    req, seeds, refs, started = plan
    if not refs or any(ref not in done for ref in refs.values()):
        return
    errors = [f"seed {seed}: {_describe(done[ref])}" for seed, ref in refs.items() if isinstance(done[ref], Exception)]
    if errors:
        outcome.errors = errors
        return
    record = merge(req, seeds, [done[refs[s]] for s in seeds], time.perf_counter() - started)
    root = results.results_dir(req.results_dir)
    path = results.record_path(root, req.key, req.profile, record.config_hash, req.is_default)
    with results.record_lock(root, req.key, req.profile):
        results.save(record, path)
    outcome.record = record


def _describe(exc: BaseException) -> str:
    """One line: the task's own error where Ray wraps it, or why the worker died."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"[:300]
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"[:300]
