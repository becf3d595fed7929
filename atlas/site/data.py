"""What the site is made of, gathered once per build: the catalogue, the published run records and
the reproductions as the registry found them (:func:`atlas.manifest.load`: key, docstring, validated
profiles and the lineage in both directions, without importing torch when the manifest is current),
and the reproductions that failed to import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from atlas import manifest
from atlas.catalogue import Catalogue, Claim, Paper, load_catalogue
from atlas.manifest import Entry
from atlas.reference import load_references
from atlas.results import PROFILE_NAMES, Outcome, Record, StaleRecord, published
from atlas.verdict import ClaimVerdict, RecordVerdict, judge_record

__all__ = ["SiteData", "collect", "primary_claim", "profile_names"]


@dataclass
class SiteData:
    catalogue: Catalogue
    records: dict[str, Record]
    reproductions: dict[str, Entry]  # the manifest's entries: paper key -> registered reproduction
    verdicts: dict[str, RecordVerdict] = field(default_factory=dict)  # judged now, from the records
    # paper key -> why its record could not be read (the paper is shown as "record unreadable")
    unreadable: dict[str, str] = field(default_factory=dict)
    # file stem of reproductions/ -> why it failed to import (the registry's ``broken``)
    broken: dict[str, str] = field(default_factory=dict)
    reproductions_dir: Path | None = None  # where the entries' files are; default manifest.reproductions_dir()

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

    def source(self, entry: Entry) -> str:
        """The reproduction file's text, for the page's code listing."""
        folder = self.reproductions_dir or manifest.reproductions_dir()
        return (folder / entry.file).read_text(encoding="utf-8")


def profile_names(entry: Entry) -> list[str]:
    """The entry's profiles, smoke, quick and paper first."""
    return sorted(entry.profiles, key=lambda p: (PROFILE_NAMES.index(p) if p in PROFILE_NAMES else 99, p))


def collect(results_root: Path | None = None) -> SiteData:
    """The catalogue, the published records and the registry's reproductions. Smoke-profile records
    are shown only when ``ATLAS_SITE_SMOKE=1`` (they prove the code runs, not the claim)."""
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
    found = manifest.load()
    return SiteData(catalogue, records, found.entries, verdicts, unreadable, found.broken)


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
