"""Typed profiles: what a reproduction may be configured with, declared once per paper.

A reproduction declares a :class:`Profile` subclass (its fields and their types) and writes its
``smoke``, ``quick`` and ``paper`` profiles as plain dictionaries; registration validates every
profile against the class, so a misspelt key (``"epcohs"``) or a value of the wrong type is refused
with the paper, the profile and the key, before anything runs. Every section is closed
(``extra="forbid"``) and complete: nothing is merged into a section from the level above, so a
training section states its whole budget (:class:`atlas.harness.training.TrainConfig`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

from atlas.errors import ReproductionError


class Section(BaseModel):
    """A closed group of settings: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Profile(Section):
    """The settings every profile has: the data set (a name the harness knows), how many seeds a
    default run uses, and optional limits on the training and test sets."""

    dataset: str
    seeds: PositiveInt = 1
    train_limit: PositiveInt | None = None
    test_limit: PositiveInt | None = None


class Tuned(Section):
    """A hyperparameter the paper tuned, declared in its reproduction as ``TUNED``: its profile key, the
    grid searched around the paper's value, the training section whose learning rate every student
    shares (searched as well, for the baseline student) and what the paper says of the value.
    ``benchmarks/tune.py`` chooses it on a validation split carved from the training set
    (:meth:`atlas.harness.data.Dataset.validation`), never on the test set."""

    key: str
    grid: list[float]
    lr_section: str = "student"
    source: str


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validate_profile(key: str, name: str, schema: type[Profile], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against ``schema`` and returned with every default filled in (the
    configuration a run receives and a record stores); a :class:`ReproductionError` naming paper,
    profile and key otherwise."""
    try:
        return schema.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _where(err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}'")
            elif err["type"] == "missing":
                problems.append(f"missing key '{where}'")
            else:
                problems.append(f"'{where}': {err['msg']} (got {err.get('input')!r})")
        fields = ", ".join(schema.model_fields)
        raise ReproductionError(
            f"reproductions/{key}.py, profile '{name}': {'; '.join(problems)}",
            hint=f"{schema.__name__} declares: {fields}",
        ) from None
