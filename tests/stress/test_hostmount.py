"""Stress runs on the HOST kernel (a loop mount): the interim evidence before the VM half.
Every run must end with no difference between kernel and model, clean checkers, and the
image read back without the kernel (our btrfs reader, debugfs) equal to the kernel's walk.
The tamper tests show those comparisons can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.target import TargetSpec
from harness.workload.hostmount import MkfsSpec, loop_mount, make_image, outside_view
from harness.workload.ontarget import DRIVER
from harness.workload.stress import (
    StressConfig,
    StressReport,
    compare_outside_view,
    read_walk,
    run_stress,
)
from model.fsstate.oplog import parse_log, write_data
from tests.stress.conftest import need_fs

HOST = TargetSpec(kind="host")


def host_stress(cfg: StressConfig) -> StressReport:
    """One stress run on the host target."""
    (rep,) = run_stress([cfg], HOST)
    return rep


SMALL = [
    ("btrfs", "mkfs", "extent-tree"),
    ("btrfs", "writer", "bg-tree"),
    ("ext4", "mkfs", "extent-tree"),
]


@pytest.mark.parametrize(("fs", "maker", "layout"), SMALL)
def test_small_stress_run_agrees_everywhere(
    tmp_path: Path, fs: str, maker: str, layout: str
) -> None:
    need_fs(fs, maker)
    rep = host_stress(
        StressConfig(MkfsSpec(fs, maker, layout, 1 << 30), tmp_path, seed=5, ops=400, procs=2)
    )
    assert rep.ops_logged == 2 * 401
    assert rep.model is not None and rep.model.differences == [], rep.lines()
    assert [c.name for c in rep.checkers if not c.ok] == [], rep.lines()
    assert rep.view_differences == [] and rep.view_findings == [], rep.lines()
    assert rep.view_inodes == rep.walk_inodes > 50
    assert rep.ok
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["kernel"].startswith("host kernel")


def test_same_seed_same_sequences(tmp_path: Path) -> None:
    """Two runs with one seed log the same op lines per process (results included), and a
    different seed does not."""
    need_fs("btrfs")
    make_image(tmp_path / "fs.img", MkfsSpec("btrfs", size=1 << 30))
    logs = {}
    with loop_mount(tmp_path / "fs.img", tmp_path / "mnt") as mnt:
        for name, seed in (("one", 9), ("two", 9), ("other", 10)):
            log = tmp_path / f"{name}.log"
            subprocess.run(
                [
                    sys.executable,
                    str(DRIVER),
                    "run",
                    "-d",
                    str(mnt / name),
                    "-n",
                    "300",
                    "-p",
                    "3",
                    "-s",
                    str(seed),
                    "--fs",
                    "btrfs",
                    "--log",
                    str(log),
                ],
                check=True,
            )
            ops = parse_log(log.read_text()).ops
            logs[name] = [(o.proc, o.seq, o.name, o.args, o.result, o.extra) for o in ops]
    assert len(logs["one"]) == 3 * 301
    assert logs["one"] == logs["two"]
    assert logs["one"] != logs["other"]
    per_proc = [[x for x in logs["one"] if x[0] == p] for p in range(3)]
    assert per_proc[0][1:] != per_proc[1][1:]  # each process has its own stream


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_fsx_mode(tmp_path: Path, fs: str) -> None:
    from harness.workload.fsx import run_fsx

    need_fs(fs)
    rep = run_fsx(MkfsSpec(fs, size=1 << 30), tmp_path, HOST, seed=3, ops=600)
    assert rep.driver_ok, rep.lines()
    assert rep.model.differences == [] and rep.ok, rep.lines()
    assert rep.ops == 601


def _write_file(mnt: Path, data: bytes) -> None:
    (mnt / "run").mkdir()
    (mnt / "run" / "f").write_bytes(data)
    (mnt / "run" / "g").write_bytes(b"small")


def _flip(image: Path, offset: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_btrfs_outside_view_sees_a_flipped_data_byte(tmp_path: Path) -> None:
    from model.blocksource import FileSource
    from model.btrfs import constants as C
    from model.btrfs.fsview import index_tree, read_namespace
    from model.btrfs.reader import BtrfsImage

    need_fs("btrfs")
    image = tmp_path / "fs.img"
    make_image(image, MkfsSpec("btrfs", size=1 << 30))
    data = write_data(1, 3 * 4096)
    with loop_mount(image, tmp_path / "mnt") as mnt:
        _write_file(mnt, data)
        walk_out = subprocess.run(
            [sys.executable, str(DRIVER), "walk", str(mnt / "run")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    walk = [json.loads(x) for x in walk_out.splitlines()]
    assert compare_outside_view(walk, outside_view(image, "btrfs", "run"), "btrfs") == []
    src = FileSource(str(image))
    img = BtrfsImage.open(src)
    ino = next(r["ino"] for r in read_namespace(img, "run").records if r["path"] == "f")
    (fe, _raw) = index_tree(img, C.FS_TREE_OBJECTID).extents[ino][0]
    phys = img.chunk_map.map_read(fe.disk_bytenr + fe.offset, 4096)[0]
    src.close()
    _flip(image, phys + 100)
    diffs = compare_outside_view(walk, outside_view(image, "btrfs", "run"), "btrfs")
    assert [(d.path, d.field) for d in diffs] == [("f", "sha256")]
    from harness.workload.hostmount import run_checkers

    ours = run_checkers(image, "btrfs")[0]
    assert not ours.ok and "csum" in ours.output.lower()


def test_ext4_outside_view_sees_a_flipped_data_byte(tmp_path: Path) -> None:
    need_fs("ext4")
    image = tmp_path / "fs.img"
    make_image(image, MkfsSpec("ext4", size=1 << 30))
    with loop_mount(image, tmp_path / "mnt") as mnt:
        _write_file(mnt, write_data(2, 3 * 4096))
        ino = (mnt / "run" / "f").stat().st_ino
        walk_out = subprocess.run(
            [sys.executable, str(DRIVER), "walk", str(mnt / "run")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    walk = [json.loads(x) for x in walk_out.splitlines()]
    assert compare_outside_view(walk, outside_view(image, "ext4", "run"), "ext4") == []
    r = subprocess.run(
        ["debugfs", "-R", f"bmap <{ino}> 1", str(image)], capture_output=True, text=True
    )
    block = int(r.stdout.strip())
    _flip(image, block * 4096 + 7)
    diffs = compare_outside_view(walk, outside_view(image, "ext4", "run"), "ext4")
    assert [(d.path, d.field) for d in diffs] == [("f", "sha256")]


def test_model_catches_a_tampered_walk(tmp_path: Path) -> None:
    """The model comparison can fail: a walk edited after the run differs, and the
    difference names the op that last changed the file."""
    from harness.workload.stress import analyse_run

    need_fs("ext4")
    rep = host_stress(StressConfig(MkfsSpec("ext4", size=1 << 30), tmp_path, ops=200, procs=1))
    assert rep.ok
    log = parse_log((tmp_path / "ops.log").read_text())
    walk = read_walk(tmp_path / "walk.jsonl")
    victim = next(r for r in walk if "sha256" in r and r["size"] > 0)
    victim["sha256"] = "0" * 64
    res = analyse_run("ext4", log, walk)
    [d] = res.differences
    assert (d.path, d.field) == (victim["path"], "sha256")
    assert d.op.startswith("p0#")


BIG = [
    ("btrfs", "mkfs", "extent-tree"),
    ("btrfs", "writer", "bg-tree"),
    ("btrfs", "mkfs", "bg-tree"),
    ("ext4", "mkfs", "extent-tree"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("fs", "maker", "layout"), BIG)
def test_5000_ops_4_procs_host_kernel(tmp_path: Path, fs: str, maker: str, layout: str) -> None:
    """Issue 6's acceptance run, on the host kernel until the VM half repeats it."""
    need_fs(fs, maker)
    rep = host_stress(
        StressConfig(MkfsSpec(fs, maker, layout), tmp_path, seed=42, ops=5000, procs=4)
    )
    assert rep.ops_logged == 4 * 5001
    assert rep.ok, "\n".join(rep.lines())


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_crash_runs_on_the_host_target(tmp_path: Path, fs: str) -> None:
    """The crash experiment's code on the host target (the power cut is a freeze: what had
    returned before it survives): the logged ops agree with the model, the crash rules
    find nothing, the checkers are clean, and a cut before the driver finished leaves at
    most one op per process in flight."""
    from harness.workload.crash import crash_jobs, run_crashes

    need_fs(fs)
    jobs = crash_jobs(
        MkfsSpec(fs, size=1 << 30), tmp_path, seed=7, ops=300, procs=2, crash_at="random", runs=2
    )
    reps = run_crashes(HOST, jobs)
    for r in reps:
        assert r.ok, "\n".join(r.lines())
        assert r.kernel.startswith("host kernel")
        assert 0 < r.ops_logged <= 2 * 301
        assert len(r.inflight) <= 2
        assert r.crash is not None and r.crash.files_checked > 0
        assert json.loads((r_out(jobs, r) / "report.json").read_text())["schema"] == 1


def r_out(jobs: list[Any], rep: Any) -> Path:
    return next(j.out for j in jobs if j.seed == rep.seed)
