"""Faults a user's disk can hold: damaged cached models (retrained with a warning, never used) and
damaged run records (a clear error naming the file and the fix, exit 2, the other papers go on)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import atlas
from atlas import results
from atlas.catalogue import load_catalogue
from atlas.cli import main
from atlas.harness.run import Run
from atlas.harness.runner import Request, reproduce
from atlas.site.build import generate, render_all
from atlas.site.data import collect

# ------------------------------------------------------------------------------- cached models


def _build() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _cached_tiny(cache: Path, trained: list[int]) -> tuple[nn.Module, Run]:
    """A tiny model through ``Run.cached_model``: trained (``trained`` grows) or loaded."""
    run = Run("hinton2015", "smoke", {"dataset": "digits"}, 0, cache_dir=cache, progress=False)

    def fit(model: nn.Module) -> None:
        trained.append(1)
        x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(20):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    return run.cached_model("tiny", {"width": 16}, _build, fit), run


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _entry(cache: Path) -> Path:
    [path] = (cache / "models").glob("tiny-*.pt")
    return path


def _with_checksum(path: Path, blob: bytes) -> None:
    """Replace the entry's file by ``blob`` and fix its checksum: damage the checksum cannot see."""
    path.write_bytes(blob)
    meta = path.with_suffix(".meta.json")
    data = json.loads(meta.read_text())
    data["sha256"] = hashlib.sha256(blob).hexdigest()
    meta.write_text(json.dumps(data))


def _saved(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _flip_middle(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 586] = bytes(b ^ 0xFF for b in blob[mid:mid + 586])
    path.write_bytes(bytes(blob))


def _nan_weights(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    _with_checksum(path, _saved({k: torch.full_like(v, float("nan")) for k, v in state.items()}))


def _random_bytes(path: Path) -> None:
    _with_checksum(path, os.urandom(path.stat().st_size))


def _plain_pickle(path: Path) -> None:
    _with_checksum(path, pickle.dumps({"0.weight": [[1.0] * 8] * 16, "note": Path("x")}))


def _plain_pickle_unchecked(path: Path) -> None:
    path.write_bytes(pickle.dumps({"0.weight": [[1.0] * 8] * 16}))


def _wrong_shapes(path: Path) -> None:
    _with_checksum(path, _saved(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)).state_dict()))


def _directory(path: Path) -> None:
    path.unlink()
    (path / "inner").mkdir(parents=True)


