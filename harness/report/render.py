"""A report as Markdown (plots as PNG files beside it) and as one self-contained HTML page
(the same content, plots embedded as ``data:`` URIs). Both come from one list of blocks."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from harness.report import verdict as V
from harness.report.build import ClaimReport, InvariantReport, Report, display_path
from harness.report.extract import describe
from harness.report.refs import FunctionRef
from harness.report.runner import ExperimentOutcome
from harness.report.seedtext import default_token
from harness.safeio import write_atomic


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str


@dataclass
class Quote:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    name: str  # file name under plots/
    png: bytes
    alt: str


Block = Heading | Para | Quote | Bullets | Table | Image

VERDICT_MARK = {
    V.HOLDS: "**holds**",
    V.DIFFERS: "**differs**",
    V.NOT_RUN: "*not run*",
    V.NOT_MEASURED: "*not measured*",
    V.NOT_MEASURABLE: "*not measurable here*",
}


def code(s: str) -> str:
    return "`" + s.replace("`", "'") + "`"


def cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def fref(r: FunctionRef) -> str:
    if r.file is None:
        return f"{code(r.name)} (**{r.problem}**)"
    return f"{code(r.name)} in {code(f'{r.file}:{r.line}')}"


def seed_line(cr: ClaimReport) -> str:
    parts = []
    for sv in cr.seed_values:
        val = V.fmt_value(sv.value, exact=True)
        if sv.token is not None and sv.token != _default_token(sv.value):
            val += f" (“{sv.token}”)"
        if sv.found is False:
            val += " **(not in the quote)**"
        parts.append(f"{sv.key} {val}")
    return ", ".join(parts)


def _default_token(v: object) -> str:
    return default_token(v) if isinstance(v, int | float) and not isinstance(v, bool) else ""


def measured_cell(cr: ClaimReport) -> str:
    out = []
    for m in cr.verdict.measures:
        if any(v.status != V.NOT_MEASURED for v in m.values):
            vals = ", ".join(
                f"{v.key} {V.fmt_value(v.measured)}" for v in m.values if v.status != V.NOT_MEASURED
            )
            out.append(f"{m.label}: {vals}")
        else:
            out.append(f"{m.label}: {m.status}")
    return "; ".join(out) or "—"


def claim_blocks(cr: ClaimReport, rep: Report) -> list[Block]:
    c = cr.claim
    b: list[Block] = [Heading(3, f"{c.id}: {c.text}", anchor=f"claim-{c.id}")]
    src = rep.series.seed.file
    if cr.quote_found is None:
        qnote = f"seed file {code(str(rep.seed_path))} not available: quote not verified"
    elif cr.quote_found:
        qnote = f"verbatim in {code(src)}"
    else:
        qnote = f"**NOT FOUND in {code(src)}**"
    b.append(Quote(c.quote))
    b.append(Para(f"— the seed ({qnote})"))
    items = [f"**Seed:** {seed_line(cr)} ({c.unit})"]
    if cr.model:
        stmts = []
        for r in cr.model:
            s = fref(r)
            if r.doc:
                s += f": “{r.doc}”"
            stmts.append(s)
        items.append("**Model:** " + "; ".join(stmts))
    else:
        items.append("**Model:** none named")
    checks = []
    for ms in c.measures:
        e = rep.series.experiments[ms.experiment]
        checks.append(f"{ms.label}: experiment {code(e.id)} ({code(e.command_line(rep.kernel))})")
    for t, ok in cr.tests:
        checks.append(f"test {code(t)}" + ("" if ok else " **(not defined)**"))
    if c.not_measurable:
        checks.append(f"not measurable here: {c.not_measurable}")
    items.append("**Checked by:** " + ("; ".join(checks) or "nothing yet"))
    items.append(
        f"**Verdict:** {VERDICT_MARK.get(cr.verdict.status, cr.verdict.status)} — "
        f"{cr.verdict.summary}"
    )
    b.append(Bullets(items))
    rows = []
    for m, spec in zip(cr.verdict.measures, c.measures, strict=True):
        results = code(m.results_file) if m.results_file else "—"
        if not m.values:
            why = f"{VERDICT_MARK.get(m.status, m.status)}: {m.reason}"
            rows.append([m.label, ", ".join(spec.values), "", "—", why, "", results])
            continue
        for v in m.values:
            mark = VERDICT_MARK[v.status]
            if v.status == V.NOT_MEASURED:
                verdict = f"{mark}: {v.detail}"
            else:
                verdict = mark + (f" ({v.detail})" if v.detail else "")
            rows.append(
                [
                    m.label,
                    v.key,
                    V.fmt_value(v.seed, exact=True),
                    V.fmt_value(v.measured),
                    verdict,
                    code(describe(spec.values[v.key])),
                    results,
                ]
            )
        for key, val in m.shown:
            rows.append(
                [m.label, key, "—", V.fmt_value(val), "(context)", code(describe(spec.show[key])),
                 results]
            )  # fmt: skip
    if rows:
        b.append(
            Table(
                [
                    "measurement",
                    "value",
                    "seed",
                    "measured",
                    "verdict",
                    "read from",
                    "results file",
                ],
                rows,
            )
        )
    for ms in c.measures:
        tol = []
        if ms.tolerance_rel:
            tol.append(f"±{100 * ms.tolerance_rel:g} %")
        if ms.tolerance_abs:
            tol.append(f"±{ms.tolerance_abs:g}")
        if tol:
            b.append(Para(f"Tolerance ({ms.label}): {' or '.join(tol)}: {ms.tolerance_why}"))
    for ms in c.measures:
        if ms.note:
            b.append(Para(f"*{ms.label}:* {ms.note}"))
    for mv in cr.verdict.measures:
        if mv.status in (V.HOLDS, V.DIFFERS) and mv.reason:
            b.append(Para(f"*{mv.label}:* {mv.reason}"))
    if c.notes:
        b.append(Para(f"**Notes.** {c.notes}"))
    if cr.plot:
        b.append(Image(f"{c.id}.png", cr.plot, f"{c.id}: seed and measured values"))
    return b


def invariant_blocks(rep: Report) -> list[Block]:
    if not rep.invariants:
        return [Para("No invariants are listed for this series.")]
    rows = []
    for ir in rep.invariants:
        model = "; ".join(fref(r) for r in ir.model) or "—"
        tests = []
        for t, ok, outcome in ir.tests:
            s = code(t) + ("" if ok else " **(not defined)**")
            if outcome is not None:
                s += f": {outcome}"
            tests.append(s)
        rows.append([ir.invariant.text, model, "<br>".join(tests) or "—", _inv_status(ir, rep)])
    return [Table(["invariant", "model", "property tests", "run"], rows)]


def _inv_status(ir: InvariantReport, rep: Report) -> str:
    o = ir.experiment
    if o is None:
        return "not run by the report"
    if not o.usable:
        return f"{o.status}: {o.reason}"
    where = display_path(o.path, rep.out_dir) if o.path else "?"
    outs = [x for _, _, x in ir.tests]
    ok = all(x == "passed" for x in outs)
    return f"{'all passed' if ok else 'FAILED'} ({code(where)})"


def experiment_blocks(rep: Report) -> list[Block]:
    rows = []
    for eid, e in rep.series.experiments.items():
        o: ExperimentOutcome | None = next(
            (x for x in rep.outcomes if x.experiment.id == eid), None
        )
        if o is None:
            status, where, wall = "not needed", "—", "—"
        else:
            status = o.status + (f": {o.reason}" if o.reason else "")
            where = code(display_path(o.path, rep.out_dir)) if o.path else "—"
            w = o.meta.get("wall_seconds") if o.meta else None
            wall = f"{w:.0f} s" if isinstance(w, int | float) else "—"
            if o.meta and o.meta.get("commit"):
                wall += f" (commit {o.meta['commit']}, {o.meta.get('started', '?')})"
        rows.append(
            [code(eid), e.about, code(e.command_line(rep.kernel)), e.cost, status, where, wall]
        )
    if not rows:
        return [Para("No experiments.")]
    return [
        Table(["experiment", "what", "command", "cost", "status", "results file", "wall"], rows)
    ]


def report_blocks(rep: Report) -> list[Block]:
    s = rep.series
    b: list[Block] = [Heading(1, f"{s.title}", anchor="top")]
    up = []
    for u in s.upstream:
        ident = u.message_id or (("commit " + u.commit) if u.commit else None)
        up.append(u.subject + (f" ({code(ident)})" if ident else ""))
    b.append(
        Bullets(
            [
                f"**Series:** {code(s.name)}, status {s.status}, base {s.base or 'none'}; "
                f"{len([p for p in s.patches if not p.startswith('0000')])} patches",
                "**Upstream:** " + "; ".join(up),
                f"**Seed:** {code(s.seed.file)}"
                + (
                    f" ({', '.join(f'{k} {v}' for k, v in s.seed.configuration.items())})"
                    if s.seed.configuration
                    else ""
                ),
                f"**Generated** {rep.generated} by {code(rep.command)} at commit "
                f"{code(rep.commit)}; kernel for VM experiments {code(rep.kernel)}",
            ]
        )
    )
    counts = rep.counts()
    b.append(
        Para(
            "**Claims:** "
            + ", ".join(f"{n} {VERDICT_MARK.get(k, k)}" for k, n in sorted(counts.items()))
            + f" (of {len(rep.claims)})."
            " Every seed number below is read from the quoted sentence of the seed (series.yaml"
            " gives the token when the number is stored converted); every measured number is"
            " read from the results file named beside it."
        )
    )
    if rep.problems:
        b.append(Heading(2, "Problems with this report", anchor="problems"))
        b.append(Bullets(rep.problems))
    b.append(Heading(2, "Summary", anchor="summary"))
    rows = []
    for cr in rep.claims:
        rows.append(
            [
                f"[{cr.claim.id}](#claim-{cr.claim.id})",
                seed_line(cr) + f" ({cr.claim.unit})",
                measured_cell(cr),
                f"{VERDICT_MARK.get(cr.verdict.status, cr.verdict.status)}",
            ]
        )
    b.append(Table(["claim", "seed", "measured", "verdict"], rows))
    if rep.summary_plot:
        b.append(Image("summary.png", rep.summary_plot, "measured / seed for every number"))
    b.append(Heading(2, "Claims", anchor="claims"))
    for cr in rep.claims:
        b += claim_blocks(cr, rep)
    b.append(Heading(2, "Invariants and their property tests", anchor="invariants"))
    b += invariant_blocks(rep)
    b.append(Heading(2, "Experiments", anchor="experiments"))
    b += experiment_blocks(rep)
    b.append(Heading(2, "Model", anchor="model"))
    b.append(
        Table(
            ["module", "state", "specifies", "functions"],
            [
                [code(m.module), m.state, m.specifies, ", ".join(code(f) for f in m.functions)]
                for m in s.model
            ],
        )
    )
    b.append(Heading(2, "Known gaps", anchor="gaps"))
    b.append(Bullets(s.gaps) if s.gaps else Para("None listed."))
    return b


# --------------------------------------------------------------------------- Markdown


def to_markdown(blocks: list[Block], plot_dir: str) -> str:
    out: list[str] = []
    for blk in blocks:
        if isinstance(blk, Heading):
            anchor = f'<a id="{blk.anchor}"></a>' if blk.anchor else ""
            out.append(f"{'#' * blk.level} {anchor}{blk.text}\n")
        elif isinstance(blk, Para):
            out.append(blk.text + "\n")
        elif isinstance(blk, Quote):
            out.append("\n".join("> " + ln for ln in blk.text.strip().splitlines()) + "\n")
        elif isinstance(blk, Bullets):
            out.append("\n".join(f"- {i}" for i in blk.items) + "\n")
        elif isinstance(blk, Table):
            out.append("| " + " | ".join(cell(h) for h in blk.head) + " |")
            out.append("|" + "---|" * len(blk.head))
            out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in blk.rows]
            out.append("")
        elif isinstance(blk, Image):
            out.append(f"![{blk.alt}]({plot_dir}/{blk.name})\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a;line-height:1.45}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.88em;background:#f3f3f3;
padding:0 .2em;border-radius:3px;word-break:break-word}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #d0d0d0;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#f0f0f0}
blockquote{margin:.5em 0;padding:.3em 1em;border-left:4px solid #b0b0b0;background:#fafafa;
white-space:pre-wrap}
img.plot{display:block;max-width:100%;margin:.5em 0 1.5em;border:1px solid #e0e0e0}
h3{margin-top:2em;border-top:1px solid #e6e6e6;padding-top:.8em}
"""


