"""``atlas compare``: reported against reproduced numbers for a set of papers, as a table ready for a
related-work section (Markdown, LaTeX with booktabs, or CSV), with the papers' BibTeX beside it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atlas.bibtex import to_bibtex
from atlas.catalogue import CATEGORIES, display_path, load_catalogue
from atlas.errors import AtlasError
from atlas.fsio import atomic_write
from atlas.report import outcome_rows, render_latex, render_rows
from atlas.results import StaleRecord, published

NAME = "compare"
HELP = "reported vs reproduced numbers of papers as a Markdown, LaTeX (booktabs) or CSV table"
DESCRIPTION = """One row per reported claim of the papers named (by key or --category): the paper's
setting (model / data set) and number, the harness's setting and number from the published run
record, and the verdict ("not run" where there is no record). --format latex writes a booktabs
tabular fragment whose first column cites each paper by its key; --bib FILE writes the BibTeX of the
same papers, so the two can go straight into a related-work section."""

FORMATS = ("markdown", "latex", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which papers, which format, and where to write."""
    parser.add_argument("keys", nargs="*", metavar="KEY", help="paper keys, e.g. han2015 hinton2015")
    parser.add_argument("--category", choices=CATEGORIES, help="every paper in this category")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="table format (default: markdown)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the table to FILE instead of stdout")
    parser.add_argument("--bib", type=Path, metavar="FILE", help="also write the papers' BibTeX to FILE")
    parser.add_argument(
        "--results-dir", type=Path, help="where run records are read (default: results/ or $ATLAS_RESULTS_DIR)"
    )
    parser.add_argument(
        "--include-smoke", action="store_true",
        help="use smoke-profile records where a paper has no quick or paper record",
    )


def _write(path: Path, text: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AtlasError(f"{display_path(parent)}: no such folder")
    if path.is_dir():
        raise AtlasError(f"{display_path(path)} is a folder, not a file")
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise AtlasError(f"cannot write {display_path(path)}: {exc.strerror or exc}") from None


def render(rows: list[dict[str, str]], fmt_name: str, comment: str | None = None) -> str:
    """The rows in one of :data:`FORMATS`."""
    if fmt_name == "latex":
        return render_latex(rows, comment=comment)
    if fmt_name not in FORMATS:
        raise AtlasError(f"unknown format {fmt_name!r} (choose from: {', '.join(FORMATS)})")
    return render_rows(rows, fmt_name)


def run(args: argparse.Namespace) -> int:
    """Print or write the table (and the BibTeX)."""
    if bool(args.keys) == bool(args.category):
        raise AtlasError("name the papers: KEY... or --category C (one of the two)")
    catalogue = load_catalogue()
    if args.category:
        papers = catalogue.filter(category=args.category)
    else:
        papers = [catalogue.get(key) for key in dict.fromkeys(args.keys)]
    if not papers:
        raise AtlasError(f"no papers in category '{args.category}'")
    problems: list[StaleRecord] = []
    records = published(args.results_dir, include_smoke=args.include_smoke, problems=problems)
    chosen = {p.key for p in papers}
    # A damaged record of a paper compared: named with its fix; the other papers go on (exit 2).
    damaged = [p for p in problems if p.path is not None and p.path.parent.name in chosen]
    unreadable = {p.path.parent.name for p in damaged if p.path is not None}
    for problem in damaged:
        print(f"error: {problem}", file=sys.stderr)
    rows = outcome_rows([r for k, r in records.items() if k in chosen], catalogue, papers=papers,
                        unreadable=unreadable - records.keys())
    if not rows:
        keys = ", ".join(p.key for p in papers[:8]) + (" ..." if len(papers) > 8 else "")
        raise AtlasError(f"no reported claims to compare for {keys}",
                         hint="`atlas show KEY` lists a paper's claims")
    what = " ".join(args.keys) if args.keys else f"--category {args.category}"
    text = render(rows, args.format, comment=f"atlas compare {what}")
    if args.bib is not None:
        _write(args.bib, to_bibtex(papers))
        print(f"wrote {len(papers)} BibTeX entries to {display_path(args.bib)}", file=sys.stderr)
    if args.out is None:
        sys.stdout.write(text)
    else:
        _write(args.out, text)
        print(f"wrote {len(rows)} rows to {display_path(args.out)}", file=sys.stderr)
    return 2 if damaged else 0
