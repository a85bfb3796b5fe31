"""The seam: one interface for "a place where a kernel runs filesystem work".

A :class:`Target` is a context manager. On entry it is up (a guest booted, or the host
ready) with its disks attached; on every way out (an error, ^C, SIGTERM as SystemExit) it is
torn down: sessions closed, filesystems unmounted where that is still possible, QEMU
stopped, loop devices and temporary directories gone.

What a study does with it:

- ``disks[i]`` (:class:`Attached`): the images it was given; ``mount(d)`` / ``umount(d)``
  at ``d.mnt`` on the target;
- ``push(data, name)``: a file (a stdlib-only guest program, an op log) onto the target,
  returning its path there; ``fetch(path, local)``: a file back;
- ``run(argv)``: a command to completion (:class:`CommandResult`); ``start(argv)``: a
  long-lived command with line I/O (:class:`Process`, e.g. ``driver.py serve``);
  ``start_logged(argv)``: a command whose standard output reaches a host file
  ``local`` line by line as it is written, so that a line the host has read was written
  before the command went on (crash runs' op log);
- ``cut_power(d)``: end the filesystem's life at this instant, as a power cut would
  (a VM: QMP ``quit``, no sync; the host: freeze the filesystem, kill the workload, keep the
  image as it was at the freeze). Afterwards the target is unusable for that disk
  (a VM: at all); mount the image again in a new target;
- ``faults()``: kernel fault reports seen so far (panic, oops, BUG, KASAN, lockdep, hung
  task, WARNING), one line each.

``python`` is the target's interpreter for guest programs (standard library only);
``label`` says which kernel ran the work (``6.12.117+deb12-cloud-amd64 (debian:6.12, VM,
TCG, virtio)``, ``host kernel 6.18.44``).
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from harness.errors import UserError
from harness.target.spec import DiskSpec, TargetSpec


class TargetError(UserError):
    """The target failed in a way the user can act on (a command failed, the guest died):
    one line, exit 2."""


@dataclass
class CommandResult:
    status: int
    out: str
    err: str
    seconds: float = 0.0


@dataclass
class Attached:
    """Disk ``index`` of the target: its image on the host, the filesystem type, the device
    path and mount point on the target."""

    index: int
    disk: DiskSpec
    dev: str
    mnt: str
    mounted: bool = False

    @property
    def image(self) -> Path:
        return self.disk.image

    @property
    def fs(self) -> str:
        return self.disk.fs


class Process(Protocol):
    """A running command with line I/O."""

    cmd: str

    def send(self, data: bytes) -> None: ...

    def readline(self, timeout: float | None = None) -> bytes: ...

    @property
    def stderr(self) -> bytes: ...

    def close(self, timeout: float = 10.0) -> int | None: ...


EXIT_MARK = "# exit="


@dataclass
class Logged:
    """A command started by :meth:`Target.start_logged`: its standard output arrives in
    the host file ``local``; ``# exit=N`` follows when it ends."""

    cmd: str
    local: Path
    handle: object = None

    def read(self) -> tuple[list[str], bool]:
        """The whole lines that have arrived (``\\r`` dropped), and whether the command has
        ended (the exit line is not among the lines returned)."""
        try:
            raw = self.local.read_bytes()
        except FileNotFoundError:
            return [], False
        text = raw.decode(errors="replace").replace("\r", "")
        lines = text[: text.rfind("\n") + 1].splitlines()
        done = any(ln.startswith(EXIT_MARK) for ln in lines)
        return [ln for ln in lines if not ln.startswith(EXIT_MARK)], done


