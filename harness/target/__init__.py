"""Targets: where a kernel runs filesystem work (the seam every study runs on).

    spec = TargetSpec(kind="vm", kernel="debian:6.12")      # or TargetSpec(kind="host")
    with open_target(spec, [DiskSpec(image, "btrfs")]) as t:
        d = t.disks[0]
        t.mount(d)
        prog = t.push(DRIVER, "driver.py", 0o755)
        t.run(t.py(prog, "run", "-d", f"{d.mnt}/run", ...))
        t.fetch("/tmp/ops.log", out / "ops.log")

:class:`~harness.target.base.Target` is the interface, :mod:`harness.target.host` and
:mod:`harness.target.vm` the two implementations. A study never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.target.base import (
    Attached,
    CommandResult,
    Logged,
    Process,
    Runtime,
    Target,
    TargetError,
)
from harness.target.spec import DiskSpec, TargetSpec

__all__ = [
    "Attached",
    "CommandResult",
    "DiskSpec",
    "Logged",
    "Process",
    "Runtime",
    "Target",
    "TargetError",
    "TargetSpec",
    "open_target",
]


def open_target(
    spec: TargetSpec, disks: Sequence[DiskSpec] = (), *, name: str = "target"
) -> Target:
    """The target ``spec`` describes, with ``disks`` attached; use it as a context manager
    (it is brought up on entry and torn down on every way out)."""
    if spec.kind == "host":
        from harness.target.host import HostTarget

        return HostTarget(spec, disks)
    from harness.target.vm import VmTarget

    return VmTarget(spec, disks, name=name)
