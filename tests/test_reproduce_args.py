"""`atlas reproduce` refuses bad arguments with one clear line, before torch or any reproduction loads."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

import atlas
from atlas.commands.reproduce import DATASETS, parse_device, parse_seed, parse_seeds

# Runs `atlas ...` in a fresh interpreter and reports which heavy modules it imported.
SCRIPT = """
import sys
from atlas.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = ("torch", "atlas_reproductions", "atlas.harness")
print("LOADED:" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy[:2] or m.startswith(heavy[2]))))
sys.exit(code)
"""


def atlas_cli(*argv: str) -> tuple[int, str, str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "ATLAS_PAPERS"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=120, env=env,
        cwd=atlas.ROOT,
    )  # fmt: skip
    out, _, loaded = done.stdout.rpartition("LOADED:")
    return done.returncode, out, done.stderr, [m for m in loaded.strip().split(",") if m]


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["--seeds", "0"], 2, "argument --seeds: '0' is not a seed count (N >= 1); for seed 0 alone use --seed 0"),
        (["--seeds", "-1"], 2, "argument --seeds: '-1' is not a seed count (N >= 1), a range (10-14)"),
        (["--seed", "-1"], 2, "argument --seed: '-1' is not a seed (an integer in 0..4294967295)"),
        (["--device", "tpu"], 2, "argument --device: 'tpu' is not a device the harness runs on (cpu, cuda or cuda:N)"),
        (["--dataset", "imagenet"], 2, "argument --dataset: invalid choice: 'imagenet' (choose from 'cifar10'"),
        (["--profile", "fast"], 2, "argument --profile: invalid choice: 'fast' (choose from 'smoke', 'quick', 'paper')"),
        (["--category", "prunning"], 2, "argument --category: invalid choice: 'prunning'"),
    ],
)  # fmt: skip
def test_bad_argument_is_refused_before_torch(argv: list[str], code: int, words: str) -> None:
    status, out, err, loaded = atlas_cli("reproduce", "hinton2015", *argv)
    assert status == code, err
    assert out == ""
    # argparse's usage, then the message on one line
    assert err.rstrip().splitlines()[-1].startswith(f"atlas reproduce: error: {words}"), err
    assert "Traceback" not in err
    assert loaded == [], loaded


@pytest.mark.parametrize(
    ("argv", "code", "first_line"),
    [
        (["hintn2015"], 3, "error: unknown paper key 'hintn2015'; did you mean: hinton2015"),
        (["han2016b"], 5, "error: paper 'han2016b' has no reproduction yet (no reproductions/han2016b.py)"),
        (["hinton2015", "nosuch2015"], 3, "error: unknown paper key 'nosuch2015'"),
        ([], 2, "error: name a paper key, --category C or --all"),
    ],
)
def test_unknown_key_is_refused_without_importing_reproductions(
    argv: list[str], code: int, first_line: str
) -> None:
    status, out, err, loaded = atlas_cli("reproduce", *argv)
    assert status == code, err
    assert out == ""
    assert err.splitlines()[0].startswith(first_line), err
    assert "Traceback" not in err
    assert loaded == [], loaded


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("10-12") == [10, 11, 12]
    assert parse_seeds("0-0") == [0]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    for bad in ("0", "-1", "3-2", "1,1", "1001", "a", "1.5", "4294967296-4294967297", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)
    assert parse_seed("0") == 0 and parse_seed("4294967295") == 4294967295
    for bad in ("-1", "4294967296", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seed(bad)
    assert [parse_device(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]
    for bad in ("tpu", "CPU", "cuda:", "cuda:x", "mps:0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_device(bad)


def test_help_says_what_seeds_0_means(capsys: pytest.CaptureFixture[str]) -> None:
    from atlas.cli import main

    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--help"])
    assert info.value.code == 0
    assert "0 is refused: seed 0 alone is --seed 0" in " ".join(capsys.readouterr().out.split())


def test_dataset_names_match_the_harness() -> None:
    from atlas.harness.data import DATASETS as HARNESS_DATASETS  # imports torch: only in this test

    assert tuple(sorted(HARNESS_DATASETS)) == DATASETS
