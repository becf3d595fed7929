"""The site's downloads: the reproduced results as one table (``results.csv`` and ``results.json``,
built with pandas from the same :class:`~atlas.site.data.SiteData` the comparison page shows) and the
BibTeX of each category (what ``atlas cite --category X`` prints).

The results table has one row per checked quantity of each claim a published record measured (a
claim without checks has one row, its quantity empty): the paper key, the claim, the record's
profile, the data sets, the paper's target and the check's rule, the reproduced mean with its 95%
interval over ``n`` seeds, the check's result and the claim's verdict, and the record's provenance.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from atlas.bibtex import to_bibtex
from atlas.catalogue import Catalogue, Claim
from atlas.errors import CatalogueError
from atlas.results import Outcome, Record
from atlas.site.data import SiteData

__all__ = ["COLUMNS", "RESULTS_CSV", "RESULTS_JSON", "bibtex_path", "category_bibtex", "results_csv",
           "results_frame", "results_json"]

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"

#: the results table's columns, in order, with what each holds (the comparison page lists them)
COLUMNS: dict[str, str] = {
    "key": "the paper's key in the catalogue",
    "claim": "the claim's id (unique within the paper)",
    "profile": "the record's profile (quick or paper)",
    "reported_dataset": "the data set of the paper's number",
    "reproduced_dataset": "the data set the harness ran on",
    "quantity": "the checked quantity (see the glossary)",
    "direction": "higher, lower or equal: the side of the target that passes",
    "target": "the paper's number the check compares with",
    "rule": "the check's passing condition, tolerance included",
    "mean": "the reproduced mean over the seeds",
    "ci95_low": "the 95% Student-t interval's lower end (empty with one seed)",
    "ci95_high": "the 95% Student-t interval's upper end (empty with one seed)",
    "n": "the number of seeds",
    "check": "pass, fail, inconclusive or not measured",
    "check_reason": "why the check came out so, where there is a reason (baseline not converged, one seed, "
                    "same on every seed)",
    "verdict": "the claim's verdict over its checks",
    "commit": "the commit the run was made from",
    "dirty": "whether the working tree had uncommitted changes",
    "date": "when the run finished (ISO 8601)",
    "device": "the device the run used",
    "wall_time_s": "the run's wall time in seconds",
    "record": "the record's file in the repository",
}


def _provenance(record: Record) -> dict[str, Any]:
    p = record.provenance
    wall = p.get("wall_time_s")
    return {
        "commit": p.get("commit"), "dirty": p.get("dirty"), "date": p.get("date"), "device": p.get("device"),
        "wall_time_s": float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None,
        "record": f"results/{record.key}/{record.profile}.json",
    }


def _claim(data: SiteData, key: str, outcome: Outcome) -> Claim | None:
    try:
        return data.catalogue.get(key).claim(outcome.claim)
    except CatalogueError:  # a record of a claim (or paper) the catalogue no longer has
        return None


def _outcome_rows(data: SiteData, record: Record, outcome: Outcome) -> list[dict[str, Any]]:
    claim = _claim(data, record.key, outcome)
    cv = data.claim_verdict(record.key, outcome.claim)
    base = {"key": record.key, "claim": outcome.claim, "profile": record.profile,
            "reported_dataset": claim.dataset if claim else None, "reproduced_dataset": outcome.dataset}
    tail = {"verdict": cv.verdict if cv else None, **_provenance(record)}
    if claim is None or not claim.checks:
        return [{**base, **tail}]
    judged = {c.quantity: c for c in cv.checks} if cv else {}
    rows = []
    for check in claim.checks:
        verdict = judged.get(check.quantity)
        iv = verdict.interval if verdict else outcome.interval(check.quantity)
        rows.append({
            **base, "quantity": check.quantity, "direction": check.direction, "target": float(check.target),
            "rule": check.describe(), "mean": iv.mean if iv else None, "ci95_low": iv.lo if iv else None,
            "ci95_high": iv.hi if iv else None, "n": iv.n if iv else None,
            "check": verdict.state if verdict else None,
            "check_reason": (verdict.reason or None) if verdict else None, **tail,
        })
    return rows


def results_frame(data: SiteData) -> pd.DataFrame:
    """The results table (:data:`COLUMNS`), sorted by paper key and claim as the records list them."""
    rows = [row for key in sorted(data.records) for outcome in data.records[key].outcomes
            for row in _outcome_rows(data, data.records[key], outcome)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in ("target", "mean", "ci95_low", "ci95_high", "wall_time_s"):
        frame[name] = frame[name].astype("Float64")
    frame["n"] = frame["n"].astype("Int64")
    frame["dirty"] = frame["dirty"].astype("boolean")
    return frame


def results_csv(data: SiteData) -> str:
    return results_frame(data).to_csv(index=False, lineterminator="\n")


def _json_value(value: Any) -> Any:
    """JSON has no infinities: a non-finite number is null (its ``check_reason`` says so)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def results_json(data: SiteData) -> str:
    """The same table as a JSON list of objects, one per row (missing values as null)."""
    frame = results_frame(data)
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    rows = [{name: _json_value(value) for name, value in row.items()} for row in rows]
    return json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def bibtex_path(category: str) -> str:
    """The docs-relative path of a category's BibTeX."""
    return f"bibtex/{category}.bib"


def category_bibtex(catalogue: Catalogue, category: str) -> str:
    """The BibTeX of every paper of a category, as ``atlas cite --category`` prints it."""
    return to_bibtex(catalogue.filter(category=category))
