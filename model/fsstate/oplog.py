"""The op log: one line per operation, every parameter and the result, so a log replays.

This module is the model's reading of the format; the writer is the guest-side driver
(``harness/workload/driver.py``, stdlib only, pushed to the guest as one file). The two are
independent implementations of the format documented here, and
``tests/stress/test_oplog.py`` checks they agree line for line.

Format (version 1), UTF-8 text::

    # fsoracle-oplog 1
    # key=value ...                       header lines: fs=, seed=, procs=, ops=, mode=, faults=
    p<PROC> <SEQ> <OP> <key>=<value> ... -> <RESULT> [<key>=<value> ...]

- ``PROC`` is the process number (its directory is ``p<PROC>`` in stress mode), ``SEQ`` the
  op's index in that process's sequence, from 0. Lines of several processes may interleave
  in a file; the order that matters is ``(PROC, SEQ)``.
- Values are percent-encoded (RFC 3986 style, ``%XX`` for each byte outside
  ``A-Z a-z 0-9 / . _ - | , : +``), so a value never holds a space or ``=``.
- Paths are relative to the run's root directory, ``/``-separated; ``.`` is the root.
- ``RESULT`` is ``0`` (success, nothing to report), a decimal count (bytes written or
  read), or an errno name (``ENOENT``). After it come result fields: ``sha256=`` (hex) of
  the bytes a ``read`` returned.
- Numbers are decimal, except ``mode`` (octal, no prefix, the permission bits given to
  ``open``/``mkdir`` under umask 0).

The ops, their arguments in line order, and the system calls the driver makes for each are
the op registry's (:mod:`model.fsstate.ops`; :data:`OP_ARGS` is its view of the argument
keys). A line naming an op the registry does not hold, or lacking one of its arguments, is
a :class:`LogError`.

Write data: ``write_data(seed, n)`` is the first ``n`` bytes of SHAKE-128 (FIPS 202) over
``b"fsoracle-write:" + seed.to_bytes(8, "little")`` — a prefix-stable stream, so a log's
``seed`` and ``len`` give the bytes exactly.
"""

from __future__ import annotations

import errno as _errno
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from model.fsstate import ops as op_registry

OPLOG_MAGIC = "# fsoracle-oplog 1"
SAFE = "/._-|,:+"


class _OpArgs(Mapping[str, tuple[str, ...]]):
    """op name -> its argument keys, in the order a line carries them: a live view of the
    registry (an op registered later shows here)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        spec = op_registry.lookup(name)
        if spec is None:
            raise KeyError(name)
        return spec.keys

    def __iter__(self) -> Iterator[str]:
        return iter(list(op_registry.REGISTRY))

    def __len__(self) -> int:
        return len(op_registry.REGISTRY)


OP_ARGS: Mapping[str, tuple[str, ...]] = _OpArgs()

# FALLOC_FL_* (include/uapi/linux/falloc.h)
FALLOC_FLAGS: dict[str, int] = {
    "alloc": 0x00,
    "keep_size": 0x01,
    "punch_hole": 0x02,
    "zero_range": 0x10,
}


class LogError(ValueError):
    """A line that is not in the op log format (the message says where and why)."""


def write_data(seed: int, n: int) -> bytes:
    """The bytes a ``write`` with this seed and length stores (module docstring)."""
    if n <= 0:
        return b""
    h = hashlib.shake_128(b"fsoracle-write:" + (seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
    return h.digest(n)


def falloc_mode(names: str) -> int:
    """``keep_size|punch_hole`` -> 0x3."""
    v = 0
    for n in names.split("|"):
        if n not in FALLOC_FLAGS:
            raise LogError(f"unknown fallocate mode {n!r}")
        v |= FALLOC_FLAGS[n]
    return v


# where two names share a number, the kernel's spelling (95: EOPNOTSUPP, not ENOTSUP)
ERRNO_NAMES = {
    _errno.EOPNOTSUPP: "EOPNOTSUPP",
    _errno.EAGAIN: "EAGAIN",
    _errno.EDEADLK: "EDEADLK",
}


def errno_name(code: int) -> str:
    return ERRNO_NAMES.get(code) or _errno.errorcode.get(code, f"E{code}")


@dataclass
class Op:
    """One line of the log. ``result`` is None for an op not yet run (a request)."""

    proc: int
    seq: int
    name: str
    args: dict[str, str]
    result: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def arg(self, key: str) -> str:
        try:
            return self.args[key]
        except KeyError:
            raise LogError(f"p{self.proc} {self.seq} {self.name}: no {key}=") from None

    def int_arg(self, key: str) -> int:
        v = self.arg(key)
        try:
            return int(v, 8) if key == "mode" else int(v)
        except ValueError:
            raise LogError(f"{self.ref}: {key}={v} is not a number") from None

    @property
    def ref(self) -> str:
        """How a report names this op: ``p0#12 rename``."""
        return f"p{self.proc}#{self.seq} {self.name}"

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.result.startswith("E")


