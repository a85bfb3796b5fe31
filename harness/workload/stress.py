"""A stress run, end to end, on any target (:mod:`harness.target`), and the comparisons
after it.

:func:`run` does on an open target: mount the image, run the driver (``driver.py run``:
PROCS processes, each in its own ``pN``), walk and hash the final tree, fetch the op log and
the walk, unmount; then on the host (:func:`finish_run`):

1. replay the op log through the model: every op's result, then the tree
   (:func:`model.fsstate.compare.check_log`);
2. run the checkers on the image (:func:`harness.workload.hostmount.run_checkers`);
3. read the tree back from the image without the kernel (our btrfs reader, or debugfs for
   ext4) and compare it with the kernel's walk (:func:`compare_outside_view`);
4. regenerate each process's op sequence from the seed and compare.

:func:`run_stress` makes the images, opens the target (one boot for several runs) and
calls :func:`run` for each; the report is ``report.json`` (``"schema": 1``) and
``report.txt`` in each run's directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.safeio import output_dir, write_atomic
from harness.target import DiskSpec, Target, TargetSpec, open_target
from harness.workload.hostmount import (
    CheckerResult,
    MkfsSpec,
    make_image,
    outside_view,
    run_checkers,
)
from harness.workload.ontarget import RUN_DIR, mounted, run_driver, scratch
from harness.workload.sequences import regenerate
from harness.workload.view import OutsideView
from model.fsstate.compare import CompareResult, Difference, check_log, diff_trees
from model.fsstate.faults import Faults
from model.fsstate.oplog import OpLog, parse_log
from model.fsstate.tree import entries_from_walk, semantics

SCHEMA = 1


@dataclass
class StressConfig:
    """One run: the filesystem to make, where its files go (``out``: the image while it
    runs, ``ops.log``, ``walk.jsonl``, ``report.json``, ``report.txt``), and the workload."""

    spec: MkfsSpec
    out: Path
    seed: int = 1
    ops: int = 1000
    procs: int = 4
    max_size: int = 256 << 10
    max_len: int = 64 << 10
    keep_image: bool = False

    @property
    def image(self) -> Path:
        return self.out / "fs.img"


def stress_timeout(ops: int, procs: int) -> float:
    """A bound for one driver run under TCG on a shared host: ~10 ms an op measured,
    allowed 15x, never under 10 minutes."""
    return max(600.0, 0.15 * ops * procs + 120)


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
    model: CompareResult | None = None
    checkers: list[CheckerResult] = field(default_factory=list)
    view_tool: str = ""
    view_differences: list[Difference] = field(default_factory=list)
    view_findings: list[str] = field(default_factory=list)
    view_inodes: int = 0
    walk_inodes: int = 0
    sequences_checked: int = 0
    sequence_differences: list[str] = field(default_factory=list)
    kernel_faults: list[str] = field(default_factory=list)
    console_log: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.model is not None
            and self.model.ok
            and all(c.ok for c in self.checkers)
            and not self.view_differences
            and not self.view_findings
            and not self.sequence_differences
            and not self.kernel_faults
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
        out.append(f"kernel fault reports: {len(self.kernel_faults)}")
        out += [f"  {x}" for x in self.kernel_faults[:limit]]
        if self.console_log:
            out.append(f"console log: {self.console_log}")
        out.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        out.append("verdict: " + ("OK" if self.ok else "DIFFERENCES"))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
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
            "kernel_faults": self.kernel_faults,
            "console_log": self.console_log,
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
) -> CompareResult:
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


def prepare(cfg: StressConfig) -> DiskSpec:
    """The run's directory, emptied of an earlier run's files, and its new image."""
    cfg.spec.validate()
    output_dir(cfg.out)
    for p in ("ops.log", "walk.jsonl", "report.json", "report.txt"):
        with contextlib.suppress(FileNotFoundError):
            (cfg.out / p).unlink()
    make_image(cfg.image, cfg.spec)
    return DiskSpec(cfg.image, cfg.spec.fs)


def run(cfg: StressConfig, target: Target, disk: int = 0) -> StressReport:
    """One run on disk ``disk`` of an open target (its image made by :func:`prepare`),
    then :func:`finish_run` on the host with the filesystem unmounted."""
    d = target.disks[disk]
    rep = StressReport(target.label, cfg.spec.label(), cfg.seed, cfg.ops, cfg.procs)
    log, walk = scratch(target, f"ops-{disk}.log"), scratch(target, f"walk-{disk}.jsonl")
    args = [
        "run", "-d", f"{d.mnt}/{RUN_DIR}", "-n", str(cfg.ops), "-p", str(cfg.procs),
        "-s", str(cfg.seed), "--fs", cfg.spec.fs, "--log", log, "--walk", walk,
        "--max-size", str(cfg.max_size), "--max-len", str(cfg.max_len),
    ]  # fmt: skip
    rep.commands["driver"] = "driver.py " + " ".join(args)
    with mounted(target, d):
        t0 = time.monotonic()
        run_driver(target, *args, timeout=stress_timeout(cfg.ops, cfg.procs))
        rep.seconds["workload+walk"] = time.monotonic() - t0
        target.fetch(log, cfg.out / "ops.log")
        target.fetch(walk, cfg.out / "walk.jsonl")
        target.run(["rm", "-f", log, walk])
    rep.kernel_faults = target.faults()
    rep.console_log = getattr(target, "console_log", "")
    finish_run(rep, cfg.spec.fs, cfg.image, cfg.out / "ops.log", cfg.out / "walk.jsonl")
    write_atomic(cfg.out / "report.json", json.dumps(rep.to_json(), indent=1) + "\n")
    write_atomic(cfg.out / "report.txt", "\n".join(rep.lines(limit=1000)) + "\n")
    if not cfg.keep_image:
        cfg.image.unlink()
    return rep


def run_stress(configs: list[StressConfig], spec: TargetSpec) -> list[StressReport]:
    """Every run in ``configs`` on one target (one boot), one after the other; the target
    is sized for all of them."""
    disks = [prepare(c) for c in configs]
    budget = sum(stress_timeout(c.ops, c.procs) for c in configs) + 600
    t0 = time.monotonic()
    with open_target(spec.with_timeout(budget), disks, name="stress") as t:
        boot = time.monotonic() - t0
        reports = [run(c, t, i) for i, c in enumerate(configs)]
    for r in reports:
        r.seconds["target up"] = boot
    return reports
