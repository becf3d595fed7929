"""The curves on the site, and the note of a paper the atlas does not reproduce: a paper whose record holds curves gets a plot of its method beside the
control, embedded in its page with a caption naming the control; its category page shows every such
paper's panel; a paper without curves gets neither; the SVG draws the control dashed with a band."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib", reason="the plots need matplotlib: pip install -e '.[site]'")

from atlas import manifest  # noqa: E402
from atlas.catalogue import Catalogue, load_catalogue  # noqa: E402
from atlas.harness import controls  # noqa: E402
from atlas.results import Curve, CurvePoint, Metric, Outcome, Record  # noqa: E402
from atlas.site import pages  # noqa: E402
from atlas.site.build import render_all  # noqa: E402
from atlas.site.curves import category_curves_plot, paper_curves_plot  # noqa: E402
from atlas.site.data import SiteData  # noqa: E402

CATALOGUE = load_catalogue()


def _curve(label: str, values: dict[float, list[float]], control: bool = False) -> Curve:
    return Curve(label=label, x=controls.RATIO, y=controls.ACCURACY, control=control,
                 points=[CurvePoint(x=x, y=Metric(values=v)) for x, v in values.items()])


def _han2015() -> Record:
    outcome = Outcome(
        claim="lenet-300-100", model="lenet-300-100", dataset="fashion-mnist",
        metrics={"accuracy_change_pp": Metric(values=[-0.3, -0.4, -0.2])},
        curves=[_curve("iterative magnitude pruning", {6.1: [89.0, 89.2, 88.9], 12.2: [88.5, 88.4, 88.7],
                                                       24.4: [87.0, 87.3, 86.8]}),
                _curve(controls.PRUNING_CONTROL, {6.1: [88.9, 89.0, 88.8], 12.2: [88.0, 88.1, 87.9],
                                                  24.4: [85.0, 85.5, 85.2]}, control=True)])
    return Record(key="han2015", profile="quick", config={}, config_hash="c" * 64, code_hash="d" * 64,
                  seeds=[0, 1, 2], outcomes=[outcome], provenance={"profile": "quick", "seeds": [0, 1, 2]})


def test_a_paper_with_curves_embeds_them_beside_the_named_control() -> None:
    files = render_all(SiteData(CATALOGUE, {"han2015": _han2015()}, manifest.load().entries))
    page = str(files[pages.paper_path("han2015")])
    assert "](han2015-curves.svg)" in page
    assert f"beside {controls.PRUNING_CONTROL}" in page
    assert files[pages.paper_curves_path("han2015")] == paper_curves_plot(_han2015())
    assert pages.paper_curves_path("han2016") not in files
    assert "-curves.svg" not in str(files[pages.paper_path("han2016")])


def test_the_category_page_shows_every_paper_with_curves() -> None:
    files = render_all(SiteData(CATALOGUE, {"han2015": _han2015()}, manifest.load().entries))
    page = str(files[pages.category_path("pruning")])
    assert "## Against the control" in page and "](pruning-curves.svg)" in page and "(1 papers)" in page
    assert pages.category_curves_path("pruning") in files
    assert pages.category_curves_path("quantization") not in files
    assert "Against the control" not in str(files[pages.category_path("quantization")])


def test_the_svg_draws_the_method_solid_and_the_control_dashed() -> None:
    svg = category_curves_plot([_han2015()]).decode()
    assert 'id="method-0"' in svg and 'id="control-1"' in svg
    assert "stroke-dasharray" in svg.split('id="control-1"')[1].split("</g>")[0]
    assert "han2015: lenet-300-100" in svg
    assert paper_curves_plot(None) is None and category_curves_plot([]) is None


def test_a_paper_the_atlas_does_not_reproduce_says_why_on_its_page() -> None:
    paper = CATALOGUE.get("chen2016").model_copy(update={"no_reproduction": "needs a GPU sparse kernel (tried)"})
    catalogue = Catalogue([paper if p.key == "chen2016" else p for p in CATALOGUE], CATALOGUE.path)
    files = render_all(SiteData(catalogue, {}, manifest.load().entries))
    page = str(files[pages.paper_path("chen2016")])
    assert "Why the atlas does not reproduce this paper" in page and "needs a GPU sparse kernel (tried)" in page
    assert "No reproduction yet" not in page
    assert "Why the atlas does not reproduce" not in str(files[pages.paper_path("lecun1989")])
