"""The generated site: ``mkdocs build --strict`` builds every page (Jinja2 templates) from papers.yaml,
the published records and the registry's manifest of reproductions, offline, in well under 30 seconds
of CPU; docstrings as Markdown, formulas typeset by the vendored KaTeX."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from site_helpers import HINTON_GAIN, Built, require_site_extra  # noqa: E402

require_site_extra()

from atlas import manifest  # noqa: E402
from atlas.catalogue import CATEGORIES, load_catalogue  # noqa: E402
from atlas.site import pages  # noqa: E402
from atlas.site.build import render_all  # noqa: E402
from atlas.site.data import SiteData, profile_names  # noqa: E402
from atlas.site.docstring import rst_to_markdown  # noqa: E402

pytestmark = pytest.mark.slow



def test_build_is_strict_clean_and_fast(site: Built) -> None:
    assert "WARNING" not in site.log, site.log[-3000:]
    # CPU time, not wall time: the limit must hold on a loaded machine too
    assert site.cpu_s < 30, f"building the site took {site.cpu_s:.1f} s of CPU ({site.wall_s:.1f} s wall)"


def test_a_page_per_paper(site: Built) -> None:
    catalogue = load_catalogue()
    built = {p.stem for p in (site.site / "papers").glob("*.html")} - {"index"}
    assert len(built) == len(catalogue) == 191
    assert built == set(catalogue.keys())


def test_comparison_table_has_every_survey_row(site: Built) -> None:
    html = (site.site / "comparison.html").read_text(encoding="utf-8")
    assert 'id="atlas-comparison"' in html
    table = html.split('id="atlas-comparison"', 1)[1].split("</table>", 1)[0]
    catalogue = load_catalogue()
    refs = [p.survey.ref for p in catalogue if p.survey is not None]
    assert len(refs) == 100
    for paper in catalogue:
        assert f'href="papers/{paper.key}.html"' in table, paper.key
        if paper.survey is not None:
            assert f">[{paper.survey.ref}]</td>" in table, paper.survey.ref
    heads = re.findall(r"<th data-col=[^>]*>([^<]+)</th>", table)
    assert heads == ["Paper", "Verdict", "Paper vs atlas", "Reported claim", "Ref", "Class", "Reference",
                     "Conference", "Cite", "Detailed", "Superiority", "Weakness"]
    assert table.count("<tr data-categories=") == len(catalogue)
    assert "teach small model" in table and ">337<" in table
    # the fixture record's verdict right after the paper, then its number beside the paper's
    row = unescape(next(r for r in table.split("<tr ") if 'href="papers/hinton2015.html"' in r))
    cells = re.findall(r"<t[hd]\b[^>]*>(.*?)</t[hd]>", row, re.S)
    assert ">hinton2015</a>" in cells[0] and "atlas-verdict--reproduced" in cells[1]
    assert "gain of distilled student over hard-label student (pp)</a>" in cells[2]
    assert f"paper <b>+0.72</b> · atlas <b>+{HINTON_GAIN:.3g}</b> [0.585, 1.08], n=3" in cells[2]
    assert "atlas: fashion-mnist, quick profile" in cells[2]
    assert "test errors (count of 10,000) 146.0 → 74 (MNIST)" in cells[3]  # the paper's raw numbers


def test_category_pages_have_plots(site: Built) -> None:
    for cat in CATEGORIES:
        page = site.site / "categories" / f"{cat}.html"
        html = page.read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]+src="([^"]+)"', html)
        assert f"{cat}.svg" in images, (cat, images)
        svg = (site.site / "categories" / f"{cat}.svg").read_text(encoding="utf-8")
        assert "<svg" in svg and "accuracy change" in svg
        assert "reported" in html and "reproduced" in html


def test_paper_page_content(site: Built) -> None:
    html = (site.site / "papers" / "hinton2015.html").read_text(encoding="utf-8")
    shown = unescape(html)
    assert f"paper <b>+0.72</b> · atlas <b>+{HINTON_GAIN:.3g}</b> [0.585, 1.08], n=3" in shown
    for text in ("Distilling the Knowledge in a Neural Network", "teach small model", "337",
                 "https://arxiv.org/abs/1503.02531", "atlas reproduce hinton2015",
                 "reproductions/hinton2015.py", "atlas-verdict--reproduced", f"{HINTON_GAIN:.3g}",
                 "harness differs: 6 student epochs", "distillation_gain_pp &gt;= 0.12", "fashion-mnist",
                 "0123456789ab"):
        assert text in html, text
    assert 'href="../categories/distillation.html"' in html
    plain = re.sub(r"<[^>]+>", "", html)  # the highlighted BibTeX, tags removed
    assert "@misc{hinton2015," in plain and "eprint = {1503.02531}" in plain
    # the docstring as rendered Markdown: roles and ``literals`` are code, *emphasis* is emphasis
    doc = html.split('<div class="atlas-docstring">', 1)[1].split("</div>", 1)[0]
    assert "<code>distillation_loss</code>" in doc and "<em>soft targets</em>" in doc
    assert "``" not in doc and ":func:" not in doc and "<p>" in doc
    # the profiles the registry validated, each with its settings
    assert "(profiles: smoke, quick, paper)" in html and "atlas reproduce hinton2015 --profile paper" in html
    assert "<code>student.steps</code>" in html


def test_math_is_typeset_from_vendored_katex(site: Built) -> None:
    html = (site.site / "index.html").read_text(encoding="utf-8")
    assert '<div class="arithmatex">\\[' in html and '<span class="arithmatex">\\(\\bar x\\)</span>' in html
    for asset in ("katex/katex.min.js", "katex/katex.min.css", "js/atlas-math.js"):
        assert f'assets/{asset}"' in html, asset
    katex = site.site / "assets" / "katex"
    assert "MIT License" in (katex / "LICENSE").read_text(encoding="utf-8")
    fonts = re.findall(r"url\((fonts/[^)]+\.woff2)\)", (katex / "katex.min.css").read_text(encoding="utf-8"))
    assert len(fonts) == 20 and all((katex / f).is_file() for f in fonts)


def test_offline_no_external_assets(site: Built) -> None:
    tag = re.compile(r"<(?:link|script)\b[^>]*?(?:href|src)\s*=\s*[\"']?((?:https?:)?//[^\"' >]+)", re.I)
    for page in site.site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert not tag.findall(html), (page, tag.findall(html))
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
    assert (site.site / "assets" / "js" / "atlas-table.js").is_file()
    assert (site.site / "assets" / "css" / "atlas.css").is_file()
    assert (site.site / "search" / "search_index.json").is_file()


def test_pages_render_without_records() -> None:
    """Zero published records (a fresh clone): every page still renders, with 'not run' verdicts."""
    catalogue = load_catalogue()
    files = render_all(SiteData(catalogue, {}, manifest.load().entries))
    assert sum(1 for name in files if name.startswith("papers/") and name != "papers/index.md") == len(catalogue)
    assert "No published results yet" in str(files["index.md"])
    for cat in CATEGORIES:
        assert bytes(files[f"categories/{cat}.svg"]).lstrip().startswith(b"<?xml")


def test_markdown_escaping() -> None:
    assert pages.md("AlexNet 9*") == r"AlexNet 9\*"
    assert pages.md("a|b_c <x>") == r"a\|b\_c &lt;x&gt;"  # "\<" would show its backslash
    assert pages.md("$5 & up") == r"\$5 &amp; up"  # "$" is the math delimiter
    assert pages.md(None) == "–"
    assert pages.code("a|b<c>") == "<code>a|b&lt;c&gt;</code>"
    assert pages.html_href("comparison.md", "papers/han2015.md") == "papers/han2015.html"
    assert pages.html_href("papers/han2015.md", "categories/pruning.md") == "../categories/pruning.html"


def test_every_registered_reproduction_shows_its_profiles() -> None:
    """The profiles come from the registry (the manifest), not from reading the source: han2016
    builds its PROFILES from han2015's, and its page lists all three."""
    found = manifest.load()
    assert not found.broken, found.broken
    assert "han2016" in found.entries
    data = SiteData(load_catalogue(), {}, found.entries)
    for key, entry in found.entries.items():
        page = pages.paper_page(data, data.catalogue.get(key))
        names = profile_names(entry)
        assert names[:3] == ["smoke", "quick", "paper"], (key, names)
        assert f"(profiles: {', '.join(names)})" in page, key
        assert f" {pages.md(json.dumps(entry.profiles['quick']['dataset']))} |" in page, key  # a settings cell
        assert f"atlas reproduce {key} --profile paper" in page, key
        doc = page.split('<div class="atlas-docstring" markdown>', 1)[1].split("</div>", 1)[0]
        assert not re.search(r"(?<!`)``(?!`)|:(func|class|mod|data|meth):`", doc), key  # no reST left
    han2016 = pages.paper_page(data, data.catalogue.get("han2016"))
    assert "(profiles: smoke, quick, paper)" in han2016 and "Builds on: [han2015](han2015.md)" in han2016


