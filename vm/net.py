"""The guest's one network link, which carries only the harness's SSH connection.

Two ways, both reaching nothing but the guest (vm-notes, "Networking rules for tests"):

- ``netns`` (root): the harness creates its own network namespace with pyroute2, a tap
  device ``tap0`` in it with the host-end address :data:`HOST_ADDR`, and starts QEMU inside
  that namespace; the guest gets :data:`GUEST_ADDR` on the same /30. The namespace has no
  other interface but loopback, no default route and forwarding off (a fresh namespace's
  default), so the guest can reach the host end and nothing beyond it. The harness's SSH
  socket is made inside the namespace.
- ``user`` (no root): QEMU's user-mode stack with ``restrict=on`` (the guest cannot open
  connections out) and SSH forwarded from a free port on 127.0.0.1.

Namespaces are named ``fsoracle-<pid>-<n>``; ones left by a process that no longer exists
(killed with SIGKILL) are removed the next time a namespace is made.

Everything that must happen inside a namespace (creating it, the tap's ioctl, the netlink
socket that configures it, the SSH socket) runs on a short-lived thread that joins the
namespace with ``setns`` (a per-thread operation) through :func:`run_in_netns`. pyroute2's
own helpers fork a child process for each of these with a 4 s reply timeout, which fails
silently on a loaded 2-core machine (seen: no tap created); threads need no fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from vm.errors import VMUserError

HOST_ADDR = "10.213.0.1"
GUEST_ADDR = "10.213.0.2"
PREFIX = 30
USER_GUEST_ADDR = "10.0.2.15"
USER_PREFIX = 24
NETNS_PREFIX = "fsoracle-"
GUEST_MAC = "52:54:00:12:34:56"

_counter = itertools.count()
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread inside the named namespace; return its result (or raise
    its exception). Sockets made there stay in that namespace."""
    from pyroute2 import netns  # type: ignore[import-untyped]

    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            netns.setns(name, flags=0)
            out.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def create_netns(name: str) -> None:
    """Create the named network namespace (``/run/netns/<name>``), as ``ip netns add``."""
    from pyroute2 import netns

    err: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
            # bind-mount this thread's new namespace at /run/netns/<name>
            netns.attach(name, threading.get_native_id())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=run, name="netns-create", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete ``fsoracle-<pid>-<n>`` namespaces whose process is gone; return their names."""
    from pyroute2 import netns

    removed = []
    for name in netns.listnetns():
        if not name.startswith(NETNS_PREFIX):
            continue
        pid_s = name[len(NETNS_PREFIX) :].split("-", 1)[0]
        if pid_s.isdigit() and not _pid_alive(int(pid_s)):
            with contextlib.suppress(OSError):
                netns.remove(name)
                removed.append(name)
    return removed


class NetnsNetwork:
    """A private namespace with a tap; QEMU runs inside it (see :meth:`enter_in_child`)."""

    mode = "netns"
    guest_cidr = f"{GUEST_ADDR}/{PREFIX}"
    tap = "tap0"

    def __init__(self) -> None:
        from pyroute2 import netns

        remove_stale_namespaces()
        self.name = f"{NETNS_PREFIX}{os.getpid()}-{next(_counter)}"
        create_netns(self.name)
        try:
            run_in_netns(self.name, self._configure)
        except BaseException:
            netns.remove(self.name)
            raise

    def _configure(self) -> None:
        """Inside the namespace: loopback up, a persistent tap with the host-end address."""
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname=self.tap, kind="tuntap", mode="tap")
            found = ipr.link_lookup(ifname=self.tap)
            if not found:
                raise OSError(f"tap {self.tap} was not created in namespace {self.name}")
            ipr.addr("add", index=found[0], address=HOST_ADDR, prefixlen=PREFIX)
            ipr.link("set", index=found[0], state="up")

    def qemu_args(self) -> list[str]:
        return [
            "-netdev",
            f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
        ]

    def enter_in_child(self) -> None:
        """Join the namespace (called in the forked QEMU child before exec)."""
        from pyroute2 import netns

        netns.setns(self.name, flags=0)

    def connect(self, port: int, timeout: float) -> socket.socket:
        sock = run_in_netns(self.name, socket.socket)
        sock.settimeout(timeout)
        try:
            sock.connect((GUEST_ADDR, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        from pyroute2 import netns

        with contextlib.suppress(OSError, FileNotFoundError):
            netns.remove(self.name)


class UserNetwork:
    """QEMU user networking, ``restrict=on``, SSH forwarded from 127.0.0.1."""

    mode = "user"
    guest_cidr = f"{USER_GUEST_ADDR}/{USER_PREFIX}"

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def qemu_args(self) -> list[str]:
        return [
            "-netdev",
            f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
        ]

    def enter_in_child(self) -> None:
        pass

    def connect(self, port: int, timeout: float) -> socket.socket:
        if port != 22:
            raise VMUserError("user networking forwards only the guest's SSH port")
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def close(self) -> None:
        pass


def make_network(mode: str) -> NetnsNetwork | UserNetwork:
    """``auto`` is ``netns`` as root and ``user`` otherwise."""
    if mode not in ("auto", "netns", "user"):
        raise VMUserError(f"network mode {mode!r}: use auto, netns or user")
    if mode == "auto":
        mode = "netns" if os.geteuid() == 0 else "user"
    if mode == "netns":
        if os.geteuid() != 0:
            raise VMUserError("network mode netns needs root: run as root or use user")
        return NetnsNetwork()
    return UserNetwork()
