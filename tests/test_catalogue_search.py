"""The catalogue as researchers use it: ``atlas list --search``, survey titles, works catalogued
twice (``same_work_as``), confidence levels and notes written for readers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_catalogue_seeds import (
    ANNOTATED_SEED,
    LIST_SEED,
    SEEDS,
    SPELLING_VARIANTS,
    parse_list,
    parse_references,
)

import atlas
from atlas.catalogue import Catalogue, Paper, load_catalogue, matches, parse_catalogue, search_terms
from atlas.cli import main
from atlas.errors import AtlasError, CatalogueError
from atlas.schema import CONFIDENCES, normalise_title

PAPERS = atlas.ROOT / "papers.yaml"

#: Every paper with a survey title, and words of that title its published title lacks.
SURVEY_WORDS: dict[str, str] = {
    "rawat2017": "classiffication",
    "molchanov2017": "transfer learning",
    "babaeizadeh2016": "dense layers",
    "wang2018": "evolutional",
    "aghasi2017": "layer-wise",
    "deng2018": "gated xnor",
    "agustsson2017": "learned images",
    "pedersoli2017": "bcnns",
    "appuswamy2016": "energye",
}
#: Papers whose survey words also begin a run of words of the published title: "energye" is how
#: "energy-efficient" begins without its hyphen.
ALSO_IN_TITLE = {"appuswamy2016"}

#: Curation wording that must not reach a reader (the site publishes the notes).
INTERNAL = re.compile(r"reported\.yaml|\.yaml|this session|\bNOT\b|\bRECALLED\b|recalled|\(verify\)")


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(PAPERS)


def keys(papers: list[Paper]) -> list[str]:
    return [p.key for p in papers]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------------
# search


def test_list_search_finds_espresso_by_its_survey_wording(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLAS_PAPERS", str(PAPERS))
    code, out, _ = run(capsys, "list", "--search", "bcnns")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[0] == "pedersoli2017"
    assert lines[-1] == "1 of 191 papers"
    code, out, _ = run(capsys, "list", "--search", "BCNNs", "--format", "json")
    rows = json.loads(out)
    assert [r["key"] for r in rows] == ["pedersoli2017"]
    assert rows[0]["survey_title"] == "Espresso: Efficient forward propagation for bcnns"
    assert rows[0]["title"] == "Espresso: Efficient Forward Propagation for Binary Deep Neural Networks"


@pytest.mark.parametrize(("key", "words"), sorted(SURVEY_WORDS.items()))
def test_each_survey_title_is_found_by_its_own_words(catalogue: Catalogue, key: str, words: str) -> None:
    found = keys(catalogue.filter(search=words))
    assert key in found, f"--search {words!r} gives {found}"
    # found through the survey title: the published title, key and authors lack these words
    paper = catalogue.get(key)
    without = matches(paper.model_copy(update={"survey_title": None}), search_terms(words))
    assert without is (key in ALSO_IN_TITLE)


def test_every_survey_title_has_search_words(catalogue: Catalogue) -> None:
    listed = {p.key: p.survey_title for p in catalogue if p.survey_title is not None}
    assert sorted(listed) == sorted(SURVEY_WORDS)
    assert listed["deng2018"] == (
        "Gated xnor networks: Deep neural networks with ternary weights and activations under a unified "
        "discretization framework"
    )
    assert listed["aghasi2017"] == "Net-trim: A layer-wise convex pruning of deep neural networks"


@pytest.mark.skipif(SEEDS is None, reason="seed documents not found: set ATLAS_SHARED_DIR")
def test_survey_title_is_given_wherever_a_survey_words_the_title_differently(catalogue: Catalogue) -> None:
    assert SEEDS is not None
    by_title = {normalise_title(p.title): p for p in catalogue}
    expected: dict[str, str] = {}
    for entry in parse_list(SEEDS / LIST_SEED):
        seed = normalise_title(entry.title)
        paper = by_title[SPELLING_VARIANTS.get(seed, seed)]
        if seed != normalise_title(paper.title):
            expected[paper.key] = entry.title
    assert {p.key: p.survey_title for p in catalogue if p.survey_title} == expected
    # the annotated survey's references name each paper by its published or its survey title
    for number, text in parse_references(SEEDS / ANNOTATED_SEED).items():
        paper = next(p for p in catalogue if p.survey is not None and p.survey.ref == number)
        titles = [paper.title] + ([paper.survey_title] if paper.survey_title else [])
        assert any(normalise_title(t) in normalise_title(text) for t in titles), (number, paper.key)


def test_search_needs_every_word_at_a_word_start(catalogue: Catalogue) -> None:
    han = keys(catalogue.filter(search="han"))
    assert {"han2015", "han2016", "han2017", "han2016b", "li2017"} <= set(han)  # li2017: Hanan Samet
    assert "he2017" not in han  # Xiangyu Zhang: "han" inside a word does not count
    assert keys(catalogue.filter(search="han pruning")) == ["han2016", "li2017"]
    assert keys(catalogue.filter(search=["han", "pruning"])) == ["han2016", "li2017"]
    assert keys(catalogue.filter(search="han pruning", year=2017)) == ["li2017"]
    assert keys(catalogue.filter(search="nettrim")) == ["aghasi2017"]  # punctuation ignored
    assert keys(catalogue.filter(search="Han2015")) == ["han2015"]
    assert keys(catalogue.filter(search="zzzz")) == []


@pytest.mark.parametrize("word", ["Maëlys", "MAELYS", "maelys"])
def test_search_ignores_case_and_accents(catalogue: Catalogue, word: str) -> None:
    assert keys(catalogue.filter(search=word)) == ["soulie2016"]  # Maëlys Robert


def test_search_without_a_letter_or_digit_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AtlasError, match="nothing to search for"):
        search_terms(" -- ")
    monkeypatch.setenv("ATLAS_PAPERS", str(PAPERS))
    code, out, err = run(capsys, "list", "--search", "?!", "+")
    assert code == 2 and out == ""
    assert err.startswith("error: nothing to search for in '?! +'")


def test_a_survey_title_equal_to_the_title_is_refused() -> None:
    text = PAPERS.read_text(encoding="utf-8")
    old = '  survey_title: "Espresso: Efficient forward propagation for bcnns"\n'
    assert old in text
    same = '  survey_title: "ESPRESSO - efficient forward propagation for binary deep neural networks"\n'
    bad = text.replace(old, same)
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(bad, Path("papers.yaml"))
    line = bad[: bad.index("  survey_title: \"ESPRESSO")].count("\n") + 1
    assert str(info.value).startswith(
        f"papers.yaml:{line}: paper 'pedersoli2017', field 'survey_title': is the published title"
    )


# ---------------------------------------------------------------------------------------------
# works catalogued twice


def test_same_work_as_links_both_ways(catalogue: Catalogue) -> None:
    linked = {p.key: p.same_work_as for p in catalogue if p.same_work_as}
    assert linked == {
        "chen2015b": ("chen2016",),
        "chen2016": ("chen2015b",),
        "wang2016d": ("wang2017c",),
        "wang2017c": ("wang2016d",),
    }
    for key, others in linked.items():
        for other in others:
            assert key in catalogue.get(other).same_work_as
            assert catalogue.get(other).arxiv == catalogue.get(key).arxiv
    assert catalogue.get("chen2015b").arxiv == "1506.04449"
    assert catalogue.get("wang2016d").arxiv == "1608.04337"


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "  same_work_as: [chen2015b]\n",
            "",
            "chen2015b",
            "'chen2016' does not link back (add 'chen2015b' to its same_work_as)",
        ),
        (
            "  same_work_as: [chen2015b]\n",
            "  same_work_as: [chen2015z]\n",
            "chen2016",
            "'chen2015z' is not a paper of the catalogue",
        ),
    ],
)
def test_a_broken_link_is_an_error_with_key_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, key: str, message: str
) -> None:
    text = PAPERS.read_text(encoding="utf-8")
    assert text.count(old) == 1
    broken = text.replace(old, new)
    path = tmp_path / "papers.yaml"
    path.write_text(broken, encoding="utf-8")
    start = broken.index(f"- key: {key}\n")
    line = broken[: broken.index("  same_work_as:", start)].count("\n") + 1
    code, out, err = run(capsys, "validate", "--file", str(path))
    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert f"papers.yaml:{line}: paper '{key}', field 'same_work_as': {message}" in err


# ---------------------------------------------------------------------------------------------
# confidence levels and notes


def test_confidence_levels(catalogue: Catalogue) -> None:
    assert CONFIDENCES == ("high", "checked", "unconfirmed")
    claims = [c for p in catalogue for c in p.claims]
    unconfirmed = [c for c in claims if c.confidence == "unconfirmed"]
    assert len(unconfirmed) == 25
    assert all(not c.checks for c in unconfirmed)
    assert "confidence: recalled" not in PAPERS.read_text(encoding="utf-8")


def test_notes_are_written_for_readers(catalogue: Catalogue) -> None:
    found = []
    for paper in catalogue:
        notes = [(f"claims[{c.id}].note", c.note) for c in paper.claims]
        notes.append(("kind_note", paper.kind_note))
        for field, note in notes:
            if note and INTERNAL.search(note):
                found.append(f"{paper.key} {field}: {INTERNAL.search(note).group(0)!r}")
    assert not found, "\n".join(found)
    # the folded facts are still there
    romero = catalogue.get("romero2015").claim("cifar10-fitnet").note
    assert "84.6 (54M params), 84.9 (70M), 85.8" in romero and "1.52x faster" in romero
    li = catalogue.get("li2016").claim("mnist-lenet5").note
    assert "99.41 / TWN 99.35 / BPWN 99.05" in li and "not confirmed from the paper's text" in li


def test_internal_wording_pattern_catches_what_it_should() -> None:
    for bad in ("[reported.yaml: 3x]", "not confirmed this session", "NOT verified", "recalled", "(verify)"):
        assert INTERNAL.search(bad), bad
    assert not INTERNAL.search("not confirmed from the paper's text; NST+KD 24.34")
    assert normalise_title("Maëlys") == "maelys"
