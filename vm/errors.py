"""Errors raised by ``vm/``.

:class:`VMUserError` and its subclasses are problems the user can cause or fix (a kernel spec
that does not resolve, a missing tool, a disk image that is not there, a guest kernel that
panicked or stopped answering). Their message is one line: what happened and what to do.
``harness`` turns them into its own ``UserError`` (exit status 2, no traceback). Anything else
escaping ``vm/`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class VMError(Exception):
    """Base class of everything ``vm/`` raises on purpose."""


class VMUserError(VMError):
    """A problem with the user's input or environment; the message says what to do."""


class KernelSpecError(VMUserError):
    """A kernel spec that does not name a kernel we can get."""


class ToolMissing(VMUserError):
    """A host program ``vm/`` needs is not installed."""


class BootError(VMUserError):
    """QEMU would not start, or the guest did not come up."""


class EmulatorCrash(BootError):
    """QEMU itself died of a signal during boot (an assertion or a fault inside the
    emulator, e.g. TCG's ``iotlb_to_section`` assertion), with no kernel report on the
    console and no deadline reached: the emulator's bug, not the guest's."""


@dataclass(frozen=True)
class Fault:
    """One kernel report found in the console stream.

    ``kind`` is one of ``panic``, ``oops``, ``bug``, ``warning``, ``lockdep``, ``hung_task``;
    ``line`` is the 0-based index of the report's first line in the stream; ``title`` is that
    line without its timestamp; ``excerpt`` holds the report's lines (timestamps kept).
    """

    kind: str
    line: int
    title: str
    excerpt: tuple[str, ...] = field(default=(), compare=False)

    def render(self) -> str:
        return "\n".join(self.excerpt)


class GuestFault(VMUserError):
    """The guest kernel reported a fault (panic, oops, BUG, WARNING, lockdep, hung task)."""

    def __init__(self, faults: list[Fault], console_log: Path | None) -> None:
        self.faults = faults
        self.console_log = console_log
        first = faults[0]
        more = f" (+{len(faults) - 1} more)" if len(faults) > 1 else ""
        where = f"; console log: {console_log}" if console_log else ""
        super().__init__(
            f"guest kernel {first.kind.replace('_', ' ')}: {first.title}{more}{where}; "
            "the excerpt is above: fix the kernel or the workload that triggered it"
        )


class GuestTimeout(VMUserError):
    """The guest stopped answering (or a command ran too long); QEMU was killed."""


class GuestGone(VMUserError):
    """QEMU exited while we were talking to the guest, with no kernel report to explain it."""


class AbnormalShutdown(VMUserError):
    """The machine did not end cleanly: the guest did not power off within the timeout (or
    could not be asked to) and QEMU had to be ended, or QEMU exited with a non-zero status.
    Raised by :meth:`vm.machine.Machine.stop` (and ``wait``) after everything is cleaned up;
    never for an end the caller asked for (``kill``, ``crash``).

    ``returncode`` is QEMU's exit status (negative: the signal that ended it).
    """

    def __init__(self, why: str, returncode: int | None, console_log: Path | None) -> None:
        self.why = why
        self.returncode = returncode
        self.console_log = console_log
        where = f"console log: {console_log}" if console_log else "no console log"
        super().__init__(
            f"abnormal shutdown: {why}; {where} (its last lines show what the guest was "
            "doing; a power-off that hangs is often a kernel stuck in sync or unmount)"
        )
