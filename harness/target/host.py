"""The host's own kernel as a target: images loop-mounted (root), commands run as local
processes under the system's ``python3`` (what a guest has: the standard library only).

A power cut on the host (:meth:`HostTarget.cut_power`) cannot lose the page cache the way a
VM's does; it is emulated with the filesystem freeze: ``FIFREEZE`` writes back everything
and blocks every writer, the workload is killed (SIGKILL stays pending for a process blocked
by the freeze, so the op it was in never returns and never logs), the image is copied as it
stands, and that copy becomes the image. What survives is then exactly what had returned
before the freeze: a crash state in which all writeback happened to complete, weaker than a
VM's (nothing unsynced is lost) but judged by the same rules.

Kernel messages and fault reports come from the host's kernel log (``dmesg``) since the
target opened, where the machine lets us read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from harness.safeio import sparse_copy
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

_ENV = {"TZ": "UTC", "LC_ALL": "C"}


def system_python() -> str:
    """The interpreter guest programs run under on the host: the system's python3 (what a
    guest has: standard library only), else this one."""
    import sys

    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def _dmesg() -> list[str] | None:
    try:
        r = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.splitlines() if r.returncode == 0 else None


class HostProcess:
    """A local child with line I/O (the :class:`~harness.target.base.Process` protocol)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.cmd = " ".join(argv)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **_ENV},
        )
        self._buf = b""

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout: float | None = None) -> bytes:
        """One line (with its newline), or what is left at EOF (b"" when nothing)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TargetError(f"{self.cmd}: no reply within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                out, self._buf = self._buf, b""
                return out
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    @property
    def stderr(self) -> bytes:
        if self.proc.poll() is None or self.proc.stderr is None:
            return b""
        return self.proc.stderr.read()

    def close(self, timeout: float = 10.0) -> int | None:
        for f in (self.proc.stdin,):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class HostTarget(Target):
    """See the module docstring."""

    def __init__(self, spec: TargetSpec, disks: Sequence[DiskSpec] = ()) -> None:
        super().__init__(spec, disks)
        self.workdir: Path | None = None
        self.python = system_python()
        self.release = platform.release()
        self.label = f"host kernel {self.release}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._sessions: list[HostProcess] = []
        self._dmesg_start: int | None = None
        self._dmesg_seen = 0
        self._alive = False
        self._cut: set[int] = set()

    def open(self) -> None:
        if self.disk_specs and os.geteuid() != 0:
            raise TargetError("the host target loop-mounts its images: it needs root")
        self.workdir = Path(tempfile.mkdtemp(prefix="fsoracle-host-"))
        for i, d in enumerate(self.disk_specs):
            mnt = self.workdir / "mnt" / f"t{i}"
            if d.snapshot:
                d = self._snapshot_copy(i, d)
            self.disks.append(Attached(i, d, str(d.image), str(mnt)))
        lines = _dmesg()
        self._dmesg_start = len(lines) if lines is not None else None
        self._dmesg_seen = self._dmesg_start or 0
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    def close(self, ok: bool = True) -> None:
        for s in self._sessions:
            with contextlib.suppress(Exception):
                s.close(5)
        self._sessions.clear()
        for p in self._procs:
            self._kill(p)
        self._procs.clear()
        for d in self.disks:
            if d.mounted:
                with contextlib.suppress(TargetError):
                    self.umount(d)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self._alive = False

    @staticmethod
    def _kill(p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)

    # ---- files and commands -------------------------------------------------------------

    def _work(self) -> Path:
        if self.workdir is None:
            raise TargetError("the host target is not open")
        return self.workdir

    def push(self, data: bytes | Path, name: str, mode: int = 0o644) -> str:
        dest = self._work() / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        dest.chmod(mode)
        return str(dest)

    def fetch(self, path: str, local: Path) -> None:
        try:
            shutil.copyfile(path, local)
        except OSError as e:
            raise TargetError(f"cannot fetch {path}: {e.strerror}") from None

    def run(
        self, argv: Sequence[str] | str, *, timeout: float = 600.0, check: bool = True
    ) -> CommandResult:
        t0 = time.monotonic()
        shell = isinstance(argv, str)
        try:
            r = subprocess.run(
                argv,
                shell=shell,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env={**os.environ, **_ENV},
            )
        except subprocess.TimeoutExpired:
            raise TargetError(f"{self.shell(argv)}: still running after {timeout:.0f} s") from None
        res = CommandResult(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
        if check and r.returncode != 0:
            raise TargetError(
                f"{self.shell(argv)} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}"
            )
        return res

    def start(self, argv: Sequence[str]) -> HostProcess:
        p = HostProcess(argv)
        self._sessions.append(p)
        return p

    def start_logged(self, argv: Sequence[str]) -> Logged:
        local = self._work() / "logged.out"
        out = open(local, "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            p = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={**os.environ, **_ENV},
            )
        finally:
            out.close()
        self._procs.append(p)

        def mark_exit() -> None:
            rc = p.wait()
            if p.pid in self._cut:  # killed by a power cut: it never "exits" (as in a VM)
                return
            with open(local, "ab") as f:
                f.write(f"{EXIT_MARK}{rc}\n".encode())

        threading.Thread(target=mark_exit, daemon=True).start()
        return Logged(self.shell(argv), local, p)

    # ---- disks --------------------------------------------------------------------------

    def mount(self, d: Attached, options: str = "") -> CommandResult:
        Path(d.mnt).mkdir(parents=True, exist_ok=True)
        opts = "loop" + (",ro" if d.disk.readonly else "") + (f",{options}" if options else "")
        r = self.run(["mount", "-t", d.fs, "-o", opts, str(d.image), d.mnt], check=False)
        d.mounted = r.status == 0
        return r

    def umount(self, d: Attached) -> None:
        r = CommandResult(1, "", "")
        for _ in range(50):
            r = self.run(["umount", d.mnt], check=False)
            if r.status == 0:
                d.mounted = False
                return
            time.sleep(0.1)
        raise TargetError(f"umount {d.mnt} failed: {r.err.strip()}")

    def cut_power(self, d: Attached) -> None:
        """Freeze, kill the workload, copy the image as it stands, make the copy the image
        (see the module docstring)."""
        self.run(["fsfreeze", "--freeze", d.mnt])
        try:
            self._cut.update(p.pid for p in self._procs)
            for p in self._procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
            cut = d.image.with_name(d.image.name + ".cut")
            with contextlib.suppress(FileNotFoundError):
                cut.unlink()
            sfd = os.open(d.image, os.O_RDONLY)
            dfd = os.open(cut, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                sparse_copy(sfd, dfd, os.fstat(sfd).st_size)
            finally:
                os.close(sfd)
                os.close(dfd)
        finally:
            self.run(["fsfreeze", "--unfreeze", d.mnt], check=False)
        for p in self._procs:
            self._kill(p)
        self._procs.clear()
        self.umount(d)
        os.replace(cut, d.image)

    # ---- the kernel's log ---------------------------------------------------------------

    def kernel_messages(self) -> list[str]:
        lines = _dmesg()
        if lines is None:
            return []
        new = lines[self._dmesg_seen :] if self._dmesg_seen <= len(lines) else lines
        self._dmesg_seen = len(lines)
        return new

    def faults(self) -> list[str]:
        from vm.console import find_faults

        lines = _dmesg()
        if lines is None or self._dmesg_start is None:
            return []
        return [f"{f.kind}: {f.title}" for f in find_faults(lines[self._dmesg_start :])]

    def _snapshot_copy(self, i: int, d: DiskSpec) -> DiskSpec:
        """A ``snapshot`` disk: a sparse copy of its image in the work directory, which the
        target then uses (and removes with the work directory)."""
        copy = self._work() / f"snapshot{i}.img"
        sfd = os.open(d.image, os.O_RDONLY)
        try:
            dfd = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                sparse_copy(sfd, dfd, os.fstat(sfd).st_size)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        return dataclasses.replace(d, image=copy)

    def runtime(self) -> Runtime:
        return Runtime(
            accel="host", accel_reason="the host's own kernel", emulator="none", ready_seconds=0.0
        )
