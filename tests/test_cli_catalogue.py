"""The catalogue commands: list, show, cite, validate (on the small fixture, and the real file)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import bibtexparser
import pytest

import atlas
from atlas.cli import build_parser, main

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "papers_small.yaml"
REAL = atlas.ROOT / "papers.yaml"


@pytest.fixture(autouse=True)
def small_catalogue(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATLAS_PAPERS", str(SMALL))
    return SMALL


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["list", "show", "cite", "import-bib", "validate"])
def test_help_works(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: atlas " + command in capsys.readouterr().out


def test_commands_are_registered() -> None:
    help_text = build_parser().format_help()
    for command in ("list", "show", "cite", "import-bib", "validate"):
        assert command in help_text


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["key", "year", "venue", "categories", "title", "claims", "reproduction"]
    assert "han2015" in out and "NIPS 2015" in out and "Distilling the Knowledge in a Neural Network" in out
    han = next(line for line in out.splitlines() if line.startswith("han2015"))
    has_file = (atlas.ROOT / "reproductions" / "han2015.py").is_file()
    assert han.endswith(" 1 yes" if has_file else " 1"), han  # one claim; the reproduction column
    assert out.rstrip().endswith("4 of 4 papers")


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["key"] for r in rows] == ["han2015", "scardapane2017", "hinton2015", "cohen2016"]
    han = rows[0]
    assert han["year"] == 2015 and han["venue"] == "NIPS 2015" and han["categories"] == ["pruning"]
    assert han["claims"] == 1 and han["kind"] == "method"
    for row in rows:
        expected = (atlas.ROOT / "reproductions" / f"{row['key']}.py").is_file()
        assert row["reproduced"] is expected


def test_list_csv_and_filters(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--format", "csv", "--category", "pruning")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["key", "year", "venue", "categories", "title", "claims", "reproduction"]
    assert [r["key"] for r in rows] == ["han2015", "scardapane2017"]
    assert rows[0]["title"] == "Learning both Weights and Connections for Efficient Neural Networks"
    _, out, _ = run(capsys, "list", "--format", "json", "--year", "2015")
    assert [r["key"] for r in json.loads(out)] == ["han2015", "hinton2015"]
    _, out, _ = run(capsys, "list", "--format", "json", "--kind", "off-topic")
    assert [r["key"] for r in json.loads(out)] == ["cohen2016"]
    _, out, _ = run(capsys, "list", "--format", "json", "--year", "1999")
    assert json.loads(out) == []
    code, out, err = run(capsys, "list", "--year", "1999")
    assert code == 0 and "no papers match" in err


def test_list_rejects_unknown_category(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["list", "--category", "sparsity"])
    assert info.value.code == 2
    assert "invalid choice: 'sparsity'" in capsys.readouterr().err


def test_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "han2015")
    assert code == 0
    for text in (
        "Learning both Weights and Connections for Efficient Neural Networks",
        "Song Han, Jeff Pool, John Tran, William J. Dally",
        "https://arxiv.org/abs/1506.02626",
        "annotated survey [11]: class Pruning, NIPS2015, cited 206",
        "superiority: AlexNet 9*",
        "[lenet-300-100] LeNet-300-100 on MNIST",
        "source: Table 1 of arXiv:1506.02626v3 (confidence: high)",
        "param_compression >= 9.0 (12 - 25%)",
        "accuracy_change_pp >= -0.45 (0.05 - 0.5)",
    ):
        assert text in out, text
    _, out, _ = run(capsys, "show", "cohen2016")
    assert "kind:       off-topic (A symmetry-exploiting architecture" in out
    assert "claims: none recorded" in out


@pytest.mark.skipif(not REAL.exists(), reason="papers.yaml is not there yet")
def test_show_prints_same_work_link(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLAS_PAPERS", str(REAL))
    for key, other in (("chen2016", "chen2015b"), ("chen2015b", "chen2016"), ("wang2016d", "wang2017c")):
        code, out, _ = run(capsys, "show", key)
        assert code == 0
        assert f"same work:  {other} (another entry for this work)" in out
    _, out, _ = run(capsys, "show", "han2015")
    assert "same work" not in out


def test_show_unknown_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", "hintn2015")
    assert code == 3
    assert out == ""
    assert err.startswith("error: unknown paper key 'hintn2015'; did you mean: hinton2015")
    assert "Traceback" not in err


def test_cite_keys_category_all(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "cite", "hinton2015", "han2015")
    assert code == 0
    library = bibtexparser.parse_string(out)
    assert [(e.key, e.entry_type) for e in library.entries] == [
        ("hinton2015", "misc"),
        ("han2015", "inproceedings"),
    ]
    _, out, _ = run(capsys, "cite", "--category", "pruning")
    assert [e.key for e in bibtexparser.parse_string(out).entries] == ["han2015", "scardapane2017"]
    target = tmp_path / "refs.bib"
    code, out, err = run(capsys, "cite", "--all", "--out", str(target))
    assert code == 0 and out == "" and "wrote 4 entries" in err
    assert len(bibtexparser.parse_string(target.read_text()).entries) == 4


def test_cite_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cite", "han2015", "hann2016")
    assert code == 3 and "unknown paper key 'hann2016'; did you mean: han2015" in err
    code, _, err = run(capsys, "cite")
    assert code == 2 and "exactly one of them" in err
    code, _, err = run(capsys, "cite", "han2015", "--all")
    assert code == 2


def test_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy = tmp_path / "papers.yaml"
    shutil.copy(SMALL, copy)
    code, out, _ = run(capsys, "validate", "--file", str(copy))
    assert code == 0
    assert out.strip() == f"{copy}: 4 papers, 1 claims, OK"
    copy.write_text(
        copy.read_text().replace('kind: off-topic\n  kind_note: "A symmetry', 'kind: off-topic\n  x: "A')
    )
    code, out, err = run(capsys, "validate", "--file", str(copy))
    assert code == 2 and out == ""
    assert "paper 'cohen2016', field 'x': unknown field" in err
    assert "paper 'cohen2016', field 'kind_note': kind 'off-topic' needs a one-line kind_note" in err


@pytest.mark.skipif(not REAL.exists(), reason="papers.yaml is not there yet")
def test_validate_real_catalogue(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(atlas.ROOT)
    monkeypatch.delenv("ATLAS_PAPERS")
    code, out, err = run(capsys, "validate")
    assert code == 0, err
    assert out.startswith("papers.yaml: 191 papers, ")
    assert out.rstrip().endswith(" claims, OK")
    code, out, _ = run(capsys, "list", "--format", "json")
    rows = json.loads(out)
    assert len(rows) == 191 and len({r["key"] for r in rows}) == 191
