"""The site's pages as Markdown (and, for the big comparison table, HTML) text.

Every function here is pure: it takes the :class:`~atlas.site.data.SiteData` and returns text, so the
pages can be tested without MkDocs. Paths are relative to the docs folder (``papers/han2015.md``);
links between generated pages are written as Markdown links to ``.md`` files (MkDocs checks and
rewrites them) except inside raw HTML, where :func:`html_href` computes the built ``.html`` path.
"""

from __future__ import annotations

import html
import posixpath
import re
from collections import Counter

from atlas.bibtex import to_bibtex
from atlas.catalogue import CATEGORIES, Claim, Paper
from atlas.errors import CatalogueError
from atlas.report import RECORD_UNREADABLE, fmt, measured_text, reported_text, target_text
from atlas.results import Outcome, Record
from atlas.site.data import SiteData, primary_claim
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


def category_title(name: str) -> str:
    return CATEGORY_TITLES.get(name, name.replace("-", " ").capitalize())


def paper_path(key: str) -> str:
    return f"papers/{key}.md"


def category_path(name: str) -> str:
    return f"categories/{name}.md"


def rel(from_page: str, to_page: str) -> str:
    """A relative link from one docs page to another (both docs-relative ``.md`` paths)."""
    return posixpath.relpath(to_page, posixpath.dirname(from_page) or ".")


def html_href(from_page: str, to_page: str) -> str:
    """The relative URL of ``to_page`` as built (``use_directory_urls: false``), for raw HTML."""
    return rel(from_page, re.sub(r"\.md$", ".html", to_page))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def md(text: object) -> str:
    """Text safe inside Markdown (and a table cell): specials backslash-escaped, newlines joined."""
    if text is None:
        return "–"
    s = str(text).replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)


def code(text: object) -> str:
    """Inline code, safe anywhere in Markdown (a table cell included)."""
    return f"<code>{html.escape(str(text))}</code>"


