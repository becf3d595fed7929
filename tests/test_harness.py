"""The harness end to end on hinton2015's smoke profile: determinism, record reuse, atomic records,
provenance, verdicts that can fail, and the command's exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import atlas_reproductions.hinton2015 as hinton
import pytest

from atlas import results
from atlas.catalogue import Check, load_catalogue
from atlas.cli import main
from atlas.fsio import atomic_write
from atlas.harness import measure, models, registry
from atlas.harness.runner import Request, reproduce
from atlas.reference import load_references
from atlas.verdict import FAIL, NOT_REPRODUCED, PASS, judge_record


def smoke(tmp_path: Path, **kw) -> tuple[results.Record, bool]:
    return reproduce(Request("hinton2015", "smoke", results_dir=tmp_path, progress=False, **kw))


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    first, _ = smoke(tmp_path / "a")
    second, reused = smoke(tmp_path / "b")
    assert not reused
    a, b = first.outcomes[0].metrics, second.outcomes[0].metrics
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].values == b[name].values, name


def test_another_seed_other_numbers(tmp_path: Path) -> None:
    first, _ = smoke(tmp_path / "a")
    other, _ = smoke(tmp_path / "b", seeds=[7])
    assert first.outcomes[0].metrics["accuracy"].values != other.outcomes[0].metrics["accuracy"].values
    assert other.path is not None and other.path.name.startswith("smoke-")  # not the published record


def test_record_has_provenance_and_real_values(tmp_path: Path) -> None:
    record, _ = smoke(tmp_path)
    prov = record.provenance
    for field in ("commit", "date", "profile", "seeds", "dataset", "torch", "device", "wall_time_s",
                  "config_hash", "code_hash", "python"):
        assert field in prov, field
    assert prov["dataset"] == "digits" and prov["profile"] == "smoke" and prov["seeds"] == [0, 1]
    assert prov["wall_time_s"] > 0
    # The budget of every training stage is recorded, in steps (and the epochs they came to).
    stages = {b["stage"]: b for b in prov["training"]}
    assert stages["teacher"]["steps"] == hinton.PROFILES["smoke"]["full_data_model"]["steps"]
    outcome = record.outcome("speech-3pct-data")
    assert outcome is not None and outcome.dataset == "digits"
    assert "speech" in outcome.differs  # the harness says where it differs from the paper
    assert outcome.baseline is not None and outcome.baseline.model == "hinton-student"
    teacher = outcome.metrics["teacher_accuracy"].mean
    assert 80.0 < teacher <= 100.0  # a real trained teacher on the digits
    for hard, soft, gain in zip(outcome.metrics["student_accuracy"].values, outcome.metrics["accuracy"].values,
                                outcome.metrics["distillation_gain_pp"].values, strict=True):
        assert math.isclose(gain, soft - hard)  # paired: the two students of one seed
    # The file on disk is what the record says, and it holds no verdict (verdicts are computed on reading).
    on_disk = json.loads(Path(record.path).read_text())
    assert on_disk["outcomes"][0]["metrics"]["accuracy"]["values"] == outcome.metrics["accuracy"].values
    assert "verdict" not in on_disk and "verdict" not in on_disk["outcomes"][0]


def test_unchanged_run_is_reused_and_force_reruns(tmp_path: Path) -> None:
    first, reused = smoke(tmp_path)
    assert not reused
    again, reused = smoke(tmp_path)
    assert reused and again.provenance["date"] == first.provenance["date"]
    forced, reused = smoke(tmp_path, force=True)
    assert not reused


def test_changed_code_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoke(tmp_path)
    monkeypatch.setattr("atlas.harness.runner.code_hash", lambda repro: "changed")
    _, reused = smoke(tmp_path)
    assert not reused


def test_a_failing_run_leaves_the_earlier_record_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record, _ = smoke(tmp_path)
    before = Path(record.path).read_bytes()

    def boom(run, teacher_out, *args, **kwargs):
        raise KeyboardInterrupt  # killed half-way through the run

    monkeypatch.setattr(hinton, "distil", boom)
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, force=True)
    assert Path(record.path).read_bytes() == before
    assert [p.name for p in Path(record.path).parent.iterdir()] == ["smoke.json"]


def test_the_step_budget_does_not_depend_on_the_training_set_size(tmp_path: Path) -> None:
    """A smaller training set gets the same optimizer steps (more passes over it), never fewer."""
    full, _ = smoke(tmp_path / "full")
    small, _ = smoke(tmp_path / "small", train_size=400)
    assert small.path is not None and small.path.name != "smoke.json"  # beside the published record
    by_stage = {b["stage"]: b for b in full.provenance["training"]}
    for stage in small.provenance["training"]:
        assert stage["steps"] == by_stage[stage["stage"]]["steps"], stage["stage"]
    teacher_full, teacher_small = by_stage["teacher"], next(
        b for b in small.provenance["training"] if b["stage"] == "teacher")
    assert teacher_small["examples"] == 400 < teacher_full["examples"]
    assert teacher_small["epochs"] > teacher_full["epochs"]
    assert small.outcome("speech-3pct-data").baseline.train_size < full.outcome("speech-3pct-data").baseline.train_size


def test_a_write_killed_half_way_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k" / "quick.json"
    atomic_write(path, '{"old": true}\n')

    def die(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", die)
    with pytest.raises(OSError):
        atomic_write(path, '{"new": true}\n')
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in path.parent.iterdir()] == ["quick.json"]


# A run killed with SIGKILL (no handler runs, nothing is cleaned up) at a chosen point: in the middle
# of writing a cached model (its temporary file written, not yet renamed), in the middle of training
# (the second training stage), in the middle of writing the record (its temporary file written and
# flushed, not yet renamed).
KILL_AT = """
import os, pathlib, signal, sys
from atlas.cli import main
from atlas.harness import training
import atlas.fsio

