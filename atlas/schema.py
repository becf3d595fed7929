"""The papers.yaml schema: every field, its type and its allowed values, checked with line numbers.

:func:`parse_text` reads YAML text into plain Python values that remember the line each mapping key
and each list item came from (:class:`LineDict`, :class:`LineList`); :func:`validate` checks a parsed
catalogue and returns every :class:`Problem` it finds. ``atlas.catalogue`` turns problems into a
:class:`~atlas.errors.CatalogueError` and the checked data into dataclasses.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import yaml

CATEGORIES: tuple[str, ...] = (
    "survey",
    "distillation",
    "pruning",
    "quantization",
    "low-rank",
    "dynamic-computation",
    "compact-design",
    "others",
)
KINDS: tuple[str, ...] = ("method", "survey", "hardware/system", "off-topic")
VENUE_TYPES: tuple[str, ...] = ("conference", "journal", "workshop", "preprint", "book")
SEEDS: tuple[str, ...] = ("list", "annotated")
SURVEY_CLASSES: tuple[str, ...] = (
    "Transfer",
    "Pruning",
    "Quantization",
    "Decomposition and Low-Rank",
    "Sparse",
    "Design",
)
CONFIDENCES: tuple[str, ...] = ("high", "checked", "recalled")
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "equal")

KEY_RE = re.compile(r"^[a-z]+[0-9]{4}[a-z]?$")
CLAIM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
QUANTITY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ARXIV_NEW_RE = re.compile(r"^[0-9]{4}\.[0-9]{4,5}$")
ARXIV_OLD_RE = re.compile(r"^[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/[0-9]{7}$")
ARXIV_VERSION_RE = re.compile(r"^(?P<id>.+)v[0-9]+$")
DOI_RE = re.compile(r"^10\.[0-9]{4,9}/\S+$")
URL_RE = re.compile(r"^https?://\S+$")

YEAR_MIN, YEAR_MAX = 1950, 2030

PAPER_REQUIRED = ("key", "title", "authors", "year", "venue", "categories", "kind")
PAPER_OPTIONAL = ("arxiv", "doi", "url", "kind_note", "same_work_as", "listed_in", "survey", "claims")
VENUE_FIELDS = ("name", "short", "type")
SURVEY_FIELDS = ("ref", "class", "conference", "cite", "detailed", "superiority", "weakness")
CLAIM_REQUIRED = ("id", "model", "dataset", "metric", "source", "confidence")
CLAIM_NUMBERS = ("baseline", "compressed", "ratio", "speedup", "bits", "sparsity")
CLAIM_OPTIONAL = (*CLAIM_NUMBERS, "arxiv_version", "note", "checks")
CHECK_REQUIRED = ("quantity", "target", "direction", "tolerance")

#: At most this many problems are reported at once.
MAX_PROBLEMS = 20


def is_arxiv_id(value: str) -> bool:
    """True for a new-style (``1506.02626``) or old-style (``cs/0101001``) arXiv identifier.

    New-style ids are ``YYMM.NNNN`` from April 2007 to December 2014 and ``YYMM.NNNNN`` since
    January 2015, so ``1506.2626`` is not one."""
    if ARXIV_OLD_RE.match(value):
        month = int(value.rsplit("/", 1)[1][2:4])
        return 1 <= month <= 12
    if not ARXIV_NEW_RE.match(value):
        return False
    yymm, number = value.split(".")
    year, month = int(yymm[:2]), int(yymm[2:])
    if not 1 <= month <= 12 or (year, month) < (7, 4):
        return False
    return len(number) == (5 if year >= 15 else 4)


def is_doi(value: str) -> bool:
    """True for a DOI name such as ``10.1109/JPROC.2017.2761740`` (no resolver prefix)."""
    return bool(DOI_RE.match(value))


def normalise_title(title: str) -> str:
    """A title reduced for comparison: ASCII, lower case, letters and digits only."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", ascii_title.lower())


def key_stem(surname: str) -> str:
    """A surname reduced to lower-case ASCII letters, as keys use it (``Juefei-Xu`` -> ``juefeixu``)."""
    ascii_name = unicodedata.normalize("NFKD", surname).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", ascii_name.lower())


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


