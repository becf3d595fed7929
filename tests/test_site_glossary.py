"""The glossary: every quantity a check of papers.yaml names has a hand-written definition
(atlas/site/glossary.py), the page defines each with an anchor the paper pages link to, and the
confidence levels of the schema are explained once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the site needs the [site] extra: pip install -e '.[site]'")

from atlas.catalogue import Catalogue, load_catalogue
from atlas.schema import CONFIDENCES, Paper
from atlas.site import glossary, pages
from atlas.site.data import SiteData


def test_every_checked_quantity_has_a_definition() -> None:
    catalogue = load_catalogue()
    checked = glossary.checked_quantities(catalogue)
    common = {"distillation_gain_pp", "accuracy_change_pp", "param_compression", "storage_compression"}
    assert common <= set(checked)
    missing = glossary.undefined_quantities(catalogue)
    assert not missing, f"checked in papers.yaml but not defined in atlas/site/glossary.py: {missing}"
    for name in checked:
        assert len(glossary.QUANTITIES[name].split()) >= 8, name  # a definition, not a label
    assert "hinton2015" in checked["distillation_gain_pp"]


def test_a_new_check_quantity_without_a_definition_is_found() -> None:
    paper = Paper.model_validate({
        "key": "doe2020", "title": "A Method", "authors": ["Jane Doe"], "year": 2020,
        "venue": {"name": "arXiv", "short": "arXiv", "type": "preprint"}, "categories": ["pruning"],
        "kind": "method",
        "claims": [{"id": "c", "model": "m", "dataset": "d", "metric": "m", "source": "Table 1",
                    "confidence": "high",
                    "checks": [{"quantity": "mystery_gain_pp", "target": 1.0, "direction": "higher",
                                "tolerance": {"abs": 0.5}}]}],
    })
    catalogue = Catalogue([paper], Path("papers.yaml"))
    assert glossary.undefined_quantities(catalogue) == ["mystery_gain_pp"]
    page = pages.glossary_page(SiteData(catalogue, {}, {}))
    assert "### `mystery_gain_pp` { #q-mystery-gain-pp }" in page and "_No definition yet._" in page


def test_every_confidence_value_is_explained() -> None:
    assert set(CONFIDENCES) == {"high", "checked", "unconfirmed"}
    assert not glossary.undefined_confidences()
    assert [glossary.confidence_label(v) for v in CONFIDENCES] == [
        "read in the paper", "confirmed from a secondary source", "unconfirmed"]


def test_glossary_page() -> None:
    catalogue = load_catalogue()
    page = pages.glossary_page(SiteData(catalogue, {}, {}))
    for name in glossary.checked_quantities(catalogue):
        assert f"### `{name}` {{ #{pages.quantity_anchor(name)} }}" in page, name
    assert ("Accuracy of the distilled student minus the same student trained on hard labels (without the "
            "teacher), in percentage points") in page
    assert "[hinton2015](papers/hinton2015.md)" in page
    confidence = page.split("{ #confidence }", 1)[1]
    assert confidence.count("\n| ") == 2 + len(CONFIDENCES)  # heading, rule and one row per value
    for value in CONFIDENCES:
        assert f"| <code>{value}</code> |" in confidence, value
    assert page.count("{ #confidence }") == 1


def test_paper_pages_link_quantities_and_confidence_to_the_glossary() -> None:
    catalogue = load_catalogue()
    page = pages.paper_page(SiteData(catalogue, {}, {}), catalogue.get("hinton2015"))
    assert "[read in the paper](../glossary.md#confidence)" in page
    assert not re.search(r"confidence: (high|checked|unconfirmed)", page)


@pytest.mark.slow
def test_built_glossary(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("mkdocs_gen_files", reason="the site needs the [site] extra: pip install -e .[site]")
    from site_helpers import built_site

    site = built_site(tmp_path_factory.getbasetemp()).site
    html = (site / "glossary.html").read_text(encoding="utf-8")
    for name in glossary.checked_quantities(load_catalogue()):
        assert f'id="{pages.quantity_anchor(name)}"' in html, name
    assert 'id="confidence"' in html
    paper = (site / "papers" / "hinton2015.html").read_text(encoding="utf-8")
    assert 'href="../glossary.html#q-distillation-gain-pp"' in paper  # the fixture record's check
    assert 'href="../glossary.html#confidence"' in paper
