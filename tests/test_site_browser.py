"""The built site in a real browser (Debian's headless chromium): the home page (its formula typeset by
the vendored KaTeX), the comparison table (sorted and filtered by its script) and hinton2015's page
render with their numbers, offline: every request a page makes goes to the 127.0.0.1 server. Driven
over the DevTools protocol (site_helpers.DevTools): at 1024 and 400 px the verdict of the first rows is
in view without the page scrolling sideways (the tables scroll in their own box, heading row and paper
column sticky), numeric columns sort as numbers, the filters live in the address, and the site's own
search finds a paper by its key before the tables that list it.

Screenshots land in ``$ATLAS_SCREENSHOT_DIR`` when set (to look at them), else in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is not installed (Debian: apt-get install chromium)"),
]

from site_helpers import HINTON_GAIN, Built, DevTools, require_site_extra, serve  # noqa: E402

require_site_extra()

from atlas.catalogue import load_catalogue  # noqa: E402


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)



@pytest.fixture(scope="module")
def browser(site: Built, tmp_path_factory: pytest.TempPathFactory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    shots = Path(os.environ.get("ATLAS_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with serve(site.site) as base:

        def dom(page: str) -> str:
            proc = chromium(profile, "--virtual-time-budget=3000", "--dump-dom", f"{base}/{page}")
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert "<html" in proc.stdout, proc.stderr[-2000:]
            return proc.stdout

        def screenshot(page: str, name: str, width: int = 1280) -> Path:
            out = shots / f"{name}.png"
            out.unlink(missing_ok=True)
            proc = chromium(profile, f"--screenshot={out}", f"--window-size={width},900", f"{base}/{page}")
            assert out.is_file() and out.stat().st_size > 10_000, proc.stderr[-2000:]
            return out

        def requests(page: str) -> list[str]:
            """The URLs ``page`` requested (itself and what it loaded), from Chromium's network log;
            the browser's own background requests (no page origin) are not the page's."""
            log = shots / "netlog.json"
            log.unlink(missing_ok=True)
            proc = chromium(profile, f"--log-net-log={log}", "--virtual-time-budget=3000", "--dump-dom",
                            f"{base}/{page}")
            assert proc.returncode == 0 and log.is_file(), proc.stderr[-2000:]
            events = json.loads(log.read_text(encoding="utf-8"))["events"]
            params = [e.get("params") or {} for e in events]
            return sorted({p["url"] for p in params if isinstance(p.get("url"), str)
                           and (p["url"].startswith(base) or p.get("initiator") == base)})

        yield dom, screenshot, requests, base
    shutil.rmtree(profile, ignore_errors=True)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_home_page(browser) -> None:
    dom, screenshot, _, _ = browser
    text = _text(dom("index.html"))
    assert "Compression Atlas" in text
    assert "191 papers catalogued" in text
    assert "1 with a published result" in text and "1 reproduced" in text
    assert "Newest results" in text and "hinton2015" in text
    assert "atlas reproduce" in text
    screenshot("index.html", "home")


def test_comparison_table(browser) -> None:
    dom, screenshot, _, _ = browser
    html = dom("comparison.html")
    # the table's script ran: headings are sortable and the row count is shown
    assert html.count('class="atlas-sort-head"') == 12
    total = len(load_catalogue())
    assert f"{total} of {total} papers" in html
    text = _text(html)
    for needle in ("Superiority", "Weakness", "teach small model", "337", "reproduced", f"{HINTON_GAIN:.3g}"):
        assert needle in text, needle
    screenshot("comparison.html", "comparison")
    # the category filter (preselected through the query string) hides the other rows
    n = len(load_catalogue().filter(category="distillation"))
    filtered = dom("comparison.html?category=distillation")
    assert f"{n} of {total} papers" in filtered
    visible = [r for r in filtered.split("<tr ")[1:] if "hidden" not in r.split(">", 1)[0]]
    assert len(visible) == n + 0 and all("distillation" in r.split(">", 1)[0] for r in visible)


def test_comparison_page_downloads_results_csv(browser) -> None:
    """The comparison page, as the browser loaded it, links results.csv; the link answers 200 with the
    table (its header row and the fixture record's row)."""
    dom, _, _, base = browser
    html = dom("comparison.html")
    links = re.findall(r'<a[^>]+href="([^"]*results\.csv)"', html)
    assert links, "the comparison page links no results.csv"
    url = urllib.parse.urljoin(f"{base}/comparison.html", links[0])
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
        body = reply.read().decode("utf-8")
    header, *rows = body.splitlines()
    assert header.startswith("key,claim,profile,") and "ci95_low" in header
    assert len(rows) == 1 and rows[0].startswith("hinton2015,mnist-student,quick,")


def test_paper_page(browser) -> None:
    dom, screenshot, _, _ = browser
    html = dom("papers/hinton2015.html")
    text = _text(html)
    for needle in ("Distilling the Knowledge in a Neural Network", "Geoffrey Hinton", "teach small model",
                   "337", "arXiv:1503.02531", "reproduced", f"{HINTON_GAIN:.3g}", "atlas reproduce hinton2015",
                   "reproductions/hinton2015.py", "@misc", "harness differs", "profiles: smoke, quick, paper"):
        assert needle in text, needle
    doc = html.split('class="atlas-docstring"', 1)[1].split("</div>", 1)[0]
    assert "<code>distillation_loss</code>" in doc and "``" not in doc
    screenshot("papers/hinton2015.html", "hinton2015")
    screenshot("papers/hinton2015.html", "hinton2015-400", width=400)


def test_math_renders_offline(browser) -> None:
    """The home page's interval formula is typeset by KaTeX, its fonts come from the site itself, and no
    request the page makes leaves 127.0.0.1."""
    dom, screenshot, requests, base = browser
    html = dom("index.html")
    assert html.count('class="katex-display"') == 1 and html.count('class="katex"') >= 4
    assert "katex-error" not in html
    urls = requests("index.html")
    assert urls and all(u.startswith(base + "/") for u in urls), urls
    loaded = {u.rsplit("/", 1)[1] for u in urls}
    assert {"katex.min.js", "katex.min.css", "atlas-math.js", "KaTeX_Main-Regular.woff2"} <= loaded, loaded
    screenshot("index.html", "home-400", width=400)


# ---------------------------------------------------------------------------------------------
# driven over the DevTools protocol


@pytest.fixture(scope="module")
def page(site: Built, tmp_path_factory: pytest.TempPathFactory):
    """``(devtools, base URL)``: one headless Chromium tab on the served site."""
    with serve(site.site) as base:
        devtools = DevTools(CHROMIUM, tmp_path_factory.mktemp("devtools-profile"))
        try:
            yield devtools, base
        finally:
            devtools.close()


#: the first rows of a page's wide table: where each verdict cell lies, once the table is scrolled into view
_VERDICTS_IN_VIEW = """(() => {
  const rows = [...document.querySelectorAll("table.atlas-table tbody tr")].filter(r => !r.hidden)
    .slice(0, 3);
  const box = rows[0].closest(".atlas-scroll");
  box.scrollIntoView({block: "start"});
  window.scrollBy(0, -80);  /* below material's header */
  return {
    width: window.innerWidth, height: window.innerHeight, pageWidth: document.documentElement.scrollWidth,
    box: [box.clientWidth, box.scrollWidth],
    cells: rows.map(r => {
      const cell = r.querySelector(".atlas-verdict-cell"), rect = cell.getBoundingClientRect();
      return {key: r.cells[0].textContent.trim(), verdict: cell.textContent.trim(),
              left: rect.left, right: rect.right, top: rect.top, bottom: rect.bottom};
    }),
  };
})()"""


@pytest.mark.parametrize("width", [1024, 400])
@pytest.mark.parametrize("url", ["comparison.html", "categories/distillation.html"])
def test_verdict_in_view_without_scrolling_sideways(page, url: str, width: int) -> None:
    devtools, base = page
    devtools.open(f"{base}/{url}", width=width, height=900)
    seen = devtools.evaluate(_VERDICTS_IN_VIEW)
    assert seen["width"] == width
    assert seen["pageWidth"] <= width, seen  # the page itself never scrolls sideways
    if width == 400:
        assert seen["box"][1] > seen["box"][0], seen  # the wide table scrolls inside its own box
    for cell in seen["cells"]:
        assert cell["left"] >= 0 and cell["right"] <= width, cell
    first = seen["cells"][0]
    assert first["top"] >= 0 and first["bottom"] <= seen["height"], first
    if url == "comparison.html":  # the survey's order: hinton2015 ([1]) first, with the fixture's record
        assert (first["key"], first["verdict"]) == ("hinton2015", "reproduced")


def test_heading_row_and_paper_column_stay_in_view(page) -> None:
    devtools, base = page
    devtools.open(f"{base}/comparison.html", width=400, height=900)
    stuck = devtools.evaluate("""(() => {
      const box = document.querySelector(".atlas-scroll");
      box.scrollTop = 600; box.scrollLeft = 500;
      const b = box.getBoundingClientRect(), head = box.querySelector("thead th").getBoundingClientRect();
      const row = [...box.querySelectorAll("tbody tr")].find(r => r.getBoundingClientRect().top > b.top + 40);
      const key = row.cells[0].getBoundingClientRect();
      return {box: [b.left + box.clientLeft, b.top + box.clientTop], head: [head.left, head.top],
              key: key.left, scrolled: [box.scrollTop, box.scrollLeft]};
    })()""")
    assert stuck["scrolled"][0] > 0 and stuck["scrolled"][1] > 0, stuck
    assert stuck["head"][1] == pytest.approx(stuck["box"][1], abs=1), stuck  # the heading row, at the top
    assert stuck["key"] == pytest.approx(stuck["box"][0], abs=1), stuck  # the paper's key, at the left


def _column(devtools: DevTools, heading: str, clicks: int) -> list[str]:
    """Click a column's heading ``clicks`` times; its cells' sort values (data-sort, else text), top down."""
    return devtools.evaluate(f"""(() => {{
      const table = document.querySelector("table.atlas-sortable");
      const th = [...table.tHead.rows[0].cells].find(c => c.textContent.trim() === {json.dumps(heading)});
      for (let i = 0; i < {clicks}; i++) th.click();
      return [...table.tBodies[0].rows].map(r => {{
        const c = r.cells[th.cellIndex];
        return (c.hasAttribute("data-sort") ? c.getAttribute("data-sort") : c.textContent).trim();
      }});
    }})()""")


def test_numeric_columns_sort_as_numbers(page) -> None:
    devtools, base = page
    devtools.open(f"{base}/comparison.html", width=1280, height=900)
    cites = load_catalogue()
    expected = sorted(p.survey.cite for p in cites if p.survey is not None and p.survey.cite is not None)
    ascending = _column(devtools, "Cite", 1)
    numbers = [int(v) for v in ascending if v]
    assert numbers == expected and all(v == "" for v in ascending[len(numbers):])  # blanks last
    assert numbers != sorted(numbers, key=str)  # as text, 1000 would come before 2
    descending = [int(v) for v in _column(devtools, "Cite", 1) if v]
    assert descending == expected[::-1]
    verdicts = _column(devtools, "Verdict", 1)
    assert verdicts[0] == "0"  # reproduced first
    devtools.open(f"{base}/categories/pruning.html", width=1280, height=900)
    years = [int(v) for v in _column(devtools, "Year", 2)]
    assert years == sorted(years, reverse=True) and len(set(years)) > 1


def test_filters_are_kept_in_the_address(page) -> None:
    devtools, base = page
    devtools.open(f"{base}/comparison.html?category=pruning&verdict=not+run&search=han", width=1280,
                  height=900)
    state = """(() => {
      const rows = [...document.querySelectorAll("#atlas-comparison tbody tr")].filter(r => !r.hidden);
      return {category: document.getElementById("atlas-filter-category").value,
              verdict: document.getElementById("atlas-filter-verdict").value,
              search: document.getElementById("atlas-filter-text").value,
              count: document.getElementById("atlas-filter-count").textContent, query: location.search,
              rows: rows.map(r => [r.dataset.categories, r.dataset.verdict, r.textContent.toLowerCase()])};
    })()"""
    seen = devtools.evaluate(state)
    total = len(load_catalogue())
    assert (seen["category"], seen["verdict"], seen["search"]) == ("pruning", "not run", "han")
    assert seen["rows"] and seen["count"] == f"{len(seen['rows'])} of {total} papers"
    for categories, verdict, text in seen["rows"]:
        assert "pruning" in categories.split() and verdict == "not run" and "han" in text
    # changing a filter rewrites the address, which a reload (or a link) restores
    devtools.evaluate("""(() => { const c = document.getElementById("atlas-filter-category");
      c.value = "quantization"; c.dispatchEvent(new Event("change")); })()""")
    query = devtools.evaluate("location.search")
    assert query == "?category=quantization&verdict=not+run&search=han"
    devtools.open(f"{base}/comparison.html{query}", width=1280, height=900)
    again = devtools.evaluate(state)
    assert (again["category"], again["verdict"], again["search"]) == ("quantization", "not run", "han")
    # a category page links the comparison table filtered to it
    devtools.open(f"{base}/categories/distillation.html", width=1280, height=900)
    link = devtools.evaluate("""[...document.querySelectorAll("a")].find(a =>
      a.textContent.includes("in the comparison table")).href""")
    assert link == f"{base}/comparison.html?category=distillation"
    devtools.open(link, width=1280, height=900)
    n = len(load_catalogue().filter(category="distillation"))
    assert devtools.evaluate(state)["count"] == f"{n} of {total} papers"


#: the site's own search, opened with ?q=: the results' links (page path and anchor), best first
_SEARCH_RESULTS = """new Promise(resolve => {
  (function poll() {
    const links = [...document.querySelectorAll(".md-search-result__item > a")];
    if (!links.length) return setTimeout(poll, 50);
    resolve(links.map(a => { const u = new URL(a.href); return u.pathname.slice(1) + u.hash; }));
  })();
})"""


@pytest.mark.parametrize("key", ["han2016", "han2015", "hinton2015", "li2017"])
def test_searching_a_key_finds_the_paper_first(page, key: str) -> None:
    """han2016 and li2017 begin other keys (han2016b, li2017b-e), which the search also matches; han2015 is
    named all over han2016's page (which builds on it); hinton2015 over the distillation pages."""
    devtools, base = page
    devtools.open(f"{base}/index.html?q={key}", width=1280, height=900)
    results = devtools.evaluate(_SEARCH_RESULTS)
    assert results[0] == f"papers/{key}.html", results[:6]
    tables = [i for i, r in enumerate(results)
              if r.startswith(("comparison.html", "categories/", "papers/index.html"))]
    assert all(i > 0 for i in tables), results
    tag = devtools.evaluate('document.querySelector(".md-search-result__item .md-tag").textContent')
    assert tag == key  # the result shows the paper's key
