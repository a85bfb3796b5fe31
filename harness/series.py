"""The kernel patch series of ``patches/``: each folder's ``series.yaml`` read into typed records.

:func:`load_series` reads one series (its folder or its ``series.yaml``), :func:`all_series`
every one under a ``patches/`` folder. A file is first validated against the JSON Schema
``patches/series.schema.json`` (which editors use too: each ``series.yaml`` names it on its
first line), then checked across fields (a measure names an experiment the file defines and
values the seed states, a listed patch file exists, ...). A malformed file is a
:class:`SeriesError`: one line naming the file and the field.

What a series holds (the schema describes each field):

- who posted it (``upstream``), what it applies to (``base``), its state (``status``), its
  patch files in order (``patches``, the cover letter first) and the kernel config lines it
  needs (``config``); for an on-disk format change its incompat bit, key type, the features
  it requires and how it was tested;
- the model modules that specify it (``model``, each with the functions that do);
- its seed text (``seed``) and the seed's claims (``claims``), each with the seed's sentence
  (``quote``), its numbers (``seed``), how they are measured (``measure``: an experiment and
  value specs, :mod:`harness.report.extract`), and the commands that produce the
  measurements (``experiments``: ``run`` argvs or ``pytest`` node ids, a ``cost`` of
  ``fast``, ``slow`` or ``vm``); properties the series keeps (``invariants``) and known gaps.

The folder is ``$FSORACLE_PATCHES`` when set, else the checkout's ``patches/``
(:func:`patches_dir`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "patches" / "series.schema.json"
SERIES_FILE = "series.yaml"

ValueSpec = str | dict[str, Any]  # a path into an experiment's JSON, or {extract: NAME, ...}


class SeriesError(UserError):
    """A ``series.yaml`` that is missing, not YAML, or does not hold a series."""


def patches_dir() -> Path:
    """``$FSORACLE_PATCHES`` or the checkout's ``patches/``."""
    env = os.environ.get("FSORACLE_PATCHES")
    return Path(env) if env else ROOT / "patches"


def series_names(patches: Path | None = None) -> list[str]:
    """The folders under ``patches`` that hold a ``series.yaml``, sorted."""
    root = patches if patches is not None else patches_dir()
    return sorted(p.parent.name for p in root.glob(f"*/{SERIES_FILE}"))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Upstream:
    """One posting or commit the series comes from (a ``message-id`` or a ``commit``)."""

    subject: str
    message_id: str | None = None
    commit: str | None = None
    author: str | None = None
    authors: list[str] = field(default_factory=list)
    date: str | None = None
    mailing_list: str | None = None
    role: str | None = None
    note: str | None = None
    found_at: str | None = None
    patches: list[str] | int | None = None  # the posted patches' subjects, or their number


@dataclass(frozen=True)
class ModelModule:
    module: str  # repository-relative file or folder
    state: str  # written | planned
    specifies: str
    functions: list[str]  # name, Class.method or path/to/file.py:name


@dataclass(frozen=True)
class SeedSource:
    file: str  # the seed text's file name
    configuration: dict[str, Any]  # what the seed measured on, free-form


@dataclass(frozen=True)
class Experiment:
    """A command (one argv or several, run in order) or pytest node ids whose JSON the
    claims' measures read."""

    id: str
    about: str
    cost: str  # fast | slow | vm
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


@dataclass(frozen=True)
class Measure:
    experiment: str
    label: str
    values: dict[str, ValueSpec]  # seed key -> where the measured value is
    tolerance_rel: float = 0.0
    tolerance_abs: float = 0.0
    tolerance_why: str = ""
    note: str = ""
    bound: str | None = None  # "max": the seed's number is an upper bound; "min": a lower
    show: dict[str, ValueSpec] = field(default_factory=dict)  # measured context, no seed value


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Invariant:
    text: str
    model: list[str]
    tests: list[str]
    experiment: str | None


