"""Stress runs and differential sessions in a guest kernel (the VM half of the workloads).

What runs where:

- **Host**: the images (``make_image``: ``mkfs.btrfs``, our writer, ``mke2fs``), the model,
  the checkers and the outside view, after the guest is gone (``finish_run``).
- **Guest** (a :class:`vm.Machine` booted on the kernel under test, one virtual disk per
  image, ``virtio`` or ``nvme``): the driver, pushed as one file to ``/root/driver.py`` and
  run by the guest's own ``python3``; the filesystem is mounted at ``/mnt/tN``. Nothing
  comes back but the op log and the walk (and, for a differential session, the reply lines).

:class:`GuestFilesystems` boots one machine for several images (one boot serves a batch:
TCG boots cost 10-20 s) and stops it on every path out. :func:`run_vm_stress` is
``fsoracle stress --target vm``; :func:`vm_sessions` gives ``driver.py serve`` sessions
for the differential (:mod:`harness.workload.differential`). Crash runs are in
:mod:`harness.workload.vmcrash`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, write_atomic
from harness.workload.hostmount import CheckerResult, FsSpec, make_image, run_checkers
from harness.workload.session import DriverSession, SessionError
from harness.workload.stress import DRIVER, RUN_DIR, StressReport, finish_run

GUEST_DRIVER = "/root/driver.py"
GUEST_PYTHON = "python3"
DEVICES = ("virtio", "nvme")


def default_kernel() -> str:
    from vm.kernels import DEFAULT_SPEC

    return DEFAULT_SPEC


@dataclass(frozen=True)
class VmTarget:
    """Which kernel, how the disks are attached, and the machine's bounds. ``timeout``
    bounds each machine's whole life (QEMU is killed at it); ``log_dir`` is where the
    console logs go (default ``results/vm/...``)."""

    kernel: str = field(default_factory=default_kernel)
    device: str = "virtio"
    mem: int = 1536
    cpus: int = 2
    timeout: float = 3600.0
    log_dir: Path | None = None

    def validate(self) -> None:
        """Fail before any image is made or machine booted."""
        from vm.kernels import schemes

        if self.device not in DEVICES:
            raise UserError(f"--device {self.device!r}: one of {', '.join(DEVICES)}")
        scheme, sep, _rest = self.kernel.partition(":")
        if not sep or scheme not in schemes():
            raise UserError(
                f"--kernel {self.kernel!r}: use {', '.join(s + ':...' for s in schemes())}"
                " (e.g. debian:6.12, debian:6.1)"
            )


def vm_errors() -> tuple[type[BaseException], ...]:
    from vm.errors import VMUserError

    return (VMUserError,)


def kernel_label(m: Any, target: VmTarget) -> str:
    """``6.12.117+deb12-cloud-amd64 (debian:6.12, VM, TCG, virtio)``."""
    boot = m.boot
    accel = boot.accel.upper() if boot else "?"
    release = boot.release if boot else target.kernel
    return f"{release} ({target.kernel}, VM, {accel}, {target.device})"


def faults_text(m: Any) -> list[str]:
    """One line per kernel fault report the console showed."""
    return [f"{f.kind}: {f.title}" for f in m.faults]


@dataclass
class GuestFs:
    """One image attached to the guest: its spec, host path, serial and mount point."""

    spec: FsSpec
    image: Path
    serial: str
    mnt: str
    checkers: list[CheckerResult] = field(default_factory=list)


class GuestFilesystems:
    """Boot ``target.kernel`` with one disk per image, push the driver, mount every image
    at ``/mnt/tN``; on the way out unmount (cleanly, when the run went well), power off
    and stop QEMU whatever happened. ``check=True`` runs the checkers on each image after
    the machine is gone (``fss[i].checkers``).

    Images are made here unless ``make=False`` (they exist already: a crashed image)."""

    def __init__(
        self,
        target: VmTarget,
        fss: list[tuple[FsSpec, Path]],
        *,
        name: str = "stress",
        make: bool = True,
        check: bool = False,
        extra_qemu_args: tuple[str, ...] = (),
        mount: bool = True,
    ) -> None:
        target.validate()
        self.target = target
        self.fss = [
            GuestFs(spec, img, f"fst{i}", f"/mnt/t{i}") for i, (spec, img) in enumerate(fss)
        ]
        self.name = name
        self.make = make
        self.check = check
        self.extra = extra_qemu_args
        self.mount_at_start = mount
        self.machine: Any = None
        self.label = ""
        self.faults: list[str] = []
        self.seconds: dict[str, float] = {}
        self.commands: dict[str, str] = {}
        self._sessions: list[DriverSession] = []

    def __enter__(self) -> GuestFilesystems:
        from vm.disks import Disk
        from vm.machine import Machine, MachineConfig

        t0 = time.monotonic()
        if self.make:
            for g in self.fss:
                g.image.parent.mkdir(parents=True, exist_ok=True)
                self.commands[g.mnt] = make_image(g.image, g.spec)
        self.seconds["mkfs"] = time.monotonic() - t0
        cfg = MachineConfig(
            kernel=self.target.kernel,
            disks=tuple(Disk(g.image, self.target.device, serial=g.serial) for g in self.fss),  # type: ignore[arg-type]
            mem=self.target.mem,
            cpus=self.target.cpus,
            timeout=self.target.timeout,
            log_dir=self.target.log_dir,
            name=self.name,
            fail_on_fault=False,
            extra_qemu_args=self.extra,
        )
        t0 = time.monotonic()
        m = Machine(cfg)
        m.start()
        self.machine = m
        try:
            self.seconds["boot"] = time.monotonic() - t0
            self.label = kernel_label(m, self.target)
            m.put_file(DRIVER, GUEST_DRIVER, 0o755)
            if self.mount_at_start:
                for g in self.fss:
                    self.mount(g)
        except BaseException as e:
            self._stop(graceful=isinstance(e, Exception))
            raise
        return self

    def mount(self, g: GuestFs, options: str = "") -> Any:
        dev = self.machine.disk(g.serial).by_id
        opts = f"-o {shlex.quote(options)} " if options else ""
        return self.machine.run(
            f"mkdir -p {g.mnt} && mount -t {g.spec.fs} {opts}{dev} {g.mnt}", timeout=600, check=True
        )

    def run(self, cmd: str, timeout: float = 600, check: bool = True) -> Any:
        return self.machine.run(cmd, timeout=timeout, check=check)

    def driver(self, *args: str) -> str:
        return shlex.join([GUEST_PYTHON, GUEST_DRIVER, *args])

    def session(self, i: int, timeout: float = 600) -> DriverSession:
        """A ``driver.py serve`` session on image ``i`` (closed on exit)."""
        proc = self.machine.start_process(self.driver("serve", "--root", self.fss[i].mnt))
        s = DriverSession(GuestTransport(proc, timeout))
        self._sessions.append(s)
        return s

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop(graceful=exc is None or isinstance(exc, Exception), umount=exc is None)
        if exc is None and self.check:
            for g in self.fss:
                t0 = time.monotonic()
                g.checkers = run_checkers(g.image, g.spec.fs)
                self.seconds[f"checkers {g.mnt}"] = time.monotonic() - t0

    def _stop(self, graceful: bool, umount: bool = False) -> None:
        m = self.machine
        if m is None:
            return
        try:
            for s in self._sessions:
                with contextlib.suppress(Exception):
                    s.close()
            self._sessions.clear()
            if umount and m.running:
                for g in self.fss:
                    m.run(f"umount {g.mnt} 2>/dev/null || true", timeout=600)
        finally:
            self.faults = faults_text(m)
            if graceful:
                m.stop()
            else:
                m.kill()
                m._teardown(graceful=False)


class GuestTransport:
    """The session's line transport over a guest process's stdin/stdout (SSH channel);
    every reply is awaited at most ``timeout`` seconds."""

    def __init__(self, proc: Any, timeout: float = 600) -> None:
        self.proc = proc
        self.timeout = timeout

    def send(self, line: str) -> None:
        self.proc.send((line + "\n").encode())

    def recv(self) -> str:
        raw = self.proc.readline(self.timeout)
        if not raw:
            err = self.proc.stderr.decode(errors="replace").strip()
            raise SessionError(f"{self.proc.cmd} ended: {err[-500:]}")
        return str(raw.decode(errors="replace").rstrip("\n"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        with contextlib.suppress(Exception):
            self.proc.close(10)


# ---------------------------------------------------------------- stress runs


@dataclass
class VmStressReport(StressReport):
    """A stress run in a guest: the host report plus the guest kernel's fault reports."""

    kernel_faults: list[str] = field(default_factory=list)
    console_log: str = ""

    @property
    def ok(self) -> bool:
        return super().ok and not self.kernel_faults

    def lines(self, limit: int = 20) -> list[str]:
        out = super().lines(limit)
        extra = [f"guest kernel reports: {len(self.kernel_faults)}"]
        extra += [f"  {x}" for x in self.kernel_faults[:limit]]
        if self.console_log:
            extra.append(f"console log: {self.console_log}")
        return out[:-1] + extra + ["verdict: " + ("OK" if self.ok else "DIFFERENCES")]

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d["kernel_faults"] = self.kernel_faults
        d["console_log"] = self.console_log
        d["ok"] = self.ok
        return d


