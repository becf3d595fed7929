"""Reported-vs-reproduced verdicts, computed on reading from a record's per-seed values and the
claim's *current* checks in papers.yaml.

**A check** names a quantity, a direction and a threshold (the paper's number and a stated tolerance,
:meth:`atlas.catalogue.Check.describe`). It is decided on the 95% Student-t interval of the
quantity over the seeds (:mod:`atlas.stats`; a difference between two models trained from the same
seed is recorded per seed, so its interval is that of the paired differences):

- **pass**: the whole interval lies on the passing side of the threshold;
- **fail**: the whole interval lies on the failing side;
- **inconclusive**: the interval straddles the threshold, or there is one seed only (no interval).

A quantity with the same value on every seed (a compression ratio) decides directly. A non-finite
value fails. An *accuracy* check (a quantity in percentage points, ``*_pp``) cannot fail when the
run's baseline is more than :data:`atlas.reference.CONVERGENCE_MARGIN_PP` below its model's
reference accuracy: it is *inconclusive*, "baseline not converged".

**A claim**: every check passes: **reproduced**; some pass and some fail: **partly**; some fail and
none passes: **not reproduced**; none fails and some are inconclusive: **inconclusive**; the claim has
no check, or the run measured none of its quantities: **not comparable**. A paper's verdict applies
the same rule to all the checks of its judged claims.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from atlas.catalogue import Check, Claim, Paper
from atlas.errors import CatalogueError
from atlas.reference import CONVERGENCE_MARGIN_PP, ReferenceRecord, find
from atlas.results import Outcome, Record
from atlas.stats import Interval

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_COMPARABLE = "not comparable"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NOT_COMPARABLE)

PASS, FAIL, UNDECIDED, NOT_MEASURED = "pass", "fail", "inconclusive", "not measured"
CHECK_STATES = (PASS, FAIL, UNDECIDED, NOT_MEASURED)


def is_accuracy_quantity(name: str) -> bool:
    """Quantities in percentage points of accuracy (``accuracy_change_pp``, ``distillation_gain_pp``)."""
    return name.endswith("_pp")


@dataclass(frozen=True)
class CheckVerdict:
    quantity: str
    rule: str
    state: str
    interval: Interval | None
    reason: str = ""

    @property
    def passed(self) -> bool | None:
        return {PASS: True, FAIL: False}.get(self.state)

    def text(self) -> str:
        """``distillation_gain_pp 0.41 [0.28, 0.54] (n=5) vs distillation_gain_pp >= 0.12 → pass``."""
        measured = "not measured" if self.interval is None else self.interval.text()
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.quantity} {measured} vs {self.rule} → {self.state}{why}"


@dataclass(frozen=True)
class ClaimVerdict:
    claim: str
    verdict: str
    checks: list[CheckVerdict]
    notes: list[str] = field(default_factory=list)


def _bounds(check: Check) -> tuple[float, float]:
    """The passing region ``[low, high]`` of a check."""
    tol, target = check.tolerance(), float(check.target)
    eps = 1e-12 * max(1.0, abs(target))
    if check.direction == "higher":
        return target - tol - eps, math.inf
    if check.direction == "lower":
        return -math.inf, target + tol + eps
    if check.direction == "equal":
        return target - tol - eps, target + tol + eps
    raise ValueError(f"unknown direction {check.direction!r}")


def decide(check: Check, iv: Interval | None) -> tuple[str, str]:
    """The state of one check given the quantity's interval over seeds, with the reason."""
    if iv is None:
        return NOT_MEASURED, "the run did not measure this quantity"
    if not math.isfinite(iv.mean):
        return FAIL, "non-finite value"
    low, high = _bounds(check)
    if iv.lo is None or iv.hi is None:  # one seed
        return UNDECIDED, "one seed: no interval"
    if low <= iv.lo and iv.hi <= high:
        return PASS, "same on every seed" if iv.constant else ""
    if iv.hi < low or iv.lo > high:
        return FAIL, "same on every seed" if iv.constant else ""
    return UNDECIDED, "the interval straddles the threshold"


def combine_states(states: Iterable[str]) -> str:
    """A verdict from check states (the rule in the module docstring)."""
    judged = [s for s in states if s != NOT_MEASURED]
    if not judged:
        return NOT_COMPARABLE
    if all(s == PASS for s in judged):
        return REPRODUCED
    if FAIL in judged:
        return PARTLY if PASS in judged else NOT_REPRODUCED
    return INCONCLUSIVE


def baseline_note(outcome: Outcome, references: list[ReferenceRecord] | None) -> tuple[bool, str]:
    """(converged?, a sentence) for the outcome's baseline against its reference accuracy."""
    base = outcome.baseline
    if base is None:
        return True, ""
    if base.metric not in outcome.metrics:
        return True, f"baseline metric {base.metric} missing from the record"
    ref = find(base, references or [])
    measured = outcome.metrics[base.metric].interval
    if ref is None:
        return True, (f"no reference accuracy for {base.model} on {base.dataset} "
                      f"(n={base.train_size}); convergence not checked (`atlas calibrate`)")
    ref_mean = ref.accuracy.mean
    gap = ref_mean - measured.mean
    text = (f"baseline {base.model} {measured.mean:.2f}% vs its reference {ref_mean:.2f}% "
            f"(long schedule, n={len(ref.seeds)}): {gap:+.2f} pp below")
    if gap > CONVERGENCE_MARGIN_PP:
        return False, f"baseline not converged: {text}, margin {CONVERGENCE_MARGIN_PP:g} pp"
    return True, text


def judge(claim: Claim, outcome: Outcome | None,
          references: list[ReferenceRecord] | None = None) -> ClaimVerdict:
    """The verdict of one claim on one outcome (``None``: the run did not measure the claim)."""
    if outcome is None or not claim.checks:
        checks = [CheckVerdict(c.quantity, c.describe(), NOT_MEASURED, None) for c in claim.checks]
        return ClaimVerdict(claim.id, NOT_COMPARABLE, checks)
    converged, note = baseline_note(outcome, references)
    checks = []
    for check in claim.checks:
        iv = outcome.interval(check.quantity)
        state, reason = decide(check, iv)
        if not converged and is_accuracy_quantity(check.quantity) and state == FAIL:
            state, reason = UNDECIDED, "baseline not converged"
        checks.append(CheckVerdict(check.quantity, check.describe(), state, iv, reason))
    return ClaimVerdict(claim.id, combine_states(c.state for c in checks), checks, [note] if note else [])


@dataclass(frozen=True)
class RecordVerdict:
    verdict: str
    claims: dict[str, ClaimVerdict]

    def claim(self, claim_id: str) -> ClaimVerdict | None:
        return self.claims.get(claim_id)


def judge_record(record: Record, paper: Paper, references: list[ReferenceRecord] | None = None) -> RecordVerdict:
    """Every measured claim of a record judged; the paper's verdict over all their checks."""
    claims = {}
    for outcome in record.outcomes:
        try:
            claim = paper.claim(outcome.claim)
        except CatalogueError:  # a record of a claim the catalogue no longer has
            continue
        claims[claim.id] = judge(claim, outcome, references)
    states = [c.state for v in claims.values() for c in v.checks]
    return RecordVerdict(combine_states(states), claims)
