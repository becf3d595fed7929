"""The category plots: accuracy change against compression (or speed-up), one marker shape and colour
per paper, the paper's own numbers hollow and the harness's numbers filled, on the same axes.

Reported points come from the claims: the x is the stated compression ratio (else the target of a
``*_compression`` check, else the stated speed-up); the y is the target of an ``accuracy_change_pp`` /
``distillation_gain_pp`` check, else derived from the baseline and compressed numbers when the metric
is an accuracy or an error in percent (``compressed - baseline`` for accuracy, ``baseline -
compressed`` for error). Reproduced points come from the run records: ``param_compression``,
``storage_compression``, ``flop_reduction`` or ``speedup`` against ``accuracy_change_pp`` or
``distillation_gain_pp``.

The paper plots (:func:`paper_plot`): one small panel per checked quantity of each claim a published
record measured, the record's per-seed values, their mean with its 95% interval, the paper's value (or,
where the paper claims only a sign, the region that passes) and the pass/fail threshold.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from atlas.catalogue import Claim, Paper  # noqa: E402
from atlas.results import Outcome, Record  # noqa: E402
from atlas.schema import Check  # noqa: E402
from atlas.site import glossary  # noqa: E402

__all__ = ["Panel", "Point", "category_plot", "paper_panels", "paper_plot", "reported_point", "reproduced_point"]

Y_CHECKS = ("accuracy_change_pp", "distillation_gain_pp")
X_CHECKS = ("param_compression", "storage_compression", "flop_reduction")
X_MEASURED = ("param_compression", "storage_compression", "flop_reduction", "speedup")

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "8", "H", "d"]
COLOURS = plt.get_cmap("tab10").colors


@dataclass(frozen=True)
class Point:
    key: str
    claim: str
    source: str  # "reported" | "reproduced"
    x: float | None
    x_kind: str  # "compression" | "speed-up" | ""
    y: float | None
    dataset: str

    @property
    def plottable(self) -> bool:
        return self.x is not None and self.y is not None and self.x > 0


def _check_target(claim: Claim, names: tuple[str, ...]) -> float | None:
    for name in names:
        for check in claim.checks:
            if check.quantity == name:
                return float(check.target)
    return None


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def reported_change(claim: Claim) -> float | None:
    """The paper's accuracy change in percentage points, where the claim states one."""
    target = _check_target(claim, Y_CHECKS)
    if target is not None:
        return target
    metric = claim.metric.lower()
    base, comp = _num(claim.baseline), _num(claim.compressed)
    if "change" in metric and "pp" in metric and base is None and comp is not None:
        return comp
    if base is None or comp is None or "/" in metric.replace("(%)", ""):
        return None
    if not ("%" in metric or "pp" in metric):
        return None
    if re.search(r"\berror\b|\berr\b", metric):
        return base - comp
    if re.search(r"\bacc(uracy)?\b", metric):
        return comp - base
    return None


def reported_point(paper: Paper, claim: Claim) -> Point:
    x: float | None = _num(claim.ratio)
    kind = "compression" if x is not None else ""
    if x is None:
        x = _check_target(claim, X_CHECKS)
        kind = "compression" if x is not None else ""
    if x is None and _num(claim.speedup) is not None:
        x, kind = float(claim.speedup), "speed-up"  # type: ignore[arg-type]
    return Point(paper.key, claim.id, "reported", x, kind, reported_change(claim), claim.dataset)


def reproduced_point(paper: Paper, outcome: Outcome) -> Point:
    y = next((outcome.mean(n) for n in Y_CHECKS if outcome.mean(n) is not None), None)
    x, kind = None, ""
    # The x the claim itself is judged on (storage for Deep Compression, parameters for pruning), then
    # the others in a fixed order.
    claimed = next((c for c in paper.claims if c.id == outcome.claim), None)
    own = [c.quantity for c in claimed.checks if c.quantity in X_MEASURED] if claimed else []
    for name in [*own, *X_MEASURED]:
        value = outcome.mean(name)
        if value is not None:
            x, kind = float(value), ("speed-up" if name == "speedup" else "compression")
            break
    return Point(paper.key, outcome.claim, "reproduced", x, kind, None if y is None else float(y), outcome.dataset)


