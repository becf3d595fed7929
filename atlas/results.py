"""Run records: what a reproduction measured, per seed, with its configuration and provenance.

A record holds measurements only. Its verdict is not stored: every reader (``atlas show``,
``atlas compare``, ``atlas reproduce``'s summary, the site) judges the per-seed values against the
claim's *current* checks in papers.yaml (:mod:`atlas.verdict`), so editing a tolerance changes the
verdict everywhere without a rerun.

A record is one JSON file, ``results/<key>/<profile>.json`` for the profile's default configuration
(the published record, committed so the site needs no rerun) or ``<profile>-<config hash>.json`` for
another data set, training-set size or seed set (written beside the default, never over it). Files
are written atomically (a temporary file in the same folder, then a rename), so a run killed at any
point leaves every earlier record intact. Every read validates the file against the record schema
(:data:`SCHEMA_VERSION`, strict types: a string where a number belongs is refused); a record of an
older schema or a damaged one raises a :class:`StaleRecord` that names the file and the fix, and is
never replaced without ``--force``. A run of a paper and profile holds :func:`record_lock` while it
runs and writes, so a second run at the same time waits and then finds a whole record.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atlas import CHECKOUT, ROOT
from atlas.errors import AtlasError
from atlas.fsio import atomic_write, default_cache_dir
from atlas.stats import Interval, interval

SCHEMA_VERSION = 2
PROFILE_NAMES = ("smoke", "quick", "paper")
PROFILE_RANK = {"paper": 0, "quick": 1, "smoke": 2}


class StaleRecord(AtlasError):
    """A record that cannot be read as a current record: damaged, or of an older schema. ``path``
    names the file (None for text parsed without one)."""

    def __init__(self, message: str, *, hint: str | None = None, path: Path | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


def user_results_dir() -> Path:
    """``$XDG_DATA_HOME/compression-atlas/results`` (``~/.local/share/compression-atlas/results``):
    where an installed atlas keeps the records its runs write."""
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "compression-atlas" / "results"


def published_dir() -> Path:
    """The published records: ``results/`` of the checkout, or the copy an installed package carries."""
    return ROOT / "results"


def results_dir(override: Path | str | None = None) -> Path:
    """Where run records are written, and read first: ``override`` (``--results-dir``), else
    ``$ATLAS_RESULTS_DIR``, else ``results/`` of the checkout the atlas runs from (a run there
    publishes), else, for an installed package (never written), :func:`user_results_dir`."""
    if override is not None:
        return Path(override)
    if os.environ.get("ATLAS_RESULTS_DIR"):
        return Path(os.environ["ATLAS_RESULTS_DIR"])
    return published_dir() if CHECKOUT is not None else user_results_dir()


def record_dirs(override: Path | str | None = None) -> list[Path]:
    """The folders records are read from, the first holding a file winning: :func:`results_dir`,
    then, for an installed package with neither ``override`` nor ``$ATLAS_RESULTS_DIR``, the
    published records it carries (a user's own runs shadow them)."""
    first = results_dir(override)
    if override is None and not os.environ.get("ATLAS_RESULTS_DIR") and first != published_dir():
        return [first, published_dir()]
    return [first]


def record_files(override: Path | str | None = None) -> list[Path]:
    """Every ``<key>/<name>.json`` of :func:`record_dirs` (the reference records excluded), sorted by
    key and name; a file shadowed by one of the same key and name in an earlier folder is left out."""
    found: dict[tuple[str, str], Path] = {}
    for folder in record_dirs(override):
        for path in folder.glob("*/*.json"):
            if path.parent.name != "reference":
                found.setdefault((path.parent.name, path.name), path)
    return [found[k] for k in sorted(found)]


def find_record(key: str, name: str, override: Path | str | None = None) -> Path | None:
    """``<key>/<name>`` in the first of :func:`record_dirs` that has it (``name``: ``quick.json``)."""
    return next((d / key / name for d in record_dirs(override) if (d / key / name).exists()), None)


class _Strict(BaseModel):
    # strict: a string where a number belongs is an error, not a number parsed from the string
    model_config = ConfigDict(extra="forbid", frozen=False, strict=True)


class Metric(_Strict):
    """One quantity's per-seed values, in the order of the record's seeds."""

    values: list[float] = Field(min_length=1)

    @property
    def interval(self) -> Interval:
        return interval(self.values)

    @property
    def mean(self) -> float:
        return self.interval.mean


class Baseline(_Strict):
    """The uncompressed (or undistilled) model a claim's accuracy change is measured against: a
    harness model, whose reference accuracy (``atlas calibrate``) tells whether it converged."""

    model: str
    spec: dict[str, Any] = Field(default_factory=dict)
    metric: str  # the metric of this outcome that holds the baseline's accuracy (%)
    dataset: str
    train_size: int
    test_size: int


class CurvePoint(_Strict):
    """One compression level of a curve and its per-seed values."""

    x: float
    y: Metric


class Curve(_Strict):
    """A claim's accuracy-compression curve: the method's, or its family's control's
    (:mod:`atlas.harness.controls`), every seed at the same levels."""

    label: str
    x: str  # the axis: "compression ratio (×)", "weight bits"
    y: str  # "test accuracy (%)"
    control: bool = False
    points: list[CurvePoint] = Field(min_length=1)


class Outcome(_Strict):
    """What a run measured for one claim of the paper, every seed."""

    claim: str
    model: str
    dataset: str
    metrics: dict[str, Metric]
    baseline: Baseline | None = None
    differs: str = ""
    notes: str = ""
    # Why the atlas believes a gap to the paper is the method's and not the harness's: what was tried
    # and measured. Every claim that is not reproduced needs one.
    diagnosis: str = ""
    curves: list[Curve] = Field(default_factory=list)

    def mean(self, name: str) -> float | None:
        m = self.metrics.get(name)
        return None if m is None else m.mean

    def interval(self, name: str) -> Interval | None:
        m = self.metrics.get(name)
        return None if m is None else m.interval


#: The types of the provenance fields the readers use (each may also be null); other fields are kept as
#: they are. A number is an int or a float, never a boolean.
PROVENANCE_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("commit", "date", "profile", "dataset", "torch", "python", "atlas", "platform", "device",
                     "config_hash", "code_hash", "command"), (str,)),
    "dirty": (bool,), "cold": (bool,), "wall_time_s": (int, float), "train_size": (int,),
    "seeds": (list,), "training": (list,), "cache_hits": (dict,),
}