def h(text: object) -> str:
    return html.escape("–" if text is None else str(text))


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; cells must already be Markdown (use :func:`md` for plain text)."""
    if not rows:
        return "_None._\n"
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(c if c != "" else " " for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def verdict_badge(verdict: str | None) -> str:
    if not verdict:
        return '<span class="atlas-verdict atlas-verdict--none">not run</span>'
    slug = verdict.replace(" ", "-")
    return f'<span class="atlas-verdict atlas-verdict--{h(slug)}">{h(verdict)}</span>'


def _record_date(record: Record) -> str:
    return str(record.provenance.get("date") or "")


def paper_line_md(paper: Paper, from_page: str) -> str:
    return f"[{md(paper.key)}]({rel(from_page, paper_path(paper.key))})"


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


def home_page(data: SiteData, intro: str = "") -> str:
    page = "index.md"
    cov = coverage(data)
    lines: list[str] = []
    if intro.strip():
        lines += [intro.strip(), ""]
    else:
        lines += [
            "# Compression Atlas",
            "",
            "A reproducibility atlas for the deep-network compression literature: every paper of the "
            "survey, what it reports, and what a shared harness measures when the method is run again.",
            "",
        ]
    lines += [
        "## Coverage at a glance",
        "",
        '<div class="atlas-cards" markdown>',
        "",
    ]
    for label, value in cov.items():
        cls = f" atlas-card--{label.replace(' ', '-')}" if label in VERDICTS else ""
        lines.append(f'<div class="atlas-card{cls}"><span class="atlas-card__n">{value}</span>'
                     f'<span class="atlas-card__label">{h(label)}</span></div>')
    lines += ["", "</div>", ""]
    rows = []
    for cat in CATEGORIES:
        papers = data.catalogue.filter(category=cat)
        verdicts = Counter(data.verdict(p.key) for p in papers if p.key in data.records)
        rows.append([
            f"[{md(category_title(cat))}]({rel(page, category_path(cat))})",
            str(len(papers)),
            str(sum(1 for p in papers if p.key in data.reproductions)),
            *[str(verdicts.get(v, 0)) for v in VERDICTS],
        ])
    lines += [md_table(["Category", "Papers", "With code", *[v.capitalize() for v in VERDICTS]], rows), ""]
    lines += [
        f"See the [comparison table]({rel(page, 'comparison.md')}) for every paper's reported and "
        f"reproduced numbers side by side, or [all papers]({rel(page, 'papers/index.md')}).",
        "",
        "## Newest results",
        "",
    ]
    newest = sorted(data.records.values(), key=_record_date, reverse=True)[:NEWEST]
    if not newest:
        lines += ["No published results yet: run `atlas reproduce KEY` and commit `results/KEY/quick.json`.", ""]
    else:
        rows = []
        for rec in newest:
            paper = data.catalogue.get(rec.key)
            measured = "; ".join(filter(None, (measured_text(o, data.claim_verdict(rec.key, o.claim))
                                               for o in rec.outcomes)))
            rows.append([
                md(_record_date(rec)[:10] or "–"),
                paper_line_md(paper, page),
                md(paper.title),
                md(rec.profile),
                md(measured or "–"),
                verdict_badge(data.verdict(rec.key)),
            ])
        lines += [md_table(["Date", "Paper", "Title", "Profile", "Measured", "Verdict"], rows), ""]
    lines += [
        "## How to use it",
        "",
        "```console",
        "$ pip install -e '.[dev]'                       # the atlas command, the harness, the site",
        "$ atlas list --category pruning                 # papers of a category",
        "$ atlas show han2015                            # one paper: notes, claims, checks",
        "$ atlas reproduce hinton2015 --profile quick    # rerun a paper on the harness, with a verdict",
        "$ atlas compare han2015 han2016 --format latex --bib refs.bib   # a related-work table",
        "$ atlas cite --category quantization            # BibTeX",
        "$ mkdocs build                                  # this site, into public/",
        "```",
        "",
        "Verdicts compare each reported claim with the harness's measurement by the tolerance the "
        "claim states in `papers.yaml`, judged on the 95% Student-t interval over seeds (n seeds, "
        "shown with every number): a check passes when the whole interval is on the passing side of "
        "its threshold, fails when it is wholly on the failing side, and is otherwise inconclusive. "
        f"Every check passes: {verdict_badge('reproduced')}; some pass, some fail: {verdict_badge('partly')}; "
        f"some fail, none passes: {verdict_badge('not reproduced')}; none fails, some inconclusive: "
        f"{verdict_badge('inconclusive')}; the run measured nothing a check names: "
        f"{verdict_badge('not comparable')}. An accuracy check cannot fail when the run's baseline is "
        "more than 1 pp below its model's reference accuracy (a long schedule, `atlas calibrate`): "
        "it is inconclusive, \"baseline not converged\". Verdicts are computed when a page is built, "
        "from the recorded per-seed values and the claims' current checks.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# comparison table


def _claim_summary(claim: Claim | None) -> str:
    """The reported number and the data set it was measured on (the model is in the tooltip)."""
    if claim is None:
        return ""
    text = reported_text(claim) or claim.metric
    return f"{text} ({claim.dataset})"


def _outcome_summary(outcome: Outcome | None, record: Record | None, cv: ClaimVerdict | None = None) -> str:
    if outcome is None or record is None:
        return ""
    measured = measured_text(outcome, cv) or "measured, no check quantity"
    return f"{measured} ({outcome.dataset}, {record.profile} profile)"


def comparison_page(data: SiteData) -> str:
    page = "comparison.md"
    papers = sorted(data.catalogue, key=lambda p: (p.survey is None, p.survey.ref if p.survey else 0))
    heads = [
        ("Paper", "text"), ("Ref", "num"), ("Class", "text"), ("Reference", "text"), ("Conference", "text"),
        ("Cite", "num"), ("Detailed", "text"), ("Superiority", "text"), ("Weakness", "text"),
        ("Reported claim", "text"), ("Reproduced", "text"), ("Verdict", "text"),
    ]
    out = [
        "---",
        "hide:",
        "  - navigation",
        "  - toc",
        "---",
        "",
        "# Comparison table",
        "",
        "The annotated survey's table (Class, Reference, Conference, Cite, Detailed, Superiority, "
        "Weakness) for every paper of the atlas, extended with the paper's own reported claim, the "
        "number the harness reproduced and the verdict. Papers the survey's table lacks have empty "
        "survey columns. Click a column heading to sort; filter by category, verdict or text. "
        "Reported numbers are the paper's, on its own model and data set; reproduced numbers are the "
        "harness's, on the setting named beside them.",
        "",
        '<div class="atlas-filters">',
        '<label>Category <select id="atlas-filter-category"><option value="">all</option>',
    ]
    for cat in CATEGORIES:
        n = len(data.catalogue.filter(category=cat))
        out.append(f'<option value="{h(cat)}">{h(category_title(cat))} ({n})</option>')
    out += [
        "</select></label>",
        '<label>Verdict <select id="atlas-filter-verdict"><option value="">any</option>',
        *[f'<option value="{h(v)}">{h(v)}</option>' for v in (*VERDICTS, "not run")],
        "</select></label>",
        '<label>Search <input id="atlas-filter-text" type="search" placeholder="key, title, note…"></label>',
        f'<span id="atlas-filter-count" class="atlas-filter-count">{len(papers)} of {len(papers)} papers</span>',
        "</div>",
        "",
        '<div class="md-typeset__scrollwrap"><div class="md-typeset__table">',
        '<table id="atlas-comparison" class="atlas-table atlas-sortable">',
        "<thead><tr>",
    ]
    for i, (name, kind) in enumerate(heads):
        out.append(f'<th data-col="{i}" data-type="{kind}" tabindex="0" role="button" '
                   f'title="sort by {h(name.lower())}">{h(name)}</th>')
    out += ["</tr></thead>", "<tbody>"]
    for paper in papers:
        claim = primary_claim(paper, data)
        record = data.record(paper.key)
        outcome = data.outcome(paper.key, claim) if claim else None
        # The paper's verdict over all its judged claims (the page lists each claim's own verdict).
        verdict = data.verdict(paper.key) if record else (
            RECORD_UNREADABLE if data.unreadable_record(paper.key) else "not run" if claim and claim.checks else "")
        cv = data.claim_verdict(paper.key, claim.id) if claim else None
        more = len(paper.claims) - 1
        reported = _claim_summary(claim)
        if more > 0:
            reported += f" (+{more} more)"
        s = paper.survey
        href = h(html_href(page, paper_path(paper.key)))
        cells = [
            f'<a href="{href}">{h(paper.key)}</a>',
            (f"[{s.ref}]" if s else "", s.ref if s else ""),
            h(s.klass) if s else "",
            f'<a href="{href}">{h(paper.title)}</a>',
            h(s.conference if s else paper.venue.short),
            (h(s.cite) if s and s.cite is not None else "", s.cite if s and s.cite is not None else ""),
            h(s.detailed) if s else "",
            h(s.superiority) if s else "",
            h(s.weakness) if s else "",
            (f'<span title="{h(f"{claim.model}; {claim.source}")}">{h(reported)}</span>' if claim else ""),
            (f'<span title="{h(outcome.model)}">{h(_outcome_summary(outcome, record, cv))}</span>' if outcome else ""),
            verdict_badge(verdict) if verdict else "",
        ]
        row = [f'<tr data-categories="{h(" ".join(paper.categories))}" data-verdict="{h(verdict)}">']
        for cell in cells:
            if isinstance(cell, tuple):
                row.append(f'<td data-sort="{h(cell[1])}">{h(cell[0])}</td>')
            else:
                row.append(f"<td>{cell}</td>")
        row.append("</tr>")
        out.append("".join(row))
    out += ["</tbody>", "</table>", "</div></div>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# categories


def category_index_page(data: SiteData) -> str:
    page = "categories/index.md"
    rows = []
    for cat in CATEGORIES:
        papers = data.catalogue.filter(category=cat)
        rows.append([
            f"[{md(category_title(cat))}]({rel(page, category_path(cat))})",
            str(len(papers)),
            str(sum(1 for p in papers if p.key in data.reproductions)),
            str(sum(1 for p in papers if p.key in data.records)),
        ])
    return "\n".join([
        "# Categories",
        "",
        "The survey's sections. A paper may sit in more than one.",
        "",
        md_table(["Category", "Papers", "Reproductions", "Published results"], rows),
    ])


def category_page(data: SiteData, cat: str, points: list, image: str) -> str:
    from atlas.site.plots import Point  # noqa: F401  (type of ``points``)

    page = category_path(cat)
    papers = data.catalogue.filter(category=cat)
    title = category_title(cat)
    plotted = [p for p in points if p.plottable]
    missing = [p for p in points if not p.plottable and (p.y is not None or p.x is not None)]
    n_rep = sum(1 for p in plotted if p.source == "reported")
    n_repro = sum(1 for p in plotted if p.source == "reproduced")
    lines = [
        f"# {md(title)}",
        "",
        f"{len(papers)} papers; {sum(1 for p in papers if p.key in data.reproductions)} with a reproduction, "
        f"{sum(1 for p in papers if p.key in data.records)} with a published result.",
        "",
        "## Accuracy change against compression",
        "",
        f'<figure class="atlas-plot" markdown>\n![{md(title)}: accuracy change against compression]({image})\n'
        f"<figcaption>{n_rep} reported and {n_repro} reproduced points.</figcaption>\n</figure>",
        "",
        "**Hollow markers are reported points**: the paper's own numbers, on its own model and data set "
        "(often ImageNet or CIFAR), as `papers.yaml` records them. **Filled markers are reproduced "
        "points**: what the harness measured on its own (smaller) setting, named in the table below. "
        "One marker shape and colour per paper; a thin line joins a claim's reported and reproduced "
        "points. The x axis is the compression ratio (the speed-up where the paper states no ratio); "
        "the y axis is the accuracy change in percentage points (for distillation, the distilled "
        "student against the same student trained on hard labels). The two kinds of points measure "
        "the same quantity on different settings: compare the shape, not the absolute values.",
        "",
    ]
    if plotted:
        rows = []
        for p in sorted(plotted, key=lambda p: (p.key, p.claim, p.source)):
            rows.append([
                f"[{md(p.key)}]({rel(page, paper_path(p.key))})", md(p.claim), md(p.source), md(p.dataset),
                f"{fmt(p.x)}× {md(p.x_kind)}", f"{p.y:+.2f}",
            ])
        lines += [
            '??? info "The plotted points"',
            "",
            *["    " + line for line in md_table(
                ["Paper", "Claim", "Source", "Data set", "x", "Accuracy change (pp)"], rows).splitlines()],
            "",
        ]
    if missing:
        rows = [[f"[{md(p.key)}]({rel(page, paper_path(p.key))})", md(p.claim), md(p.source),
                 "no compression ratio or speed-up" if p.x is None else "no accuracy change"] for p in missing]
        lines += [
            '??? note "Points not plotted (one coordinate unknown)"',
            "",
            *["    " + line for line in md_table(["Paper", "Claim", "Source", "Missing"], rows).splitlines()],
            "",
        ]
    lines += ["## Papers", ""]
    rows = []
    for paper in sorted(papers, key=lambda p: (p.year, p.key)):
        claim = primary_claim(paper, data)
        outcome = data.outcome(paper.key, claim) if claim else None
        record = data.record(paper.key)
        rows.append([
            paper_line_md(paper, page),
            md(paper.title),
            str(paper.year),
            md(paper.venue.short),
            "yes" if paper.key in data.reproductions else "",
            md(_claim_summary(claim)) if claim else "",
            md(_outcome_summary(outcome, record, data.claim_verdict(paper.key, claim.id) if claim else None)),
            verdict_badge(data.claim_verdict(paper.key, claim.id).verdict) if outcome and claim
            and data.claim_verdict(paper.key, claim.id) else "",
        ])
    lines += [md_table(["Paper", "Title", "Year", "Venue", "Reproduction", "Reported", "Reproduced", "Verdict"],
                       rows), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# papers


def papers_index_page(data: SiteData) -> str:
    page = "papers/index.md"
    rows = []
    for paper in data.catalogue:
        record = data.record(paper.key)
        rows.append([
            paper_line_md(paper, page),
            md(paper.title),
            md(", ".join(paper.authors[:3]) + (" et al." if len(paper.authors) > 3 else "")),
            str(paper.year),
            md(paper.venue.short),
            ", ".join(f"[{md(c)}]({rel(page, category_path(c))})" for c in paper.categories),
            verdict_badge(data.verdict(paper.key)) if record else (
                verdict_badge(RECORD_UNREADABLE) if data.unreadable_record(paper.key)
                else "reproduction" if paper.key in data.reproductions else ""),
        ])
    return "\n".join([
        "# All papers",
        "",
        f"{len(data.catalogue)} papers, in the order of `papers.yaml`.",
        "",
        md_table(["Key", "Title", "Authors", "Year", "Venue", "Categories", "Result"], rows),
    ])


def _fence(text: str, lang: str = "", indent: str = "") -> list[str]:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return [indent + ticks + lang, *[(indent + ln) if ln else "" for ln in text.rstrip("\n").splitlines()],
            indent + ticks]


def _claims_table(paper: Paper) -> list[str]:
    rows = []
    for c in paper.claims:
        source = c.source + (f" (arXiv:{c.arxiv_version})" if c.arxiv_version else "")
        reported = ", ".join(filter(None, [
            reported_text(c) or c.metric,
            f"sparsity {fmt(c.sparsity)}" if c.sparsity is not None else "",
        ]))
        rows.append([
            code(c.id),
            md(f"{c.model} / {c.dataset}"),
            md(reported),
            md(f"{source}; confidence: {c.confidence}"),
            md(target_text(c) or "none (not comparable)"),
        ])
    out = [md_table(["Claim", "Model / data set", "Reported", "Source", "Checks"], rows)]
    notes = [(c.id, c.note) for c in paper.claims if c.note]
    if notes:
        out += ["", "Notes:", "", *[f"- {code(cid)}: {md(note)}" for cid, note in notes], ""]
    return out


def _provenance_table(record: Record) -> list[str]:
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
        ("Command", f"`{p['command']}`" if p.get("command") else None),
        ("Record", f"`results/{record.key}/{record.profile}.json`"),
    ]
    rows = [[k, v if k in ("Command", "Record") else md(v)] for k, v in fields if v not in (None, "")]
    return [md_table(["Provenance", ""], rows)]


def _outcome_block(paper: Paper, outcome: Outcome, cv: ClaimVerdict | None) -> list[str]:
    try:
        claim = paper.claim(outcome.claim)
        reported = reported_text(claim) or claim.metric
        setting = f"{claim.model} / {claim.dataset}"
        source = claim.source
    except CatalogueError:  # a record for a claim the catalogue no longer has
        reported, setting, source = "–", "–", ""
    lines = [
        f"### {code(outcome.claim)} {verdict_badge(cv.verdict if cv else None)}",
        "",
        md_table(["", "Setting", "Number", "Note"], [
            ["Reported", md(setting), md(reported), md(f"the paper, {source}" if source else "the paper")],
            ["Reproduced", md(f"{outcome.model} / {outcome.dataset}"), md(measured_text(outcome, cv) or "–"),
             md(f"harness differs: {outcome.differs}" if outcome.differs else "the harness")],
        ]),
    ]
    if cv is not None and cv.checks:
        rows = []
        for c in cv.checks:
            iv = c.interval
            ci = "–" if iv is None or iv.lo is None else f"[{fmt(iv.lo)}, {fmt(iv.hi)}]"
            rows.append([
                code(c.quantity), md(c.rule), "–" if iv is None else fmt(iv.mean), md(ci),
                "–" if iv is None else str(iv.n), md(c.state + (f" ({c.reason})" if c.reason else "")),
            ])
        lines += ["", md_table(["Quantity", "Check", "Mean", "95% interval", "n", "Result"], rows)]
    if cv is not None and cv.notes:
        lines += ["", *[f"- {md(n)}" for n in cv.notes]]
    metric_rows = []
    for name, metric in outcome.metrics.items():
        iv = metric.interval
        ci = "–" if iv.lo is None else f"[{fmt(iv.lo)}, {fmt(iv.hi)}]"
        metric_rows.append([code(name), fmt(iv.mean), ci, ", ".join(fmt(v) for v in metric.values)])
    if metric_rows:
        lines += ["", '??? abstract "Every metric the run recorded"', "",
                  *["    " + ln for ln in md_table(["Metric", "Mean", "95% interval", "Per seed"],
                                                   metric_rows).splitlines()], ""]
    if outcome.notes:
        lines += ["", md(outcome.notes), ""]
    return lines


def paper_page(data: SiteData, paper: Paper) -> str:
    page = paper_path(paper.key)
    lines = [
        "---",
        f"title: {paper.key}",
        "hide:",
        "  - navigation",
        "---",
        "",
        f"# {md(paper.title)}",
        "",
        f"**{md(', '.join(paper.authors))}**  ",
        f"{md(paper.venue.name)} ({md(paper.venue.short)}, {md(paper.venue.type)}), {paper.year}",
        "",
    ]
    def a(href: str, text: str) -> str:
        return f'<a href="{h(href)}">{h(text)}</a>'

    facts = [
        ["Key", code(paper.key)],
        ["Categories", ", ".join(a(html_href(page, category_path(c)), category_title(c)) for c in paper.categories)],
        ["Kind", h(paper.kind + (f": {paper.kind_note}" if paper.kind_note else ""))],
    ]
    links = []
    if paper.arxiv:
        links.append(a(f"https://arxiv.org/abs/{paper.arxiv}", f"arXiv:{paper.arxiv}"))
    if paper.doi:
        links.append(a(f"https://doi.org/{paper.doi}", f"doi:{paper.doi}"))
    if paper.url:
        links.append(a(paper.url, paper.url))
    facts.append(["Links", " · ".join(links) or "–"])
    if paper.listed_in:
        facts.append(["Listed in", h(", ".join(paper.listed_in))])
    record = data.record(paper.key)
    facts.append(["Result", verdict_badge(data.verdict(paper.key)) + f" ({h(record.profile)} profile, "
                  f"n={len(record.seeds)} seeds)" if record
                  else verdict_badge(RECORD_UNREADABLE) if data.unreadable_record(paper.key)
                  else ("not run yet" if paper.key in data.reproductions else "no reproduction yet")])
    lines += ['<table class="atlas-facts">',
              *[f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts],
              "</table>", ""]

    if paper.survey is not None:
        s = paper.survey
        lines += [
            f"## The survey's notes [{s.ref}]",
            "",
            md_table(["Class", "Conference", "Cite", "Detailed", "Superiority", "Weakness"], [[
                md(s.klass), md(s.conference), "–" if s.cite is None else str(s.cite),
                md(s.detailed), md(s.superiority), md(s.weakness),
            ]]),
            "",
        ]

    lines += ["## Reported claims", ""]
    lines += _claims_table(paper) if paper.claims else ["The catalogue records no claims for this paper.", ""]
    lines.append("")

    lines += ["## Reproduction", ""]
    info = data.reproductions.get(paper.key)
    if record is not None:
        lines += [
            f"Published result: {verdict_badge(data.verdict(paper.key))} on the **{md(record.profile)}** "
            f"profile, n={len(record.seeds)} seeds ({md(', '.join(str(s) for s in record.seeds))}); "
            "numbers are means with their 95% interval over the seeds.",
            "",
        ]
        for outcome in record.outcomes:
            lines += _outcome_block(paper, outcome, data.claim_verdict(paper.key, outcome.claim))
            lines.append("")
        lines += _provenance_table(record)
        lines.append("")
    elif data.unreadable_record(paper.key):
        lines += [f"Published result: {verdict_badge(RECORD_UNREADABLE)}. The site build could not read it:",
                  "", "```text", data.unreadable[paper.key], "```", ""]
    elif info is not None:
        lines += ["No published result yet.", ""]
    if info is not None:
        profiles = info.profiles or ["smoke", "quick"]
        lines += [
            "Reproduce it:",
            "",
            *_fence("\n".join([f"atlas reproduce {paper.key}"]
                              + [f"atlas reproduce {paper.key} --profile {p}" for p in profiles if p != "quick"]),
                    "console"),
            "",
            f"Implementation: `{info.relpath}`" + (f" (profiles: {', '.join(profiles)})" if profiles else ""),
            "",
        ]
        if info.doc:
            lines += [f'<div class="atlas-docstring">{h(info.doc)}</div>', ""]
        if info.builds_on:
            lines.append("Builds on: " + ", ".join(
                f"[{md(k)}]({rel(page, paper_path(k))})" if k in data.catalogue else f"`{md(k)}`"
                for k in info.builds_on) + "  ")
        if info.built_upon_by:
            lines.append("Built upon by: " + ", ".join(
                f"[{md(k)}]({rel(page, paper_path(k))})" if k in data.catalogue else f"`{md(k)}`"
                for k in info.built_upon_by))
        lines += [
            "",
            f'??? quote "Source: {info.relpath}"',
            "",
            *_fence(info.source, "python", indent="    "),
            "",
        ]
    else:
        lines += [
            f"No reproduction yet. Adding `reproductions/{paper.key}.py` (see CONTRIBUTING.md) makes "
            f"`atlas reproduce {paper.key}` run it and this page show the result.",
            "",
        ]

    lines += ["## BibTeX", "", *_fence(to_bibtex([paper]).strip(), "bibtex"), ""]
    return "\n".join(lines)
