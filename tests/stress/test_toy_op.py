"""Adding an op takes its registry entry and its guest handler, nothing else.

The fixture adds a toy ``chmod`` (arguments ``path mode``) touching only those two places:
an entry registered in the op registry for the test (model semantics: set the permission
bits), and a guest handler given to the driver as a plugin file. Then the host differential
runs it on a loop-mounted image (the walk reports each path's mode, so the tree compare
checks what chmod did), and the seeded generator draws it from its declared kinds. The
expected values come from the host kernel: its results and its tree."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.target import TargetSpec
from harness.workload.differential import SearchOutcome
from harness.workload.diffrun import run_differential
from harness.workload.hostmount import MkfsSpec, loop_mount, make_image
from harness.workload.ontarget import DRIVER
from harness.workload.opstable import write_table
from harness.workload.sequences import regenerate
from harness.workload.stress import read_walk
from model.fsstate import ops
from model.fsstate.compare import check_log
from model.fsstate.crash import HistoryModel
from model.fsstate.namespace import Dir, FsModel, OpError
from model.fsstate.oplog import Op, parse_log
from tests.stress.conftest import need_fs

HOST = TargetSpec(kind="host")

# the guest handler: a plugin file for driver.py (--plugin)
CHMOD_HANDLER = """
import os


def op_chmod(self, a):
    os.chmod(self.p(a["path"]), int(a["mode"], 8))
    return "0", {}
"""


def chmod_semantics(model: FsModel, op: Op) -> str:
    """chmod(2) as root: follows symlinks (ENOENT for a dangling one, ELOOP for a loop,
    like every path walk of the model) and sets the permission bits. A btrfs stub
    directory keeps its mode (seen on the host kernel: chmod returns 0, the mode stays
    0755)."""
    node = model.resolve(op.arg("path"), True)
    if isinstance(node, Dir) and node.kind == "stub":
        return "0"
    node.mode = (node.mode & ~0o7777) | (op.int_arg("mode") & 0o7777)
    model.changed(node)
    return "0"


def chmod_entry(semantics: ops.Semantics = chmod_semantics) -> ops.OpSpec:
    return ops.OpSpec(
        "chmod",
        (ops.Arg("path", ops.ANY), ops.Arg("mode", ops.MODE, choices=("600", "755", "700"))),
        "chmod(path, mode)",
        weight=6,
        model=semantics,
    )


@pytest.fixture
def chmod_op(tmp_path: Path) -> Iterator[Path]:
    """The toy op: its registry entry, registered for the test, and its guest handler
    (the plugin file, returned)."""
    plugin = tmp_path / "chmod_handler.py"
    plugin.write_text(CHMOD_HANDLER)
    with ops.registered(chmod_entry()):
        yield plugin


def differential_with(semantics: ops.Semantics, tmp_path: Path, examples: int) -> SearchOutcome:
    """The host differential on ext4 (seed 0) with chmod modelled by ``semantics``."""
    plugin = tmp_path / "chmod_handler.py"
    plugin.write_text(CHMOD_HANDLER)
    with ops.registered(chmod_entry(semantics)):
        return run_differential(
            MkfsSpec(fs="ext4"),
            HOST,
            examples=examples,
            seed=0,
            plugins=[plugin],
            results=tmp_path / "res",
        )


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_a_toy_op_runs_through_the_host_differential(
    chmod_op: Path, fs: str, tmp_path: Path
) -> None:
    need_fs(fs)
    out = run_differential(
        MkfsSpec(fs=fs), HOST, examples=100, seed=2, plugins=[chmod_op], results=tmp_path / "res"
    )
    assert out.found is None, "\n".join(out.lines())
    assert all(c.ok for c in out.checkers), "\n".join(out.lines())
    run, ok = out.op_counts.get("chmod", (0, 0))
    assert ok >= 10 and run > ok, out.op_counts  # it ran, and failed sometimes (ENOENT)


def test_a_wrong_model_of_the_toy_op_is_found_and_shrunk(tmp_path: Path) -> None:
    """The kernel's tree holds the mode chmod set: a model that ignores it disagrees."""
    need_fs("ext4")

    def forgets_the_mode(model: FsModel, op: Op) -> str:
        model.resolve(op.arg("path"), True)
        return "0"

    out = differential_with(forgets_the_mode, tmp_path, examples=200)
    assert out.found is not None, "\n".join(out.lines())
    assert out.found[-1].name == "chmod" and len(out.found) <= 3, "\n".join(out.lines())
    assert any(d.field == "mode" for d in out.differences), "\n".join(out.lines())


def test_a_wrong_result_of_the_toy_op_is_caught_at_the_op(tmp_path: Path) -> None:
    """Each result is checked against the model's as it comes back: a model that expects
    EPERM where the kernel says ENOENT (no such path: the first op) is a one-op example."""
    need_fs("ext4")

    def always_eperm(model: FsModel, op: Op) -> str:
        raise OpError("EPERM")

    out = differential_with(always_eperm, tmp_path, examples=100)
    assert out.found is not None, "\n".join(out.lines())
    assert [op.name for op in out.found] == ["chmod"], "\n".join(out.lines())
    assert out.found[0].result == "ENOENT"
    d = out.differences[0]
    assert (d.kind, d.expected, d.actual, d.op) == ("result", "EPERM", "ENOENT", "p0#0 chmod")


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_the_seeded_generator_draws_the_toy_op(chmod_op: Path, fs: str, tmp_path: Path) -> None:
    """``driver.py run`` with the registry's table (``--op-table``) and the handler
    (``--plugin``): chmod is drawn, the model agrees with the kernel on every result and
    on the tree, the seed regenerates every op, and the crash model follows the log."""
    need_fs(fs)
    table = write_table(tmp_path / "ops.json")
    make_image(tmp_path / "fs.img", MkfsSpec(fs=fs, size=1 << 30))
    log_path, walk_path = tmp_path / "ops.log", tmp_path / "walk.jsonl"
    with loop_mount(tmp_path / "fs.img", tmp_path / "mnt") as mnt:
        subprocess.run(
            [
                sys.executable,
                str(DRIVER),
                "run",
                "-d",
                str(mnt / "run"),
                "-n",
                "300",
                "-p",
                "2",
                "-s",
                "4",
                "--fs",
                fs,
                "--log",
                str(log_path),
                "--walk",
                str(walk_path),
                "--op-table",
                str(table),
                "--plugin",
                str(chmod_op),
            ],
            check=True,
        )
    log = parse_log(log_path.read_text())
    chmods = [op for op in log.ops if op.name == "chmod"]
    assert len(chmods) > 10 and any(op.ok for op in chmods)
    res = check_log(fs, log.ops, read_walk(walk_path))
    assert res.differences == [], res.differences[:5]
    regen = regenerate(log)
    assert regen.differences == [] and regen.checked == len(log.ops) == 2 * 301
    model = HistoryModel(fs, proc_dirs=True)
    assert [model.apply(op).result for op in log.ops] == [op.result for op in log.ops]


def test_without_its_handler_the_driver_refuses_the_toy_op(chmod_op: Path, tmp_path: Path) -> None:
    """One line, exit 2, naming the op and the fix."""
    table = write_table(tmp_path / "ops.json")
    r = subprocess.run(
        [
            *(sys.executable, str(DRIVER), "run", "-d", str(tmp_path / "d"), "-n", "5"),
            *("--fs", "ext4", "--op-table", str(table)),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "driver.py run: no guest handler for chmod (give one with --plugin FILE)"
    ]
