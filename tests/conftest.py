"""Shared test set-up: keep every test's caches and records out of the user's folders."""

from __future__ import annotations

import os

import pytest

# Triton picks its interpreter when it is first imported, and torch imports it on its own (e.g. for
# torch.utils.flop_counter): ask for the interpreter before any test imports torch, unless the
# kernel tests are to run compiled on a GPU (tests/kernels_env.py).
if os.environ.get("ATLAS_KERNELS_TEST_CUDA") != "1":
    os.environ["TRITON_INTERPRET"] = "1"

#: Test modules that share one expensive per-process resource; pytest-xdist (the suite runs on every
#: core: ``-n auto`` in pyproject.toml) keeps each group on one worker, so the resource is made once.
_XDIST_GROUPS = {
    "site": ("test_compare", "test_site", "test_site_browser", "test_site_downloads", "test_site_glossary",
             "test_site_navigation", "test_site_tables", "test_site_wording"),  # the built site
    "ray": ("test_cluster",),  # one local Ray cluster
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    module_group = {module: group for group, modules in _XDIST_GROUPS.items() for module in modules}
    for item in items:
        group = module_group.get(item.path.stem)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist each worker gets its share of the cores for torch, not all of them: N workers
    each running N threads would only contend."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_share_the_cores_between_workers()


@pytest.fixture(autouse=True)
def _isolated_atlas_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "atlas-cache"  # shared by the session: teachers train once
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(cache))
    monkeypatch.setenv("ATLAS_RESULTS_DIR", str(tmp_path_factory.mktemp("results")))


@pytest.fixture(autouse=True)
def _fresh_shared_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty memo of shared models' outputs: tests that swap the data cache
    (synthetic data sets) must not be served a previous test's teacher logits."""
    from atlas.harness import run

    monkeypatch.setattr(run, "_SHARED_OUTPUTS", {})


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory):
    """The site built once per session against a results folder holding the hinton2015 fixture record
    (tests/site_helpers.py)."""
    from site_helpers import built_site

    return built_site(tmp_path_factory.getbasetemp())
