"""The built site in a real browser (Debian's headless chromium): the home page, the comparison table
(sorted and filtered by its script) and hinton2015's page render with their numbers, offline.

Screenshots land in ``$ATLAS_SCREENSHOT_DIR`` when set (to look at them), else in a temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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

        def screenshot(page: str, name: str) -> Path:
            out = shots / f"{name}.png"
            out.unlink(missing_ok=True)
            proc = chromium(profile, f"--screenshot={out}", "--window-size=1280,900", f"{base}/{page}")
            assert out.is_file() and out.stat().st_size > 10_000, proc.stderr[-2000:]
            return out

        yield dom, screenshot
    shutil.rmtree(profile, ignore_errors=True)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_home_page(browser) -> None:
    dom, screenshot = browser
    text = _text(dom("index.html"))
    assert "Compression Atlas" in text
    assert "191 papers catalogued" in text
    assert "1 with a published result" in text and "1 reproduced" in text
    assert "Newest results" in text and "hinton2015" in text
    assert "atlas reproduce" in text
    screenshot("index.html", "home")


def test_comparison_table(browser) -> None:
    dom, screenshot = browser
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


def test_paper_page(browser) -> None:
    dom, screenshot = browser
    text = _text(dom("papers/hinton2015.html"))
    for needle in ("Distilling the Knowledge in a Neural Network", "Geoffrey Hinton", "teach small model",
                   "337", "arXiv:1503.02531", "reproduced", f"{HINTON_GAIN:.3g}", "atlas reproduce hinton2015",
                   "reproductions/hinton2015.py", "@misc", "harness differs"):
        assert needle in text, needle
    screenshot("papers/hinton2015.html", "hinton2015")
