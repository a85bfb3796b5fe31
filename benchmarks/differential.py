"""Differential throughput in a guest: hypothesis examples per VM-minute, under TCG.

    .venv/bin/python benchmarks/differential.py [--kernel debian:6.12] [--fs btrfs,ext4]
                                                [--examples 300] [--ops 10] [--seed 0] [--json]

One boot; one image per filesystem; on each, ``fsoracle stress differential``'s search
(``harness.workload.differential.search``) through a ``driver.py serve`` session over SSH,
with every example exactly ``--ops`` ops long (the strategy's size fixed at both ends).
An example is: a fresh root (a subvolume on btrfs, a directory on ext4), its ops, a walk of
the root, the root removed, and the model's check of every result and of the tree.

"VM-minute" is a minute of wall time of the search with the guest running: examples per
VM-minute = examples / search seconds x 60. The boot is reported apart (and a figure with
the boot spread over the examples). Reports, asserts nothing; prints a Markdown table.
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
from harness.workload.differential import DifferentialRunner, search
from harness.workload.hostmount import FsSpec, make_image
from harness.workload.ontarget import session


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("vm", "host"), default="vm")
    ap.add_argument("--kernel", default="debian:6.12")
    ap.add_argument("--fs", default="btrfs,ext4")
    ap.add_argument("--examples", type=int_range(1, 10_000_000), default=300)
    ap.add_argument("--ops", type=int_range(1, 10_000), default=10, help="ops per example (fixed)")
    ap.add_argument("--seed", type=seed, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    specs = [FsSpec(fs=f.strip()) for f in a.fs.split(",") if f.strip()]
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
                runner = DifferentialRunner(session(t, t.disks[i]), spec.fs)
                out = search(
                    runner,
                    examples=a.examples,
                    seed=a.seed,
                    max_ops=a.ops,
                    min_ops=a.ops,
                    results=Path(tmp) / "results",
                    where=t.label,
                )
                rows.append(
                    {
                        "fs": spec.label(),
                        "examples": out.examples,
                        "ops_per_example": a.ops,
                        "seconds": round(out.seconds, 1),
                        "examples_per_vm_minute": round(out.examples / out.seconds * 60, 1),
                        "disagreement": out.found is not None,
                    }
                )
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
    print("| filesystem | ops per example | examples | search s | examples per VM-minute |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['fs']} | {r['ops_per_example']} | {r['examples']} | {r['seconds']} |"
            f" {r['examples_per_vm_minute']} |"
        )
    print(
        f"\nwith the boot counted: {result['examples_per_vm_minute_with_boot']} examples per"
        " VM-minute"
    )
    return 1 if any(r["disagreement"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
