"""Differential throughput: hypothesis examples per minute, in a guest (per VM-minute, under
TCG) or on the host kernel's loop mounts.

    .venv/bin/python benchmarks/differential.py [--target vm|host] [--kernel debian:6.12]
                [--fs btrfs,ext4] [--examples 300] [--ops 10] [--seed 0]
                [--engine new[,old]] [--window 4[,0,...]] [--json]

One target (one boot for ``--target vm``), one image per filesystem attached to it; on each,
``fsoracle stress differential``'s search (``harness.workload.differential.search``, the
state machine) through a ``driver.py serve`` session (SSH in a guest, a pipe on the host),
with every example exactly ``--ops`` ops long (the step count fixed at both ends). An
example is: a fresh root (a subvolume on btrfs, a directory on ext4), its ops (each result
checked as it comes back; ``--no-pipeline``: each op waits for the previous reply before
the next is sent), a walk of the root, the root removed, and the model's check of the tree.

``--engine old`` runs the engine the state machine replaced (a ``@given`` over whole op
lists sent in one batch: ``benchmarks/old_differential.py``) on the same session, so both
are measured under the same conditions.

An example counts when it ran to its end and was checked against the model (the old engine:
every op list it ran; the state machine: every example that reached its teardown, including
those hypothesis then discards as too short or as overruns, which ran on the kernel all the
same). "VM-minute" is a minute of wall time of the search with the guest running: examples per
VM-minute = examples / search seconds x 60 (on the host: per minute). The boot is reported
apart (and a figure with the boot spread over the examples). Reports, asserts nothing;
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.argtypes import int_range, seed
from harness.target import DiskSpec, TargetSpec, open_target
from harness.workload import differential
from harness.workload.hostmount import FsSpec, make_image
from harness.workload.ontarget import session

ENGINES = ("new", "old")


def engine(name: str) -> Any:
    if name == "old":
        sys.path.insert(0, str(Path(__file__).parent))
        import old_differential  # type: ignore[import-not-found]

        return old_differential
    return differential


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("vm", "host"), default="vm")
    ap.add_argument("--kernel", default="debian:6.12")
    ap.add_argument("--fs", default="btrfs,ext4")
    ap.add_argument("--examples", type=int_range(1, 10_000_000), default=300)
    ap.add_argument("--ops", type=int_range(1, 10_000), default=10, help="ops per example (fixed)")
    ap.add_argument("--seed", type=seed, default=0)
    ap.add_argument("--engine", default="new", help="comma-separated: new, old")
    ap.add_argument(
        "--window",
        default=str(differential.WINDOW),
        help="comma-separated: ops in flight after a step (new engine; 0: a round trip per op)",
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    specs = [FsSpec(fs=f.strip()) for f in a.fs.split(",") if f.strip()]
    engines = [e.strip() for e in a.engine.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        ap.error(f"--engine: a comma-separated list of {', '.join(ENGINES)}")
    try:
        windows = [int(w) for w in a.window.split(",")]
    except ValueError:
        ap.error("--window: comma-separated whole numbers")
    if any(not 0 <= w <= 64 for w in windows):
        ap.error("--window: each from 0 to 64")
    runs = [(e, w) for e in engines for w in (windows if e == "new" else [0])]
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
                for name, window in runs:
                    mod = engine(name)
                    runner = mod.DifferentialRunner(s, spec.fs)
                    kw = {"window": window} if name == "new" else {}
                    out = mod.search(
                        runner,
                        examples=a.examples,
                        seed=a.seed,
                        max_ops=a.ops,
                        min_ops=a.ops,
                        results=Path(tmp) / "results",
                        where=t.label,
                        **kw,
                    )
                    ops_run = sum(r for r, _ok in getattr(out, "op_counts", {}).values())
                    rows.append(
                        {
                            "fs": spec.label(),
                            "engine": name if name == "old" else f"{name} (window {window})",
                            "examples": out.examples,
                            "ops_per_example": round(ops_run / out.examples, 1)
                            if ops_run
                            else a.ops,
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
        "| filesystem | engine | ops per example | examples | search s | examples per VM-minute |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['fs']} | {r['engine']} | {r['ops_per_example']} | {r['examples']} |"
            f" {r['seconds']} | {r['examples_per_vm_minute']} |"
        )
    print(
        f"\nwith the boot counted: {result['examples_per_vm_minute_with_boot']} examples per"
        " VM-minute"
    )
    return 1 if any(r["disagreement"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
