"""What a target is, as data: :class:`TargetSpec` (serialisable, so a task can be shipped to
another process or machine) and :class:`DiskSpec` (an image the target gets as a disk)."""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError

TARGET_KINDS = ("host", "vm")
DEVICES = ("virtio", "nvme")
DEFAULT_KERNEL = "debian:6.12"  # vm.kernels.DEFAULT_SPEC (checked by tests/target)


@dataclass(frozen=True)
class TargetSpec:
    """Where a kernel runs filesystem work.

    ``kind`` ``host``: the machine's own kernel, images loop-mounted (root); ``vm``: a QEMU
    guest booted from ``kernel`` (``debian:6.12``, ``build:6.12+SERIES``, ``path:...``) with
    each image as a ``device`` disk, ``mem_mib`` of memory and ``cpus`` CPUs. ``timeout``
    bounds the target's whole life (a VM is killed at it). ``log_port``: a VM gets a virtio
    console port whose output the host reads as it is written (crash runs' op log).
    """

    kind: str = "vm"
    kernel: str = DEFAULT_KERNEL
    device: str = "virtio"
    mem_mib: int = 1536
    cpus: int = 2
    timeout: float = 3600.0
    log_dir: str | None = None
    log_port: bool = False

    def validate(self) -> None:
        """Fail in one line before any image is made or machine booted."""
        if self.kind not in TARGET_KINDS:
            raise UserError(f"--target {self.kind!r}: one of {', '.join(TARGET_KINDS)}")
        if self.kind == "host":
            return
        from vm.kernels import schemes

        if self.device not in DEVICES:
            raise UserError(f"--device {self.device!r}: one of {', '.join(DEVICES)}")
        scheme, sep, _rest = self.kernel.partition(":")
        if not sep or scheme not in schemes():
            raise UserError(
                f"--kernel {self.kernel!r}: use {', '.join(s + ':...' for s in schemes())}"
                " (e.g. debian:6.12, debian:6.1)"
            )

    def replace(self, **changes: Any) -> TargetSpec:
        return dataclasses.replace(self, **changes)

    def with_timeout(self, at_least: float) -> TargetSpec:
        """This spec with ``timeout`` raised to ``at_least`` (never lowered)."""
        return self.replace(timeout=max(self.timeout, at_least))

    @property
    def rules(self) -> str | None:
        """The modelled kernel version whose behaviour this target's kernel has (``6.1`` or
        ``6.12``, for verdicts that depend on it), or None: the host's kernel is whatever
        the machine runs, and a kernel spec the model does not know has no rules."""
        if self.kind == "host":
            return None
        base = self.kernel.partition(":")[2].split("+", 1)[0]
        return base if base in ("6.1", "6.12") else None

    def describe(self) -> str:
        if self.kind == "host":
            return f"host kernel {platform.release()}"
        return f"{self.kernel} (VM, {self.device})"

    def replay_args(self) -> str:
        """The options that make ``fsoracle stress replay`` run on the same kind of target."""
        if self.kind == "host":
            return ""
        out = f"--target vm --kernel {self.kernel}"
        return out + (f" --device {self.device}" if self.device != "virtio" else "")

    def to_json(self) -> dict[str, Any]:
        return {"schema": 1, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TargetSpec:
        if d.get("schema") != 1:
            raise ValueError(f"TargetSpec schema {d.get('schema')!r}: this fsoracle reads 1")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class DiskSpec:
    """An image given to the target as a disk, and the filesystem type to mount it as.

    ``device``: this disk's interface on a VM (``virtio``: rotational in the guest,
    ``nvme``: not) instead of the spec's, so one boot can hold both kinds; ``readonly``: the
    target never writes the image (a VM's drive is read-only; the host mounts it ``ro``);
    ``snapshot``: the target writes to a throw-away copy of the image (a VM: a qcow2
    overlay; the host: a sparse copy in the target's work directory, which
    ``Attached.image`` then names), so ``image`` is never changed and one image can back
    several disks.
    """

    image: Path
    fs: str
    device: str | None = None
    readonly: bool = False
    snapshot: bool = False

    def __post_init__(self) -> None:
        if self.device is not None and self.device not in DEVICES:
            raise UserError(
                f"disk {self.image}: device {self.device!r}: one of {', '.join(DEVICES)}"
            )
