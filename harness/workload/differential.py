"""Property-based differential testing: a hypothesis state machine runs ops on a kernel and
on the model side by side; any disagreement is shrunk to a minimal op log.

One mounted filesystem (one :class:`~harness.workload.session.DriverSession`) serves every
example. An example (:func:`machine_class`) is a ``RuleBasedStateMachine`` run: a fresh
root below the mount (on btrfs a fresh subvolume, so snapshots of ``.`` work), then its
steps, each a rule built from the op registry (``model/fsstate/ops.py``) whose op goes over
the session and whose result is checked against the model's when its reply is read (up to
:data:`WINDOW` later ops may be sent first, so the target works while hypothesis draws),
then at teardown the whole tree against the model's, and the root removed. Names come from
bundles of what the example made (files, directories, symlinks, subvolumes) and, for new
ones, from a pool of three (``a b c``, below a directory made earlier) so ops collide: a
creat then a rename onto it, a truncate of what was written.

A failing example is shrunk by hypothesis for a bounded number of examples, then by
:func:`minimize` (drop one op at a time while it still disagrees: 1-minimal), and saved
under ``results/stress/`` as an op log whose header says how it ran, with the one-line
command that replays it (``fsoracle stress replay LOG [--fault ...]``).

Examples the model cannot follow (a symlink whose ``..`` climbs above the example's root)
are rejected, not counted as agreement.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, write_atomic
from harness.workload.session import DriverSession, SessionError
from model.fsstate import ops
from model.fsstate.compare import (
    CompareResult,
    Difference,
    check_log,
    diff_trees,
    result_differences,
)
from model.fsstate.faults import Faults
from model.fsstate.oplog import Op, format_log
from model.fsstate.tree import entries_from_walk

NAMES = ("a", "b", "c")
# ops left unanswered after a step: each reply is checked when it is read, up to WINDOW
# steps after its op was sent (the guest runs them meanwhile; 0 is one round trip per op)
WINDOW = 4
Spec = tuple[str, dict[str, str]]


@dataclass
class ExampleResult:
    name: str
    ops: list[Op]
    result: CompareResult
    walk: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unmodeled(self) -> bool:
        return any(d.kind == "unmodeled" for d in self.result.differences)


class DifferentialRunner:
    """The differential's hold on one filesystem: the session, the filesystem's name, the
    model's planted faults, and counts of what ran. :func:`search` runs hypothesis'
    examples through it; :meth:`run_example` runs one explicit op list (the ops sent in
    one batch, checked after: what :func:`minimize` needs)."""

    def __init__(self, session: DriverSession, fs: str, faults: Faults | None = None) -> None:
        self.session = session
        self.fs = fs
        self.faults = faults or Faults()
        self.subvol = fs == "btrfs"
        self.examples = 0  # examples begun (hypothesis also begins some it then discards)
        self.checked = 0  # examples run to their end and checked against the model
        self.rejected = 0  # examples the model could not follow (Unmodeled)
        self.failures = 0  # examples that disagreed (hypothesis' shrinking runs included)
        self.op_counts: dict[str, list[int]] = {}  # op name -> [run, succeeded] (kernel)
        self.first_failure: int | None = None  # the example count at the first
        self.shortest: tuple[int, int] | None = None  # (ops, example count) of the shortest

    def run_example(self, specs: list[Spec]) -> ExampleResult:
        """Run ``specs`` (op name, arguments) in a fresh root and check every result and
        the tree."""
        self.examples += 1
        name = self.session.fresh_name()
        self.session.mkroot(name, self.subvol)
        try:
            ops = self.session.run_ops([Op(0, i, n, a) for i, (n, a) in enumerate(specs)])
            walk = self.session.walk()
        finally:
            self.session.rmroot(name)
        res = check_log(
            self.fs, ops, walk, root_is_subvol=self.subvol, faults=self.faults, proc_dirs=False
        )
        return ExampleResult(name, ops, res, walk)


class Disagreement(AssertionError):
    pass


def disagrees(ex: ExampleResult) -> bool:
    return not ex.unmodeled and bool(ex.result.differences)


def minimize(runner: DifferentialRunner, ex: ExampleResult) -> ExampleResult:
    """Delta debugging after hypothesis' shrink: drop one op at a time (last first) while
    the example still disagrees, until no single op can go (1-minimal). Hypothesis' shrink
    of the state machine is often not 1-minimal (deleting a step changes which names later
    steps draw from the bundles, and its budget is bounded: :func:`search`); here the ops
    are explicit and stay as they are."""
    specs = [(op.name, dict(op.args)) for op in ex.ops]
    best = ex
    changed = True
    while changed and len(specs) > 1:
        changed = False
        for i in reversed(range(len(specs))):
            cand = specs[:i] + specs[i + 1 :]
            trial = runner.run_example(cand)
            if disagrees(trial):
                specs, best, changed = cand, trial, True
                break
    return best


@dataclass
class SearchOutcome:
    where: str
    fs: str
    faults: Faults
    examples: int  # examples run to their end and checked (hypothesis may begin more)
    seconds: float
    found: list[Op] | None = None
    found_after: int = 0  # examples run before the first disagreement
    shrunk_by_hypothesis: int = 0  # ops in hypothesis' shrunk example, before minimize()
    differences: list[Difference] = field(default_factory=list)
    log_path: Path | None = None
    command: str = ""
    checkers: list[Any] = field(default_factory=list)
    op_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (run, ok)

    def lines(self) -> list[str]:
        head = f"differential on {self.where}: {self.examples} examples in {self.seconds:.1f} s" + (
            f", model faults: {self.faults.spec()}" if self.faults else ""
        )
        out = [head]
        if self.found is None:
            out.append("no disagreement found")
        else:
            out.append(f"disagreement, shrunk to {len(self.found)} op(s):")
            out += [
                f"  {op.ref} {' '.join(f'{k}={v}' for k, v in op.args.items())} -> {op.result}"
                for op in self.found
            ]
            out += [f"  {d}" for d in self.differences[:10]]
            out.append(f"saved: {self.log_path}")
            out.append(f"replay: {self.command}")
        for c in self.checkers:
            out.append(f"{c.name}: {'clean' if c.ok else 'FAILED'} ({c.summary})")
        return out


def save_minimal(
    ex: ExampleResult,
    fs: str,
    faults: Faults,
    seed: int,
    results: Path,
    where: str,
    replay_args: str = "",
) -> tuple[Path, str]:
    """Save the minimal log (and its walk) under ``results``; return its path and the
    one-line command that replays it (``replay_args``: e.g. ``--target vm --kernel ...``
    when it was found in a guest)."""
    output_dir(results)
    tag = faults.spec().replace(",", "+") or "nofault"
    path = results / f"differential-{fs}-{tag}-seed{seed}.log"
    header = {
        "mode": "differential",
        "fs": fs,
        "root": "subvol" if fs == "btrfs" else "dir",
        "faults": faults.spec(),
        "hypothesis_seed": str(seed),
        "kernel": where,
    }
    cmd = f"fsoracle stress replay {path}" + (f" --fault {faults.spec()}" if faults else "")
    if replay_args:
        cmd += f" {replay_args}"
    text = format_log(header, ex.ops)
    lines = text.splitlines()
    lines.insert(2, f"# replay with: {cmd}")
    lines += [f"# difference: {d}" for d in ex.result.differences]
    write_atomic(path, "\n".join(lines) + "\n")
    walk = path.with_suffix(".walk.jsonl")
    write_atomic(walk, "".join(json.dumps(r, sort_keys=True) + "\n" for r in ex.walk))
    return path, cmd


# ---- the state machine -----------------------------------------------------------------
#
# Bundles hold the names made earlier in the example, by what was made there; a rule's
# path arguments are drawn from the bundle of their kind (model/fsstate/ops.py: KINDS).
# Names are never taken out: a name unlinked or renamed away stays, and an op on it is an
# ENOENT (or worse) the model must predict too.

CATEGORY_BUNDLES = {  # what was made -> the bundles its name joins
    "file": ("files", "nondirs", "names"),
    "dir": ("dirs", "parents", "names"),
    "symlink": ("symlinks", "nondirs", "names"),
    "subvol": ("subvols", "sources", "dirs", "parents", "names"),
}
MADE_CATEGORY = {  # what an op makes (Effects.made) -> the category of its name
    "file": "file",
    "dir": "dir",
    "symlink": "symlink",
    "subvol": "subvol",
    "snapshot": "subvol",
}
KIND_CATEGORIES = {  # a path kind -> the categories of name it takes
    ops.FILE: ("file",),
    ops.DIR: ("dir", "subvol"),
    ops.NONDIR: ("file", "symlink"),
    ops.ANY: ("file", "dir", "symlink", "subvol"),
    ops.SUBVOL: ("subvol",),
}
CATEGORY_BUNDLE = {"file": "files", "dir": "dirs", "symlink": "symlinks", "subvol": "subvols"}
KIND_BUNDLE = {
    ops.FILE: "files",
    ops.DIR: "dirs",
    ops.NONDIR: "nondirs",
    ops.ANY: "names",
}


# an op gets one rule per RULE_WEIGHT of its registry weight (at least one, shared by its
# per-category rules): hypothesis picks uniformly among the rules it may run, so this keeps
# the registry's proportions roughly, and swarm testing (a random subset of rules switched
# off per example) rarely switches off every rule of a frequent op
RULE_WEIGHT = 2


def _join(parent: str, name: str) -> str:
    return name if parent in ("", ".") else f"{parent}/{name}"


def _category(node: object) -> str:
    from model.fsstate.namespace import Dir, File, Symlink

    if isinstance(node, File):
        return "file"
    if isinstance(node, Symlink):
        return "symlink"
    if isinstance(node, Dir):
        return "subvol" if node.kind == "subvol" else "dir" if node.kind == "dir" else ""
    return ""


class ShrinkBudgetSpent(BaseException):
    """Hypothesis' shrinking stopped finding shorter failing examples (a BaseException:
    hypothesis lets it through without treating it as a failure of the example)."""


def machine_class(
    runner: DifferentialRunner,
    failing: list[ExampleResult],
    *,
    window: int = WINDOW,
    shrink_budget: int = 1 << 30,
) -> type[Any]:
    """A hypothesis ``RuleBasedStateMachine`` whose rules are ``runner``'s filesystem's ops
    from the registry (one rule per op; per source category for links and renames). Each
    instance is one example: a fresh root on the session's filesystem, each rule's op sent
    over the session and its result checked against the model as soon as it comes back
    (up to ``window`` ops stay unanswered after a step: their replies are read, and
    checked, while later ops run; 0: each op waits for its reply), the whole tree
    compared at teardown. A disagreement is recorded in ``failing`` and raised."""
    from hypothesis import reject
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        Bundle,
        RuleBasedStateMachine,
        initialize,
        multiple,
        precondition,
        rule,
    )

    from model.fsstate.namespace import FsModel, Unmodeled

    fs = runner.fs
    bundles = {
        n: Bundle(n)
        for n in ("names", "files", "dirs", "symlinks", "nondirs", "subvols", "sources", "parents")
    }
    new_name = st.tuples(bundles["parents"], st.sampled_from(NAMES))
    offset = st.one_of(st.integers(0, 3 * 4096 + 64), st.sampled_from([4096, 65536]))
    length = st.one_of(st.integers(0, 9000), st.sampled_from([4096, 65536]))

    def value_strategy(spec: ops.OpSpec, a: ops.Arg, source_category: str) -> Any:
        """The strategy of one argument: a bundle for a path that exists, a name from the
        pool for a new one, plain values for the rest."""
        if a.key == spec.effects.source and source_category:
            return bundles[CATEGORY_BUNDLE[source_category]]
        if a.kind == ops.SUBVOL:
            return bundles["subvols" if a.key in spec.effects.removes else "sources"]
        if a.kind in KIND_BUNDLE:
            return bundles[KIND_BUNDLE[a.kind]]
        if a.kind == ops.NEW:
            return new_name
        if a.kind == ops.DEST:
            return st.one_of(new_name, bundles["names"])
        if a.kind == ops.TARGET:  # finished by the rule, relative to the link's directory
            return st.one_of(
                bundles["parents"].map(lambda p: ("up", p)),
                st.sampled_from(NAMES).map(lambda n: ("rel", n)),
                st.just(("rel", "missing")),
            )
        if a.kind == ops.OFFSET:
            return offset
        if a.kind == ops.LENGTH:
            return length
        if a.kind == ops.SIZE:
            return st.integers(0, 20000)
        if a.kind in (ops.MODE, ops.FALLOC):
            return st.sampled_from(a.choices)
        if a.kind == ops.SEED:
            return st.integers(0, 7)
        if a.kind == ops.IOV:
            return st.lists(st.integers(0, 5000), min_size=1, max_size=3).map(
                lambda v: ",".join(map(str, v))
            )
        raise ValueError(f"{spec.name}.{a.key}: no strategy for kind {a.kind!r}")

    def finish(spec: ops.OpSpec, drawn: dict[str, Any]) -> dict[str, str]:
        """Drawn values -> the op's arguments, in line order."""
        out: dict[str, str] = {}
        for a in spec.args:
            v = drawn[a.key]
            if isinstance(v, tuple) and a.kind == ops.TARGET:
                how, t = v
                if how == "up":
                    where = _join(*drawn[a.of]) if isinstance(drawn[a.of], tuple) else ""
                    depth = where.count("/")
                    v = "/".join([".."] * depth + [t]) if t != "." else "/".join([".."] * depth)
                    v = v or "."
                else:
                    v = t
            elif isinstance(v, tuple):
                v = _join(*v)
            out[a.key] = str(v)
        return out

    class Example(RuleBasedStateMachine):
        def __init__(self) -> None:
            if runner.shortest and runner.examples - runner.shortest[1] >= shrink_budget:
                raise ShrinkBudgetSpent
            super().__init__()
            runner.examples += 1
            self.root = ""  # made with the first op (an example may end before it)
            self.model = FsModel(fs, root_is_subvol=runner.subvol, faults=runner.faults)
            self.sent: list[Op] = []  # every op sent, in order
            self.done: list[Op] = []  # the ops whose replies came, with their results
            self.expected: list[Any] = []  # the model's Expected for each op sent
            self.differences: list[Difference] = []
            self.failed = False
            self.rejected = False

        @initialize(targets=(bundles["parents"], bundles["sources"]))
        def the_root(self) -> str:
            return "."

        # -- the session --

        def receive(self) -> None:
            """Read the oldest reply and check its result against the model's."""
            got = runner.session.recv_op()
            i = len(self.done)
            want = self.sent[i]
            if (got.seq, got.name) != (want.seq, want.name):
                raise SessionError(f"reply {got.ref} to {want.ref}")
            n = runner.op_counts.setdefault(got.name, [0, 0])
            n[0] += 1
            n[1] += got.ok
            self.done.append(Op(want.proc, want.seq, want.name, want.args, got.result, got.extra))
            exp = self.expected[i]
            if exp is not None and not self.rejected:
                self.differences += result_differences(self.done[-1], exp)

        def check(self) -> None:
            if self.differences and not self.failed:
                self.failed = True
                raise Disagreement(str(self.differences[0]))

        def run(self, spec: ops.OpSpec, args: dict[str, str], category: str) -> Any:
            op = Op(0, len(self.sent), spec.name, args)
            if not self.root:
                self.root = runner.session.fresh_name()
                runner.session.mkroot(self.root, runner.subvol, wait=False)
            runner.session.send_op(op)
            self.sent.append(op)
            self.expected.append(None)
            try:
                exp = self.model.apply(op)
            except Unmodeled:
                self.rejected = True
                reject()
            self.expected[-1] = exp
            while len(self.sent) - len(self.done) > window:
                self.receive()
            self.check()
            if not category:
                return None
            made = self.model.node_at(args[spec.effects.makes])
            ok = not exp.result.startswith("E") and _category(made) == category
            return args[spec.effects.makes] if ok else multiple()

        def teardown(self) -> None:
            walk: list[dict[str, Any]] = []
            if not self.root:
                return
            # the walk and the removal of the root go out before the replies still owed
            # are read; the removal's "ok" is read before the next reply (a session that
            # fails here is lost: its error ends the search)
            s = runner.session
            s.send_walk()
            s.rmroot(self.root, wait=False)
            while len(self.done) < len(self.sent):
                self.receive()
            walk = s.recv_walk()
            if self.rejected:
                runner.rejected += 1
                return
            runner.checked += 1
            if not self.differences:
                actual = entries_from_walk(walk, self.model.sem)
                self.differences = diff_trees(self.model.entries(), actual, self.model)
            if self.differences:
                res = CompareResult(ops=len(self.done), differences=self.differences)
                res.model = self.model
                failing.append(ExampleResult(self.root, self.done, res, walk))
                runner.failures += 1
                if runner.first_failure is None:
                    runner.first_failure = runner.examples
                if runner.shortest is None or len(self.done) < runner.shortest[0]:
                    runner.shortest = (len(self.done), runner.examples)
            self.check()

    def add_rule(spec: ops.OpSpec, source_category: str = "", copy: int = 0) -> None:
        made = spec.effects.made
        category = source_category or MADE_CATEGORY.get(made, "")
        name = f"{spec.name}_{source_category}" if source_category else spec.name
        name += f"_{copy + 1}" if copy else ""
        # keyword "arg_KEY": an op argument may be called "target", a word rule() keeps
        strategies = {f"arg_{a.key}": value_strategy(spec, a, source_category) for a in spec.args}
        targets = tuple(bundles[b] for b in CATEGORY_BUNDLES.get(category, ()))

        def step(self: Example, **drawn: Any) -> Any:
            args = finish(spec, {k.removeprefix("arg_"): v for k, v in drawn.items()})
            return self.run(spec, args, category)

        step.__name__ = name
        if not targets and not any(isinstance(v, Bundle) for v in strategies.values()):
            # an op that names nothing (sync) waits for a file to exist: else an example
            # whose creating rules are switched off (hypothesis' swarm testing) would run
            # little but it
            def has_files(m: Example) -> bool:
                return bool(m.bundle("files"))

            step = precondition(has_files)(step)
        setattr(Example, name, rule(targets=targets, **strategies)(step))

    for spec in ops.ops_for(fs):
        cats = [""]
        if spec.effects.made in ("link", "move"):
            kind = spec.arg(spec.effects.source).kind
            cats = [c for c in KIND_CATEGORIES[kind] if c != "subvol" or runner.subvol]
        copies = max(1, -(-spec.weight // (RULE_WEIGHT * len(cats))))
        for cat in cats:
            for copy in range(copies):
                add_rule(spec, cat, copy)
    Example.__name__ = Example.__qualname__ = f"Differential_{fs}"
    return Example


def search(
    runner: DifferentialRunner,
    *,
    examples: int,
    seed: int = 0,
    max_ops: int = 12,
    results: Path = Path("results/stress"),
    where: str = "",
    replay_args: str = "",
    min_ops: int = 1,
    window: int = WINDOW,
    shrink_budget: int = 200,
) -> SearchOutcome:
    """Let hypothesis look for an op sequence on which the kernel and the model disagree
    (:func:`machine_class`: ``examples`` examples of ``min_ops`` to ``max_ops`` ops each,
    up to ``window`` ops in flight). A failing
    example is shrunk by hypothesis until ``shrink_budget`` examples in a row have found no
    failing example shorter than the shortest so far, then the shortest by
    :func:`minimize`; saved with its replay line (``replay_args`` added to it)."""
    try:
        from hypothesis import HealthCheck, Verbosity, settings
        from hypothesis import seed as hseed
        from hypothesis.errors import Flaky
        from hypothesis.stateful import run_state_machine_as_test
    except ImportError:
        raise UserError(
            "the differential test needs hypothesis (pip install -e '.[dev]')"
        ) from None

    failing: list[ExampleResult] = []
    machine = hseed(seed)(
        machine_class(runner, failing, window=window, shrink_budget=shrink_budget)
    )
    config = settings(
        max_examples=examples,
        stateful_step_count=max_ops + 1,  # the first step names the root
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
    )
    t0 = time.monotonic()
    out = SearchOutcome(where, runner.fs, runner.faults, 0, 0.0)
    start, checked = runner.examples, runner.checked
    runner.first_failure = runner.shortest = None
    runner.op_counts = {}
    try:
        run_state_machine_as_test(machine, settings=config, _min_steps=min_ops)
    except (Disagreement, Flaky, ShrinkBudgetSpent):
        if not failing:
            raise
        # hypothesis' last is its smallest by its own order; take the fewest ops
        best = min(reversed(failing), key=lambda ex: len(ex.ops))
        ex = minimize(runner, best)
        out.found = ex.ops
        out.found_after = (runner.first_failure or start) - start
        out.shrunk_by_hypothesis = len(best.ops)
        out.differences = ex.result.differences
        out.log_path, out.command = save_minimal(
            ex, runner.fs, runner.faults, seed, results, where, replay_args
        )
    runner.session.settle()  # the last example's removal of its root
    out.examples = runner.checked - checked
    out.seconds = time.monotonic() - t0
    out.op_counts = {k: (v[0], v[1]) for k, v in sorted(runner.op_counts.items())}
    return out
