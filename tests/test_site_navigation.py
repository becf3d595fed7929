"""A paper page's navigation: its browser title is the paper's title, breadcrumbs lead to its first
category, previous/next links walk that category in the order its page lists it; the page shows the
title the survey lists it under, where different, and links the other entries of the same work."""

from __future__ import annotations

import html
import re

import pytest
from site_helpers import Built, require_site_extra  # noqa: E402

require_site_extra()

from atlas import manifest  # noqa: E402
from atlas.catalogue import load_catalogue  # noqa: E402
from atlas.schema import normalise_title  # noqa: E402
from atlas.site import pages  # noqa: E402
from atlas.site.data import SiteData  # noqa: E402

pytestmark = pytest.mark.slow



def _order(catalogue, category: str) -> list[str]:
    return [p.key for p in sorted(catalogue.filter(category=category), key=lambda p: (p.year, p.key))]


def test_browser_title_breadcrumbs_and_neighbours(site: Built) -> None:
    catalogue = load_catalogue()
    for paper in catalogue:
        page = (site.site / "papers" / f"{paper.key}.html").read_text(encoding="utf-8")
        title = html.unescape(re.search(r"<title>(.*?)</title>", page, re.S).group(1))
        assert title == f"{paper.title} - Compression Atlas", paper.key
        first = paper.categories[0]
        crumbs = page.split('<nav class="atlas-crumbs"', 1)[1].split("</nav>", 1)[0]
        links = re.findall(r'href="([^"]+)"', crumbs)
        assert links == ["../categories/index.html", f"../categories/{first}.html"], paper.key
        assert f">{paper.key}</span>" in crumbs
        order = _order(catalogue, first)
        i = order.index(paper.key)
        prev = re.findall(r'rel="prev" href="([^"]+)\.html"', page)
        after = re.findall(r'rel="next" href="([^"]+)\.html"', page)
        assert prev == ([order[i - 1]] if i > 0 else []), paper.key
        assert after == ([order[i + 1]] if i + 1 < len(order) else []), paper.key


def test_survey_title_shown_where_it_differs(site: Built) -> None:
    catalogue = load_catalogue()
    shown = 0
    for paper in catalogue:
        page = (site.site / "papers" / f"{paper.key}.html").read_text(encoding="utf-8")
        listed = getattr(paper, "survey_title", None)
        if listed and normalise_title(listed) != normalise_title(paper.title):
            assert f"Listed in the survey as: “{html.escape(listed, quote=False)}”" in page, paper.key
            shown += 1
        else:
            assert "Listed in the survey as" not in page, paper.key
    assert shown > 0, "no paper of papers.yaml has a survey title of its own"


def test_survey_title_rendering() -> None:
    catalogue = load_catalogue()
    data = SiteData(catalogue, {}, manifest.load().entries)
    paper = catalogue.get("han2015")
    listed = "Learning both weights and connections for efficient NN"
    renamed = paper.model_copy(update={"survey_title": listed})
    assert f"Listed in the survey as: “{listed}”" in pages.paper_page(data, renamed)
    same = paper.model_copy(update={"survey_title": paper.title.upper() + "."})  # case and punctuation only
    assert "Listed in the survey as" not in pages.paper_page(data, same)


def test_same_work_entries_link_each_other(site: Built) -> None:
    catalogue = load_catalogue()
    linked = [p for p in catalogue if p.same_work_as]
    assert linked, "papers.yaml lists no work twice"
    for paper in linked:
        page = (site.site / "papers" / f"{paper.key}.html").read_text(encoding="utf-8")
        row = page.split("<th>Same work</th>", 1)[1].split("</tr>", 1)[0]
        assert re.findall(r'href="([^"]+)\.html"', row) == list(paper.same_work_as), paper.key