def inline_html(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) >= 2:
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
            continue
        s = html.escape(p, quote=False)
        s = s.replace("&lt;br&gt;", "<br>")
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", s)
        s = re.sub(r"\[([^\]]+)\]\(([\w./-]*(?:#[\w-]+)?)\)", r'<a href="\2">\1</a>', s)
        out.append(s)
    return "".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
    ]
    for blk in blocks:
        if isinstance(blk, Heading):
            anchor = f' id="{blk.anchor}"' if blk.anchor else ""
            out.append(f"<h{blk.level}{anchor}>{inline_html(blk.text)}</h{blk.level}>")
        elif isinstance(blk, Para):
            out.append(f"<p>{inline_html(blk.text)}</p>")
        elif isinstance(blk, Quote):
            out.append(f"<blockquote>{html.escape(blk.text.strip())}</blockquote>")
        elif isinstance(blk, Bullets):
            out.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in blk.items) + "</ul>")
        elif isinstance(blk, Table):
            out.append("<table><thead><tr>")
            out.append("".join(f"<th>{inline_html(h)}</th>" for h in blk.head))
            out.append("</tr></thead><tbody>")
            for r in blk.rows:
                out.append("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(blk, Image):
            data = base64.b64encode(blk.png).decode("ascii")
            out.append(
                f'<img class="plot" data-plot="{html.escape(blk.name)}" '
                f'alt="{html.escape(blk.alt)}" src="data:image/png;base64,{data}">'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(rep: Report, out_dir: Path) -> tuple[Path, Path]:
    """``OUT/SERIES.md`` (+ ``OUT/SERIES/plots/*.png``) and ``OUT/SERIES.html``."""
    blocks = report_blocks(rep)
    name = rep.series.name
    plot_dir = out_dir / name / "plots"
    images = [b for b in blocks if isinstance(b, Image)]
    if images:
        plot_dir.mkdir(parents=True, exist_ok=True)
        for img in images:
            write_atomic(plot_dir / img.name, img.png)
    md = out_dir / f"{name}.md"
    write_atomic(md, to_markdown(blocks, f"{name}/plots"))
    page = out_dir / f"{name}.html"
    write_atomic(page, to_html(blocks, f"fsoracle report: {rep.series.title}"))
    return md, page


def index_blocks(reports: list[tuple[Report, Path, Path]]) -> list[Block]:
    rows = []
    for rep, md, page in reports:
        c = rep.counts()
        rows.append(
            [
                code(rep.series.name),
                rep.series.title,
                str(len(rep.claims)),
                ", ".join(f"{n} {VERDICT_MARK.get(k, k)}" for k, n in sorted(c.items())),
                f"[{md.name}]({md.name}), [{page.name}]({page.name})",
            ]
        )
    return [
        Heading(1, "fsoracle: reports per patch series"),
        Table(["series", "title", "claims", "verdicts", "files"], rows),
    ]


def write_index(reports: list[tuple[Report, Path, Path]], out_dir: Path) -> Path:
    blocks = index_blocks(reports)
    write_atomic(out_dir / "index.md", to_markdown(blocks, "."))
    page = out_dir / "index.html"
    write_atomic(page, to_html(blocks, "fsoracle reports"))
    return page
