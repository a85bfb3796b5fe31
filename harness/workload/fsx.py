"""fsx-style runs on any target: ``driver.py fsx`` checks every read and the size after every
op against its in-memory copy while it runs; afterwards its log is replayed through the
model too (the two oracles must agree), and the checkers run on the image."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.safeio import output_dir
from harness.target import DiskSpec, Target, TargetSpec, open_target
from harness.workload.hostmount import (
    CheckerResult,
    MkfsSpec,
    kernel_fault_verdict,
    make_image,
    run_checkers,
)
from harness.workload.ontarget import driver_argv, mounted, run_driver, scratch
from harness.workload.stress import read_walk
from model.fsstate.compare import CompareResult, check_log
from model.fsstate.oplog import parse_log


@dataclass
class FsxReport:
    where: str
    ops: int
    driver_ok: bool
    driver_message: str
    model: CompareResult
    checkers: list[CheckerResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.driver_ok and self.model.ok and all(c.ok for c in self.checkers)

    def lines(self) -> list[str]:
        out = [f"fsx on {self.where}: {self.ops} ops in {self.seconds:.1f} s"]
        out.append(
            "driver (in-memory copy): " + ("every read matched" if self.driver_ok else "MISMATCH")
        )
        if self.driver_message:
            out.append(f"  {self.driver_message}")
        out.append(f"model: {len(self.model.differences)} difference(s)")
        out += [f"  {d}" for d in self.model.differences[:20]]
        for c in self.checkers:
            out.append(f"{c.name}: {'clean' if c.ok else 'FAILED'} ({c.summary})")
        out.append("verdict: " + ("OK" if self.ok else "DIFFERENCES"))
        return out


def prepare_fsx(spec: MkfsSpec, out: Path) -> DiskSpec:
    """The run's directory and its fresh image (``out/fs.img``)."""
    output_dir(out)
    for p in (out / "fsx.log", out / "fsx.walk.jsonl"):
        if p.exists():
            p.unlink()
    make_image(out / "fs.img", spec)
    return DiskSpec(out / "fs.img", spec.fs)


def fsx_on(
    t: Target, disk: int, spec: MkfsSpec, out: Path, *, seed: int = 1, ops: int = 2000
) -> FsxReport:
    """fsx on disk ``disk`` of an open target (its image from :func:`prepare_fsx`)."""
    t0 = time.monotonic()
    d = t.disks[disk]
    log, walk = out / "fsx.log", out / "fsx.walk.jsonl"
    with mounted(t, d):
        work = f"{d.mnt}/fsx"
        t.run(["mkdir", work])
        log_t, walk_t = scratch(t, f"fsx-{disk}.log"), scratch(t, f"fsx-{disk}.walk")
        argv = driver_argv(t, "fsx", f"{work}/file", "-N", str(ops), "-S", str(seed))
        r = t.run([*argv, "--log", log_t], timeout=max(600.0, ops * 0.05), check=False)
        run_driver(t, "walk", work, "--out", walk_t)
        t.fetch(log_t, log)
        t.fetch(walk_t, walk)
    parsed = parse_log(log.read_text())
    res = check_log(spec.fs, parsed.ops, read_walk(walk), proc_dirs=False)
    checks = [*run_checkers(d.image, spec.fs), kernel_fault_verdict(t.faults())]
    d.image.unlink()
    return FsxReport(
        f"{t.label}, {spec.label()}",
        len(parsed.ops),
        r.status == 0,
        r.err.strip(),
        res,
        checks,
        time.monotonic() - t0,
    )


def run_fsx(
    spec: MkfsSpec, out: Path, target: TargetSpec, *, seed: int = 1, ops: int = 2000
) -> FsxReport:
    disk = prepare_fsx(spec, out)
    with open_target(target, [disk], name="fsx") as t:
        return fsx_on(t, 0, spec, out, seed=seed, ops=ops)
