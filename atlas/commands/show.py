"""``atlas show KEY``: everything the catalogue knows about one paper."""

from __future__ import annotations

import argparse
import textwrap

from atlas.catalogue import Claim, Paper, load_catalogue
from atlas.commands.list import has_reproduction

NAME = "show"
HELP = "show one paper: bibliographic data, links, survey notes, reported claims and their checks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The paper's key."""
    parser.add_argument("key", metavar="KEY", help="a paper key, e.g. han2015 (see `atlas list`)")


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


def describe(paper: Paper) -> str:
    """The full text ``atlas show`` prints."""
    lines = [paper.title, "=" * min(len(paper.title), 100)]
    lines.append(f"key:        {paper.key}")
    lines.append(f"authors:    {', '.join(paper.authors)}")
    lines.append(f"year:       {paper.year}")
    lines.append(f"venue:      {paper.venue.name} ({paper.venue.short}, {paper.venue.type})")
    for name, link in paper.links.items():
        lines.append(f"{name + ':':<11} {link}")
    lines.append(f"categories: {', '.join(paper.categories)}")
    lines.append(f"kind:       {paper.kind}" + (f" ({paper.kind_note})" if paper.kind_note else ""))
    if paper.listed_in:
        lines.append(f"listed in:  {', '.join(paper.listed_in)}")
    reproduction = f"reproductions/{paper.key}.py" if has_reproduction(paper.key) else "none yet"
    lines.append(f"reproduction: {reproduction}")
    if paper.survey is not None:
        s = paper.survey
        cite = "?" if s.cite is None else str(s.cite)
        lines.append("")
        lines.append(f"annotated survey [{s.ref}]: class {s.klass}, {s.conference}, cited {cite}")
        lines.append(f"  detailed: {s.detailed}")
        lines.append(f"  superiority: {s.superiority}")
        lines.append(f"  weakness: {s.weakness}")
    lines.append("")
    if paper.claims:
        lines.append(f"claims ({len(paper.claims)}):")
        for claim in paper.claims:
            lines.extend(describe_claim(claim))
    else:
        lines.append("claims: none recorded")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print one paper; an unknown key raises UnknownKeyError (exit 3) with suggestions."""
    paper = load_catalogue().get(args.key)
    print(describe(paper))
    return 0
