"""The comparison and category tables as researchers read them: the verdict right after the paper, each
checked quantity under its label with the paper's value beside the atlas's (mean, 95% interval, n), the
paper's raw numbers kept, verdicts that sort in a meaningful order, each category linking the comparison
table filtered to it; and the paper pages weighted and tagged in the site's search so that a key finds
its paper first (the search index itself is checked here; tests/test_site_browser.py runs the search)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the site needs the [site] extra: pip install -e '.[site]'")

from site_helpers import HINTON_GAIN, hinton_site_data  # noqa: E402

from atlas import manifest  # noqa: E402
from atlas.catalogue import CATEGORIES, load_catalogue  # noqa: E402
from atlas.schema import Check  # noqa: E402
from atlas.site import glossary, pages  # noqa: E402
from atlas.site.data import SiteData  # noqa: E402
from atlas.stats import Interval  # noqa: E402
from atlas.verdict import VERDICTS  # noqa: E402

GAIN = "gain of distilled student over hard-label student (pp)"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SiteData:
    """The catalogue with the fixture's record of hinton2015 (mnist-student: gain 0.7333, 0.8333, 0.9333)."""
    return hinton_site_data(tmp_path_factory)


@pytest.fixture(scope="module")
def bare() -> SiteData:
    """The catalogue and no records."""
    return SiteData(load_catalogue(), {}, manifest.load().entries)


def test_a_measured_check_shows_both_values_in_one_unit(data: SiteData) -> None:
    paper = data.catalogue.get("hinton2015")
    (gain,) = pages.claim_compared(data, paper, paper.claim("mnist-student"))
    # t(0.975, 2) * 0.1 / sqrt(3) = 0.2484: the interval [0.585, 1.08]
    assert gain.text == f"{GAIN}: paper +0.72 · atlas +{HINTON_GAIN:.3g} [0.585, 1.08], n=3"
    assert (gain.quantity, gain.state) == ("distillation_gain_pp", "pass")
    assert gain.rule == "distillation_gain_pp >= 0.12 (0.72 - 0.6)"
    # the claim the fixture's run did not measure, and the same claim without any record
    speech = pages.claim_compared(data, paper, paper.claim("speech-3pct-data"))
    assert [c.text for c in speech] == [f"{GAIN}: paper ≥ 0 · atlas not measured",
                                        "share of the teacher–student gap recovered (1 = all): paper 0.87 · "
                                        "atlas not measured"]


def test_without_a_record_the_atlas_side_says_why(bare: SiteData) -> None:
    han2015 = bare.catalogue.get("han2015")
    texts = [c.text for c in pages.claim_compared(bare, han2015, han2015.claim("lenet-300-100"))]
    assert texts == ["parameter compression (×): paper 12 · atlas not run",
                     "accuracy change against the uncompressed baseline (pp): paper +0.05 · atlas not run"]
    unreadable = SiteData(bare.catalogue, {}, bare.reproductions, unreadable={"han2015": "bad JSON"})
    (first, _) = pages.claim_compared(unreadable, han2015, han2015.claim("lenet-300-100"))
    assert first.missing == "record unreadable" and first.text.endswith("atlas record unreadable")


def test_values_and_intervals_in_the_quantitys_unit() -> None:
    assert pages.value_text("accuracy_change_pp", -0.41) == "-0.41"
    assert pages.value_text("accuracy_change_pp", 0.0) == "0"
    assert pages.value_text("distillation_gain_pp", 3.784) == "+3.78"
    assert pages.value_text("param_compression", 11.94) == "11.9"  # a ratio: no sign
    # a zero target without tolerance on a one-sided rule: the paper states a direction, not a number
    assert pages.paper_value(Check("teacher_q_gain_pp", 0.0, "higher", 0.0, None)) == "≥ 0"
    assert pages.paper_value(Check("distillation_gain_pp", 0.5, "higher", 0.0, None)) == "+0.5"
    assert pages.paper_value(Check("accuracy_change_pp", 0.0, "higher", 0.5, None)) == "0"
    assert pages.paper_value(Check("param_compression", 12.0, "higher", None, 0.25)) == "12"
    assert pages.atlas_spread(Interval(0.41, 0.1, 5, 0.286, 0.534)) == " [0.286, 0.534], n=5"
    assert pages.atlas_spread(Interval(12.0, 0.0, 3, 12.0, 12.0)) == ", n=3 (same on every seed)"
    assert pages.atlas_spread(Interval(12.0, 0.0, 1, None, None)) == ", n=1 (no interval)"


def test_every_checked_quantity_has_a_label() -> None:
    for name in glossary.checked_quantities(load_catalogue()):
        label = glossary.label(name)
        assert name in glossary.LABELS and "_" not in label.text, name  # words, not the raw name
        assert label.unit in ("pp", "%", "×", "1 = all", "1 = perfect", "dB", "°", "count"), name
        assert label.signed == name.endswith(("_pp", "_db")), name  # differences show their sign
    assert str(glossary.label("distillation_gain_pp")) == GAIN
    assert str(glossary.label("mystery_gain_pp")) == "mystery_gain_pp"  # unlabelled: its name


def test_a_defined_quantity_without_a_label_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(glossary.LABELS, "storage_compression")
    assert glossary.undefined_quantities(load_catalogue()) == ["storage_compression"]


def test_entity_escaping_is_safe_in_markdown_and_html() -> None:
    assert pages.ent("a|b_c [x] $5 <y> *z* `q` #") == \
        "a&#124;b&#95;c &#91;x&#93; &#36;5 &lt;y&gt; &#42;z&#42; &#96;q&#96; &#35;"


