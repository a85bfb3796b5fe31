"""Seed value against measured value, and the verdicts a report prints.

One value: a bound (``bound: max``, "less than 1%") holds when the measured number is on
its side. Otherwise numbers hold when ``|measured - seed| <= abs`` or ``|measured - seed| <=
rel * |seed|`` (both 0 unless series.yaml gives a tolerance, with its reason: the seed's
"~680" or "about 5x"); otherwise they *differ by* the signed difference and its
percentage of the seed. Other values (booleans, words, lists of ranges) hold when equal.

One measurement (an experiment's view of a claim): *holds* when every compared value
holds; *differs* when any differs; *not run* / *not measured* when its results are
missing or unreadable (the reason says which command would produce them).

A claim: *differs* when any measurement differs; else *holds* when at least one
measurement holds (pending ones are listed beside it); else *not measurable here* (the
series says why) or *not run* (the first pending reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

HOLDS = "holds"
DIFFERS = "differs"
NOT_RUN = "not run"
NOT_MEASURED = "not measured"
NOT_MEASURABLE = "not measurable here"


@dataclass
class ValueVerdict:
    key: str
    seed: Any
    measured: Any
    status: str  # holds / differs / not measured (the value could not be read)
    detail: str  # "+11 (+1.0 %)", or why it was not read


@dataclass
class MeasureVerdict:
    label: str
    experiment: str
    status: str
    reason: str = ""
    results_file: str | None = None
    values: list[ValueVerdict] = field(default_factory=list)
    shown: list[tuple[str, Any]] = field(default_factory=list)  # context values, no verdict


@dataclass
class ClaimVerdict:
    status: str
    summary: str
    measures: list[MeasureVerdict]


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def fmt_number(v: float) -> str:
    """Numbers as a reviewer reads them: integers plain, others to 4 significant digits."""
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    a = abs(v)
    if a >= 1000:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.4g}" if a < 100 else f"{v:.1f}"
    return f"{v:.3g}"


def fmt_value(v: Any, exact: bool = False) -> str:
    """A value for the report; ``exact`` prints numbers as stored (seed values)."""
    if exact and is_number(v):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if is_number(v):
        return fmt_number(v)
    if isinstance(v, list):
        if all(isinstance(r, list) and len(r) == 2 for r in v):
            return ", ".join(f"[{fmt_number(a)}, {fmt_number(b)})" for a, b in v) or "none"
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def compare_value(
    key: str, seed: Any, measured: Any, rel: float, abs_: float, bound: str | None = None
) -> ValueVerdict:
    if is_number(seed) and is_number(measured):
        diff = float(measured) - float(seed)
        if bound == "max" and diff <= 0:
            return ValueVerdict(key, seed, measured, HOLDS, "within the bound")
        if bound == "min" and diff >= 0:
            return ValueVerdict(key, seed, measured, HOLDS, "within the bound")
        ok = abs(diff) <= abs_ + 1e-12 or (seed != 0 and abs(diff) <= rel * abs(seed) + 1e-12)
        if diff == 0:
            detail = ""
        else:
            pct = f" ({100 * diff / seed:+.1f} %)" if seed else ""
            sign = "+" if diff > 0 else "-"
            detail = f"{sign}{fmt_number(abs(diff))}{pct}"
            if seed and math.isfinite(diff) and abs(measured / seed) >= 3:
                detail += f", {measured / seed:.1f}×"
            elif seed and measured and abs(seed / measured) >= 3:
                detail += f", 1/{seed / measured:.1f}"
        return ValueVerdict(key, seed, measured, HOLDS if ok else DIFFERS, detail)
    same = _normal(seed) == _normal(measured)
    return ValueVerdict(
        key, seed, measured, HOLDS if same else DIFFERS, "" if same else f"is {fmt_value(measured)}"
    )


def _normal(v: Any) -> Any:
    if isinstance(v, list):
        # a single range may be written [a, b] or [[a, b]]
        if len(v) == 2 and all(is_number(x) for x in v):
            return [[float(v[0]), float(v[1])]]
        return [[_normal(y) for y in x] if isinstance(x, list) else _normal(x) for x in v]
    if is_number(v):
        return float(v)
    return v


def measure_status(values: list[ValueVerdict]) -> str:
    """Differs if any value differs; holds if the others hold; not measured if no value
    could be read."""
    if all(v.status == NOT_MEASURED for v in values):
        return NOT_MEASURED
    return DIFFERS if any(v.status == DIFFERS for v in values) else HOLDS


def claim_verdict(measures: list[MeasureVerdict], not_measurable: str | None) -> ClaimVerdict:
    done = [m for m in measures if m.status in (HOLDS, DIFFERS)]
    pending = [m for m in measures if m.status not in (HOLDS, DIFFERS)]
    tail = ""
    if pending and done:
        tail = "; pending: " + "; ".join(f"{m.label} ({m.status}: {m.reason})" for m in pending)
    partial = [
        f"{m.label}: {', '.join(v.key for v in m.values if v.status == NOT_MEASURED)} not measured"
        for m in done
        if any(v.status == NOT_MEASURED for v in m.values)
    ]
    if partial:
        tail += "; " + "; ".join(partial)
    differ = [m for m in done if m.status == DIFFERS]
    if differ:
        parts = []
        for m in differ:
            ds = [f"{v.key} {v.detail or 'differs'}" for v in m.values if v.status == DIFFERS]
            parts.append(f"{m.label}: " + ", ".join(ds))
        return ClaimVerdict(DIFFERS, "; ".join(parts) + tail, measures)
    if done:
        labels = ", ".join(m.label for m in done)
        return ClaimVerdict(HOLDS, f"measured by: {labels}" + tail, measures)
    if not_measurable:
        return ClaimVerdict(NOT_MEASURABLE, not_measurable, measures)
    if pending:
        m = pending[0]
        return ClaimVerdict(m.status, m.reason, measures)
    return ClaimVerdict(NOT_MEASURED, "nothing measures it", measures)
