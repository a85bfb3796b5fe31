"""One stress run, end to end, and the comparisons after it.

:func:`run_host_stress` does on the host kernel what the VM half will do in a guest: make
the filesystem, mount it, run the driver (``driver.py run``: PROCS processes, each in its
own ``pN``), walk and hash the final tree, unmount, then

1. replay the op log through the model: every op's result, then the tree
   (:func:`model.fsstate.compare.check_log`);
2. run the checkers on the image (:func:`harness.workload.hostmount.run_checkers`);
3. read the tree back from the image without the kernel (our btrfs reader, or debugfs for
   ext4) and compare it with the kernel's walk (:func:`compare_outside_view`).

The pieces the VM half needs are separate functions: :func:`make_image` and
:func:`run_checkers` on the host, the driver in the guest, then :func:`analyse_run` on
the pulled log and walk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, write_atomic
from harness.workload.hostmount import (
    CheckerResult,
    FsSpec,
    OutsideView,
    host_kernel,
    loop_mount,
    make_image,
    outside_view,
    run_checkers,
)
from harness.workload.sequences import regenerate
from model.fsstate.compare import CheckResult, Difference, check_log, diff_trees
from model.fsstate.faults import Faults
from model.fsstate.oplog import OpLog, parse_log
from model.fsstate.tree import entries_from_walk, semantics

DRIVER = Path(__file__).with_name("driver.py")
RUN_DIR = "run"  # the driver's -d below the mount point


def guest_python() -> str:
    """The interpreter the driver runs under on the host: the system's python3 (what a
    guest has: standard library only), else this one."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def driver_argv(python: str, *args: str) -> list[str]:
    return [python, str(DRIVER), *args]


@dataclass
class StressConfig:
    spec: FsSpec
    out: Path
    seed: int = 1
    ops: int = 1000
    procs: int = 4
    max_size: int = 256 << 10
    max_len: int = 64 << 10
    keep_image: bool = False


@dataclass
class StressReport:
    """Everything a run found. ``ok`` when the model, the checkers and the outside view
    all agree with the kernel."""

    kernel: str
    label: str
    seed: int
    ops_per_proc: int
    procs: int
    commands: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ops_logged: int = 0
    paths: int = 0
    model: CheckResult | None = None
    checkers: list[CheckerResult] = field(default_factory=list)
    view_tool: str = ""
    view_differences: list[Difference] = field(default_factory=list)
    view_findings: list[str] = field(default_factory=list)
    view_inodes: int = 0
    walk_inodes: int = 0
    sequences_checked: int = 0
    sequence_differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.model is not None
            and self.model.ok
            and all(c.ok for c in self.checkers)
            and not self.view_differences
            and not self.view_findings
            and not self.sequence_differences
        )

    def lines(self, limit: int = 20) -> list[str]:
        out = [
            f"stress on {self.kernel}: {self.label}, seed {self.seed}, {self.procs} processes"
            f" x {self.ops_per_proc} ops ({self.ops_logged} logged), {self.paths} paths at the end",
        ]
        if self.model is not None:
            d = self.model.differences
            out.append(f"model vs kernel: {len(d)} difference(s) over {self.model.ops} ops")
            out += [f"  {x}" for x in d[:limit]]
        if self.sequences_checked or self.sequence_differences:
            out.append(
                f"op sequences regenerated from the seed: {self.sequences_checked} ops agree,"
                f" {len(self.sequence_differences)} difference(s)"
            )
            out += [f"  {x}" for x in self.sequence_differences[:limit]]
        for c in self.checkers:
            out.append(f"{c.name}: {'clean' if c.ok else 'FAILED'} ({c.summary})")
        if self.view_tool:
            out.append(
                f"{self.view_tool} vs kernel walk: {len(self.view_differences)} difference(s),"
                f" {len(self.view_findings)} finding(s); inodes {self.view_inodes} (image)"
                f" / {self.walk_inodes} (walk)"
            )
            out += [f"  {x}" for x in self.view_differences[:limit]]
            out += [f"  {x}" for x in self.view_findings[:limit]]
        out.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        out.append("verdict: " + ("OK" if self.ok else "DIFFERENCES"))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "filesystem": self.label,
            "seed": self.seed,
            "ops_per_proc": self.ops_per_proc,
            "procs": self.procs,
            "ops_logged": self.ops_logged,
            "paths": self.paths,
            "commands": self.commands,
            "seconds": self.seconds,
            "model_differences": [
                d.to_json() for d in (self.model.differences if self.model else [])
            ],
            "sequences": {
                "checked": self.sequences_checked,
                "differences": self.sequence_differences,
            },
            "checkers": [c.to_json() for c in self.checkers],
            "outside_view": {
                "tool": self.view_tool,
                "differences": [d.to_json() for d in self.view_differences],
                "findings": self.view_findings,
                "inodes": self.view_inodes,
                "walk_inodes": self.walk_inodes,
            },
            "ok": self.ok,
        }


