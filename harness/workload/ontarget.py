"""What every stress-family experiment does on a target: push the driver, make the run's
root (a subvolume when the log ran in one), run a driver command, fetch its files, open a
``driver.py serve`` session. Written once against :class:`harness.target.Target`."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.errors import UserError
from harness.target import Attached, CommandResult, Process, Target
from harness.workload.session import DriverSession, SessionError

DRIVER = Path(__file__).with_name("driver.py")
RUN_DIR = "run"  # the driver's -d below the mount point
DRIVER_NAME = "driver.py"


def push_driver(t: Target) -> str:
    """The driver on the target (pushed once per target); its path there."""
    cached = getattr(t, "_fsoracle_driver", None)
    if cached is None:
        cached = t.push(DRIVER, DRIVER_NAME, 0o755)
        t._fsoracle_driver = cached  # type: ignore[attr-defined]
    return str(cached)


def driver_argv(t: Target, *args: str) -> list[str]:
    """``python3 driver.py ARGS`` on the target."""
    return t.py(push_driver(t), *args)


def run_driver(t: Target, *args: str, timeout: float = 600.0) -> CommandResult:
    r = t.run(driver_argv(t, *args), timeout=timeout, check=False)
    if r.status != 0:
        raise UserError(f"the driver failed on {t.label} (exit {r.status}): {r.err.strip()[-500:]}")
    return r


def make_subvol_root(t: Target, d: Attached, name: str = RUN_DIR) -> None:
    """``name`` below ``d``'s mount as a btrfs subvolume, made as the driver makes one
    (umask 0: the root gets mode 0777, as a log that ran in one expects)."""
    prog = push_driver(t)
    mk = (
        f"import sys, os; sys.path.insert(0, {str(Path(prog).parent)!r}); import driver;"
        f" os.umask(0); driver.Executor({d.mnt!r}).op_subvol_create({{'path': {name!r}}})"
    )
    t.run([t.python, "-c", mk])


def scratch(t: Target, name: str) -> str:
    """A path for a driver output file on the target (its work directory)."""
    return f"{Path(push_driver(t)).parent}/{name}"


class TargetTransport:
    """A session's line transport over a target process; each reply is awaited at most
    ``timeout`` seconds."""

    def __init__(self, proc: Process, timeout: float = 600.0) -> None:
        self.proc = proc
        self.timeout = timeout

    def send(self, line: str) -> None:
        self.proc.send((line + "\n").encode())

    def recv(self) -> str:
        raw = self.proc.readline(self.timeout)
        if not raw:
            err = self.proc.stderr.decode(errors="replace").strip()
            raise SessionError(f"{self.proc.cmd} ended: {err[-500:]}")
        return raw.decode(errors="replace").rstrip("\n")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        with contextlib.suppress(Exception):
            self.proc.close(10)


def session(
    t: Target, d: Attached, timeout: float = 600.0, plugins: Sequence[Path] = ()
) -> DriverSession:
    """A ``driver.py serve`` session rooted at ``d``'s mount. ``plugins``: files of guest
    handlers for ops the driver lacks (pushed and passed as ``--plugin``)."""
    args = ["serve", "--root", d.mnt]
    for i, p in enumerate(plugins):
        args += ["--plugin", str(t.push(p, f"plugin{i}-{p.name}", 0o644))]
    proc = t.start(driver_argv(t, *args))
    return DriverSession(TargetTransport(proc, timeout))


@contextlib.contextmanager
def mounted(t: Target, d: Attached, options: str = "") -> Iterator[Attached]:
    """``d`` mounted for the block; unmounted after it when the block went well (a failed
    block leaves the teardown of the target to unmount what it can)."""
    r = t.mount(d, options)
    if r.status != 0:
        raise UserError(f"mount of {d.image} on {t.label} failed: {(r.err or r.out).strip()}")
    yield d
    t.umount(d)


def quote(argv: list[str]) -> str:
    return shlex.join(argv)
