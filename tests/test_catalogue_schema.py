"""papers.yaml's schema: each kind of bad input is refused with the file, key, field and line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import atlas
from atlas.catalogue import Check, load_catalogue, parse_catalogue
from atlas.cli import main
from atlas.errors import CatalogueError, UnknownKeyError
from atlas.schema import SCHEMA_FILE, json_schema, json_schema_text
from atlas.schema import main as schema_main

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "papers_small.yaml"
PAPERS = atlas.ROOT / "papers.yaml"

GOOD = """\
- key: han2015
  title: "Learning both Weights and Connections for Efficient Neural Networks"
  authors: [Song Han, Jeff Pool, John Tran, William J. Dally]
  year: 2015
  venue:
    name: "Advances in Neural Information Processing Systems 28"
    short: NIPS 2015
    type: conference
  arxiv: "1506.02626"
  doi: null
  categories: [pruning]
  kind: method
  listed_in: [list, annotated]
  survey:
    ref: 11
    class: Pruning
    conference: NIPS2015
    cite: 206
    detailed: prune connect
    superiority: AlexNet 9*
    weakness: no-acceleration
  claims:
    - id: lenet-300-100
      model: LeNet-300-100
      dataset: MNIST
      metric: top-1 error (%)
      baseline: 1.64
      compressed: 1.59
      ratio: 12.0
      source: "Table 1"
      confidence: high
      checks:
        - quantity: param_compression
          target: 12.0
          direction: higher
          tolerance: {rel: 0.25}
- key: hinton2015
  title: "Distilling the Knowledge in a Neural Network"
  authors: [Geoffrey Hinton, Oriol Vinyals, Jeff Dean]
  year: 2015
  venue: {name: arXiv preprint, short: arXiv, type: preprint}
  arxiv: "1503.02531"
  categories: [distillation]
  kind: method
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[occurrence - 1]


def problem(text: str, name: str = "papers.yaml") -> str:
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(text, Path(name))
    return str(info.value)


def test_good_text_loads() -> None:
    catalogue = parse_catalogue(GOOD, Path("papers.yaml"))
    assert catalogue.keys() == ["han2015", "hinton2015"]
    paper = catalogue.get("han2015")
    assert paper.line == 1
    assert catalogue.get("hinton2015").line == line_of(GOOD, "key: hinton2015")
    assert paper.survey is not None and paper.survey.klass == "Pruning" and paper.survey.cite == 206
    assert paper.claim("lenet-300-100").checks[0].tol_rel == 0.25
    assert paper.links == {"arxiv": "https://arxiv.org/abs/1506.02626"}


