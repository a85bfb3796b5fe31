"""Crash consistency on any target: ``fsoracle stress --crash-at K|random``.

One crash run:

1. **Host**: make the filesystem (``base.img``) and copy it (``fs.img``, sparse): the target
   writes the copy, the made image stays as it was.
2. **Target 1** (:mod:`harness.target`, opened with ``log_port``): the image as a disk; the
   driver runs ``run ... --log -`` through ``start_logged``, so each op's log line is in a
   host file before the op's process goes on (in a VM: a virtio console port, see
   :mod:`harness.target.vm`). Each process has at most one op after its last logged one
   that may have run (the *in-flight* op). When op line K arrives (``--crash-at K``;
   ``random``: K drawn from the seed) the host calls ``cut_power``: a VM's QEMU quits (no
   sync, no unmount, the page cache lost); the host target freezes the filesystem, kills the
   workload and keeps the image as it was at the freeze (:mod:`harness.target.host`).
3. **Target 2**, the same kernel: mount the image (btrfs replays its log tree, ext4 its
   journal), keep the kernel's messages, walk the run directory with per-block hashes
   (``walk --blocks``), unmount. Several crashed images share one such target.
4. **Host**: both checkers on the image (``fsoracle btrfs check`` + ``btrfs check``;
   ``e2fsck -fn``), our reader's / debugfs' view against the walk, every logged op's
   result against the model, each process's ops regenerated from the seed (which also
   names its in-flight op), and the crash rules of :mod:`model.fsstate.crash` (fsync'd
   files exact; nothing else ever garbage) over the logged ops plus the in-flight ones.

:func:`run_crashes` is the experiment (``report.json`` with ``"schema": 1`` per run). It
takes a :class:`~harness.target.TargetSpec`, not an open target: a crash ends its target,
and step 3 needs a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, write_atomic
from harness.target import DiskSpec, TargetSpec, open_target
from harness.workload.hostmount import (
    CheckerResult,
    MkfsSpec,
    loop_mount,
    make_image,
    outside_view,
    run_checkers,
)
from harness.workload.ontarget import RUN_DIR, driver_argv, make_subvol_root, scratch
from harness.workload.sequences import regenerate
from harness.workload.stress import SCHEMA, compare_outside_view, read_walk, stress_timeout
from model.fsstate.compare import CompareResult, Difference, check_log
from model.fsstate.crash import BLOCK, KNOWN, CrashResult, HistoryModel, check_crash
from model.fsstate.namespace import Unmodeled
from model.fsstate.oplog import LogError, Op, OpLog, parse_log

REMOUNT_BATCH = 8  # crashed images per remount target


def crash_point(seed: int, procs: int, ops: int) -> int:
    """``--crash-at random``: an op line drawn uniformly from the run's ``procs * (ops+1)``
    lines, from ``seed`` alone (so a run is reproducible)."""
    return random.Random(f"fsoracle-crash:{seed}").randint(1, procs * (ops + 1))


@dataclass
class CrashJob:
    spec: MkfsSpec
    out: Path
    seed: int
    ops: int
    procs: int
    crash_at: int
    how: str  # "op K" or "random: op K"
    keep_image: bool = False
    replay: Path | None = None  # run this op log again (driver.py replay) instead of a seed


@dataclass
class CrashReport:
    kernel: str
    label: str
    seed: int
    ops_per_proc: int
    procs: int
    crash_at: int
    how: str
    lines_at_kill: int = 0
    ops_logged: int = 0
    driver_finished: bool = False
    inflight: list[str] = field(default_factory=list)
    replay_messages: list[str] = field(default_factory=list)
    mount_error: str = ""
    model: CompareResult | None = None
    sequences_checked: int = 0
    sequence_differences: list[str] = field(default_factory=list)
    unmodeled: list[str] = field(default_factory=list)
    crash: CrashResult | None = None
    checkers: list[CheckerResult] = field(default_factory=list)
    view_tool: str = ""
    view_differences: list[Difference] = field(default_factory=list)
    view_findings: list[str] = field(default_factory=list)
    kernel_faults: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    paths: int = 0
    replayed_from: str = ""

    @property
    def ok(self) -> bool:
        return self.ok_except_known and self.crash is not None and self.crash.ok

    @property
    def ok_except_known(self) -> bool:
        """:attr:`ok`, except that crash findings matching a known kernel behaviour
        (``model.fsstate.crash.KNOWN``) are allowed."""
        return (
            not self.mount_error
            and self.model is not None
            and self.model.ok
            and not self.sequence_differences
            and self.crash is not None
            and not self.crash.unexplained
            and all(c.ok for c in self.checkers)
            and not self.view_differences
            and not self.view_findings
            and not self.kernel_faults
        )

    def lines(self, limit: int = 20) -> list[str]:
        out = [
            f"crash run on {self.kernel}: {self.label}, seed {self.seed}, {self.procs} processes"
            f" x {self.ops_per_proc} ops; cut at {self.how}: power cut when line"
            f" {self.lines_at_kill} had arrived"
            + (" (after the driver had finished)" if self.driver_finished else ""),
            f"ops logged before the cut: {self.ops_logged}; in flight (may have run):"
            f" {', '.join(self.inflight) or 'none'}",
        ]
        if self.mount_error:
            out.append(f"MOUNT AFTER THE CRASH FAILED: {self.mount_error}")
        out.append("recovery: " + (" | ".join(self.replay_messages[-4:]) or "no kernel message"))
        if self.model is not None:
            d = self.model.differences
            out.append(f"logged results vs model: {len(d)} difference(s) over {self.model.ops} ops")
            out += [f"  {x}" for x in d[:limit]]
        if self.replayed_from:
            out.append(f"ops replayed from {self.replayed_from}")
        else:
            out.append(
                f"op sequences regenerated from the seed: {self.sequences_checked} ops agree,"
                f" {len(self.sequence_differences)} difference(s)"
            )
        out += [f"  {x}" for x in self.sequence_differences[:limit]]
        out += [f"  not modelled: {x}" for x in self.unmodeled[:limit]]
        if self.crash is not None:
            c = self.crash
            out.append(
                f"crash rules: {len(c.findings)} finding(s); {c.strict_checked} synced"
                f" file(s) held exact, {c.files_checked} file(s) judged never garbage,"
                f" {c.paths} paths after recovery"
            )
            out += [f"  {x}" for x in c.findings[:limit]]
        for ch in self.checkers:
            out.append(f"{ch.name}: {'clean' if ch.ok else 'FAILED'} ({ch.summary})")
        if self.view_tool:
            out.append(
                f"{self.view_tool} vs the walk after recovery:"
                f" {len(self.view_differences)} difference(s), {len(self.view_findings)} finding(s)"
            )
            out += [f"  {x}" for x in self.view_differences[:limit]]
            out += [f"  {x}" for x in self.view_findings[:limit]]
        out.append(f"kernel fault reports: {len(self.kernel_faults)}")
        out += [f"  {x}" for x in self.kernel_faults[:limit]]
        out.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        out.append("verdict: " + self.verdict)
        return out

    @property
    def verdict(self) -> str:
        if self.ok:
            return "OK"
        if self.ok_except_known and self.crash is not None:
            known = sorted({f.known for f in self.crash.findings})
            return "FAILED, known kernel behaviour only: " + "; ".join(
                f"{k} ({KNOWN[k][1]})" for k in known
            )
        return "FAILED"

    def to_json(self) -> dict[str, Any]:
        c = self.crash
        return {
            "schema": SCHEMA,
            "kernel": self.kernel,
            "filesystem": self.label,
            "seed": self.seed,
            "ops_per_proc": self.ops_per_proc,
            "procs": self.procs,
            "crash_at": self.crash_at,
            "how": self.how,
            "lines_at_kill": self.lines_at_kill,
            "ops_logged": self.ops_logged,
            "driver_finished": self.driver_finished,
            "inflight": self.inflight,
            "replay_messages": self.replay_messages,
            "mount_error": self.mount_error,
            "model_differences": [
                d.to_json() for d in (self.model.differences if self.model else [])
            ],
            "sequences": {
                "checked": self.sequences_checked,
                "differences": self.sequence_differences,
            },
            "unmodeled": self.unmodeled,
            "crash": None
            if c is None
            else {
                "findings": [f.to_json() for f in c.findings],
                "strict_checked": c.strict_checked,
                "files_checked": c.files_checked,
                "paths": c.paths,
            },
            "checkers": [ch.to_json() for ch in self.checkers],
            "outside_view": {
                "tool": self.view_tool,
                "differences": [d.to_json() for d in self.view_differences],
                "findings": self.view_findings,
            },
            "kernel_faults": self.kernel_faults,
            "seconds": self.seconds,
            "ok": self.ok,
            "ok_except_known": self.ok_except_known,
        }


def copy_image(src: Path, dst: Path) -> None:
    """``dst`` := ``src``, sparse."""
    from harness.safeio import sparse_copy

    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        sparse_copy(sfd, dfd, os.fstat(sfd).st_size)
    finally:
        os.close(sfd)
        os.close(dfd)


def log_text(lines: list[str]) -> tuple[str, int]:
    """The op log as it arrived (the text) and the number of op lines in it."""
    return "".join(ln + "\n" for ln in lines), sum(
        1 for ln in lines if ln.strip() and not ln.startswith("#")
    )


def crash_boot(spec: TargetSpec, job: CrashJob) -> CrashReport:
    """Steps 1 and 2: make and copy the image, open the target, run the driver with its log
    reaching the host line by line, and cut the power when op line ``job.crash_at`` has
    arrived."""
    out = job.out
    output_dir(out)
    for p in ("ops.log", "walk.jsonl", "report.json", "report.txt", "fs.img"):
        with contextlib.suppress(FileNotFoundError):
            (out / p).unlink()
    rep = CrashReport("", job.spec.label(), job.seed, job.ops, job.procs, job.crash_at, job.how)
    t0 = time.monotonic()
    base, image = out / "base.img", out / "fs.img"
    make_image(base, job.spec)
    copy_image(base, image)
    rep.seconds["mkfs+copy"] = time.monotonic() - t0
    wait = stress_timeout(job.ops, job.procs)
    tspec = spec.with_timeout(wait + 600).replace(log_port=True)
    t0 = time.monotonic()
    lines: list[str] = []
    finished = False
    with open_target(tspec, [DiskSpec(image, job.spec.fs)], name="crash") as t:
        rep.kernel = t.label
        rep.seconds["boot"] = time.monotonic() - t0
        d = t.disks[0]
        r = t.mount(d)
        if r.status != 0:
            raise UserError(f"mount of {image} on {t.label} failed: {(r.err or r.out).strip()}")
        if job.replay is not None:
            header = parse_log(job.replay.read_text()).header
            log_in = t.push(job.replay.read_bytes(), "in.log")
            if header.get("root") == "subvol":
                make_subvol_root(t, d)
            argv = driver_argv(t, "replay", log_in, "-d", f"{d.mnt}/{RUN_DIR}", "--log", "-")
        else:
            argv = driver_argv(
                t, "run", "-d", f"{d.mnt}/{RUN_DIR}", "-n", str(job.ops), "-p",
                str(job.procs), "-s", str(job.seed), "--fs", job.spec.fs, "--log", "-",
            )  # fmt: skip
        logged = t.start_logged(argv)
        t_start = time.monotonic()
        deadline = t_start + wait
        while True:
            lines, finished = logged.read()
            n = log_text(lines)[1]
            if n >= job.crash_at or finished:
                break
            if not t.alive:
                raise UserError(f"the target died before the cut ({t.label})")
            if time.monotonic() > deadline:
                raise UserError(
                    f"op line {job.crash_at} did not arrive within {wait:.0f} s ({n} lines so far)"
                )
            time.sleep(0.01)
        rep.lines_at_kill = n
        rep.driver_finished = finished
        t.cut_power(d)
        rep.seconds["workload until the cut"] = time.monotonic() - t_start
        rep.kernel_faults = t.faults()
        lines, finished = logged.read()
    rep.driver_finished = rep.driver_finished or finished
    write_atomic(out / "ops.log", log_text(lines)[0])
    return rep


def remount_boot(spec: TargetSpec, jobs: list[CrashJob], reports: list[CrashReport]) -> None:
    """Step 3 for several crashed images on one target: mount each (the log replay), keep
    the kernel's messages, walk the run directory with block hashes, unmount."""
    disks = [DiskSpec(j.out / "fs.img", j.spec.fs) for j in jobs]
    t0 = time.monotonic()
    with open_target(spec.with_timeout(600.0 * (len(jobs) + 1)), disks, name="remount") as t:
        for j, rep, d in zip(jobs, reports, t.disks, strict=True):
            t.kernel_messages()
            r = t.mount(d)
            rep.replay_messages = [
                ln
                for ln in t.kernel_messages()
                if "BTRFS" in ln or "EXT4" in ln or "btrfs" in ln or "ext4" in ln
            ]
            if r.status != 0:
                rep.mount_error = (r.err or r.out).strip()[-300:] or f"exit {r.status}"
                continue
            walk = scratch(t, "walk.jsonl")
            argv = driver_argv(t, "walk", f"{d.mnt}/{RUN_DIR}", "--blocks", "--out", walk)
            t.run(
                f"if [ -d {d.mnt}/{RUN_DIR} ]; then {t.shell(argv)}; else : > {walk}; fi",
                timeout=1200,
            )
            t.fetch(walk, j.out / "walk.jsonl")
            t.run(["rm", "-f", walk])
            t.umount(d)
        faults = t.faults()
    secs = time.monotonic() - t0
    for rep in reports:
        rep.seconds["remount target (shared)"] = secs
        rep.kernel_faults = rep.kernel_faults + [f"(remount) {x}" for x in faults]