point, results_dir = sys.argv[1], sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
replace = atlas.fsio.os.replace
if point == "cache write":
    atlas.fsio.os.replace = lambda tmp, target: die() if str(target).endswith(".pt") else replace(tmp, target)
elif point == "training":
    train, calls = training.train, []
    def counted(*args, **kwargs):
        calls.append(1)
        return die() if len(calls) == 2 else train(*args, **kwargs)
    training.train = counted
elif point == "record write":
    atlas.fsio.os.replace = lambda tmp, target: die() if str(target).endswith("smoke.json") else replace(tmp, target)
main(["reproduce", "hinton2015", "--profile", "smoke", "--force", "--quiet", "--results-dir", results_dir])
"""


def test_a_run_killed_at_any_point_leaves_every_record_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess
    import sys

    cache, root = tmp_path / "cache", tmp_path / "results"
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(cache))
    record, _ = smoke(root)
    before = Path(record.path).read_bytes()
    for entry in cache.glob("models/*"):  # a cold cache: the killed runs train and write its models
        entry.unlink()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for point in ("cache write", "training", "record write"):
        proc = subprocess.run([sys.executable, "-c", KILL_AT, point, str(root)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -9, (point, proc.stderr[-2000:])
        for path in root.glob("*/*.json"):  # every record parses, and the published one is unchanged
            results.load(path)
        assert Path(record.path).read_bytes() == before, point
        # What a killed writer leaves is hidden from every reader (and removed by the next run).
        left = [p.relative_to(tmp_path).as_posix() for p in [*root.rglob("*.tmp"), *cache.rglob("*.tmp")]]
        if point == "training":
            assert left == [], left
        else:
            prefix = "cache/models/.hinton-" if point == "cache write" else "results/hinton2015/.smoke.json."
            assert len(left) == 1 and left[0].startswith(prefix), (point, left)
        assert [p.name for p in Path(record.path).parent.iterdir() if not p.name.startswith(".")] == ["smoke.json"]
    rerun, reused = smoke(root, force=True)
    assert not reused and results.load(Path(rerun.path)).outcomes == rerun.outcomes
    assert [*root.rglob("*.tmp"), *cache.rglob("*.tmp")] == []  # no temporary file remains
    assert [p.name for p in Path(record.path).parent.iterdir()] == ["smoke.json"]
    # the record of a run that was killed and rerun is the record of a clean run
    assert [o.metrics for o in rerun.outcomes] == [o.metrics for o in record.outcomes]


def test_a_student_that_learns_nothing_from_the_teacher_is_not_reproduced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict can fail on a real run: a 'distilled' student that was never trained loses to the
    hard-label student on every seed."""
    monkeypatch.setattr(hinton, "distil", lambda run, teacher_out, arch="hinton-student", data=None, **k:
                        run.model(arch, data).eval())
    record, _ = smoke(tmp_path)
    outcome = record.outcome("speech-3pct-data")
    assert all(g < -20 for g in outcome.metrics["distillation_gain_pp"].values)
    verdict = judge_record(record, load_catalogue().get("hinton2015"), load_references()).claim("speech-3pct-data")
    assert verdict.verdict == NOT_REPRODUCED
    assert verdict.checks[0].state == FAIL and PASS not in [c.state for c in verdict.checks]


