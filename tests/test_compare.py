"""``atlas compare``: reported vs reproduced as Markdown, CSV and booktabs LaTeX, with BibTeX."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from site_helpers import HINTON_GAIN, write_hinton_record

from atlas.bibtex import read_bib
from atlas.catalogue import load_catalogue
from atlas.cli import main
from atlas.report import latex_escape, render_latex


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "results"
    write_hinton_record(root)
    monkeypatch.setenv("ATLAS_RESULTS_DIR", str(root))
    return root


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _claims(*keys: str) -> int:
    catalogue = load_catalogue()
    return sum(len(catalogue.get(k).claims) for k in keys)


def test_markdown(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "hinton2015", "han2015")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("| paper | claim | paper setting | reported |")
    assert set(lines[1].replace(" ", "")) <= {"|", "-"}
    assert len(lines) == 2 + _claims("hinton2015", "han2015")
    width = lines[0].count(" | ")
    assert all(line.replace("\\|", "").count(" | ") == width for line in lines)
    row = next(line for line in lines if "mnist-student" in line)
    assert "MNIST" in row and "fashion-mnist" in row and "reproduced" in row and f"{HINTON_GAIN:.3g}" in row
    assert any("han2015" in line and "not run" in line for line in lines)


def test_csv(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--category", "distillation", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    papers = load_catalogue().filter(category="distillation")
    assert len(rows) == sum(len(p.claims) for p in papers)
    assert {"paper", "claim", "paper setting", "reported", "harness setting", "reproduced", "verdict"} <= set(rows[0])
    student = next(r for r in rows if r["paper"] == "hinton2015" and r["claim"] == "mnist-student")
    assert student["verdict"] == "reproduced" and student["harness setting"].endswith("/ fashion-mnist")


def _check_latex_fragment(tex: str) -> list[list[str]]:
    """Structure of a booktabs tabular fragment; returns the rows' cells."""
    body = "\n".join(line for line in tex.splitlines() if not line.lstrip().startswith("%"))
    begins = re.findall(r"\\begin\{(\w+)\}", body)
    ends = re.findall(r"\\end\{(\w+)\}", body)
    assert begins == ends[::-1] == ["tabular"]
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}\s*$", body.splitlines()[0]).group(1)
    columns = len(re.findall(r"[lcr]|p\{[^}]*\}", re.sub(r"p\{[^}]*\}", "p{}", spec)))
    assert body.index(r"\toprule") < body.index(r"\midrule") < body.index(r"\bottomrule")
    inner = body.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    header = body.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0]
    rows = []
    for line in [header.strip(), *inner.strip().splitlines()]:
        assert line.endswith(r"\\"), line
        cells = re.split(r"(?<!\\)&", line[:-2])
        assert len(cells) == columns, (columns, line)
        rows.append(cells)
    # braces balance, and no special character is left bare
    depth = 0
    for i, ch in enumerate(body):
        if ch in "{}" and (i == 0 or body[i - 1] != "\\"):
            depth += 1 if ch == "{" else -1
            assert depth >= 0
    assert depth == 0
    for cells in rows:  # no special character is left bare inside a cell
        for cell in cells:
            text = re.sub(r"\$\\[a-z]+\$|\\[a-zA-Z]+(\{[^{}]*\})?|\\[&%$#_{}]", "", cell)
            for ch in "%&#_^~$\\":
                assert ch not in text, (ch, cell)
    return rows


def test_latex_and_bib(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, bib = tmp_path / "table.tex", tmp_path / "refs.bib"
    code, stdout, err = _run(capsys, "hinton2015", "romero2015", "han2015",
                             "--format", "latex", "--out", str(out), "--bib", str(bib))
    assert code == 0 and stdout == "" and "wrote" in err
    tex = out.read_text(encoding="utf-8")
    rows = _check_latex_fragment(tex)
    assert len(rows) == 1 + _claims("hinton2015", "romero2015", "han2015")
    assert r"\cite{hinton2015}" in tex and r"distillation\_gain\_pp" in tex and r"$\rightarrow$" in tex
    assert r"\textasciitilde{}" in tex  # romero2015's settings say "~2.5M"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left
    entries = read_bib(bib)
    assert [e.key for e in entries] == ["hinton2015", "romero2015", "han2015"]
    if shutil.which("pdflatex"):
        doc = tmp_path / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=1cm]{geometry}"
                       "\\begin{document}\\begin{table}\\input{table.tex}\\end{table}"
                       "\\end{document}\n", encoding="utf-8")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]


def test_latex_escapes_every_special() -> None:
    assert latex_escape("50% of a_b & c#d ~e ^f {g} \\h $i <j> ->") == (
        r"50\% of a\_b \& c\#d \textasciitilde{}e \textasciicircum{}f \{g\} \textbackslash{}h \$i "
        r"\textless{}j\textgreater{} $\rightarrow$"
    )
    rows = [{"paper": "x2020", "claim": "c_1", "paper setting": "Net & Co / 100% data", "reported": "1 → 2, 3×",
             "harness setting": "~#", "reproduced": "a^b", "verdict": "partly"}]
    assert len(_check_latex_fragment(render_latex(rows))) == 2


def test_errors(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys)
    assert code == 2 and "name the papers" in err
    code, _, err = _run(capsys, "hinton2015", "--category", "pruning")
    assert code == 2
    code, _, err = _run(capsys, "hintn2015")
    assert code == 3 and "hinton2015" in err
    code, _, err = _run(capsys, "hinton2015", "--out", str(tmp_path / "missing" / "t.md"))
    assert code == 2 and "no such folder" in err
    code, _, err = _run(capsys, "--category", "survey")
    assert code == 2 and "no reported claims" in err