def analyse_crash(job: CrashJob, rep: CrashReport) -> CrashReport:
    """Step 4, on the host."""
    t0 = time.monotonic()
    try:
        log = parse_log((job.out / "ops.log").read_text())
    except LogError as e:
        raise UserError(f"{job.out / 'ops.log'}: {e}") from None
    rep.ops_logged = len(log.ops)
    subvol_root = log.header.get("root") == "subvol"
    proc_dirs = log.header.get("mode", "stress") in ("stress", "fsx")
    rep.model = check_log(
        job.spec.fs, log.ops, None, root_is_subvol=subvol_root, proc_dirs=proc_dirs
    )
    if job.replay is not None:
        # replayed in (proc, seq) order by one process: the next op of the input may run
        done = {(o.proc, o.seq) for o in log.ops}
        todo = [o for o in parse_log(job.replay.read_text()).ops if (o.proc, o.seq) not in done]
        next_ops = todo[:1]
        rep.replayed_from = str(job.replay)
    else:
        regen = regenerate(log, next_op=True)
        rep.sequences_checked, rep.sequence_differences = regen.checked, regen.differences
        next_ops = regen.next_ops
    if not rep.driver_finished:
        rep.inflight = [
            f"{op.ref} {' '.join(f'{k}={v}' for k, v in op.args.items())}" for op in next_ops
        ]
    walk_path = job.out / "walk.jsonl"
    if not rep.mount_error and walk_path.exists():
        walk = read_walk(walk_path)
        rep.paths = len(walk)
        model, skip = crash_model(
            job.spec.fs,
            log,
            [] if rep.driver_finished else next_ops,
            root_is_subvol=subvol_root,
            proc_dirs=proc_dirs,
        )
        rep.unmodeled = skip
        with ImageBlocks(job.out / "fs.img", job.out / "mnt") as blocks:
            rep.crash = check_crash(
                model,
                walk,
                skip_prefixes=tuple(s.split(":", 1)[0] for s in skip),
                read_block=blocks.read,
            )
        rep.seconds["model"] = time.monotonic() - t0
        t0 = time.monotonic()
        rep.checkers = run_checkers(job.out / "fs.img", job.spec.fs)
        rep.seconds["checkers"] = time.monotonic() - t0
        if walk:
            try:
                view = outside_view(job.out / "fs.img", job.spec.fs, RUN_DIR)
            except Exception as e:  # the reader's own failure is a finding here
                rep.view_tool = "outside view"
                rep.view_findings = [f"{type(e).__name__}: {e}"]
            else:
                rep.view_tool = view.tool
                rep.view_findings = view.findings
                rep.view_differences = compare_outside_view(walk, view, job.spec.fs)
    write_atomic(job.out / "report.json", json.dumps(rep.to_json(), indent=1) + "\n")
    write_atomic(job.out / "report.txt", "\n".join(rep.lines(limit=1000)) + "\n")
    if rep.ok and not job.keep_image:
        for p in ("fs.img", "base.img"):
            with contextlib.suppress(FileNotFoundError):
                (job.out / p).unlink()
    return rep


