"""Assemble one series' report: claims with the seed's numbers, the model's statement, the
checks, the measured numbers and verdicts; invariants; experiments; gaps; plots."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report import extract as X
from harness.report import seedtext as S
from harness.report import verdict as V
from harness.report.refs import FunctionRef, pytest_node_exists, resolve_function
from harness.report.runner import ExperimentOutcome, Runner
from harness.series import ROOT, Claim, Invariant, Series


@dataclass
class SeedValue:
    key: str
    value: Any
    token: str | None  # as printed in the seed, when given or a plain number
    found: bool | None  # token found in the quote (None: not a number, not checked)


@dataclass
class ClaimReport:
    claim: Claim
    quote_found: bool | None  # None: seed file not available
    seed_values: list[SeedValue]
    model: list[FunctionRef]
    tests: list[tuple[str, bool]]
    verdict: V.ClaimVerdict
    plot: bytes | None = None


@dataclass
class InvariantReport:
    invariant: Invariant
    model: list[FunctionRef]
    tests: list[tuple[str, bool, str | None]]  # node id, defined, outcome (None: not run)
    experiment: ExperimentOutcome | None


@dataclass
class Report:
    series: Series
    seed_path: Path
    seed_available: bool
    claims: list[ClaimReport]
    invariants: list[InvariantReport]
    outcomes: list[ExperimentOutcome]
    commit: str
    generated: str
    command: str
    kernel: str
    out_dir: Path = Path(".")
    summary_plot: bytes | None = None
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.claims:
            out[c.verdict.status] = out.get(c.verdict.status, 0) + 1
        return out


def seed_values(claim: Claim) -> tuple[list[SeedValue], list[str]]:
    """Each seed value with the token it is read from, and problems (a token not in the
    quote, or not converting to the stored value)."""
    out, problems = [], []
    quote = S.normalise(claim.quote)
    for key, value in claim.seed.items():
        token = claim.seed_text.get(key)
        if V.is_number(value):
            token = token or S.default_token(value)
            found = _token_in(token, quote)
            if not found:
                problems.append(f"{claim.id}: seed {key} token {token!r} is not in the quote")
            else:
                try:
                    if not S.token_matches(token, key, float(value)):
                        problems.append(
                            f"{claim.id}: seed {key} = {value} does not follow from {token!r}"
                        )
                        found = False
                except S.TokenError as e:
                    problems.append(f"{claim.id}: seed {key}: {e}")
                    found = False
            out.append(SeedValue(key, value, token, found))
        elif token is not None:
            found = _token_in(token, quote)
            if not found:
                problems.append(f"{claim.id}: seed {key} token {token!r} is not in the quote")
            elif isinstance(value, list):
                try:
                    if V.compare_value(key, value, S.parse_range(token), 0, 0).status != V.HOLDS:
                        problems.append(f"{claim.id}: seed {key} = {value} is not {token!r}")
                        found = False
                except S.TokenError as e:
                    problems.append(f"{claim.id}: seed {key}: {e}")
                    found = False
            out.append(SeedValue(key, value, token, found))
        else:
            out.append(SeedValue(key, value, None, None))
    return out, problems


def _token_in(token: str, normalised_quote: str) -> bool:
    import re

    t = S.normalise(token)
    pattern = r"(?<![\w.])" + re.escape(t) + r"(?![\w])"
    return re.search(pattern, normalised_quote) is not None


def measure_claim(claim: Claim, series: Series, runner: Runner, rel_to: Path) -> V.ClaimVerdict:
    verdicts = []
    for m in claim.measures:
        o = runner.get(series.experiments[m.experiment])
        mv = V.MeasureVerdict(m.label, m.experiment, "", results_file=None)
        if o.path is not None:
            mv.results_file = display_path(o.path, rel_to)
        if not o.usable:
            mv.status = V.NOT_RUN if o.status in ("not run", "cannot run") else V.NOT_MEASURED
            mv.reason = o.reason
            verdicts.append(mv)
            continue
        missing = []
        for key, spec in m.values.items():
            try:
                got = X.extract(spec, o.data)
            except X.ExtractError as e:
                missing.append(f"{key}: {e}")
                mv.values.append(V.ValueVerdict(key, claim.seed[key], None, V.NOT_MEASURED, str(e)))
                continue
            mv.values.append(
                V.compare_value(
                    key, claim.seed[key], got, m.tolerance_rel, m.tolerance_abs, m.bound
                )
            )
        for key, spec in m.show.items():
            try:
                mv.shown.append((key, X.extract(spec, o.data)))
            except X.ExtractError as e:
                missing.append(f"{key}: {e}")
        mv.status = V.measure_status(mv.values)
        reasons = [o.reason] if o.reason else []
        if missing:
            reasons.append(f"not read from {mv.results_file}: " + "; ".join(missing))
        mv.reason = "; ".join(reasons)
        verdicts.append(mv)
    return V.claim_verdict(verdicts, claim.not_measurable)


def display_path(p: Path, rel_to: Path) -> str:
    """A results path as the report names it: relative to the report when inside its
    directory, else repository-relative, else absolute."""
    p = p.resolve()
    for base in (rel_to.resolve(), ROOT):
        if p.is_relative_to(base):
            return os.path.relpath(p, base)
    return str(p)


def build_report(
    series: Series,
    runner: Runner,
    report_dir: Path,
    *,
    command: str,
    generated: str,
    commit: str,
    plots: bool = True,
) -> Report:
    seed_path = S.seeds_dir() / series.seed.file
    seed_text = seed_path.read_text(errors="replace") if seed_path.exists() else None
    problems: list[str] = []
    claims = []
    for c in series.claims:
        quote_found = None if seed_text is None else S.quote_in_seed(c.quote, seed_text)
        if quote_found is False:
            problems.append(f"{c.id}: the quote is not in {seed_path}")
        sv, p = seed_values(c)
        problems += p
        refs = [resolve_function(series, r) for r in c.model]
        problems += [f"{c.id}: model {r.name}: {r.problem}" for r in refs if r.problem]
        tests = [(t, pytest_node_exists(t)) for t in c.tests]
        problems += [f"{c.id}: test {t} is not defined" for t, ok in tests if not ok]
        verdict = measure_claim(c, series, runner, report_dir)
        cr = ClaimReport(c, quote_found, sv, refs, tests, verdict)
        if plots:
            cr.plot = claim_plot(cr)
        claims.append(cr)
    invariants = []
    for inv in series.invariants:
        outcome = runner.get(series.experiments[inv.experiment]) if inv.experiment else None
        results = (outcome.data or {}).get("tests", {}) if outcome and outcome.usable else {}
        itests = [(t, pytest_node_exists(t), results.get(t)) for t in inv.tests]
        problems += [
            f"invariant {inv.text!r}: test {t} is not defined" for t, ok, _ in itests if not ok
        ]
        refs = [resolve_function(series, r) for r in inv.model]
        problems += [f"invariant: model {r.name}: {r.problem}" for r in refs if r.problem]
        invariants.append(InvariantReport(inv, refs, itests, outcome))
    for m in series.model:
        for fn in m.functions:
            r = resolve_function(series, f"{m.module}:{fn}")
            if r.problem:
                problems.append(f"model {m.module}: {fn}: {r.problem}")
    outcomes = [runner.cache[e] for e in series.experiments if e in runner.cache]
    rep = Report(
        series=series,
        seed_path=seed_path,
        seed_available=seed_text is not None,
        claims=claims,
        invariants=invariants,
        outcomes=outcomes,
        commit=commit,
        generated=generated,
        command=command,
        kernel=runner.kernel,
        problems=problems,
        out_dir=report_dir,
    )
    if plots:
        rep.summary_plot = summary_plot(rep)
    return rep


# --------------------------------------------------------------------------- plots

SEED_COLOUR = "#8c8c8c"
HOLD_COLOUR = "#2b8a3e"
DIFF_COLOUR = "#d9480f"
CONTEXT_COLOUR = "#4263eb"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    _pyplot().close(fig)
    return buf.getvalue()


def numeric_values(cr: ClaimReport) -> list[tuple[str, float, list[tuple[str, float, str]]]]:
    """(key, seed, [(measurement label, measured, status)]) for numbers measured."""
    rows: dict[str, tuple[float, list[tuple[str, float, str]]]] = {}
    for m in cr.verdict.measures:
        for v in m.values:
            if V.is_number(v.seed) and V.is_number(v.measured):
                rows.setdefault(v.key, (float(v.seed), []))[1].append(
                    (m.label, float(v.measured), v.status)
                )
    return [(k, s, ms) for k, (s, ms) in rows.items()]


def claim_plot(cr: ClaimReport) -> bytes | None:
    """Seed beside measured, one panel per compared number; for a claim without numbers to
    compare, its measured context values (no seed bar)."""
    rows = numeric_values(cr)
    if not rows:
        return context_plot(cr)
    plt = _pyplot()
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(max(2.6 * n, 3.4), 2.6), squeeze=False)
    for ax, (key, seed, ms) in zip(axes[0], rows, strict=True):
        labels = ["seed", *[m[0] for m in ms]]
        vals = [seed, *[m[1] for m in ms]]
        colours = [SEED_COLOUR, *[HOLD_COLOUR if m[2] == V.HOLDS else DIFF_COLOUR for m in ms]]
        bars = ax.bar(range(len(vals)), vals, color=colours)
        ax.set_xticks(range(len(vals)), labels, fontsize=8)
        pos = [v for v in vals if v > 0]
        if pos and max(pos) / min(pos) > 50 and all(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        for b, v in zip(bars, vals, strict=True):
            ax.annotate(
                V.fmt_number(v),
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.margins(y=0.15)
    fig.suptitle(cr.claim.id, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def context_plot(cr: ClaimReport) -> bytes | None:
    vals = [
        (f"{k}\n({m.label})" if len(cr.verdict.measures) > 1 else k, float(v))
        for m in cr.verdict.measures
        for k, v in m.shown
        if V.is_number(v)
    ]
    if not vals:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(1.6 * len(vals), 3.4), 2.6))
    bars = ax.bar(range(len(vals)), [v for _, v in vals], color=CONTEXT_COLOUR)
    ax.set_xticks(range(len(vals)), [k for k, _ in vals], fontsize=7)
    for b, (_, v) in zip(bars, vals, strict=True):
        ax.annotate(V.fmt_number(v), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.margins(y=0.15)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("measured (no seed number)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def summary_plot(rep: Report) -> bytes | None:
    """Measured / seed for every compared number, one row each, log scale."""
    pts = []
    for cr in rep.claims:
        for key, seed, ms in numeric_values(cr):
            for label, got, status in ms:
                if seed > 0 and got > 0:
                    pts.append((f"{cr.claim.id} {key} ({label})", got / seed, status))
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(pts) + 1.1))
    ys = range(len(pts))
    ax.axvline(1.0, color=SEED_COLOUR, lw=1)
    ax.scatter(
        [p[1] for p in pts],
        list(ys),
        color=[HOLD_COLOUR if p[2] == V.HOLDS else DIFF_COLOUR for p in pts],
        zorder=3,
    )
    ax.set_yticks(list(ys), [p[0] for p in pts], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo = min(min(p[1] for p in pts), 0.5)
    hi = max(max(p[1] for p in pts), 2.0)
    ax.set_xlim(lo / 1.5, hi * 1.5)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
             if lo / 1.5 <= t <= hi * 1.5]  # fmt: skip
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("measured / seed (log scale; 1 = the seed's number)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
