"""The contract every registered reproduction keeps, tested over the registry (as timm tests every
registered model): a new file in reproductions/ is checked without touching this file.

The smoke run end to end (every quantity its claims' checks name is recorded) is in
``test_reproductions_smoke.py``; here: profiles, docstring, lineage, key, and the paper profile
wired at the paper's input size."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from atlas import manifest
from atlas.catalogue import load_catalogue
from atlas.errors import ReproductionError
from atlas.harness import Profile, TrainConfig, registry
from atlas.harness import data as data_mod
from atlas.harness import run as run_mod
from atlas.harness.data import Dataset, Split
from atlas.harness.profiles import validate_profile
from atlas.results import PROFILE_NAMES

KEYS = list(registry.discover())
CATALOGUE = load_catalogue()


def test_every_reproduction_file_imports() -> None:
    registry.discover()
    assert registry._BROKEN == {}, f"reproduction files that fail to import: {registry._BROKEN}"


@pytest.mark.parametrize("key", KEYS)
def test_declares_smoke_quick_and_paper_profiles(key: str) -> None:
    repro = registry.get(key)
    assert tuple(repro.profiles) == PROFILE_NAMES or set(repro.profiles) == set(PROFILE_NAMES)
    assert issubclass(repro.config, Profile) and repro.config is not Profile
    for name, values in repro.profiles.items():
        assert values["dataset"] in data_mod.DATASETS, f"{key}/{name}: unknown data set {values['dataset']}"
    assert repro.profiles["quick"]["seeds"] >= 3


@pytest.mark.parametrize("key", KEYS)
def test_key_is_the_file_name_and_a_catalogue_paper(key: str) -> None:
    repro = registry.get(key)
    assert repro.path.stem == key
    assert CATALOGUE.get(key).no_reproduction is None, f"{key} has a reproduction: drop its no_reproduction note"


@pytest.mark.parametrize("key", KEYS)
def test_docstring_has_method_claim_and_harness_differs(key: str) -> None:
    doc = registry.get(key).doc
    assert re.search(r"^Method\b", doc, re.M), f"{key}: no 'Method' paragraph"
    assert re.search(r"^Claims?\b", doc, re.M), f"{key}: no 'Claim' paragraph"
    assert re.search(r"^Harness differs\b", doc, re.M | re.I), f"{key}: no 'Harness differs' paragraph"


@pytest.mark.parametrize("key", KEYS)
def test_builds_only_on_papers_of_its_year_or_earlier(key: str) -> None:
    year = CATALOGUE.get(key).year
    for parent in registry.get(key).builds_on:
        assert parent in KEYS, f"{key} imports {parent}, which is not a registered reproduction"
        assert CATALOGUE.get(parent).year <= year, f"{key} ({year}) imports a later paper: {parent}"


def test_manifest_is_the_registry() -> None:
    found = manifest.load()
    assert list(found.entries) == KEYS
    for key in KEYS:
        assert found.entries[key].profiles == registry.get(key).profiles
        assert found.entries[key].builds_on == registry.get(key).builds_on


# ------------------------------------------------------------------------ refusals at registration
class _Demo(Profile):
    student: TrainConfig


def test_an_unknown_profile_key_is_refused_with_paper_profile_and_key() -> None:
    good = {"dataset": "digits", "student": {"steps": 3}}
    validate_profile("demo2020", "quick", _Demo, good)
    with pytest.raises(ReproductionError) as err:
        validate_profile("demo2020", "quick", _Demo, {**good, "epcohs": 3})
    assert "reproductions/demo2020.py, profile 'quick': unknown key 'epcohs'" in str(err.value)
    with pytest.raises(ReproductionError) as err:
        validate_profile("demo2020", "smoke", _Demo, {"dataset": "digits", "student": {"steps": 3, "lr_": 1}})
    assert "profile 'smoke': unknown key 'student.lr_'" in str(err.value)
    with pytest.raises(ReproductionError, match="missing key 'student'"):
        validate_profile("demo2020", "paper", _Demo, {"dataset": "digits"})


def test_a_section_takes_nothing_from_the_level_above() -> None:
    values = validate_profile("demo2020", "quick", _Demo,
                              {"dataset": "digits", "student": {"steps": 3}})
    run = run_mod.Run.__new__(run_mod.Run)
    run.config = values
    assert run.train_config("student").lr == TrainConfig(steps=1).lr  # no top-level lr leaks in
    with pytest.raises(ValueError):
        TrainConfig.from_dict({"steps": 3, "epcohs": 1})


def test_registration_refuses_a_key_that_is_not_the_file_name() -> None:
    with pytest.raises(ReproductionError, match="a reproduction's key is its file's name"):
        registry.reproduction("not_this_file", profiles={n: {"dataset": "digits", "student": {"steps": 1}}
                                                         for n in PROFILE_NAMES}, config=_Demo)(lambda run: None)


def test_a_reproduction_that_fails_to_import_is_named_and_the_others_still_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlas_reproductions import __path__ as package_path

    broken = Path(package_path[0]) / "zz_broken_for_test.py"
    broken.write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    try:
        monkeypatch.setattr(registry, "_DISCOVERED", False)
        monkeypatch.setattr(registry, "_BROKEN", {})
        found = registry.discover()
        assert "hinton2015" in found
        assert registry._BROKEN == {"zz_broken_for_test": "RuntimeError: boom"}
    finally:
        broken.unlink()


# --------------------------------------------------------------- the paper profile, at its input size
def _training_sections(node: Any) -> list[dict[str, Any]]:
    """Every training section (a mapping with integer ``steps``) in ``node``, at any depth (han2015
    nests one per architecture and stage)."""
    if not isinstance(node, dict):
        return []
    found = [node] if isinstance(node.get("steps"), int) else []
    return found + [s for v in node.values() for s in _training_sections(v)]


CONTRACT_BATCH = 16


def _shrunk(config: dict[str, Any]) -> dict[str, Any]:
    """The paper profile with every training stage cut to a few steps, keeping their order of size
    (a two-stage method keeps its first stage shorter than the whole), and batches of at most
    ``CONTRACT_BATCH`` examples: the test checks the wiring at the paper's input size, not its cost."""
    config = copy.deepcopy(config)
    sections = [s for v in config.values() for s in _training_sections(v)]
    longest = max((s["steps"] for s in sections), default=1)
    for section in sections:
        section["steps"] = max(1, math.ceil(4 * section["steps"] / longest))
        if isinstance(section.get("batch_size"), int):
            section["batch_size"] = min(section["batch_size"], CONTRACT_BATCH)
    config["seeds"] = 1
    return config


def _synthetic(name: str, n_train: int = 384, n_test: int = 64) -> Dataset:
    spec = data_mod.DATASETS[name]
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, *spec.input_shape, generator=gen),
                     torch.arange(n) % spec.num_classes)

    return Dataset(name, split(n_train), split(n_test), spec.num_classes, "synthetic (contract test)")


@pytest.mark.parametrize("key", KEYS)
def test_paper_profile_runs_at_the_papers_input_size(key: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU profile is at least wired: its data set is one the harness knows, and the reproduction
    runs through, on random data of that data set's shape, with every stage cut to a few steps."""
    repro = registry.get(key)
    config = _shrunk(repro.profiles["paper"])
    # room for a validation split carved from the training set, where the profile has one
    n_train = 384 + int(config.get("val_size") or 0)
    monkeypatch.setattr(data_mod, "load_dataset", lambda name, **_: _synthetic(name, n_train))
    monkeypatch.setattr(run_mod, "_DATASET_CACHE", {})
    run = run_mod.Run(key, "paper", config, seed=0, cache_dir=tmp_path, progress=False)
    repro.fn(run)
    assert run.measured, f"{key}: the paper profile recorded nothing"
    assert run.dataset().input_shape == data_mod.DATASETS[config["dataset"]].input_shape
