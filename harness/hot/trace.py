"""Record hot-data access traces in a guest kernel (``fsoracle hot trace``).

What is recorded is what the 2013 series' hook ``hot_update_freqs(inode, start, len, rw)``
received, taken at the same places on a stock kernel with kprobe events (nothing is
patched):

- reads: the entry of btrfs's direct read, 6.12 ``btrfs_direct_read(struct kiocb *iocb,
  struct iov_iter *to)`` (fs/btrfs/direct-io.c; exported to file.c's
  ``btrfs_file_read_iter`` for IOCB_DIRECT), fetching ``iocb->ki_filp->f_inode->i_ino``,
  ``->i_sb->s_dev``, ``iocb->ki_pos`` and ``to->count`` by name through BTF
  (``CONFIG_PROBE_EVENTS_BTF_ARGS=y`` in Debian's 6.12 cloud kernel; its
  ``/sys/kernel/btf/vmlinux`` describes the structs, so no offsets are hard-coded). The
  2013 series hooked the direct read in ``__blockdev_direct_IO``; btrfs's direct I/O now
  goes through iomap, and ``btrfs_direct_read`` is where one read(2) enters it once.
- writes: ``do_writepages(mapping, wbc)``, where the 2013 series hooked writeback, as an
  entry probe (``mapping->host->i_ino``, ``->i_sb->s_dev``, ``mapping->writeback_index``,
  ``wbc->nr_to_write``) and a return probe (``wbc->nr_to_write`` after; 6.12's return
  probes can fetch the entry arguments). One write event per call that wrote pages:
  ``offset = writeback_index << 12`` (at entry), ``length = pages written << 12``, as the
  series computed them. Calls that wrote nothing are not events.

Why not the block layer: a bio carries sectors, not an inode or a file offset; requests are
merged and split; metadata and data are mixed. The model's records are per inode and per
1 MiB range of the file, so the trace must be taken where the inode is known.

The trace buffer uses the ``mono`` clock; the header's ``time_offset_ns`` is the guest's
CLOCK_REALTIME - CLOCK_MONOTONIC when tracing started, so model times are realtime ns.
Events of other filesystems (the fast disk's, the initramfs) and of btrfs's btree inode
(inode 1) are dropped by the device number and ``ino >= 256``.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.hot import sim
from harness.hot.config import load_variant, setup_from_preset
from harness.safeio import write_atomic
from harness.target import DiskSpec, Target, TargetError, TargetSpec, open_target
from model.btrfs.constants import FIRST_FREE_OBJECTID  # inodes below are internal
from model.hotdata.trace import FileRecord, HotEvent, Trace, TraceHeader, format_trace

GROUP = "fsohot"
TRACEFS = "/sys/kernel/tracing"
PAGE_SHIFT = 12

# kprobe_events lines (Documentation/trace/kprobetrace.rst: BTF argument names and
# ``->`` field access on function-entry probes, and entry arguments in return probes)
PROBES_BTF = (
    f"p:{GROUP}/dread btrfs_direct_read ino=iocb->ki_filp->f_inode->i_ino:u64 "
    "dev=iocb->ki_filp->f_inode->i_sb->s_dev:u32 pos=iocb->ki_pos:s64 len=to->count:u64",
    f"p:{GROUP}/wb do_writepages ino=mapping->host->i_ino:u64 "
    "dev=mapping->host->i_sb->s_dev:u32 idx=mapping->writeback_index:u64 "
    "nr=wbc->nr_to_write:s64",
    f"r:{GROUP}/wbret do_writepages ino=mapping->host->i_ino:u64 "
    "dev=mapping->host->i_sb->s_dev:u32 nr=wbc->nr_to_write:s64",
)

# a line of the instance's ``trace``: "TASK-PID [CPU] FLAGS SECS.USECS: EVENT: (ip) k=v ..."
_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<sec>\d+)\.(?P<frac>\d+):"
    r"\s+(?P<event>\w+):\s+\(.*?\)\s*(?P<args>.*)$"
)
_KV = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class RawEvent:
    """One probe hit as printed in the trace buffer."""

    time_ns: int
    pid: int
    event: str
    args: dict[str, int]


def parse_trace_lines(text: str) -> list[RawEvent]:
    """The probe hits of a tracefs ``trace`` file (comment and other lines skipped).

    Times: the ``mono`` clock prints seconds and microseconds (``SECS.USECS``)."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None or m.group("event") not in ("dread", "wb", "wbret"):
            continue
        frac = m.group("frac")
        ns = int(m.group("sec")) * 10**9 + int(frac) * 10 ** (9 - len(frac))
        args = {}
        for k, v in _KV.findall(m.group("args")):
            args[k] = int(v, 0)
        out.append(RawEvent(ns, int(m.group("pid")), m.group("event"), args))
    return out


