"""QEMU machines, kernels, guest root, networking, SSH. Knows kernels, not filesystems.

The public names are importable from ``vm`` directly (loaded on first use, so importing a
submodule such as ``vm.kernels`` stays cheap)::

    from vm import Disk, Machine, MachineConfig, Throttle
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Machine": "vm.machine",
    "MachineConfig": "vm.machine",
    "BootInfo": "vm.machine",
    "CommandTimeout": "vm.machine",
    "GuestProcess": "vm.machine",
    "Disk": "vm.disks",
    "GuestDisk": "vm.disks",
    "Throttle": "vm.disks",
    "RunResult": "vm.ssh",
    "CommandFailed": "vm.ssh",
    "Kernel": "vm.kernels",
    "resolve_kernel": "vm.kernels",
    "register_resolver": "vm.kernels",
    "Fault": "vm.errors",
    "VMError": "vm.errors",
    "VMUserError": "vm.errors",
    "GuestFault": "vm.errors",
    "GuestTimeout": "vm.errors",
    "GuestGone": "vm.errors",
    "BootError": "vm.errors",
    "AbnormalShutdown": "vm.errors",
    "find_faults": "vm.console",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vm' has no attribute {name!r}")
