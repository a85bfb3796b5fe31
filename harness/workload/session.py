"""A long-lived driver session: ``driver.py serve`` behind a line transport.

The differential test runs many small examples on one mounted filesystem. Each example is
``mkroot`` (a fresh subvolume or directory), its ``op`` lines (each checked when its reply
comes; the next one may be sent before that reply is read), ``walk``, ``rmroot``, whatever
carries the lines. The transport is a target's process
(:class:`harness.workload.ontarget.TargetTransport`: a local pipe on the host target, an SSH
channel in a guest) or any object with ``send``/``recv``/``close``;
:func:`harness.workload.ontarget.session` makes one.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Protocol

from model.fsstate.oplog import Op, format_op, parse_op

BATCH = 64  # op lines in flight before reading replies (well under a pipe's buffer)


class Transport(Protocol):
    def send(self, line: str) -> None: ...
    def recv(self) -> str: ...
    def close(self) -> None: ...


class SessionError(RuntimeError):
    pass


class DriverSession:
    """The driver's ``serve`` protocol. Replies come in the order commands were sent, so a
    command need not wait for the reply to the one before it: ``mkroot``/``rmroot`` with
    ``wait=False``, :meth:`send_op`, :meth:`send_walk` send and return; the session keeps
    the order of replies it owes (``expect``) and reads the ``ok`` of earlier commands
    before the reply a reader asks for (an ``err`` there raises :class:`SessionError`)."""

    def __init__(self, transport: Transport) -> None:
        self.t = transport
        self.roots_made = 0
        self.expect: deque[str] = deque()  # replies owed, oldest first: "op", "walk", or
        # the name of a command whose reply is "ok"

    def fresh_name(self, prefix: str = "ex") -> str:
        """A root name not used before in this session."""
        self.roots_made += 1
        return f"{prefix}{self.roots_made}"

    def _settle(self, kind: str) -> None:
        """Read the ``ok`` of every command before the oldest reply owed, which must be
        of ``kind``."""
        self.settle()
        if not self.expect or self.expect[0] != kind:
            raise SessionError(f"no {kind} reply is owed (owed: {list(self.expect)})")
        self.expect.popleft()

    def _command(self, line: str, wait: bool) -> None:
        self.t.send(line)
        self.expect.append(line)
        if wait:
            self.settle()
            if self.expect:  # an op or walk reply is owed first: its reader comes first
                raise SessionError(f"{line}: cannot wait behind {list(self.expect)}")

    def settle(self) -> None:
        """Read every ``ok`` owed (raises on the first that is not)."""
        while self.expect and self.expect[0] not in ("op", "walk"):
            what = self.expect.popleft()
            reply = self.t.recv()
            if reply != "ok":
                raise SessionError(f"{what}: {reply}")

    def mkroot(self, name: str, subvol: bool, wait: bool = True) -> None:
        self._command(f"mkroot {name} {'subvol' if subvol else 'dir'}", wait)

    def rmroot(self, name: str, wait: bool = True) -> None:
        self._command(f"rmroot {name}", wait)

    def send_op(self, op: Op) -> None:
        """Send one op (its result ignored); its reply comes with :meth:`recv_op`."""
        self.t.send("op " + format_op(Op(op.proc, op.seq, op.name, op.args)))
        self.expect.append("op")

    def recv_op(self) -> Op:
        """The reply to the oldest op sent and not yet received: the op with its result."""
        self._settle("op")
        reply = self.t.recv()
        if reply.startswith("err "):
            raise SessionError(reply)
        return parse_op(reply)

    def run_ops(self, ops: list[Op]) -> list[Op]:
        """Run ops (their results ignored) and return them with the results they got."""
        out: list[Op] = []
        for i in range(0, len(ops), BATCH):
            batch = ops[i : i + BATCH]
            for op in batch:
                self.send_op(op)
            out += [self.recv_op() for _ in batch]
        return out

    def send_walk(self) -> None:
        self.t.send("walk")
        self.expect.append("walk")

    def recv_walk(self) -> list[dict[str, Any]]:
        self._settle("walk")
        recs: list[dict[str, Any]] = []
        while True:
            line = self.t.recv()
            if line == "end":
                return recs
            if line.startswith("err "):
                raise SessionError(line)
            recs.append(json.loads(line))

    def walk(self) -> list[dict[str, Any]]:
        self.send_walk()
        return self.recv_walk()

    def close(self) -> None:
        self.t.close()

    def __enter__(self) -> DriverSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