@dataclass
class Decoded:
    events: list[HotEvent]
    unpaired_returns: int = 0
    unfinished_calls: int = 0
    empty_writebacks: int = 0
    other_dev: int = 0


def hot_events(raw: list[RawEvent], dev: int, time_offset_ns: int) -> Decoded:
    """Turn probe hits into the model's events for the filesystem with kernel dev_t ``dev``.

    ``dread`` -> read (pos, len). A ``wb``/``wbret`` pair of the same task (a stack per pid:
    do_writepages does not nest within one task, but the stack keeps it right if it did)
    -> one write of ``(nr at entry - nr at return)`` pages at ``idx << 12``; none if no page
    was written."""
    d = Decoded([])
    stacks: dict[int, list[RawEvent]] = {}
    for ev in raw:
        a = ev.args
        t = ev.time_ns + time_offset_ns
        if ev.event == "dread":
            if a.get("dev") != dev or a["ino"] < FIRST_FREE_OBJECTID:
                d.other_dev += a.get("dev") != dev
                continue
            d.events.append(HotEvent(t, "read", a["ino"], a["pos"], a["len"]))
        elif ev.event == "wb":
            stacks.setdefault(ev.pid, []).append(ev)
        elif ev.event == "wbret":
            st = stacks.get(ev.pid)
            if not st:
                d.unpaired_returns += 1
                continue
            entry = st.pop()
            if a.get("dev") != dev or a["ino"] < FIRST_FREE_OBJECTID:
                continue
            pages = entry.args["nr"] - a["nr"]
            if pages <= 0:
                d.empty_writebacks += 1
                continue
            d.events.append(
                HotEvent(
                    entry.time_ns + time_offset_ns,
                    "write",
                    a["ino"],
                    entry.args["idx"] << PAGE_SHIFT,
                    pages << PAGE_SHIFT,
                )
            )
    d.unfinished_calls = sum(len(s) for s in stacks.values())
    d.events.sort(key=lambda e: e.time_ns)
    return d


@dataclass(frozen=True)
class LogEntry:
    """One line of the guest driver's own log: what it did, as it knows it."""

    op: str  # "R" or "W"
    name: str
    inode: int
    offset: int
    length: int


def parse_driver_log(text: str) -> list[LogEntry]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5 or parts[0] not in ("R", "W"):
            raise ValueError(f"driver log line {n}: {line!r}")
        out.append(LogEntry(parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])))
    return out


def check_reads(trace: Trace, log: list[LogEntry]) -> list[str]:
    """Differences between the recorded reads and the driver's log, as messages (empty if
    equal): the multiset of (inode, offset, length) must match."""
    from collections import Counter

    got = Counter((e.inode, e.offset, e.length) for e in trace.events if e.op == "read")
    want = Counter((e.inode, e.offset, e.length) for e in log if e.op == "R")
    problems = []
    for k in sorted(set(got) | set(want)):
        if got[k] != want[k]:
            problems.append(f"read inode {k[0]} @{k[1]}+{k[2]}: trace {got[k]}, driver {want[k]}")
    return problems


# ---- the guest session ----------------------------------------------------------------


