"""Reported-vs-reproduced rows, shared by ``atlas reproduce``, ``atlas compare`` and the site."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pandas as pd

from atlas.catalogue import Catalogue, Claim, Paper
from atlas.reference import ReferenceRecord, load_references
from atlas.results import Outcome, Record
from atlas.verdict import ClaimVerdict, RecordVerdict, judge_record

RECORD_UNREADABLE = "record unreadable"


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) < 100 else f"{x:.1f}"


def reported_text(claim: Claim) -> str:
    """The paper's number in words: 'top-1 error (%) 1.64 → 1.59, 12x'."""
    parts = []
    if claim.baseline is not None or claim.compressed is not None:
        parts.append(f"{claim.metric} {fmt_value(claim.baseline)} → {fmt_value(claim.compressed)}")
    elif claim.metric:
        parts.append(claim.metric)
    if claim.ratio is not None:
        parts.append(f"{fmt_value(claim.ratio)}× smaller")
    if claim.speedup is not None:
        parts.append(f"{fmt_value(claim.speedup)}× faster")
    if claim.bits is not None:
        parts.append(f"{fmt_value(claim.bits)}-bit")
    return ", ".join(parts)


def fmt_value(v: object) -> str:
    if isinstance(v, float):
        return fmt(v, 4)
    return "–" if v is None else str(v)


def measured_text(outcome: Outcome, verdict: ClaimVerdict | None = None) -> str:
    """The judged quantities, mean and 95% interval over seeds:
    ``param_compression 12 (n=3, same on every seed); accuracy_change_pp -0.41 [-0.6, -0.2] (n=3)``."""
    names = [c.quantity for c in verdict.checks] if verdict is not None else list(outcome.metrics)
    parts = []
    for name in names:
        iv = outcome.interval(name)
        if iv is not None:
            parts.append(f"{name} {iv.text()}")
    return "; ".join(parts)


def verdicts(records: Iterable[Record], catalogue: Catalogue,
             references: list[ReferenceRecord] | None = None) -> dict[str, RecordVerdict]:
    """Each record judged against its claims' current checks (key -> verdict)."""
    refs = load_references() if references is None else references
    return {r.key: judge_record(r, catalogue.get(r.key), refs) for r in records}


def target_text(claim: Claim) -> str:
    return "; ".join(c.describe() for c in claim.checks)


def outcome_rows(records: Iterable[Record], catalogue: Catalogue,
                 papers: Iterable[Paper] | None = None,
                 references: list[ReferenceRecord] | None = None,
                 unreadable: Collection[str] = ()) -> list[dict[str, str]]:
    """One row per reported claim: the paper's setting and number, the harness's setting and number
    (mean and 95% interval, n seeds), and the verdict judged now against the claim's checks. With
    ``papers``, claims without a record are listed too ("record unreadable" for the keys in
    ``unreadable``, whose record could not be read)."""
    records = list(records)
    by_key = {r.key: r for r in records}
    judged = verdicts(records, catalogue, references)
    keys = [p.key for p in papers] if papers is not None else list(by_key)
    rows = []
    for key in keys:
        paper = catalogue.get(key)
        record = by_key.get(key)
        for claim in paper.claims:
            outcome = record.outcome(claim.id) if record else None
            if outcome is None and papers is None:
                continue
            cv = judged[key].claim(claim.id) if outcome is not None else None
            rows.append({
                "paper": key,
                "claim": claim.id,
                "paper setting": f"{claim.model} / {claim.dataset}",
                "reported": reported_text(claim),
                "source": claim.source,
                "checks": target_text(claim),
                "harness setting": f"{outcome.model} / {outcome.dataset}" if outcome else "–",
                "reproduced": measured_text(outcome, cv) if outcome else "–",
                "n": str(len(record.seeds)) if outcome and record else "–",
                # A claim with no check is not something the harness can test: no verdict at all.
                "verdict": cv.verdict if cv else (
                    "–" if not claim.checks else RECORD_UNREADABLE if key in unreadable else "not run"),
                "profile": record.profile if outcome and record else "–",
            })
    return rows


def render_rows(rows: list[dict[str, str]], fmt_name: str = "table") -> str:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return "(no rows)"
    if fmt_name == "csv":
        return frame.to_csv(index=False)
    if fmt_name == "markdown":
        header = "| " + " | ".join(frame.columns) + " |"
        sep = "| " + " | ".join("---" for _ in frame.columns) + " |"
        body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
        return "\n".join([header, sep, *body]) + "\n"
    narrow = frame[["paper", "claim", "reported", "reproduced", "verdict"]]
    return narrow.to_string(index=False, max_colwidth=60)