def _stable_svg() -> None:
    plt.rcParams["svg.hashsalt"] = "atlas"  # stable ids: the same data gives the same file
    plt.rcParams["svg.fonttype"] = "none"


def _save(fig: plt.Figure, fmt: str, tight: bool = False) -> bytes:
    """The figure's bytes; ``tight``: cropped to what is drawn (a legend wider than the panels included)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None,
                bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def category_plot(title: str, points: list[Point], fmt: str = "svg") -> bytes:
    """The plot as SVG (or PNG) bytes; an empty plot says so in words."""
    _stable_svg()
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=100)
    shown = [p for p in points if p.plottable]
    keys = list(dict.fromkeys(p.key for p in shown))
    style = {k: (MARKERS[i % len(MARKERS)], COLOURS[i % len(COLOURS)]) for i, k in enumerate(keys)}
    for key in keys:
        marker, colour = style[key]
        for source in ("reported", "reproduced"):
            pts = [p for p in shown if p.key == key and p.source == source]
            if not pts:
                continue
            ax.scatter(
                [p.x for p in pts], [p.y for p in pts], marker=marker, s=52, linewidths=1.4,
                edgecolors=[colour], facecolors="none" if source == "reported" else [colour],
                zorder=3, label=key if source == "reported" or not any(
                    q.key == key and q.source == "reported" for q in shown) else None,
            )
        # a thin line joins a claim's reported and reproduced points
        for p in shown:
            if p.key == key and p.source == "reproduced":
                twin = next((q for q in shown if q.key == key and q.claim == p.claim and q.source == "reported"), None)
                if twin is not None:
                    ax.plot([twin.x, p.x], [twin.y, p.y], color=colour, linewidth=0.8, alpha=0.6, zorder=2)
    ax.axhline(0.0, color="#888888", linewidth=0.8, zorder=1)
    ax.set_xlabel("compression (×, log scale; speed-up where no ratio is stated)")
    ax.set_ylabel("accuracy change (percentage points)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if shown:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        handles = [
            plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="#444444",
                       label="reported (paper's own setting)"),
            plt.Line2D([], [], marker="o", linestyle="", color="#444444", label="reproduced (harness)"),
        ]
        first = ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
        ax.add_artist(first)
        if len(keys) <= 30:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
                      ncol=1 if len(keys) <= 18 else 2, title="paper", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no plottable points yet", transform=ax.transAxes, ha="center", va="center",
                fontsize=12, color="#666666")
        ax.set_xlim(1, 100)
        ax.set_xscale("log")
        ax.set_ylim(-5, 5)
    fig.tight_layout()
    return _save(fig, fmt)


# ---------------------------------------------------------------------------------------------
# a paper's plot: each checked quantity of each claim its published record measured


@dataclass(frozen=True)
class Panel:
    """One checked quantity of one claim: the record's values against the paper's."""

    claim: str
    check: Check
    values: tuple[float, ...]  # per seed, in the record's seed order
    mean: float
    lo: float | None  # the 95% interval; None with one seed
    hi: float | None

    @property
    def sign_only(self) -> bool:
        """The paper states a direction (an improvement), not a number: a zero target, no tolerance."""
        c = self.check
        return c.target == 0 and c.tolerance() == 0 and c.direction in ("higher", "lower")

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Where the check turns from pass to fail (two for ``equal``)."""
        c = self.check
        tol, target = c.tolerance(), float(c.target)
        if c.direction == "higher":
            return (target - tol,)
        if c.direction == "lower":
            return (target + tol,)
        return (target - tol, target + tol)


