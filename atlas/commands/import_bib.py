"""``atlas import-bib FILE``: add the papers of a BibTeX file to papers.yaml.

Each entry becomes a paper (entry type and fields mapped to the schema, key by the CONTRIBUTING.md
rule with the next free suffix). The new entries' YAML is appended to the existing text, so comments
and formatting stay; the combined text is checked by loading it, and only then renamed over
papers.yaml. A malformed file or an entry that would make an invalid paper changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from bibtexparser.model import Entry

from atlas.bibtex import Person, latex_unescape, read_bib, split_names
from atlas.catalogue import (
    CATEGORIES,
    KINDS,
    Catalogue,
    default_path,
    display_path,
    load_catalogue,
    parse_catalogue,
)
from atlas.errors import CatalogueError
from atlas.fsio import atomic_write
from atlas.schema import is_arxiv_id, key_stem, normalise_title

NAME = "import-bib"
HELP = "add the papers of a .bib file to papers.yaml (validated; nothing is written on any error)"

#: Short forms for venues the survey abbreviates; matched case-insensitively in the venue's name.
KNOWN_VENUES: tuple[tuple[str, str], ...] = (
    ("neural information processing systems", "NIPS"),
    ("international conference on learning representations", "ICLR"),
    ("international conference on machine learning", "ICML"),
    ("computer vision and pattern recognition", "CVPR"),
    ("international conference on computer vision", "ICCV"),
    ("european conference on computer vision", "ECCV"),
    ("british machine vision conference", "BMVC"),
    ("aaai conference on artificial intelligence", "AAAI"),
    ("international joint conference on artificial intelligence", "IJCAI"),
    ("acoustics, speech and signal processing", "ICASSP"),
    ("interspeech", "Interspeech"),
    ("international symposium on computer architecture", "ISCA"),
    ("field-programmable gate arrays", "FPGA"),
    ("journal of machine learning research", "JMLR"),
    ("pattern analysis and machine intelligence", "TPAMI"),
    ("neurocomputing", "NC"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The .bib file, the categories and kind of its papers, and --dry-run."""
    parser.add_argument("bib", type=Path, metavar="FILE", help="a BibTeX file")
    parser.add_argument(
        "--category",
        action="append",
        choices=CATEGORIES,
        required=True,
        help="category of the imported papers (required; repeat for several)",
    )
    parser.add_argument(
        "--kind", choices=KINDS, default="method", help="kind of the imported papers (default: method)"
    )
    parser.add_argument("--kind-note", help="one line, required with --kind off-topic")
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="the catalogue to add to (default: $ATLAS_PAPERS or papers.yaml)",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be added; write nothing")


# ---------------------------------------------------------------------------------------------
# mapping a BibTeX entry to a paper


def _get(entry: Entry, name: str) -> str | None:
    for field in entry.fields:
        if field.key.lower() == name:
            value = latex_unescape(str(field.value))
            return value or None
    return None


def _authors(entry: Entry) -> list[Person]:
    """The entry's authors, split by BibTeX's rules (:func:`atlas.bibtex.split_names`) on the field as
    written, so that braces and LaTeX accents are read before they are decoded."""
    for field in entry.fields:
        if field.key.lower() == "author":
            return split_names(str(field.value))
    return []


def _short_venue(name: str, year: int) -> str:
    lowered = name.lower()
    for needle, short in KNOWN_VENUES:
        if needle in lowered:
            return f"{short} {year}"
    acronym = re.search(r"\(([A-Z][A-Za-z]*[A-Z])(?:\s*'?\d{2,4})?\)", name)
    if acronym:
        return f"{acronym.group(1)} {year}"
    if len(name) <= 24:
        return name if str(year) in name else f"{name} {year}"
    initials = "".join(w[0] for w in re.findall(r"[A-Za-z]+", name) if w[0].isupper())
    return f"{initials or name[:24]} {year}"


def _arxiv_of(entry: Entry) -> str | None:
    eprint = _get(entry, "eprint")
    prefix = (_get(entry, "archiveprefix") or _get(entry, "eprinttype") or "").lower()
    if eprint:
        eprint = re.sub(r"^arxiv:", "", eprint, flags=re.IGNORECASE).strip()
        eprint = re.sub(r"v[0-9]+$", "", eprint)
        if prefix in ("", "arxiv") and is_arxiv_id(eprint):
            return eprint
    for name in ("journal", "url", "note", "howpublished"):
        value = _get(entry, name) or ""
        match = re.search(
            r"arxiv(?:\.org/abs/|:\s*|\s+)([0-9]{4}\.[0-9]{4,5}|[a-z\-]+/[0-9]{7})", value, re.IGNORECASE
        )
        if match:
            return match.group(1)
    return None


def _doi_of(entry: Entry) -> str | None:
    doi = _get(entry, "doi")
    return re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi, flags=re.IGNORECASE) if doi else None


