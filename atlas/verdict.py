"""Reported-vs-reproduced verdicts, from the tolerances the claims in papers.yaml state.

A claim's checks are judged on the mean over seeds of the quantity each names:
- every check passes -> ``reproduced``; some pass -> ``partly``; none pass -> ``not reproduced``;
- no check names a quantity the run measured (or the claim states no checks) -> ``not comparable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from atlas.catalogue import Claim

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_COMPARABLE)


@dataclass(frozen=True)
class CheckResult:
    quantity: str
    target: float
    direction: str
    tolerance: float
    rule: str
    value: float | None
    passed: bool | None  # None: the run did not measure this quantity

    def to_dict(self) -> dict:
        return asdict(self)


def judge(claim: Claim, means: Mapping[str, float]) -> tuple[str, list[CheckResult]]:
    results = []
    for check in claim.checks:
        value = means.get(check.quantity)
        results.append(CheckResult(
            check.quantity, check.target, check.direction, check.tolerance(), check.describe(),
            None if value is None else float(value),
            None if value is None else bool(check.passes(float(value))),
        ))
    judged = [r.passed for r in results if r.passed is not None]
    if not judged:
        return NOT_COMPARABLE, results
    if all(judged):
        return REPRODUCED, results
    return (PARTLY if any(judged) else NOT_REPRODUCED), results


def combine(verdicts: Iterable[str]) -> str:
    """One verdict for a run from its claims' verdicts."""
    vs = [v for v in verdicts if v != NOT_COMPARABLE]
    if not vs:
        return NOT_COMPARABLE
    if all(v == REPRODUCED for v in vs):
        return REPRODUCED
    if all(v == NOT_REPRODUCED for v in vs):
        return NOT_REPRODUCED
    return PARTLY
