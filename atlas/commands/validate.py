"""``atlas validate``: check papers.yaml against the schema (CONTRIBUTING.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from atlas.catalogue import display_path, load_catalogue

NAME = "validate"
HELP = "check papers.yaml: every field, with the key, field and line of anything wrong"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which file to check."""
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="the catalogue to check (default: $ATLAS_PAPERS or papers.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    """Print ``papers.yaml: N papers, M claims, OK``; problems raise CatalogueError (exit 2)."""
    catalogue = load_catalogue(args.file)
    claims = sum(len(p.claims) for p in catalogue)
    print(f"{display_path(catalogue.path)}: {len(catalogue)} papers, {claims} claims, OK")
    return 0
