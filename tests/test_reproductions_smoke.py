"""Every reproduction runs its smoke profile end to end and its record is consistent with papers.yaml.

Found through the registry: a new file in reproductions/ is tested without touching this file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from atlas.catalogue import load_catalogue
from atlas.harness import registry
from atlas.harness.runner import Request, reproduce
from atlas.verdict import VERDICTS

KEYS = list(registry.discover())


@pytest.mark.parametrize("key", KEYS)
def test_smoke_profile(key: str, tmp_path: Path) -> None:
    record, reused = reproduce(Request(key, "smoke", results_dir=tmp_path, progress=False))
    assert not reused
    paper = load_catalogue().get(key)
    assert record.verdict in VERDICTS
    assert record.outcomes, f"{key} recorded no outcome"
    for outcome in record.outcomes:
        claim = paper.claim(outcome.claim)  # every recorded claim is stated in papers.yaml
        assert outcome.verdict in VERDICTS
        for name, stats in outcome.metrics.items():
            assert all(math.isfinite(v) for v in stats["values"]), f"{key}/{outcome.claim}: {name} is not finite"
        for check in outcome.checks:
            assert check["quantity"] in {c.quantity for c in claim.checks}
    assert (tmp_path / key / "smoke.json").exists()


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
