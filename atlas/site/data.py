"""What the site is made of, gathered once per build: the catalogue, the published run records and
the reproductions (found by reading ``reproductions/*.py``, not importing them, so a build needs no
torch and is not slowed down by it), with the lineage in both directions.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

import atlas
from atlas.catalogue import Catalogue, Claim, Paper, load_catalogue
from atlas.lineage import PACKAGE, imported_reproductions
from atlas.reference import load_references
from atlas.results import Outcome, Record, StaleRecord, published
from atlas.verdict import ClaimVerdict, RecordVerdict, judge_record

__all__ = ["ReproductionInfo", "SiteData", "collect", "imported_reproductions", "primary_claim"]

@dataclass
class ReproductionInfo:
    """A reproduction file as the site shows it."""

    key: str
    path: Path
    doc: str
    source: str
    profiles: list[str]
    builds_on: list[str]
    built_upon_by: list[str] = field(default_factory=list)

    @property
    def relpath(self) -> str:
        try:
            return self.path.relative_to(atlas.ROOT).as_posix()
        except ValueError:
            return f"{PACKAGE}/{self.path.name}"


@dataclass
class SiteData:
    catalogue: Catalogue
    records: dict[str, Record]
    reproductions: dict[str, ReproductionInfo]
    verdicts: dict[str, RecordVerdict] = field(default_factory=dict)  # judged now, from the records
    # paper key -> why its record could not be read (the paper is shown as "record unreadable")
    unreadable: dict[str, str] = field(default_factory=dict)

    def record(self, key: str) -> Record | None:
        return self.records.get(key)

    def unreadable_record(self, key: str) -> bool:
        """The paper has no record to show because its record could not be read."""
        return key not in self.records and key in self.unreadable

    def verdict(self, key: str) -> str | None:
        """The paper's verdict over all its judged claims, or None without a record."""
        v = self.verdicts.get(key)
        return v.verdict if v else None

    def claim_verdict(self, key: str, claim_id: str) -> ClaimVerdict | None:
        v = self.verdicts.get(key)
        return v.claim(claim_id) if v else None

    def outcome(self, key: str, claim: Claim) -> Outcome | None:
        record = self.records.get(key)
        return record.outcome(claim.id) if record else None


def _profiles(tree: ast.Module) -> list[str]:
    """Profile names of the module-level ``PROFILES = {...}`` literal, if there is one."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if "PROFILES" in names:
                return [k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return []


def _registered_key(tree: ast.Module) -> str | None:
    """The key of ``@reproduction("key", ...)`` in the module, if any."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "reproduction"
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                ):
                    return str(deco.args[0].value)
    return None


def scan_reproductions(directory: Path | None = None) -> dict[str, ReproductionInfo]:
    """Every ``reproductions/<key>.py`` that registers a reproduction, with its docstring, source,
    profile names and the reproductions it imports (``atlas.lineage.imported_reproductions``, the same
    rule as ``Reproduction.builds_on``). A file that does not parse is skipped."""
    directory = directory or atlas.ROOT / PACKAGE
    found: dict[str, ReproductionInfo] = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source, filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        key = _registered_key(tree)
        if key is None:
            continue
        found[key] = ReproductionInfo(
            key=key,
            path=path,
            doc=(ast.get_docstring(tree) or "").strip(),
            source=source,
            profiles=_profiles(tree),
            builds_on=[k for k in imported_reproductions(path) if k != key],
        )
    for info in found.values():
        for parent in info.builds_on:
            if parent in found and info.key not in found[parent].built_upon_by:
                found[parent].built_upon_by.append(info.key)
    return found


def collect(results_root: Path | None = None) -> SiteData:
    """The catalogue, the published records and the reproductions. Smoke-profile records are shown
    only when ``ATLAS_SITE_SMOKE=1`` (they prove the code runs, not the claim)."""
    include_smoke = os.environ.get("ATLAS_SITE_SMOKE", "") not in ("", "0")
    catalogue = load_catalogue()
    problems: list[StaleRecord] = []
    records = {k: r for k, r in published(results_root, include_smoke=include_smoke, problems=problems).items()
               if k in catalogue}
    refs = load_references()
    verdicts = {k: judge_record(r, catalogue.get(k), refs) for k, r in records.items()}
    unreadable: dict[str, str] = {}
    for problem in problems:
        key = problem.path.parent.name if problem.path is not None else "?"
        unreadable[key] = "\n".join(filter(None, [unreadable.get(key), str(problem)]))
    return SiteData(catalogue, records, scan_reproductions(), verdicts, unreadable)


def primary_claim(paper: Paper, data: SiteData) -> Claim | None:
    """The claim a one-line summary shows: the first one with a reproduced outcome, else the first
    with checks, else the first with numbers, else the first."""
    if not paper.claims:
        return None
    record = data.record(paper.key)
    if record is not None:
        for claim in paper.claims:
            if record.outcome(claim.id) is not None:
                return claim
    for claim in paper.claims:
        if claim.checks:
            return claim
    for claim in paper.claims:
        if claim.compressed is not None or claim.ratio is not None or claim.speedup is not None:
            return claim
    return paper.claims[0]
