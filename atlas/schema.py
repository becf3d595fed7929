"""The papers.yaml schema, declared once: pydantic models whose fields are the file's fields.

The models (:class:`Paper`, :class:`Venue`, :class:`SurveyRow`, :class:`Claim`, :class:`Check`,
:class:`Tolerance`) are both the schema and the catalogue's objects (``atlas.catalogue`` reads the
file into them and re-exports them). Each field refuses bad input with a sentence that says what is
wrong and, where it helps, the fix; ``atlas.catalogue`` adds the file, line, paper key and field.
``papers.schema.json`` at the repository root, for editors, is generated from the models:
``python -m atlas.schema`` rewrites it, ``--check`` says whether it is current.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

import atlas
from atlas.errors import CatalogueError
from atlas.fsio import atomic_write

Category = Literal[
    "survey", "distillation", "pruning", "quantization", "low-rank", "dynamic-computation", "compact-design",
    "others",
]
Kind = Literal["method", "survey", "hardware/system", "off-topic"]
VenueType = Literal["conference", "journal", "workshop", "preprint", "book"]
Seed = Literal["list", "annotated"]
SurveyClass = Literal["Transfer", "Pruning", "Quantization", "Decomposition and Low-Rank", "Sparse", "Design"]
Confidence = Literal["high", "checked", "unconfirmed"]
Direction = Literal["higher", "lower", "equal"]

CATEGORIES: tuple[str, ...] = get_args(Category)
KINDS: tuple[str, ...] = get_args(Kind)
VENUE_TYPES: tuple[str, ...] = get_args(VenueType)
SEEDS: tuple[str, ...] = get_args(Seed)
SURVEY_CLASSES: tuple[str, ...] = get_args(SurveyClass)
CONFIDENCES: tuple[str, ...] = get_args(Confidence)
DIRECTIONS: tuple[str, ...] = get_args(Direction)

KEY_RE = re.compile(r"^[a-z]+[0-9]{4}[a-z]?$")
CLAIM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
QUANTITY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ARXIV_NEW_RE = re.compile(r"^[0-9]{4}\.[0-9]{4,5}$")
ARXIV_OLD_RE = re.compile(r"^[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/[0-9]{7}$")
ARXIV_VERSION_RE = re.compile(r"^(?P<id>.+)v[0-9]+$")
DOI_RE = re.compile(r"^10\.[0-9]{4,9}/\S+$")
URL_RE = re.compile(r"^https?://\S+$")

YEAR_MIN, YEAR_MAX = 1950, 2030

#: The JSON Schema editors read, generated from the models by ``python -m atlas.schema``.
SCHEMA_FILE = "papers.schema.json"


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
# field types: each refuses bad input with a sentence that says what is wrong and how to fix it


def _fail(message: str, field: str | None = None, at: str | None = None) -> PydanticCustomError:
    """An error in our words. A rule of one field about another reports it under the other's name
    (``field``, at its line) or under its own name at the other's line (``at``)."""
    return PydanticCustomError("atlas", message, {"field": field, "at": at})


