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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
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


def op_strategy(fs: str) -> Any:
    """One op as (name, args). Earlier alternatives are simpler for the shrinker."""
    from hypothesis import strategies as st

    name = st.sampled_from(NAMES)
    path = st.one_of(name, st.lists(name, min_size=2, max_size=3).map("/".join))
    target = st.one_of(path, path.map(lambda p: "../" + p), st.just("missing"))
    off = st.one_of(st.integers(0, 3 * 4096 + 64), st.sampled_from([4096, 65536]))
    length = st.one_of(st.integers(0, 9000), st.sampled_from([4096, 65536]))
    seed = st.integers(0, 7)

    def op(op_name: str, **kw: Any) -> Any:
        return st.fixed_dictionaries(kw).map(lambda a: (op_name, {k: str(v) for k, v in a.items()}))

    choices = [
        op("creat", path=path, mode=st.sampled_from(["644", "600", "755"])),
        op("write", path=path, off=off, len=length, seed=seed),
        op("truncate", path=path, size=st.integers(0, 20000)),
        op("mkdir", path=path, mode=st.sampled_from(["755", "700"])),
        op("rename", old=path, new=path),
        op("unlink", path=path),
        op("rmdir", path=path),
        op("link", old=path, new=path),
        op("symlink", target=target, path=path),
        op("read", path=path, off=off, len=length),
        op(
            "writev",
            path=path,
            off=off,
            seed=seed,
            iov=st.lists(st.integers(0, 5000), min_size=1, max_size=3).map(
                lambda v: ",".join(map(str, v))
            ),
        ),
        op("fallocate", path=path, mode=st.sampled_from(FALLOC_MODES), off=off, len=length),
        op("fsync", path=path),
        op("fdatasync", path=path),
        op("sync"),
    ]
    if fs == "btrfs":
        choices += [
            op("subvol_create", path=path),
            op("snapshot", src=st.one_of(st.just("."), path), path=path),
            op("subvol_delete", path=path),
        ]
    return st.one_of(choices)


def sequences(fs: str, max_ops: int = 12) -> Any:
    from hypothesis import strategies as st

    return st.lists(op_strategy(fs), min_size=1, max_size=max_ops)


@dataclass
class ExampleResult:
    name: str
    ops: list[Op]
    result: CheckResult

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
        name = f"ex{self.examples}"
        self.session.mkroot(name, self.subvol)
        try:
            ops = self.session.run_ops([Op(0, i, n, a) for i, (n, a) in enumerate(specs)])
            walk = self.session.walk()
        finally:
            self.session.rmroot(name)
        res = check_log(
            self.fs, ops, walk, root_is_subvol=self.subvol, faults=self.faults, proc_dirs=False
        )
        return ExampleResult(name, ops, res)


class Disagreement(AssertionError):
    pass


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
    ex: ExampleResult, fs: str, faults: Faults, seed: int, results: Path, where: str
) -> tuple[Path, str]:
    results.mkdir(parents=True, exist_ok=True)
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
    text = format_log(header, ex.ops)
    lines = text.splitlines()
    lines.insert(2, f"# replay with: {cmd}")
    lines += [f"# difference: {d}" for d in ex.result.differences]
    path.write_text("\n".join(lines) + "\n")
    return path, cmd


def search(
    runner: DifferentialRunner,
    *,
    examples: int,
    seed: int = 0,
    max_ops: int = 12,
    results: Path = Path("results/stress"),
    where: str = "",
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
    @given(sequences(runner.fs, max_ops))
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
        ex = failing[-1]
        out.found = ex.ops
        out.differences = ex.result.differences
        out.log_path, out.command = save_minimal(ex, runner.fs, runner.faults, seed, results, where)
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
