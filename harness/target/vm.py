"""A QEMU guest on any kernel spec as a target (:class:`vm.machine.Machine`).

The images are the guest's disks (``virtio`` or ``nvme``, serial ``fstN``, mounted at
``/mnt/tN``); guest programs go to ``/root`` and run under the guest's own ``python3``.
``start_logged`` runs its command with standard output on a virtio console port
(``/dev/hvc0``) whose host end is a file: a write to a virtio console returns only once QEMU
has taken the bytes (``put_chars`` -> ``__send_to_port(..., nonblock=false)``,
``drivers/char/virtio_console.c``; QEMU's file chardev writes them out before it returns
the buffer), so every line in the file was written before the guest went on, even if QEMU
dies the next instant. ``cut_power`` is QMP ``quit``: no sync, no unmount, the guest's page
cache is lost.

This module and :mod:`vm` are the only ones that touch QEMU.
"""

from __future__ import annotations

import contextlib
import shlex
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.target.base import (
    EXIT_MARK,
    Attached,
    CommandResult,
    Logged,
    Runtime,
    Target,
    TargetError,
)
from harness.target.spec import DiskSpec, TargetSpec

GUEST_DIR = "/root"
PORT_NAME = "fso.oplog"
GUEST_PORT = "/dev/hvc0"  # the first (only) virtconsole port


def port_args(path: Path) -> tuple[str, ...]:
    """QEMU arguments for a virtio console port whose output goes to host file ``path``."""
    return (
        "-device",
        "virtio-serial-pci,id=fsoser",
        "-chardev",
        f"file,id=fsolog,path={path}",
        "-device",
        f"virtconsole,chardev=fsolog,name={PORT_NAME}",
    )