def _string(test: Callable[[str], bool], problem: str, pattern: str | None = None) -> Any:
    """A string that passes ``test``; ``problem`` follows the value's repr in the error."""

    def check(value: str) -> str:
        if not test(value):
            raise _fail(f"{value!r} {problem}")
        return value

    schema: dict[str, Any] = {"type": "string", **({"pattern": pattern} if pattern else {})}
    return Annotated[str, AfterValidator(check), WithJsonSchema(schema)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _fail("must not be empty")
    return value


def _one_line(value: str) -> str:
    if "\n" in value.strip():
        raise _fail("must be one line")
    return value


def _distinct(values: tuple[str, ...]) -> tuple[str, ...]:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise _fail(f"{value!r} is listed twice")
    return values


@dataclass(frozen=True)
class _List:
    """Marks a tuple field read from a YAML list. With ``items`` (a noun: "author") the list must
    not be empty; with ``null``, null is read as no items. The JSON Schema says the same."""

    items: str | None = None
    null: bool = False

    def read(self, value: Any) -> Any:
        if value is None and self.null:
            return ()
        if isinstance(value, list) and not value and self.items:
            unless = " (or leave the field out)" if self.null else ""
            raise _fail(f"must name at least one {self.items}{unless}")
        return tuple(value) if isinstance(value, list) else value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.read, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        array = {**handler(schema), **({"minItems": 1} if self.items else {})}
        return {"anyOf": [array, {"type": "null"}]} if self.null else array


Text = Annotated[str, AfterValidator(_not_blank), WithJsonSchema({"type": "string", "minLength": 1})]
PaperKey = _string(
    KEY_RE.match,
    "is not a paper key (surname + year + optional suffix: ^[a-z]+[0-9]{4}[a-z]?$)",
    KEY_RE.pattern,
)
ArxivId = _string(
    is_arxiv_id,
    "is not an arXiv id (1506.02626 or cs/0101001)",
    rf"^(?:{ARXIV_NEW_RE.pattern[1:-1]}|{ARXIV_OLD_RE.pattern[1:-1]})$",
)
Doi = _string(is_doi, "is not a DOI (10.NNNN/..., without https://doi.org/)", DOI_RE.pattern)
Url = _string(URL_RE.match, "is not an http(s) URL", URL_RE.pattern)
ClaimId = _string(CLAIM_ID_RE.match, "is not a claim id (^[a-z0-9][a-z0-9-]*$)", CLAIM_ID_RE.pattern)
Quantity = _string(QUANTITY_RE.match, "is not a snake_case metric name", QUANTITY_RE.pattern)
ArxivVersion = _string(
    lambda v: bool((m := ARXIV_VERSION_RE.match(v)) and is_arxiv_id(m.group("id"))),
    "is not a versioned arXiv id (1506.02626v3)",
    r"^.+v[0-9]+$",
)


class _Model(BaseModel):
    """Every mapping of papers.yaml: unknown fields refused, types not coerced, numbers finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def __init__(self, *args: Any, **data: Any) -> None:
        """Fields may also be given in their declared order (as the former dataclasses took them)."""
        names = [field.alias or name for name, field in type(self).model_fields.items()]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} fields, got {len(args)}")
        data.update(zip(names, args, strict=False))
        super().__init__(**data)

    # validation (model_validate) never calls __init__: the models are built by pydantic-core directly
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# the models


class Venue(_Model):
    """Where a paper appeared: full name, the survey's short form and the kind of venue."""

    name: Text = Field(description="The venue's full name.")
    short: Text = Field(description="The survey's short form: NIPS 2015, ICLR 2016, arXiv, ...")
    type: VenueType


class SurveyRow(_Model):
    """The annotated survey's table row for one of its references [1]-[100]."""

    ref: int = Field(gt=0, description="The survey's reference number.")
    klass: SurveyClass = Field(alias="class")
    conference: Text = Field(description="As printed, e.g. NIPS2015.")
    cite: int | None = Field(ge=0, description="Citations as printed (mid-2017), or null.")
    detailed: str
    superiority: str
    weakness: str


def _fmt(value: float) -> str:
    return f"{value:g}"


class Tolerance(_Model):
    """``{abs: x}`` (in the quantity's unit) or ``{rel: x}`` (a fraction of the target): exactly one."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    abs: float | None = Field(None, ge=0, description="Tolerance in the quantity's own unit.")
    rel: float | None = Field(None, ge=0, description="Tolerance as a fraction of |target|.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Tolerance:
        if self.abs is None and self.rel is None:
            raise _fail("missing: give exactly one of abs or rel")
        if self.abs is not None and self.rel is not None:
            raise _fail("gives both abs and rel; give exactly one")
        return self


class Check(_Model):
    """How a reproduction's measured ``quantity`` is judged against the paper's ``target``."""

    quantity: Quantity = Field(description="A metric name the reproduction records (snake_case).")
    target: float
    direction: Direction = Field(
        description="higher: pass if value >= target - tol; lower: value <= target + tol; "
        "equal: |value - target| <= tol."
    )
    tol: Tolerance = Field(alias="tolerance")

    def __init__(self, *args: Any, **data: Any) -> None:
        """Also ``Check(quantity, target, direction, tol_abs, tol_rel)``, the former dataclass's form."""
        if len(args) == 5:
            *args, tol_abs, tol_rel = args  # type: ignore[assignment]
            data["tolerance"] = Tolerance(abs=tol_abs, rel=tol_rel)
        super().__init__(*args, **data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @property
    def tol_abs(self) -> float | None:
        return self.tol.abs

    @property
    def tol_rel(self) -> float | None:
        return self.tol.rel

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
        return abs(value - self.target) <= tol + eps

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


class Claim(_Model):
    """One reported result of a paper, its source, and the checks a reproduction is judged by."""

    id: ClaimId = Field(description="Unique within the paper.")
    model: Text
    dataset: Text
    metric: Text = Field(description="e.g. top-1 error (%)")
    baseline: float | None = Field(None, description="The uncompressed model's value.")
    compressed: float | None = None
    ratio: float | None = Field(None, description="Compression (x) as the paper states it.")
    speedup: float | None = Field(None, description="Speed-up (x) as the paper states it.")
    bits: float | None = Field(None, description="Weight bit-width.")
    sparsity: float | None = Field(None, ge=0, le=1, description="Fraction of weights removed.")
    source: Text = Field(description="Table / section / figure of the paper.")
    arxiv_version: ArxivVersion | None = Field(None, description="The arXiv version read, e.g. 1506.02626v3.")
    confidence: Confidence = Field(
        description="high: read in a source text; checked: a value first noted unconfirmed, then confirmed "
        "in a source text; unconfirmed: not confirmed from the paper's text (shown, never given checks)."
    )
    note: str | None = None
    checks: Annotated[tuple[Check, ...], _List(null=True)] = Field(())

    @field_validator("checks")
    @classmethod
    def _unconfirmed_is_no_target(cls, checks: tuple[Check, ...], info: ValidationInfo) -> tuple[Check, ...]:
        if info.data.get("confidence") == "unconfirmed" and checks:
            raise _fail(
                "an unconfirmed number (not read in a source) cannot be a reproduction target: "
                "confirm it (confidence: checked) or remove its checks"
            )
        return checks


class Paper(_Model):
    """One paper of the catalogue (one entry of papers.yaml)."""

    key: PaperKey = Field(description="First author's surname + year + optional suffix; unique.")
    title: Text = Field(description="As published.")
    survey_title: Annotated[Text, AfterValidator(_one_line)] | None = Field(
        None,
        description="The title under which a survey lists the paper, where it differs from the published "
        "one (more than in case, spacing or punctuation).",
    )
    authors: Annotated[tuple[Text, ...], _List("author")]
    year: int = Field(json_schema_extra={"minimum": YEAR_MIN, "maximum": YEAR_MAX})
    venue: Venue
    arxiv: ArxivId | None = Field(None, description="New-style NNNN.NNNNN or old-style cs/NNNNNNN.")
    doi: Doi | None = Field(None, description="10.NNNN/..., without a resolver prefix.")
    url: Url | None = Field(None, description="A landing page, when neither arXiv nor DOI exists.")
    categories: Annotated[tuple[Category, ...], _List("category"), AfterValidator(_distinct)]
    kind: Kind
    kind_note: Annotated[Text, AfterValidator(_one_line)] | None = Field(
        None, description="Required (one line) when kind is off-topic.", validate_default=True
    )
    same_work_as: Annotated[tuple[PaperKey, ...], _List("paper key", null=True)] = Field(
        (),
        description="Keys of other entries for the same work (a preprint and its published version); "
        "each must link back.",
    )
    listed_in: Annotated[tuple[Seed, ...], _List(null=True), AfterValidator(_distinct)] = Field(
        (), description="Which seed documents name the paper."
    )
    survey: SurveyRow | None = None
    claims: Annotated[tuple[Claim, ...], _List(null=True)] = Field(())
    no_reproduction: Annotated[Text, AfterValidator(_one_line)] | None = Field(
        None,
        description="For a method paper the atlas does not reproduce: why not (a real reason, e.g. a data "
        "set or hardware the harness cannot emulate), with what was tried. Shown on its page.",
    )
    _line: int = PrivateAttr(0)

    # rules across fields: each sees the fields declared before it that are valid (info.data)

    @field_validator("survey_title")
    @classmethod
    def _survey_title_differs(cls, listed: str | None, info: ValidationInfo) -> str | None:
        title = info.data.get("title")
        if listed is not None and title is not None and normalise_title(listed) == normalise_title(title):
            raise _fail("is the published title (up to case, spacing and punctuation): leave it out")
        return listed

    @field_validator("year")
    @classmethod
    def _year(cls, year: int, info: ValidationInfo) -> int:
        if not YEAR_MIN <= year <= YEAR_MAX:
            raise _fail(f"{year} is outside {YEAR_MIN}..{YEAR_MAX}")
        digits = re.sub(r"[a-z]", "", info.data.get("key", str(year)))
        if digits != str(year):
            raise _fail(f"key year {digits} differs from the paper's year {year}", field="key")
        return year

    @field_validator("kind_note")
    @classmethod
    def _note_off_topic(cls, note: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("kind") == "off-topic" and note is None:
            raise _fail("kind 'off-topic' needs a one-line kind_note saying why", at="kind")
        return note

    @field_validator("same_work_as")
    @classmethod
    def _not_itself(cls, links: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("key") in links:
            raise _fail("a paper cannot be the same work as itself")
        return links

    @property
    def line(self) -> int:
        """The line of the paper's entry in its file (1-based; 0 for a paper built in code)."""
        return self._line

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


# ---------------------------------------------------------------------------------------------
# the JSON Schema for editors


def json_schema() -> dict[str, Any]:
    """papers.yaml's JSON Schema: a list of :class:`Paper`."""
    from pydantic import TypeAdapter  # only here: reading the catalogue does not need it

    schema = TypeAdapter(list[Paper]).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "papers.yaml",
        "description": "The Compression Atlas catalogue: one mapping per paper. Generated from "
        "atlas/schema.py by `python -m atlas.schema`; do not edit.",
        **schema,
    }


def json_schema_text() -> str:
    """:func:`json_schema` as the text of ``papers.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m atlas.schema``: write papers.schema.json at the root of the checkout from the
    models; ``--check``: exit 1, writing nothing, when the file there is not what they give."""
    parser = argparse.ArgumentParser(prog="python -m atlas.schema", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    if atlas.CHECKOUT is None:
        print(f"error: {SCHEMA_FILE} belongs to a checkout; this atlas is an installed package",
              file=sys.stderr)
        return 2
    path = atlas.CHECKOUT / SCHEMA_FILE
    text = json_schema_text()
    if args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"error: {path} is out of date: run `python -m atlas.schema`", file=sys.stderr)
            return 1
        return 0
    atomic_write(path, text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