def paper_panels(paper: Paper, record: Record | None) -> list[Panel]:
    """The panels of a paper's plot: every check of every claim the record measured, in catalogue order;
    a check whose quantity the run did not record has none."""
    if record is None:
        return []
    panels = []
    for claim in paper.claims:
        outcome = record.outcome(claim.id)
        if outcome is None:
            continue
        for check in claim.checks:
            metric = outcome.metrics.get(check.quantity)
            if metric is None:
                continue
            iv = metric.interval
            panels.append(Panel(claim.id, check, tuple(float(v) for v in metric.values), iv.mean, iv.lo, iv.hi))
    return panels


def _panel_title(panel: Panel) -> str:
    return f"{panel.claim}\n" + "\n".join(textwrap.wrap(glossary.label(panel.check.quantity).text, 34))


def _draw_panel(ax: plt.Axes, panel: Panel, i: int) -> None:
    """Left (x=0): the paper; right (x=1): the atlas's seeds (dots), mean and 95% interval (bar)."""
    n = len(panel.values)
    offsets = [0.0] if n == 1 else [-0.12 + 0.24 * k / (n - 1) for k in range(n)]
    ax.scatter([0.85 + o for o in offsets], panel.values, s=14, color="#1f77b4", zorder=3, gid=f"seeds-{i}",
               label="atlas, one seed each")
    err = None if panel.lo is None else [[panel.mean - panel.lo], [panel.hi - panel.mean]]
    ax.errorbar([1.15], [panel.mean], yerr=err, fmt="s", color="#1f77b4", markersize=6, capsize=4,
                zorder=3, gid=f"mean-{i}", label="atlas mean, 95% interval")
    check = panel.check
    finite = [*panel.values, panel.mean, *(v for v in (panel.lo, panel.hi) if v is not None), *panel.thresholds]
    if panel.sign_only:
        low, high = min(finite), max(finite)
        pad = max(high - low, abs(high), abs(low), 1e-9) * 0.25
        ax.set_ylim(low - pad, high + pad)
        if check.direction == "higher":
            ax.axhspan(0.0, high + pad, color="#2ca02c", alpha=0.12, zorder=0, gid=f"pass-region-{i}",
                       label="paper: an improvement (passes at ≥ 0)")
        else:
            ax.axhspan(low - pad, 0.0, color="#2ca02c", alpha=0.12, zorder=0, gid=f"pass-region-{i}",
                       label="paper: a reduction (passes at ≤ 0)")
    else:
        ax.scatter([0.0], [float(check.target)], marker="D", s=44, facecolors="none", edgecolors="#d62728",
                   linewidths=1.5, zorder=3, gid=f"paper-target-{i}", label="paper's value")
        finite.append(float(check.target))
        low, high = min(finite), max(finite)
        pad = max(high - low, 1e-9 * max(1.0, abs(high))) * 0.15
        ax.set_ylim(low - pad, high + pad)
    for t in panel.thresholds:
        ax.axhline(t, color="#555555", linestyle="--", linewidth=1.0, zorder=2, gid=f"threshold-{i}",
                   label="pass/fail threshold")
    ax.set_xlim(-0.5, 1.5)
    ax.set_xticks([0.0, 1.0], ["paper", "atlas"])
    unit = glossary.label(check.quantity).unit
    ax.set_ylabel(unit if unit and unit != "1 = all" else "fraction (1 = all)" if unit else check.quantity,
                  fontsize=8)
    ax.set_title(_panel_title(panel), fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, axis="y", alpha=0.25)


def paper_plot(paper: Paper, record: Record | None, fmt: str = "svg") -> bytes | None:
    """The paper's plot as SVG (or PNG) bytes, one panel per measured check; None without a record or a
    measured check."""
    panels = paper_panels(paper, record)
    if not panels:
        return None
    _stable_svg()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 3.0 * rows + 0.5), dpi=100, squeeze=False)
    for i, panel in enumerate(panels):
        _draw_panel(axes[i // cols][i % cols], panel, i)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    # One legend entry a row under a single panel (it would be wider than the panel), three otherwise.
    ncol = 1 if cols == 1 else min(3, len(handles))
    rows_of_legend = math.ceil(len(handles) / ncol)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.45, 0.06 * rows_of_legend / rows), 1, 1))
    return _save(fig, fmt, tight=True)