class VmTarget(Target):
    """See the module docstring."""

    def __init__(
        self, spec: TargetSpec, disks: Sequence[DiskSpec] = (), *, name: str = "target"
    ) -> None:
        super().__init__(spec, disks)
        self.name = name
        self.machine: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port_file: Path | None = None
        self._sessions: list[Any] = []
        self._faults: list[str] = []

    def open(self) -> None:
        from vm.disks import Disk
        from vm.errors import VMUserError
        from vm.machine import Machine, MachineConfig

        extra: tuple[str, ...] = ()
        if self.spec.log_port:
            self._tmp = tempfile.TemporaryDirectory(prefix="fsoracle-port-")
            self.port_file = Path(self._tmp.name) / "port.out"
            self.port_file.touch()
            extra = port_args(self.port_file)
        cfg = MachineConfig(
            kernel=self.spec.kernel,
            disks=tuple(
                Disk(
                    d.image,
                    d.device or self.spec.device,  # type: ignore[arg-type]
                    serial=f"fst{i}",
                    snapshot=d.snapshot,
                    readonly=d.readonly,
                )
                for i, d in enumerate(self.disk_specs)
            ),
            mem=self.spec.mem_mib,
            cpus=self.spec.cpus,
            timeout=self.spec.timeout,
            log_dir=Path(self.spec.log_dir) if self.spec.log_dir else None,
            name=self.name,
            fail_on_fault=False,
            extra_qemu_args=extra,
        )
        t0 = time.monotonic()
        try:
            m = Machine(cfg)
            self.machine = m
            m.start()
            self.seconds["boot"] = time.monotonic() - t0
            boot = m.boot
            accel = boot.accel.upper() if boot else "?"
            self.release = boot.release if boot else self.spec.kernel
            self.label = f"{self.release} ({self.spec.kernel}, VM, {accel}, {self.spec.device})"
            for i, d in enumerate(self.disk_specs):
                dev = m.disk(f"fst{i}").by_id
                self.disks.append(Attached(i, d, dev, f"/mnt/t{i}"))
            if self.spec.log_port:
                self._check_port()
        except VMUserError as e:
            raise TargetError(str(e)) from None

    def _check_port(self) -> None:
        """The port must be the one the host reads: a marker line first."""
        assert self.port_file is not None
        self.run(f"echo '# port={PORT_NAME}' > {GUEST_PORT}")
        deadline = time.monotonic() + 30
        while f"# port={PORT_NAME}" not in self.port_file.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TargetError(f"the guest's {GUEST_PORT} does not reach {self.port_file}")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.machine is not None and bool(self.machine.running)

    @property
    def console_log(self) -> str:
        return str(self.machine.console_log or "") if self.machine is not None else ""

    def close(self, ok: bool = True) -> None:
        m = self.machine
        try:
            if m is None:
                return
            for s in self._sessions:
                with contextlib.suppress(Exception):
                    s.close(10)
            self._sessions.clear()
            try:
                if ok and m.running:
                    for d in self.disks:
                        if d.mounted:
                            m.run(f"umount {d.mnt} 2>/dev/null || true", timeout=600)
                            d.mounted = False
            finally:
                self._faults = [f"{f.kind}: {f.title}" for f in m.faults]
                if ok:
                    m.stop()
                else:
                    m.kill()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    # ---- files and commands -------------------------------------------------------------

    def _errors(self) -> Any:
        from vm.errors import VMUserError

        return VMUserError

    def push(self, data: bytes | Path, name: str, mode: int = 0o644) -> str:
        path = f"{GUEST_DIR}/{name}"
        self.machine.put_file(data, path, mode)
        return path

    def fetch(self, path: str, local: Path) -> None:
        self.machine.get_file(path, local)

    def run(
        self, argv: Sequence[str] | str, *, timeout: float = 600.0, check: bool = True
    ) -> CommandResult:
        t0 = time.monotonic()
        line = self.shell(argv)
        try:
            r = self.machine.run(line, timeout=timeout, check=False)
        except self._errors() as e:
            raise TargetError(str(e)) from None
        res = CommandResult(r.status, r.out, r.err, time.monotonic() - t0)
        if check and r.status != 0:
            raise TargetError(f"{line} failed in the guest (exit {r.status}): {r.err[-500:]}")
        return res

    def start(self, argv: Sequence[str]) -> Any:
        p = self.machine.start_process(self.shell(argv))
        self._sessions.append(p)
        return p

    def start_logged(self, argv: Sequence[str]) -> Logged:
        if self.port_file is None:
            raise TargetError("start_logged needs a target opened with log_port=True")
        script = (
            f"exec 3>{GUEST_PORT}; stty -F {GUEST_PORT} raw -echo 2>/dev/null; "
            f'{self.shell(argv)} >&3 2>/tmp/logged.err; echo "{EXIT_MARK}$?" >&3'
        )
        self.run(f"setsid sh -c {shlex.quote(script)} </dev/null >/dev/null 2>&1 &")
        return Logged(self.shell(argv), self.port_file)

    # ---- disks --------------------------------------------------------------------------

    def mount(self, d: Attached, options: str = "") -> CommandResult:
        opts = f"-o {shlex.quote(options)} " if options else ""
        r = self.run(
            f"mkdir -p {d.mnt} && mount -t {d.fs} {opts}{d.dev} {d.mnt}", timeout=600, check=False
        )
        d.mounted = r.status == 0
        return r

    def umount(self, d: Attached) -> None:
        self.run(f"umount {d.mnt}", timeout=600)
        d.mounted = False

    def cut_power(self, d: Attached) -> None:
        self._faults = [f"{f.kind}: {f.title}" for f in self.machine.faults]
        self.machine.crash("quit")
        for x in self.disks:
            x.mounted = False

    # ---- the kernel's log ---------------------------------------------------------------

    def kernel_messages(self) -> list[str]:
        return self.run("dmesg -c", check=False).out.splitlines()

    def faults(self) -> list[str]:
        if self.machine is not None and self.machine.running:
            return [f"{f.kind}: {f.title}" for f in self.machine.faults]
        return list(self._faults)

    # ---- what a study records or changes about the machine ------------------------------

    def set_throttle(self, d: Attached, iops: int | None = None, bps: int | None = None) -> None:
        from vm.disks import Throttle

        if self.machine is None or not self.machine.running:
            raise TargetError(f"cannot throttle disk {d.index}: the VM target is not running")
        self.machine.set_throttle(f"fst{d.index}", Throttle(iops=iops, bps=bps))

    def runtime(self) -> Runtime:
        boot = self.machine.boot if self.machine is not None else None
        if boot is None:
            raise TargetError("the VM target is not open")
        return Runtime(
            accel=boot.accel,
            accel_reason=boot.accel_reason,
            emulator=_qemu_version(),
            ready_seconds=boot.seconds_to_ready,
        )


def _qemu_version() -> str:
    """QEMU's ``--version`` first line (``unknown (why)`` if it cannot be run)."""
    import subprocess

    from vm.accel import find_qemu

    try:
        out = subprocess.run([find_qemu(), "--version"], capture_output=True, text=True).stdout
    except Exception as e:  # recorded, not fatal
        return f"unknown ({e})"
    return out.splitlines()[0].strip() if out else "unknown"