class LineDict(dict):
    """A mapping parsed from YAML that remembers its own line and each key's line (1-based)."""

    line: int
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]
    duplicates: list[tuple[Any, int]]


class LineList(list):
    """A sequence parsed from YAML that remembers its own line and each item's line (1-based)."""

    line: int
    item_lines: list[int]


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


class YamlSyntaxError(Exception):
    """The text is not YAML; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def _convert(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        result.value_lines = {}
        result.duplicates = []
        for key_node, value_node in node.value:
            key = _convert(key_node, loader)
            try:
                hash(key)
            except TypeError:
                key = repr(key)
            line = key_node.start_mark.line + 1
            if key in result:
                result.duplicates.append((key, line))
                continue
            result.key_lines[key] = line
            result.value_lines[key] = value_node.start_mark.line + 1
            result[key] = _convert(value_node, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = LineList(_convert(item, loader) for item in node.value)
        items.line = node.start_mark.line + 1
        items.item_lines = [item.start_mark.line + 1 for item in node.value]
        return items
    return loader.construct_object(node, deep=True)


def _compose(text: str, loader_class: type[yaml.SafeLoader]) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _convert(node, loader)
    finally:
        loader.dispose()


def parse_text(text: str) -> Any:
    """Parse YAML text into :class:`LineDict` / :class:`LineList` / scalars.

    Raises :class:`YamlSyntaxError` with the line and column yaml reports.
    """
    try:  # libyaml when present: the same nodes and lines, five times faster (0.1 s for papers.yaml)
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
# validation


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    """Collects problems while walking one catalogue."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, line: int | None, message: str, key: str | None = None, field: str | None = None) -> None:
        self.problems.append(Problem(line, message, key, field))

    # -- helpers on one mapping ---------------------------------------------------------------

    @staticmethod
    def line(mapping: LineDict, name: str) -> int:
        return mapping.key_lines.get(name, mapping.line)

    def fields(
        self,
        mapping: LineDict,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        key: str | None,
        prefix: str,
    ) -> None:
        """Unknown, duplicated and missing fields of one mapping."""
        for name, line in mapping.duplicates:
            self.add(line, "given twice", key, f"{prefix}{name}")
        allowed = set(required) | set(optional)
        for name in mapping:
            if name not in allowed:
                self.add(
                    mapping.key_lines.get(name, mapping.line),
                    f"unknown field (allowed: {', '.join(required + optional)})",
                    key,
                    f"{prefix}{name}",
                )
        for name in required:
            if name not in mapping:
                self.add(mapping.line, "required field is missing", key, f"{prefix}{name}")

    def string(
        self, mapping: LineDict, name: str, key: str | None, prefix: str, *, nullable: bool = False
    ) -> str | None:
        if name not in mapping:
            return None
        value = mapping[name]
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            hint = " (quote it)" if _is_number(value) or isinstance(value, bool) else ""
            self.add(
                self.line(mapping, name),
                f"expected a string, got {_type_name(value)}{hint}",
                key,
                f"{prefix}{name}",
            )
            return None
        return value

    def nonempty(
        self, mapping: LineDict, name: str, key: str | None, prefix: str, *, nullable: bool = False
    ) -> str | None:
        value = self.string(mapping, name, key, prefix, nullable=nullable)
        if value is not None and not value.strip():
            self.add(self.line(mapping, name), "must not be empty", key, f"{prefix}{name}")
            return None
        return value

    def choice(
        self, mapping: LineDict, name: str, choices: tuple[str, ...], key: str | None, prefix: str
    ) -> str | None:
        value = self.string(mapping, name, key, prefix)
        if value is not None and value not in choices:
            self.add(
                self.line(mapping, name),
                f"{value!r} is not one of: {', '.join(choices)}",
                key,
                f"{prefix}{name}",
            )
            return None
        return value

    def number(
        self, mapping: LineDict, name: str, key: str | None, prefix: str, *, nullable: bool = True
    ) -> float | None:
        if name not in mapping:
            return None
        value = mapping[name]
        if value is None and nullable:
            return None
        if not _is_number(value):
            self.add(
                self.line(mapping, name),
                f"expected a number, got {_type_name(value)}",
                key,
                f"{prefix}{name}",
            )
            return None
        return value

    # -- the schema ---------------------------------------------------------------------------

    def paper(self, entry: Any, line: int) -> str | None:
        """Check one paper; return its key when the key is usable."""
        if not isinstance(entry, LineDict):
            self.add(line, f"each paper must be a mapping, got {_type_name(entry)}")
            return None
        key_value = entry.get("key")
        key = key_value if isinstance(key_value, str) else None
        label = key if key is not None else f"#{line}"
        self.fields(entry, PAPER_REQUIRED, PAPER_OPTIONAL, label, "")
        if "key" in entry:
            if key is None:
                self.add(
                    self.line(entry, "key"), f"expected a string, got {_type_name(key_value)}", label, "key"
                )
            elif not KEY_RE.match(key):
                self.add(
                    self.line(entry, "key"),
                    f"{key!r} is not a key (surname + year + optional suffix, ^[a-z]+[0-9]{{4}}[a-z]?$)",
                    label,
                    "key",
                )
                key = None
        self.nonempty(entry, "title", label, "")
        self.authors(entry, label)
        year = self.year(entry, label)
        if key is not None and year is not None:
            digits = re.sub(r"[a-z]", "", key)
            if digits != str(year):
                self.add(
                    self.line(entry, "key"),
                    f"key year {digits} differs from the paper's year {year}",
                    label,
                    "key",
                )
        self.venue(entry, label)
        self.identifiers(entry, label)
        self.categories(entry, label)
        kind = self.choice(entry, "kind", KINDS, label, "") if "kind" in entry else None
        note = self.nonempty(entry, "kind_note", label, "", nullable=True)
        if kind == "off-topic" and note is None:
            self.add(
                self.line(entry, "kind"),
                "kind 'off-topic' needs a one-line kind_note saying why",
                label,
                "kind_note",
            )
        if isinstance(note, str) and "\n" in note.strip():
            self.add(self.line(entry, "kind_note"), "must be one line", label, "kind_note")
        self.same_work_as(entry, label)
        self.listed_in(entry, label)
        if entry.get("survey") is not None:
            self.survey(entry, label)
        if entry.get("claims") is not None:
            self.claims(entry, label)
        return key

    def authors(self, entry: LineDict, key: str) -> None:
        if "authors" not in entry:
            return
        authors = entry["authors"]
        if not isinstance(authors, list):
            self.add(
                self.line(entry, "authors"),
                f"expected a list of names, got {_type_name(authors)}",
                key,
                "authors",
            )
            return
        if not authors:
            self.add(self.line(entry, "authors"), "must name at least one author", key, "authors")
        for i, author in enumerate(authors):
            if not isinstance(author, str) or not author.strip():
                self.add(
                    authors.item_lines[i],
                    f"author {i + 1} must be a non-empty string, got {_type_name(author)}",
                    key,
                    "authors",
                )

    def year(self, entry: LineDict, key: str) -> int | None:
        if "year" not in entry:
            return None
        year = entry["year"]
        if not isinstance(year, int) or isinstance(year, bool):
            self.add(
                self.line(entry, "year"), f"expected an integer year, got {_type_name(year)}", key, "year"
            )
            return None
        if not YEAR_MIN <= year <= YEAR_MAX:
            self.add(self.line(entry, "year"), f"{year} is outside {YEAR_MIN}..{YEAR_MAX}", key, "year")
            return None
        return year

    def venue(self, entry: LineDict, key: str) -> None:
        if "venue" not in entry:
            return
        venue = entry["venue"]
        if not isinstance(venue, LineDict):
            self.add(
                self.line(entry, "venue"),
                f"expected a mapping with {', '.join(VENUE_FIELDS)}, got {_type_name(venue)}",
                key,
                "venue",
            )
            return
        self.fields(venue, VENUE_FIELDS, (), key, "venue.")
        self.nonempty(venue, "name", key, "venue.")
        self.nonempty(venue, "short", key, "venue.")
        if "type" in venue:
            self.choice(venue, "type", VENUE_TYPES, key, "venue.")

    def identifiers(self, entry: LineDict, key: str) -> None:
        arxiv = self.string(entry, "arxiv", key, "", nullable=True)
        if arxiv is not None and not is_arxiv_id(arxiv):
            self.add(
                self.line(entry, "arxiv"),
                f"{arxiv!r} is not an arXiv id (1506.02626 or cs/0101001)",
                key,
                "arxiv",
            )
        doi = self.string(entry, "doi", key, "", nullable=True)
        if doi is not None and not is_doi(doi):
            self.add(
                self.line(entry, "doi"),
                f"{doi!r} is not a DOI (10.NNNN/..., without https://doi.org/)",
                key,
                "doi",
            )
        url = self.string(entry, "url", key, "", nullable=True)
        if url is not None and not URL_RE.match(url):
            self.add(self.line(entry, "url"), f"{url!r} is not an http(s) URL", key, "url")

    def categories(self, entry: LineDict, key: str) -> None:
        if "categories" not in entry:
            return
        categories = entry["categories"]
        if not isinstance(categories, list):
            self.add(
                self.line(entry, "categories"),
                f"expected a list, got {_type_name(categories)}",
                key,
                "categories",
            )
            return
        if not categories:
            self.add(self.line(entry, "categories"), "must name at least one category", key, "categories")
        seen: set[Any] = set()
        for i, category in enumerate(categories):
            line = categories.item_lines[i]
            if category not in CATEGORIES:
                self.add(
                    line,
                    f"{category!r} is not a category (one of: {', '.join(CATEGORIES)})",
                    key,
                    "categories",
                )
            elif category in seen:
                self.add(line, f"{category!r} is listed twice", key, "categories")
            seen.add(category if isinstance(category, str) else repr(category))

    def same_work_as(self, entry: LineDict, key: str) -> None:
        """Only the field's form here: that the keys exist and link back is checked in
        :func:`validate`, which sees the whole catalogue."""
        links = entry.get("same_work_as")
        if links is None:
            return
        line = self.line(entry, "same_work_as")
        if not isinstance(links, list) or not links:
            self.add(
                line, f"expected a non-empty list of paper keys, got {_type_name(links)}", key, "same_work_as"
            )
            return
        for i, other in enumerate(links):
            if not isinstance(other, str) or not KEY_RE.match(other):
                self.add(links.item_lines[i], f"{other!r} is not a paper key", key, "same_work_as")
            elif other == key:
                self.add(
                    links.item_lines[i], "a paper cannot be the same work as itself", key, "same_work_as"
                )

    def listed_in(self, entry: LineDict, key: str) -> None:
        if entry.get("listed_in") is None:
            return
        listed = entry["listed_in"]
        if not isinstance(listed, list):
            self.add(
                self.line(entry, "listed_in"), f"expected a list, got {_type_name(listed)}", key, "listed_in"
            )
            return
        for i, seed in enumerate(listed):
            if seed not in SEEDS:
                self.add(
                    listed.item_lines[i], f"{seed!r} is not one of: {', '.join(SEEDS)}", key, "listed_in"
                )
        if len({repr(s) for s in listed}) != len(listed):
            self.add(self.line(entry, "listed_in"), "names a seed twice", key, "listed_in")

    def survey(self, entry: LineDict, key: str) -> None:
        survey = entry["survey"]
        if not isinstance(survey, LineDict):
            self.add(
                self.line(entry, "survey"),
                f"expected a mapping or null, got {_type_name(survey)}",
                key,
                "survey",
            )
            return
        self.fields(survey, SURVEY_FIELDS, (), key, "survey.")
        if "ref" in survey:
            ref = survey["ref"]
            if not isinstance(ref, int) or isinstance(ref, bool) or ref < 1:
                self.add(
                    self.line(survey, "ref"), f"expected a positive integer, got {ref!r}", key, "survey.ref"
                )
        if "class" in survey:
            self.choice(survey, "class", SURVEY_CLASSES, key, "survey.")
        self.nonempty(survey, "conference", key, "survey.")
        if "cite" in survey:
            cite = survey["cite"]
            if cite is not None and (not isinstance(cite, int) or isinstance(cite, bool) or cite < 0):
                self.add(
                    self.line(survey, "cite"),
                    f"expected a non-negative integer or null, got {cite!r}",
                    key,
                    "survey.cite",
                )
        for name in ("detailed", "superiority", "weakness"):
            self.string(survey, name, key, "survey.")

    def claims(self, entry: LineDict, key: str) -> None:
        claims = entry["claims"]
        if not isinstance(claims, list):
            self.add(self.line(entry, "claims"), f"expected a list, got {_type_name(claims)}", key, "claims")
            return
        seen: dict[str, int] = {}
        for i, claim in enumerate(claims):
            line = claims.item_lines[i]
            if not isinstance(claim, LineDict):
                self.add(line, f"each claim must be a mapping, got {_type_name(claim)}", key, "claims")
                continue
            claim_id = claim.get("id")
            label = f"claims[{claim_id}]" if isinstance(claim_id, str) else f"claims[{i}]"
            self.fields(claim, CLAIM_REQUIRED, CLAIM_OPTIONAL, key, f"{label}.")
            if "id" in claim:
                if not isinstance(claim_id, str) or not CLAIM_ID_RE.match(claim_id):
                    self.add(
                        self.line(claim, "id"),
                        f"{claim_id!r} is not a claim id (^[a-z0-9][a-z0-9-]*$)",
                        key,
                        f"{label}.id",
                    )
                elif claim_id in seen:
                    self.add(
                        self.line(claim, "id"),
                        f"duplicate claim id {claim_id!r} (first at line {seen[claim_id]})",
                        key,
                        f"{label}.id",
                    )
                else:
                    seen[claim_id] = self.line(claim, "id")
            for name in ("model", "dataset", "metric", "source"):
                self.nonempty(claim, name, key, f"{label}.")
            if "confidence" in claim:
                self.choice(claim, "confidence", CONFIDENCES, key, f"{label}.")
                if claim.get("confidence") == "recalled" and claim.get("checks"):
                    self.add(
                        self.line(claim, "checks"),
                        "a recalled number (not read in a source) cannot be a reproduction target: "
                        "confirm it (confidence: checked) or remove its checks",
                        key,
                        f"{label}.checks",
                    )
            for name in CLAIM_NUMBERS:
                self.number(claim, name, key, f"{label}.")
            sparsity = claim.get("sparsity")
            if _is_number(sparsity) and not 0 <= sparsity <= 1:
                self.add(
                    self.line(claim, "sparsity"),
                    f"{sparsity} is not a fraction in 0..1",
                    key,
                    f"{label}.sparsity",
                )
            version = self.string(claim, "arxiv_version", key, f"{label}.", nullable=True)
            match = ARXIV_VERSION_RE.match(version) if version is not None else None
            if version is not None and not (match and is_arxiv_id(match.group("id"))):
                self.add(
                    self.line(claim, "arxiv_version"),
                    f"{version!r} is not a versioned arXiv id (1506.02626v3)",
                    key,
                    f"{label}.arxiv_version",
                )
            self.string(claim, "note", key, f"{label}.", nullable=True)
            if claim.get("checks") is not None:
                self.checks(claim, key, label)

    def checks(self, claim: LineDict, key: str, label: str) -> None:
        checks = claim["checks"]
        if not isinstance(checks, list):
            self.add(
                self.line(claim, "checks"),
                f"expected a list, got {_type_name(checks)}",
                key,
                f"{label}.checks",
            )
            return
        for i, check in enumerate(checks):
            where = f"{label}.checks[{i}]"
            if not isinstance(check, LineDict):
                self.add(
                    checks.item_lines[i], f"each check must be a mapping, got {_type_name(check)}", key, where
                )
                continue
            self.fields(check, CHECK_REQUIRED, (), key, f"{where}.")
            quantity = self.string(check, "quantity", key, f"{where}.")
            if quantity is not None and not QUANTITY_RE.match(quantity):
                self.add(
                    self.line(check, "quantity"),
                    f"{quantity!r} is not a snake_case metric name",
                    key,
                    f"{where}.quantity",
                )
            if "target" in check:
                self.number(check, "target", key, f"{where}.", nullable=False)
            if "direction" in check:
                self.choice(check, "direction", DIRECTIONS, key, f"{where}.")
            if "tolerance" in check:
                self.tolerance(check, key, f"{where}.tolerance")

    def tolerance(self, check: LineDict, key: str, where: str) -> None:
        tol = check["tolerance"]
        line = self.line(check, "tolerance")
        if not isinstance(tol, LineDict):
            self.add(line, f"expected {{abs: x}} or {{rel: x}}, got {_type_name(tol)}", key, where)
            return
        for name, dup_line in tol.duplicates:
            self.add(dup_line, "given twice", key, f"{where}.{name}")
        unknown = [name for name in tol if name not in ("abs", "rel")]
        for name in unknown:
            self.add(
                tol.key_lines.get(name, line), "unknown field (allowed: abs, rel)", key, f"{where}.{name}"
            )
        present = [name for name in ("abs", "rel") if name in tol]
        if not present:
            self.add(line, "missing: give exactly one of abs or rel", key, where)
        elif len(present) == 2:
            self.add(line, "gives both abs and rel; give exactly one", key, where)
        for name in present:
            value = tol[name]
            if not _is_number(value) or value < 0:
                self.add(
                    tol.value_lines.get(name, line),
                    f"expected a non-negative number, got {value!r}",
                    key,
                    f"{where}.{name}",
                )