@dataclass
class StressJob:
    spec: FsSpec
    out: Path


def stress_timeout(ops: int, procs: int) -> float:
    """A bound for one driver run under TCG on a shared host: ~10 ms an op measured,
    allowed 15x, never under 10 minutes."""
    return max(600.0, 0.15 * ops * procs + 120)


def run_vm_stress(
    target: VmTarget,
    jobs: list[StressJob],
    *,
    seed: int,
    ops: int,
    procs: int,
    max_size: int = 256 << 10,
    max_len: int = 64 << 10,
    keep_image: bool = False,
) -> list[VmStressReport]:
    """One boot, one run per job (each on its own image and disk, one after the other),
    then on the host ``finish_run`` for each: model vs kernel, checkers, outside view."""
    for j in jobs:
        output_dir(j.out)
        for p in ("ops.log", "walk.jsonl", "report.json", "report.txt"):
            with contextlib.suppress(FileNotFoundError):
                (j.out / p).unlink()
    budget = sum(stress_timeout(ops, procs) for _ in jobs) + 600
    target = VmTarget(**{**target.__dict__, "timeout": max(target.timeout, budget)})
    reports: list[VmStressReport] = []
    gfs = GuestFilesystems(target, [(j.spec, j.out / "fs.img") for j in jobs], name="stress")
    with gfs:
        for j, g in zip(jobs, gfs.fss, strict=True):
            rep = VmStressReport(gfs.label, j.spec.label(), seed, ops, procs)
            rep.commands["mkfs"] = gfs.commands.get(g.mnt, "")
            argv = gfs.driver(
                "run",
                "-d",
                f"{g.mnt}/{RUN_DIR}",
                "-n",
                str(ops),
                "-p",
                str(procs),
                "-s",
                str(seed),
                "--fs",
                j.spec.fs,
                "--log",
                "/tmp/ops.log",
                "--walk",
                "/tmp/walk.jsonl",
                "--max-size",
                str(max_size),
                "--max-len",
                str(max_len),
            )
            rep.commands["driver (guest)"] = argv
            t0 = time.monotonic()
            r = gfs.run(argv, timeout=stress_timeout(ops, procs), check=False)
            rep.seconds["workload+walk (guest)"] = time.monotonic() - t0
            if r.status != 0:
                raise UserError(f"the driver failed in the guest (exit {r.status}): {r.err[-500:]}")
            t0 = time.monotonic()
            gfs.machine.get_file("/tmp/ops.log", j.out / "ops.log")
            gfs.machine.get_file("/tmp/walk.jsonl", j.out / "walk.jsonl")
            gfs.run("rm -f /tmp/ops.log /tmp/walk.jsonl")
            rep.seconds["pull"] = time.monotonic() - t0
            t0 = time.monotonic()
            gfs.run(f"umount {g.mnt}")
            rep.seconds["umount"] = time.monotonic() - t0
            reports.append(rep)
    for rep, j in zip(reports, jobs, strict=True):
        rep.seconds["boot"] = gfs.seconds.get("boot", 0.0)
        rep.kernel_faults = gfs.faults
        rep.console_log = str(gfs.machine.console_log or "")
        finish_run(rep, j.spec.fs, j.out / "fs.img", j.out / "ops.log", j.out / "walk.jsonl")
        write_atomic(j.out / "report.json", json.dumps(rep.to_json(), indent=1) + "\n")
        write_atomic(j.out / "report.txt", "\n".join(rep.lines(limit=1000)) + "\n")
        if not keep_image:
            (j.out / "fs.img").unlink()
    return reports


