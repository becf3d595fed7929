"""``atlas list``: the papers of the catalogue as a table, JSON or CSV, optionally filtered."""

from __future__ import annotations

import argparse
import functools
import json
import sys

import pandas as pd

from atlas import manifest
from atlas.catalogue import CATEGORIES, KINDS, Paper, load_catalogue

NAME = "list"
HELP = "list the papers of the catalogue (filter by category, kind, year, words)"
DESCRIPTION = (
    "List the papers of papers.yaml: key, year, venue, categories, title, number of reported claims "
    "and whether reproductions/<key>.py exists. --search finds papers by words of their key, title, "
    "the title a survey lists them under, or authors."
)

TITLE_WIDTH = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Filters and the output format."""
    parser.add_argument("--category", choices=CATEGORIES, help="only papers in this category")
    parser.add_argument("--kind", choices=KINDS, help="only papers of this kind")
    parser.add_argument("--year", type=int, help="only papers from this year")
    parser.add_argument(
        "--search",
        nargs="+",
        metavar="WORD",
        help="only papers whose key, title, survey title or authors contain every word "
        "(case and accents ignored, e.g. --search han pruning)",
    )
    parser.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format (default: table)"
    )


@functools.cache
def reproductions() -> manifest.Manifest:
    """The registry's reproductions, through its torch-free manifest (read once per command)."""
    return manifest.load()


def has_reproduction(key: str) -> bool:
    """Whether the registry has a reproduction of ``key`` (one that imports and registers)."""
    return key in reproductions()


def row(paper: Paper) -> dict[str, object]:
    """One paper as a flat record (the JSON output; the table and CSV use its columns)."""
    return {
        "key": paper.key,
        "year": paper.year,
        "venue": paper.venue.short,
        "categories": list(paper.categories),
        "kind": paper.kind,
        "title": paper.title,
        "survey_title": paper.survey_title,
        "authors": list(paper.authors),
        "claims": len(paper.claims),
        "reproduced": has_reproduction(paper.key),
    }


def _shorten(text: str, width: int = TITLE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def format_table(frame: pd.DataFrame) -> str:
    """A plain-text table: text columns left-aligned, numbers right-aligned, one space between."""
    cells = frame.astype(str)
    widths = {c: max(len(c), *(len(v) for v in cells[c])) for c in frame.columns}
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}

    def line(values: dict[str, str]) -> str:
        parts = [
            values[c].rjust(widths[c]) if c in numeric else values[c].ljust(widths[c]) for c in frame.columns
        ]
        return " ".join(parts).rstrip()

    rows = [line({c: c for c in frame.columns})]
    rows += [line(record) for record in cells.to_dict(orient="records")]
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Print the (filtered) catalogue."""
    catalogue = load_catalogue()
    papers = catalogue.filter(category=args.category, kind=args.kind, year=args.year, search=args.search)
    rows = [row(p) for p in papers]
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    columns = ["key", "year", "venue", "categories", "title", "claims", "reproduction"]
    frame = pd.DataFrame(
        [
            {
                "key": r["key"],
                "year": r["year"],
                "venue": r["venue"],
                "categories": ";".join(r["categories"])
                if args.format == "csv"
                else ", ".join(r["categories"]),
                "title": r["title"],
                "claims": r["claims"],
                "reproduction": ("yes" if r["reproduced"] else "no")
                if args.format == "csv"
                else ("yes" if r["reproduced"] else ""),
            }
            for r in rows
        ],
        columns=columns,
    )
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
        return 0
    if frame.empty:
        print("no papers match", file=sys.stderr)
        return 0
    frame["title"] = frame["title"].map(_shorten)
    text = format_table(frame)
    print(text)
    print(f"\n{len(frame)} of {len(catalogue)} papers")
    return 0
