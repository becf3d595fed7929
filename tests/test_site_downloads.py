"""The site's downloads: results.csv / results.json (one row per checked quantity of each measured
claim, with the record's provenance; pandas, from the data the comparison page shows) and each
category's BibTeX (what ``atlas cite --category`` prints), written by the build and linked from the
pages."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from site_helpers import HINTON_GAIN, Built, hinton_site_data, require_site_extra  # noqa: E402

require_site_extra()

from atlas.catalogue import CATEGORIES, load_catalogue  # noqa: E402
from atlas.cli import main as atlas_main  # noqa: E402
from atlas.results import Record  # noqa: E402
from atlas.site.data import SiteData  # noqa: E402
from atlas.site.downloads import (  # noqa: E402
    COLUMNS,
    category_bibtex,
    results_csv,
    results_frame,
    results_json,
)
from atlas.verdict import judge_record  # noqa: E402

pytestmark = pytest.mark.slow

# the fixture's distillation_gain_pp over seeds 0.7333, 0.8333, 0.9333: s = 0.1, t(0.975, 2) = 4.3027
LOW, HIGH = HINTON_GAIN - 0.248414, HINTON_GAIN + 0.248414


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SiteData:
    return hinton_site_data(tmp_path_factory)



def test_results_frame_holds_the_checks_and_provenance(data: SiteData) -> None:
    frame = results_frame(data)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 1  # the fixture record measures one claim with one check
    row = frame.iloc[0]
    claim = load_catalogue().get("hinton2015").claim("mnist-student")
    assert (row["key"], row["claim"], row["profile"]) == ("hinton2015", "mnist-student", "quick")
    assert (row["reported_dataset"], row["reproduced_dataset"]) == (claim.dataset, "fashion-mnist")
    assert row["quantity"] == "distillation_gain_pp" and row["target"] == claim.checks[0].target
    assert row["mean"] == pytest.approx(HINTON_GAIN, abs=1e-9)
    assert row["ci95_low"] == pytest.approx(LOW, abs=1e-5)
    assert row["ci95_high"] == pytest.approx(HIGH, abs=1e-5)
    assert row["n"] == 3 and row["check"] == "pass" and row["verdict"] == "reproduced"
    provenance = (row["commit"], bool(row["dirty"]), row["device"], row["wall_time_s"])
    assert provenance == ("0123456789ab", False, "cpu", 42.0)
    assert row["date"] == "2026-11-25T12:00:00+00:00" and row["record"] == "results/hinton2015/quick.json"


def test_csv_and_json_hold_the_same_table(data: SiteData) -> None:
    frame = results_frame(data)
    from_csv = pd.read_csv(io.StringIO(results_csv(data)))
    assert list(from_csv.columns) == list(COLUMNS)
    assert from_csv.loc[0, "mean"] == pytest.approx(frame.loc[0, "mean"], rel=1e-12)
    rows = json.loads(results_json(data))
    assert len(rows) == len(frame) == 1
    assert rows[0]["ci95_high"] == pytest.approx(HIGH, abs=1e-5) and rows[0]["dirty"] is False
    assert rows[0]["check_reason"] is None  # no reason to give: the interval is wholly above the threshold


def test_a_claim_without_checks_has_one_row_without_a_quantity(data: SiteData) -> None:
    record = data.records["hinton2015"]
    outcome = record.outcomes[0].model_copy(update={"claim": "mnist-teacher"})  # a claim with no checks
    frame = results_frame(_with_record(data, record.model_copy(update={"outcomes": [outcome]})))
    assert len(frame) == 1 and frame.loc[0, "claim"] == "mnist-teacher"
    assert pd.isna(frame.loc[0, "quantity"]) and pd.isna(frame.loc[0, "mean"]) and frame.loc[0, "commit"]


def test_no_records_give_an_empty_table_with_its_columns() -> None:
    frame = results_frame(SiteData(load_catalogue(), {}, {}))
    assert frame.empty and list(frame.columns) == list(COLUMNS)
    assert results_csv(SiteData(load_catalogue(), {}, {})).strip() == ",".join(COLUMNS)


def test_category_bibtex_is_what_atlas_cite_prints(capsys: pytest.CaptureFixture[str]) -> None:
    catalogue = load_catalogue()
    assert atlas_main(["cite", "--category", "distillation"]) == 0
    assert category_bibtex(catalogue, "distillation") == capsys.readouterr().out
    text = category_bibtex(catalogue, "distillation")
    assert text.count("\n@") + text.startswith("@") == len(catalogue.filter(category="distillation"))
    assert "@misc{hinton2015," in text


def test_the_build_writes_and_links_the_downloads(site: Built) -> None:
    out: Path = site.site
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns) == list(COLUMNS) and list(frame["key"]) == ["hinton2015"]
    assert frame.loc[0, "mean"] == pytest.approx(HINTON_GAIN, abs=1e-9)
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))[0]["verdict"] == "reproduced"
    for page in ("comparison.html", "index.html"):
        html = (out / page).read_text(encoding="utf-8")
        assert 'href="results.csv"' in html and 'href="results.json"' in html, page
    catalogue = load_catalogue()
    home = (out / "index.html").read_text(encoding="utf-8")
    for cat in CATEGORIES:
        bib = (out / "bibtex" / f"{cat}.bib").read_text(encoding="utf-8")
        assert bib == category_bibtex(catalogue, cat), cat
        assert f'href="bibtex/{cat}.bib"' in home, cat
        page = (out / "categories" / f"{cat}.html").read_text(encoding="utf-8")
        assert f'href="../bibtex/{cat}.bib"' in page, cat



def _with_record(data: SiteData, record: Record) -> SiteData:
    """``data`` with ``record`` in place of its hinton2015 record, judged again."""
    verdicts = {"hinton2015": judge_record(record, data.catalogue.get("hinton2015"))}
    return SiteData(data.catalogue, {"hinton2015": record}, data.reproductions, verdicts)


def test_json_has_no_infinities(data: SiteData) -> None:
    record = data.records["hinton2015"]
    outcome = record.outcomes[0]
    gain = outcome.metrics["distillation_gain_pp"].model_copy(update={"values": [float("inf")] * 3})
    outcome = outcome.model_copy(update={"metrics": {**outcome.metrics, "distillation_gain_pp": gain}})
    rows = json.loads(results_json(_with_record(data, record.model_copy(update={"outcomes": [outcome]}))))
    assert rows[0]["mean"] is None  # not Infinity, which is no JSON
    assert (rows[0]["check"], rows[0]["check_reason"]) == ("fail", "non-finite value")
