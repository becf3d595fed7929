"""BibTeX out of the catalogue, and BibTeX files read in (bibtexparser 2).

:func:`entry_for` maps a :class:`~atlas.catalogue.Paper` to a BibTeX entry (``inproceedings`` for
conference and workshop papers, ``article`` for journals, ``misc`` with ``eprint`` for arXiv
preprints, ``incollection`` for book chapters); :func:`to_bibtex` writes a list of papers;
:func:`read_bib` reads a ``.bib`` file and refuses anything malformed with the file and line;
:func:`split_names` splits its author lists by BibTeX's own rules (bibtexparser's name splitting).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import bibtexparser
from bibtexparser.middlewares.names import (
    InvalidNameError,
    parse_single_name_into_parts,
    split_multiple_persons_names,
)
from bibtexparser.model import Entry, Field
from pylatexenc.latex2text import LatexNodes2Text
from pylatexenc.latexencode import UnicodeToLatexEncoder

from atlas.catalogue import Paper, display_path
from atlas.errors import CatalogueError

__all__ = ["Person", "entry_for", "latex_unescape", "protect_title", "read_bib", "split_names", "to_bibtex"]

#: Words kept capitalised even by sentence-case bibliography styles.
PROPER_WORDS = frozenset(
    {
        "Bayes", "Bayesian", "Boltzmann", "Fourier", "Gaussian", "Hessian", "Huffman", "Kronecker",
        "Markov", "Monte", "Carlo", "Taylor", "Winograd", "Hebbian", "Tucker", "Lagrangian", "Toeplitz",
    }
)  # fmt: skip

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
# a word: letters (any script) and digits, with inner - + ' / . (so "Müller" is one word, not "M" + "ller")
_WORD_RE = re.compile(r"[^\W_](?:[^\W_]|[-+'/.])*(?:[^\W_]|\+)|[^\W_]")
# Non-ASCII to LaTeX that pdflatex compiles without packages: é -> {\'e}, − -> {\ensuremath{-}},
# – -> {\textendash}; a character with no LaTeX form becomes its code point in ASCII ("unihex").
_TO_LATEX = UnicodeToLatexEncoder(
    non_ascii_only=True, replacement_latex_protection="braces-all", unknown_char_policy="unihex"
)
_TO_TEXT = LatexNodes2Text()


def _escape(text: str) -> str:
    """LaTeX specials escaped and every non-ASCII character written as LaTeX: pure ASCII."""
    return _TO_LATEX.unicode_to_latex("".join(_SPECIAL.get(ch, ch) for ch in text))


def _needs_protection(word: str) -> bool:
    """Acronyms, mixed case (``CNN``, ``MobileNets``, ``XNOR-Net``) and proper nouns keep their case."""
    if word in PROPER_WORDS:
        return True
    parts = re.split(r"[-/]", word)
    for part in parts:
        if any(ch.isupper() for ch in part[1:]):
            return True
        if len(part) == 1 and part.isupper() and part != "A":
            return True
    return False


def protect_title(title: str) -> str:
    """The title with LaTeX specials escaped, capitals that must stay capitals braced and non-ASCII
    written as LaTeX: ``MobileNets: Efficient CNNs`` -> ``{MobileNets}: Efficient {CNNs}``."""
    specials = "".join(_SPECIAL.get(ch, ch) for ch in title)
    braced = _WORD_RE.sub(
        lambda m: f"{{{m.group(0)}}}" if _needs_protection(m.group(0)) else m.group(0), specials
    )
    return _TO_LATEX.unicode_to_latex(braced)


def latex_unescape(text: str) -> str:
    """Undo :func:`protect_title` and common BibTeX markup: braces, ``\\&``, accents and other
    LaTeX macros (``{\\"u}`` -> ``ü``, ``--`` -> ``–``), ``~`` and runs of whitespace."""
    text = re.sub(r"(?<!\\)([%&])", r"\\\1", text)  # bare % and & (in a URL) are text, not LaTeX
    text = _TO_TEXT.latex_to_text(text).replace("\N{NO-BREAK SPACE}", " ")
    return re.sub(r"\s+", " ", text).strip()


def entry_for(paper: Paper) -> Entry:
    """The BibTeX entry for one paper, keyed by the paper's key."""
    venue = paper.venue
    fields: list[Field] = [
        Field("title", protect_title(paper.title)),
        Field("author", " and ".join(_escape(a) for a in paper.authors)),
    ]
    if venue.type in ("conference", "workshop"):
        entry_type = "inproceedings"
        fields.append(Field("booktitle", _escape(venue.name)))
    elif venue.type == "journal":
        entry_type = "article"
        fields.append(Field("journal", _escape(venue.name)))
    elif venue.type == "book":
        entry_type = "incollection"
        fields.append(Field("booktitle", _escape(venue.name)))
    else:  # preprint
        entry_type = "misc"
        if not paper.arxiv:
            fields.append(Field("howpublished", _escape(venue.name)))
    fields.append(Field("year", str(paper.year)))
    if paper.arxiv:
        fields.append(Field("eprint", paper.arxiv))
        fields.append(Field("archivePrefix", "arXiv"))
        if "/" in paper.arxiv:  # old-style ids name their archive: cs/0101001
            fields.append(Field("primaryClass", paper.arxiv.split("/", 1)[0]))
    if paper.doi:
        fields.append(Field("doi", paper.doi))
    url = paper.url or paper.links.get("arxiv") or paper.links.get("doi")
    if url:
        fields.append(Field("url", url))
    return Entry(entry_type, paper.key, fields)


def to_bibtex(papers: Iterable[Paper]) -> str:
    """A BibTeX file's text with one entry per paper, in the order given."""
    library = bibtexparser.Library()
    for paper in papers:
        library.add(entry_for(paper))
    return bibtexparser.write_string(library)


@dataclass(frozen=True)
class Person:
    """One name of a BibTeX name list, in BibTeX's four parts, each LaTeX-decoded."""

    first: str
    von: str
    last: str
    jr: str

    @property
    def surname(self) -> str:
        """The von and Last parts: ``van der Maaten`` (what a key is made of)."""
        return " ".join(part for part in (self.von, self.last) if part)

    @property
    def full(self) -> str:
        """``First von Last``, then ``, Jr`` when there is one: how papers.yaml writes an author."""
        name = " ".join(part for part in (self.first, self.surname) if part)
        return f"{name}, {self.jr}" if self.jr else name


def split_names(text: str) -> list[Person]:
    """A BibTeX name list (``and``-separated, LaTeX as in the file) split by bibtexparser's
    implementation of BibTeX's rules, so ``van der Maaten, Laurens`` and ``Laurens van der Maaten``
    are the same person; ``and others`` is dropped. Each part is decoded after splitting, so braces
    keep a group together (``{Google Brain}``, ``Yann {Le Cun}``) and ``{\'E}mile`` is ``Émile``.
    Raises ``ValueError`` (bibtexparser's ``InvalidNameError``) for a name it cannot split, such as
    ``Han, Song, Jr, X``."""
    people = []
    for name in split_multiple_persons_names(text):
        if name.strip().lower() == "others":
            continue
        parts = parse_single_name_into_parts(name)
        people.append(Person(*(latex_unescape(" ".join(words))
                               for words in (parts.first, parts.von, parts.last, parts.jr))))
    return people


def _field(entry: Entry, name: str) -> str | None:
    for field in entry.fields:
        if field.key.lower() == name:
            value = field.value
            return value if isinstance(value, str) else str(value)
    return None


def read_bib(path: Path) -> list[Entry]:
    """The entries of a ``.bib`` file. Raises :class:`CatalogueError` naming the file and line when
    the file cannot be read, is empty, has a block that does not parse (unbalanced braces, duplicate
    keys or fields, ...) or has an entry without title, author or year."""
    path = Path(path)
    name = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogueError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CatalogueError(f"{name}:{line}: not UTF-8 text") from None
    if not text.strip():
        raise CatalogueError(f"{name}: the file is empty")
    splitter_log = logging.getLogger("bibtexparser.splitter")
    level = splitter_log.level
    splitter_log.setLevel(logging.CRITICAL)  # its failures are reported below, as errors
    try:
        library = bibtexparser.parse_string(text)
    finally:
        splitter_log.setLevel(level)
    problems: list[tuple[int, str]] = []
    for block in library.failed_blocks:
        line = (block.start_line or 0) + 1
        error = block.error
        message = getattr(error, "abort_reason", None) or str(error)
        message = next((ln.strip() for ln in message.splitlines() if ln.strip()), type(error).__name__)
        message = message.split(". Note:")[0]
        if not type(block).__name__.startswith("Duplicate"):
            message = f"cannot parse the block starting here: {message}"
        problems.append((line, message))
    for entry in library.entries:
        line = (entry.start_line or 0) + 1
        missing = [f for f in ("title", "author", "year") if not (_field(entry, f) or "").strip()]
        if missing:
            problems.append((line, f"entry '{entry.key}' has no {', '.join(missing)}"))
            continue
        year = latex_unescape(_field(entry, "year") or "")
        if not re.fullmatch(r"[0-9]{4}", year):
            problems.append((line, f"entry '{entry.key}', field 'year': {year!r} is not a year"))
        try:
            split_names(_field(entry, "author") or "")
        except InvalidNameError as exc:
            problems.append((line, f"entry '{entry.key}', field 'author': cannot split the name "
                                   f"{exc.name.strip()!r}: {exc.reason.lower()}"))
    for comment in library.comments:
        # text outside entries that starts like an entry is a typo the parser skipped silently
        body = getattr(comment, "comment", "")
        if re.search(r"^\s*@", body, re.MULTILINE):
            line = (comment.start_line or 0) + 1
            problems.append((line, "text that looks like an entry but does not parse as one"))
    if problems:
        lines = [f"{name}:{line}: {message}" for line, message in sorted(problems)]
        if len(lines) == 1:
            raise CatalogueError(lines[0])
        raise CatalogueError(f"{name}: {len(lines)} problems\n  " + "\n  ".join(lines[:20]))
    if not library.entries:
        raise CatalogueError(f"{name}: no BibTeX entries found")
    return list(library.entries)