@pytest.mark.parametrize(
    ("old", "new", "key", "field", "needle", "words"),
    [
        ('arxiv: "1506.02626"', 'arxiv: "1506.2626"', "han2015", "arxiv", "arxiv:", "is not an arXiv id"),
        ('arxiv: "1506.02626"', "arxiv: 1506.02626", "han2015", "arxiv", "arxiv:", "quote it"),
        ('arxiv: "1506.02626"', 'arxiv: "arXiv:1506.02626"', "han2015", "arxiv", "arxiv:", "not an arXiv id"),
        ("doi: null", 'doi: "https://doi.org/10.1/x"', "han2015", "doi", "doi:", "is not a DOI"),
        ("doi: null", 'doi: "11.1234/abc"', "han2015", "doi", "doi:", "is not a DOI"),
        (
            "key: han2015",
            "key: Han2015",
            "Han2015",
            "key",
            "key: Han2015",
            "'Han2015' is not a paper key (surname + year + optional suffix: ^[a-z]+[0-9]{4}[a-z]?$)",
        ),
        ("key: han2015", "key: han15", "han15", "key", "key: han15", "'han15' is not a paper key"),
        (
            "key: han2015",
            "key: han2016",
            "han2016",
            "key",
            "key: han2016",
            "differs from the paper's year 2015",
        ),
        (
            "  year: 2015\n  venue:\n",
            '  year: "2015"\n  venue:\n',
            "han2015",
            "year",
            'year: "2015"',
            "expected an integer, got a string (remove the quotes)",
        ),
        ("  year: 2015\n  venue:\n", "  year: 1850\n  venue:\n", "han2015", "year", "year: 1850", "outside"),
        (
            "categories: [pruning]",
            "categories: [pruning, sparsity]",
            "han2015",
            "categories",
            "categories:",
            "'sparsity' is not one of: survey, distillation, pruning,",
        ),
        ("categories: [pruning]", "categories: []", "han2015", "categories", "categories:", "at least one"),
        (
            "categories: [pruning]",
            "categories: pruning",
            "han2015",
            "categories",
            "categories:",
            "expected a list",
        ),
        (
            "  kind: method\n  listed_in",
            "  kind: trick\n  listed_in",
            "han2015",
            "kind",
            "kind: trick",
            "'trick' is not one of",
        ),
        (
            "  kind: method\n  listed_in",
            "  kind: off-topic\n  listed_in",
            "han2015",
            "kind_note",
            "kind: off-topic",
            "needs a one-line kind_note",
        ),
        (
            "    type: conference",
            "    type: talk",
            "han2015",
            "venue.type",
            "type: talk",
            "'talk' is not one of",
        ),
        ("    short: NIPS 2015\n", "", "han2015", "venue.short", "    name:", "required field is missing"),
        (
            "  authors: [Song Han, Jeff Pool, John Tran, William J. Dally]\n",
            "",
            "han2015",
            "authors",
            "key: han2015",
            "required field is missing",
        ),
        (
            "authors: [Song Han, Jeff Pool, John Tran, William J. Dally]",
            "authors: []",
            "han2015",
            "authors",
            "authors:",
            "at least one author",
        ),
        ("  doi: null\n", "  doi: null\n  pages: 1135-1143\n", "han2015", "pages", "pages:", "unknown field"),
        ("    cite: 206", "    cite: many", "han2015", "survey.cite", "cite: many",
         "expected an integer, got a string"),
        (
            "    class: Pruning",
            "    class: Pruners",
            "han2015",
            "survey.class",
            "class: Pruners",
            "not one of",
        ),
        (
            "          direction: higher",
            "          direction: above",
            "han2015",
            "claims[lenet-300-100].checks[0].direction",
            "direction: above",
            "'above' is not one of",
        ),
        (
            "          tolerance: {rel: 0.25}",
            "          tolerance: {}",
            "han2015",
            "claims[lenet-300-100].checks[0].tolerance",
            "tolerance: {}",
            "exactly one of abs or rel",
        ),
        (
            "          tolerance: {rel: 0.25}",
            "          tolerance: {rel: 0.25, abs: 1}",
            "han2015",
            "claims[lenet-300-100].checks[0].tolerance",
            "tolerance:",
            "both abs and rel",
        ),
        (
            "          tolerance: {rel: 0.25}\n",
            "",
            "han2015",
            "claims[lenet-300-100].checks[0].tolerance",
            "- quantity: param_compression",
            "required field is missing",
        ),
        (
            "      confidence: high",
            "      confidence: guessed",
            "han2015",
            "claims[lenet-300-100].confidence",
            "confidence: guessed",
            "'guessed' is not one of: high, checked, unconfirmed",
        ),
        (
            "      confidence: high",
            "      confidence: unconfirmed",
            "han2015",
            "claims[lenet-300-100].checks",
            "      checks:",
            "an unconfirmed number (not read in a source) cannot be a reproduction target",
        ),
        (
            "      baseline: 1.64",
            "      baseline: 1.64%",
            "han2015",
            "claims[lenet-300-100].baseline",
            "baseline:",
            "expected a number",
        ),
        (
            "    - id: lenet-300-100",
            "    - id: LeNet_300",
            "han2015",
            "claims[LeNet_300].id",
            "id: LeNet_300",
            "is not a claim id",
        ),
    ],
)
def test_bad_field_is_named_with_key_field_and_line(
    old: str, new: str, key: str, field: str, needle: str, words: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    message = problem(text)
    line = line_of(text, needle)
    expected = f"papers.yaml:{line}: paper '{key}', field '{field}': "
    assert expected in message, message
    assert words in message


def test_duplicate_key_names_both_lines() -> None:
    text = GOOD.replace("key: hinton2015", "key: han2015").replace(
        "year: 2015\n  venue: {", "year: 2015\n  venue: {"
    )
    text = text.replace('"Distilling the Knowledge in a Neural Network"', '"Another Paper"')
    message = problem(text)
    second = line_of(text, "key: han2015", 2)
    assert f"papers.yaml:{second}: paper 'han2015', field 'key': duplicate key (first at line 1)" in message


def test_duplicate_claim_id() -> None:
    claim = GOOD[GOOD.index("    - id: lenet-300-100") : GOOD.index("- key: hinton2015")]
    text = GOOD.replace(claim, claim + claim)
    message = problem(text)
    line = line_of(text, "- id: lenet-300-100", 2)
    assert (
        f"papers.yaml:{line}: paper 'han2015', field 'claims[lenet-300-100].id': duplicate claim id"
        in message
    )


def test_duplicate_mapping_field() -> None:
    text = GOOD.replace("  doi: null\n", "  doi: null\n  doi: null\n", 1)
    message = problem(text)
    assert (
        f"papers.yaml:{line_of(text, 'doi: null', 2)}: paper 'han2015', field 'doi': given twice" in message
    )


def test_duplicate_survey_ref_and_title() -> None:
    text = GOOD + (
        '- key: han2016\n  title: "Learning Both Weights and Connections for Efficient Neural Networks!"\n'
        "  authors: [Song Han]\n  year: 2016\n  venue: {name: x, short: x, type: journal}\n"
        "  categories: [pruning]\n  kind: method\n"
        "  survey: {ref: 11, class: Pruning, conference: x, cite: 1, detailed: a, superiority: b, weakness: c}\n"
    )
    message = problem(text)
    assert "paper 'han2016', field 'survey.ref': survey reference [11] is also paper 'han2015'" in message
    assert "paper 'han2016', field 'title': same title as paper 'han2015'" in message


def _preprint_of_han2015(extra: str = "", doi: str = "null") -> str:
    """GOOD plus a second entry for han2015's work: its arXiv preprint (same arXiv id, same DOI)."""
    text = GOOD.replace("  doi: null\n", f"  doi: {doi}\n", 1)
    return text + (
        '- key: han2015b\n  title: "Learning both Weights and Connections (preprint)"\n'
        "  authors: [Song Han]\n  year: 2015\n  venue: {name: arXiv preprint, short: arXiv, type: preprint}\n"
        f'  arxiv: "1506.02626"\n  doi: {doi}\n  categories: [pruning]\n  kind: method\n{extra}'
    )


def test_shared_arxiv_id_or_doi_is_refused_unless_linked() -> None:
    text = _preprint_of_han2015()
    message = problem(text)
    line = line_of(text, 'arxiv: "1506.02626"', 2)
    assert (
        f"papers.yaml:{line}: paper 'han2015b', field 'arxiv': arXiv id 1506.02626 is also paper 'han2015'"
        in message
    )
    assert "same_work_as" in message
    # a DOI is compared without case
    text = _preprint_of_han2015(doi='"10.5555/ABC.1"').replace(
        '"1506.02626"\n  doi: "10.5555/ABC.1"', '"1506.02627"\n  doi: "10.5555/abc.1"'
    )
    message = problem(text)
    assert (
        f"papers.yaml:{line_of(text, 'doi: ', 2)}: paper 'han2015b', field 'doi': DOI 10.5555/abc.1 is also paper 'han2015'"
        in message
    )
    # linked both ways: accepted, and the link is on the paper
    linked = _preprint_of_han2015("  same_work_as: [han2015]\n").replace(
        "  kind: method\n  listed_in", "  kind: method\n  same_work_as: [han2015b]\n  listed_in", 1
    )
    catalogue = parse_catalogue(linked, Path("papers.yaml"))
    assert catalogue.get("han2015").same_work_as == ("han2015b",)
    assert catalogue.get("han2015b").same_work_as == ("han2015",)
    assert catalogue.get("hinton2015").same_work_as == ()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("  same_work_as: [han2015]\n", "'han2015' does not link back (add 'han2015b' to its same_work_as)"),
        ("  same_work_as: [han2015, lecun1990]\n", "'lecun1990' is not a paper of the catalogue"),
        ("  same_work_as: [han2015b]\n", "a paper cannot be the same work as itself"),
        ("  same_work_as: [Han-2015]\n", "'Han-2015' is not a paper key"),
        ("  same_work_as: han2015\n", "expected a list, got a string"),
        ("  same_work_as: []\n", "must name at least one paper key (or leave the field out)"),
    ],
)
def test_same_work_as_must_name_papers_that_link_back(extra: str, words: str) -> None:
    text = _preprint_of_han2015(extra)
    message = problem(text)
    assert f"papers.yaml:{line_of(text, 'same_work_as')}: paper 'han2015b', field 'same_work_as': " in message
    assert words in message, message


