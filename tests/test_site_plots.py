"""The plots: a reproduced paper's page shows each checked quantity of its claims (the record's per-seed
values, their mean and interval, the paper's value or passing region, the threshold), a paper without a
record shows none, the SVG is the same on every build; a category plot draws no point without an x."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("matplotlib", reason="the plots need matplotlib: pip install -e '.[site]'")

from atlas import manifest  # noqa: E402
from atlas.catalogue import load_catalogue  # noqa: E402
from atlas.results import Metric, Outcome, Record  # noqa: E402
from atlas.site import pages  # noqa: E402
from atlas.site.build import render_all  # noqa: E402
from atlas.site.data import SiteData  # noqa: E402
from atlas.site.plots import paper_panels, paper_plot, reported_point, reproduced_point  # noqa: E402

CATALOGUE = load_catalogue()
GAINS = [0.7333, 0.8333, 0.9333, 0.6, 1.1]


def _record(key: str, claim: str, metrics: dict[str, list[float]]) -> Record:
    seeds = list(range(len(next(iter(metrics.values())))))
    outcome = Outcome(claim=claim, model="m", dataset="fashion-mnist",
                      metrics={name: Metric(values=values) for name, values in metrics.items()})
    return Record(key=key, profile="quick", config={}, config_hash="c" * 64, code_hash="d" * 64, seeds=seeds,
                  outcomes=[outcome], provenance={"profile": "quick", "seeds": seeds})


def _hinton() -> Record:
    """hinton2015's mnist-student claim checks distillation_gain_pp >= 0.72 - 0.6; the speech claim a
    sign (>= 0, no tolerance) and gap_recovered_fraction >= 0.87 - 0.5."""
    return _record("hinton2015", "mnist-student",
                   {"distillation_gain_pp": GAINS, "param_compression": [2.185] * 5, "accuracy": [88.0] * 5})


def _group(svg: str, gid: str) -> str:
    match = re.search(rf'<g id="{gid}">(.*?)</g>', svg, re.S)
    assert match, f"no group {gid} in the SVG"
    return match.group(1)


def test_panels_hold_the_records_values_and_the_papers_threshold() -> None:
    panels = paper_panels(CATALOGUE.get("hinton2015"), _hinton())
    assert [(p.claim, p.check.quantity) for p in panels] == [("mnist-student", "distillation_gain_pp")]
    panel = panels[0]
    assert panel.values == tuple(GAINS)
    assert panel.mean == pytest.approx(sum(GAINS) / 5)
    assert panel.lo is not None and panel.hi is not None and panel.lo < panel.mean < panel.hi
    assert panel.thresholds == pytest.approx((0.72 - 0.6,))
    assert not panel.sign_only


def test_paper_svg_has_a_marker_per_seed_and_the_papers_value() -> None:
    svg = paper_plot(CATALOGUE.get("hinton2015"), _hinton()).decode()
    assert _group(svg, "seeds-0").count("<use") == len(GAINS)
    target = _group(svg, "paper-target-0")  # one marker (a lone marker is drawn as a path, not a <use>)
    assert target.count("<use") + target.count("<path") == 1
    assert "threshold-0" in svg and "pass-region-0" not in svg
    words = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))  # the title is wrapped over lines
    assert "gain of distilled student over hard-label student" in words  # the glossary's label
    assert ">pp<" in svg  # the y axis in the quantity's unit


def test_a_sign_only_claim_draws_its_pass_region_not_a_point() -> None:
    record = _record("hinton2015", "speech-3pct-data",
                     {"distillation_gain_pp": [1.0, 2.0, 1.5], "gap_recovered_fraction": [0.5, 0.6, 0.7]})
    panels = paper_panels(CATALOGUE.get("hinton2015"), record)
    assert [p.sign_only for p in panels] == [True, False]
    svg = paper_plot(CATALOGUE.get("hinton2015"), record).decode()
    assert "pass-region-0" in svg and "paper-target-0" not in svg
    assert _group(svg, "seeds-0").count("<use") == 3
    assert "paper-target-1" in svg and "pass-region-1" not in svg


def test_no_record_no_plot() -> None:
    paper = CATALOGUE.get("hinton2015")
    assert paper_plot(paper, None) is None
    assert paper_plot(paper, _record("hinton2015", "no-such-claim", {"accuracy": [1.0, 2.0]})) is None
    files = render_all(SiteData(CATALOGUE, {"hinton2015": _hinton()}, manifest.load().entries))
    plots = sorted(name for name in files if name.startswith("papers/") and name.endswith(".svg"))
    assert plots == ["papers/hinton2015.svg"]
    assert "](hinton2015.svg)" in str(files["papers/hinton2015.md"])
    assert "<figcaption>One panel per checked quantity" in str(files["papers/hinton2015.md"])
    assert ".svg)" not in str(files["papers/han2015.md"]) and "atlas-paper-plot" not in str(files["papers/han2015.md"])


def test_paper_svg_is_byte_identical_across_builds() -> None:
    data = SiteData(CATALOGUE, {"hinton2015": _hinton()}, manifest.load().entries)
    first, second = render_all(data), render_all(data)
    assert first["papers/hinton2015.svg"] == second["papers/hinton2015.svg"]
    assert paper_plot(CATALOGUE.get("hinton2015"), _hinton()) == first["papers/hinton2015.svg"]


def test_category_plots_caption_their_axes() -> None:
    files = render_all(SiteData(CATALOGUE, {}, manifest.load().entries))
    for cat in ("pruning", "distillation", "quantization"):
        caption = re.search(r"<figcaption>(.*?)</figcaption>", str(files[pages.category_path(cat)]), re.S)
        assert caption, cat
        assert "x: compression ratio" in caption.group(1) and "y: accuracy change" in caption.group(1)


def test_a_claim_without_a_ratio_is_not_drawn_at_1x() -> None:
    paper = CATALOGUE.get("hinton2015")
    claim = paper.claim("mnist-teacher")  # no ratio, speed-up or checks
    point = reported_point(paper, claim)
    assert point.x is None and not point.plottable
    # a record without a compression or speed-up: no x either
    bare = _record("hinton2015", "mnist-student", {"distillation_gain_pp": GAINS})
    assert reproduced_point(paper, bare.outcomes[0]).x is None
    # a measured compression of exactly 1 is a value
    one = _record("hinton2015", "mnist-student", {"distillation_gain_pp": GAINS, "param_compression": [1.0] * 5})
    point = reproduced_point(paper, one.outcomes[0])
    assert point.x == 1.0 and point.plottable


def test_no_plotted_point_lacks_a_stated_or_measured_x() -> None:
    for paper in CATALOGUE:
        for claim in paper.claims:
            point = reported_point(paper, claim)
            stated = claim.ratio is not None or claim.speedup is not None or any(
                c.quantity in ("param_compression", "storage_compression", "flop_reduction") for c in claim.checks)
            assert (point.x is not None) == stated, (paper.key, claim.id, point.x)
