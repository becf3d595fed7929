"""Hyperparameters a paper tuned (``TUNED``), chosen on a validation split by benchmarks/tune.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from atlas.harness import Tuned, registry

ROOT = Path(__file__).resolve().parents[1]


def _tune_module():
    """benchmarks/tune.py, imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("tune", ROOT / "benchmarks" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tuned_hyperparameter_is_a_profile_key_whose_quick_value_is_on_its_grid() -> None:
    tune = _tune_module()
    declared = tune.declared()
    assert {"hinton2015", "zagoruyko2017", "huang2017", "romero2015", "hu2016", "ba2014", "urban2017"} <= set(declared)
    for key, tuned in declared.items():
        assert isinstance(tuned, Tuned), key
        profiles = registry.get(key).profiles
        for profile in profiles.values():
            tune.get_value(profile, tuned.key)  # every profile states it
        assert tune.get_value(profiles["quick"], tuned.key) in tuned.grid, key
        assert "lr" in profiles["quick"][tuned.lr_section], key
        assert tuned.source, key


def test_tune_runs_a_paper_on_its_validation_split_and_refuses_the_published_seeds(tmp_path: Path) -> None:
    out = tmp_path / "tuning.md"
    cmd = [sys.executable, "benchmarks/tune.py", "zagoruyko2017", "--profile", "smoke", "--seeds", "1000",
           "--holdout", "300", "--out", str(out)]
    env = {**os.environ, "ATLAS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "## zagoruyko2017: beta" in text and "validation: the last 300 training examples" in text
    # three weights at the profile's learning rate, then the learning rate halved and doubled
    assert text.count("| beta = ") == 5 and "chosen beta:" in text and "the baseline's best learning rate" in text
    refused = subprocess.run([*cmd[:6], "0,1000"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "5 and up" in refused.stderr

