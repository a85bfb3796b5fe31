"""Replaying a log through the model and comparing: each op's result, then the tree.

:func:`check_log` is the whole differential check for one run: every logged op is applied
to an :class:`~model.fsstate.namespace.FsModel` in ``(proc, seq)`` order (processes work in
disjoint directories, so their relative order does not matter), each logged result is
compared with the model's, and the real tree (the driver's walk records) is compared with
the model's field by field. Each difference names the op that caused it when that can be
told: for a result, the op itself; for a tree field, the model's blame
(:meth:`FsModel.blame`).

A result difference does not stop the replay: the model goes on with its own result, so
later differences may be consequences of the first; reports list the first one first.
An op outside the model's scope (:class:`Unmodeled`) stops that process's replay: its
later ops and its subtree are reported as not checked, never as equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.fsstate import ops as op_registry
from model.fsstate.faults import Faults
from model.fsstate.namespace import Expected, FsModel, Unmodeled
from model.fsstate.oplog import Op
from model.fsstate.tree import FIELDS, Entry, entries_from_walk


@dataclass(frozen=True)
class Difference:
    """One disagreement. ``kind`` is ``result`` (an op returned something else),
    ``tree`` (a field of a path), or ``unmodeled`` (the model could not follow)."""

    kind: str
    path: str
    field: str
    expected: object
    actual: object
    op: str  # the op that caused it ("p0#12 rename"), or "" when unknown

    def __str__(self) -> str:
        by = f" (op {self.op})" if self.op else ""
        if self.kind == "result":
            return f"{self.op}: expected {self.expected}, got {self.actual} [{self.path}]"
        if self.kind == "unmodeled":
            return f"{self.op}: not modelled: {self.expected}"
        return f"{self.path}: {self.field} expected {self.expected!r}, got {self.actual!r}{by}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "field": self.field,
            "expected": _jsonable(self.expected),
            "actual": _jsonable(self.actual),
            "op": self.op,
        }


def _jsonable(v: object) -> object:
    if isinstance(v, tuple):
        return list(v)
    return v


@dataclass
class CompareResult:
    ops: int = 0
    differences: list[Difference] = field(default_factory=list)
    unmodeled_procs: set[int] = field(default_factory=set)
    model: FsModel | None = None

    @property
    def ok(self) -> bool:
        return not self.differences


def _op_path(op: Op) -> str:
    """The path a report names for ``op``: the one it makes, else its first path."""
    spec = op_registry.lookup(op.name)
    for k in spec.path_keys() if spec else ():
        if k in op.args:
            return op.args[k]
    return ""


def result_differences(op: Op, exp: Expected) -> list[Difference]:
    """How ``op``'s logged result (and result fields) differ from what the model expected
    (``exp``): nothing, a different result, or each result field that differs."""
    if op.result is None:
        return []
    if exp.result != op.result:
        return [Difference("result", _op_path(op), "result", exp.result, op.result, op.ref)]
    return [
        Difference("result", _op_path(op), k, v, op.extra.get(k), op.ref)
        for k, v in exp.extra.items()
        if op.extra.get(k) != v
    ]


def unmodeled_difference(op: Op, e: Unmodeled) -> Difference:
    return Difference("unmodeled", _op_path(op), "", str(e), "", op.ref)


def replay_results(
    model: FsModel, ops: list[Op], res: CompareResult, *, procs_skip: set[int] | None = None
) -> None:
    """Apply ``ops`` (already in (proc, seq) order) and record result differences."""
    skip = procs_skip if procs_skip is not None else res.unmodeled_procs
    for op in ops:
        if op.proc in skip:
            continue
        try:
            exp = model.apply(op)
        except Unmodeled as e:
            skip.add(op.proc)
            res.differences.append(unmodeled_difference(op, e))
            continue
        res.ops += 1
        res.differences += result_differences(op, exp)


def diff_trees(
    expected: dict[str, Entry],
    actual: dict[str, Entry],
    model: FsModel | None = None,
    *,
    skip_prefixes: tuple[str, ...] = (),
) -> list[Difference]:
    """Field-by-field differences between two trees (paths in sorted order)."""

    def blame(path: str, fld: str) -> str:
        return model.blame(path, fld) if model is not None else ""

    def skipped(path: str) -> bool:
        return any(p == "" or path == p or path.startswith(p + "/") for p in skip_prefixes)

    out: list[Difference] = []
    for path in sorted(set(expected) | set(actual)):
        if skipped(path):
            continue
        e, a = expected.get(path), actual.get(path)
        if e is None or a is None:
            out.append(
                Difference(
                    "tree",
                    path,
                    "exists",
                    e is not None,
                    a is not None,
                    blame(path, "exists"),
                )
            )
            continue
        for fld in FIELDS:
            ev, av = e.get(fld), a.get(fld)
            if ev is None or av is None:
                continue  # not compared for this filesystem and type
            if ev != av:
                out.append(Difference("tree", path, fld, ev, av, blame(path, fld)))
                if fld == "type":
                    break
    return out


def check_log(
    fs: str,
    ops: list[Op],
    walk: list[dict[str, Any]] | None,
    *,
    root_is_subvol: bool = False,
    faults: Faults | None = None,
    proc_dirs: bool = True,
) -> CompareResult:
    """Replay ``ops`` (each with its logged result) and compare results and, when ``walk``
    is given, the final tree. With ``proc_dirs`` (stress mode) process N owns ``pN`` and an
    unmodelled op skips only that subtree; otherwise it skips the whole tree."""
    model = FsModel(fs, root_is_subvol=root_is_subvol, faults=faults)
    res = CompareResult(model=model)
    ordered = sorted(ops, key=lambda o: (o.proc, o.seq))
    replay_results(model, ordered, res)
    if walk is not None:
        actual = entries_from_walk(walk, model.sem)
        skip = tuple(f"p{p}" if proc_dirs else "" for p in sorted(res.unmodeled_procs))
        res.differences += diff_trees(model.entries(), actual, model, skip_prefixes=skip)
    return res
