"""Fuzzing the readers: random damage to a run record and to a papers.yaml entry (truncation, byte
flips, a value of another type, a missing field) never makes `atlas show`, `atlas compare` or
`atlas validate` end in a traceback, and never changes a file on disk. The commands run in-process
(``atlas.cli.main``); any exception but the ones ``main`` turns into an exit status fails the test."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis: pip install -e '.[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import atlas  # noqa: E402
from atlas import results  # noqa: E402
from atlas.catalogue import load_catalogue  # noqa: E402
from atlas.cli import main  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("ATLAS_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=os.environ.get("ATLAS_FUZZ_EXAMPLES") is None)
KEYS = ("hinton2015", "zagoruyko2017")


def _entry_text(key: str) -> str:
    """The entry of ``key`` in the repository's papers.yaml, as written there."""
    text = (atlas.ROOT / "papers.yaml").read_text(encoding="utf-8")
    start = text.index(f"\n- key: {key}\n") + 1
    end = text.find("\n- key: ", start)
    return text[start:] if end < 0 else text[start:end + 1]


ENTRIES = {key: _entry_text(key) for key in KEYS}


PROVENANCE = {
    "commit": "881ded7d0000", "dirty": False, "date": "2026-11-25T12:00:00+00:00", "profile": "quick",
    "seeds": [0, 1, 2], "dataset": "fashion-mnist", "train_size": 1000, "torch": "2.13.0+cpu", "python": "3.11.7",
    "atlas": "0.1.0", "platform": "Linux", "device": "cpu: AMD EPYC (2 threads)", "wall_time_s": 41.5,
    "cold": False, "cache_hits": {"0": [{"model": "teacher", "file": "t.pt", "code_hash": "e" * 64}]},
    "training": [{"stage": "teacher", "steps": 700, "batch_size": 256, "examples": 60000, "epochs": 2.99}],
    "config_hash": "c" * 64, "code_hash": "d" * 64, "command": "atlas reproduce KEY",
}


def _record_text(key: str) -> str:
    claim = next(c for c in load_catalogue().get(key).claims if c.checks)
    metrics = {c.quantity: results.Metric(values=[c.target + 0.25, c.target + 0.5, c.target + 0.75])
               for c in claim.checks}
    record = results.Record(
        key=key, profile="quick", seeds=[0, 1, 2], config_hash="c" * 64, code_hash="d" * 64,
        config={"dataset": "fashion-mnist"}, provenance=PROVENANCE,
        outcomes=[results.Outcome(claim=claim.id, model="m", dataset="fashion-mnist", metrics=metrics,
                                  baseline=results.Baseline(model="lenet-300-100", metric=claim.checks[0].quantity,
                                                            dataset="fashion-mnist", train_size=60000,
                                                            test_size=10000))],
    )
    return record.to_json()


RECORDS = {key: _record_text(key) for key in KEYS}

# ------------------------------------------------------------------------------- mutations

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside parsed JSON."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def damaged_json(draw: st.DrawFn, text: str) -> bytes:
    """``text`` (a JSON document) truncated, with bytes flipped, a value replaced by one of another
    type, or a field removed."""
    raw = text.encode()
    kind = draw(st.sampled_from(["truncate", "flip", "retype", "remove", "splice"]))
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "flip":
        blob = bytearray(raw)
        for pos in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            blob[pos] ^= draw(st.integers(1, 255))
        return bytes(blob)
    if kind == "splice":
        pos = draw(st.integers(0, len(raw)))
        return raw[:pos] + draw(st.binary(min_size=1, max_size=16)) + raw[pos:]
    data = json.loads(text)
    path = draw(st.sampled_from(_paths(data)))
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if kind == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(data).encode()


YAML_VALUES = st.sampled_from(["null", "[]", "{}", "-1", "0", "1e999", ".nan", "true", "''", "'x'", "[1, [2]]",
                               "{a: 1}", "2015-01-01", "&a x", "*a", "!!binary aGk=", "|\n  text", "- x",
                               "{1: 2}", "[{}]", "&r [*r]", "!unknown x"])


