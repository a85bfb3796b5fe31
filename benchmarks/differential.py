"""Differential throughput: hypothesis examples per minute, in a guest (per VM-minute, under
TCG) or on the host kernel's loop mounts.

    .venv/bin/python benchmarks/differential.py [--target vm|host] [--kernel debian:6.12]
                [--fs btrfs,ext4] [--examples 300] [--ops 10] [--seed 0]
                [--window 4[,0,...]] [--json]

One target (one boot for ``--target vm``), one image per filesystem attached to it; on each,
``fsoracle stress differential``'s search (``harness.workload.differential.search``, the
state machine) through a ``driver.py serve`` session (SSH in a guest, a pipe on the host),
with every example exactly ``--ops`` ops long (the step count fixed at both ends). An
example is: a fresh root (a subvolume on btrfs, a directory on ext4), its ops (each result
checked when its reply is read; ``--window N``: up to N ops left unanswered after a step,
0 for one round trip per op), a walk of the root, the root removed, and the model's check
of the tree.

An example counts when it ran to its end and was checked against the model (every example
that reached its teardown, including those hypothesis then discards as too short or as
overruns, which ran on the kernel all the same). "VM-minute" is a minute of wall time of
the search with the guest running: examples per VM-minute = examples / search seconds x 60
(on the host: per minute). The boot is reported apart (and a figure with the boot spread
over the examples). Reports, asserts nothing; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness.argtypes import int_range, seed
from harness.target import DiskSpec, TargetSpec, open_target
from harness.workload import differential
from harness.workload.hostmount import MkfsSpec, make_image
from harness.workload.ontarget import session


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("vm", "host"), default="vm")
    ap.add_argument("--kernel", default="debian:6.12")
    ap.add_argument("--fs", default="btrfs,ext4")
    ap.add_argument("--examples", type=int_range(1, 10_000_000), default=300)
    ap.add_argument("--ops", type=int_range(1, 10_000), default=10, help="ops per example (fixed)")
    ap.add_argument("--seed", type=seed, default=0)
    ap.add_argument(
        "--window",
        default=str(differential.WINDOW),
        help="comma-separated: ops in flight after a step (0: a round trip per op)",
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    specs = [MkfsSpec(fs=f.strip()) for f in a.fs.split(",") if f.strip()]
    try:
        windows = [int(w) for w in a.window.split(",")]
    except ValueError:
        ap.error("--window: comma-separated whole numbers")
    if any(not 0 <= w <= 64 for w in windows):
        ap.error("--window: each from 0 to 64")
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fsoracle-bench-diff-") as tmp:
        disks = [DiskSpec(Path(tmp) / f"fs{i}.img", s.fs) for i, s in enumerate(specs)]
        for d, s in zip(disks, specs, strict=True):
            make_image(d.image, s)
        t0 = time.monotonic()
        with open_target(TargetSpec(kind=a.target, kernel=a.kernel), disks) as t:
            boot = time.monotonic() - t0
            accel = t.label.split(", ")[2] if a.target == "vm" else "host"
            for i, spec in enumerate(specs):
                t.mount(t.disks[i])
                s = session(t, t.disks[i])
                for window in windows:
                    runner = differential.DifferentialRunner(s, spec.fs)
                    out = differential.search(
                        runner,
                        examples=a.examples,
                        seed=a.seed,
                        max_ops=a.ops,
                        min_ops=a.ops,
                        results=Path(tmp) / "results",
                        where=t.label,
                        window=window,
                    )
                    ops_run = sum(r for r, _ok in out.op_counts.values())
                    rows.append(
                        {
                            "fs": spec.label(),
                            "window": window,
                            "examples": out.examples,
                            "ops_per_example": round(ops_run / max(out.examples, 1), 1),
                            "seconds": round(out.seconds, 1),
                            "examples_per_vm_minute": round(out.examples / out.seconds * 60, 1),
                            "disagreement": out.found is not None,
                        }
                    )
                s.close()
                t.umount(t.disks[i])
        label = t.label
    total_examples = sum(int(r["examples"]) for r in rows)  # type: ignore[call-overload]
    total_secs = boot + sum(float(r["seconds"]) for r in rows)  # type: ignore[arg-type]
    result = {
        "kernel": label,
        "accel": accel,
        "boot_seconds": round(boot, 1),
        "load_average_at_start": round(load, 2),
        "rows": rows,
        "examples_per_vm_minute_with_boot": round(total_examples / total_secs * 60, 1),
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"\n{label}; boot {boot:.1f} s; load average at start {load:.2f}\n")
    print(
        "| filesystem | window | ops per example | examples | search s | examples per VM-minute |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['fs']} | {r['window']} | {r['ops_per_example']} | {r['examples']} |"
            f" {r['seconds']} | {r['examples_per_vm_minute']} |"
        )
    print(
        f"\nwith the boot counted: {result['examples_per_vm_minute_with_boot']} examples per"
        " VM-minute"
    )
    return 1 if any(r["disagreement"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
