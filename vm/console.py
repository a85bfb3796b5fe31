"""The guest's serial console: a log file per boot, and kernel fault reports found in it.

:func:`find_faults` is a pure function over the console's lines (kunit_tool's habit: tested
against saved logs in ``tests/vm/test_data/``). It recognises the report headers the kernel
prints (the strings are the kernel's own, from ``panic()``, ``__warn()``, ``die()``/``oops``,
``lockdep.c``, ``hung_task.c`` and ``watchdog.c``) and returns one :class:`Fault` per report
with its lines, up to the kernel's end marker (``---[ end trace ...]---``, ``---[ end Kernel
panic ...]---``) or the end of its call trace, at most :data:`MAX_EXCERPT` lines.

:class:`ConsoleLog` reads QEMU's serial output on a thread, writes it to the log file as it
comes, and lets the machine wait for a line or ask for the faults seen so far.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from vm.errors import Fault

MAX_EXCERPT = 80

_TS = re.compile(r"^\s*(?:<\d+>)?\s*\[\s*\d+\.\d+\]\s?")  # "[   12.345678] " (and "<4>")
_CALLER = re.compile(r"^\[\s*[CT]\d+\]\s?")  # "[T1234] " with CONFIG_PRINTK_CALLER

# (kind, pattern on the message text). Order matters: the first match names the report.
TITLES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"^Kernel panic - not syncing")),
    (
        "lockdep",
        re.compile(
            r"^(?:WARNING|INFO): (?:possible circular locking dependency detected"
            r"|possible recursive locking detected|inconsistent lock state"
            r"|possible irq lock inversion dependency detected"
            r"|.*(?:-safe|-unsafe) lock order detected"
            r"|suspicious RCU usage|bad unlock balance detected!"
            r"|held lock freed!|lock held when returning to user space!"
            r"|nested lock was not taken|lock held at task exit time!)"
        ),
    ),
    ("hung_task", re.compile(r"^INFO: task \S.* blocked for more than \d+ seconds")),
    ("bug", re.compile(r"^(?:\S+: )?BUG: |^kernel BUG at ")),
    (
        "oops",
        re.compile(
            r"^Oops: |^general protection fault|^invalid opcode: |^stack segment: "
            r"|^Internal error: Oops"
        ),
    ),
    ("warning", re.compile(r"^WARNING: (?:CPU: \d+ PID: \d+|.* at \S+:\d+)")),
)
_CUT_HERE = re.compile(r"^-+\[ cut here \]-+$")
_LOCKDEP_RULE = re.compile(r"^=+$")
_END = re.compile(r"^-+\[ end (?:trace|Kernel panic)")


def message(line: str) -> str:
    """A console line without its printk timestamp / caller prefix and trailing space."""
    text = _TS.sub("", line.rstrip("\r\n"))
    return _CALLER.sub("", text).rstrip()


def classify(text: str) -> str | None:
    """The fault kind whose report starts with this message, or None."""
    for kind, pat in TITLES:
        if pat.search(text):
            return kind
    return None


def find_faults(lines: Sequence[str]) -> list[Fault]:
    """Every kernel fault report in ``lines``, in order.

    A report starts at a title line (or at the ``cut here`` / ``=====`` rule just before it)
    and runs to the kernel's end marker, or to the end of its call trace (``</TASK>``) when
    no end marker follows, or to :data:`MAX_EXCERPT` lines. Titles inside a report belong to
    it (a ``BUG: unable to handle page fault`` is followed by its ``Oops:`` line), except a
    ``Kernel panic``, which is always reported on its own since it is what ended the machine.
    """
    texts = [message(ln) for ln in lines]
    faults: list[Fault] = []
    i = 0
    while i < len(texts):
        kind = classify(texts[i])
        if kind is None:
            i += 1
            continue
        start = i
        # the rule printed just before the title is part of the report
        for back in (1, 2, 3):
            j = i - back
            if j < 0:
                break
            if _CUT_HERE.match(texts[j]) or (back == 1 and _LOCKDEP_RULE.match(texts[j])):
                start = j
                break
        end = _report_end(texts, i)
        excerpt = tuple(ln.rstrip("\r\n") for ln in lines[start:end])
        faults.append(Fault(kind=kind, line=start, title=texts[i], excerpt=excerpt))
        i = end
    return faults


def _report_end(texts: Sequence[str], title: int) -> int:
    """Index one past the last line of the report whose title is at ``title``.

    The report ends at the kernel's end marker; before another report's title (except an
    ``Oops:``-style line in the first lines after a ``BUG:``, which is the same report); or
    at the end of its call trace (``</TASK>``) when no end marker follows it closely.
    """
    kind = classify(texts[title])
    limit = min(len(texts), title + MAX_EXCERPT)
    trace_end: int | None = None
    for k in range(title + 1, limit):
        t = texts[k]
        if _END.match(t):
            return k + 1
        other = classify(t)
        if other is not None and not (kind == "bug" and other == "oops" and k - title <= 6):
            return k if trace_end is None else trace_end + 1
        if _CUT_HERE.match(t):
            return k if trace_end is None else trace_end + 1
        if trace_end is not None and k - trace_end > 12:
            # a WARN/oops prints its end marker soon after the trace; hung-task and lockdep
            # reports have none, so they end with their trace
            return trace_end + 1
        if t.strip() == "</TASK>":
            trace_end = k
    return limit if trace_end is None else trace_end + 1


class ConsoleLog:
    """Reads a console stream on a thread, logs it to ``path``, keeps the lines for scanning.

    ``on_line`` (optional) is called from the reader thread with each decoded line.
    """

    def __init__(
        self,
        stream: IO[bytes],
        path: Path,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self._stream = stream
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._on_line = on_line
        self._file = open(path, "w", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        self._thread = threading.Thread(target=self._pump, name="console", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self._file.write(line + "\n")
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
                if self._on_line is not None:
                    self._on_line(line)
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()
            self._file.flush()

    @property
    def eof(self) -> bool:
        return self._eof

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait_for(
        self,
        predicate: Callable[[str], bool],
        timeout: float,
        start: int = 0,
        stop: Callable[[], bool] | None = None,
    ) -> int | None:
        """Index of the first line from ``start`` on that satisfies ``predicate``.

        Returns None at EOF, at ``timeout`` seconds, or when ``stop()`` turns true (checked
        every 0.2 s).
        """
        deadline = time.monotonic() + timeout
        pos = start
        with self._cond:
            while True:
                while pos < len(self._lines):
                    if predicate(self._lines[pos]):
                        return pos
                    pos += 1
                if self._eof:
                    return None
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop()):
                    return None
                self._cond.wait(min(left, 0.2))

    def faults(self, start: int = 0) -> list[Fault]:
        """Faults in the lines seen so far (reports starting at or after line ``start``)."""
        return [f for f in find_faults(self.lines()) if f.line >= start]

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the reader to reach EOF (the process is gone) and close the file."""
        self._thread.join(timeout)
        self._file.close()


def render_faults(faults: Iterable[Fault]) -> str:
    """The excerpts, separated by a blank line, for a human report."""
    return "\n\n".join(f"[{f.kind}] {f.title}\n{f.render()}" for f in faults)
