"""The catalogue: papers.yaml read into the schema's models (``atlas.schema``), every problem located.

>>> catalogue = load_catalogue()          # doctest: +SKIP
>>> paper = catalogue.get("han2015")      # doctest: +SKIP
>>> paper.claim("lenet-300-100").checks   # doctest: +SKIP

:func:`parse_text` reads YAML into plain values that remember the line of each mapping key and list
item (:class:`LineDict`, :class:`LineList`); :func:`validate` turns them into :class:`Paper` models
and every :class:`Problem`, walking each pydantic error's ``loc`` through the parsed text to its
line. Every load checks the whole file; anything wrong raises one
:class:`~atlas.errors.CatalogueError` naming the file, line, paper key and field of each problem.
A catalogue that passed is kept as a JSON snapshot in the cache folder, read back (and validated
again by the models) while papers.yaml and the schema's code are unchanged: no YAML parse.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, get_args

import pydantic
from pydantic import BaseModel, ValidationError

import atlas
from atlas import schema
from atlas.errors import AtlasError, CatalogueError, UnknownKeyError
from atlas.fsio import atomic_write, default_cache_dir
from atlas.schema import CATEGORIES, KINDS, Check, Claim, Paper, SurveyRow, Tolerance, Venue, normalise_title

__all__ = [
    "CATEGORIES",
    "KINDS",
    "Catalogue",
    "Check",
    "Claim",
    "Paper",
    "SurveyRow",
    "Tolerance",
    "Venue",
    "default_path",
    "display_path",
    "load_catalogue",
    "matches",
    "parse_catalogue",
    "search_terms",
]

#: At most this many problems are reported at once.
MAX_PROBLEMS = 20


class Catalogue:
    """All papers of one papers.yaml, in file order."""

    def __init__(self, papers: list[Paper], path: Path) -> None:
        self.papers: list[Paper] = papers
        self.path: Path = path
        self._by_key: dict[str, Paper] = {p.key: p for p in papers}

    def get(self, key: str) -> Paper:
        """The paper with this key; :class:`UnknownKeyError` with the closest keys otherwise."""
        try:
            return self._by_key[key]
        except KeyError:
            pass
        close = difflib.get_close_matches(key, list(self._by_key), n=5, cutoff=0.6)
        if close:
            raise UnknownKeyError(f"unknown paper key '{key}'; did you mean: {', '.join(close)}?")
        raise UnknownKeyError(f"unknown paper key '{key}'", hint="`atlas list` shows every key")

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Paper]:
        return iter(self.papers)

    def __len__(self) -> int:
        return len(self.papers)

    def keys(self) -> list[str]:
        """Every key, in file order."""
        return [p.key for p in self.papers]

    def filter(
        self,
        category: str | None = None,
        kind: str | None = None,
        year: int | None = None,
        search: str | Iterable[str] | None = None,
    ) -> list[Paper]:
        """Papers in ``category`` (one of their categories), of ``kind``, from ``year`` and matching
        every word of ``search`` (see :func:`matches`); ``None`` means any."""
        terms = search_terms(search) if search is not None else []
        return [
            p
            for p in self.papers
            if (category is None or category in p.categories)
            and (kind is None or p.kind == kind)
            and (year is None or p.year == year)
            and matches(p, terms)
        ]

    def __repr__(self) -> str:
        return f"Catalogue({len(self.papers)} papers from {self.path})"


def search_terms(words: str | Iterable[str]) -> list[str]:
    """The words of a search (whitespace-separated, in one string or several) reduced as titles are
    compared (:func:`~atlas.schema.normalise_title`: accents dropped, lower case, letters and digits
    only); :class:`AtlasError` when none has a letter or digit."""
    given = [words] if isinstance(words, str) else list(words)
    terms = [normalise_title(word) for text in given for word in text.split()]
    terms = [term for term in terms if term]
    if not terms:
        raise AtlasError(f"nothing to search for in {' '.join(given)!r}: give a word with a letter or digit")
    return terms


_PIECE = re.compile(r"[\W_]+")
_TOKEN = re.compile(r"[a-z]+|[0-9]+")


def _word_starts(text: str) -> tuple[str, list[int]]:
    """``text`` reduced by :func:`~atlas.schema.normalise_title` and where each of its words starts
    there (a word: a run of letters or of digits, so ``han2015`` is ``han`` and ``2015``)."""
    tokens = [t for piece in _PIECE.split(text) for t in _TOKEN.findall(normalise_title(piece))]
    starts, at = [], 0
    for token in tokens:
        starts.append(at)
        at += len(token)
    return "".join(tokens), starts


def matches(paper: Paper, terms: Sequence[str]) -> bool:
    """Whether each term (from :func:`search_terms`) begins at a word of the paper's key, title,
    survey title or one of its authors: ``han`` finds Han and Hanan, not Zhang; ``nettrim`` finds
    Net-Trim, ``2015`` finds han2015."""
    texts = (paper.key, paper.title, paper.survey_title or "", *paper.authors)
    fields = [_word_starts(text) for text in texts]
    return all(
        any(text.startswith(term, at) for text, starts in fields for at in starts) for term in terms
    )


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


class LineDict(dict):
    """A mapping parsed from YAML that remembers its own line and each key's line (1-based)."""

    line: int
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class LineList(list):
    """A sequence parsed from YAML that remembers its own line and each item's line (1-based)."""

    line: int
    item_lines: list[int]