def test_comparison_rows_put_the_verdict_after_the_paper(data: SiteData) -> None:
    page = pages.comparison_page(data)
    heads = [h for h, _ in pages.COMPARISON_HEADS]
    assert heads[:4] == ["Paper", "Verdict", "Paper vs atlas", "Reported claim"]
    rows = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr ")[1:]
    assert len(rows) == len(data.catalogue)
    for row in rows:
        cells = re.findall(r"<(t[hd])\b([^>]*)>", row)
        assert cells[0] == ("th", ' scope="row"') and 'class="atlas-verdict-cell"' in cells[1][1]
    hinton = html.unescape(next(r for r in rows if ">hinton2015</a>" in r))
    assert f"paper <b>+0.72</b> · atlas <b>+{HINTON_GAIN:.3g}</b> [0.585, 1.08], n=3" in hinton
    assert 'title="distillation_gain_pp >= 0.12 (0.72 - 0.6)"' in hinton  # the raw name as tooltip
    assert 'href="glossary.html#q-distillation-gain-pp"' in hinton
    assert 'data-sort="0"' in hinton  # reproduced sorts first


def test_verdicts_sort_in_their_order() -> None:
    ranks = [pages.verdict_rank(v) for v in (*VERDICTS, "not run", "record unreadable")]
    assert ranks == [str(i) for i in range(len(VERDICTS) + 2)]
    assert pages.verdict_rank("") == pages.verdict_rank(None) == ""  # blank: last either way


def test_category_pages_link_their_comparison_view_and_lead_with_the_verdict(data: SiteData) -> None:
    for cat in CATEGORIES:
        page = pages.category_page(data, cat, [], f"{cat}.svg")
        assert f'<a href="../comparison.html?category={cat}">' in page, cat
        if not data.catalogue.filter(category=cat):
            continue
        heads = re.findall(r'<th data-type="(\w+)"[^>]*>([^<]+)</th>', page)
        assert [h for _, h in heads] == ["Paper", "Verdict", "Paper vs atlas", "Reported", "Title", "Year",
                                         "Venue", "Code"], cat
        assert dict((h, t) for t, h in heads)["Year"] == "num"
    distillation = pages.category_page(data, "distillation", [], "distillation.svg")
    row = next(r for r in distillation.split("<tr>") if ">hinton2015</a>" in r)
    assert "atlas-verdict--reproduced" in row and GAIN in row


def test_paper_page_claims_show_both_values(bare: SiteData) -> None:
    page = pages.paper_page(bare, bare.catalogue.get("han2015"))
    row = next(line for line in page.splitlines() if line.startswith("| <code>lenet-300-100</code> |"))
    assert row.count(" | ") == 4  # one table row: the markup of the checks holds no cell separator
    shown = 'parameter compression (×)</a>: <span class="atlas-cmp__v">paper <b>12</b> · atlas <i>not run</i>'
    assert shown in row
    no_checks = pages.paper_page(bare, bare.catalogue.get("hinton2015"))
    assert "| no check (not comparable) |" in no_checks  # mnist-teacher


def test_paper_pages_are_weighted_and_tagged_for_search(bare: SiteData) -> None:
    # han2016 begins the key han2016b
    assert pages.search_boost(bare, bare.catalogue.get("han2016")) == pages.SEARCH_BOOST_PREFIX_KEY
    assert pages.search_boost(bare, bare.catalogue.get("han2016b")) == pages.SEARCH_BOOST
    assert pages.search_boost(bare, bare.catalogue.get("han2015")) == pages.SEARCH_BOOST
    assert pages.SEARCH_BOOST_PREFIX_KEY > pages.SEARCH_BOOST > 1
    page = pages.paper_page(bare, bare.catalogue.get("han2016"))
    front = page.split("---\n", 2)[1]
    assert "search:\n  boost: 15\ntags:\n  - han2016\n" in front
    # a heading without an id: the title, authors and key are the page's own entry, not a section
    assert "<h1>Deep Compression: Compressing Deep Neural Networks with Pruning" in page
    assert page.count("data-search-exclude") == 3  # breadcrumbs, neighbours, source listing


@pytest.mark.slow
def test_search_index_weighs_and_tags_paper_pages(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("mkdocs_gen_files", reason="the site needs the [site] extra: pip install -e .[site]")
    from site_helpers import built_site

    site: Path = built_site(tmp_path_factory.getbasetemp()).site
    docs = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))["docs"]
    catalogue = load_catalogue()
    by_page: dict[str, list[dict]] = {}
    for doc in docs:
        by_page.setdefault(doc["location"].split("#")[0], []).append(doc)
    for paper in catalogue:
        sections = by_page[f"papers/{paper.key}.html"]
        assert all(d.get("tags") == [paper.key] and d.get("boost", 1) >= pages.SEARCH_BOOST for d in sections)
        own = next(d for d in sections if "#" not in d["location"])  # the page's own entry, ranked first
        text = html.unescape(re.sub(r"<[^>]+>", " ", own["text"]))
        assert paper.key in text and paper.authors[0] in text, paper.key
        assert " ".join(paper.title.split()) in " ".join(text.split()), paper.key
        listed = pages.survey_title(paper)
        assert listed is None or " ".join(listed.split()) in " ".join(text.split()), paper.key
    for page in ("comparison.html", "papers/index.html", *(f"categories/{c}.html" for c in CATEGORIES)):
        assert all("boost" not in d and "tags" not in d for d in by_page[page]), page
    # the neighbours' keys and the reproduction's source are not in a paper's entries
    han2016 = " ".join(d["text"] for d in by_page["papers/han2016.html"])
    assert "import torch" not in han2016 and "→" not in by_page["papers/han2016.html"][0]["text"]