class ImageBlocks:
    """Blocks of files of the recovered image, read through a read-only loop mount on the
    host (made on the first read: most runs never need one)."""

    def __init__(self, image: Path, mnt: Path) -> None:
        self.image = image
        self.mnt = mnt
        self._cm: Any = None

    def read(self, path: str, b: int) -> bytes | None:
        if self._cm is None:
            self._cm = loop_mount(self.image, self.mnt, "ro")
            self._cm.__enter__()
        try:
            with open(self.mnt / RUN_DIR / path, "rb") as f:
                f.seek(b * BLOCK)
                return f.read(BLOCK)
        except OSError:
            return None

    def __enter__(self) -> ImageBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


def crash_model(
    fs: str,
    log: OpLog,
    inflight: list[Op],
    *,
    root_is_subvol: bool = False,
    proc_dirs: bool = True,
) -> tuple[HistoryModel, list[str]]:
    """The history model over the logged ops and each process's in-flight op; processes
    the model cannot follow are returned as ``pN: why`` (their trees are not judged)."""
    model = HistoryModel(fs, root_is_subvol=root_is_subvol, proc_dirs=proc_dirs)
    by_proc = {p: [(op, False) for op in ops] for p, ops in log.by_proc().items()}
    for op in inflight:
        by_proc.setdefault(op.proc, []).append((op, True))
    skip: list[str] = []
    for proc in sorted(by_proc):
        for op, maybe in by_proc[proc]:
            req = Op(op.proc, op.seq, op.name, op.args)
            try:
                if maybe:
                    model.apply_inflight(req)
                else:
                    model.apply(req)
            except Unmodeled as e:
                skip.append(f"p{proc}: {op.ref}: {e}")
                break
    return model, skip