def check_kernel(spec: str) -> None:
    """Resolve the kernel and check it can carry the probes (BTF probe arguments), before
    any image is made or guest booted."""
    from vm.errors import VMUserError
    from vm.kernels import resolve_kernel

    try:
        k = resolve_kernel(spec)
    except VMUserError as e:
        raise UserError(f"kernel {spec!r}: {e}") from None
    if k.config is not None and k.config_value("PROBE_EVENTS_BTF_ARGS") != "y":
        raise UserError(
            f"kernel {spec} ({k.release}) lacks CONFIG_PROBE_EVENTS_BTF_ARGS: the hot-data "
            "probes fetch struct fields by BTF name (stock debian:6.12 has it, 6.1 does not)"
        )


class GuestDriver:
    """The pushed driver (:mod:`harness.hot.guest`) and helpers around one target."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.prog = t.push(
            resources.files("harness.hot").joinpath("guest.py").read_bytes(), "hot_guest.py"
        )
        self.dir = posixpath.dirname(self.prog)
        self.log = f"{self.dir}/hot.log"

    def act(self, action: str, spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Run one action of the driver with ``spec`` as its JSON input; its JSON answer."""
        inp = self.t.push(json.dumps(spec).encode(), f"hot-{action}.json")
        line = f"{self.t.shell(self.t.py(self.prog, action))} < {shlex.quote(inp)}"
        r = self.t.run(line, timeout=timeout, check=False)
        lines = [ln for ln in r.out.splitlines() if ln.startswith("{")]
        if r.status != 0 or not lines:
            raise RuntimeError(f"guest {action} failed ({r.status}): {r.err[-1500:]}")
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    def put_plan(self, plan: list[tuple[str, int]], name: str) -> str:
        """The read plan as a file on the target (``NAME OFFSET`` lines); its path there."""
        return self.t.push("".join(f"{n} {o}\n" for n, o in plan).encode(), name)

    def read_trace(self, local: Path) -> str:
        """The probes' tracefs instance buffer, copied to ``local``."""
        self.t.fetch(f"{TRACEFS}/instances/{GROUP}/trace", local)
        return local.read_text(errors="replace")

    def driver_log(self, local: Path) -> list[LogEntry]:
        """The driver's own log of what it read and wrote, copied to ``local``."""
        self.t.fetch(self.log, local)
        return parse_driver_log(local.read_text())

    def check_faults(self) -> None:
        """Stop with the kernel's fault reports, if it made any."""
        faults = self.t.faults()
        if faults:
            more = f" (+{len(faults) - 1} more)" if len(faults) > 1 else ""
            raise TargetError(f"guest kernel {faults[0]}{more} on {self.t.label}")


@dataclass
class Recorded:
    trace: Trace
    decoded: Decoded
    log: list[LogEntry]
    raw_text: str
    info: dict[str, Any] = field(default_factory=dict)


def build_trace(
    raw_text: str,
    dev: int,
    on: dict[str, Any],
    files: list[dict[str, Any]],
    source: str,
) -> tuple[Trace, Decoded]:
    """The model's Trace from the instance's text, the ``trace_on`` answer (clock offset
    and start) and the driver's file list."""
    off = int(on["time_offset_ns"])
    dec = hot_events(parse_trace_lines(raw_text), dev, off)
    header = TraceHeader(
        clock="monotonic",
        time_offset_ns=off,
        mount_time_ns=int(on["mono_ns"]),
        source=source,
    )
    recs = {
        int(f["inode"]): FileRecord(int(f["inode"]), int(f["size"]), str(f["name"])) for f in files
    }
    return Trace(header, dec.events, recs), dec


def mixed_ops() -> list[list[Any]]:
    """The small mixed workload: three files, writes of whole and partial pages (each
    pwrite + fsync) interleaved with O_DIRECT reads at known offsets."""
    K = 4096
    ops: list[list[Any]] = [
        ["W", "m0", 0, 64 * K],
        ["W", "m1", 0, 2 << 20],
        ["W", "m2", 0, 8 * K],
        ["R", "m0", 0, K],
        ["R", "m0", 5 * K, K],
        ["R", "m1", 1 << 20, 4 * K],
        ["R", "m1", (1 << 20) + 64 * K, K],
        ["W", "m0", 16 * K, 3 * K],
        ["R", "m0", 16 * K, K],
        ["R", "m2", 4 * K, K],
        ["W", "m1", (1 << 20) + 8 * K, 12 * K],
        ["R", "m1", 0, 8 * K],
        ["R", "m1", (1 << 20) + 8 * K, K],
    ]
    return ops


