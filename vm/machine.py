"""A QEMU machine running a kernel, driven over QMP and SSH.

    with Machine(MachineConfig(kernel="debian:6.12", disks=(Disk(img, "nvme"),))) as m:
        r = m.run("uname -r")            # RunResult(status, stdout, stderr, duration, faults)
        m.put_file(b"...", "/tmp/driver.py")
        d = m.hot_add_disk(Disk(img2))   # GuestDisk(name="vdb", serial=..., size=...)
        m.qmp("query-status")

The shape follows QEMU's own ``QEMUMachine``: a context manager that logs the console to a
file, talks QMP through ``qemu.qmp``, and on the way out asks the guest to power off, waits,
then kills and raises; nothing it started outlives it. Its life, in phases a caller may also
run one at a time (:meth:`Machine.start` runs the three)::

    m = Machine(cfg)
    m.prepare()      # kernel, initramfs, boot image, accelerator, log dir: no process yet
    m.launch()       # QEMU runs, QMP connected, the guest boots
    m.wait_ready()   # the guest answers over SSH
    ...
    m.stop()         # power off; AbnormalShutdown if QEMU had to be ended or failed
    m.kill()         # or: SIGKILL now, on purpose, silently (also after stop: a no-op)

Every phase that fails, and every way out (``stop``, ``wait``, ``kill``, ``crash``, the
``with`` block, the Python process's exit) ends QEMU and releases its network and files.
On top of that:

- The QEMU process gets ``PR_SET_PDEATHSIG`` (it dies with the Python process that started
  it, even on SIGKILL), its own session (a terminal's ^C reaches Python, which then stops
  QEMU in order), and a watchdog thread that kills it at ``timeout``.
- The console is scanned for kernel fault reports (:mod:`vm.console`); a panic ends QEMU
  (``panic=-1`` with ``-no-reboot``) and surfaces as :class:`~vm.errors.GuestFault`.
- A command that outlives its timeout is followed by a liveness probe; a guest that does not
  answer it is killed and reported as :class:`~vm.errors.GuestTimeout`.

Boot: QEMU loads the kernel's uncompressed ELF through the PVH entry when it can
(:func:`vm.kernels.boot_image`) and the cached initramfs (:mod:`vm.guestroot`), whose
``/init`` brings up the network and dropbear and prints ``FSORACLE-READY``; the machine is
ready when its first SSH command (waiting for the remaining modules) returns. A QEMU that
dies of a signal during a boot :meth:`Machine.start` launched, with no kernel report and no
deadline reached (:class:`~vm.errors.EmulatorCrash`, TCG's own assertions), is booted once
more; the first try's logs stay beside the second's as ``*.try1``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import paramiko
from qemu.qmp.legacy import QEMUMonitorProtocol

from vm import progress
from vm.accel import AccelChoice, choose_accel, find_qemu
from vm.console import ConsoleLog, render_faults
from vm.disks import (
    Disk,
    GuestDisk,
    Throttle,
    blockdev_qmp,
    device_qmp,
    drive_args,
    parse_guest_disks,
)
from vm.errors import (
    AbnormalShutdown,
    BootError,
    EmulatorCrash,
    Fault,
    GuestFault,
    GuestGone,
    GuestTimeout,
    VMError,
    VMUserError,
)
from vm.guestroot import GuestRoot, build_guest_root
from vm.kernels import DEFAULT_SPEC, Kernel, boot_image, resolve_kernel
from vm.net import NetnsNetwork, UserNetwork, make_network
from vm.ssh import (
    ChannelLost,
    ChannelProcess,
    ChannelTimeout,
    RunResult,
    SSHSession,
    command_line,
    new_client_key,
    public_line,
)

READY_MARK = "FSORACLE-READY"
# QEMU 10's TCG sometimes aborts during boot on an assertion of its own (iotlb_to_section,
# seen once in a CI run of 216 boots): a boot that ends so is tried once more, logs kept
BOOT_TRIES = 2
Phase = Literal["new", "prepared", "launched", "ready", "down"]
TRACING = "/sys/kernel/tracing"
_PR_SET_PDEATHSIG = 1
_seq = itertools.count()
_live: weakref.WeakSet[Machine] = weakref.WeakSet()


def results_root() -> Path:
    """Where console logs go unless a machine is given ``log_dir``: ``$FSORACLE_RESULTS``
    or ``results/`` under the current directory."""
    return Path(os.environ.get("FSORACLE_RESULTS", "results"))


def parse_mem(text: str | int) -> int:
    """Memory size in MiB from ``1024``, ``1024M``, ``2G``."""
    if isinstance(text, int):
        return text
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise VMUserError(f"memory size {text!r}: use e.g. 1024, 1536M or 2G") from None


@dataclass(frozen=True)
class MachineConfig:
    """What to boot and how.

    ``timeout`` bounds the machine's life from :meth:`Machine.launch` on (None: no bound):
    at the deadline QEMU is killed and the pending call raises :class:`GuestTimeout` (or,
    with none pending, :meth:`Machine.stop` raises :class:`AbnormalShutdown`).
    ``boot_timeout`` bounds the boot alone (from launch to the first SSH command).
    ``cmdline`` adds kernel parameters. ``network``: ``auto`` (``netns`` as root, else
    ``user``), ``netns`` or ``user``. ``log_dir`` receives ``console.log``, ``qemu.log`` and
    ``qemu.argv`` (default: ``results/vm/<time>-<name>-<pid>-<n>``).
    ``fail_on_fault``: leaving the ``with`` block raises :class:`GuestFault` if the console
    showed any kernel fault report (unless another exception is already on its way).
    """

    kernel: str | Kernel = DEFAULT_SPEC
    disks: tuple[Disk, ...] = ()
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    mem: int = 1024
    cpus: int = 2
    timeout: float | None = None
    boot_timeout: float = 120.0
    network: Literal["auto", "netns", "user"] = "auto"
    cmdline: tuple[str, ...] = ()
    log_dir: Path | None = None
    name: str = "vm"
    fail_on_fault: bool = True
    extra_qemu_args: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class BootInfo:
    """How the boot went: which accelerator ran and why, and how long it took.

    ``seconds_to_ready`` is host wall time from :meth:`Machine.launch` (QEMU's start) to
    the first SSH command's return. ``uptime_at_sshd`` and
    ``uptime_at_ready`` are the guest's own clock (``/proc/uptime``) when ``/init`` started
    the SSH server and when that first command ran; the rest of ``seconds_to_ready`` is
    spent before the kernel's clock starts (QEMU start-up, firmware, loading the images).
    """

    kernel: str
    release: str
    accel: str
    accel_reason: str
    network: str
    console_log: Path
    seconds_to_ready: float
    uptime_at_sshd: float | None = None
    uptime_at_ready: float | None = None


@dataclass
class _Attached:
    disk: Disk
    node: str
    hot: bool


def _preexec(enter_ns: Any) -> Any:
    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        enter_ns()

    return run


class Machine:
    """One QEMU guest; use as a context manager (or call :meth:`start` and :meth:`stop`).

    ``returncode`` is QEMU's exit status once the machine is down (0 after a clean
    power-off, negative for a signal, as in :mod:`subprocess`).
    """

    def __init__(self, config: MachineConfig | None = None, **overrides: Any) -> None:
        cfg = config or MachineConfig()
        if overrides:
            cfg = MachineConfig(**{**cfg.__dict__, **overrides})
        self.config = cfg
        self.kernel: Kernel | None = None
        self.root: GuestRoot | None = None
        self.accel: AccelChoice | None = None
        self.boot: BootInfo | None = None
        self.log_dir: Path | None = None
        self.console: ConsoleLog | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._ssh: SSHSession | None = None
        self._net: NetnsNetwork | UserNetwork | None = None
        self._tmp: Path | None = None
        self._key: paramiko.PKey | None = None
        self._watchdog: threading.Timer | None = None
        self._deadline_hit = False
        self._disks: dict[str, _Attached] = {}  # serial -> attachment
        self._disk_seq = itertools.count()
        self._qemu_log: BinaryIO | None = None
        self._phase: Phase = "new"
        self._image: Path | None = None  # what QEMU boots (prepare)
        self._qemu: str | None = None  # the QEMU binary (prepare)
        self._t0 = 0.0  # launch time (monotonic): timeout and boot_timeout count from it
        # who ended QEMU, when it was not stop()/wait(): "caller" (kill, crash) or
        # "reported" (an error raised for it); either keeps stop() from raising again
        self._ended_by: Literal["caller", "reported"] | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Machine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.stop()
            except AbnormalShutdown as e:
                # a kernel report says more about why than the power-off that went wrong
                if self.config.fail_on_fault and self.faults:
                    raise GuestFault(self.faults, self.console_log) from e
                raise
            if self.config.fail_on_fault:
                self.check_faults()
        elif isinstance(exc, Exception):
            # the error on its way out wins; a power-off that went wrong is noted on it
            try:
                self.stop()
            except AbnormalShutdown as e:
                exc.add_note(f"and then: {e}")
        else:
            # ^C, SIGTERM (SystemExit): no time for a clean power-off
            self.kill()

    @property
    def console_log(self) -> Path | None:
        return self.console.path if self.console else None

    @property
    def pid(self) -> int | None:
        """The QEMU process id (None before :meth:`launch`)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def phase(self) -> Phase:
        """Where the machine is: ``new``, ``prepared`` (:meth:`prepare`), ``launched``
        (:meth:`launch`), ``ready`` (:meth:`wait_ready`) or ``down`` (stopped, killed or
        failed; a machine is not started twice)."""
        return self._phase

    @property
    def netns(self) -> str | None:
        """The network namespace QEMU runs in (netns mode), for tests that inspect it."""
        return self._net.name if isinstance(self._net, NetnsNetwork) else None

    @property
    def network(self) -> NetnsNetwork | UserNetwork | None:
        return self._net

    def start(self) -> None:
        """Boot and wait until the guest answers over SSH: :meth:`prepare`, :meth:`launch`
        and :meth:`wait_ready`, each run if not run yet. Cleans up fully if it fails."""
        if self._phase == "ready":
            raise VMError("machine already started")
        if self._phase == "launched":  # the caller launched it: no second try behind its back
            self.wait_ready()
            return
        for attempt in range(1, BOOT_TRIES + 1):
            try:
                self.launch()
                self.wait_ready()
                return
            except EmulatorCrash as e:
                if attempt == BOOT_TRIES:
                    raise
                kept = self._keep_logs_of_try(attempt)
                progress.note(f"{e}; booting once more (logs of that try kept as {kept})")
                self._phase = "prepared"

    def prepare(self) -> None:
        """Phase 1: everything a boot needs before QEMU runs, so a slow or failing step
        happens before any process starts: check the configuration and the disk images,
        make the log directory, resolve the kernel (a download or a kernel build), find or
        build its initramfs and boot image, find QEMU and choose the accelerator (the first
        ``auto`` choice probes KVM once). Starts nothing. Does nothing once done."""
        if self._phase != "new":
            return
        cfg = self.config
        if cfg.cpus < 1 or cfg.mem < 128:
            raise VMUserError(f"cpus={cfg.cpus}, mem={cfg.mem} MiB: need ≥ 1 CPU and ≥ 128 MiB")
        for d in cfg.disks:
            if not d.path.is_file() and not d.path.is_block_device():
                raise VMUserError(f"disk image {d.path} not found: create it or fix the path")
        self.log_dir = self._make_log_dir()
        kernel = cfg.kernel if isinstance(cfg.kernel, Kernel) else resolve_kernel(cfg.kernel)
        self.kernel = kernel
        self.root = build_guest_root(kernel)
        self._image = boot_image(kernel)
        self._qemu = find_qemu()
        self.accel = choose_accel(cfg.accel, self._qemu, self._image, self.root.initramfs)
        self._phase = "prepared"

    def launch(self) -> None:
        """Phase 2 (runs :meth:`prepare` first if needed): start QEMU, with the console
        logged to ``console.log``, and connect to its QMP socket. The machine's ``timeout``
        and ``boot_timeout`` count from here. The guest is still booting when it returns
        (:meth:`qmp` works, :meth:`run` does not yet). Cleans up fully if it fails."""
        if self._phase in ("launched", "ready"):
            raise VMError("machine already started")
        if self._phase == "down":
            raise VMError("this machine has been stopped: make a new Machine to boot again")
        self.prepare()
        try:
            self._launch()
        except BaseException:
            self._end_after_error()
            raise
        self._phase = "launched"

    def wait_ready(self) -> None:
        """Phase 3: wait (within ``boot_timeout`` of :meth:`launch`) until the guest's SSH
        server answers and its first command returns; fills :attr:`boot`. Raises
        :class:`GuestFault` if the kernel reported a fault on the way, :class:`GuestTimeout`
        or :class:`BootError` if it did not come up; cleans up fully if it fails."""
        if self._phase != "launched":
            raise VMError(f"wait_ready() needs a launched machine (this one is {self._phase})")
        try:
            self._boot_info()
        except BaseException:
            self._end_after_error()
            raise
        self._phase = "ready"

    def _make_log_dir(self) -> Path:
        if self.config.log_dir is not None:
            d = Path(self.config.log_dir)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            d = results_root() / "vm" / f"{stamp}-{self.config.name}-{os.getpid()}-{next(_seq)}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _launch(self) -> None:
        cfg = self.config
        kernel, root, accel = self.kernel, self.root, self.accel
        assert kernel is not None and root is not None and accel is not None
        assert self.log_dir is not None and self._image is not None and self._qemu is not None
        self._t0 = time.monotonic()
        self._tmp = Path(tempfile.mkdtemp(prefix="fsoracle-vm-"))
        self._net = make_network(cfg.network)
        self._key = new_client_key()
        qmp_path = self._tmp / "qmp.sock"
        append = [
            "console=ttyS0",
            "loglevel=5",
            "panic=-1",
            f"fso.ip={self._net.guest_cidr}",
            "fso.key=" + public_line(self._key).replace(" ", ","),
            *cfg.cmdline,
        ]
        argv = [
            self._qemu,
            "-name",
            f"fsoracle-{cfg.name},debug-threads=on",
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "pc",
            *accel.args(),
            "-smp",
            str(cfg.cpus),
            "-m",
            str(cfg.mem),
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(self._image),
            "-initrd",
            str(root.initramfs),
            "-append",
            " ".join(append),
            "-serial",
            "stdio",
            "-qmp",
            f"unix:{qmp_path},server=on,wait=off",
            "-device",
            "virtio-rng-pci",
            *self._net.qemu_args(),
        ]
        for disk in cfg.disks:
            node, file = self._prepare_disk(disk)
            argv += drive_args(disk, node, file)
            self._disks[disk.serial or node] = _Attached(disk, node, hot=False)
        argv += list(cfg.extra_qemu_args)
        (self.log_dir / "qemu.argv").write_text("\n".join(argv) + "\n")

        progress.note(
            f"booting {kernel.release} ({accel.accel.upper()}: {_short(accel.reason)}; "
            f"{cfg.cpus} CPU, {cfg.mem} MiB, network {self._net.mode}); "
            f"console log {self.log_dir / 'console.log'}"
        )
        self._qemu_log = open(self.log_dir / "qemu.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._qemu_log,
            start_new_session=True,
            preexec_fn=_preexec(self._net.enter_in_child),
        )
        _live.add(self)
        assert self._proc.stdout is not None
        self.console = ConsoleLog(self._proc.stdout, self.log_dir / "console.log")
        if cfg.timeout is not None:
            left = cfg.timeout - (time.monotonic() - self._t0)
            self._watchdog = threading.Timer(max(left, 0.1), self._on_deadline)
            self._watchdog.daemon = True
            self._watchdog.start()

        self._connect_qmp(qmp_path, deadline=time.monotonic() + 30)

    def _boot_info(self) -> None:
        assert self.kernel is not None and self.accel is not None and self._net is not None
        assert self.console is not None
        sshd_at, ready_at = self._wait_ssh()
        self.boot = BootInfo(
            kernel=self.kernel.spec,
            release=self.kernel.release,
            accel=self.accel.accel,
            accel_reason=self.accel.reason,
            network=self._net.mode,
            console_log=self.console.path,
            seconds_to_ready=time.monotonic() - self._t0,
            uptime_at_sshd=sshd_at,
            uptime_at_ready=ready_at,
        )
        progress.note(f"guest ready in {self.boot.seconds_to_ready:.1f} s")

    def _prepare_disk(self, disk: Disk) -> tuple[str, str]:
        """A node name for the disk and the file QEMU opens (an overlay for ``snapshot``)."""
        node = f"fso{next(self._disk_seq)}"
        serial = disk.serial or node
        if serial in self._disks:
            raise VMUserError(f"two disks with serial {serial!r}: give each its own serial")
        if not disk.snapshot:
            return node, str(disk.path)
        assert self._tmp is not None
        overlay = self._tmp / f"{node}.qcow2"
        qemu_img = shutil.which("qemu-img")
        if qemu_img is None:
            raise VMUserError("qemu-img not found (needed for snapshot disks): install qemu-utils")
        proc = subprocess.run(
            [
                qemu_img,
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                disk.format,
                "-b",
                str(disk.path.resolve()),
                str(overlay),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise VMUserError(
                f"cannot make a snapshot overlay of {disk.path}: {proc.stderr.strip()}"
            )
        return node, str(overlay)

    def _connect_qmp(self, path: Path, deadline: float) -> None:
        while True:
            self._check_alive_during_boot()
            if path.exists():
                qmp = QEMUMonitorProtocol(str(path))
                try:
                    qmp.connect()
                except Exception:
                    with contextlib.suppress(Exception):
                        qmp.close()
                else:
                    qmp.settimeout(60)
                    self._qmp = qmp
                    return
            if time.monotonic() > deadline:
                raise BootError(f"QEMU's QMP socket did not open within 30 s: see {self.log_dir}")
            time.sleep(0.05)

    def _check_alive_during_boot(self) -> None:
        assert self._proc is not None
        rc = self._proc.poll()
        if rc is None:
            return
        self._wait_console_eof()
        if self._deadline_hit:
            raise GuestTimeout(
                f"machine timeout ({self.config.timeout:.0f} s) reached during boot; "
                f"QEMU killed; console log: {self.console_log}"
            )
        faults = self.console.faults() if self.console else []
        if faults:
            raise GuestFault(faults, self.console_log)
        if rc < 0 and self._ended_by is None:
            raise EmulatorCrash(
                f"QEMU died of signal {-rc} during boot: {self._qemu_log_tail()} "
                f"(console log: {self.console_log})"
            )
        raise BootError(
            f"QEMU exited with status {rc} during boot: {self._qemu_log_tail()} "
            f"(console log: {self.console_log})"
        )

    def _keep_logs_of_try(self, attempt: int) -> str:
        """Rename the logs of a failed boot to ``<name>.try<N>`` so the next try starts
        clean and both stay under the log directory; return the pattern for the message."""
        assert self.log_dir is not None
        for name in ("console.log", "qemu.log", "qemu.argv"):
            f = self.log_dir / name
            if f.exists():
                f.rename(self.log_dir / f"{name}.try{attempt}")
        self.console = None
        self.returncode = None
        self._proc = None
        self._ended_by = None
        self._disks.clear()
        self._disk_seq = itertools.count()  # the next try's drives get the same node names
        return str(self.log_dir / f"*.try{attempt}")

    def _qemu_log_tail(self) -> str:
        assert self.log_dir is not None
        try:
            lines = (self.log_dir / "qemu.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no QEMU output"
        return " | ".join(lines[-3:]) or "no QEMU output"

    def _wait_ssh(self) -> tuple[float | None, float | None]:
        """Wait for the marker, connect SSH, run the first command; return the guest's
        uptime at the marker and at that command."""
        assert self.console is not None and self._net is not None and self.root is not None
        cfg = self.config
        deadline = self._t0 + cfg.boot_timeout
        idx = self.console.wait_for(
            lambda ln: READY_MARK in ln,
            timeout=max(deadline - time.monotonic(), 0.1),
            stop=lambda: not self.running,
        )
        if idx is None:
            self._check_alive_during_boot()
            faults = self.console.faults()
            self._kill_qemu()
            if faults:
                raise GuestFault(faults, self.console_log)
            raise GuestTimeout(
                f"the guest did not come up within {cfg.boot_timeout:.0f} s "
                f"({self.accel.accel if self.accel else '?'}); QEMU killed; console log: "
                f"{self.console_log}"
            )
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive_during_boot()
            try:
                sock = self._net.connect(22, timeout=10)
                assert self._key is not None
                self._ssh = SSHSession(sock, self.root.host_key, self._key, timeout=30)
                break
            except (OSError, paramiko.SSHException, EOFError) as e:
                last_err = e
                time.sleep(0.2)
        else:
            self._kill_qemu()
            raise GuestTimeout(
                f"the guest's SSH server did not answer within {cfg.boot_timeout:.0f} s "
                f"({last_err}); QEMU killed; console log: {self.console_log}"
            )
        r = self.run(
            "while [ ! -e /run/fso-ready ]; do sleep 0.05; done; cut -d' ' -f1 /proc/uptime",
            timeout=max(deadline - time.monotonic(), 5),
        )
        return _float(self.console.lines()[idx].split(READY_MARK, 1)[1]), _float(r.out)

    def _on_deadline(self) -> None:
        self._deadline_hit = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def _wait_console_eof(self, timeout: float = 5.0) -> None:
        if self.console is not None:
            self.console.wait_for(lambda _ln: False, timeout=timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Power the guest off, make sure QEMU is gone, release everything; raise if the
        power-off was not clean.

        Asks the guest to power off (``fso-poweroff`` over SSH: flush, unmount its disks,
        ACPI power-off, which ends QEMU with status 0) and waits up to ``timeout`` seconds;
        if QEMU still runs, tells it to ``quit`` over QMP, and at last SIGKILLs it. Then
        raises :class:`AbnormalShutdown` if the guest did not power off in time (QEMU had to
        be ended), could not be asked (no SSH session: end a machine that never became
        ready with :meth:`kill`), or QEMU ended with a non-zero status (e.g. killed at the
        machine's ``timeout``) that no earlier error reported.

        Silent after :meth:`kill` and :meth:`crash` (asked for), and after an error that
        already reported QEMU's end (:class:`GuestTimeout`, :class:`GuestGone`,
        :class:`GuestFault` from a command). Does nothing on a machine never launched or
        already down.
        """
        self._shutdown(ask=True, timeout=timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait up to ``timeout`` seconds for QEMU to end by itself (the guest powered itself
        off, e.g. a command ran ``poweroff -f``), then release everything. Raises
        :class:`AbnormalShutdown` as :meth:`stop` does when QEMU had to be ended or ended
        with a non-zero status."""
        self._shutdown(ask=False, timeout=timeout)

    def kill(self) -> None:
        """End QEMU now with SIGKILL (nothing in the guest is flushed) and release everything
        the machine holds: SSH, QMP, the network, temporary files. :attr:`console_log`,
        :attr:`faults` and :attr:`returncode` stay readable. Asked for, so it raises nothing
        and a later :meth:`stop` (or the ``with`` block's exit) stays silent. Safe at any
        point and more than once."""
        if self._ended_by is None and self._proc is not None:
            self._ended_by = "caller"
        self._kill_qemu()
        self._release()

    def crash(self, how: Literal["quit", "kill"] = "quit") -> None:
        """End the guest abruptly, as a power cut would: the guest's caches are lost.

        ``quit`` asks QEMU over QMP to exit at once (requests QEMU already submitted to the
        images complete); ``kill`` sends SIGKILL (they may not). The machine is then down,
        as after :meth:`kill`; nothing is raised.
        """
        if self._ended_by is None and self._proc is not None:
            self._ended_by = "caller"
        if how == "quit" and self._qmp is not None and self.running:
            with contextlib.suppress(Exception):
                self._qmp.cmd("quit")
            assert self._proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        self.kill()

    def _shutdown(self, ask: bool, timeout: float) -> None:
        proc = self._proc
        if proc is None or self._phase == "down":
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
        why: str | None = None
        if proc.poll() is None:
            if ask and not self._ask_poweroff():
                why = "the guest could not be asked to power off (no SSH session)"
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
                if proc.poll() is None:
                    why = (
                        f"the guest did not power off within {timeout:g} s"
                        if ask
                        else f"QEMU did not end by itself within {timeout:g} s"
                    )
            if proc.poll() is None:
                why = f"{why}; {self._force_end()}"
        self._release()
        rc = self.returncode
        if self._ended_by is not None:
            return
        if why is None and rc != 0:
            if self._deadline_hit:
                why = f"the machine's timeout ({self.config.timeout:g} s) ran out; QEMU killed"
            elif rc is None:
                why = "QEMU did not end after SIGKILL"
            elif rc < 0:
                why = f"QEMU was ended by signal {-rc} ({signal.Signals(-rc).name})"
            else:
                why = f"QEMU exited with status {rc} ({self._qemu_log_tail()})"
        if why is not None:
            self._ended_by = "reported"
            raise AbnormalShutdown(why, returncode=rc, console_log=self.console_log)

    def _ask_poweroff(self) -> bool:
        """Start ``fso-poweroff`` in the guest; False if it could not be asked."""
        if self._ssh is None or not self._ssh.active:
            return False
        try:
            chan = self._ssh.transport.open_session(timeout=5)
            chan.exec_command("fso-poweroff >/dev/null 2>&1 &")
        except Exception:
            return False
        return True

    def _force_end(self) -> str:
        """End a QEMU that outlived the power-off: QMP ``quit``, else SIGKILL; say which."""
        proc = self._proc
        assert proc is not None
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.cmd("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is not None:
                return "QEMU told to quit over QMP"
        self._kill_qemu()
        return "QEMU killed"

    def _kill_qemu(self) -> None:
        """SIGKILL QEMU if it runs and let the console reach its end (releases nothing)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._wait_console_eof(2.0)

    def _kill_reported(self) -> None:
        """SIGKILL QEMU on the way to raising an error that says why (so a later
        :meth:`stop` does not report it again)."""
        if self._ended_by is None:
            self._ended_by = "reported"
        self._kill_qemu()

    def _end_after_error(self) -> None:
        """A phase failed: the error on its way says why; end QEMU and release everything."""
        self._kill_reported()
        self._release()
        self._phase = "down"

    def _release(self) -> None:
        """Make sure QEMU is gone, then close and remove everything the machine holds."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            self.returncode = proc.returncode
            self._phase = "down"
        if self._ssh is not None:
            with contextlib.suppress(Exception):
                self._ssh.close()
            self._ssh = None
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.close()
            self._qmp = None
        if self.console is not None:
            self.console.close()
        if self._qemu_log is not None:
            self._qemu_log.close()
            self._qemu_log = None
        if self._net is not None:
            self._net.close()
            self._net = None  # release may run twice (crash() then the with block's exit)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        _live.discard(self)

    # ------------------------------------------------------------ commands

    def _require_running(self) -> None:
        if self._ssh is None or not self.running:
            raise VMError("the machine is not running")

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = False,
        input: bytes | None = None,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
    ) -> RunResult:
        """Run a command in the guest (a string is a shell command line, a list an argv).

        Returns its :class:`RunResult` (``faults`` lists kernel reports the console showed
        while it ran). ``stdout``/``stderr`` receive the output as it arrives. Raises
        :class:`GuestFault` if the kernel panicked, :class:`GuestTimeout` if the guest
        stopped answering (QEMU is then killed), :class:`CommandTimeout` if the command
        outlived ``timeout`` while the guest still answers, :class:`CommandFailed` if
        ``check`` and the status is not 0.
        """
        self._require_running()
        assert self._ssh is not None and self.console is not None
        line = command_line(cmd)
        first = len(self.console.lines())
        t0 = time.monotonic()
        try:
            status, out, err = self._ssh.run(
                line,
                timeout=timeout,
                stdin=input,
                stdout=stdout,
                stderr=stderr,
                alive=lambda: self.running,
            )
        except ChannelTimeout:
            if self._answers(10.0):
                raise CommandTimeout(
                    f"guest command {line!r} did not finish within {timeout:.0f} s "
                    "(the guest still answers)"
                ) from None
            self._kill_reported()
            raise GuestTimeout(
                f"the guest stopped answering: {line!r} ran past its {timeout:.0f} s timeout "
                f"and a liveness probe got no answer; QEMU killed; console log: "
                f"{self.console_log}"
            ) from None
        except ChannelLost:
            self._lost(line)
            raise AssertionError("unreachable") from None
        result = RunResult(
            cmd=line,
            status=status,
            stdout=out,
            stderr=err,
            duration=time.monotonic() - t0,
            faults=tuple(self.console.faults(first)),
        )
        if check:
            result.check()
        return result

    def start_process(self, cmd: str | Sequence[str]) -> GuestProcess:
        """Start a long-running guest command and return it without waiting: write to its
        stdin with :meth:`GuestProcess.send`, read its stdout a line at a time with
        :meth:`GuestProcess.readline` (each read bounded by a timeout). Used for sessions
        that serve many requests on one boot (``driver.py serve``)."""
        self._require_running()
        assert self._ssh is not None
        line = command_line(cmd)
        try:
            chan = ChannelProcess(self._ssh.transport, line)
        except ChannelLost:
            self._lost(line)
            raise AssertionError("unreachable") from None
        return GuestProcess(self, chan)

    def _lost(self, line: str) -> None:
        """The SSH channel died: find out why and raise the matching error."""
        assert self._proc is not None
        if self._ended_by is None:
            self._ended_by = "reported"  # by the error raised below
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        self._kill_qemu()
        self._wait_console_eof()
        if self._deadline_hit:
            raise GuestTimeout(
                f"the machine's timeout ({self.config.timeout:.0f} s) ran out during {line!r}; "
                f"QEMU killed; console log: {self.console_log} (allow more time, e.g. "
                "--timeout, if the command is just slow)"
            )
        faults = self.console.faults() if self.console else []
        if faults:
            raise GuestFault(faults, self.console_log)
        raise GuestGone(
            f"QEMU exited (status {self._proc.returncode}) during {line!r} with no kernel "
            f"report; console log: {self.console_log}"
        )

    def _answers(self, timeout: float) -> bool:
        """Whether the guest still runs a trivial command within ``timeout`` seconds."""
        if self._ssh is None or not self.running:
            return False
        result: list[bool] = []

        def probe() -> None:
            with contextlib.suppress(Exception):
                assert self._ssh is not None
                status, _o, _e = self._ssh.run("true", timeout=timeout)
                result.append(status == 0)

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout + 1)
        return bool(result and result[0])

    def put_file(self, data: bytes | Path, remote: str, mode: int = 0o644) -> None:
        """Write ``data`` (bytes, or a host file) to ``remote`` in the guest."""
        payload = data.read_bytes() if isinstance(data, Path) else data
        q = command_line([remote])
        self.run(f"cat > {q} && chmod {mode:o} {q}", input=payload, check=True)

    def get_file(self, remote: str, local: Path | None = None) -> bytes:
        """The bytes of guest file ``remote`` (also written to ``local`` if given)."""
        data = self.run(["cat", remote], check=True).stdout
        if local is not None:
            local.write_bytes(data)
        return data

    def read_trace(self, name: str = "trace") -> str:
        """A file under the guest's tracefs (``/sys/kernel/tracing``), e.g. ``trace``."""
        return self.get_file(f"{TRACING}/{name}").decode(errors="replace")

    # ------------------------------------------------------------ faults

    @property
    def faults(self) -> list[Fault]:
        """Kernel fault reports seen on the console so far."""
        return self.console.faults() if self.console else []

    def check_faults(self) -> None:
        """Raise :class:`GuestFault` if the console showed any kernel fault report."""
        faults = self.faults
        if faults:
            raise GuestFault(faults, self.console_log)

    def fault_report(self) -> str:
        return render_faults(self.faults)

    # ------------------------------------------------------------ QMP and disks

    def qmp(self, command: str, **args: Any) -> Any:
        """Run a QMP command and return its ``return`` value (raises on a QMP error)."""
        if self._qmp is None or not self.running:
            raise VMError("the machine is not running")
        return self._qmp.cmd(command, **args)

    def status(self) -> str:
        """The VM's run state from ``query-status`` (``running``, ``paused`` ...)."""
        return str(self.qmp("query-status")["status"])

    def disks(self) -> list[GuestDisk]:
        """The guest's virtio and NVMe disks (and refresh its /dev/disk/by-id links)."""
        return parse_guest_disks(self.run("fso-disks", check=True).out)

    def disk(self, serial: str, timeout: float = 30.0) -> GuestDisk:
        """The guest disk with this serial, waiting up to ``timeout`` for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            for d in self.disks():
                if d.serial == serial:
                    return d
            if time.monotonic() > deadline:
                raise VMError(f"no disk with serial {serial!r} appeared in the guest")
            time.sleep(0.3)

    def hot_add_disk(self, disk: Disk, timeout: float = 60.0) -> GuestDisk:
        """Attach a disk to the running guest (``blockdev-add`` + ``device_add``)."""
        if not disk.path.is_file() and not disk.path.is_block_device():
            raise VMUserError(f"disk image {disk.path} not found: create it or fix the path")
        node, file = self._prepare_disk(disk)
        serial = disk.serial or node
        self.qmp("blockdev-add", **blockdev_qmp(disk, node, file))
        try:
            self.qmp("device_add", **device_qmp(disk, node))
        except BaseException:
            with contextlib.suppress(Exception):
                self.qmp("blockdev-del", **{"node-name": node})
            raise
        self._disks[serial] = _Attached(disk, node, hot=True)
        if disk.throttle is not None:
            self.set_throttle(serial, disk.throttle)
        return self.disk(serial, timeout)

    def hot_remove_disk(self, serial: str, timeout: float = 60.0) -> None:
        """Detach a disk (``device_del``, wait for ``DEVICE_DELETED``, then free its node)."""
        att = self._disks.get(serial)
        if att is None:
            raise VMError(f"no attached disk with serial {serial!r}")
        assert self._qmp is not None
        dev = f"{att.node}-dev"
        self.qmp("device_del", id=dev)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(f"the guest did not release disk {serial!r} within {timeout:.0f} s")
            try:
                ev = self._qmp.pull_event(wait=min(left, 1.0))
            except TimeoutError:
                continue
            if (
                ev
                and ev.get("event") == "DEVICE_DELETED"
                and (ev.get("data", {}).get("device") == dev)
            ):
                break
        if att.hot:
            self.qmp("blockdev-del", **{"node-name": att.node})
        del self._disks[serial]

    def set_throttle(self, serial: str, throttle: Throttle | None) -> None:
        """Change (or with None, lift) a disk's IOPS/bandwidth cap while the guest runs."""
        att = self._disks.get(serial)
        if att is None:
            raise VMError(f"no attached disk with serial {serial!r}")
        # the block backend of virtio-blk-pci sits on its inner virtio device
        qdev = f"{att.node}-dev"
        if att.disk.iface == "virtio":
            qdev = f"/machine/peripheral/{qdev}/virtio-backend"
        self.qmp("block_set_io_throttle", id=qdev, **(throttle or Throttle()).qmp_args())

    def interactive_shell(self) -> int:
        """An interactive shell on the guest attached to this terminal; returns its status."""
        from vm.shell import interactive

        self._require_running()
        assert self._ssh is not None
        return interactive(self._ssh.transport)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


class GuestProcess:
    """A guest command started by :meth:`Machine.start_process`. Errors are the machine's:
    :class:`CommandTimeout` when a read outlives its timeout but the guest still answers,
    :class:`GuestTimeout` when the guest stops answering (QEMU is then killed),
    :class:`GuestFault` / :class:`GuestGone` when QEMU ends under it."""

    def __init__(self, machine: Machine, chan: ChannelProcess) -> None:
        self.machine = machine
        self.chan = chan
        self.cmd = chan.cmd

    def send(self, data: bytes) -> None:
        try:
            self.chan.send(data)
        except ChannelLost:
            self.machine._lost(self.cmd)

    def readline(self, timeout: float | None = None) -> bytes:
        """The next line of output (with its newline), or b"" once the command's output
        has ended."""
        m = self.machine
        try:
            return self.chan.readline(timeout, alive=lambda: m.running)
        except ChannelTimeout:
            if m._answers(10.0):
                raise CommandTimeout(
                    f"guest command {self.cmd!r} wrote no line within {timeout:.0f} s "
                    "(the guest still answers)"
                ) from None
            m._kill_reported()
            raise GuestTimeout(
                f"the guest stopped answering while {self.cmd!r} ran; QEMU killed; "
                f"console log: {m.console_log}"
            ) from None
        except ChannelLost:
            m._lost(self.cmd)
            raise AssertionError("unreachable") from None

    @property
    def stderr(self) -> bytes:
        return self.chan.stderr

    def close(self, timeout: float = 10.0) -> int | None:
        """Close its stdin and wait up to ``timeout`` for its exit status (None: none)."""
        if not self.machine.running:
            return None
        return self.chan.close(timeout)


class CommandTimeout(VMUserError):
    """A guest command ran past its timeout; the guest itself still answers."""


def _kill_live_machines() -> None:
    for m in list(_live):
        with contextlib.suppress(Exception):
            m.kill()


atexit.register(_kill_live_machines)
