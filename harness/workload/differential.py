"""Property-based differential testing: hypothesis draws op sequences, a kernel runs them,
the model predicts them, any disagreement is shrunk to a minimal op log.

One mounted filesystem (one driver session) serves every example. Each example runs in a
fresh root below it (on btrfs a fresh subvolume, so snapshots of ``.`` work), checks each
op's result and then the whole tree against the model, and removes its root. Names come
from a pool of three (``a b c``, one to three levels deep) so ops collide: a creat then a
rename onto it, a truncate of what was written.

A failing example is shrunk by hypothesis (fewer ops, simpler ops: the strategy lists
creat, write, truncate first) and saved under ``results/stress/`` as an op log whose
header says how it ran, with the one-line command that replays it
(``fsoracle stress replay LOG [--fault ...]``).

Examples the model cannot follow (a symlink whose ``..`` climbs above the example's root)
are rejected, not counted as agreement.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, write_atomic
from harness.workload.hostmount import FsSpec, host_kernel, loop_mount, make_image, run_checkers
from harness.workload.session import DriverSession
from model.fsstate.compare import CheckResult, Difference, check_log
from model.fsstate.faults import Faults
from model.fsstate.oplog import Op, format_log

NAMES = ("a", "b", "c")
FALLOC_MODES = (
    "alloc",
    "keep_size",
    "punch_hole|keep_size",
    "zero_range",
    "zero_range|keep_size",
    "punch_hole",  # EOPNOTSUPP: punch hole needs keep size
)
Spec = tuple[str, dict[str, str]]


OPS = (
    "creat",
    "write",
    "truncate",
    "mkdir",
    "rename",
    "unlink",
    "rmdir",
    "link",
    "symlink",
    "read",
    "writev",
    "fallocate",
    "fsync",
    "fdatasync",
    "sync",
)
SUBVOL_OPS = ("subvol_create", "snapshot", "subvol_delete")


def sequences(fs: str, max_ops: int = 12, min_ops: int = 1) -> Any:
    """Op sequences as lists of (name, args).

    The strategy runs the (fault-free) model as it draws, so it can aim: data ops mostly at
    files that exist, creations mostly at fresh names in directories that exist, renames
    and links between existing names, symlinks at existing paths. Every choice shrinks
    toward the simple end: fewer ops, ``creat`` first in the op list, the first existing
    path, a name in the root, offset 0."""
    from hypothesis import strategies as st

    from model.fsstate.namespace import Dir, File, FsModel, OpError, Symlink, Unmodeled

    ops = OPS + (SUBVOL_OPS if fs == "btrfs" else ())
    off = st.one_of(st.integers(0, 3 * 4096 + 64), st.sampled_from([4096, 65536]))
    length = st.one_of(st.integers(0, 9000), st.sampled_from([4096, 65536]))

    @st.composite
    def build(draw: Any) -> list[Spec]:
        model = FsModel(fs, root_is_subvol=fs == "btrfs")
        out: list[Spec] = []

        def existing(kinds: tuple[type, ...] = (File, Dir, Symlink)) -> list[str]:
            return [p for p, n in model.walk() if isinstance(n, kinds)]

        def pick(cands: list[str], miss: int = 1) -> str:
            """An element of ``cands`` most of the time (``miss`` in 8 a fresh name)."""
            if cands and draw(st.integers(0, 7)) >= miss:
                return str(draw(st.sampled_from(cands)))
            return fresh()

        def fresh() -> str:
            dirs = [""] + [p for p, n in model.walk() if isinstance(n, Dir) and n.kind != "stub"]
            d = draw(st.sampled_from(dirs))
            name = draw(st.sampled_from(NAMES))
            return f"{d}/{name}" if d else name

        def new_name() -> str:
            """Usually fresh, sometimes an existing name (EEXIST and friends)."""
            return fresh() if draw(st.integers(0, 7)) < 6 else pick(existing(), 0)

        for _ in range(draw(st.integers(min_ops, max_ops))):
            name = draw(st.sampled_from(ops))
            a: dict[str, object]
            files = existing((File,))
            # nothing to act on yet: make it first (what the op would have found missing)
            if not files and name in ("write", "writev", "read", "truncate", "fallocate"):
                name = "creat"
            if not existing() and name in ("rename", "unlink", "link", "fsync", "fdatasync"):
                name = "creat"
            if not existing((Dir,)) and name in ("rmdir", "subvol_delete"):
                name = "mkdir" if name == "rmdir" else "subvol_create"
            if name == "creat":
                a = {"path": new_name(), "mode": draw(st.sampled_from(["644", "600", "755"]))}
            elif name == "mkdir":
                a = {"path": new_name(), "mode": draw(st.sampled_from(["755", "700"]))}
            elif name == "subvol_create":
                a = {"path": new_name()}
            elif name == "write":
                a = {"path": pick(files), "off": draw(off), "len": draw(length)}
                a["seed"] = draw(st.integers(0, 7))
            elif name == "writev":
                iov = draw(st.lists(st.integers(0, 5000), min_size=1, max_size=3))
                a = {"path": pick(files), "off": draw(off), "seed": draw(st.integers(0, 7))}
                a["iov"] = ",".join(map(str, iov))
            elif name == "read":
                a = {"path": pick(files), "off": draw(off), "len": draw(length)}
            elif name == "truncate":
                a = {"path": pick(files), "size": draw(st.integers(0, 20000))}
            elif name == "fallocate":
                a = {"path": pick(files), "mode": draw(st.sampled_from(FALLOC_MODES))}
                a["off"], a["len"] = draw(off), draw(length)
            elif name == "rename":
                old = pick(existing())
                others = [p for p in existing() if p != old]
                a = {"old": old, "new": new_name() if draw(st.booleans()) else pick(others, 0)}
            elif name == "link":
                a = {"old": pick(existing((File, Symlink))), "new": new_name()}
            elif name == "symlink":
                path = new_name()
                where = path.rpartition("/")[0]
                kind = draw(st.integers(0, 2))
                if kind == 0:
                    t = pick(existing())
                    rel = [".."] * (where.count("/") + 1 if where else 0) + [t]
                    target = "/".join(rel)
                elif kind == 1:
                    target = draw(st.sampled_from(NAMES))
                else:
                    target = "missing"
                a = {"target": target, "path": path}
            elif name == "snapshot":
                subvols = ["."] + [
                    p for p, n in model.walk() if isinstance(n, Dir) and n.kind == "subvol"
                ]
                a = {"src": pick(subvols, 0), "path": new_name()}
            elif name == "sync":
                a = {}
            elif name in ("rmdir", "subvol_delete"):
                a = {"path": pick(existing((Dir,)))}
            elif name == "unlink":
                a = {"path": pick(existing((File, Symlink)))}
            else:  # fsync fdatasync
                a = {"path": pick(existing())}
            spec = (name, {k: str(v) for k, v in a.items()})
            out.append(spec)
            with contextlib.suppress(OpError, Unmodeled):
                model.apply(Op(0, len(out) - 1, spec[0], spec[1]))
        return out

    return build()


@dataclass
class ExampleResult:
    name: str
    ops: list[Op]
    result: CheckResult
    walk: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unmodeled(self) -> bool:
        return any(d.kind == "unmodeled" for d in self.result.differences)


class DifferentialRunner:
    """Runs one example per call on ``session``'s filesystem and checks it."""

    def __init__(self, session: DriverSession, fs: str, faults: Faults | None = None) -> None:
        self.session = session
        self.fs = fs
        self.faults = faults or Faults()
        self.subvol = fs == "btrfs"
        self.examples = 0

    def run_example(self, specs: list[Spec]) -> ExampleResult:
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
    the example still disagrees, until no single op can go (1-minimal). The strategy draws
    later ops from the state earlier ones leave, so hypothesis alone cannot always delete an
    op without changing the others; here the ops are explicit and stay as they are."""
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
    examples: int
    seconds: float
    found: list[Op] | None = None
    differences: list[Difference] = field(default_factory=list)
    log_path: Path | None = None
    command: str = ""
    checkers: list[Any] = field(default_factory=list)

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
) -> SearchOutcome:
    """Let hypothesis look for an op sequence on which the kernel and the model disagree;
    shrink it and save it."""
    try:
        from hypothesis import HealthCheck, given, reject, settings
        from hypothesis import seed as hseed
        from hypothesis.errors import Flaky
    except ImportError:
        raise UserError(
            "the differential test needs hypothesis (pip install -e '.[dev]')"
        ) from None

    failing: list[ExampleResult] = []
    t0 = time.monotonic()

    @hseed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(sequences(runner.fs, max_ops, min_ops))
    def prop(specs: list[Spec]) -> None:
        ex = runner.run_example(specs)
        if ex.unmodeled:
            reject()
        if ex.result.differences:
            failing.append(ex)
            raise Disagreement(str(ex.result.differences[0]))

    out = SearchOutcome(where, runner.fs, runner.faults, 0, 0.0)
    start = runner.examples
    try:
        prop()
    except (Disagreement, Flaky):
        if not failing:
            raise
        ex = minimize(runner, failing[-1])
        out.found = ex.ops
        out.differences = ex.result.differences
        out.log_path, out.command = save_minimal(
            ex, runner.fs, runner.faults, seed, results, where, replay_args
        )
    out.examples = runner.examples - start
    out.seconds = time.monotonic() - t0
    return out


def run_host_differential(
    spec: FsSpec,
    *,
    examples: int,
    seed: int = 0,
    faults: Faults | None = None,
    max_ops: int = 12,
    results: Path = Path("results/stress"),
    workdir: Path | None = None,
) -> SearchOutcome:
    """A differential search on a fresh loop-mounted image of the host kernel, then the
    checkers on the image."""
    import tempfile

    spec.validate()
    with tempfile.TemporaryDirectory(prefix="fsoracle-diff-", dir=workdir) as tmp:
        image, mnt = Path(tmp) / "fs.img", Path(tmp) / "mnt"
        make_image(image, spec)
        where = f"{host_kernel()}, {spec.label()}"
        with loop_mount(image, mnt), DriverSession.host(mnt) as session:
            runner = DifferentialRunner(session, spec.fs, faults)
            out = search(
                runner, examples=examples, seed=seed, max_ops=max_ops, results=results, where=where
            )
        out.checkers = run_checkers(image, spec.fs)
    return out
