"""Reference accuracies: how well each harness model does on each data set when trained long.

``atlas calibrate`` trains a harness model with :data:`REFERENCE_RECIPE` (a long schedule, the
same for every model) and keeps the per-seed test accuracies as a reference record,
``results/reference/<dataset>/<model>-n<train size>-t<test size>.json`` (``$ATLAS_REFERENCE_DIR``). A run's baseline that falls
more than :data:`CONVERGENCE_MARGIN_PP` below the reference of its model, data set and sizes has not
converged: the claim's accuracy checks cannot fail on it (:mod:`atlas.verdict` makes them
*inconclusive*, "baseline not converged"). This module reads references; it needs no torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atlas import CHECKOUT, ROOT
from atlas.errors import AtlasError
from atlas.fsio import atomic_write
from atlas.results import Baseline, Metric, user_results_dir

SCHEMA_VERSION = 1
#: How far (percentage points of test accuracy) a baseline may fall below its model's reference.
CONVERGENCE_MARGIN_PP = 1.0
#: The long schedule every reference is trained with: optimizer steps, not epochs, so a data set of
#: any size gets the same training.
REFERENCE_RECIPE: dict[str, Any] = {
    "steps": 6000, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine",
}


class ReferenceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    model: str
    spec: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    train_size: int
    test_size: int
    recipe: dict[str, Any]
    seeds: list[int]
    accuracy: Metric
    provenance: dict[str, Any]

    def matches(self, baseline: Baseline) -> bool:
        return (self.model, self.spec, self.dataset, self.train_size, self.test_size) == (
            baseline.model, baseline.spec, baseline.dataset, baseline.train_size, baseline.test_size)


def reference_dir(root: Path | None = None) -> Path:
    """Where references are written, and read first: ``root``, else ``$ATLAS_REFERENCE_DIR``, else the
    published ``results/reference`` of the checkout (the same references whatever results folder a
    run writes to), else, for an installed package (never written), ``reference/`` in the user's
    results folder (:func:`atlas.results.user_results_dir`)."""
    if root is not None:
        return Path(root)
    if os.environ.get("ATLAS_REFERENCE_DIR"):
        return Path(os.environ["ATLAS_REFERENCE_DIR"])
    return published_reference_dir() if CHECKOUT is not None else user_results_dir() / "reference"


def published_reference_dir() -> Path:
    """The published references: ``results/reference`` of the checkout, or the installed copy."""
    return ROOT / "results" / "reference"


def reference_dirs(root: Path | None = None) -> list[Path]:
    """The folders references are read from, the first holding a file winning: :func:`reference_dir`,
    then, for an installed package with neither ``root`` nor ``$ATLAS_REFERENCE_DIR``, the published
    references it carries."""
    first = reference_dir(root)
    if root is None and not os.environ.get("ATLAS_REFERENCE_DIR") and first != published_reference_dir():
        return [first, published_reference_dir()]
    return [first]


def _spec_tag(spec: dict[str, Any]) -> str:
    """``{"hidden": [256, 256], "width": 0.5}`` -> ``-hidden256x256-width0.5`` (a file-name part)."""
    if not spec:
        return ""

    def text(value: Any) -> str:
        return "x".join(map(text, value)) if isinstance(value, list | tuple) else str(value)

    return "-" + "-".join(f"{k}{text(v)}" for k, v in sorted(spec.items()))


def reference_path(model: str, spec: dict[str, Any], dataset: str, train_size: int, test_size: int,
                   root: Path | None = None) -> Path:
    return reference_dir(root) / dataset / f"{model}{_spec_tag(spec)}-n{train_size}-t{test_size}.json"


def load_references(root: Path | None = None) -> list[ReferenceRecord]:
    """Every reference record; an unreadable one raises an error naming the file."""
    found: dict[tuple[str, str], Path] = {}
    for folder in reference_dirs(root):
        for path in folder.glob("*/*.json"):
            found.setdefault((path.parent.name, path.name), path)
    out = []
    for path in (found[k] for k in sorted(found)):
        try:
            out.append(ReferenceRecord.model_validate(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, ValidationError) as exc:
            raise AtlasError(f"reference record {path} is unreadable: {str(exc).splitlines()[0]}",
                             hint="recreate it with `atlas calibrate` (or restore it with git)") from None
    return out


def find(baseline: Baseline, references: list[ReferenceRecord]) -> ReferenceRecord | None:
    return next((r for r in references if r.matches(baseline)), None)


def save_reference(ref: ReferenceRecord, root: Path | None = None) -> Path:
    path = reference_path(ref.model, ref.spec, ref.dataset, ref.train_size, ref.test_size, root)
    atomic_write(path, json.dumps(ref.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    return path
