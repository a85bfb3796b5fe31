"""Virtual disks: what the caller asks for (:class:`Disk`) and what QEMU is told.

- ``virtio``: virtio-blk-pci; the guest sees ``/dev/vdX`` and ``/sys/block/vdX/serial``.
- ``nvme``: an NVMe controller with one namespace; the guest sees ``/dev/nvmeNn1`` and the
  controller serial in ``/sys/block/nvmeNn1/device/serial``.

Both get a stable serial (``fso0``, ``fso1``... by position unless given) and
``cache=none`` (O_DIRECT on the host, so what the guest reads comes from the image, not the
host's page cache, and repeated runs are cold). ``snapshot`` puts a throw-away qcow2 overlay
in front of the image so the base file is never written. ``throttle`` caps IOPS and bytes per
second in QEMU's block layer (a slow tier; it adds no per-request latency: use dm-delay in the
guest for that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Iface = Literal["virtio", "nvme"]
IFACES: tuple[str, ...] = ("virtio", "nvme")
_SERIAL = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")


@dataclass(frozen=True)
class Throttle:
    """Limits for QEMU's block throttling (None = unlimited)."""

    iops: int | None = None
    bps: int | None = None

    @classmethod
    def slow(cls) -> Throttle:
        """The slow-disk profile: roughly a 7200 rpm disk (150 IOPS, 100 MiB/s)."""
        return cls(iops=150, bps=100 * 2**20)

    def qmp_args(self) -> dict[str, int]:
        """Arguments for QMP ``block_set_io_throttle`` (all six limits are required)."""
        return {
            "bps": self.bps or 0,
            "bps_rd": 0,
            "bps_wr": 0,
            "iops": self.iops or 0,
            "iops_rd": 0,
            "iops_wr": 0,
        }


@dataclass(frozen=True)
class Disk:
    """A host image file attached to the guest."""

    path: Path
    iface: Iface = "virtio"
    serial: str | None = None
    snapshot: bool = False
    throttle: Throttle | None = None
    format: Literal["raw", "qcow2"] = "raw"
    readonly: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.iface not in IFACES:
            raise ValueError(f"disk interface {self.iface!r}: use one of {', '.join(IFACES)}")
        if self.serial is not None and not _SERIAL.match(self.serial):
            raise ValueError(f"disk serial {self.serial!r}: 1-20 characters from A-Z a-z 0-9 _ . -")

    @classmethod
    def parse(cls, spec: str) -> Disk:
        """``PATH[:virtio|:nvme]`` as the command line takes it."""
        path, sep, iface = spec.rpartition(":")
        if sep and iface in IFACES:
            return cls(Path(path), iface=iface)  # type: ignore[arg-type]
        return cls(Path(spec))


@dataclass(frozen=True)
class GuestDisk:
    """A disk as the guest sees it (one line of ``fso-disks``)."""

    name: str  # vdb, nvme0n1
    iface: str
    serial: str
    size: int  # bytes

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"

    @property
    def by_id(self) -> str:
        return f"/dev/disk/by-id/{self.iface}-{self.serial}"


def parse_guest_disks(text: str) -> list[GuestDisk]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].isdigit():
            out.append(GuestDisk(parts[0], parts[1], parts[2], int(parts[3])))
    return out


def drive_args(disk: Disk, node: str, file: str) -> list[str]:
    """``-drive`` and ``-device`` arguments for a disk attached at boot.

    ``file`` is the image to open (the overlay when ``snapshot``); ``node`` the drive id.
    """
    fmt = "qcow2" if file != str(disk.path) else disk.format
    opts = [
        f"if=none,id={node},file={_escape(file)},format={fmt}",
        "cache=none",
        "aio=native",
        "discard=unmap",
    ]
    if disk.readonly:
        opts.append("readonly=on")
    if disk.throttle is not None:
        if disk.throttle.iops:
            opts.append(f"throttling.iops-total={disk.throttle.iops}")
        if disk.throttle.bps:
            opts.append(f"throttling.bps-total={disk.throttle.bps}")
    return ["-drive", ",".join(opts), "-device", device_arg(disk, node)]


def device_arg(disk: Disk, node: str) -> str:
    serial = disk.serial or node
    if disk.iface == "virtio":
        return f"virtio-blk-pci,drive={node},id={node}-dev,serial={serial}"
    return f"nvme,drive={node},id={node}-dev,serial={serial}"


def device_qmp(disk: Disk, node: str) -> dict[str, object]:
    """``device_add`` arguments for a hot-added disk."""
    serial = disk.serial or node
    driver = "virtio-blk-pci" if disk.iface == "virtio" else "nvme"
    return {"driver": driver, "drive": node, "id": f"{node}-dev", "serial": serial}


def blockdev_qmp(disk: Disk, node: str, file: str) -> dict[str, object]:
    """``blockdev-add`` arguments (a format node over a file node with O_DIRECT)."""
    fmt = "qcow2" if file != str(disk.path) else disk.format
    return {
        "node-name": node,
        "driver": fmt,
        "read-only": disk.readonly,
        "discard": "unmap",
        "cache": {"direct": True, "no-flush": False},
        "file": {
            "driver": "file",
            "filename": file,
            "aio": "native",
            "cache": {"direct": True, "no-flush": False},
        },
    }


def _escape(path: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return path.replace(",", ",,")