def validate(data: Any) -> list[Problem]:
    """Every problem in a parsed catalogue (as returned by :func:`parse_text`), in file order."""
    checker = _Checker()
    if data is None:
        return []
    if not isinstance(data, LineList):
        line = getattr(data, "line", 1)
        checker.add(line, f"the top level must be a list of papers, got {_type_name(data)}")
        return checker.problems
    first_key: dict[str, int] = {}
    first_ref: dict[int, str] = {}
    first_title: dict[str, str] = {}
    papers: dict[str, LineDict] = {}
    for entry, line in zip(data, data.item_lines, strict=True):
        key = checker.paper(entry, line)
        if not isinstance(entry, LineDict):
            continue
        label = key or (entry.get("key") if isinstance(entry.get("key"), str) else f"#{line}")
        if key is not None:
            if key in first_key:
                checker.add(
                    checker.line(entry, "key"), f"duplicate key (first at line {first_key[key]})", key, "key"
                )
            else:
                first_key[key] = checker.line(entry, "key")
        survey = entry.get("survey")
        if isinstance(survey, LineDict) and isinstance(survey.get("ref"), int):
            ref = survey["ref"]
            if ref in first_ref:
                checker.add(
                    checker.line(survey, "ref"),
                    f"survey reference [{ref}] is also paper '{first_ref[ref]}'",
                    label,
                    "survey.ref",
                )
            else:
                first_ref[ref] = label
        if key is not None:
            papers[key] = entry
        title = entry.get("title")
        if isinstance(title, str) and normalise_title(title):
            norm = normalise_title(title)
            if norm in first_title:
                checker.add(
                    checker.line(entry, "title"), f"same title as paper '{first_title[norm]}'", label, "title"
                )
            else:
                first_title[norm] = label
    _check_same_work(checker, papers)
    return sorted(checker.problems, key=lambda p: p.line or 0)