@st.composite
def damaged_entry(draw: st.DrawFn, entry: str) -> str:
    """A papers.yaml entry truncated, with bytes flipped, a line removed or duplicated, or a value
    replaced by one of another type."""
    lines = entry.splitlines(keepends=True)
    kind = draw(st.sampled_from(["truncate", "flip", "remove", "duplicate", "retype"]))
    if kind == "truncate":
        return entry[: draw(st.integers(0, len(entry) - 1))]
    if kind == "flip":
        blob = bytearray(entry.encode())
        for pos in draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=6)):
            blob[pos] ^= draw(st.integers(1, 255))
        return blob.decode("utf-8", errors="surrogateescape")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "remove":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    else:
        candidates = [j for j, line in enumerate(lines) if ": " in line] or [i]
        j = draw(st.sampled_from(candidates))
        head = lines[j].split(": ", 1)[0]
        lines[j] = f"{head}: {draw(YAML_VALUES)}\n"
    return "".join(lines)


# ------------------------------------------------------------------------------- harness


@contextlib.contextmanager
def _atlas_files(papers: bytes, records: dict[str, bytes]) -> Iterator[Path]:
    """A temporary catalogue and results folder, named by ATLAS_PAPERS and ATLAS_RESULTS_DIR."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "papers.yaml").write_bytes(papers)
        for key, blob in records.items():
            (root / "results" / key).mkdir(parents=True)
            (root / "results" / key / "quick.json").write_bytes(blob)
        env = {"ATLAS_PAPERS": str(root / "papers.yaml"), "ATLAS_RESULTS_DIR": str(root / "results")}
        with mock.patch.dict(os.environ, env):
            yield root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # anything but an exit status is a failure of the test
    return code, err.getvalue()


def _readers_survive(root: Path, key: str) -> list[int]:
    before = _snapshot(root)
    codes = []
    for argv in (["validate"], ["show", key], ["compare", *KEYS, "--format", "csv"]):
        code, err = _run(argv)
        assert "Traceback" not in err, (argv, err)
        assert code == 0 or err.startswith("error:") or "\nerror:" in err, (argv, code, err)
        codes.append(code)
    assert _snapshot(root) == before  # nothing on disk changed
    return codes


def _catalogue_text() -> str:
    return "".join(ENTRIES[k] for k in KEYS)


def test_the_fuzz_fixtures_are_valid() -> None:
    with _atlas_files(_catalogue_text().encode(), {k: v.encode() for k, v in RECORDS.items()}) as root:
        assert _readers_survive(root, "hinton2015") == [0, 0, 0]


@FUZZ
@given(data=st.data(), key=st.sampled_from(KEYS))
def test_a_damaged_record_never_breaks_a_reader(data: st.DataObject, key: str) -> None:
    damaged = data.draw(damaged_json(RECORDS[key]))
    records = {k: (damaged if k == key else v.encode()) for k, v in RECORDS.items()}
    with _atlas_files(_catalogue_text().encode(), records) as root:
        codes = _readers_survive(root, key)
    try:
        results.parse(damaged.decode("utf-8"), Path(f"results/{key}/quick.json"))
        readable = True
    except (results.StaleRecord, UnicodeDecodeError):
        readable = False
    assert codes[0] == 0  # the catalogue is untouched
    assert codes[1:] == ([0, 0] if readable else [2, 2])


@FUZZ
@given(data=st.data(), key=st.sampled_from(KEYS))
def test_a_damaged_catalogue_entry_never_breaks_a_reader(data: st.DataObject, key: str) -> None:
    entry = data.draw(damaged_entry(ENTRIES[key]))
    text = "".join(entry if k == key else ENTRIES[k] for k in KEYS)
    blob = text.encode("utf-8", errors="surrogateescape")
    with _atlas_files(blob, {k: v.encode() for k, v in RECORDS.items()}) as root:
        codes = _readers_survive(root, "hinton2015")
    if codes[0] != 0:  # a catalogue `atlas validate` refuses is refused by every reader
        assert codes[1] != 0 and codes[2] != 0