class YamlSyntaxError(Exception):
    """The text is not YAML; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


_STR_TAG = "tag:yaml.org,2002:str"
_BUSY = object()  # a mapping or list being converted: an alias to it from inside is a cycle


def _convert(node: Any, loader: Any, done: dict[int, Any]) -> Any:
    """One YAML node as plain values with lines; ``done`` holds the nodes converted so far (an
    alias is its anchor's node again: converted once, and a cycle is refused)."""
    if node.id == "scalar":
        return node.value if node.tag == _STR_TAG else loader.construct_object(node, deep=True)
    previous = done.get(id(node))
    if previous is _BUSY:
        mark = node.start_mark
        message = "an alias refers to a mapping or list that contains it"
        raise YamlSyntaxError(message, mark.line + 1, mark.column + 1)
    if previous is not None:
        return previous
    done[id(node)] = _BUSY
    result: LineDict | LineList
    if node.id == "mapping":
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        result.duplicates = []
        for key_node, value_node in node.value:
            key = _convert(key_node, loader, done)
            try:
                hash(key)
            except TypeError:
                key = repr(key)
            line = key_node.start_mark.line + 1
            if key in result:
                result.duplicates.append((key, line))
                continue
            result.key_lines[key] = line
            result[key] = _convert(value_node, loader, done)
    else:
        result = LineList(_convert(item, loader, done) for item in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [item.start_mark.line + 1 for item in node.value]
    done[id(node)] = result
    return result


def _compose(text: str, loader_class: Any) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _convert(node, loader, {})
    except RecursionError:
        raise YamlSyntaxError("nested too deeply", None, None) from None
    finally:
        loader.dispose()


def parse_text(text: str) -> Any:
    """Parse YAML text into :class:`LineDict` / :class:`LineList` / scalars.

    Raises :class:`YamlSyntaxError` with the line and column yaml reports.
    """
    import yaml  # here: a catalogue read from its snapshot needs no YAML

    try:  # libyaml when present: the same nodes and lines, several times faster
        return _compose(text, getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        pass  # parsed again below, for the pure-Python parser's messages and positions
    try:
        return _compose(text, yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return_line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise YamlSyntaxError(problem or str(exc), return_line, column) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None, None) from None


# ---------------------------------------------------------------------------------------------
# problems: pydantic's errors told by file line, paper key and field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalogue, located by line, paper key and field."""

    line: int | None
    message: str
    key: str | None = None
    field: str | None = None

    def render(self, filename: str) -> str:
        """``papers.yaml:12: paper 'han2015', field 'arxiv': ...``."""
        where = f"{filename}:{self.line}" if self.line else filename
        parts = []
        if self.key is not None:
            parts.append(f"paper '{self.key}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        subject = ", ".join(parts)
        return f"{where}: {subject + ': ' if subject else ''}{self.message}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (dict, "a mapping"), (date, "a date"), (bytes, "binary data")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


_PLAIN_NUMBER = re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?$")


def _model_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names (as written in the file) of the model at ``loc`` below a paper."""
    model: type[BaseModel] | None = Paper
    for step in loc:
        if isinstance(step, int) or model is None:
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == step), None)
        model = _inner_model(field.annotation) if field is not None else None
    return [field.alias or name for name, field in model.model_fields.items()] if model else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_BOUNDS = {"greater_than": ("more than", "gt"), "greater_than_equal": ("at least", "ge"),
           "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}
_QUOTABLE = ("an integer", "a number", "a boolean", "a date")


def _message(error: Any) -> str:
    """pydantic's error in the catalogue's words: what is wrong and, where it helps, the fix."""
    kind, value, ctx, loc = error["type"], error.get("input"), error.get("ctx") or {}, error["loc"]
    got = _type_name(value)
    if kind == "missing":
        return "required field is missing"
    if kind in ("extra_forbidden", "invalid_key"):
        return f"unknown field (allowed: {', '.join(_model_fields(loc[:-1]))})"
    if kind == "string_type":
        return f"expected a string, got {got}" + (" (quote it)" if got in _QUOTABLE else "")
    if kind in ("int_type", "float_type"):
        unquote = " (remove the quotes)" if isinstance(value, str) and _PLAIN_NUMBER.match(value) else ""
        return f"expected {'an integer' if kind == 'int_type' else 'a number'}, got {got}{unquote}"
    if kind == "finite_number":
        return f"expected a finite number, got {value!r}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping with {', '.join(_model_fields(loc))}, got {got}"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
        return f"{value!r} is not one of: {choices}" if isinstance(value, str) else \
            f"expected one of: {choices}; got {got}"
    if kind in _BOUNDS:
        words, name = _BOUNDS[kind]
        return f"must be {words} {ctx[name]:g}, got {value!r}"
    return str(error["msg"])


def _locate(entry: LineDict, loc: tuple[Any, ...]) -> tuple[int, str | None]:
    """The line and the field label (``claims[lenet-300-100].checks[0].direction``) of ``loc`` in
    one paper's parsed entry. A missing field is reported at its mapping's line; an item of a list
    of scalars (authors, categories) at its own line under the list's name."""
    node: Any = entry
    line = entry.line
    label: list[str] = []
    for step in loc:
        if isinstance(node, LineDict) and step in node.key_lines:
            line = node.key_lines[step]
            label.append(str(step))
            node = node[step]
        elif isinstance(node, LineList) and isinstance(step, int) and 0 <= step < len(node):
            line, node = node.item_lines[step], node[step]
            if isinstance(node, LineDict) and label:
                item_id = node.get("id")
                label[-1] += f"[{item_id}]" if isinstance(item_id, str) else f"[{step}]"
        else:  # not in the text: a missing field, at the line of the mapping that lacks it
            line = node.line if isinstance(node, LineDict) else line
            label.append(str(step))
            node = None
    return line, ".".join(label) or None


def _paper_label(entry: LineDict, line: int) -> str:
    key = entry.get("key")
    return key if isinstance(key, str) else f"#{line}"


def _duplicates(node: Any, label: str, key: str, problems: list[Problem]) -> None:
    """Every field given twice in one paper's entry."""
    if isinstance(node, LineDict):
        prefix = f"{label}." if label else ""
        for name, line in node.duplicates:
            problems.append(Problem(line, "given twice", key, prefix + str(name)))
        for name, value in node.items():
            _duplicates(value, prefix + str(name), key, problems)
    elif isinstance(node, LineList):
        for i, item in enumerate(node):
            item_id = item.get("id") if isinstance(item, LineDict) else None
            _duplicates(item, f"{label}[{item_id if isinstance(item_id, str) else i}]", key, problems)


def _check_paper(entry: Any, line: int, problems: list[Problem]) -> Paper | None:
    if not isinstance(entry, LineDict):
        problems.append(Problem(line, f"each paper must be a mapping, got {_type_name(entry)}"))
        return None
    label = _paper_label(entry, line)
    _duplicates(entry, "", label, problems)
    _duplicate_claim_ids(entry, label, problems)
    try:
        paper = Paper.model_validate(entry)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            ctx = error.get("ctx") or {}
            loc = tuple(error["loc"])
            if ctx.get("field"):
                loc = (*loc[:-1], ctx["field"])
            where, field = _locate(entry, loc)
            if ctx.get("at"):
                where = _locate(entry, (*loc[:-1], ctx["at"]))[0]
            problems.append(Problem(where, _message(error), label, field))
        return None
    paper._line = entry.line
    return paper


def _duplicate_claim_ids(entry: LineDict, key: str, problems: list[Problem]) -> None:
    claims = entry.get("claims")
    first: dict[str, int] = {}
    for claim in claims if isinstance(claims, LineList) else ():
        claim_id = claim.get("id") if isinstance(claim, LineDict) else None
        if not isinstance(claim_id, str):
            continue
        line = claim.key_lines["id"]
        if claim_id in first:
            message = f"duplicate claim id {claim_id!r} (first at line {first[claim_id]})"
            problems.append(Problem(line, message, key, f"claims[{claim_id}].id"))
        else:
            first[claim_id] = line


def validate(data: Any) -> tuple[list[Paper], list[Problem]]:
    """The papers of a parsed catalogue (as returned by :func:`parse_text`) and every problem in it,
    in file order; the papers are complete only when there is no problem."""
    if data is None:
        return [], []
    if not isinstance(data, LineList):
        line = getattr(data, "line", 1)
        return [], [Problem(line, f"the top level must be a list of papers, got {_type_name(data)}")]
    problems: list[Problem] = []
    checked = []
    for entry, line in zip(data, data.item_lines, strict=True):
        paper = _check_paper(entry, line, problems)
        if paper is not None:
            checked.append((paper, entry))
    keys = {e["key"] for e in data if isinstance(e, LineDict) and isinstance(e.get("key"), str)}
    problems.extend(_across(checked, keys))
    return [paper for paper, _ in checked], sorted(problems, key=lambda p: p.line or 0)


def _across(checked: list[tuple[Paper, LineDict]], keys: set[str]) -> Iterator[Problem]:
    """What no single paper shows: keys, survey references, titles, arXiv ids and DOIs given twice,
    and ``same_work_as`` links that name no paper (of all ``keys``) or do not link back."""
    first_key: dict[str, int] = {}
    first_ref: dict[int, str] = {}
    first_title: dict[str, str] = {}
    by_key: dict[str, Paper] = {}
    for paper, entry in checked:
        if paper.key in first_key:
            message = f"duplicate key (first at line {first_key[paper.key]})"
            yield Problem(entry.key_lines["key"], message, paper.key, "key")
        else:
            first_key[paper.key] = entry.key_lines["key"]
            by_key[paper.key] = paper
        if paper.survey is not None:
            ref = paper.survey.ref
            if ref in first_ref:
                message = f"survey reference [{ref}] is also paper '{first_ref[ref]}'"
                yield Problem(entry["survey"].key_lines["ref"], message, paper.key, "survey.ref")
            else:
                first_ref[ref] = paper.key
        norm = normalise_title(paper.title)
        if norm in first_title:
            message = f"same title as paper '{first_title[norm]}'"
            yield Problem(entry.key_lines["title"], message, paper.key, "title")
        elif norm:
            first_title[norm] = paper.key
    for paper, entry in checked:
        for other in paper.same_work_as:
            if other not in keys:
                message = f"'{other}' is not a paper of the catalogue"
            elif other in by_key and paper.key not in by_key[other].same_work_as:
                message = f"'{other}' does not link back (add '{paper.key}' to its same_work_as)"
            else:
                continue
            yield Problem(entry.key_lines["same_work_as"], message, paper.key, "same_work_as")
    for field, label in (("arxiv", "arXiv id"), ("doi", "DOI")):
        seen: dict[str, list[Paper]] = {}
        for paper, entry in checked:
            value = getattr(paper, field)
            if not value:
                continue
            ident = value.lower()  # DOIs are case-insensitive
            for first in seen.get(ident, []):
                if first.key not in paper.same_work_as and paper.key not in first.same_work_as:
                    message = (
                        f"{label} {value} is also paper '{first.key}'; a duplicate, or link the two with "
                        "same_work_as if one is the other's preprint or published version"
                    )
                    yield Problem(entry.key_lines[field], message, paper.key, field)
            seen.setdefault(ident, []).append(paper)


# ---------------------------------------------------------------------------------------------
# loading


def default_path() -> Path:
    """``$ATLAS_PAPERS`` if set, else ``papers.yaml`` of the checkout, or of an installed package
    (:data:`atlas.ROOT`)."""
    env = os.environ.get("ATLAS_PAPERS")
    return Path(env) if env else atlas.ROOT / "papers.yaml"


def display_path(path: Path) -> str:
    """The path as messages show it: relative to the working directory when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _raise_problems(problems: list[Problem], name: str) -> None:
    shown = [p.render(name) for p in problems[:MAX_PROBLEMS]]
    if len(problems) == 1:
        error = CatalogueError(shown[0])
    else:
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        error = CatalogueError(f"{name}: {len(problems)} problems\n  " + "\n  ".join(shown) + more)
    error.problems = problems  # type: ignore[attr-defined]  # for callers that map lines elsewhere
    raise error


def parse_catalogue(text: str, path: Path) -> Catalogue:
    """Check YAML text against the schema and build a :class:`Catalogue` (``path`` names it in
    messages). Raises :class:`CatalogueError` listing every problem (up to 20)."""
    name = display_path(path)
    try:
        data = parse_text(text)
    except YamlSyntaxError as exc:
        where = f"{name}:{exc.line}:{exc.column}" if exc.line else name
        raise CatalogueError(f"{where}: not valid YAML: {exc.message}") from None
    if data is None:  # an empty file, or only comments
        raise CatalogueError(f"{name}: is empty: it should hold a YAML list of papers",
                             hint="restore it with git, or write `[]` for a catalogue with no papers")
    papers, problems = validate(data)
    if problems:
        _raise_problems(problems, name)
    return Catalogue(papers, path)


class _Snapshot(BaseModel):
    """A catalogue that passed every check, as the cache folder keeps it."""

    source: str  # what it was read from: see :func:`_snapshot_of`
    lines: list[int]
    papers: list[Paper]


def _snapshot_of(blob: bytes, resolved: str) -> tuple[Path, str] | None:
    """Where the snapshot of the catalogue at ``resolved`` is kept (one file per catalogue path) and
    what it must have been read from: SHA-256 of papers.yaml's bytes and of the code that checks
    them (the schema, this module, pydantic's version). None when there can be no snapshot."""
    digest = hashlib.sha256(blob)
    try:
        for module in (schema.__file__, __file__):
            digest.update(Path(module).read_bytes())
        folder = default_cache_dir() / "catalogue"
    except (OSError, TypeError, RuntimeError):  # code not in files, or no home folder for the cache
        return None
    digest.update(pydantic.VERSION.encode())
    return folder / f"{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.json", digest.hexdigest()


def _read_snapshot(file: Path, source: str, path: Path) -> Catalogue | None:
    """The catalogue of a snapshot of ``source``; None when there is none, another, or a damaged one."""
    try:
        snapshot = _Snapshot.model_validate_json(file.read_bytes())
    except (OSError, ValueError):  # missing, unreadable or damaged (ValidationError is a ValueError)
        return None
    if snapshot.source != source or len(snapshot.lines) != len(snapshot.papers):
        return None
    for paper, line in zip(snapshot.papers, snapshot.lines, strict=True):
        paper._line = line
    return Catalogue(snapshot.papers, path)


def _write_snapshot(file: Path, source: str, catalogue: Catalogue) -> None:
    snapshot = _Snapshot(source=source, lines=[p.line for p in catalogue], papers=catalogue.papers)
    # defaults are left out: reading gives them back (and an empty same_work_as is not valid input);
    # a cache folder that cannot be written only means that the next load parses the YAML again
    with contextlib.suppress(OSError):
        atomic_write(file, snapshot.model_dump_json(by_alias=True, exclude_defaults=True))


#: resolved path -> (mtime_ns, size, catalogue)
_CACHE: dict[str, tuple[int, int, Catalogue]] = {}


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and check papers.yaml (default: :func:`default_path`); cached per path and mtime in
    the process, and across processes as a snapshot in the cache folder."""
    path = Path(path) if path is not None else default_path()
    name = display_path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise CatalogueError(f"{name}: no such file", hint="set ATLAS_PAPERS or run from a clone") from None
    except OSError as exc:
        raise CatalogueError(f"{name}: cannot read: {exc.strerror or exc}") from None
    resolved = str(path.resolve())
    cached = _CACHE.get(resolved)
    if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    try:
        blob = path.read_bytes()
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CatalogueError(f"{name}: cannot read: {exc.strerror or exc}") from None
    snapshot = _snapshot_of(blob, resolved)
    catalogue = _read_snapshot(*snapshot, path) if snapshot is not None else None
    if catalogue is None:
        catalogue = parse_catalogue(text, path)
        if snapshot is not None:
            _write_snapshot(*snapshot, catalogue)
    _CACHE[resolved] = (stat.st_mtime_ns, stat.st_size, catalogue)
    return catalogue