def test_a_reproduction_that_fails_to_import_is_named() -> None:
    found = manifest.load()
    entries = {k: e for k, e in found.entries.items() if k != "han2016"}
    data = SiteData(load_catalogue(), {}, entries, broken={"han2016": "TypeError: reproduction() missing 'config'"})
    page = pages.paper_page(data, data.catalogue.get("han2016"))
    assert "`reproductions/han2016.py` fails to import" in page
    assert "TypeError: reproduction() missing 'config'" in page and "No reproduction yet" not in page


def test_docstring_to_markdown() -> None:
    doc = (
        "Title (A & B, 2015).\n"
        "\n"
        "Uses ``q_i = exp(z_i/T)``, :func:`distillation_loss`, :class:`~a.b.ShallowNet` and\n"
        ":mod:`atlas_reproductions.han2015`; H*W responses, *soft* and **logits**, x <- y, $5.\n"
        "\n"
        "    L = 1/(2N) * sum_t ||g(x_t) - z_t||^2\n"
        "\n"
        "* one, :data:`X`\n"
        "* two\n"
        "\n"
        "The interval :math:`\\bar x \\pm t s/\\sqrt{n}`, and::\n"
        "\n"
        "    code\n"
        "\n"
        ".. math::\n"
        "\n"
        "    \\frac{a}{b}\n"
    )
    assert rst_to_markdown(doc) == (
        "Title (A &amp; B, 2015).\n"
        "\n"
        "Uses `q_i = exp(z_i/T)`, `distillation_loss`, `ShallowNet` and\n"
        "`atlas_reproductions.han2015`; H\\*W responses, *soft* and **logits**, x &lt;- y, \\$5.\n"
        "\n"
        "```text\nL = 1/(2N) * sum_t ||g(x_t) - z_t||^2\n```\n"
        "\n"
        "- one, `X`\n"
        "- two\n"
        "\n"
        "The interval $\\bar x \\pm t s/\\sqrt{n}$, and:\n"
        "\n"
        "```text\ncode\n```\n"
        "\n"
        "$$\n\\frac{a}{b}\n$$\n"
    )
    assert rst_to_markdown("a `` ` `` b") == "a `` ` `` b\n"  # a backtick inside code keeps a longer fence
