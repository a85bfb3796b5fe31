"""A long-lived driver session: ``driver.py serve`` behind a line transport.

The differential test runs many small examples on one mounted filesystem. Each example is
``mkroot`` (a fresh subvolume or directory), a batch of ``op`` lines, ``walk``,
``rmroot``: four round trips, whatever carries the lines. The transport is a target's
process (:class:`harness.workload.ontarget.TargetTransport`: a local pipe on the host
target, an SSH channel in a guest), a :class:`PipeTransport`, or any object with
``send``/``recv``/``close``; :func:`harness.workload.ontarget.session` makes one.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Protocol

from model.fsstate.oplog import Op, format_op, parse_op

BATCH = 64  # op lines in flight before reading replies (well under a pipe's buffer)


class Transport(Protocol):
    def send(self, line: str) -> None: ...
    def recv(self) -> str: ...
    def close(self) -> None: ...


class SessionError(RuntimeError):
    pass


class PipeTransport:
    """Lines over a child process's stdin/stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def recv(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise SessionError(f"{' '.join(self.argv)} ended: {err.strip()[-500:]}")
        return line.rstrip("\n")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class DriverSession:
    def __init__(self, transport: Transport) -> None:
        self.t = transport
        self.roots_made = 0

    def fresh_name(self, prefix: str = "ex") -> str:
        """A root name not used before in this session."""
        self.roots_made += 1
        return f"{prefix}{self.roots_made}"

    def _ok(self, what: str) -> None:
        reply = self.t.recv()
        if reply != "ok":
            raise SessionError(f"{what}: {reply}")

    def mkroot(self, name: str, subvol: bool) -> None:
        self.t.send(f"mkroot {name} {'subvol' if subvol else 'dir'}")
        self._ok(f"mkroot {name}")

    def rmroot(self, name: str) -> None:
        self.t.send(f"rmroot {name}")
        self._ok(f"rmroot {name}")

    def run_ops(self, ops: list[Op]) -> list[Op]:
        """Run ops (their results ignored) and return them with the results they got."""
        out: list[Op] = []
        for i in range(0, len(ops), BATCH):
            batch = ops[i : i + BATCH]
            for op in batch:
                req = Op(op.proc, op.seq, op.name, op.args)
                self.t.send("op " + format_op(req))
            for _ in batch:
                reply = self.t.recv()
                if reply.startswith("err "):
                    raise SessionError(reply)
                out.append(parse_op(reply))
        return out

    def walk(self) -> list[dict[str, Any]]:
        self.t.send("walk")
        recs: list[dict[str, Any]] = []
        while True:
            line = self.t.recv()
            if line == "end":
                return recs
            if line.startswith("err "):
                raise SessionError(line)
            recs.append(json.loads(line))

    def close(self) -> None:
        self.t.close()

    def __enter__(self) -> DriverSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