def paper_from_entry(
    entry: Entry, key: str, categories: list[str], kind: str, kind_note: str | None
) -> dict[str, Any]:
    """The papers.yaml mapping for one BibTeX entry (not yet validated)."""
    entry_type = entry.entry_type.lower()
    title = _get(entry, "title") or ""
    year_text = _get(entry, "year") or ""
    year = int(year_text) if year_text.isdigit() else year_text
    authors = [person.full for person in _authors(entry)]
    arxiv = _arxiv_of(entry)
    journal = _get(entry, "journal")
    booktitle = _get(entry, "booktitle")
    is_arxiv_journal = bool(journal and re.match(r"^(arxiv|corr)\b", journal, re.IGNORECASE))
    if entry_type == "article" and journal and not is_arxiv_journal:
        venue_type, venue_name = "journal", journal
    elif entry_type in ("inproceedings", "conference", "proceedings") and booktitle:
        venue_type = "workshop" if "workshop" in booktitle.lower() else "conference"
        venue_name = booktitle
    elif entry_type in ("incollection", "inbook", "book"):
        venue_type = "book"
        venue_name = booktitle or _get(entry, "publisher") or title
    elif entry_type in ("misc", "unpublished", "techreport", "article", "online", "preprint") and (
        arxiv or is_arxiv_journal
    ):
        venue_type, venue_name = "preprint", "arXiv preprint"
    else:
        raise CatalogueError(
            f"entry '{entry.key}' (line {(entry.start_line or 0) + 1}): cannot tell its venue "
            f"(@{entry_type} without journal/booktitle/arXiv id)"
        )
    if venue_type == "preprint":
        short = "arXiv"
    else:
        short = _short_venue(venue_name, year if isinstance(year, int) else 0)
    doi = _doi_of(entry)
    url = _get(entry, "url")
    if url and (arxiv or doi):
        url = None  # the arXiv / DOI link is the landing page
    return {
        "key": key,
        "title": title,
        "authors": authors,
        "year": year,
        "venue": {"name": venue_name, "short": short, "type": venue_type},
        "arxiv": arxiv,
        "doi": doi,
        "url": url,
        "categories": list(categories),
        "kind": kind,
        "kind_note": kind_note,
        "listed_in": [],
        "survey": None,
        "claims": [],
    }


def next_free_key(stem: str, year: int | str, taken: set[str]) -> str:
    """``stem + year``, or with the next free suffix ``b``, ``c``, ... after the last one taken."""
    base = f"{stem}{year}"
    if base not in taken:
        return base
    for suffix in "bcdefghijklmnopqrstuvwxyz":
        if base + suffix not in taken:
            return base + suffix
    raise CatalogueError(f"no free key left for {base}")


# ---------------------------------------------------------------------------------------------
# YAML text


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


_PLAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.'/\- ]*[A-Za-z0-9.]$|^[A-Za-z]$")
_RESERVED = {"yes", "no", "true", "false", "null", "on", "off", "y", "n", "~"}


def _plain(value: Any) -> str:
    """A string unquoted where YAML reads it back as the same string (names, categories, kinds)."""
    if isinstance(value, str) and _PLAIN_RE.match(value) and value.lower() not in _RESERVED:
        return value
    return _scalar(value)


def _flow(values: list[Any]) -> str:
    return "[" + ", ".join(_plain(v) for v in values) + "]"


def paper_yaml(paper: dict[str, Any]) -> str:
    """The YAML text of one paper, in the layout of the entries of papers.yaml."""
    venue = paper["venue"]
    lines = [
        f"- key: {paper['key']}",
        f"  title: {_scalar(paper['title'])}",
        f"  authors: {_flow(paper['authors'])}",
        f"  year: {_scalar(paper['year'])}",
        "  venue:",
        f"    name: {_scalar(venue['name'])}",
        f"    short: {_scalar(venue['short'])}",
        f"    type: {venue['type']}",
        f"  arxiv: {_scalar(paper['arxiv'])}",
        f"  doi: {_scalar(paper['doi'])}",
        f"  url: {_scalar(paper['url'])}",
        f"  categories: {_flow(paper['categories'])}",
        f"  kind: {_plain(paper['kind'])}",
        f"  kind_note: {_scalar(paper['kind_note'])}",
        f"  listed_in: {_flow(paper['listed_in'])}",
        "  survey: null",
        "  claims: []",
    ]
    return "\n".join(lines) + "\n"


def combine(existing: str, addition: str) -> str:
    """The existing file's text with ``addition`` appended (comments and layout untouched)."""
    if re.fullmatch(r"(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*\[\][ \t]*\n?(?:[ \t]*(?:#[^\n]*)?\n?)*", existing):
        existing = re.sub(r"^[ \t]*\[\][ \t]*$", "", existing, count=1, flags=re.MULTILINE)
    if existing and not existing.endswith("\n"):
        existing += "\n"
    separator = "\n" if existing.strip() else ""
    return existing + separator + addition