@dataclass(frozen=True)
class Series:
    """One ``patches/NAME/series.yaml``."""

    name: str
    title: str
    status: str  # merged-equivalent | forward-ported | model-only | config-only
    base: str | None
    upstream: list[Upstream]
    patches: list[str]  # file names in the series folder, in order (cover letter first)
    config: list[str]  # kconfig fragment lines
    model: list[ModelModule]
    seed: SeedSource
    experiments: dict[str, Experiment]
    claims: list[Claim]
    invariants: list[Invariant]
    gaps: list[str]
    path: Path  # the series.yaml
    incompat_bit: int | None = None
    key_type: int | None = None
    requires: dict[str, list[str]] = field(default_factory=dict)
    tested: dict[str, str] = field(default_factory=dict)

    @property
    def patch_paths(self) -> list[Path]:
        return [self.path.parent / p for p in self.patches]


# --------------------------------------------------------------------------- loading


def load_series(where: Path | str) -> Series:
    """The series in folder ``where`` (or the ``series.yaml`` ``where``), validated."""
    where = Path(where)
    path = where if where.name == SERIES_FILE and not where.is_dir() else where / SERIES_FILE
    if not path.is_file():
        have = ", ".join(series_names(path.parent.parent)) or "none"
        raise SeriesError(f"no series {path.parent.name!r} in {path.parent.parent} (have: {have})")
    shown = _shown(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SeriesError(f"{shown}: not YAML: {' '.join(str(err).split())}") from None
    _validate(doc, shown)
    return _series(doc, path, shown)


def all_series(patches: Path | None = None) -> list[Series]:
    """Every series under ``patches`` (default :func:`patches_dir`), by name."""
    root = patches if patches is not None else patches_dir()
    return [load_series(root / name) for name in series_names(root)]


def _shown(path: Path) -> str:
    """The file as an error names it: repository-relative when it is in this checkout."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _where(path: Sequence[str | int], doc: Any) -> str:
    """``claims[3] (blocks-bg-tree).measure[0].values`` for a path into the document."""
    out = ""
    node = doc
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                out += f" ({node['id']})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return out or "top level"


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}


def _validate(doc: Any, shown: str) -> None:
    from jsonschema.exceptions import best_match

    err = best_match(_validator().iter_errors(doc))
    if err is None:
        return
    path = list(err.absolute_path)
    at = _where(path, doc)
    kind = err.validator
    if kind == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        name = ", ".join(repr(k) for k in missing)
        what = f"missing field {name}" if path else f"missing top-level field {name}"
        msg = f"{at}: {what}" if path else what
    elif kind == "additionalProperties":
        known = err.schema.get("properties", {})
        extra = ", ".join(repr(k) for k in err.instance if k not in known)
        msg = f"{at}: unknown field {extra}" if path else f"unknown top-level field {extra}"
    elif kind == "type":
        want = (
            err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        )
        names = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in want)
        msg = f"{at}: {_short(err.instance)} is not {names}"
    elif kind == "enum":
        msg = f"{at}: {_short(err.instance)} is not one of {', '.join(err.validator_value)}"
    elif kind == "pattern":
        msg = f"{at}: {_short(err.instance)} does not match {err.validator_value}"
    else:
        msg = f"{at}: {_short(err.instance)}: {kind} {_short(err.validator_value)} not met"
    raise SeriesError(f"{shown}: {msg}")


def _argv_list(run: Any) -> list[list[str]]:
    steps = run if isinstance(run[0], list) else [run]
    return [[str(w) for w in s] for s in steps]


def _series(doc: dict[str, Any], path: Path, shown: str) -> Series:
    """Records from a schema-valid document, with the checks across fields."""
    from harness.report.extract import check_spec

    def fail(where: str, what: str) -> SeriesError:
        return SeriesError(f"{shown}: {where}: {what}")

    if doc["name"] != path.parent.name:
        raise fail("name", f"{doc['name']!r} is not the folder's name {path.parent.name!r}")
    for i, fname in enumerate(doc["patches"]):
        if not (path.parent / fname).is_file():
            raise fail(f"patches[{i}]", f"{fname} is not in {_shown(path.parent)}")
    experiments: dict[str, Experiment] = {}
    for eid, e in (doc.get("experiments") or {}).items():
        if ("run" in e) == ("pytest" in e):
            raise fail(f"experiments.{eid}", "give exactly one of run and pytest")
        experiments[eid] = Experiment(
            id=eid,
            about=e["about"],
            cost=e["cost"],
            seconds=float(e.get("seconds", 0)),
            steps=_argv_list(e["run"]) if "run" in e else [],
            pytest=list(e.get("pytest", [])),
            output=e.get("output"),
            needs=list(e.get("needs", [])),
        )
    claims = []
    seen: set[str] = set()
    for ci, c in enumerate(doc["claims"]):
        cw = f"claims[{ci}] ({c['id']})"
        if c["id"] in seen:
            raise fail(f"{cw}.id", "repeats an earlier claim's id")
        seen.add(c["id"])
        measures = []
        for mi, m in enumerate(c.get("measure") or []):
            mw = f"{cw}.measure[{mi}]"
            if m["experiment"] not in experiments:
                raise fail(f"{mw}.experiment", f"no experiment {m['experiment']!r}")
            for part in ("values", "show"):
                for key, spec in (m.get(part) or {}).items():
                    if part == "values" and key not in c["seed"]:
                        raise fail(f"{mw}.values.{key}", "the claim's seed does not state it")
                    try:
                        check_spec(spec)
                    except ValueError as err:
                        raise fail(f"{mw}.{part}.{key}", str(err)) from None
            tol = m.get("tolerance") or {}
            measures.append(
                Measure(
                    experiment=m["experiment"],
                    label=m.get("label", "model"),
                    values=dict(m["values"]),
                    tolerance_rel=float(tol.get("rel", 0)),
                    tolerance_abs=float(tol.get("abs", 0)),
                    tolerance_why=tol.get("why", ""),
                    note=m.get("note", ""),
                    bound=m.get("bound"),
                    show=dict(m.get("show") or {}),
                )
            )
        if not measures and not c.get("not_measurable"):
            raise fail(cw, "give measure or not_measurable")
        claims.append(
            Claim(
                id=c["id"],
                text=c["text"],
                quote=c["quote"],
                seed=dict(c["seed"]),
                seed_text=dict(c.get("seed_text") or {}),
                unit=c["unit"],
                measured_by=c["measured_by"],
                model=list(c.get("model", [])),
                tests=list(c.get("tests", [])),
                measures=measures,
                not_measurable=c.get("not_measurable"),
                notes=c.get("notes", "").strip(),
            )
        )
    invariants = []
    for ii, inv in enumerate(doc.get("invariants") or []):
        eid = inv.get("experiment")
        if eid is not None and eid not in experiments:
            raise fail(f"invariants[{ii}].experiment", f"no experiment {eid!r}")
        invariants.append(
            Invariant(
                text=inv["text"],
                model=list(inv.get("model", [])),
                tests=list(inv.get("tests", [])),
                experiment=eid,
            )
        )
    return Series(
        name=doc["name"],
        title=doc["title"],
        status=doc["status"],
        base=doc["base"],
        upstream=[_upstream(u) for u in doc["upstream"]],
        patches=list(doc["patches"]),
        config=list(doc["config"]),
        model=[
            ModelModule(
                module=m["module"],
                state=m["state"],
                specifies=m.get("specifies", ""),
                functions=list(m.get("functions", [])),
            )
            for m in doc["model"]
        ],
        seed=SeedSource(doc["seed"]["file"], dict(doc["seed"].get("configuration") or {})),
        experiments=experiments,
        claims=claims,
        invariants=invariants,
        gaps=[g.strip() for g in doc.get("gaps") or []],
        path=path,
        incompat_bit=doc.get("incompat_bit"),
        key_type=doc.get("key_type"),
        requires={k: list(v) for k, v in (doc.get("requires") or {}).items()},
        tested=dict(doc.get("tested") or {}),
    )


def _upstream(u: dict[str, Any]) -> Upstream:
    patches = u.get("patches")
    return Upstream(
        subject=u["subject"],
        message_id=u.get("message-id"),
        commit=u.get("commit"),
        author=u.get("author"),
        authors=list(u.get("authors", [])),
        date=u.get("date"),
        mailing_list=u.get("list"),
        role=u.get("role"),
        note=u.get("note"),
        found_at=u.get("found_at"),
        patches=list(patches) if isinstance(patches, list) else patches,
    )
