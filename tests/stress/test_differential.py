"""Property-based differential testing against the HOST kernel on a loop mount: one mount
(one driver session) per filesystem serves every example. The planted-bug tests give the
model a Faults object and require the search to find the disagreement and shrink it to at
most five ops, saved with a command that replays it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.workload.differential import DifferentialRunner, search, sequences
from model.fsstate.faults import Faults
from model.fsstate.oplog import parse_log


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_no_disagreement_on_the_host_kernel(host_session, fs: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = DifferentialRunner(host_session(fs), fs)
    out = search(runner, examples=150, seed=1, results=tmp_path)
    assert out.found is None, "\n".join(out.lines())
    assert out.examples >= 150


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


def test_sequences_are_mostly_meaningful() -> None:
    """The strategy aims at what exists: in a sample, most ops succeed on the model."""
    from hypothesis import HealthCheck, given, settings

    from model.fsstate.namespace import FsModel
    from model.fsstate.oplog import Op

    ok = total = 0

    @settings(max_examples=60, database=None, suppress_health_check=list(HealthCheck))
    @given(sequences("btrfs", 12))
    def sample(specs):  # type: ignore[no-untyped-def]
        nonlocal ok, total
        m = FsModel("btrfs", root_is_subvol=True)
        for i, (n, a) in enumerate(specs):
            r = m.apply(Op(0, i, n, a)).result
            total += 1
            ok += not r.startswith("E")

    sample()
    assert ok > total / 2
