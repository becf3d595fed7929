"""Errors the atlas reports to a user: a clear sentence, never a traceback.

Every module raises an :class:`AtlasError` (or a subclass) for bad input; ``atlas.cli`` catches it,
prints ``error: <message>`` and exits with the error's ``exit_code``.
"""

from __future__ import annotations


class AtlasError(Exception):
    """A problem with the user's input or environment, described in words."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class CatalogueError(AtlasError):
    """papers.yaml (or an imported .bib file) is malformed."""


class UnknownKeyError(AtlasError):
    """A paper key that is not in the catalogue; the message suggests the closest keys."""

    exit_code = 3


class DatasetUnavailable(AtlasError):
    """A data set is not on disk and cannot be fetched; the message says how to get it."""

    exit_code = 4


class ReproductionError(AtlasError):
    """A reproduction is missing, or its declaration is inconsistent with papers.yaml."""

    exit_code = 5