def _no_checksum(path: Path) -> None:
    path.with_suffix(".meta.json").unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped bytes": (_flip_middle, "does not match its checksum"),
    "NaN weights": (_nan_weights, "has non-finite weights"),
    "random bytes": (_random_bytes, "cannot be loaded"),
    "plain pickle": (_plain_pickle, "cannot be loaded"),
    "plain pickle, old checksum": (_plain_pickle_unchecked, "does not match its checksum"),
    "wrong shapes": (_wrong_shapes, "does not fit the model"),
    "a directory": (_directory, "is not a file"),
    "no checksum": (_no_checksum, "has no readable checksum"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_cached_model_is_retrained(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damage, why = DAMAGE[case]
    trained: list[int] = []
    clean, _ = _cached_tiny(tmp_path, trained)
    again, run = _cached_tiny(tmp_path, trained)
    assert trained == [1] and run.cache_hits  # the clean entry is loaded, not retrained
    assert all(torch.equal(a, b) for a, b in zip(_weights(clean).values(), _weights(again).values(), strict=True))
    capsys.readouterr()

    path = _entry(tmp_path)
    damage(path)
    model, run = _cached_tiny(tmp_path, trained)
    assert trained == [1, 1] and not run.cache_hits  # retrained: nothing was used from the damaged entry
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: cached model {path} {why}"), err
    assert "Traceback" not in err[0]
    for name, value in _weights(clean).items():  # what a clean run trains
        assert torch.equal(model.state_dict()[name], value), name
    # The entry is whole again, and loads.
    assert path.is_file()
    again, run = _cached_tiny(tmp_path, trained)
    assert trained == [1, 1] and run.cache_hits and run.cache_hits[0]["sha256"] == hashlib.sha256(
        path.read_bytes()).hexdigest()


def test_no_record_from_a_damaged_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """hinton2015's smoke run: a checkpoint with bytes flipped in its middle, then one whose weights
    are NaN (with a checksum that matches), are retrained; the record equals a clean run's."""
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    req = Request("hinton2015", "smoke", results_dir=tmp_path / "results", progress=False, force=True)
    clean, _ = reproduce(req)
    entries = sorted((tmp_path / "cache" / "models").glob("*.pt"))
    assert entries
    capsys.readouterr()
    for damage in (_flip_middle, _nan_weights):
        for path in entries:
            damage(path)
        record, reused = reproduce(req)
        assert not reused
        err = capsys.readouterr().err
        assert all(f"warning: cached model {path}" in err for path in entries), err
        assert record.provenance["cold"] is True  # nothing was loaded from the damaged entries
        assert [o.model_dump() for o in record.outcomes] == [o.model_dump() for o in clean.outcomes]


# ------------------------------------------------------------------------------- run records


def _valid_record(key: str, profile: str = "quick") -> results.Record:
    """A record of ``key``'s first checked claim, each checked quantity a little above its target."""
    claim = next(c for c in load_catalogue().get(key).claims if c.checks)
    metrics = {c.quantity: results.Metric(values=[c.target + 0.25, c.target + 0.5, c.target + 0.75])
               for c in claim.checks}
    return results.Record(
        key=key, profile=profile, seeds=[0, 1, 2], config_hash="c" * 64, code_hash="d" * 64, config={},
        provenance={"dataset": "fashion-mnist", "wall_time_s": 1.0},
        outcomes=[results.Outcome(claim=claim.id, model="m", dataset="fashion-mnist", metrics=metrics)],
    )


def _mutated(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Damage that keeps the file valid JSON: ``edit`` changes the record's data in place."""
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return damage


def _first_values(data: dict) -> list:
    return next(iter(data["outcomes"][0]["metrics"].values()))["values"]


RECORD_DAMAGE: dict[str, Callable[[Path], None]] = {
    "binary garbage": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "truncated JSON": lambda p: p.write_text(p.read_text()[: p.stat().st_size // 2]),
    "empty file": lambda p: p.write_text(""),
    "a string for a number": _mutated(lambda d: _first_values(d).__setitem__(0, str(_first_values(d)[0]))),
    "an unknown field": _mutated(lambda d: d.__setitem__("verdict", "reproduced")),
    "an unknown verdict in an outcome": _mutated(lambda d: d["outcomes"][0].__setitem__("verdict", "totally")),
    "a missing field": _mutated(lambda d: d.pop("seeds")),
    "another paper's record": _mutated(lambda d: d.__setitem__("key", "han2015")),
    "a directory": lambda p: (p.unlink(), p.mkdir()),
}


def _damaged_results(root: Path, case: str, profile: str = "quick") -> Path:
    """hinton2015's record damaged, beside a valid record of zagoruyko2017."""
    path = results.save(_valid_record("hinton2015", profile), root / "hinton2015" / f"{profile}.json")
    results.save(_valid_record("zagoruyko2017", profile), root / "zagoruyko2017" / f"{profile}.json")
    RECORD_DAMAGE[case](path)
    return path


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", RECORD_DAMAGE)
def test_a_damaged_record_is_named_by_show_and_compare(case: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _damaged_results(tmp_path, case)
    before = _snapshot(tmp_path)
    assert main(["show", "hinton2015", "--results-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "Distilling the Knowledge" in out and "published record: unreadable" in out
    assert err.startswith(f"error: {path}") and "atlas reproduce hinton2015 --force" in err
    assert "restore the file with git" in err and "Traceback" not in err

    assert main(["compare", "hinton2015", "zagoruyko2017", "--format", "csv", "--results-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"error: {path}" in err and "--force" in err and "zagoruyko2017" not in err
    rows = out.splitlines()[1:]
    assert any(r.startswith("hinton2015,") and "record unreadable" in r for r in rows), out
    # The other paper goes on: its checked claim is judged from its record.
    assert any(r.startswith("zagoruyko2017,cifar10-at,") and ",reproduced," in r for r in rows), out
    assert not any("zagoruyko2017," in r and "record unreadable" in r for r in rows)
    assert _snapshot(tmp_path) == before  # nothing on disk changed


def test_reproduce_does_not_run_over_a_damaged_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --force a damaged record is an error naming it (and the other papers go on); with
    --force the run replaces it."""
    path = tmp_path / "han2015" / "smoke.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 2, "key": "han2015", "profile": ')
    code = main(["reproduce", "han2015", "hinton2015", "--profile", "smoke", "--quiet", "--results-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"error: han2015: {path} is not valid JSON" in err
    assert "atlas reproduce han2015 --profile smoke --force" in err and "Traceback" not in err
    assert path.read_text() == '{"schema": 2, "key": "han2015", "profile": '  # left for the user to restore
    assert results.load(tmp_path / "hinton2015" / "smoke.json").key == "hinton2015"  # the other paper ran
    assert "hinton2015:" in out

    assert main(["reproduce", "han2015", "--profile", "smoke", "--quiet", "--results-dir", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_the_site_names_every_unreadable_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ATLAS_RESULTS_DIR", str(tmp_path))
    path = _damaged_results(tmp_path, "a string for a number")
    data = collect()
    assert list(data.unreadable) == ["hinton2015"] and str(path) in data.unreadable["hinton2015"]
    assert "zagoruyko2017" in data.records
    pages = render_all(data)
    assert "record unreadable" in str(pages["comparison.md"])
    hinton_page = str(pages["papers/hinton2015.md"])
    assert "record unreadable" in hinton_page and "--force" in hinton_page
    assert "record unreadable" not in str(pages["papers/zagoruyko2017.md"])

    written: dict[str, str] = {}

    class _Sink(io.StringIO):
        def __init__(self, name: str, *args: object, **kw: object) -> None:
            super().__init__()
            self.name = name

        def close(self) -> None:
            written[self.name] = self.getvalue()
            super().close()

    with caplog.at_level("WARNING", logger="mkdocs.plugins.atlas"):
        generate(lambda name, mode="w", **kw: _Sink(name) if "b" not in mode else io.BytesIO(), tmp_path / "docs")
    warnings = [r.getMessage() for r in caplog.records if r.name == "mkdocs.plugins.atlas"]
    assert len(warnings) == 1 and str(path) in warnings[0]


@pytest.mark.slow
def test_mkdocs_strict_fails_on_an_unreadable_record(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs_gen_files")
    path = _damaged_results(tmp_path / "results", "truncated JSON")
    env = dict(os.environ, ATLAS_RESULTS_DIR=str(tmp_path / "results"), NO_MKDOCS_2_WARNING="1",
               DISABLE_MKDOCS_2_WARNING="true")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=atlas.ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"unreadable run record: {path}" in log and "strict mode" in log and "Traceback" not in log


# ------------------------------------------------------------------------------- catalogue


@pytest.mark.parametrize("text", ["", "# no papers yet\n", "\n\n"])
def test_an_empty_catalogue_says_so(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    papers = tmp_path / "papers.yaml"
    papers.write_text(text)
    monkeypatch.setenv("ATLAS_PAPERS", str(papers))
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "got a list" not in err and "Traceback" not in err


# ------------------------------------------------------------------------------- two runs at once


def test_a_second_run_of_the_same_paper_waits_for_the_first(tmp_path: Path) -> None:
    """Two `atlas reproduce hinton2015 --profile smoke` started together: whichever takes the lock
    first runs, the other waits for it, then reuses its record, which is whole. (Started together, so
    that neither can finish before the other has started: the CLI's start-up, which discovers every
    reproduction, takes longer than the run after its first seed.)"""
    cmd = [sys.executable, "-m", "atlas.cli", "reproduce", "hinton2015", "--profile", "smoke",
           "--results-dir", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    ran = [i for i, (out, _) in enumerate(outs) if "ran now" in out]
    assert len(ran) == 1, [out[-500:] for out, _ in outs]  # one run, not two
    waited = 1 - ran[0]
    assert "waiting for another run of hinton2015 (smoke profile)" in outs[waited][1]
    assert "reused" in outs[waited][0]  # one run's record, read by the other
    record = results.load(tmp_path / "hinton2015" / "smoke.json")
    assert record.seeds == [0, 1] and len(record.outcomes[0].metrics["accuracy"].values) == 2
    assert [p.name for p in (tmp_path / "hinton2015").iterdir()] == ["smoke.json"]
