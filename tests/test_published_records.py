"""The published quick records (``results/<key>/quick.json``): one per registered reproduction,
each from a clean commit, with at least three seeds and an interval for every checked quantity.

Found through the registry, so a new reproduction is held to this without touching this file."""

from __future__ import annotations

import pytest

from atlas import ROOT, results
from atlas.catalogue import load_catalogue
from atlas.harness import registry
from atlas.reference import load_references
from atlas.verdict import VERDICTS, judge_record

KEYS = list(registry.discover())
PUBLISHED = ROOT / "results"


@pytest.mark.parametrize("key", KEYS)
def test_published_quick_record(key: str) -> None:
    path = PUBLISHED / key / "quick.json"
    assert path.exists(), f"{key} has no published quick record ({path})"
    record = results.load(path)
    assert record.key == key and record.profile == "quick"
    assert len(record.seeds) >= 3, f"{key}: {len(record.seeds)} seeds"
    prov = record.provenance
    assert prov["dirty"] is False and prov["commit"], f"{key}: not published from a clean commit"
    assert prov["wall_time_s"] > 0 and prov["seeds"] == record.seeds
    paper = load_catalogue().get(key)
    judged = judge_record(record, paper, load_references())
    assert judged.verdict in VERDICTS
    for outcome in record.outcomes:
        for check in paper.claim(outcome.claim).checks:
            iv = outcome.interval(check.quantity)
            assert iv is not None, f"{key}/{outcome.claim}: {check.quantity} not recorded"
            assert iv.lo is not None and iv.hi is not None, f"{key}/{outcome.claim}: no interval"



#: The published smoke record that a test re-runs from an empty cache (seconds on 2 cores).
RERUN_KEY = "hinton2015"


def test_a_published_smoke_record_reruns_to_the_same_numbers(tmp_path, monkeypatch) -> None:
    """Anyone can re-run a published record to its numbers: from an empty model cache, the same
    code, configuration and seeds give the same values, value for value (on the same kind of CPU and
    torch; training is deterministic there, not across instruction sets)."""
    import torch

    from atlas.harness.runner import Request, code_hash, reproduce
    from atlas.provenance import device_description

    published = results.load(PUBLISHED / RERUN_KEY / "smoke.json")
    assert published.code_hash == code_hash(registry.get(RERUN_KEY)), (
        f"results/{RERUN_KEY}/smoke.json is stale (the code changed since it was published): "
        f"re-publish it with `atlas reproduce {RERUN_KEY} --profile smoke --force` from a clean commit")
    prov = published.provenance
    if prov["device"] != device_description("cpu") or prov["torch"] != torch.__version__:
        pytest.skip(f"published on {prov['device']} with torch {prov['torch']}; here "
                    f"{device_description('cpu')} with torch {torch.__version__}")
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "empty-cache"))
    rerun, reused = reproduce(Request(RERUN_KEY, "smoke", seeds=published.seeds, results_dir=tmp_path,
                                      progress=False, force=True))
    assert not reused and rerun.provenance["cold"] is True
    assert rerun.config_hash == published.config_hash
    for old in published.outcomes:
        new = rerun.outcome(old.claim)
        assert new is not None
        for name, metric in old.metrics.items():
            assert new.metrics[name].values == metric.values, f"{old.claim}: {name}"
