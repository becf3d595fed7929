"""The site's pages as Markdown (with raw HTML where Markdown has no equivalent), rendered from the
Jinja2 templates in ``atlas/site/templates/``.

Every function here is pure: it takes the :class:`~atlas.site.data.SiteData` and returns text, so the
pages can be tested without MkDocs. Paths are relative to the docs folder (``papers/han2015.md``);
links between generated pages are written as Markdown links to ``.md`` files (MkDocs checks and
rewrites them) except inside raw HTML, where :func:`html_href` computes the built ``.html`` path.

The templates autoescape: a plain string lands HTML-escaped (right inside raw HTML); text in a
Markdown context goes through the ``md`` filter (Markdown specials escaped), and the helpers that
return Markdown or HTML (``code``, ``verdict_badge``, ``fence``) return it marked safe.
"""

from __future__ import annotations

import functools
import html
import json
import posixpath
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

from atlas.bibtex import to_bibtex
from atlas.catalogue import CATEGORIES, Claim, Paper
from atlas.errors import CatalogueError
from atlas.report import RECORD_UNREADABLE, fmt, measured_text, reported_text
from atlas.results import Outcome, Record
from atlas.schema import Check, normalise_title
from atlas.site import glossary
from atlas.site.curves import curve_outcomes
from atlas.site.data import SiteData, primary_claim, profile_names
from atlas.site.docstring import rst_to_markdown
from atlas.site.downloads import COLUMNS, RESULTS_CSV, RESULTS_JSON, bibtex_path
from atlas.site.plots import Point, paper_panels
from atlas.stats import Interval
from atlas.verdict import VERDICTS, ClaimVerdict

CATEGORY_TITLES = {
    "survey": "Surveys",
    "distillation": "Knowledge distillation",
    "pruning": "Pruning",
    "quantization": "Quantization",
    "low-rank": "Low-rank factorisation",
    "dynamic-computation": "Dynamic computation",
    "compact-design": "Compact design",
    "others": "Others",
}

NEWEST = 10
GLOSSARY = "glossary.md"
#: the search weight of a paper page (material's ``search: boost``; the other pages weigh 1): a paper's
#: key, title or authors find its page before the comparison and category tables that also list them
SEARCH_BOOST = 10
#: the weight of a paper page whose key begins another key (han2016, han2016b): the search completes every
#: word it is given as a prefix, so searching han2016 also matches han2016b, which this weight outranks
SEARCH_BOOST_PREFIX_KEY = 15


def category_title(name: str) -> str:
    return CATEGORY_TITLES.get(name, name.replace("-", " ").capitalize())


def paper_path(key: str) -> str:
    return f"papers/{key}.md"


def paper_plot_path(key: str) -> str:
    """The paper's plot (:func:`atlas.site.plots.paper_plot`), beside its page."""
    return f"papers/{key}.svg"


def paper_curves_path(key: str) -> str:
    """The paper's accuracy-compression curves against its family's control (:mod:`atlas.site.curves`)."""
    return f"papers/{key}-curves.svg"


def category_curves_path(cat: str) -> str:
    """Every curve of the category's papers against the control, one panel each."""
    return f"categories/{cat}-curves.svg"


def paper_curves_image(data: SiteData, paper: Paper) -> str | None:
    """The paper's curves plot as its page links it, or None where its record has no curve."""
    return posixpath.basename(paper_curves_path(paper.key)) if curve_outcomes(data.record(paper.key)) else None


def category_curve_records(data: SiteData, cat: str) -> list[Record]:
    """The records of the category's papers that hold curves, in catalogue order."""
    records = [data.record(p.key) for p in data.catalogue.filter(category=cat)]
    return [r for r in records if r is not None and curve_outcomes(r)]


def paper_plot_image(data: SiteData, paper: Paper) -> str | None:
    """The paper's plot as its page links it, or None where there is none (no record, no measured check)."""
    return posixpath.basename(paper_plot_path(paper.key)) if paper_panels(paper, data.record(paper.key)) else None