def read_walk(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def count_inodes(records: list[dict[str, Any]]) -> int:
    """Distinct inodes, (dev, ino), not counting btrfs stubs (inode 2: they are made up at
    lookup, and the kernel's st_dev for them is not the containing subvolume's)."""
    stub = 0o040000, 2
    return len({(r["dev"], r["ino"]) for r in records if (r["mode"] & 0o170000, r["ino"]) != stub})


def compare_outside_view(
    walk: list[dict[str, Any]], view: OutsideView, fs: str
) -> list[Difference]:
    """The kernel's walk against the image read without the kernel, field by field."""
    sem = semantics(fs)
    return diff_trees(entries_from_walk(walk, sem), entries_from_walk(view.records, sem))


def analyse_run(
    fs: str,
    log: OpLog,
    walk: list[dict[str, Any]],
    *,
    root_is_subvol: bool = False,
    faults: Faults | None = None,
) -> CheckResult:
    """Model vs kernel for a finished run: each op's result and the final tree. This is
    what the VM half calls on the log and walk it pulled from the guest."""
    return check_log(fs, log.ops, walk, root_is_subvol=root_is_subvol, faults=faults)


def finish_run(
    rep: StressReport,
    fs: str,
    image: Path,
    log_path: Path,
    walk_path: Path,
    *,
    run_dir: str = RUN_DIR,
) -> StressReport:
    """Everything after the workload, on the host, with the image unmounted: the model
    replays the log and compares results and tree; the checkers run; the image is read
    back without the kernel and compared with the kernel's walk. The VM half calls this
    with the log and walk it pulled from the guest (``run_dir``: the driver's ``-d``
    relative to the filesystem's root)."""
    t0 = time.monotonic()
    log = parse_log(log_path.read_text())
    walk = read_walk(walk_path)
    rep.ops_logged = len(log.ops)
    rep.paths = len(walk)
    rep.walk_inodes = count_inodes(walk)
    rep.model = analyse_run(fs, log, walk)
    regen = regenerate(log)
    rep.sequences_checked, rep.sequence_differences = regen.checked, regen.differences
    rep.seconds["model"] = time.monotonic() - t0
    t0 = time.monotonic()
    rep.checkers = run_checkers(image, fs)
    rep.seconds["checkers"] = time.monotonic() - t0
    view = outside_view(image, fs, run_dir)
    rep.seconds["outside view"] = view.seconds
    rep.view_tool = view.tool
    rep.view_findings = view.findings
    rep.view_inodes = count_inodes(view.records)
    rep.view_differences = compare_outside_view(walk, view, fs)
    return rep


def run_host_stress(cfg: StressConfig) -> StressReport:
    spec = cfg.spec
    spec.validate()
    out = cfg.out
    output_dir(out)
    image, mnt = out / "fs.img", out / "mnt"
    log_path, walk_path = out / "ops.log", out / "walk.jsonl"
    for p in (log_path, walk_path):
        if p.exists():
            p.unlink()
    rep = StressReport(host_kernel(), spec.label(), cfg.seed, cfg.ops, cfg.procs)
    t0 = time.monotonic()
    rep.commands["mkfs"] = make_image(image, spec)
    rep.seconds["mkfs"] = time.monotonic() - t0
    argv = driver_argv(
        guest_python(),
        "run",
        "-d",
        str(mnt / RUN_DIR),
        "-n",
        str(cfg.ops),
        "-p",
        str(cfg.procs),
        "-s",
        str(cfg.seed),
        "--fs",
        spec.fs,
        "--log",
        str(log_path),
        "--walk",
        str(walk_path),
        "--max-size",
        str(cfg.max_size),
        "--max-len",
        str(cfg.max_len),
    )
    rep.commands["driver"] = " ".join(argv)
    with loop_mount(image, mnt):
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True)
        rep.seconds["workload+walk"] = time.monotonic() - t0
        if r.returncode != 0:
            raise UserError(f"the driver failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    finish_run(rep, spec.fs, image, log_path, walk_path)
    write_atomic(out / "report.json", json.dumps(rep.to_json(), indent=1) + "\n")
    write_atomic(out / "report.txt", "\n".join(rep.lines(limit=1000)) + "\n")
    if not cfg.keep_image:
        image.unlink()
    return rep
