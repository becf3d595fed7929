"""``atlas cite``: BibTeX for papers of the catalogue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atlas.bibtex import to_bibtex
from atlas.catalogue import CATEGORIES, display_path, load_catalogue
from atlas.errors import AtlasError
from atlas.fsio import atomic_write

NAME = "cite"
HELP = "print BibTeX for papers (by key, by category, or all)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which papers, and where to write."""
    parser.add_argument("keys", nargs="*", metavar="KEY", help="paper keys, e.g. han2015 hinton2015")
    parser.add_argument("--category", choices=CATEGORIES, help="every paper in this category")
    parser.add_argument("--all", action="store_true", help="every paper of the catalogue")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the BibTeX to FILE instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Print or write the BibTeX."""
    chosen = sum(bool(x) for x in (args.keys, args.category, args.all))
    if chosen != 1:
        raise AtlasError("name the papers: KEY..., --category C or --all (exactly one of them)")
    catalogue = load_catalogue()
    if args.all:
        papers = list(catalogue)
    elif args.category:
        papers = catalogue.filter(category=args.category)
    else:
        papers = [catalogue.get(key) for key in dict.fromkeys(args.keys)]
    text = to_bibtex(papers)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    if not args.out.parent.is_dir() and str(args.out.parent):
        raise AtlasError(f"{display_path(args.out.parent)}: no such folder")
    try:
        atomic_write(args.out, text)
    except OSError as exc:
        raise AtlasError(f"cannot write {display_path(args.out)}: {exc.strerror or exc}") from None
    print(f"wrote {len(papers)} entries to {display_path(args.out)}", file=sys.stderr)
    return 0
