"""Every reproduction runs its smoke profile end to end and its record is consistent with papers.yaml.

Found through the registry: a new file in reproductions/ is tested without touching this file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from atlas.catalogue import load_catalogue
from atlas.harness import registry
from atlas.harness.runner import Request, reproduce
from atlas.reference import load_references
from atlas.verdict import VERDICTS, judge_record

KEYS = list(registry.discover())


@pytest.mark.parametrize("key", KEYS)
def test_smoke_profile(key: str, tmp_path: Path) -> None:
    record, reused = reproduce(Request(key, "smoke", results_dir=tmp_path, progress=False))
    assert not reused
    paper = load_catalogue().get(key)
    judged = judge_record(record, paper, load_references())
    assert judged.verdict in VERDICTS
    assert record.outcomes, f"{key} recorded no outcome"
    for outcome in record.outcomes:
        claim = paper.claim(outcome.claim)  # every recorded claim is stated in papers.yaml
        assert judged.claim(claim.id).verdict in VERDICTS
        for name, metric in outcome.metrics.items():
            assert len(metric.values) == len(record.seeds)
            assert all(math.isfinite(v) for v in metric.values), f"{key}/{outcome.claim}: {name} is not finite"
        # The smoke run records every quantity its claim's checks name.
        missing = {c.quantity for c in claim.checks} - set(outcome.metrics)
        assert not missing, f"{key}/{claim.id} does not record {sorted(missing)}"
        if outcome.baseline is not None:
            assert outcome.baseline.metric in outcome.metrics
    assert all(isinstance(b["steps"], int) for b in record.provenance["training"])
    assert (tmp_path / key / "smoke.json").exists()


@pytest.mark.parametrize("key", KEYS)
def test_quick_profile_has_at_least_three_seeds(key: str) -> None:
    assert int(registry.get(key).profiles["quick"].get("seeds", 1)) >= 3


def test_sparse_executor_computes_the_same_function() -> None:
    import torch

    from atlas.harness import measure, models

    model = models.build("lenet-300-100", (1, 28, 28), 10)
    with torch.no_grad():
        for layer in (model[1], model[3]):
            layer.weight[layer.weight.abs() < layer.weight.abs().quantile(0.9)] = 0
    x = torch.randn(5, 1, 28, 28)
    sparse = measure.sparse_executor(model)
    assert sum(isinstance(m, measure.SparseLinear) for m in sparse.modules()) == 2
    torch.testing.assert_close(sparse(x), model(x), rtol=1e-5, atol=1e-5)
