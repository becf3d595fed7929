"""Verdicts from per-seed values: the t-interval, every verdict state, baselines that did not converge,
live verdicts (a tolerance edited in papers.yaml changes `atlas show` without a rerun), stale records,
and the seed syntax of `atlas reproduce`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from atlas import results
from atlas.catalogue import Check, Claim, load_catalogue
from atlas.cli import main
from atlas.commands.reproduce import parse_seeds
from atlas.reference import ReferenceRecord, save_reference
from atlas.stats import interval
from atlas.verdict import (
    FAIL,
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    PARTLY,
    PASS,
    REPRODUCED,
    UNDECIDED,
    VERDICTS,
    decide,
    judge,
)


def claim_with(*checks: Check) -> Claim:
    return Claim("c", "m", "MNIST", "acc", None, None, None, None, None, None, "Table 1", None, "high", None,
                 tuple(checks))


def outcome_with(baseline: dict | None = None, **values: list[float]) -> results.Outcome:
    return results.Outcome(claim="c", model="m", dataset="digits",
                           metrics={k: results.Metric(values=v) for k, v in values.items()},
                           baseline=results.Baseline(**baseline) if baseline else None)


GAIN = Check("distillation_gain_pp", 0.0, "higher", 0.0, None)
RATIO = Check("param_compression", 12.0, "higher", None, 0.25)  # >= 9


def test_t_interval_values() -> None:
    iv = interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.std == 1.0 and iv.n == 3
    # t(0.975, 2) = 4.3027; half width = 4.3027 / sqrt(3)
    assert math.isclose(iv.hi - 2.0, 4.302653 / math.sqrt(3), rel_tol=1e-5)
    assert interval([5.0]).lo is None  # one seed: no interval
    const = interval([12.0, 12.0, 12.0])
    assert const.constant and const.lo == const.hi == 12.0


def test_check_states_from_the_interval() -> None:
    assert decide(GAIN, interval([0.4, 0.5, 0.6]))[0] == PASS
    assert decide(GAIN, interval([-0.4, -0.5, -0.6]))[0] == FAIL
    state, reason = decide(GAIN, interval([0.71, -1.0, 2.4]))  # mean > 0, interval straddles 0
    assert state == UNDECIDED and "straddles" in reason
    assert decide(GAIN, interval([0.5]))[0] == UNDECIDED  # n = 1
    assert decide(RATIO, interval([12.0, 12.0, 12.0]))[0] == PASS  # constant: decides directly
    assert decide(RATIO, interval([8.0, 8.0, 8.0]))[0] == FAIL
    assert decide(GAIN, interval([float("nan"), 1.0]))[0] == FAIL


@pytest.mark.parametrize(("gain", "ratio", "expected"), [
    ([0.4, 0.5, 0.6], [12.0] * 3, REPRODUCED),
    ([0.4, 0.5, 0.6], [2.0] * 3, PARTLY),
    ([-0.4, -0.5, -0.6], [2.0] * 3, NOT_REPRODUCED),
    ([-0.4, -0.5, -0.6], None, NOT_REPRODUCED),
    ([0.71, -1.0, 2.4], [12.0] * 3, INCONCLUSIVE),
    ([-2.0, 1.0, -1.5], [2.0] * 3, NOT_REPRODUCED),  # a fail and an inconclusive, no pass
])
def test_every_claim_verdict(gain, ratio, expected) -> None:
    values = {"distillation_gain_pp": gain}
    if ratio is not None:
        values["param_compression"] = ratio
    assert judge(claim_with(GAIN, RATIO), outcome_with(**values)).verdict == expected


def test_not_comparable() -> None:
    assert judge(claim_with(GAIN), outcome_with(unrelated=[1.0, 2.0])).verdict == NOT_COMPARABLE
    assert judge(claim_with(), outcome_with(accuracy=[1.0, 2.0])).verdict == NOT_COMPARABLE
    assert judge(claim_with(GAIN), None).verdict == NOT_COMPARABLE


def _reference(accuracy: list[float]) -> ReferenceRecord:
    return ReferenceRecord(model="lenet-300-100", dataset="digits", train_size=100, test_size=50,
                           recipe={}, seeds=list(range(len(accuracy))),
                           accuracy=results.Metric(values=accuracy), provenance={})


BASE = {"model": "lenet-300-100", "metric": "baseline_accuracy", "dataset": "digits", "train_size": 100,
        "test_size": 50}


def test_a_baseline_below_its_reference_cannot_fail_an_accuracy_check() -> None:
    out = outcome_with(BASE, distillation_gain_pp=[-0.4, -0.5, -0.6], baseline_accuracy=[80.0, 80.5, 81.0])
    claim = claim_with(GAIN)
    assert judge(claim, out, [_reference([90.0, 90.2])]).verdict == INCONCLUSIVE
    verdict = judge(claim, out, [_reference([90.0, 90.2])])
    assert verdict.checks[0].reason == "baseline not converged" and "not converged" in verdict.notes[0]
    # Within the margin of its reference: the check fails as it should.
    assert judge(claim, out, [_reference([81.0, 81.2])]).verdict == NOT_REPRODUCED
    # No reference: decided on the values, with a note that convergence was not checked.
    unchecked = judge(claim, out, [])
    assert unchecked.verdict == NOT_REPRODUCED and "no reference" in unchecked.notes[0]
    # A ratio check is not an accuracy check: a non-converged baseline does not excuse it.
    ratio_out = outcome_with(BASE, param_compression=[2.0] * 3, baseline_accuracy=[80.0, 80.5, 81.0])
    assert judge(claim_with(RATIO), ratio_out, [_reference([90.0, 90.2])]).verdict == NOT_REPRODUCED


def test_all_verdict_states_are_named() -> None:
    assert set(VERDICTS) == {REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NOT_COMPARABLE}


def test_reference_records_round_trip(tmp_path: Path) -> None:
    from atlas.reference import load_references

    path = save_reference(_reference([90.0, 91.0]), tmp_path)
    assert path.name == "lenet-300-100-n100-t50.json" and path.parent.name == "digits"
    (ref,) = load_references(tmp_path)
    assert ref.matches(results.Baseline(**BASE)) and ref.accuracy.mean == 90.5


# ------------------------------------------------------------------------------- live verdicts

def _write_record(root: Path, gain: list[float]) -> None:
    record = results.Record(
        key="hinton2015", profile="quick", seeds=list(range(len(gain))), config_hash="c" * 64,
        code_hash="d" * 64, config={}, provenance={"dataset": "fashion-mnist", "wall_time_s": 1.0},
        outcomes=[results.Outcome(claim="speech-3pct-data", model="m", dataset="fashion-mnist",
                                  metrics={"distillation_gain_pp": results.Metric(values=gain),
                                           "gap_recovered_fraction": results.Metric(values=[0.6] * len(gain))})],
    )
    results.save(record, root / "hinton2015" / "quick.json")


def test_editing_a_tolerance_changes_show_without_a_rerun(tmp_path: Path, monkeypatch, capsys) -> None:
    _write_record(tmp_path / "results", [0.4, 0.5, 0.6, 0.5, 0.45])
    record_bytes = (tmp_path / "results" / "hinton2015" / "quick.json").read_bytes()
    monkeypatch.setenv("ATLAS_REFERENCE_DIR", str(tmp_path / "no-references"))
    assert main(["show", "hinton2015", "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "published record: reproduced" in out and "n=5" in out
    assert "distillation_gain_pp 0.49 [" in out

    # Demand a gain of at least 1 pp: the same record now fails, with no rerun.
    catalogue_text = load_catalogue().path.read_text(encoding="utf-8")
    head, tail = catalogue_text.split("  - id: speech-3pct-data", 1)
    tail = tail.replace("      target: 0.0\n      direction: higher\n      tolerance:\n        abs: 0.0",
                        "      target: 1.0\n      direction: higher\n      tolerance:\n        abs: 0.0", 1)
    edited = tmp_path / "papers.yaml"
    edited.write_text(head + "  - id: speech-3pct-data" + tail, encoding="utf-8")
    monkeypatch.setenv("ATLAS_PAPERS", str(edited))
    assert main(["show", "hinton2015", "--results-dir", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "published record: partly" in out and "distillation_gain_pp >= 1.0" in out
    assert (tmp_path / "results" / "hinton2015" / "quick.json").read_bytes() == record_bytes


def test_an_old_record_asks_for_a_rerun(tmp_path: Path, capsys) -> None:
    path = tmp_path / "hinton2015" / "quick.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 1, "key": "hinton2015", "verdict": "reproduced"}))
    with pytest.raises(results.StaleRecord, match="schema 1.*") as err:
        results.load(path)
    assert "atlas reproduce hinton2015 --force" in str(err.value)
    assert main(["show", "hinton2015", "--results-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "published record: unreadable" in out and "--force" in err and "Traceback" not in out + err


def test_a_record_without_per_seed_values_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "han2015" / "quick.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "schema": 2, "key": "han2015", "profile": "quick", "seeds": [0, 1], "config_hash": "c",
        "code_hash": "d", "config": {}, "provenance": {},
        "outcomes": [{"claim": "lenet-300-100", "model": "m", "dataset": "d",
                      "metrics": {"accuracy": {"values": [1.0]}}}]}))
    with pytest.raises(results.StaleRecord, match="1 values for 2 seeds"):
        results.load(path)


# ------------------------------------------------------------------------------- seeds

@pytest.mark.parametrize(("text", "seeds"), [
    ("3", [0, 1, 2]), ("10-14", [10, 11, 12, 13, 14]), ("0,3,7", [0, 3, 7]), ("5-5", [5]),
])
def test_seed_syntax(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "-1", "4-2", "a", "1,1", ""])
def test_bad_seeds_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_seeds(text)


def test_bad_seeds_on_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "hinton2015", "--seeds", "0"])
    assert exit_.value.code == 2
    assert "not a seed count" in capsys.readouterr().err
