"""``atlas show KEY``: everything the catalogue knows about one paper."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from atlas import results
from atlas.catalogue import Claim, Paper, load_catalogue
from atlas.commands.list import reproductions
from atlas.reference import load_references
from atlas.report import claim_verdict_lines, record_summary
from atlas.verdict import RecordVerdict, judge_record

NAME = "show"
HELP = "show one paper: bibliographic data, links, survey notes, reported claims and their checks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The paper's key."""
    parser.add_argument("key", metavar="KEY", help="a paper key, e.g. han2015 (see `atlas list`)")
    parser.add_argument(
        "--results-dir", type=Path, help="where run records are read (default: results/ or $ATLAS_RESULTS_DIR)"
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def describe_claim(claim: Claim) -> list[str]:
    """The lines that describe one claim."""
    lines = [f"  [{claim.id}] {claim.model} on {claim.dataset}, {claim.metric}"]
    values = [
        ("baseline", claim.baseline),
        ("compressed", claim.compressed),
        ("ratio", claim.ratio),
        ("speedup", claim.speedup),
        ("bits", claim.bits),
        ("sparsity", claim.sparsity),
    ]
    given = [f"{name} {_number(value)}" for name, value in values if value is not None]
    if given:
        lines.append("    reported: " + ", ".join(given))
    source = claim.source + (f" of arXiv:{claim.arxiv_version}" if claim.arxiv_version else "")
    lines.append(f"    source: {source} (confidence: {claim.confidence})")
    if claim.note:
        lines.extend(
            textwrap.wrap(claim.note, width=96, initial_indent="    note: ", subsequent_indent="      ")
        )
    if claim.checks:
        lines.append("    checks:")
        lines.extend(f"      {check.describe()}" for check in claim.checks)
    else:
        lines.append("    checks: none (not comparable)")
    return lines


def published_record(key: str, root: Path | None = None
                     ) -> tuple[results.Record | None, results.StaleRecord | None]:
    """The paper's published record (paper profile, else quick), or why it cannot be read."""
    for profile in ("paper", "quick"):
        path = results.find_record(key, f"{profile}.json", root)
        if path is not None:
            try:
                return results.load(path), None
            except results.StaleRecord as exc:
                return None, exc
    return None, None


def describe(paper: Paper, record: results.Record | None = None, verdict: RecordVerdict | None = None,
             record_problem: results.StaleRecord | None = None) -> str:
    """The full text ``atlas show`` prints."""
    lines = [paper.title, "=" * min(len(paper.title), 100)]
    if paper.survey_title:
        lines.append(f"listed in the survey as: {paper.survey_title}")
    lines.append(f"key:        {paper.key}")
    lines.append(f"authors:    {', '.join(paper.authors)}")
    lines.append(f"year:       {paper.year}")
    lines.append(f"venue:      {paper.venue.name} ({paper.venue.short}, {paper.venue.type})")
    for name, link in paper.links.items():
        lines.append(f"{name + ':':<11} {link}")
    lines.append(f"categories: {', '.join(paper.categories)}")
    lines.append(f"kind:       {paper.kind}" + (f" ({paper.kind_note})" if paper.kind_note else ""))
    if paper.same_work_as:
        lines.append(f"same work:  {', '.join(paper.same_work_as)} (another entry for this work)")
    if paper.listed_in:
        lines.append(f"listed in:  {', '.join(paper.listed_in)}")
    lines.append(f"reproduction: {reproduction_line(paper.key)}")
    if paper.survey is not None:
        s = paper.survey
        cite = "?" if s.cite is None else str(s.cite)
        lines.append("")
        lines.append(f"annotated survey [{s.ref}]: class {s.klass}, {s.conference}, cited {cite}")
        lines.append(f"  detailed: {s.detailed}")
        lines.append(f"  superiority: {s.superiority}")
        lines.append(f"  weakness: {s.weakness}")
    lines.append("")
    if record is not None and verdict is not None:
        lines.append(f"published record: {verdict.verdict} ({record_summary(record)})")
        lines.append(f"  {record.path}")
    elif record_problem:
        lines.append(f"published record: unreadable ({record_problem.path}; the error below says why)")
    if paper.claims:
        lines.append(f"claims ({len(paper.claims)}):")
        for claim in paper.claims:
            lines.extend(describe_claim(claim))
            outcome = record.outcome(claim.id) if record is not None else None
            cv = verdict.claim(claim.id) if verdict is not None else None
            if outcome is not None and cv is not None:
                lines.extend(claim_verdict_lines(outcome, cv))
            elif record is not None and claim.checks:
                lines.append(f"    reproduced: not measured by the {record.profile} profile")
    else:
        lines.append("claims: none recorded")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print one paper; an unknown key raises UnknownKeyError (exit 3) with suggestions. An
    unreadable published record: the paper is printed, then the error (exit 2)."""
    paper = load_catalogue().get(args.key)
    record, problem = published_record(paper.key, args.results_dir)
    verdict = judge_record(record, paper, load_references()) if record is not None else None
    print(describe(paper, record, verdict, problem))
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return problem.exit_code
    return 0


def reproduction_line(key: str) -> str:
    """The registry's answer for ``key``: its file and profiles, the file's import error, or none."""
    found = reproductions()
    entry = found.get(key)
    if entry is not None:
        return f"{entry.display_path} (profiles: {', '.join(entry.profiles)})"
    if key in found.broken:
        return f"reproductions/{key}.py fails to import: {found.broken[key]}"
    return "none yet"