def format_op(op: Op) -> str:
    """The log line for ``op`` (no newline)."""
    parts = [f"p{op.proc}", str(op.seq), op.name]
    parts += [f"{k}={quote(v, safe=SAFE)}" for k, v in op.args.items()]
    if op.result is not None:
        parts += ["->", op.result]
        parts += [f"{k}={quote(v, safe=SAFE)}" for k, v in op.extra.items()]
    return " ".join(parts)


def parse_op(line: str, lineno: int = 0) -> Op:
    """One log line -> Op (the inverse of :func:`format_op`)."""
    toks = line.split()
    where = f"line {lineno}" if lineno else "op line"
    if len(toks) < 3 or not toks[0].startswith("p") or not toks[0][1:].isdigit():
        raise LogError(f"{where}: expected 'p<PROC> <SEQ> <OP> ...': {line!r}")
    if not toks[1].isdigit():
        raise LogError(f"{where}: sequence number {toks[1]!r} is not a number")
    name = toks[2]
    if name not in OP_ARGS:
        raise LogError(f"{where}: unknown op {name!r}")
    args: dict[str, str] = {}
    extra: dict[str, str] = {}
    result: str | None = None
    target = args
    i = 3
    while i < len(toks):
        t = toks[i]
        if t == "->":
            if result is not None or i + 1 >= len(toks):
                raise LogError(f"{where}: '->' must be followed by one result")
            result = toks[i + 1]
            target = extra
            i += 2
            continue
        k, eq, v = t.partition("=")
        if not eq or not k:
            raise LogError(f"{where}: {t!r} is not key=value")
        target[k] = unquote(v)
        i += 1
    missing = [k for k in OP_ARGS[name] if k not in args]
    if missing:
        raise LogError(f"{where}: {name} lacks {', '.join(missing)}")
    return Op(int(toks[0][1:]), int(toks[1]), name, args, result, extra)


@dataclass
class OpLog:
    """A parsed log: header fields and the ops in (proc, seq) order."""

    header: dict[str, str]
    ops: list[Op]

    def by_proc(self) -> dict[int, list[Op]]:
        out: dict[int, list[Op]] = {}
        for op in self.ops:
            out.setdefault(op.proc, []).append(op)
        return out


def parse_log(text: str) -> OpLog:
    """Parse a whole log. Header lines are ``# key=value ...``; other ``#`` lines and blank
    lines are comments. Ops are sorted by (proc, seq); a repeated (proc, seq) is an error."""
    header: dict[str, str] = {}
    ops: list[Op] = []
    seen: set[tuple[int, int]] = set()
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            if s == OPLOG_MAGIC:
                continue
            for tok in s[1:].split():
                k, eq, v = tok.partition("=")
                if eq:
                    header[k] = unquote(v)
            continue
        op = parse_op(s, n)
        if (op.proc, op.seq) in seen:
            raise LogError(f"line {n}: p{op.proc} {op.seq} appears twice")
        seen.add((op.proc, op.seq))
        ops.append(op)
    ops.sort(key=lambda o: (o.proc, o.seq))
    return OpLog(header, ops)


def format_log(header: dict[str, str], ops: list[Op]) -> str:
    lines = [OPLOG_MAGIC]
    if header:
        lines.append("# " + " ".join(f"{k}={quote(v, safe=SAFE)}" for k, v in header.items()))
    lines += [format_op(op) for op in ops]
    return "\n".join(lines) + "\n"
