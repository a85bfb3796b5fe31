"""The differential search on any target: a fresh image, one ``driver.py serve`` session on
it, hypothesis' search (:mod:`harness.workload.differential`), then the checkers and the
kernel's fault reports."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.target import DiskSpec, TargetSpec, open_target
from harness.workload.differential import DifferentialRunner, SearchOutcome, search
from harness.workload.hostmount import MkfsSpec, kernel_fault_verdict, make_image, run_checkers
from harness.workload.ontarget import mounted, session
from model.fsstate.faults import Faults


def run_differential(
    spec: MkfsSpec,
    target: TargetSpec,
    *,
    examples: int,
    seed: int = 0,
    faults: Faults | None = None,
    max_ops: int = 12,
    results: Path = Path("results/stress"),
    plugins: Sequence[Path] = (),
) -> SearchOutcome:
    """A differential search on a fresh image of ``spec`` attached to ``target``, then the
    checkers on the image and the kernel's fault reports. ``plugins``: guest handlers for
    ops the driver lacks (files for ``driver.py serve --plugin``)."""
    spec.validate()
    with tempfile.TemporaryDirectory(prefix="fsoracle-diff-") as tmp:
        image = Path(tmp) / "fs.img"
        make_image(image, spec)
        with open_target(target, [DiskSpec(image, spec.fs)], name="differential") as t:
            d = t.disks[0]
            with mounted(t, d):
                s = session(t, d, plugins=plugins)
                try:
                    out = search(
                        DifferentialRunner(s, spec.fs, faults),
                        examples=examples,
                        seed=seed,
                        max_ops=max_ops,
                        results=results,
                        where=f"{t.label}, {spec.label()}",
                        replay_args=target.replay_args(),
                    )
                finally:
                    s.close()
            kernel_faults = t.faults()
        out.checkers = [*run_checkers(image, spec.fs), kernel_fault_verdict(kernel_faults)]
    return out