# ---------------------------------------------------------------------------------------------
# LaTeX (booktabs), for a related-work section

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}
_LATEX_UNICODE = {
    "→": r"$\rightarrow$", "×": r"$\times$", "±": r"$\pm$", "–": "--", "—": "---", "≥": r"$\geq$",
    "≤": r"$\leq$", "≈": r"$\approx$", "°": r"$^\circ$", "µ": r"$\mu$", "−": "--", "…": r"\ldots{}",
}

#: the LaTeX table's columns: (row field, heading, column spec)
LATEX_COLUMNS = (
    ("paper", "Paper", "l"),
    ("paper setting", "Paper's setting", r"p{0.2\linewidth}"),
    ("reported", "Reported", r"p{0.2\linewidth}"),
    ("harness setting", "Harness setting", r"p{0.16\linewidth}"),
    ("reproduced", "Reproduced", r"p{0.16\linewidth}"),
    ("verdict", "Verdict", "l"),
)


def latex_escape(text: object) -> str:
    """Plain text as LaTeX: specials (``\\ & % $ # _ { } ~ ^ < > |``) escaped, ``->`` and common
    Unicode symbols (→ × ± – ≥ ...) as LaTeX commands."""
    out = []
    for ch in ("" if text is None else str(text)).replace("->", "→"):
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[ch])
        else:
            out.append(ch)
    return "".join(out)


def render_latex(rows: list[dict[str, str]], *, cite: bool = True, comment: str | None = None) -> str:
    """A booktabs ``tabular`` (a fragment to ``\\input`` inside a ``table``) with one row per claim:
    the paper (``\\cite{key}`` when ``cite``), its setting and number, the harness's setting and
    number, and the verdict. Needs ``\\usepackage{booktabs}``."""
    lines = []
    if comment:
        lines += [f"% {line}" for line in comment.splitlines()]
    lines.append("% requires \\usepackage{booktabs}")
    spec = "".join(c[2] for c in LATEX_COLUMNS)
    lines.append(f"\\begin{{tabular}}{{{spec}}}")
    lines.append("\\toprule")
    lines.append(" & ".join(f"\\textbf{{{latex_escape(c[1])}}}" for c in LATEX_COLUMNS) + " \\\\")
    lines.append("\\midrule")
    for row in rows:
        cells = []
        for key, _head, _spec in LATEX_COLUMNS:
            value = row.get(key, "")
            if key == "paper" and cite:
                claim = row.get("claim")
                cells.append(f"\\cite{{{value}}}" + (f" ({latex_escape(claim)})" if claim else ""))
            else:
                cells.append(latex_escape(value))
        lines.append(" & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plain-text verdict blocks, for `atlas show` and `atlas reproduce`

def record_summary(record: Record) -> str:
    """``quick profile, n=3 seeds [0, 1, 2], fashion-mnist, commit 4bf7cd90, 41 s cold``."""
    p = record.provenance
    wall = p.get("wall_time_s")
    state = "" if p.get("cold") is None else (" cold" if p.get("cold") else " (cached models reused)")
    commit = (p.get("commit") or "?")[:8] + (" dirty" if p.get("dirty") else "")
    size = f", first {p['train_size']} training examples" if p.get("train_size") else ""
    return (f"{record.profile} profile, n={len(record.seeds)} seeds {record.seeds}, {p.get('dataset')}{size}, "
            f"commit {commit}, {wall:.0f} s{state} on {p.get('device')}" if wall is not None else
            f"{record.profile} profile, n={len(record.seeds)} seeds {record.seeds}")


def claim_verdict_lines(outcome: Outcome, verdict: ClaimVerdict, indent: str = "    ") -> list[str]:
    """The reproduced result of one claim: each check with its interval and threshold, the verdict."""
    lines = [f"{indent}reproduced ({outcome.model} / {outcome.dataset}): {verdict.verdict}"]
    for check in verdict.checks:
        lines.append(f"{indent}  {check.text()}")
    for note in verdict.notes:
        lines.append(f"{indent}  note: {note}")
    if outcome.differs:
        lines.append(f"{indent}  harness differs: {outcome.differs}")
    if outcome.diagnosis:
        lines.append(f"{indent}  diagnosis: {outcome.diagnosis}")
    return lines