class Record(_Strict):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    key: str
    profile: str
    seeds: list[int] = Field(min_length=1)
    config_hash: str
    code_hash: str
    config: dict[str, Any]
    outcomes: list[Outcome]
    provenance: dict[str, Any]
    path: Path | None = Field(default=None, exclude=True)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    @field_validator("provenance")
    @classmethod
    def _provenance_types(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, types in PROVENANCE_TYPES.items():
            item = value.get(name)
            if item is not None and (not isinstance(item, types) or (bool not in types and isinstance(item, bool))):
                raise ValueError(f"provenance field '{name}' should be "
                                 f"{' or '.join(t.__name__ for t in types)}, not {type(item).__name__}")
        return value

    def outcome(self, claim: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.claim == claim), None)

    def to_json(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude={"path"})
        return json.dumps(data, indent=2, allow_nan=True) + "\n"

    @property
    def is_default(self) -> bool:
        """The profile's default configuration (the published record), not an extra seed set."""
        return self.path is None or self.path.name == f"{self.profile}.json"


def _fix_hint(key: str | None, profile: str | None, default: bool = True) -> str:
    what = key or "KEY"
    if not default:
        return ("rerun its configuration (--seeds / --dataset / --train-size) with --force, delete the "
                "file, or restore it with git")
    prof = f" --profile {profile}" if profile and profile != "quick" else ""
    return f"rerun with `atlas reproduce {what}{prof} --force` (or restore the file with git)"


