"""A series' ``series.yaml`` as the report reads it, checked.

Beyond what ``tests/patches/test_series.py`` requires of every series (name, status,
upstream, model modules, claims with text/seed/unit/measured_by), the report reads:

``model[].functions``
    the functions (``name`` or ``Class.method``) each model module specifies for this series.

``experiments.ID``
    ``run``: one argv (or a list of argvs, run in order) whose *last* step prints JSON on
    stdout, or ``output: "{dir}/FILE"`` naming the JSON it writes; or ``pytest``: node ids
    whose outcomes become the JSON. ``fsoracle`` and ``python`` as argv[0] mean this
    checkout's CLI and interpreter. Placeholders: ``{dir}`` (the experiment's own
    directory under the report's results), ``{tmp}`` (a scratch directory removed
    afterwards), ``{kernel}`` (``--kernel``). ``cost``: ``fast`` (run by default),
    ``slow`` (``--run-slow``), ``vm`` (``--run-vm``). ``seconds``: its usual wall time here.
    ``about``: one line.

``claims[]``
    ``quote``: the seed's own sentence(s), verbatim (see :mod:`harness.report.seedtext`);
    ``seed``: the numbers (or values) the seed states, by name; ``seed_text``: for a number
    stored converted (``before_ms: 805.85`` from "805851.8 us"), the token as printed;
    ``model``: function references; ``tests``: pytest node ids that check the claim;
    ``measure``: a list of measurements, each ``{experiment, label, values: {seed key: value
    spec}, show: {name: value spec}, tolerance: {rel, abs, why}, bound: max|min, note}``
    (``show``: measured numbers printed beside the compared ones for context, with no
    seed value and no verdict) (``bound``: the seed's
    number is a limit, "less than 1%") (value specs: :mod:`harness.report.extract`);
    or ``not_measurable``: why nothing here can measure it. ``notes``: what a reviewer
    should know about the comparison.

``invariants[]``
    ``{text, model, tests, experiment}``: a property the series must keep, the model
    function that states it, the property tests, and the pytest experiment that runs them.

``gaps[]``
    known gaps, one line each.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.report import extract as X

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "patches"
COSTS = ("fast", "slow", "vm")


@dataclass
class Experiment:
    id: str
    about: str
    cost: str
    seconds: float
    steps: list[list[str]] = field(default_factory=list)
    pytest: list[str] = field(default_factory=list)
    output: str | None = None
    needs: list[str] = field(default_factory=list)

    def command_line(self, kernel: str | None = None) -> str:
        """The command a reviewer would type (steps joined with ``&&``); with ``kernel``,
        placeholders filled for display (``{dir}`` -> DIR, ``{tmp}`` -> TMP)."""
        if self.pytest:
            return "python -m pytest " + " ".join(self.pytest)
        line = " && ".join(" ".join(_shell_word(w) for w in s) for s in self.steps)
        if kernel is not None:
            line = line.replace("{kernel}", kernel).replace("{dir}", "DIR")
            line = line.replace("{tmp}", "TMP")
        return line


def _shell_word(w: str) -> str:
    if w and all(c.isalnum() or c in "-_./=,:{}@+" for c in w):
        return w
    return "'" + w.replace("'", "'\"'\"'") + "'"


@dataclass
class Measure:
    experiment: str
    label: str
    values: dict[str, Any]
    tolerance_rel: float = 0.0
    tolerance_abs: float = 0.0
    tolerance_why: str = ""
    note: str = ""
    bound: str | None = None  # "max": the seed's number is an upper bound; "min": a lower
    show: dict[str, Any] = field(default_factory=dict)  # measured context, no seed value


@dataclass
class Claim:
    id: str
    text: str
    quote: str
    seed: dict[str, Any]
    seed_text: dict[str, str]
    unit: str
    measured_by: str
    model: list[str]
    tests: list[str]
    measures: list[Measure]
    not_measurable: str | None
    notes: str


@dataclass
class Invariant:
    text: str
    model: list[str]
    tests: list[str]
    experiment: str | None


@dataclass
class ModelModule:
    module: str
    state: str
    specifies: str
    functions: list[str]


@dataclass
class Series:
    name: str
    title: str
    status: str
    base: str | None
    upstream: list[dict[str, Any]]
    patches: list[str]
    seed_file: str
    seed_configuration: dict[str, Any]
    model: list[ModelModule]
    experiments: dict[str, Experiment]
    claims: list[Claim]
    invariants: list[Invariant]
    gaps: list[str]
    path: Path
    raw: dict[str, Any]


class SeriesError(UserError):
    pass


def series_names() -> list[str]:
    return sorted(p.parent.name for p in PATCHES.glob("*/series.yaml"))


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise SeriesError(f"{where}: missing {key!r}")
    return d[key]


def _argv_list(run: Any, where: str) -> list[list[str]]:
    if not isinstance(run, list) or not run:
        raise SeriesError(f"{where}: run must be an argv list or a list of them")
    steps = run if isinstance(run[0], list) else [run]
    out = []
    for s in steps:
        if not isinstance(s, list) or not s or not all(isinstance(w, str | int) for w in s):
            raise SeriesError(f"{where}: bad argv {s!r}")
        out.append([str(w) for w in s])
    return out


def load_series(name: str, patches: Path = PATCHES) -> Series:
    path = patches / name / "series.yaml"
    if not path.exists():
        have = ", ".join(series_names()) or "none"
        raise SeriesError(f"no series {name!r} in {patches} (have: {have})")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SeriesError(f"{path}: not YAML: {err}") from None
    if not isinstance(doc, dict):
        raise SeriesError(f"{path}: not a mapping")
    w = f"{name}/series.yaml"
    experiments: dict[str, Experiment] = {}
    for eid, e in (doc.get("experiments") or {}).items():
        ew = f"{w}: experiment {eid}"
        cost = _req(e, "cost", ew)
        if cost not in COSTS:
            raise SeriesError(f"{ew}: cost {cost!r} is not one of {', '.join(COSTS)}")
        if ("run" in e) == ("pytest" in e):
            raise SeriesError(f"{ew}: give exactly one of run and pytest")
        experiments[eid] = Experiment(
            id=eid,
            about=str(_req(e, "about", ew)),
            cost=cost,
            seconds=float(e.get("seconds", 0)),
            steps=_argv_list(e["run"], ew) if "run" in e else [],
            pytest=[str(t) for t in e.get("pytest", [])],
            output=e.get("output"),
            needs=[str(t) for t in e.get("needs", [])],
        )
    claims = []
    for c in _req(doc, "claims", w):
        cid = _req(c, "id", w)
        cw = f"{w}: claim {cid}"
        measures = []
        for m in c.get("measure") or []:
            eid = _req(m, "experiment", cw)
            if eid not in experiments:
                raise SeriesError(f"{cw}: no experiment {eid!r}")
            values = _req(m, "values", cw)
            for key, spec in values.items():
                if key not in c["seed"]:
                    raise SeriesError(f"{cw}: measures {key!r}, which the seed does not state")
                try:
                    X.check_spec(spec)
                except ValueError as err:
                    raise SeriesError(f"{cw}: {key}: {err}") from None
            for key, spec in (m.get("show") or {}).items():
                try:
                    X.check_spec(spec)
                except ValueError as err:
                    raise SeriesError(f"{cw}: show {key}: {err}") from None
            tol = m.get("tolerance") or {}
            bound = m.get("bound")
            if bound not in (None, "max", "min"):
                raise SeriesError(f"{cw}: bound {bound!r} is not max or min")
            measures.append(
                Measure(
                    experiment=eid,
                    label=str(m.get("label", "model")),
                    values=dict(values),
                    tolerance_rel=float(tol.get("rel", 0)),
                    tolerance_abs=float(tol.get("abs", 0)),
                    tolerance_why=str(tol.get("why", "")),
                    note=str(m.get("note", "")),
                    bound=bound,
                    show=dict(m.get("show") or {}),
                )
            )
        if not measures and not c.get("not_measurable"):
            raise SeriesError(f"{cw}: give measure or not_measurable")
        claims.append(
            Claim(
                id=cid,
                text=str(_req(c, "text", cw)),
                quote=str(_req(c, "quote", cw)),
                seed=dict(_req(c, "seed", cw)),
                seed_text={k: str(v) for k, v in (c.get("seed_text") or {}).items()},
                unit=str(_req(c, "unit", cw)),
                measured_by=str(c.get("measured_by", "")),
                model=[str(x) for x in c.get("model", [])],
                tests=[str(x) for x in c.get("tests", [])],
                measures=measures,
                not_measurable=c.get("not_measurable"),
                notes=str(c.get("notes", "")).strip(),
            )
        )
    invariants = []
    for inv in doc.get("invariants") or []:
        eid = inv.get("experiment")
        if eid is not None and eid not in experiments:
            raise SeriesError(f"{w}: invariant {inv.get('text')!r}: no experiment {eid!r}")
        invariants.append(
            Invariant(
                text=str(_req(inv, "text", w)),
                model=[str(x) for x in inv.get("model", [])],
                tests=[str(x) for x in inv.get("tests", [])],
                experiment=eid,
            )
        )
    model = [
        ModelModule(
            module=str(m["module"]),
            state=str(m.get("state", "")),
            specifies=str(m.get("specifies", "")),
            functions=[str(f) for f in m.get("functions", [])],
        )
        for m in doc.get("model") or []
    ]
    seed = _req(doc, "seed", w)
    return Series(
        name=str(doc.get("name", name)),
        title=str(doc.get("title", name)),
        status=str(doc.get("status", "")),
        base=doc.get("base"),
        upstream=list(doc.get("upstream") or []),
        patches=list(doc.get("patches") or []),
        seed_file=str(seed["file"]),
        seed_configuration=dict(seed.get("configuration") or {}),
        model=model,
        experiments=experiments,
        claims=claims,
        invariants=invariants,
        gaps=[str(g).strip() for g in doc.get("gaps") or []],
        path=path,
        raw=doc,
    )


# --------------------------------------------------------------------------- model refs


@dataclass
class FunctionRef:
    name: str
    file: str | None  # repository-relative; None when not found
    line: int = 0
    doc: str = ""
    problem: str = ""


def _module_files(module: str) -> list[Path]:
    p = ROOT / module
    if p.is_dir():
        return sorted(p.rglob("*.py"))
    return [p] if p.exists() else []


def _defs(path: Path) -> dict[str, tuple[int, str]]:
    """Top-level functions and classes, and methods as ``Class.method``: line, docstring."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _DEFS:
        _DEFS[key] = _parse_defs(path)
    return _DEFS[key]


