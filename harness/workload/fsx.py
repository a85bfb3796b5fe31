"""fsx-style runs on the host kernel: ``driver.py fsx`` checks every read and the size after
every op against its in-memory copy while it runs; afterwards its log is replayed through
the model too (the two oracles must agree), and the checkers run on the image."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.safeio import output_dir
from harness.workload.hostmount import (
    CheckerResult,
    FsSpec,
    host_kernel,
    loop_mount,
    make_image,
    run_checkers,
)
from harness.workload.stress import DRIVER, guest_python, read_walk
from model.fsstate.compare import CheckResult, check_log
from model.fsstate.oplog import parse_log


@dataclass
class FsxReport:
    where: str
    ops: int
    driver_ok: bool
    driver_message: str
    model: CheckResult
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


def run_host_fsx(spec: FsSpec, out: Path, *, seed: int = 1, ops: int = 2000) -> FsxReport:
    t0 = time.monotonic()
    output_dir(out)
    image, mnt = out / "fs.img", out / "mnt"
    log, walk = out / "fsx.log", out / "fsx.walk.jsonl"
    for p in (log, walk):
        if p.exists():
            p.unlink()
    make_image(image, spec)
    py = guest_python()
    with loop_mount(image, mnt):
        work = mnt / "fsx"
        work.mkdir()
        r = subprocess.run(
            [
                py,
                str(DRIVER),
                "fsx",
                str(work / "file"),
                "-N",
                str(ops),
                "-S",
                str(seed),
                "--log",
                str(log),
            ],
            capture_output=True,
            text=True,
        )
        subprocess.run([py, str(DRIVER), "walk", str(work), "--out", str(walk)], check=True)
    parsed = parse_log(log.read_text())
    res = check_log(spec.fs, parsed.ops, read_walk(walk), proc_dirs=False)
    checks = run_checkers(image, spec.fs)
    image.unlink()
    return FsxReport(
        f"{host_kernel()}, {spec.label()}",
        len(parsed.ops),
        r.returncode == 0,
        r.stderr.strip(),
        res,
        checks,
        time.monotonic() - t0,
    )
