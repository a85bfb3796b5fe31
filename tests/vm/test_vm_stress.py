"""The stress family in a guest (the VM target of :mod:`harness.target`): the differential
(with planted model bugs), a stress run, crash runs, and (heavy) the 5 000-op acceptance
runs, on every kernel of ``kernel_spec``. The same experiment code runs on the host target
in tests/stress.

Boots are batched: one boot serves the differential on three filesystems and both planted
bugs; a crash run needs its own boot and shares the remount boot with the other crash runs.
Expected values: the model's (which is what is under test against the kernel), the real
checkers' verdicts, and for the planted bugs the op the fault is in."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from vmtesting import require_root, require_tools

from harness.cli import main
from harness.target import DiskSpec, TargetSpec, open_target
from harness.workload.crash import CrashJob, crash_jobs, run_crashes
from harness.workload.differential import DifferentialRunner, search
from harness.workload.fsx import fsx_on, prepare_fsx
from harness.workload.hostmount import MkfsSpec, make_image, run_checkers
from harness.workload.ontarget import session
from harness.workload.replay import prepare_replay, replay_on
from harness.workload.stress import StressConfig, run_stress
from model.fsstate.crash import check_crash
from model.fsstate.faults import Faults
from model.fsstate.oplog import parse_log, write_data

SPECS = [
    MkfsSpec("btrfs", "mkfs", "extent-tree"),
    MkfsSpec("btrfs", "writer", "bg-tree"),
    MkfsSpec("ext4"),
]
STALE = Path(__file__).parent / "test_data" / "btrfs-stale-tail-after-expanding-truncate.log"
PLANTED = [("btrfs", "truncate_extra_byte", "truncate"), ("ext4", "rename_no_replace", "rename")]


@pytest.fixture
def stress_tools(vm_tools: None) -> None:
    require_root()
    require_tools("mkfs.btrfs", "btrfs", "mke2fs", "e2fsck", "debugfs", "cp", "mount")


def target(kernel_spec: str, tmp_path: Path, **kw: object) -> TargetSpec:
    return TargetSpec(kind="vm", kernel=kernel_spec, **kw)  # type: ignore[arg-type]


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_vm_differential_per_filesystem_and_planted_bugs(
    stress_tools: None, kernel_spec: str, tmp_path: Path
) -> None:
    """One boot, three images (btrfs extent tree from mkfs.btrfs, btrfs bg-tree from our
    writer, ext4), two fresh ones to replay the planted bugs' logs on, one for fsx: a
    bounded hypothesis search on each finds no disagreement; then, with a fault object
    planted in the model, the search finds it and shrinks it to <= 5 ops, saved with a
    one-line replay command for the same kernel, which replays on this kernel too."""
    tgt = target(kernel_spec, tmp_path)
    results = tmp_path / "results"
    (tmp_path / "img").mkdir()
    disks = [DiskSpec(tmp_path / "img" / f"fs{i}.img", sp.fs) for i, sp in enumerate(SPECS)]
    for d, sp in zip(disks, SPECS, strict=True):
        make_image(d.image, sp)
    # one fresh image per planted bug: its saved log is replayed on this kernel (replay_on)
    replays = [prepare_replay(tmp_path / f"replay-{fs}", MkfsSpec(fs)) for fs, _f, _l in PLANTED]
    fsx_disk = prepare_fsx(MkfsSpec("btrfs"), tmp_path / "fsx")
    with open_target(tgt, [*disks, *replays, fsx_disk], name="differential") as t:
        # fsx (every read checked against an in-memory copy) on the same boot
        fsx = fsx_on(t, len(t.disks) - 1, MkfsSpec("btrfs"), tmp_path / "fsx", seed=3, ops=300)
        assert fsx.ok and fsx.ops == 301, fsx.lines()
        for d in t.disks[: len(SPECS)]:
            t.mount(d)
        for i, spec in enumerate(SPECS):
            runner = DifferentialRunner(session(t, t.disks[i]), spec.fs)
            out = search(runner, examples=40, seed=1, results=results, where=t.label)
            assert out.found is None, "\n".join(out.lines())
            assert out.examples >= 40
        for fs, fault, last in PLANTED:
            i = next(k for k, s in enumerate(SPECS) if s.fs == fs)
            faults = Faults.parse(fault)
            runner = DifferentialRunner(session(t, t.disks[i]), fs, faults)
            out = search(
                runner,
                examples=300,
                seed=0,
                results=results,
                where=t.label,
                replay_args=tgt.replay_args(),
            )
            assert out.found is not None, "\n".join(out.lines())
            assert len(out.found) <= 5 and out.found[-1].name == last, "\n".join(out.lines())
            assert out.log_path is not None and out.log_path.parent == results
            assert out.command == (
                f"fsoracle stress replay {out.log_path} --fault {fault}"
                f" --target vm --kernel {kernel_spec}"
            )
            log = parse_log(out.log_path.read_text())
            assert log.header["faults"] == fault and len(log.ops) == len(out.found)
            # the saved kernel results: wrong for the faulty model, right for the model
            argv = ["stress", "replay", str(out.log_path), "--target", "model"]
            assert main([*argv, "--fault", fault]) == 1
            assert main(argv) == 0
            # and run again on this kernel, the faulty model still disagrees with it
            k = len(SPECS) + [f for _fs, f, _l in PLANTED].index(fault)
            where = tmp_path / f"replay-{fs}"
            rep = replay_on(t, k, out.log_path, log, MkfsSpec(fs), faults=faults, out=where)
            assert rep.result.differences and all(c.ok for c in rep.checkers), rep.lines()
            assert rep.where.startswith(t.label)
        faults_seen = t.faults()
    for d, sp in zip(disks, SPECS, strict=True):
        checkers = run_checkers(d.image, sp.fs)
        assert checkers and all(c.ok for c in checkers), [c.summary for c in checkers]
    assert faults_seen == []


@pytest.mark.vm
@pytest.mark.timeout(1500)
def test_vm_stress_run_and_a_crash_run(
    stress_tools: None,
    kernel_spec: str,
    tmp_path: Path,
    fsoracle: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """``fsoracle stress --target vm`` (ext4 on NVMe, small) agrees with the model and the
    checkers; one crash run on btrfs, cut at op line 500 of 802, recovers clean with every
    fsync'd file exact, and the same check flags a synced file whose contents changed.
    Sharing the remount boot: the saved reproducer of the stale tail the random crash runs
    found on btrfs (test_data/btrfs-stale-tail-after-expanding-truncate.log)."""
    out = tmp_path / "run"
    p = fsoracle(
        "stress",
        "--target",
        "vm",
        "--kernel",
        kernel_spec,
        "--fs",
        "ext4",
        "--device",
        "nvme",
        "--ops",
        "150",
        "--procs",
        "2",
        "--seed",
        "7",
        "--out",
        str(out),
        timeout=1200,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["ok"] and rep["ops_logged"] == 302 and rep["sequences"]["checked"] == 302
    assert "nvme" in rep["kernel"] and rep["model_differences"] == []

    jobs = crash_jobs(
        MkfsSpec("btrfs"), tmp_path / "crash", seed=3, ops=400, procs=2, crash_at="500"
    )
    stale = CrashJob(MkfsSpec("btrfs"), tmp_path / "stale", 0, 9, 1, 9, "op line 9", replay=STALE)
    crep, srep = run_crashes(target(kernel_spec, tmp_path), [*jobs, stale])
    assert crep.ok, "\n".join(crep.lines())
    assert 500 <= crep.lines_at_kill <= crep.ops_logged < 802 and not crep.driver_finished
    assert crep.crash is not None and crep.crash.strict_checked > 0
    assert crep.replay_messages and not crep.mount_error

    # the stock kernels bring back the old bytes of the block past the old end of file
    assert srep.model is not None and srep.model.ok and srep.crash is not None
    assert all(c.ok for c in srep.checkers)
    if kernel_spec in ("debian:6.12", "debian:6.1"):
        assert [str(f) for f in srep.crash.findings] == [
            f"garbage: p0/f: byte 16583 (block 4) is {write_data(1, 20480)[16583]:#04x}, a value"
            " it never had there since the file's last sync point (p0#6 truncate)"
            " [known: btrfs-stale-tail]"
        ]
        assert not srep.ok and srep.ok_except_known

    # the same judgement flags a synced file that lost a byte
    from harness.workload.crash import crash_model
    from harness.workload.sequences import regenerate
    from harness.workload.stress import read_walk

    job = jobs[0]
    log = parse_log((job.out / "ops.log").read_text())
    model, _skip = crash_model("btrfs", log, regenerate(log, next_op=True).next_ops)
    walk = read_walk(job.out / "walk.jsonl")
    strict = [p for p, r in model.strict.items() if model.strict_valid(r) and r.node.data]
    victim = next(r for r in walk if r["path"] == strict[0])
    victim["sha256"] = "0" * 64
    victim["block_sha"] = ["0" * 16, *victim["block_sha"][1:]]
    bad = check_crash(model, walk)
    assert {f.rule for f in bad.findings} == {"fsync", "garbage"}
    assert all(f.path == strict[0] for f in bad.findings)


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.heavy  # 15-17 min per kernel here: make vm-test-heavy
@pytest.mark.timeout(5400)
def test_vm_stress_5000_ops_4_processes(
    stress_tools: None, kernel_spec: str, tmp_path: Path
) -> None:
    """The acceptance run: seed 42, 4 processes x 5 000 ops on btrfs (extent tree from
    mkfs.btrfs, bg-tree from our writer) and ext4, one boot: zero differences, clean
    checkers, our reader / debugfs agree with the kernel's walk, every op regenerated from
    the seed, and the two btrfs runs made the same per-process op sequences."""
    jobs = [
        StressConfig(s, tmp_path / f"job{i}", seed=42, ops=5000, procs=4)
        for i, s in enumerate(SPECS)
    ]
    reps = run_stress(jobs, target(kernel_spec, tmp_path))
    summary = "\n\n".join("\n".join(r.lines()) for r in reps)
    print(summary)
    for r in reps:
        assert r.ok, summary
        assert r.ops_logged == 4 * 5001 and r.sequences_checked == r.ops_logged
        assert all(c.ok for c in r.checkers) and len(r.checkers) >= 1
    logs = [parse_log((j.out / "ops.log").read_text()) for j in jobs[:2]]
    seqs = [[(o.proc, o.seq, o.name, o.args, o.result) for o in lg.ops] for lg in logs]
    assert seqs[0] == seqs[1]


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_vm_crash_runs_at_random_points(
    stress_tools: None, kernel_spec: str, tmp_path: Path
) -> None:
    """Random cut points on btrfs and ext4 (2 runs each, 4 processes x 300 ops): clean
    checkers after the remount, fsync'd files exact, nothing garbage but the known btrfs
    stale tail."""
    tgt = target(kernel_spec, tmp_path)
    jobs = []
    for spec in (MkfsSpec("btrfs"), MkfsSpec("ext4")):
        jobs += crash_jobs(
            spec,
            tmp_path / spec.fs,
            seed=100,
            ops=300,
            procs=4,
            crash_at="random",
            runs=2,
        )
    reps = run_crashes(tgt, jobs)
    text = "\n\n".join("\n".join(r.lines()) for r in reps)
    print(text)
    # the btrfs stale tail (model.fsstate.crash.KNOWN) shows at some cut points, on 6.1
    # more often: reported, tagged and allowed here; anything else fails
    assert all(r.ok_except_known for r in reps), text
    assert sum(r.crash.strict_checked for r in reps if r.crash) > 0