# ---------------------------------------------------------------------------------------------


def plan(
    entries: list[Entry], catalogue: Catalogue, categories: list[str], kind: str, kind_note: str | None
) -> tuple[list[tuple[Entry, dict[str, Any]]], list[str]]:
    """The papers to add (each with its BibTeX entry) and notes about skipped duplicates."""
    taken = set(catalogue.keys())
    titles = {normalise_title(p.title): p.key for p in catalogue}
    # the same work under another title: an arXiv id or a DOI already catalogued (DOIs ignore case)
    known = {("arXiv id", p.arxiv): p.key for p in catalogue if p.arxiv}
    known |= {("DOI", p.doi.lower()): p.key for p in catalogue if p.doi}
    new: list[tuple[Entry, dict[str, Any]]] = []
    notes: list[str] = []
    for entry in entries:
        title = _get(entry, "title") or ""
        norm = normalise_title(title)
        if norm in titles:
            notes.append(f"skipped '{entry.key}': '{title}' is already paper '{titles[norm]}'")
            continue
        arxiv, doi = _arxiv_of(entry), _doi_of(entry)
        ids = [("arXiv id", arxiv)] if arxiv else []
        ids += [("DOI", doi.lower())] if doi else []
        match = next((ident for ident in ids if ident in known), None)
        if match is not None:
            notes.append(f"skipped '{entry.key}': {match[0]} {match[1]} is already paper '{known[match]}'")
            continue
        authors = _authors(entry)
        # the first author's von and Last parts: "van der Maaten, Laurens" and "Laurens van der
        # Maaten" both give "vandermaaten" (BibTeX reads "Jeffrey De Fauw" as First "Jeffrey De":
        # write "De Fauw, Jeffrey" or "Jeffrey {De Fauw}")
        stem = key_stem(authors[0].surname) if authors else ""
        year = _get(entry, "year") or ""
        key = next_free_key(stem, year, taken) if stem else f"{entry.key}"
        paper = paper_from_entry(entry, key, categories, kind, kind_note)
        taken.add(key)
        titles[norm] = key
        known |= dict.fromkeys(ids, key)
        new.append((entry, paper))
    return new, notes


def _explain(
    exc: CatalogueError,
    combined: str,
    addition: str,
    new: list[tuple[Entry, dict[str, Any]]],
    bib: Path,
    name: str,
) -> str:
    """Problems of the combined text, told as problems of the .bib entries that caused them."""
    problems = getattr(exc, "problems", None)
    first_new_line = combined.count("\n") - addition.count("\n") + 1
    if not problems:
        return f"{display_path(bib)}: the entries would make {name} invalid; it is unchanged\n  {exc}"
    starts = []  # (first line in combined text, entry, paper)
    line = first_new_line
    for entry, paper in new:
        starts.append((line, entry, paper))
        line += paper_yaml(paper).count("\n") + 1
    lines = []
    for problem in problems:
        owner = None
        for start, entry, paper in starts:
            if problem.line is not None and problem.line >= start:
                owner = (entry, paper)
        if owner is None:
            lines.append(problem.render(name))
            continue
        entry, paper = owner
        where = f"{display_path(bib)}:{(entry.start_line or 0) + 1}"
        field = f", field '{problem.field}'" if problem.field else ""
        lines.append(
            f"{where}: entry '{entry.key}' (would be paper '{paper['key']}'){field}: {problem.message}"
        )
    return (
        f"{display_path(bib)}: {len(problems)} problem(s); nothing was imported and {name} is unchanged\n  "
        + "\n  ".join(lines[:20])
    )


def run(args: argparse.Namespace) -> int:
    """Import; print what was (or would be) added."""
    target: Path = args.file or default_path()
    catalogue = load_catalogue(target)
    entries = read_bib(args.bib)
    kind_note = args.kind_note
    if args.kind == "off-topic" and not kind_note:
        raise CatalogueError("--kind off-topic needs --kind-note saying why the papers are off-topic")
    new, notes = plan(entries, catalogue, list(dict.fromkeys(args.category)), args.kind, kind_note)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not new:
        print("nothing to add")
        return 0
    blocks = [paper_yaml(paper) for _, paper in new]
    addition = "\n".join(blocks)
    existing = target.read_text(encoding="utf-8")
    combined = combine(existing, addition)
    name = display_path(target)
    try:
        parse_catalogue(combined, target)
    except CatalogueError as exc:
        raise CatalogueError(_explain(exc, combined, addition, new, args.bib, name)) from None
    if args.dry_run:
        print(f"would add {len(new)} papers to {name}:")
        print(addition, end="")
        return 0
    # the file as written is checked once more before it replaces the old one
    atomic_write(target, combined, check=load_catalogue)
    print(f"added {len(new)} papers to {name}: {', '.join(p['key'] for _, p in new)}")
    return 0