def test_old_style_arxiv_ids_are_accepted() -> None:
    for arxiv in ("cs/0101001", "hep-th/9901001", "math.GT/0309136", "1412.6550", "2001.00001"):
        parse_catalogue(GOOD.replace('"1506.02626"', f'"{arxiv}"'), Path("papers.yaml"))


def test_yaml_syntax_error_reports_line_and_column() -> None:
    text = GOOD.replace("  year: 2015\n  venue:\n", "  year: 2015\n  venue: [oops\n", 1)
    message = problem(text)
    assert re.search(r"^papers\.yaml:\d+:\d+: not valid YAML: ", message), message


def test_top_level_must_be_a_list() -> None:
    assert "the top level must be a list of papers, got a mapping" in problem("key: han2015\ntitle: x\n")
    assert "papers.yaml:1: each paper must be a mapping, got a string" in problem("- just a string\n")


def test_many_errors_are_reported_together() -> None:
    text = GOOD.replace('"1506.02626"', '"15.06"').replace("categories: [distillation]", "categories: [kd]")
    message = problem(text)
    assert message.startswith("papers.yaml: 2 problems")
    assert "field 'arxiv'" in message and "'kd' is not one of: survey," in message


def test_file_name_and_line_in_loaded_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "papers.yaml"
    path.write_text(GOOD.replace('"1503.02531"', '"1503.2531"'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    line = line_of(path.read_text(), '"1503.2531"')
    assert str(info.value) == (
        f"papers.yaml:{line}: paper 'hinton2015', field 'arxiv': '1503.2531' is not an arXiv id "
        "(1506.02626 or cs/0101001)"
    )


def test_cache_sees_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "papers.yaml"
    path.write_text(GOOD)
    first = load_catalogue(path)
    assert load_catalogue(path) is first
    path.write_text(GOOD.replace("key: hinton2015", "key: hinton2015b") + "\n")
    assert "hinton2015b" in load_catalogue(path)


def test_cli_turns_catalogue_error_into_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "papers.yaml"
    bad.write_text(GOOD.replace('"1506.02626"', '"1506.2626"'))
    monkeypatch.setenv("ATLAS_PAPERS", str(bad))
    for argv in (
        ["validate"],
        ["validate", "--file", str(bad)],
        ["list"],
        ["show", "han2015"],
        ["cite", "--all"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ")
        assert "paper 'han2015', field 'arxiv': '1506.2626' is not an arXiv id" in err
        assert "Traceback" not in err


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--file", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_unknown_key_suggests_close_keys() -> None:
    catalogue = load_catalogue(SMALL)
    with pytest.raises(UnknownKeyError) as info:
        catalogue.get("hintn2015")
    assert str(info.value).startswith("unknown paper key 'hintn2015'; did you mean: hinton2015")
    assert info.value.exit_code == 3


def test_paper_claim_lookup() -> None:
    paper = load_catalogue(SMALL).get("han2015")
    assert paper.claim("lenet-300-100").model == "LeNet-300-100"
    with pytest.raises(
        CatalogueError, match=r"paper 'han2015' has no claim 'alexnet' \(its claims: lenet-300-100\)"
    ):
        paper.claim("alexnet")


def test_catalogue_container_and_filter() -> None:
    catalogue = load_catalogue(SMALL)
    assert len(catalogue) == 4 and "han2015" in catalogue and "nobody2000" not in catalogue
    assert [p.key for p in catalogue] == catalogue.keys()
    assert [p.key for p in catalogue.filter(category="pruning")] == ["han2015", "scardapane2017"]
    assert [p.key for p in catalogue.filter(kind="off-topic")] == ["cohen2016"]
    assert [p.key for p in catalogue.filter(year=2015, category="distillation")] == ["hinton2015"]
    assert catalogue.filter(year=1999) == []


def test_check_semantics() -> None:
    rel = Check("param_compression", 12.0, "higher", None, 0.25)
    assert rel.tolerance() == pytest.approx(3.0)
    assert rel.passes(9.0) and rel.passes(40) and not rel.passes(8.99) and not rel.passes(math.nan)
    assert rel.describe() == "param_compression >= 9.0 (12 - 25%)"
    low = Check("storage_bits", 100.0, "lower", 5.0, None)
    assert low.passes(105) and not low.passes(105.01)
    assert low.describe() == "storage_bits <= 105.0 (100 + 5)"
    eq = Check("bits", 2.0, "equal", 0.0, None)
    assert eq.passes(2) and not eq.passes(2.5) and not eq.passes(1.5)
    neg = Check("accuracy_change_pp", -0.5, "higher", None, 0.5)
    assert neg.tolerance() == pytest.approx(0.25) and neg.passes(-0.75) and not neg.passes(-0.8)


def test_check_by_keywords_as_in_the_file() -> None:
    check = Check(quantity="param_compression", target=12, direction="higher", tolerance={"rel": 0.25})
    assert check == Check("param_compression", 12.0, "higher", None, 0.25)
    assert (check.tol_abs, check.tol_rel, check.tolerance()) == (None, 0.25, 3.0)


@pytest.mark.parametrize("field", ["claims", "listed_in", "same_work_as"])
def test_null_list_means_no_items(field: str) -> None:
    text = GOOD.replace("  categories: [distillation]\n", f"  categories: [distillation]\n  {field}: null\n")
    assert getattr(parse_catalogue(text, Path("papers.yaml")).get("hinton2015"), field) == ()


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        (
            "          tolerance: {rel: 0.25}",
            "          tolerance: {rel: 0.25, pct: 25}",
            "claims[lenet-300-100].checks[0].tolerance.pct",
            "unknown field (allowed: abs, rel)",
        ),
        (
            "          tolerance: {rel: 0.25}",
            "          tolerance: {rel: -0.25}",
            "claims[lenet-300-100].checks[0].tolerance.rel",
            "must be at least 0, got -0.25",
        ),
        ("    type: conference", "    type: 3", "venue.type", "expected one of: conference, journal,"),
        ("    type: conference", "    type: [a]", "venue.type", "got a list"),
        ("      ratio: 12.0", "      ratio: 12.0\n      sparsity: 92", "claims[lenet-300-100].sparsity",
         "must be at most 1, got 92"),
        ("      ratio: 12.0", "      ratio: .inf", "claims[lenet-300-100].ratio", "expected a finite number"),
        ("      ratio: 12.0", '      ratio: "12"', "claims[lenet-300-100].ratio",
         "expected a number, got a string (remove the quotes)"),
        (
            "  venue:\n    name:",
            "  venue: NIPS\n  x:\n    name:",
            "venue",
            "expected a mapping with name, short, type, got a string",
        ),
        ("    cite: 206", "    cite: -1", "survey.cite", "must be at least 0, got -1"),
        ("    ref: 11", "    ref: 0", "survey.ref", "must be more than 0, got 0"),
        ("listed_in: [list, annotated]", "listed_in: [list, list]", "listed_in", "'list' is listed twice"),
        ("categories: [pruning]", "categories: [pruning, pruning]", "categories", "'pruning' is listed twice"),
        ('  arxiv: "1506.02626"', '  arxiv: "1506.02626"\n  kind_note: "a\\nb"', "kind_note", "must be one line"),
        ("  title: \"Learning", "  title: \"  \"\n  x: \"Learning", "title", "must not be empty"),
        ("      source: \"Table 1\"", "      source: \"Table 1\"\n      arxiv_version: \"1506.02626\"",
         "claims[lenet-300-100].arxiv_version", "is not a versioned arXiv id (1506.02626v3)"),
        ("        - quantity: param_compression", "        - quantity: ParamCompression",
         "claims[lenet-300-100].checks[0].quantity", "is not a snake_case metric name"),
    ],
)
def test_more_bad_fields_are_named(old: str, new: str, field: str, words: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    message = problem(text)
    assert f"paper 'han2015', field '{field}': " in message, message
    assert words in message, message


#: Values of another type (or shape) put in place of each field of GOOD.
RETYPES = ["null", "[]", "{}", "-1", "1e999", "true", "'  '", "[1, [2]]", "2015-01-01", "!!binary aGk=",
           "{1: 2}"]


@pytest.mark.parametrize("value", RETYPES)
def test_every_field_of_another_type_is_told_in_our_words(value: str) -> None:
    """Each field of GOOD in turn given ``value``: refused (or accepted) with messages that name the
    line and the paper and are the schema's sentences, never pydantic's own."""
    lines = GOOD.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if ": " not in line:
            continue
        text = "".join([*lines[:i], line.split(": ", 1)[0] + f": {value}\n", *lines[i + 1 :]])
        try:
            parse_catalogue(text, Path("papers.yaml"))
        except CatalogueError as exc:
            problems = getattr(exc, "problems", None)
            if problems is None:  # not YAML at all (a block value where a flow one was)
                assert re.match(r"papers\.yaml(:\d+:\d+)?: not valid YAML: ", str(exc)), str(exc)
                continue
            for p in problems:
                assert p.line is not None and p.line >= 1, (line, p)
                assert p.key is not None or "each paper must be a mapping" in p.message, (line, p)
                assert "Input should" not in p.message and "Value error" not in p.message, (line, p)


def test_a_recursive_alias_is_refused_not_followed() -> None:
    message = problem("- &a {key: *a}\n")
    assert message == "papers.yaml:1:3: not valid YAML: an alias refers to a mapping or list that contains it"
    assert re.match(r"papers\.yaml: not valid YAML: nested too deeply", problem("[" * 5000 + "]" * 5000))


def test_the_catalogue_is_read_back_from_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalogue that passed is kept in the cache folder and read back without parsing YAML, until
    the file (or the schema's code) changes; a damaged snapshot is parsed again."""
    import atlas.catalogue as catalogue_module

    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "papers.yaml"
    path.write_text(GOOD)
    first = load_catalogue(path)
    snapshots = list((tmp_path / "cache" / "catalogue").glob("*.json"))
    assert len(snapshots) == 1
    monkeypatch.setattr(catalogue_module, "_CACHE", {})
    real_parse = catalogue_module.parse_text

    def no_yaml(text: str) -> object:
        raise AssertionError("parsed the YAML although the snapshot is current")

    monkeypatch.setattr(catalogue_module, "parse_text", no_yaml)
    again = load_catalogue(path)
    assert again.papers == first.papers
    assert [p.line for p in again] == [p.line for p in first] == [1, line_of(GOOD, "key: hinton2015")]
    han = again.get("han2015")
    assert han.survey is not None and han.survey.klass == "Pruning"
    assert han.claim("lenet-300-100").checks[0].describe() == "param_compression >= 9.0 (12 - 25%)"
    # a changed file is parsed (and checked) again
    monkeypatch.setattr(catalogue_module, "parse_text", real_parse)
    path.write_text(GOOD.replace('"1503.02531"', '"1503.2531"'))
    with pytest.raises(CatalogueError, match="'1503.2531' is not an arXiv id"):
        load_catalogue(path)
    path.write_text(GOOD)
    load_catalogue(path)
    # a damaged snapshot is parsed again, and rewritten
    snapshots[0].write_text('{"source": "x", "lines": [1], "papers": [{"key": 1}]}')
    monkeypatch.setattr(catalogue_module, "_CACHE", {})
    assert load_catalogue(path).keys() == ["han2015", "hinton2015"]
    assert '"han2015"' in snapshots[0].read_text()


def test_papers_schema_json_is_current() -> None:
    """papers.schema.json (for editors) is what the models give: `python -m atlas.schema` rewrites it."""
    if atlas.CHECKOUT is None:
        pytest.skip("an installed package carries no papers.schema.json")
    committed = json.loads((atlas.CHECKOUT / SCHEMA_FILE).read_text(encoding="utf-8"))
    assert committed == json_schema(), f"{SCHEMA_FILE} is stale: run `python -m atlas.schema`"
    assert schema_main(["--check"]) == 0


def test_schema_command_writes_and_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(atlas, "CHECKOUT", tmp_path)
    assert schema_main(["--check"]) == 1
    assert "papers.schema.json is out of date: run `python -m atlas.schema`" in capsys.readouterr().err
    assert schema_main([]) == 0
    assert (tmp_path / SCHEMA_FILE).read_text(encoding="utf-8") == json_schema_text()
    assert schema_main(["--check"]) == 0
    (tmp_path / SCHEMA_FILE).write_text("{}\n")
    assert schema_main(["--check"]) == 1


def test_json_schema_agrees_with_the_models() -> None:
    """The editors' schema accepts the real catalogue and refuses what the models refuse."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(json_schema())
    if PAPERS.is_file():
        assert list(validator.iter_errors(yaml.safe_load(PAPERS.read_text(encoding="utf-8")))) == []
    good = yaml.safe_load(GOOD)
    assert list(validator.iter_errors(good)) == []
    han = good[0]
    for bad in (
        {**han, "pages": "1-9"},
        {**han, "year": 1850},
        {**han, "categories": []},
        {**han, "categories": ["sparsity"]},
        {**han, "arxiv": "1506.2626x"},
        {**han, "survey": {**han["survey"], "cite": -1}},
        {**han, "venue": {"name": "x", "short": "x"}},
        {**han, "same_work_as": []},
    ):
        assert list(validator.iter_errors([bad])), bad
        with pytest.raises(CatalogueError):
            parse_catalogue(yaml.safe_dump([bad], sort_keys=False), Path("papers.yaml"))