@contextlib.contextmanager
def vm_sessions(
    target: VmTarget, specs: list[FsSpec], workdir: Path, *, check: bool = True
) -> Iterator[GuestFilesystems]:
    """A booted guest with one mounted image per spec (made under ``workdir``); call
    ``.session(i)`` for a ``driver.py serve`` session on image ``i``. The checkers run on
    each image after the machine stops (``.fss[i].checkers``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fss = [(s, workdir / f"fs{i}.img") for i, s in enumerate(specs)]
    with GuestFilesystems(target, fss, name="differential", check=check) as gfs:
        yield gfs


# ---------------------------------------------------------------- differential and replay


def replay_args(target: VmTarget) -> str:
    """The options that make ``fsoracle stress replay`` run in the same kind of guest."""
    out = f"--target vm --kernel {target.kernel}"
    return out + (f" --device {target.device}" if target.device != "virtio" else "")


def kernel_reports(gfs: GuestFilesystems) -> CheckerResult:
    """The guest console's fault reports as one more verdict beside the checkers."""
    n = len(gfs.faults)
    return CheckerResult(
        "guest kernel reports",
        n == 0,
        "none" if n == 0 else f"{n}: {gfs.faults[0]}",
        "\n".join(gfs.faults),
    )


def run_vm_differential(
    target: VmTarget,
    spec: FsSpec,
    *,
    examples: int,
    seed: int = 0,
    faults: Any = None,
    max_ops: int = 12,
    results: Path = Path("results/stress"),
) -> Any:
    """``fsoracle stress differential --target vm``: one boot, one mounted image, a
    ``driver.py serve`` session, hypothesis' search; then the checkers on the image."""
    import tempfile

    from harness.workload.differential import DifferentialRunner, search

    with tempfile.TemporaryDirectory(prefix="fsoracle-vmdiff-") as tmp:
        with vm_sessions(target, [spec], Path(tmp)) as gfs:
            runner = DifferentialRunner(gfs.session(0), spec.fs, faults)
            out = search(
                runner,
                examples=examples,
                seed=seed,
                max_ops=max_ops,
                results=results,
                where=f"{gfs.label}, {spec.label()}",
                replay_args=replay_args(target),
            )
        out.checkers = [*gfs.fss[0].checkers, kernel_reports(gfs)]
    return out