def test_check_tolerances() -> None:
    higher = Check("param_compression", 12.0, "higher", None, 0.25)
    assert higher.passes(9.0) and not higher.passes(8.99)
    lower = Check("error", 1.0, "lower", 0.5, None)
    assert lower.passes(1.5) and not lower.passes(1.51)
    equal = Check("bits", 2.0, "equal", 0.0, None)
    assert equal.passes(2.0) and not equal.passes(2.5)


def test_measurement_definitions() -> None:
    model = models.build("lenet-300-100", (1, 28, 28), 10)
    assert measure.count_params(model) == 266_610  # Han et al. 2015, Table 1: 267K
    assert measure.flops(model, (1, 28, 28)) == 2 * (784 * 300 + 300 * 100 + 100 * 10)
    with __import__("torch").no_grad():
        model[1].weight[:, : 784 // 2].zero_()
    eff = measure.effective_flops(model, (1, 28, 28))
    assert eff == 2 * (392 * 300 + 300 * 100 + 100 * 10)
    parts = measure.fp32_parts(model)
    assert measure.storage_bits(parts) == 32 * 266_610


def test_registry_finds_reproductions_and_their_lineage() -> None:
    found = registry.discover()
    assert "hinton2015" in found
    catalogue = load_catalogue()
    for key, repro in found.items():
        assert key in catalogue, f"reproductions/{key}.py has no entry in papers.yaml"
        assert repro.doc, f"reproductions/{key}.py needs a docstring naming the paper"
        assert {"smoke", "quick"} <= set(repro.profiles)
        assert all(b in found for b in repro.builds_on), f"{key} imports a missing reproduction"


def test_cli_unknown_key_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "hintn2015", "--profile", "smoke"]) == 3
    err = capsys.readouterr().err
    assert "unknown paper key 'hintn2015'" in err and "hinton2015" in err and "Traceback" not in err


def test_cli_paper_without_reproduction(capsys: pytest.CaptureFixture[str]) -> None:
    catalogue, found = load_catalogue(), registry.discover()
    missing = next(p.key for p in catalogue if p.key not in found)
    assert main(["reproduce", missing, "--profile", "smoke"]) == 5
    assert f"paper '{missing}' has no reproduction yet" in capsys.readouterr().err


def test_cli_reproduce_prints_reported_vs_reproduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["reproduce", "hinton2015", "--profile", "smoke", "--results-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "speech-3pct-data" in out and "distillation_gain_pp" in out and "44.5" in out and "n=2" in out
    assert (tmp_path / "hinton2015" / "smoke.json").exists()


# ------------------------------------------------------------------ outputs of a shared teacher
def test_a_shared_teacher_s_outputs_are_computed_once_and_recomputed_when_its_weights_change(tmp_path: Path) -> None:
    """``Run.shared_output`` reuses a shared (per_seed=False) cached model's output on a harness split
    for the next seeds, computes it anew once the weights change, and never reuses a per-seed model's."""
    import torch
    from torch import nn

    from atlas.harness.run import Run

    def run_for(seed: int) -> Run:
        return Run("hinton2015", "smoke", {"dataset": "digits", "train_limit": 200, "test_limit": 100},
                   seed, cache_dir=tmp_path, progress=False)

    def build() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def shared(run: Run, per_seed: bool) -> nn.Module:
        return run.cached_model("tiny-shared", {"per_seed": per_seed}, build, lambda m: None, per_seed=per_seed)

    calls: list[int] = []

    def output(run: Run, model: nn.Module) -> float:
        split = run.dataset().test
        return run.shared_output(model, split, "sum", lambda: calls.append(1) or float(model(split.x).sum().detach()))

    first, second = run_for(0), run_for(1)
    a, b = shared(first, per_seed=False), shared(second, per_seed=False)
    assert output(first, a) == output(second, b) and len(calls) == 1
    assert first.accuracy(a, first.dataset().test) == second.accuracy(b, second.dataset().test)
    with torch.no_grad():
        b[1].bias.add_(1.0)  # changed in place: a different model
    assert output(second, b) != output(first, a) and len(calls) == 2
    own = shared(run_for(2), per_seed=True)
    output(run_for(2), own), output(run_for(2), own)
    assert len(calls) == 4  # a per-seed model's outputs are computed each time