def category_path(name: str) -> str:
    return f"categories/{name}.md"


def quantity_anchor(name: str) -> str:
    """The glossary's anchor of a quantity."""
    return f"q-{name.replace('_', '-')}"


def rel(from_page: str, to_page: str) -> str:
    """A relative link from one docs page to another (both docs-relative ``.md`` paths)."""
    return posixpath.relpath(to_page, posixpath.dirname(from_page) or ".")


def html_href(from_page: str, to_page: str) -> str:
    """The relative URL of ``to_page`` as built (``use_directory_urls: false``), for raw HTML."""
    return rel(from_page, re.sub(r"\.md$", ".html", to_page))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#$])")


def md(text: object) -> str:
    """Text safe inside Markdown (and a table cell): ``&``, ``<``, ``>`` as HTML entities, the other
    specials (``$`` included, the math delimiter) backslash-escaped, newlines joined."""
    if text is None:
        return "–"
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


_ENTITY_SPECIAL = re.compile(r"[\\`*_\[\]|#$]")


def ent(text: object) -> str:
    """Text safe both in Markdown (a table cell included) and inside a raw HTML block: HTML-escaped, and
    the Markdown specials written as numeric character references, which neither context rewrites."""
    return _ENTITY_SPECIAL.sub(lambda m: f"&#{ord(m.group())};", h(text))


def code(text: object) -> str:
    """Inline code, safe anywhere in Markdown (a table cell included)."""
    return f"<code>{html.escape(str(text))}</code>"


def h(text: object) -> str:
    return html.escape("–" if text is None else str(text))


def fence(text: str, lang: str = "") -> str:
    """A fenced code block around ``text``, its fence longer than any backtick run in it."""
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return "\n".join([ticks + lang, *text.rstrip("\n").splitlines(), ticks])


def indent(text: str, width: int = 4) -> str:
    """Markdown ``text`` nested in a block (an admonition): every non-empty line indented."""
    return "\n".join(" " * width + ln if ln else "" for ln in str(text).splitlines())


#: the order the tables sort verdicts in (the verdict column sorts by this rank; no verdict sorts last)
VERDICT_ORDER = (*VERDICTS, "not run", RECORD_UNREADABLE)


def verdict_rank(verdict: str | None) -> str:
    """The sort key of a verdict cell: its place in :data:`VERDICT_ORDER`, empty without a verdict."""
    return str(VERDICT_ORDER.index(verdict)) if verdict in VERDICT_ORDER else ""


def verdict_badge(verdict: str | None) -> str:
    if not verdict:
        return '<span class="atlas-verdict atlas-verdict--none">not run</span>'
    slug = verdict.replace(" ", "-")
    return f'<span class="atlas-verdict atlas-verdict--{h(slug)}">{h(verdict)}</span>'


def _safe(fn: Any) -> Any:
    """``fn`` for the templates: its result is Markdown/HTML, not text to escape."""
    return functools.wraps(fn)(lambda *a, **kw: Markup(fn(*a, **kw)))


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("atlas.site", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=lambda value: "–" if value is None else value,  # as md() and h() show None
    )
    env.filters.update(md=_safe(md), ent=_safe(ent), code=_safe(code), badge=_safe(verdict_badge), fmt=fmt,
                       indent_md=_safe(indent))
    env.globals.update(
        rel=rel, html_href=html_href, paper_path=paper_path, category_path=category_path,
        category_title=category_title, fence=_safe(fence), code=_safe(code),
        badge=_safe(verdict_badge), CATEGORIES=CATEGORIES, VERDICTS=VERDICTS, GLOSSARY=GLOSSARY,
        quantity_anchor=quantity_anchor, bibtex_path=bibtex_path, verdict_rank=verdict_rank,
        RESULTS_CSV=RESULTS_CSV, RESULTS_JSON=RESULTS_JSON,
    )
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def _record_date(record: Record) -> str:
    return str(record.provenance.get("date") or "")