def _links(entry: LineDict) -> list[str]:
    links = entry.get("same_work_as")
    return [k for k in links if isinstance(k, str)] if isinstance(links, list) else []


def _check_same_work(checker: _Checker, papers: dict[str, LineDict]) -> None:
    """``same_work_as`` names existing papers that link back, and two papers share an arXiv id or a
    DOI only when they are linked as the same work (a preprint and its published version)."""
    for key, entry in papers.items():
        for other in _links(entry):
            line = checker.line(entry, "same_work_as")
            if other not in papers:
                if KEY_RE.match(other) and other != key:
                    checker.add(line, f"'{other}' is not a paper of the catalogue", key, "same_work_as")
            elif key not in _links(papers[other]):
                checker.add(
                    line,
                    f"'{other}' does not link back (add '{key}' to its same_work_as)",
                    key,
                    "same_work_as",
                )
    for field, label in (("arxiv", "arXiv id"), ("doi", "DOI")):
        seen: dict[str, list[str]] = {}
        for key, entry in papers.items():
            value = entry.get(field)
            if not isinstance(value, str) or not value.strip():
                continue
            ident = value.strip().lower()  # DOIs are case-insensitive
            for first in seen.get(ident, []):
                if first not in _links(entry) and key not in _links(papers[first]):
                    checker.add(
                        checker.line(entry, field),
                        f"{label} {value} is also paper '{first}'; a duplicate, or link the two with "
                        "same_work_as if one is the other's preprint or published version",
                        key,
                        field,
                    )
            seen.setdefault(ident, []).append(key)