_DEFS: dict[tuple[str, int, int], dict[str, tuple[int, str]]] = {}


def _parse_defs(path: Path) -> dict[str, tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: dict[str, tuple[int, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = (node.lineno, ast.get_docstring(node) or "")
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                        key = f"{node.name}.{sub.name}"
                        out[key] = (sub.lineno, ast.get_docstring(sub) or "")
    return out


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line, reST ``code`` as Markdown `code`."""
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "`")


def resolve_function(series: Series, ref: str) -> FunctionRef:
    """``name``, ``Class.method`` or ``path/to/file.py:name``, looked up in the series'
    model modules (or the given file)."""
    if ":" in ref:
        file, name = ref.split(":", 1)
        files = _module_files(file)
    else:
        name = ref
        files = [f for m in series.model for f in _module_files(m.module)]
    hits = []
    for f in files:
        d = _defs(f)
        if name in d:
            hits.append((f, *d[name]))
    if not hits:
        where = ", ".join(str(f.relative_to(ROOT)) for f in files) or "no model module"
        return FunctionRef(name, None, problem=f"not found in {where}")
    if len(hits) > 1:
        many = ", ".join(str(h[0].relative_to(ROOT)) for h in hits)
        return FunctionRef(name, None, problem=f"ambiguous: defined in {many}")
    f, line, doc = hits[0]
    return FunctionRef(name, str(f.relative_to(ROOT)), line, first_paragraph(doc))


def pytest_node_exists(nodeid: str) -> bool:
    """``tests/x.py::test_name`` (parameters stripped) is defined in that file."""
    file, _, name = nodeid.partition("::")
    path = ROOT / file
    if not path.exists():
        return False
    if not name:
        return True
    name = name.split("[", 1)[0]
    parts = name.split("::")
    defs = _defs(path)
    return ".".join(parts) in defs