def replay_in_vm(
    log_path: Path,
    target: VmTarget,
    spec: FsSpec,
    *,
    subvol_root: bool,
    faults: Any,
    proc_dirs: bool,
    out: Path | None = None,
) -> Any:
    """``fsoracle stress replay LOG --target vm``: the log's ops again on a fresh image in
    a guest (a fresh subvolume root when the log ran in one), then the model checks the new
    results and tree, and the checkers the image."""
    import tempfile

    from harness.workload.replay import ReplayOutcome
    from harness.workload.stress import read_walk
    from model.fsstate.compare import check_log
    from model.fsstate.oplog import parse_log

    t0 = time.monotonic()
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="fsoracle-vmreplay-")
        out = Path(tmp.name)
    try:
        output_dir(out)
        new_log, walk_out = out / "replay.log", out / "replay.walk.jsonl"
        with GuestFilesystems(target, [(spec, out / "fs.img")], name="replay", check=True) as gfs:
            g = gfs.fss[0]
            run = f"{g.mnt}/{RUN_DIR}"
            gfs.machine.put_file(log_path.read_bytes(), "/tmp/in.log")
            if subvol_root:
                mk = (
                    "import sys, os; sys.path.insert(0, '/root'); import driver; os.umask(0); "
                    f"driver.Executor({g.mnt!r}).op_subvol_create({{'path': {RUN_DIR!r}}})"
                )
                gfs.run(shlex.join([GUEST_PYTHON, "-c", mk]))
            gfs.run(gfs.driver("replay", "/tmp/in.log", "-d", run, "--log", "/tmp/replay.log"))
            gfs.run(gfs.driver("walk", run, "--out", "/tmp/walk.jsonl"))
            gfs.machine.get_file("/tmp/replay.log", new_log)
            gfs.machine.get_file("/tmp/walk.jsonl", walk_out)
        replayed = parse_log(new_log.read_text())
        res = check_log(
            spec.fs,
            replayed.ops,
            read_walk(walk_out),
            root_is_subvol=subvol_root,
            faults=faults,
            proc_dirs=proc_dirs,
        )
        checks = [*gfs.fss[0].checkers, kernel_reports(gfs)]
        (out / "fs.img").unlink()
        return ReplayOutcome(
            f"{gfs.label}, {spec.label()}",
            spec.fs,
            len(replayed.ops),
            res,
            checks,
            time.monotonic() - t0,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
