"""The accuracy-compression curves: each method against its family's control.

A pruning or quantization record keeps, for a claim, the method's accuracy at several compression
levels and the control's (global magnitude pruning or uniform quantization, run on the same dense
model with the same budget: :mod:`atlas.harness.controls`), every level with its per-seed values.
:func:`paper_curves_plot` draws a paper's claims, one panel each; :func:`category_curves_plot` draws
every paper of a category with curves, one panel each, so a reader sees at a glance which methods beat
the simple control. The method is the solid line with its 95% interval as bars, the control the dashed
grey line with its interval as a band; compression ratios are on a log scale.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from atlas.results import Curve, Outcome, Record
from atlas.site.plots import _save, _stable_svg

METHOD_COLOUR = "#1f77b4"
CONTROL_COLOUR = "#7f7f7f"


def curve_outcomes(record: Record | None) -> list[Outcome]:
    """The outcomes of ``record`` that hold curves, in its order."""
    return [] if record is None else [o for o in record.outcomes if o.curves]


def _series(curve: Curve) -> tuple[list[float], list[float], list[float], list[float]]:
    xs, means, los, his = [], [], [], []
    for point in curve.points:
        iv = point.y.interval
        xs.append(point.x)
        means.append(iv.mean)
        los.append(iv.mean if iv.lo is None else iv.lo)
        his.append(iv.mean if iv.hi is None else iv.hi)
    return xs, means, los, his


def draw_curves(ax: plt.Axes, outcome: Outcome, title: str) -> None:
    """One claim's curves on ``ax``: methods solid with interval bars, controls dashed with a band."""
    for i, curve in enumerate(outcome.curves):
        xs, means, los, his = _series(curve)
        label = "\n".join(textwrap.wrap(curve.label, 38))
        if curve.control:
            ax.fill_between(xs, los, his, color=CONTROL_COLOUR, alpha=0.2, linewidth=0, zorder=1)
            ax.plot(xs, means, linestyle="--", marker="s", markersize=4, color=CONTROL_COLOUR, label=label,
                    zorder=2, gid=f"control-{i}")
        else:
            err = [[m - lo for m, lo in zip(means, los, strict=True)], [hi - m for m, hi in zip(means, his, strict=True)]]
            ax.errorbar(xs, means, yerr=err, linestyle="-", marker="o", markersize=5, capsize=3,
                        color=METHOD_COLOUR, label=label, zorder=3, gid=f"method-{i}")
    first = outcome.curves[0]
    levels = sorted({p.x for c in outcome.curves for p in c.points})
    if "ratio" in first.x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(levels, [f"{x:.3g}×" if "ratio" in first.x else f"{x:.3g}" for x in levels])
    ax.set_xlabel(first.x, fontsize=8)
    ax.set_ylabel(first.y, fontsize=8)
    ax.set_title("\n".join(textwrap.wrap(title, 40)), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=6.5, frameon=False, loc="best")


def _grid(panels: list[tuple[str, Outcome]], fmt: str) -> bytes:
    _stable_svg()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for i, (title, outcome) in enumerate(panels):
        draw_curves(axes[i // cols][i % cols], outcome, title)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout()
    return _save(fig, fmt, tight=True)


def paper_curves_plot(record: Record | None, fmt: str = "svg") -> bytes | None:
    """A paper's curves, one panel per claim that has them; None where none has."""
    outcomes = curve_outcomes(record)
    if not outcomes:
        return None
    return _grid([(f"{o.claim} ({o.model}, {o.dataset})", o) for o in outcomes], fmt)


def category_curves_plot(records: list[Record], fmt: str = "svg") -> bytes | None:
    """Every record's curves in one figure, a panel per paper and claim; None where none has."""
    panels = [(f"{r.key}: {o.claim} ({o.model})", o) for r in records for o in curve_outcomes(r)]
    return _grid(panels, fmt) if panels else None