class Target(abc.ABC):
    """See the module docstring."""

    spec: TargetSpec
    disks: list[Attached]
    label: str = ""
    # where the target's kernel has tracefs mounted (a VM's init and the host both mount it
    # there), for studies that fetch a trace buffer
    tracefs: str = "/sys/kernel/tracing"
    release: str = ""
    python: str = "python3"

    def __init__(self, spec: TargetSpec, disks: Sequence[DiskSpec] = ()) -> None:
        spec.validate()
        self.spec = spec
        self.disk_specs = list(disks)
        self.disks = []
        self.seconds: dict[str, float] = {}

    # ---- lifecycle ----------------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Bring the target up with its disks attached (a VM boots here)."""

    @abc.abstractmethod
    def close(self, ok: bool = True) -> None:
        """Tear down on every way out; ``ok``: the work went well (unmount cleanly, power
        off gracefully) or not (kill)."""

    def __enter__(self) -> Target:
        try:
            self.open()
        except BaseException:
            self.close(ok=False)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ok=exc is None)

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """The target still runs commands (false after a VM's power cut)."""

    # ---- files and commands -------------------------------------------------------------

    @abc.abstractmethod
    def push(self, data: bytes | Path, name: str, mode: int = 0o644) -> str:
        """Put ``data`` (or the file at that path) on the target as ``name`` in its work
        directory; return its path on the target."""

    @abc.abstractmethod
    def fetch(self, path: str, local: Path) -> None:
        """Copy the target's file ``path`` to the host file ``local``."""

    @abc.abstractmethod
    def run(
        self, argv: Sequence[str] | str, *, timeout: float = 600.0, check: bool = True
    ) -> CommandResult:
        """Run to completion (a string is a shell command line); ``check``: a non-zero exit
        is a :class:`TargetError` quoting the end of its stderr."""

    @abc.abstractmethod
    def start(self, argv: Sequence[str]) -> Process:
        """Start a long-lived command with line I/O on its stdin and stdout."""

    @abc.abstractmethod
    def start_logged(self, argv: Sequence[str]) -> Logged:
        """Start ``argv`` in the background with its stdout reaching a host file line by
        line, each line there before the command goes on (``Logged.local``; ``# exit=N``
        is appended when it ends). One at a time per target."""

    # ---- disks --------------------------------------------------------------------------

    @abc.abstractmethod
    def mount(self, d: Attached, options: str = "") -> CommandResult:
        """Mount disk ``d`` at ``d.mnt`` (``check=False``: a failed mount is a status, e.g.
        after a crash, with the kernel's messages in ``err``)."""

    @abc.abstractmethod
    def umount(self, d: Attached) -> None: ...

    @abc.abstractmethod
    def cut_power(self, d: Attached) -> None:
        """End ``d``'s filesystem as a power cut would, now (see the module docstring)."""

    @abc.abstractmethod
    def kernel_messages(self) -> list[str]:
        """The kernel's log since the last call (btrfs / ext4 recovery messages)."""

    @abc.abstractmethod
    def faults(self) -> list[str]:
        """Kernel fault reports seen so far, one line each (``kind: title``)."""

    # ---- helpers shared by the implementations ------------------------------------------

    def py(self, program: str, *args: str) -> list[str]:
        """``[python, program, *args]``: a guest program run by the target's interpreter."""
        return [self.python, program, *args]

    @staticmethod
    def shell(argv: Sequence[str] | str) -> str:
        return argv if isinstance(argv, str) else shlex.join(argv)

    def set_throttle(self, d: Attached, iops: int | None = None, bps: int | None = None) -> None:
        """Cap disk ``d``'s I/O from now on at ``iops`` requests and ``bps`` bytes per
        second (None: that limit off; both None lifts the cap), as a slow device would.
        A VM: QEMU block throttling; a target that cannot throttle raises
        :class:`TargetError`."""
        raise TargetError(f"{type(self).__name__} cannot throttle disk {d.index}")

    @abc.abstractmethod
    def runtime(self) -> Runtime:
        """How the target's kernel runs (:class:`Runtime`), for a result to record beside
        its timings; asked while the target is open."""


@dataclass(frozen=True)
class Runtime:
    """How a target's kernel runs: ``accel`` ``kvm`` or ``tcg`` for a VM (``host`` for the
    host) and why it was chosen, the emulator's version line (``none`` on the host), and
    the seconds from the emulator's start to the first command (0 on the host)."""

    accel: str
    accel_reason: str
    emulator: str
    ready_seconds: float
