"""No built page speaks the catalogue's internal language: the site, built from papers.yaml and the
published records in results/, holds none of the curation phrases below, and no raw reST markup. The
reproduction's source listing on a paper page (Python source, where reST docstrings belong) is exempt;
the rendered docstring above it is not."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from site_helpers import Built, published_site, require_site_extra  # noqa: E402

require_site_extra()

pytestmark = pytest.mark.slow

#: phrases a reader must not meet: curation notes, and reST that was not rendered
INTERNAL = ("reported.yaml", "this session", "NOT verified", "NOT confirmed", "(verify)")
REST = (":func:", ":mod:", ":class:", "``")

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S | re.I)
# the source listing of a paper page: `??? quote atlas-source "Source: ..."` in paper.md.j2
_SOURCE = re.compile(r'<details class="quote atlas-source">.*?</details>', re.S)
_TAG = re.compile(r"<[^>]+>")


def readable(page_html: str) -> str:
    """What a reader can see on a page: its text and attribute values (tooltips), scripts and the source
    listing left out, entities decoded."""
    text = _SOURCE.sub(" ", _SCRIPT.sub(" ", page_html))
    attributes = " ".join(v for _, v in re.findall(r"""\b(title|alt|aria-label)="([^"]*)\"""", text))
    return html.unescape(_TAG.sub(" ", text) + " " + attributes)


def offending(site: Path) -> list[str]:
    """``page: "phrase" in "...context..."`` for each phrase found on each built page."""
    found = []
    for page in sorted(site.rglob("*.html")):
        text = readable(page.read_text(encoding="utf-8"))
        for phrase in INTERNAL + REST:
            at = text.find(phrase)
            if at >= 0:
                context = " ".join(text[max(0, at - 60):at + len(phrase) + 60].split())
                found.append(f'{page.relative_to(site)}: "{phrase}" in "...{context}..."')
    return found


def test_readable_text_keeps_tooltips_and_drops_the_source_listing() -> None:
    page = ('<p title="see reported.yaml">a &amp; b</p><script>x = "``"</script>'
            '<details class="quote atlas-source"><pre>:func:`f`</pre></details><p>done</p>')
    text = readable(page)
    assert "a & b" in text and "reported.yaml" in text and "done" in text
    assert "``" not in text and ":func:" not in text


def test_no_internal_wording_on_any_page(tmp_path_factory: pytest.TempPathFactory) -> None:
    built: Built = published_site(tmp_path_factory.getbasetemp())
    pages = list(built.site.rglob("*.html"))
    assert len(pages) > 191  # every paper page, at least
    found = offending(built.site)
    assert not found, f"{len(found)} internal phrases on the built pages:\n" + "\n".join(found)
