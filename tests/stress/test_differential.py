"""Property-based differential testing against the HOST kernel on a loop mount: one mount
(one driver session) per filesystem serves every example. The planted-bug tests give the
model a Faults object and require the search to find the disagreement and shrink it to at
most five ops, 1-minimal (no single op can go), saved with a command that replays it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.workload.differential import DifferentialRunner, disagrees, search
from model.fsstate import ops
from model.fsstate.faults import Faults
from model.fsstate.oplog import parse_log


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_no_disagreement_on_the_host_kernel(host_session, fs: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = DifferentialRunner(host_session(fs), fs)
    out = search(runner, examples=150, seed=1, results=tmp_path)
    assert out.found is None, "\n".join(out.lines())
    assert out.examples >= 150
    # the rules aim at what exists (names made earlier, from the bundles): on the kernel,
    # most ops succeed, and every op of the registry for this filesystem ran
    run = sum(r for r, _ok in out.op_counts.values())
    ok = sum(ok for _r, ok in out.op_counts.values())
    assert ok > run / 2, out.op_counts
    assert set(out.op_counts) == {s.name for s in ops.ops_for(fs)}


PLANTED = [
    ("btrfs", "truncate_extra_byte"),
    ("btrfs", "rename_no_replace"),
    ("ext4", "truncate_extra_byte"),
    ("ext4", "rename_no_replace"),
]


@pytest.mark.parametrize(("fs", "fault"), PLANTED)
def test_planted_bug_is_found_and_shrunk(
    host_session, fs: str, fault: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    faults = Faults.parse(fault)
    runner = DifferentialRunner(host_session(fs), fs, faults)
    out = search(runner, examples=300, seed=0, results=tmp_path)
    assert out.found is not None, "\n".join(out.lines())
    assert len(out.found) <= 5, "\n".join(out.lines())
    names = [op.name for op in out.found]
    assert names[-1] == ("truncate" if fault == "truncate_extra_byte" else "rename")
    # the saved log replays: the model with the fault disagrees with the saved walk, the
    # model without it agrees; and a fresh host-kernel run reproduces the disagreement
    assert out.log_path is not None and out.log_path.parent == tmp_path
    assert out.command == f"fsoracle stress replay {out.log_path} --fault {fault}"
    log = parse_log(out.log_path.read_text())
    assert log.header["fs"] == fs and log.header["faults"] == fault
    assert len(log.ops) == len(out.found)
    argv = out.command.split()[1:]
    assert main([*argv, "--target", "model"]) == 1
    assert main(["stress", "replay", str(out.log_path), "--target", "model"]) == 0
    assert main(argv) == 1
    assert "difference" in capsys.readouterr().out
    # 1-minimal: without any one of its ops, the example agrees with the kernel
    specs = [(op.name, dict(op.args)) for op in out.found]
    for i in range(len(specs)):
        assert not disagrees(runner.run_example(specs[:i] + specs[i + 1 :])), i