def _image(work: Path, mib: int, name: str) -> Path:
    p = work / name
    with open(p, "wb") as f:
        f.truncate(mib << 20)
    return p


def record(
    kernel: str,
    workload: str,
    preset: str = "hot_bench",
    say: Callable[[str], None] = print,
    workdir: Path | None = None,
) -> Recorded:
    """Boot ``kernel`` once, run ``workload`` (``phase1`` = the preset's setup + phase-1 read
    plan on one btrfs, no throttling; ``mixed`` = :func:`mixed_ops`) with the probes on."""
    if workload not in ("phase1", "mixed"):
        raise UserError(f"workload {workload!r}: use phase1 or mixed")
    raw = load_variant(preset) if workload == "phase1" else None
    setup = setup_from_preset(raw) if raw is not None else None
    check_kernel(kernel)
    work = Path(tempfile.mkdtemp(prefix="fsoracle-hot-", dir=workdir))
    mib = 512
    if setup is not None:
        mib = max(512, setup.workload.dataset_bytes * 3 // 2 // 2**20 + 256)
    img = _image(work, mib, "data.img")
    mem = int(raw["workload"].get("guest_ram_mib", 512)) if raw is not None else 512
    spec = TargetSpec(kind="vm", kernel=kernel, mem_mib=mem, timeout=1500, log_dir=str(work / "vm"))
    t0 = time.monotonic()
    try:
        with open_target(spec, [DiskSpec(img, "btrfs", "virtio")], name="hot-trace") as t:
            say(f"booted {t.release or kernel} in {time.monotonic() - t0:.0f} s")
            g = GuestDriver(t)
            dev = t.disks[0].dev
            mnt = "/mnt/hot"
            g.act("probes", {"probes": list(PROBES_BTF), "group": GROUP})
            mk = g.act(
                "mkfs", {"filesystems": [{"dev": dev, "mnt": mnt, "fsid": str(uuid.uuid4())}]}
            )
            sdev = int(mk["mounts"][mnt]["s_dev"])
            on = g.act("trace_on", {})
            info: dict[str, Any] = {"release": t.release}
            if setup is None:
                res = g.act("mixed", {"mnt": mnt, "ops": mixed_ops(), "log": g.log})
                files = res["files"]
            else:
                names = [
                    sim.file_name(setup, setup.workload.first_inode + i)
                    for i in range(setup.workload.files)
                ]
                say(
                    f"writing the data set: {len(names)} files of "
                    f"{setup.workload.file_size >> 20} MiB"
                )
                files = g.act(
                    "create", {"mnt": mnt, "names": names, "size": setup.workload.file_size}
                )["files"]
                plan = sim.read_plan(setup, "trace")
                say(f"phase 1: {len(plan)} O_DIRECT reads, {setup.jobs} readers")
                res = g.act(
                    "read",
                    {
                        "plan": g.put_plan(plan, "plan1.txt"),
                        "locations": {f["name"]: mnt for f in files},
                        "io_size": setup.workload.io_size,
                        "jobs": setup.jobs,
                        "count": len(plan),
                        "log": g.log,
                    },
                )
                info["read_iops"] = res["iops"]
            off = g.act("trace_off", {})
            info["overrun"] = off["overrun"]
            raw_text = g.read_trace(work / "trace.txt")
            log = g.driver_log(work / "hot.log")
            g.check_faults()
    finally:
        for name in ("data.img", "trace.txt", "hot.log"):
            (work / name).unlink(missing_ok=True)
    trace, dec = build_trace(raw_text, sdev, on, files, f"guest {info['release']} {workload}")
    return Recorded(trace, dec, log, raw_text, info)


def write_trace(trace: Trace, out: Path, *, force: bool = True) -> None:
    write_atomic(out, "\n".join(format_trace(trace)) + "\n", force=force)