# ---------------------------------------------------------------------------------------------
# a claim's checks: the paper's number beside the atlas's, quantity by quantity


@dataclass(frozen=True)
class Compared:
    """One check of a claim: the paper's value of the quantity (the check's target) and the atlas's (the
    record's mean, 95% interval and n), in the quantity's unit, under its label."""

    quantity: str
    label: str  # "gain of distilled student over hard-label student (pp)"
    rule: str  # when the check passes: "distillation_gain_pp >= 0.12 (0.72 - 0.6)"
    paper: str  # "+0.72"; "≥ 0" where the paper states a direction, not a number
    atlas: str = ""  # the mean, "+0.41"; empty when the run has no value
    spread: str = ""  # " [0.28, 0.54], n=5"
    missing: str = ""  # why there is no atlas value: "not run", "not measured", "record unreadable"
    state: str = ""  # the check's result: pass, fail, inconclusive, not measured
    reason: str = ""

    @property
    def text(self) -> str:
        """``label: paper +0.72 · atlas +0.41 [0.28, 0.54], n=5`` (plain text)."""
        atlas = self.atlas + self.spread if self.atlas else self.missing
        return f"{self.label}: paper {self.paper} · atlas {atlas}"


def value_text(quantity: str, value: float) -> str:
    """A value in the quantity's unit, with its sign where the quantity is a difference."""
    text = fmt(value)
    return "+" + text if glossary.label(quantity).signed and value > 0 else text


def paper_value(check: Check) -> str:
    """The paper's value of the checked quantity. A one-sided check of a zero target without tolerance is
    a direction (the paper reports an improvement, not its size): ``≥ 0``."""
    value = value_text(check.quantity, float(check.target))
    if check.target == 0 and check.tolerance() == 0 and check.direction in ("higher", "lower"):
        return ("≥ " if check.direction == "higher" else "≤ ") + value
    return value


def atlas_spread(iv: Interval) -> str:
    """What follows the mean: the interval and n, or why there is no interval."""
    if iv.lo is None or iv.hi is None:
        return f", n={iv.n} (no interval)"
    if iv.constant:
        return f", n={iv.n} (same on every seed)"
    return f" [{fmt(iv.lo)}, {fmt(iv.hi)}], n={iv.n}"


def compared(claim: Claim, cv: ClaimVerdict | None, missing: str = "not run") -> list[Compared]:
    """The claim's checks, each with the atlas's measurement where ``cv`` (the claim judged on a record)
    has one; ``missing`` says why there is none without ``cv``."""
    judged = list(cv.checks) if cv is not None and len(cv.checks) == len(claim.checks) else []
    out = []
    for i, check in enumerate(claim.checks):
        base = {"quantity": check.quantity, "label": str(glossary.label(check.quantity)),
                "rule": check.describe(), "paper": paper_value(check)}
        if not judged:
            out.append(Compared(**base, missing=missing))
            continue
        verdict = judged[i]
        iv = verdict.interval
        if iv is None:
            out.append(Compared(**base, missing="not measured", state=verdict.state, reason=verdict.reason))
        else:
            out.append(Compared(**base, atlas=value_text(check.quantity, iv.mean), spread=atlas_spread(iv),
                                state=verdict.state, reason=verdict.reason))
    return out


def claim_compared(data: SiteData, paper: Paper, claim: Claim) -> list[Compared]:
    """:func:`compared` for a claim of the catalogue, against the paper's published record."""
    missing = ("record unreadable" if data.unreadable_record(paper.key)
               else "not measured" if data.record(paper.key) is not None else "not run")
    return compared(claim, data.claim_verdict(paper.key, claim.id), missing)


