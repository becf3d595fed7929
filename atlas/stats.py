r"""Intervals over seeds: how sure a reproduced number is.

A quantity measured once per seed, :math:`x_1, \dots, x_n`, is summarised by its mean
:math:`\bar x` and a two-sided 95% Student-t confidence interval

.. math::

    \bar x \pm t_{0.975,\,n-1} \, \frac{s}{\sqrt n}, \qquad s^2 = \frac{1}{n-1} \sum_i (x_i - \bar x)^2 .

A difference between two models trained from the same seed (a distilled student minus the same
student on hard labels, a compressed model minus its own baseline) is recorded per seed as that
difference, so its interval is the interval of the paired differences. A quantity with the same value
on every seed (a compression ratio fixed by the method) has a zero-width interval. With one seed there
is no interval (``lo`` and ``hi`` are ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation and the 95% t-interval of a quantity over ``n`` seeds."""

    mean: float
    std: float
    n: int
    lo: float | None
    hi: float | None

    @property
    def constant(self) -> bool:
        """Every seed gave the same value (at least two seeds)."""
        return self.n >= 2 and self.std == 0.0

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def text(self, digits: int = 3) -> str:
        """``-0.22 [-0.55, 0.10] (n=3)``; one seed: ``-0.22 (n=1, no interval)``."""
        from atlas.report import fmt

        if self.lo is None or self.hi is None:
            return f"{fmt(self.mean, digits)} (n={self.n}, no interval)"
        if self.constant:
            return f"{fmt(self.mean, digits)} (n={self.n}, same on every seed)"
        return f"{fmt(self.mean, digits)} [{fmt(self.lo, digits)}, {fmt(self.hi, digits)}] (n={self.n})"


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value for ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean and ``confidence`` t-interval of per-seed ``values`` (finite numbers)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("an interval needs at least one value")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(mean, 0.0, 1, None, None)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    # Values equal up to rounding: a quantity that does not vary.
    std = 0.0 if var <= (1e-12 * max(1.0, abs(mean))) ** 2 else math.sqrt(var)
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)
