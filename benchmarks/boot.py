"""Boot benchmark: median time to ready and to power-off, per kernel.

    .venv/bin/python benchmarks/boot.py [--kernels debian:6.12,debian:6.1] [--runs 5]
                                        [--accel auto|kvm|tcg] [--json]

"Ready" is host wall time from ``Machine.start()`` to the return of the first SSH command
(kernels and initramfs already cached; the first, cache-filling boot is not counted).
"Power-off" is the wall time of ``Machine.stop()``: the guest flushes, unmounts its disks and
powers off through ACPI, and QEMU exits. The guest's own clock at two points (SSH server
started, first command) shows where the time goes; "pre-kernel" is ready minus the guest's
uptime at that command (QEMU start, firmware, image loading). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Literal, cast

from harness.argtypes import int_range
from vm import progress
from vm.machine import Machine, MachineConfig

Accel = Literal["auto", "kvm", "tcg"]


def bench(kernel: str, runs: int, accel: Accel) -> dict[str, object]:
    ready: list[float] = []
    off: list[float] = []
    sshd: list[float] = []
    up_ready: list[float] = []
    accel_used = ""
    # the first boot fills the caches (kernel, initramfs, PVH image, accelerator probe)
    with Machine(MachineConfig(kernel=kernel, accel=accel, name="bench-warm")):
        pass
    for i in range(runs):
        m = Machine(MachineConfig(kernel=kernel, accel=accel, name="bench"))
        m.start()
        t = time.monotonic()
        m.stop()
        off.append(time.monotonic() - t)
        assert m.boot is not None
        accel_used = m.boot.accel
        ready.append(m.boot.seconds_to_ready)
        if m.boot.uptime_at_sshd is not None:
            sshd.append(m.boot.uptime_at_sshd)
        if m.boot.uptime_at_ready is not None:
            up_ready.append(m.boot.uptime_at_ready)
        progress.note(f"{kernel} run {i + 1}/{runs}: ready {ready[-1]:.2f} s, off {off[-1]:.2f} s")
    med = statistics.median
    return {
        "kernel": kernel,
        "accel": accel_used,
        "runs": runs,
        "ready_median": round(med(ready), 2),
        "ready_min": round(min(ready), 2),
        "ready_max": round(max(ready), 2),
        "poweroff_median": round(med(off), 2),
        "guest_uptime_sshd_median": round(med(sshd), 2) if sshd else None,
        "guest_uptime_ready_median": round(med(up_ready), 2) if up_ready else None,
        "pre_kernel_median": round(med(r - u for r, u in zip(ready, up_ready, strict=True)), 2)
        if len(up_ready) == len(ready)
        else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="debian:6.12,debian:6.1")
    ap.add_argument("--runs", type=int_range(1, 1000), default=5)
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    rows = [
        bench(k.strip(), a.runs, cast(Accel, a.accel)) for k in a.kernels.split(",") if k.strip()
    ]
    if a.json:
        print(json.dumps({"load_before": load, "rows": rows}, indent=1))
        return 0
    print(
        f"Boot benchmark: {a.runs} boots per kernel, {os.cpu_count()} host CPUs, "
        f"load average {load:.2f} before the run; medians (min-max for ready).\n"
    )
    print(
        "| kernel | accel | ready (s) | power-off (s) | guest uptime at sshd / ready (s) "
        "| pre-kernel (s) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kernel']} | {str(r['accel']).upper()} | {r['ready_median']} "
            f"({r['ready_min']}-{r['ready_max']}) | {r['poweroff_median']} | "
            f"{r['guest_uptime_sshd_median']} / {r['guest_uptime_ready_median']} | "
            f"{r['pre_kernel_median']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
