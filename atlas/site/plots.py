"""The category plots: accuracy change against compression (or speed-up), one marker shape and colour
per paper, the paper's own numbers hollow and the harness's numbers filled, on the same axes.

Reported points come from the claims: the x is the stated compression ratio (else the target of a
``*_compression`` check, else the stated speed-up); the y is the target of an ``accuracy_change_pp`` /
``distillation_gain_pp`` check, else derived from the baseline and compressed numbers when the metric
is an accuracy or an error in percent (``compressed - baseline`` for accuracy, ``baseline -
compressed`` for error). Reproduced points come from the run records: ``param_compression``,
``storage_compression``, ``flop_reduction`` or ``speedup`` against ``accuracy_change_pp`` or
``distillation_gain_pp``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from atlas.catalogue import Claim, Paper  # noqa: E402
from atlas.results import Outcome  # noqa: E402

__all__ = ["Point", "category_plot", "reported_point", "reproduced_point"]

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


def category_plot(title: str, points: list[Point], fmt: str = "svg") -> bytes:
    """The plot as SVG (or PNG) bytes; an empty plot says so in words."""
    plt.rcParams["svg.hashsalt"] = "atlas"  # stable ids: the same data gives the same file
    plt.rcParams["svg.fonttype"] = "none"
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
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return buf.getvalue()
