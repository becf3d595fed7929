"""The catalogue: papers.yaml read, checked against the schema and turned into dataclasses.

>>> catalogue = load_catalogue()          # doctest: +SKIP
>>> paper = catalogue.get("han2015")      # doctest: +SKIP
>>> paper.claim("lenet-300-100").checks   # doctest: +SKIP

Every load checks the whole file (``atlas.schema``); anything wrong raises one
:class:`~atlas.errors.CatalogueError` naming the file, line, paper key and field of each problem.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import atlas
from atlas.errors import CatalogueError, UnknownKeyError
from atlas.schema import (
    CATEGORIES,
    KINDS,
    MAX_PROBLEMS,
    LineDict,
    Problem,
    YamlSyntaxError,
    parse_text,
    validate,
)

__all__ = [
    "CATEGORIES",
    "KINDS",
    "Catalogue",
    "Check",
    "Claim",
    "Paper",
    "SurveyRow",
    "Venue",
    "default_path",
    "display_path",
    "load_catalogue",
    "parse_catalogue",
]


@dataclass(frozen=True)
class Venue:
    """Where a paper appeared: full name, the survey's short form and the kind of venue."""

    name: str
    short: str
    type: str


@dataclass(frozen=True)
class SurveyRow:
    """The annotated survey's table row for one of its references [1]-[100]."""

    ref: int
    klass: str
    conference: str
    cite: int | None
    detailed: str
    superiority: str
    weakness: str


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Check:
    """How a reproduction's measured ``quantity`` is judged against the paper's ``target``."""

    quantity: str
    target: float
    direction: str
    tol_abs: float | None
    tol_rel: float | None

    def tolerance(self) -> float:
        """The tolerance in the quantity's own unit (a relative one is a fraction of ``|target|``)."""
        if self.tol_abs is not None:
            return float(self.tol_abs)
        if self.tol_rel is not None:
            return float(self.tol_rel) * abs(float(self.target))
        return 0.0

    def passes(self, value: float) -> bool:
        """Whether a measured value passes: ``higher`` >= target - tol, ``lower`` <= target + tol,
        ``equal`` within tol of the target. NaN never passes."""
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        tol = self.tolerance()
        eps = 1e-12 * max(1.0, abs(self.target))
        if self.direction == "higher":
            return value >= self.target - tol - eps
        if self.direction == "lower":
            return value <= self.target + tol + eps
        if self.direction == "equal":
            return abs(value - self.target) <= tol + eps
        raise ValueError(f"unknown direction {self.direction!r}")

    def _tol_text(self) -> str:
        if self.tol_rel is not None:
            return f"{_fmt(self.tol_rel * 100)}%"
        return _fmt(self.tol_abs or 0.0)

    def describe(self) -> str:
        """A readable condition, e.g. ``param_compression >= 9.0 (12 - 25%)``."""
        tol = self.tolerance()
        target = float(self.target)
        if self.direction == "higher":
            return f"{self.quantity} >= {round(target - tol, 6)!r} ({_fmt(target)} - {self._tol_text()})"
        if self.direction == "lower":
            return f"{self.quantity} <= {round(target + tol, 6)!r} ({_fmt(target)} + {self._tol_text()})"
        return (
            f"{self.quantity} in [{round(target - tol, 6)!r}, {round(target + tol, 6)!r}] "
            f"({_fmt(target)} ± {self._tol_text()})"
        )


