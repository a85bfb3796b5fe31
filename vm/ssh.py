"""Commands in the guest over SSH (paramiko client, dropbear server).

Each machine gets a fresh ed25519 client key (made here, never written to disk) whose public
half reaches the guest on the kernel command line; the guest's host key was made when the
initramfs was built and is pinned: a connection presenting any other key is refused.
Files move through ``cat`` on an exec channel (dropbear has no SFTP server).
"""

from __future__ import annotations

import io
import select
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vm.errors import Fault, VMError


def new_client_key() -> paramiko.PKey:
    """A fresh ed25519 key pair as a paramiko key."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


def public_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def command_line(cmd: str | Sequence[str]) -> str:
    """A string is a shell command line; a sequence is an argv, quoted for the guest shell."""
    if isinstance(cmd, str):
        return cmd
    return shlex.join(cmd)


@dataclass(frozen=True)
class RunResult:
    """What a guest command did. ``status`` is its exit status (-1: killed by a signal)."""

    cmd: str
    status: int
    stdout: bytes
    stderr: bytes
    duration: float
    faults: tuple[Fault, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def check(self) -> RunResult:
        if self.status != 0:
            raise CommandFailed(self)
        return self


class CommandFailed(VMError):
    """A guest command exited non-zero (``run(..., check=True)``)."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        tail = (result.err or result.out).strip().splitlines()[-3:]
        super().__init__(
            f"guest command {result.cmd!r} exited {result.status}: " + " | ".join(tail)
        )


class ChannelTimeout(Exception):
    """Internal: a command outlived its timeout."""


class ChannelLost(Exception):
    """Internal: the SSH connection went away before the command finished."""


class SSHSession:
    """An authenticated SSH transport to the guest."""

    def __init__(
        self, sock: socket.socket, host_key: str, client_key: paramiko.PKey, timeout: float
    ) -> None:
        expected_type, expected_b64 = host_key.split()[:2]
        t = paramiko.Transport(sock)
        t.get_security_options().key_types = [expected_type]
        t.banner_timeout = timeout
        t.handshake_timeout = timeout
        try:
            t.start_client(timeout=timeout)
            got = t.get_remote_server_key()
            if got.get_name() != expected_type or got.get_base64() != expected_b64:
                raise VMError(
                    "the guest presented an unexpected SSH host key: the initramfs cache "
                    "is inconsistent; delete it and retry"
                )
            t.auth_publickey("root", client_key)
        except BaseException:
            t.close()
            raise
        t.set_keepalive(5)
        self.transport = t

    def close(self) -> None:
        self.transport.close()

    @property
    def active(self) -> bool:
        return self.transport.is_active()

    def run(
        self,
        cmd: str,
        *,
        timeout: float | None,
        stdin: bytes | None = None,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        alive: Callable[[], bool] = lambda: True,
        pty: bool = False,
    ) -> tuple[int, bytes, bytes]:
        """Run ``cmd``; return (status, stdout, stderr).

        Output is also copied to ``stdout`` / ``stderr`` as it arrives when given (streaming).
        Raises :class:`ChannelTimeout` after ``timeout`` seconds and :class:`ChannelLost` if
        the connection drops or ``alive()`` turns false (the QEMU process ended).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            chan = self.transport.open_session(timeout=30)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ChannelLost(str(e)) from e
        out = bytearray()
        err = bytearray()
        try:
            if pty:
                chan.get_pty()
            chan.exec_command(cmd)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    data = chan.recv(65536)
                    out += data
                    if stdout is not None:
                        stdout.write(data)
                        stdout.flush()
                while chan.recv_stderr_ready():
                    data = chan.recv_stderr(65536)
                    err += data
                    if stderr is not None:
                        stderr.write(data)
                        stderr.flush()
                if (
                    chan.exit_status_ready()
                    and not chan.recv_ready()
                    and not (chan.recv_stderr_ready())
                ):
                    break
                if chan.closed or not self.transport.is_active():
                    if chan.exit_status_ready():
                        continue
                    raise ChannelLost("the SSH connection closed")
                if not alive():
                    raise ChannelLost("QEMU exited")
                if deadline is not None and time.monotonic() > deadline:
                    raise ChannelTimeout()
                select.select([chan], [], [], 0.2)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        return status, bytes(out), bytes(err)


class ChannelProcess:
    """A long-running command on one SSH channel: bytes in, lines out (see
    :meth:`vm.machine.Machine.start_process`, which maps the internal exceptions to the
    machine's errors)."""

    def __init__(self, transport: paramiko.Transport, cmd: str) -> None:
        try:
            chan = transport.open_session(timeout=30)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ChannelLost(str(e)) from e
        chan.exec_command(cmd)
        self.chan = chan
        self.cmd = cmd
        self._buf = bytearray()
        self._err = bytearray()
        self.eof = False

    def send(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise ChannelLost(str(e)) from e

    def _pump(self, wait: float) -> None:
        if not self.chan.recv_ready():
            select.select([self.chan], [], [], wait)
        while self.chan.recv_stderr_ready():
            self._err += self.chan.recv_stderr(65536)
        if self.chan.recv_ready():
            self._buf += self.chan.recv(65536)
        elif self.chan.eof_received or self.chan.closed:
            self.eof = True

    def readline(self, timeout: float | None, alive: Callable[[], bool] = lambda: True) -> bytes:
        """The next line (with its newline); b"" at end of output. Raises
        :class:`ChannelTimeout` after ``timeout`` seconds without a whole line and
        :class:`ChannelLost` if the connection or ``alive()`` goes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[: nl + 1])
                del self._buf[: nl + 1]
                return line
            if self.eof:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            if not self.chan.get_transport() or not self.chan.get_transport().is_active():
                raise ChannelLost("the SSH connection closed")
            if not alive():
                raise ChannelLost("QEMU exited")
            if deadline is not None and time.monotonic() > deadline:
                raise ChannelTimeout()
            self._pump(0.2)

    @property
    def stderr(self) -> bytes:
        while self.chan.recv_stderr_ready():
            self._err += self.chan.recv_stderr(65536)
        return bytes(self._err)

    def close(self, timeout: float = 10.0) -> int | None:
        """End stdin, wait up to ``timeout`` for the exit status (None if none came), and
        close the channel."""
        status: int | None = None
        try:
            self.chan.shutdown_write()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not self.chan.exit_status_ready():
                self._pump(0.2)
            if self.chan.exit_status_ready():
                status = self.chan.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            self.chan.close()
        return status
