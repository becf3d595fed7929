"""The built site in a real browser (Debian's headless chromium): the home page (its formula typeset by
the vendored KaTeX), the comparison table (sorted and filtered by its script) and hinton2015's page
render with their numbers, offline: every request a page makes goes to the 127.0.0.1 server.

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

pytest.importorskip("mkdocs", reason="the site needs the [site] extra: pip install -e '.[site]'")
pytest.importorskip("material", reason="the site needs mkdocs-material: pip install -e '.[site]'")
pytest.importorskip("mkdocs_gen_files", reason="the site needs mkdocs-gen-files: pip install -e '.[site]'")

from site_helpers import HINTON_GAIN, Built, built_site, serve  # noqa: E402

from atlas.catalogue import load_catalogue  # noqa: E402


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return built_site(tmp_path_factory.getbasetemp())


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