def measured_labelled(outcome: Outcome, cv: ClaimVerdict | None) -> str:
    """The judged quantities under their labels (``label +0.41 [0.28, 0.54], n=5; ...``); an outcome
    without checks lists what it recorded, by name."""
    if cv is None or not cv.checks:
        return measured_text(outcome, cv)
    parts = []
    for check in cv.checks:
        if check.interval is not None:
            iv = check.interval
            value = value_text(check.quantity, iv.mean)
            parts.append(f"{glossary.label(check.quantity)}: {value}{atlas_spread(iv)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# home


def coverage(data: SiteData) -> dict[str, int]:
    verdicts = Counter(data.verdict(k) for k in data.records)
    out = {
        "papers catalogued": len(data.catalogue),
        "with the survey's notes": sum(1 for p in data.catalogue if p.survey),
        "with reported claims": sum(1 for p in data.catalogue if p.claims),
        "with a reproduction": sum(1 for p in data.catalogue if p.key in data.reproductions),
        "with a published result": len(data.records),
    }
    for v in VERDICTS:
        out[v] = verdicts.get(v, 0)
    return out


def _category_counts(data: SiteData, cat: str) -> dict[str, Any]:
    papers = data.catalogue.filter(category=cat)
    return {
        "name": cat,
        "papers": len(papers),
        "with_code": sum(1 for p in papers if p.key in data.reproductions),
        "with_record": sum(1 for p in papers if p.key in data.records),
        "verdicts": Counter(data.verdict(p.key) for p in papers if p.key in data.records),
    }


def home_page(data: SiteData, intro: str = "") -> str:
    newest = []
    for rec in sorted(data.records.values(), key=_record_date, reverse=True)[:NEWEST]:
        measured = "; ".join(filter(None, (measured_labelled(o, data.claim_verdict(rec.key, o.claim))
                                           for o in rec.outcomes)))
        newest.append({"record": rec, "paper": data.catalogue.get(rec.key), "date": _record_date(rec)[:10],
                       "measured": measured, "verdict": data.verdict(rec.key)})
    return render("home.md.j2", page="index.md", intro=Markup(intro.strip()), coverage=coverage(data),
                  categories=[_category_counts(data, c) for c in CATEGORIES], newest=newest,
                  n_rows=len(data.records))


# ---------------------------------------------------------------------------------------------
# comparison table


def _claim_summary(claim: Claim | None) -> str:
    """The reported number and the data set it was measured on (the model is in the tooltip)."""
    if claim is None:
        return ""
    text = reported_text(claim) or claim.metric
    return f"{text} ({claim.dataset})"


def _setting(outcome: Outcome | None, record: Record | None) -> str:
    """Where the atlas measured: ``fashion-mnist, quick profile``."""
    if outcome is None or record is None:
        return ""
    return f"{outcome.dataset}, {record.profile} profile"


#: the comparison table's columns: (heading, sort type); the verdict and the numbers first, then the
#: annotated survey's columns
COMPARISON_HEADS = [
    ("Paper", "text"), ("Verdict", "num"), ("Paper vs atlas", "text"), ("Reported claim", "text"),
    ("Ref", "num"), ("Class", "text"), ("Reference", "text"), ("Conference", "text"), ("Cite", "num"),
    ("Detailed", "text"), ("Superiority", "text"), ("Weakness", "text"),
]


def _row_verdict(data: SiteData, paper: Paper, claim: Claim | None) -> str:
    """The paper's verdict over all its judged claims (its page lists each claim's own)."""
    if data.record(paper.key):
        return data.verdict(paper.key) or ""
    if data.unreadable_record(paper.key):
        return RECORD_UNREADABLE
    return "not run" if claim and claim.checks else ""


def _comparison_row(data: SiteData, paper: Paper) -> dict[str, Any]:
    claim = primary_claim(paper, data)
    record = data.record(paper.key)
    outcome = data.outcome(paper.key, claim) if claim else None
    reported = _claim_summary(claim)
    if len(paper.claims) > 1:
        reported += f" (+{len(paper.claims) - 1} more)"
    return {
        "paper": paper, "survey": paper.survey, "claim": claim, "outcome": outcome,
        "verdict": _row_verdict(data, paper, claim), "reported": reported,
        "compared": claim_compared(data, paper, claim) if claim else [], "setting": _setting(outcome, record),
    }


def comparison_page(data: SiteData) -> str:
    papers = sorted(data.catalogue, key=lambda p: (p.survey is None, p.survey.ref if p.survey else 0))
    return render("comparison.md.j2", page="comparison.md", heads=COMPARISON_HEADS, total=len(papers),
                  columns=COLUMNS, n_records=len(data.records),
                  filters=[(c, len(data.catalogue.filter(category=c))) for c in CATEGORIES],
                  verdict_options=[*VERDICTS, "not run"], rows=[_comparison_row(data, p) for p in papers])


# ---------------------------------------------------------------------------------------------
# categories


def category_index_page(data: SiteData) -> str:
    return render("category_index.md.j2", page="categories/index.md",
                  categories=[_category_counts(data, c) for c in CATEGORIES])


#: a category page's table of papers: (heading, sort type)
CATEGORY_HEADS = [
    ("Paper", "text"), ("Verdict", "num"), ("Paper vs atlas", "text"), ("Reported", "text"),
    ("Title", "text"), ("Year", "num"), ("Venue", "text"), ("Code", "text"),
]


def category_page(data: SiteData, cat: str, points: list[Point], image: str) -> str:
    papers = []
    for paper in category_order(data, cat):
        claim = primary_claim(paper, data)
        outcome = data.outcome(paper.key, claim) if claim else None
        cv = data.claim_verdict(paper.key, claim.id) if claim else None
        verdict = cv.verdict if outcome is not None and cv else _row_verdict(data, paper, claim)
        papers.append({
            "paper": paper, "reproduction": paper.key in data.reproductions, "claim": claim,
            "reported": _claim_summary(claim), "verdict": verdict,
            "compared": claim_compared(data, paper, claim) if claim else [],
            "setting": _setting(outcome, data.record(paper.key)),
        })
    plotted = [p for p in points if p.plottable]
    curve_records = category_curve_records(data, cat)
    return render(
        "category.md.j2", page=category_path(cat), title=category_title(cat), image=image, name=cat,
        curves=posixpath.basename(category_curves_path(cat)) if curve_records else None,
        curve_papers=[r.key for r in curve_records],
        counts=_category_counts(data, cat), papers=papers, heads=CATEGORY_HEADS,
        plotted=sorted(plotted, key=lambda p: (p.key, p.claim, p.source)),
        missing=[p for p in points if not p.plottable and (p.y is not None or p.x is not None)],
        n_reported=sum(1 for p in plotted if p.source == "reported"),
        n_reproduced=sum(1 for p in plotted if p.source == "reproduced"),
    )


# ---------------------------------------------------------------------------------------------
# papers


def papers_index_page(data: SiteData) -> str:
    rows = []
    for paper in data.catalogue:
        result = (verdict_badge(data.verdict(paper.key)) if data.record(paper.key)
                  else verdict_badge(RECORD_UNREADABLE) if data.unreadable_record(paper.key)
                  else "reproduction" if paper.key in data.reproductions else "")
        rows.append({"paper": paper, "result": Markup(result),
                     "authors": ", ".join(paper.authors[:3]) + (" et al." if len(paper.authors) > 3 else "")})
    return render("papers_index.md.j2", page="papers/index.md", total=len(data.catalogue), rows=rows)


def _claim_rows(data: SiteData, paper: Paper) -> list[dict[str, Any]]:
    rows = []
    for c in paper.claims:
        source = c.source + (f" (arXiv:{c.arxiv_version})" if c.arxiv_version else "")
        rows.append({
            "claim": c,
            "reported": ", ".join(filter(None, [reported_text(c) or c.metric,
                                                f"sparsity {fmt(c.sparsity)}" if c.sparsity is not None else ""])),
            "source": source, "confidence": glossary.confidence_label(c.confidence),
            "compared": claim_compared(data, paper, c),
        })
    return rows


def _provenance(record: Record) -> list[tuple[str, str, bool]]:
    """(field, value, value is Markdown already) for the provenance table."""
    p = record.provenance
    commit = p.get("commit") or "–"
    if p.get("dirty"):
        commit += " (uncommitted changes)"
    fields = [
        ("Date", p.get("date")),
        ("Profile", record.profile),
        ("Seeds", ", ".join(str(s) for s in record.seeds)),
        ("Data set", p.get("dataset")),
        ("Commit", commit),
        ("Device", p.get("device")),
        ("torch / Python", f"{p.get('torch', '–')} / {p.get('python', '–')}"),
        ("Wall time", f"{p['wall_time_s']:.1f} s" if isinstance(p.get("wall_time_s"), (int, float)) else None),
        ("Config hash", (p.get("config_hash") or record.config_hash or "")[:12] or None),
        ("Code hash", (p.get("code_hash") or record.code_hash or "")[:12] or None),
        ("Command", p.get("command") or None),
        ("Record", f"results/{record.key}/{record.profile}.json"),
    ]
    return [(k, str(v), k in ("Command", "Record")) for k, v in fields if v not in (None, "")]


def _outcome(paper: Paper, outcome: Outcome, cv: ClaimVerdict | None) -> dict[str, Any]:
    try:
        claim = paper.claim(outcome.claim)
        reported, setting, source = reported_text(claim) or claim.metric, f"{claim.model} / {claim.dataset}", claim.source
        targets = {check.quantity: paper_value(check) for check in claim.checks}
    except CatalogueError:  # a record for a claim the catalogue no longer has
        reported, setting, source, targets = "–", "–", "", {}
    checks = []
    for c in cv.checks if cv is not None else []:
        iv = c.interval
        checks.append({
            "check": c, "label": str(glossary.label(c.quantity)), "paper": targets.get(c.quantity, "–"),
            "mean": "–" if iv is None else value_text(c.quantity, iv.mean),
            "n": "–" if iv is None else str(iv.n),
            "interval": "–" if iv is None or iv.lo is None else f"[{fmt(iv.lo)}, {fmt(iv.hi)}]",
            "result": c.state + (f" ({c.reason})" if c.reason else ""),
        })
    metrics = [{"name": name, "mean": fmt(m.interval.mean),
                "interval": "–" if m.interval.lo is None else f"[{fmt(m.interval.lo)}, {fmt(m.interval.hi)}]",
                "per_seed": ", ".join(fmt(v) for v in m.values)} for name, m in outcome.metrics.items()]
    return {"outcome": outcome, "verdict": cv.verdict if cv else None, "reported": reported, "setting": setting,
            "source": source, "checks": checks, "notes": cv.notes if cv is not None else [], "metrics": metrics,
            "measured": measured_labelled(outcome, cv) or "–"}


def _settings(profiles: dict[str, dict[str, Any]], names: list[str]) -> list[tuple[str, list[str]]]:
    """Each setting of the profiles (``student.steps`` for a section's), with its value in each
    profile as JSON (``–`` where a profile lacks it)."""
    flat: dict[str, dict[str, str]] = {}

    def walk(prefix: str, values: dict[str, Any], profile: str) -> None:
        for name, value in values.items():
            if isinstance(value, dict) and value:
                walk(f"{prefix}{name}.", value, profile)
            else:
                flat.setdefault(prefix + name, {})[profile] = json.dumps(value)

    for profile in names:
        walk("", profiles[profile], profile)
    return [(name, [per.get(p, "–") for p in names]) for name, per in sorted(flat.items())]


def category_order(data: SiteData, cat: str) -> list[Paper]:
    """A category's papers in the order its page lists them: by year, then key."""
    return sorted(data.catalogue.filter(category=cat), key=lambda p: (p.year, p.key))


def neighbours(data: SiteData, paper: Paper) -> tuple[Paper | None, Paper | None]:
    """The papers before and after ``paper`` in its first category's list."""
    order = [p.key for p in category_order(data, paper.categories[0])]
    i = order.index(paper.key)
    before = data.catalogue.get(order[i - 1]) if i > 0 else None
    after = data.catalogue.get(order[i + 1]) if i + 1 < len(order) else None
    return before, after


def survey_title(paper: Paper) -> str | None:
    """The title the survey lists the paper under, where it differs from the paper's own (more than in
    case, spacing or punctuation)."""
    listed = getattr(paper, "survey_title", None)  # optional field of the catalogue
    if not listed or normalise_title(listed) == normalise_title(paper.title):
        return None
    return str(listed)


def same_work(data: SiteData, paper: Paper) -> list[Paper]:
    """The other catalogue entries of the same work (a preprint and its published version)."""
    return [data.catalogue.get(k) for k in getattr(paper, "same_work_as", ()) or () if k in data.catalogue]


def search_boost(data: SiteData, paper: Paper) -> int:
    """The paper page's weight in the site's search (:data:`SEARCH_BOOST`)."""
    begins_another = any(p.key != paper.key and p.key.startswith(paper.key) for p in data.catalogue)
    return SEARCH_BOOST_PREFIX_KEY if begins_another else SEARCH_BOOST


def paper_page(data: SiteData, paper: Paper) -> str:
    page = paper_path(paper.key)
    record = data.record(paper.key)
    entry = data.reproductions.get(paper.key)
    reproduction = None
    if entry is not None:
        names = profile_names(entry)
        reproduction = {
            "entry": entry, "profiles": names, "doc": Markup(rst_to_markdown(entry.doc)) if entry.doc else "",
            "settings": _settings(entry.profiles, names),
            "commands": "\n".join([f"atlas reproduce {paper.key}"]
                                  + [f"atlas reproduce {paper.key} --profile {p}" for p in names if p != "quick"]),
            "source": data.source(entry),
            "links": {
                "builds_on": [(k, k in data.catalogue) for k in entry.builds_on],
                "built_upon_by": [(k, k in data.catalogue) for k in entry.built_upon_by],
            },
        }
    links = []
    if paper.arxiv:
        links.append((f"https://arxiv.org/abs/{paper.arxiv}", f"arXiv:{paper.arxiv}"))
    if paper.doi:
        links.append((f"https://doi.org/{paper.doi}", f"doi:{paper.doi}"))
    if paper.url:
        links.append((paper.url, paper.url))
    before, after = neighbours(data, paper)
    return render(
        "paper.md.j2", page=page, paper=paper, record=record, search_boost=search_boost(data, paper), links=links,
        before=before, after=after,
        survey_title=survey_title(paper), same_work=same_work(data, paper),
        verdict=data.verdict(paper.key), unreadable=data.unreadable.get(paper.key) if record is None else None,
        broken=data.broken.get(paper.key), reproduction=reproduction,
        claims=_claim_rows(data, paper), provenance=_provenance(record) if record else [],
        outcomes=[_outcome(paper, o, data.claim_verdict(paper.key, o.claim)) for o in record.outcomes]
        if record else [],
        bibtex=to_bibtex([paper]).strip(), plot=paper_plot_image(data, paper),
        curves=paper_curves_image(data, paper), curve_labels=_curve_labels(record),
    )


def _curve_labels(record: Record | None) -> list[str]:
    """The control curves' labels (what the method is compared with), in order of appearance."""
    labels = [c.label for o in curve_outcomes(record) for c in o.curves if c.control]
    return list(dict.fromkeys(labels))


# ---------------------------------------------------------------------------------------------
# glossary


def glossary_page(data: SiteData) -> str:
    checked = glossary.checked_quantities(data.catalogue)
    quantities = [{"name": q, "definition": glossary.QUANTITIES.get(q), "label": glossary.LABELS.get(q),
                   "papers": keys} for q, keys in checked.items()]
    plotted = [{"name": q, "definition": glossary.QUANTITIES[q], "label": glossary.LABELS.get(q)}
               for q in glossary.PLOT_QUANTITIES if q not in checked]
    return render("glossary.md.j2", page=GLOSSARY, quantities=quantities, plotted=plotted,
                  confidences=glossary.confidence_levels())