@dataclass(frozen=True)
class Claim:
    """One reported result of a paper, its source, and the checks a reproduction is judged by."""

    id: str
    model: str
    dataset: str
    metric: str
    baseline: float | None
    compressed: float | None
    ratio: float | None
    speedup: float | None
    bits: float | None
    sparsity: float | None
    source: str
    arxiv_version: str | None
    confidence: str
    note: str | None
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Paper:
    """One paper of the catalogue (one entry of papers.yaml)."""

    key: str
    title: str
    authors: tuple[str, ...]
    year: int
    venue: Venue
    arxiv: str | None
    doi: str | None
    url: str | None
    categories: tuple[str, ...]
    kind: str
    kind_note: str | None
    same_work_as: tuple[str, ...]  # keys of the same work under another entry (preprint / published)
    listed_in: tuple[str, ...]
    survey: SurveyRow | None
    claims: tuple[Claim, ...]
    line: int

    def claim(self, claim_id: str) -> Claim:
        """The claim with this id; :class:`CatalogueError` naming the known ids if there is none."""
        for claim in self.claims:
            if claim.id == claim_id:
                return claim
        known = ", ".join(c.id for c in self.claims) or "none"
        raise CatalogueError(f"paper '{self.key}' has no claim '{claim_id}' (its claims: {known})")

    @property
    def links(self) -> dict[str, str]:
        """``arxiv`` (abstract page), ``doi`` (resolver) and ``url``, those the paper has."""
        links: dict[str, str] = {}
        if self.arxiv:
            links["arxiv"] = f"https://arxiv.org/abs/{self.arxiv}"
        if self.doi:
            links["doi"] = f"https://doi.org/{self.doi}"
        if self.url:
            links["url"] = self.url
        return links


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
        self, category: str | None = None, kind: str | None = None, year: int | None = None
    ) -> list[Paper]:
        """Papers in ``category`` (one of their categories), of ``kind`` and from ``year``; ``None``
        means any."""
        return [
            p
            for p in self.papers
            if (category is None or category in p.categories)
            and (kind is None or p.kind == kind)
            and (year is None or p.year == year)
        ]

    def __repr__(self) -> str:
        return f"Catalogue({len(self.papers)} papers from {self.path})"


# ---------------------------------------------------------------------------------------------
# loading


def default_path() -> Path:
    """``$ATLAS_PAPERS`` if set, else ``papers.yaml`` at the repository root."""
    env = os.environ.get("ATLAS_PAPERS")
    return Path(env) if env else atlas.ROOT / "papers.yaml"


def display_path(path: Path) -> str:
    """The path as messages show it: relative to the working directory when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _build_paper(entry: LineDict) -> Paper:
    venue = entry["venue"]
    survey = entry.get("survey")
    claims = []
    for claim in entry.get("claims") or []:
        checks = tuple(
            Check(
                quantity=c["quantity"],
                target=float(c["target"]),
                direction=c["direction"],
                tol_abs=None if c["tolerance"].get("abs") is None else float(c["tolerance"]["abs"]),
                tol_rel=None if c["tolerance"].get("rel") is None else float(c["tolerance"]["rel"]),
            )
            for c in claim.get("checks") or []
        )
        claims.append(
            Claim(
                id=claim["id"],
                model=claim["model"],
                dataset=claim["dataset"],
                metric=claim["metric"],
                baseline=claim.get("baseline"),
                compressed=claim.get("compressed"),
                ratio=claim.get("ratio"),
                speedup=claim.get("speedup"),
                bits=claim.get("bits"),
                sparsity=claim.get("sparsity"),
                source=claim["source"],
                arxiv_version=claim.get("arxiv_version"),
                confidence=claim["confidence"],
                note=claim.get("note"),
                checks=checks,
            )
        )
    return Paper(
        key=entry["key"],
        title=entry["title"],
        authors=tuple(entry["authors"]),
        year=entry["year"],
        venue=Venue(name=venue["name"], short=venue["short"], type=venue["type"]),
        arxiv=entry.get("arxiv"),
        doi=entry.get("doi"),
        url=entry.get("url"),
        categories=tuple(entry["categories"]),
        kind=entry["kind"],
        kind_note=entry.get("kind_note"),
        same_work_as=tuple(entry.get("same_work_as") or ()),
        listed_in=tuple(entry.get("listed_in") or ()),
        survey=None
        if survey is None
        else SurveyRow(
            ref=survey["ref"],
            klass=survey["class"],
            conference=survey["conference"],
            cite=survey["cite"],
            detailed=survey["detailed"],
            superiority=survey["superiority"],
            weakness=survey["weakness"],
        ),
        claims=tuple(claims),
        line=entry.line,
    )


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
    problems = validate(data)
    if problems:
        _raise_problems(problems, name)
    return Catalogue([_build_paper(entry) for entry in data], path)


#: resolved path -> (mtime_ns, size, catalogue)
_CACHE: dict[str, tuple[int, int, Catalogue]] = {}


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and check papers.yaml (default: :func:`default_path`); cached per path and mtime."""
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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CatalogueError(f"{name}: cannot read: {exc.strerror or exc}") from None
    catalogue = parse_catalogue(text, path)
    _CACHE[resolved] = (stat.st_mtime_ns, stat.st_size, catalogue)
    return catalogue