def parse(text: str, path: Path | None = None) -> Record:
    """A record from its JSON text, validated; :class:`StaleRecord` naming the file otherwise."""
    where = str(path) if path else "run record"
    key = path.parent.name if path else None
    profile = path.stem.split("-")[0] if path else None

    def stale(message: str, hint_key: str | None = key) -> StaleRecord:
        default = path is None or path.stem == profile
        return StaleRecord(f"{where} {message}", hint=_fix_hint(hint_key, profile, default), path=path)

    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise stale(f"is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise stale("is not a run record (a JSON object)")
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        raise stale(f"is a record of schema {repr(version)[:20]}; this atlas reads schema {SCHEMA_VERSION} "
                    "(per-seed values, verdicts computed on reading)",
                    data.get("key") if isinstance(data.get("key"), str) and not path else key)
    try:
        record = Record.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise stale(f"is not a valid run record: {loc}: {first['msg']}"
                    + (f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else "")) from None
    if path is not None and (record.key != key or record.profile != profile):
        raise stale(f"holds a record of {record.key!r} ({record.profile!r} profile), not of its folder "
                    f"and name ({key!r}, {profile!r})")
    n = len(record.seeds)
    for outcome in record.outcomes:
        for name, metric in outcome.metrics.items():
            if len(metric.values) != n:
                raise stale(f"is not a valid run record: claim {outcome.claim}, metric {name} has "
                            f"{len(metric.values)} values for {n} seeds")
        for curve in outcome.curves:
            for point in curve.points:
                if len(point.y.values) != n:
                    raise stale(f"is not a valid run record: claim {outcome.claim}, curve {curve.label!r} at "
                                f"{point.x:g} has {len(point.y.values)} values for {n} seeds")
    record.path = path
    return record


def record_path(root: Path, key: str, profile: str, config_hash: str, default: bool) -> Path:
    name = f"{profile}.json" if default else f"{profile}-{config_hash[:10]}.json"
    return root / key / name


@contextmanager
def record_lock(root: Path, key: str, profile: str,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``key``'s ``profile`` records under ``root`` (a file lock in the cache
    folder, so that nothing but records lands in ``results/``): a second run of the same paper and
    profile waits here for the first (``on_wait`` is told), then finds its record whole. Temporary
    files a killed writer left beside the records are removed once the lock is held."""
    folder = root / key
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    lock_path = default_cache_dir() / "locks" / f"{key}-{profile}-{digest}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(f"waiting for another run of {key} ({profile} profile) to finish (lock {lock_path})")
        lock.acquire()
    try:
        for tmp in folder.glob(f".{profile}*.json.*.tmp"):
            tmp.unlink(missing_ok=True)
        yield
    finally:
        lock.release()


def save(record: Record, path: Path) -> Path:
    atomic_write(path, record.to_json())
    record.path = path
    return path


def load(path: Path) -> Record:
    hint = _fix_hint(path.parent.name, path.stem.split("-")[0], "-" not in path.stem)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StaleRecord(f"{path} is not a run record: not UTF-8 text (byte {exc.start})",
                          hint=hint, path=path) from None
    except OSError as exc:
        raise StaleRecord(f"{path} cannot be read: {exc.strerror or exc}", hint=hint, path=path) from None
    return parse(text, path)


def load_all(root: Path | None = None, problems: list[StaleRecord] | None = None) -> list[Record]:
    """Every record under ``root`` (default: :func:`record_dirs`). Unreadable files are skipped;
    pass ``problems`` to collect what was wrong with them."""
    records = []
    for path in record_files(root):
        try:
            records.append(load(path))
        except StaleRecord as exc:
            if problems is not None:
                problems.append(exc)
    return records


def published(root: Path | None = None, *, include_smoke: bool = False,
              problems: list[StaleRecord] | None = None) -> dict[str, Record]:
    """For each paper, the record to show: its default-configuration record of the most faithful
    profile (paper, then quick; smoke only when asked). Only the files that could be that record are
    read; pass ``problems`` to collect those that could not be read."""
    profiles = [p for p in PROFILE_NAMES if include_smoke or p != "smoke"]
    best: dict[str, Record] = {}
    for path in record_files(root):
        if path.stem not in profiles:
            continue
        try:
            rec = load(path)
        except StaleRecord as exc:
            if problems is not None:
                problems.append(exc)
            continue
        cur = best.get(rec.key)
        if cur is None or PROFILE_RANK.get(rec.profile, 9) < PROFILE_RANK.get(cur.profile, 9):
            best[rec.key] = rec
    return dict(sorted(best.items()))
