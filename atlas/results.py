"""Run records: what a reproduction measured, the claim it tests, the verdict and the provenance.

A record is one JSON file, ``results/<key>/<profile>.json`` for the profile's default configuration
(the published record, committed so the site needs no rerun) or ``<profile>-<config hash>.json`` for
another data set or seed set. Files are written atomically (a temporary file in the same folder,
then a rename), so a run killed at any point leaves every earlier record intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas import ROOT
from atlas.errors import AtlasError

SCHEMA_VERSION = 1
PROFILE_NAMES = ("smoke", "quick", "paper")
PROFILE_RANK = {"paper": 0, "quick": 1, "smoke": 2}


def results_dir(override: Path | str | None = None) -> Path:
    if override is not None:
        return Path(override)
    return Path(os.environ.get("ATLAS_RESULTS_DIR", ROOT / "results"))


@dataclass
class Outcome:
    """What one run measured for one claim of the paper."""

    claim: str
    model: str
    dataset: str
    metrics: dict[str, dict[str, Any]]  # name -> {"mean", "std", "values"}
    verdict: str
    checks: list[dict[str, Any]]
    differs: str = ""
    notes: str = ""

    def mean(self, name: str) -> float | None:
        m = self.metrics.get(name)
        return None if m is None else m["mean"]


@dataclass
class Record:
    key: str
    profile: str
    config: dict[str, Any]
    config_hash: str
    code_hash: str
    seeds: list[int]
    outcomes: list[Outcome]
    verdict: str
    provenance: dict[str, Any]
    schema: int = SCHEMA_VERSION
    path: Path | None = field(default=None, compare=False)

    def outcome(self, claim: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.claim == claim), None)

    def to_json(self) -> str:
        data = {
            "schema": self.schema, "key": self.key, "profile": self.profile, "verdict": self.verdict,
            "seeds": self.seeds, "config_hash": self.config_hash, "code_hash": self.code_hash,
            "config": self.config,
            "outcomes": [vars(o) for o in self.outcomes],
            "provenance": self.provenance,
        }
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> Record:
        try:
            return cls(
                key=data["key"], profile=data["profile"], config=data["config"],
                config_hash=data["config_hash"], code_hash=data["code_hash"], seeds=list(data["seeds"]),
                outcomes=[Outcome(**o) for o in data["outcomes"]], verdict=data["verdict"],
                provenance=data["provenance"], schema=data.get("schema", SCHEMA_VERSION), path=path,
            )
        except (KeyError, TypeError) as exc:
            raise AtlasError(f"{path or 'record'} is not a valid run record: {exc}") from None


def record_path(root: Path, key: str, profile: str, config_hash: str, default: bool) -> Path:
    name = f"{profile}.json" if default else f"{profile}-{config_hash[:10]}.json"
    return root / key / name


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(record: Record, path: Path) -> Path:
    write_atomic(path, record.to_json())
    record.path = path
    return path


def load(path: Path) -> Record:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AtlasError(f"cannot read run record {path}: {exc}") from None
    return Record.from_dict(data, path)


def load_all(root: Path | None = None) -> list[Record]:
    """Every record under ``root`` (default: the results folder), unreadable files skipped."""
    base = results_dir(root)
    records = []
    for path in sorted(base.glob("*/*.json")):
        try:
            records.append(load(path))
        except AtlasError:
            continue
    return records


def published(root: Path | None = None, *, include_smoke: bool = False) -> dict[str, Record]:
    """For each paper, the record to show: its default-configuration record of the most faithful
    profile (paper, then quick; smoke only when asked)."""
    best: dict[str, Record] = {}
    for rec in load_all(root):
        if rec.profile == "smoke" and not include_smoke:
            continue
        if rec.path is not None and rec.path.name != f"{rec.profile}.json":
            continue
        cur = best.get(rec.key)
        if cur is None or PROFILE_RANK.get(rec.profile, 9) < PROFILE_RANK.get(cur.profile, 9):
            best[rec.key] = rec
    return dict(sorted(best.items()))