def run_crashes(spec: TargetSpec, jobs: list[CrashJob]) -> list[CrashReport]:
    """Every job's crash target, then the remount targets (up to :data:`REMOUNT_BATCH`
    images each), then the host's analysis of each."""
    reports = [crash_boot(spec, j) for j in jobs]
    for i in range(0, len(jobs), REMOUNT_BATCH):
        remount_boot(spec, jobs[i : i + REMOUNT_BATCH], reports[i : i + REMOUNT_BATCH])
    return [analyse_crash(j, r) for j, r in zip(jobs, reports, strict=True)]


def crash_jobs(
    spec: MkfsSpec,
    out: Path,
    *,
    seed: int,
    ops: int,
    procs: int,
    crash_at: str,
    runs: int = 1,
    keep_image: bool = False,
) -> list[CrashJob]:
    """``runs`` jobs (seeds ``seed``, ``seed+1``, ...) cut at op line ``crash_at`` or, for
    ``random``, at a line drawn from each run's seed."""
    jobs = []
    for i in range(runs):
        s = seed + i
        if crash_at == "random":
            k = crash_point(s, procs, ops)
            how = f"random: op line {k}"
        else:
            try:
                k = int(crash_at)
            except ValueError:
                raise UserError(f"--crash-at {crash_at!r}: an op line number or 'random'") from None
            if k < 1:
                raise UserError("--crash-at counts op lines from 1")
            how = f"op line {k}"
        d = out if runs == 1 else out / f"run{i:02d}-seed{s}"
        jobs.append(CrashJob(spec, d, s, ops, procs, k, how, keep_image))
    return jobs


def summary_lines(reports: list[CrashReport]) -> list[str]:
    """A table of several crash runs."""
    out = [
        "| seed | cut at | logged | synced files exact | files judged | findings | checkers"
        " | result |",
        "|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in reports:
        c = r.crash
        out.append(
            f"| {r.seed} | {r.how} | {r.ops_logged} | {c.strict_checked if c else '-'} |"
            f" {c.files_checked if c else '-'} | {len(c.findings) if c else '-'} |"
            f" {'clean' if r.checkers and all(x.ok for x in r.checkers) else 'FAILED'} |"
            f" {'OK' if r.ok else 'known' if r.ok_except_known else 'FAILED'} |"
        )
    ok = sum(r.ok for r in reports)
    known = sum(r.ok_except_known and not r.ok for r in reports)
    out.append(
        f"{ok}/{len(reports)} crash runs OK"
        + (f"; {known} more failed with known kernel behaviour only" if known else "")
    )
    return out
