"""Write every generated page of the site (rendered from the templates in ``atlas/site/templates/``),
the category plots, the plots of the reproduced papers and the downloads (``results.csv``, ``results.json``, ``bibtex/<category>.bib``).
``site/gen_pages.py`` (run by the mkdocs-gen-files plugin during ``mkdocs build``) calls
:func:`generate`; nothing it writes lands in the working tree (the registry may refresh
``reproductions/manifest.json`` when a reproduction changed since it was written).

The output is a mapping of docs-relative paths to text or bytes, so :func:`render_all` can also be
used (and tested) without MkDocs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlas.catalogue import CATEGORIES
from atlas.site import downloads, glossary, pages
from atlas.site.curves import category_curves_plot, paper_curves_plot
from atlas.site.data import SiteData, collect
from atlas.site.plots import Point, category_plot, paper_plot, reported_point, reproduced_point

__all__ = ["generate", "nav", "render_all"]

INTRO_MARKER = "<!-- atlas:generated -->"

# Under "mkdocs.", so that `mkdocs build --strict` counts its warnings and fails.
log = logging.getLogger("mkdocs.plugins.atlas")


def category_points(data: SiteData, cat: str) -> list[Point]:
    points: list[Point] = []
    for paper in data.catalogue.filter(category=cat):
        record = data.record(paper.key)
        for claim in paper.claims:
            points.append(reported_point(paper, claim))
            outcome = record.outcome(claim.id) if record else None
            if outcome is not None:
                points.append(reproduced_point(paper, outcome))
    return points


def render_all(data: SiteData, intro: str = "") -> dict[str, str | bytes]:
    """Every generated file: docs-relative path -> content."""
    out: dict[str, str | bytes] = {
        "index.md": pages.home_page(data, intro),
        "comparison.md": pages.comparison_page(data),
        "categories/index.md": pages.category_index_page(data),
        "papers/index.md": pages.papers_index_page(data),
        pages.GLOSSARY: pages.glossary_page(data),
        downloads.RESULTS_CSV: downloads.results_csv(data),
        downloads.RESULTS_JSON: downloads.results_json(data),
    }
    for cat in CATEGORIES:
        points = category_points(data, cat)
        image = f"{cat}.svg"
        out[f"categories/{image}"] = category_plot(pages.category_title(cat), points, fmt="svg")
        out[pages.category_path(cat)] = pages.category_page(data, cat, points, image)
        out[downloads.bibtex_path(cat)] = downloads.category_bibtex(data.catalogue, cat)
        curves = category_curves_plot(pages.category_curve_records(data, cat))
        if curves is not None:  # the category page embeds it
            out[pages.category_curves_path(cat)] = curves
    for paper in data.catalogue:
        out[pages.paper_path(paper.key)] = pages.paper_page(data, paper)
        plot = paper_plot(paper, data.record(paper.key))
        if plot is not None:  # the page embeds it (pages.paper_plot_image): a paper without a record has none
            out[pages.paper_plot_path(paper.key)] = plot
        curves = paper_curves_plot(data.record(paper.key))
        if curves is not None:  # the page embeds it (pages.paper_curves_image)
            out[pages.paper_curves_path(paper.key)] = curves
    return out


def nav() -> list[Any]:
    """The navigation (the paper pages are reached from the tables, not the sidebar)."""
    return [
        {"Home": "index.md"},
        {"Comparison table": "comparison.md"},
        {"Categories": ["categories/index.md",
                        *[{pages.category_title(c): pages.category_path(c)} for c in CATEGORIES]]},
        {"Papers": "papers/index.md"},
        {"Glossary": pages.GLOSSARY},
    ]


def generate(open_file: Callable[..., Any], docs_dir: Path | str, config: Any = None) -> dict[str, str | bytes]:
    """Write the pages through ``open_file`` (``mkdocs_gen_files.open``). A hand-written
    ``index.md`` in the docs folder is the home page's introduction: the generated sections replace
    the marker ``<!-- atlas:generated -->`` in it, or follow it. With ``config``, sets the nav."""
    intro = ""
    intro_path = Path(docs_dir) / "index.md"
    if intro_path.is_file():
        intro = intro_path.read_text(encoding="utf-8")
    data = collect()
    for problem in data.unreadable.values():  # the paper is shown as "record unreadable"
        log.warning("unreadable run record: %s", problem.replace("\n", " "))
    for stem, why in data.broken.items():  # the paper's page says so
        log.warning("reproductions/%s.py fails to import: %s", stem, why.replace("\n", " "))
    for quantity in glossary.undefined_quantities(data.catalogue):
        log.warning("papers.yaml checks the quantity %s, which atlas/site/glossary.py does not define (QUANTITIES) "
                    "or label (LABELS): add both", quantity)
    for value in glossary.undefined_confidences():
        log.warning("the confidence value %s (atlas/schema.py) has no explanation in atlas/site/glossary.py "
                    "(CONFIDENCE_LEVELS): add one", value)
    files = render_all(data, intro.split(INTRO_MARKER)[0])
    if INTRO_MARKER in intro:
        files["index.md"] = str(files["index.md"]) + "\n" + intro.split(INTRO_MARKER, 1)[1]
    for name, content in files.items():
        if isinstance(content, bytes):
            with open_file(name, "wb") as fh:
                fh.write(content)
        else:
            with open_file(name, "w", encoding="utf-8") as fh:
                fh.write(content)
    if config is not None and not config.get("nav"):
        config["nav"] = nav()
    return files
