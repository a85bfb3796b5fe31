"""The access-trace format: JSON Lines, one object per line.

What the model consumes is what ``hot_update_freqs(inode, start, len, rw)`` receives: an
inode number, a byte offset *in the file*, a length and read/write, at a time. A trace
recorded in a guest should record exactly the arguments of the series' hooks (or their
modern equivalents), not block addresses: see the README section "Hot data tracking".

Lines (``op`` tells them apart; unknown keys are kept in ``extra`` and ignored)::

    {"format": "fsoracle-hot-trace", "version": 1, "clock": "realtime",
     "time_offset_ns": 0, "mount_time_ns": 1793491200000000000, "source": "synthetic"}
    {"op": "file", "inode": 257, "size": 4194304, "path": "f0000"}
    {"time_ns": 1793491200000000000, "op": "write", "inode": 257, "offset": 0, "length": 4194304}
    {"time_ns": 1793491230000000000, "op": "read", "inode": 257, "offset": 1044480, "length": 4096}
    {"time_ns": 1793491290000000000, "op": "delete", "inode": 257}

- The header is optional and, when present, the first line. ``clock`` is the clock
  ``time_ns`` was read from; the model's time is ``time_ns + time_offset_ns`` and should be
  CLOCK_REALTIME nanoseconds, as the kernel code reads ``current_kernel_time()``. The clock
  matters: a record never written has ``last_write_time = 0``, so its write-recency heat is
  ``(2^32 - (now >> 30)) >> 2``, which at a 2026 wall-clock time is ~40 of the 64 buckets it
  would be near boot time. A guest tracer on a monotonic clock must give the offset
  (CLOCK_REALTIME - CLOCK_MONOTONIC at the start) in ``time_offset_ns``.
- ``mount_time_ns`` (model time) starts the timers (update worker, relocation kthread);
  default: the first event's time.
- ``file`` records give i_size (relocation needs it: pages past EOF are not moved) and an
  optional path; without one, an inode's size is the end of its furthest access.
- Events may arrive slightly out of order (per-CPU buffers): they are sorted by time,
  keeping the file order of equal times.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from model.errors import FormatError

TRACE_FORMAT = "fsoracle-hot-trace"
TRACE_VERSION = 1
CLOCKS = ("realtime", "monotonic", "boottime", "synthetic")
OPS = ("read", "write")
_S63 = 1 << 63


@dataclass(frozen=True)
class HotEvent:
    """One tracked access (``op`` read or write) or a deletion (``op`` delete)."""

    time_ns: int
    op: str
    inode: int
    offset: int = 0
    length: int = 0

    @property
    def write(self) -> bool:
        return self.op == "write"


@dataclass(frozen=True)
class FileRecord:
    inode: int
    size: int
    path: str | None = None


@dataclass(frozen=True)
class TraceHeader:
    version: int = TRACE_VERSION
    clock: str = "realtime"
    time_offset_ns: int = 0
    mount_time_ns: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trace:
    """A parsed trace; event times are already model times (offset applied)."""

    header: TraceHeader
    events: list[HotEvent]
    files: dict[int, FileRecord]

    def sizes(self) -> dict[int, int]:
        """i_size per inode: the file records, else the furthest byte accessed."""
        out: dict[int, int] = {}
        for ev in self.events:
            if ev.op in OPS:
                out[ev.inode] = max(out.get(ev.inode, 0), ev.offset + ev.length)
        for ino, rec in self.files.items():
            out[ino] = rec.size
        return out

    @property
    def mount_time_ns(self) -> int:
        if self.header.mount_time_ns is not None:
            return self.header.mount_time_ns + self.header.time_offset_ns
        return self.events[0].time_ns if self.events else 0

    @property
    def end_time_ns(self) -> int:
        return self.events[-1].time_ns if self.events else self.mount_time_ns


def _int(obj: dict[str, Any], key: str, where: tuple[int, int], lo: int = 0) -> int:
    v = obj.get(key)
    if type(v) is not int or v < lo or v >= _S63:
        raise FormatError(
            "hot trace",
            where[1],
            f"line {where[0]}: {key!r} must be an integer in [{lo}, 2^63), got {v!r}",
        )
    return v


def parse_trace(lines: Iterable[str]) -> Trace:
    """Parse JSONL text lines (blank lines and lines starting with ``#`` are skipped).

    Raises :class:`FormatError` (structure ``"hot trace"``, offset = byte offset of the line)
    for anything that is not a valid record.
    """
    header: TraceHeader | None = None
    events: list[HotEvent] = []
    files: dict[int, FileRecord] = {}
    offset = 0
    seen_record = False
    for lineno, line in enumerate(lines, 1):
        where = (lineno, offset)
        offset += len(line.encode()) + (0 if line.endswith("\n") else 1)
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError("hot trace", where[1], f"line {lineno}: not JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise FormatError("hot trace", where[1], f"line {lineno}: not a JSON object")
        if "format" in obj:
            if obj["format"] != TRACE_FORMAT:
                raise FormatError("hot trace", where[1], f"line {lineno}: format {obj['format']!r}")
            if seen_record or header is not None:
                raise FormatError("hot trace", where[1], f"line {lineno}: header must come first")
            version = _int(obj, "version", where, 1)
            if version != TRACE_VERSION:
                raise FormatError("hot trace", where[1], f"line {lineno}: version {version}")
            clock = obj.get("clock", "realtime")
            if clock not in CLOCKS:
                raise FormatError(
                    "hot trace", where[1], f"line {lineno}: clock {clock!r} not in {CLOCKS}"
                )
            toff = obj.get("time_offset_ns", 0)
            if type(toff) is not int or abs(toff) >= _S63:
                raise FormatError("hot trace", where[1], f"line {lineno}: bad time_offset_ns")
            mount = obj.get("mount_time_ns")
            if mount is not None:
                mount = _int(obj, "mount_time_ns", where)
            known = {"format", "version", "clock", "time_offset_ns", "mount_time_ns", "source"}
            header = TraceHeader(
                version=version,
                clock=clock,
                time_offset_ns=toff,
                mount_time_ns=mount,
                source=str(obj.get("source", "")),
                extra={k: v for k, v in obj.items() if k not in known},
            )
            continue
        seen_record = True
        op = obj.get("op")
        if op == "file":
            ino = _int(obj, "inode", where)
            path = obj.get("path")
            files[ino] = FileRecord(
                ino, _int(obj, "size", where), None if path is None else str(path)
            )
            continue
        if op not in (*OPS, "delete"):
            raise FormatError("hot trace", where[1], f"line {lineno}: op {op!r}")
        toff = header.time_offset_ns if header else 0
        t = _int(obj, "time_ns", where) + toff
        if not 0 <= t < _S63:
            raise FormatError("hot trace", where[1], f"line {lineno}: time + offset out of range")
        ino = _int(obj, "inode", where)
        if op == "delete":
            events.append(HotEvent(t, op, ino))
            continue
        off = _int(obj, "offset", where)
        length = _int(obj, "length", where)
        if off + length >= _S63:
            raise FormatError("hot trace", where[1], f"line {lineno}: offset + length >= 2^63")
        events.append(HotEvent(t, op, ino, off, length))
    events.sort(key=lambda e: e.time_ns)
    return Trace(header or TraceHeader(), events, files)


def format_event(ev: HotEvent, time_offset_ns: int = 0) -> str:
    """One event as a trace line (``time_offset_ns`` is subtracted back out)."""
    obj: dict[str, Any] = {"time_ns": ev.time_ns - time_offset_ns, "op": ev.op, "inode": ev.inode}
    if ev.op != "delete":
        obj["offset"] = ev.offset
        obj["length"] = ev.length
    return json.dumps(obj, separators=(",", ":"))


def format_trace(trace: Trace) -> list[str]:
    """The trace as lines (header, file records, events), the inverse of parse_trace."""
    h = trace.header
    head: dict[str, Any] = {
        "format": TRACE_FORMAT,
        "version": h.version,
        "clock": h.clock,
        "time_offset_ns": h.time_offset_ns,
    }
    if h.mount_time_ns is not None:
        head["mount_time_ns"] = h.mount_time_ns
    if h.source:
        head["source"] = h.source
    head.update(h.extra)
    out = [json.dumps(head, separators=(",", ":"))]
    for ino in sorted(trace.files):
        rec = trace.files[ino]
        obj: dict[str, Any] = {"op": "file", "inode": ino, "size": rec.size}
        if rec.path is not None:
            obj["path"] = rec.path
        out.append(json.dumps(obj, separators=(",", ":")))
    out.extend(format_event(ev, h.time_offset_ns) for ev in trace.events)
    return out


@dataclass(frozen=True)
class FiemapExtent:
    """One FIEMAP extent: file bytes ``[logical, logical + length)`` at ``physical``."""

    inode: int
    logical: int
    physical: int
    length: int


class FileExtentMap:
    """Physical byte ranges back to (inode, file offset): for traces recorded at the block
    layer (``block:block_rq_issue`` gives a device sector and a byte count) of one device.
    Build it from ``FIEMAP`` of every file of the data set: on btrfs FIEMAP reports btrfs
    *logical* addresses, which must first be mapped to this device's byte offsets through
    the chunk tree (:class:`model.btrfs.chunks.ChunkMap`)."""

    def __init__(self, extents: Iterable[FiemapExtent]) -> None:
        self._ext = sorted(extents, key=lambda e: e.physical)
        self._starts = [e.physical for e in self._ext]

    def to_file(self, physical: int, length: int) -> list[tuple[int, int, int]]:
        """``(inode, file offset, length)`` pieces covering ``[physical, physical+length)``;
        bytes outside every extent (metadata, free space) are dropped."""
        out: list[tuple[int, int, int]] = []
        end = physical + length
        i = max(bisect.bisect_right(self._starts, physical) - 1, 0)
        while i < len(self._ext):
            e = self._ext[i]
            if e.physical >= end:
                break
            s = max(physical, e.physical)
            t = min(end, e.physical + e.length)
            if s < t:
                out.append((e.inode, e.logical + (s - e.physical), t - s))
            i += 1
        return out
