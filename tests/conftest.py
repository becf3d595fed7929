"""Shared test set-up: keep every test's caches and records out of the user's folders."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_atlas_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "atlas-cache"  # shared by the session: teachers train once
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(cache))
    monkeypatch.setenv("ATLAS_RESULTS_DIR", str(tmp_path_factory.mktemp("results")))
