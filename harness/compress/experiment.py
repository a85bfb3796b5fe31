"""Run the compression case table on a target and read the result on the host.

One target (one boot, for a VM) for the whole table: each case gets its own small btrfs
image (made here with mkfs.btrfs, given to the target as its own disk); the target runs
:mod:`harness.compress.guest` (pushed with a verbatim copy of
``model/btrfs/datapattern.py``), which does each case's ops and unmounts; each case's
ordered-extent trace is fetched from its tracefs instance; after the target is down, each
image is read on the host with our reader and with ``dump-tree``
(:mod:`harness.compress.readback`).

Determinism (the kernel's layout depends on the order in which the async compression
workers and the flusher reach the delalloc ranges): the guest has one vCPU, every mount
adds ``thread_pool=1`` (one worker per btrfs workqueue, so async chunks are compressed
one at a time in queue order), and periodic writeback is off during the ops.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.compress.config import Case, parse_ops
from harness.compress.kernel_zstd import KernelZstd, available
from harness.compress.readback import HostResult, dump_tree_extents, read_back
from harness.jsonout import to_jsonable
from harness.safeio import write_atomic
from harness.target import DiskSpec, TargetError, TargetSpec, open_target

GUEST_NAME = "compress_guest.py"
DETERMINISM_OPTS = "thread_pool=1"
IMAGE_MIB = 256
VM_MEM_MIB = 1024
SCHEMA = 1


@dataclass(frozen=True)
class TraceEvent:
    """One ``btrfs_ordered_extent_*`` trace line (``add``, ``remove``, ``split``)."""

    event: str
    file_offset: int
    length: int
    disk_len: int
    compress_type: int
    flags: str


@dataclass
class VmCaseResult:
    case: Case
    status: str
    error: str = ""
    seconds: float = 0.0
    result: HostResult | None = None
    trace: list[TraceEvent] = field(default_factory=list)
    flusher_writebacks: int = 0  # flusher writebacks of the file before the unmount
    trace_text: str = ""  # the case's tracefs instance, as read


@dataclass
class VmRun:
    kernel_spec: str
    release: str
    cpus: int
    extra_opts: str
    boot_seconds: float
    guest_seconds: float
    total_seconds: float
    results: dict[str, VmCaseResult]

    def to_json(self) -> dict[str, Any]:
        """The run as JSON (``schema`` 1): every field, each case's result and trace."""
        return {"schema": SCHEMA, **to_jsonable(self)}


_TRACE_RE = re.compile(
    r"btrfs_ordered_extent_(\w+): .*?root=(\d+)\(\w*\) ino=(\d+) file_offset=(\d+) "
    r"start=\d+ len=(\d+) disk_len=(\d+) truncated_len=\d+ bytes_left=\d+ flags=(\S*) "
    r"compress_type=(\d+)"
)


def parse_ordered_trace(text: str, ino: int = 257, root: int = 5) -> list[TraceEvent]:
    """The ordered-extent events of one inode, in trace order (print format of
    ``DECLARE_EVENT_CLASS(btrfs__ordered_extent, ...)`` in include/trace/events/btrfs.h,
    as the guest's ``events/btrfs/btrfs_ordered_extent_add/format`` shows it)."""
    out = []
    for line in text.splitlines():
        m = _TRACE_RE.search(line)
        if not m or int(m.group(2)) != root or int(m.group(3)) != ino:
            continue
        out.append(
            TraceEvent(
                m.group(1),
                int(m.group(4)),
                int(m.group(5)),
                int(m.group(6)),
                int(m.group(8)),
                m.group(7),
            )
        )
    return out


def flusher_before_umount(text: str, ino: int = 257) -> int:
    """How many times the flusher started writing the file back before the guest's
    ``fsoracle: umount`` marker (``writeback_single_inode_start`` lines; fsync writes
    through ``filemap_fdatawrite_wbc`` and does not show here)."""
    n = 0
    for line in text.splitlines():
        if "fsoracle: umount" in line:
            break
        if "writeback_single_inode_start:" in line and f" ino={ino} " in line:
            n += 1
    return n


def _mount_opts(case: Case, extra: str) -> str:
    return ",".join(o for o in (case.mount_opts, extra) if o)


def run_cases(
    spec: TargetSpec, cases: list[Case], workdir: Path, extra_opts: str = DETERMINISM_OPTS
) -> VmRun:
    """Run every case on one target ``spec`` describes; the images, each case's trace and
    the run's JSON (``run.json``) stay in ``workdir``."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    for c in cases:
        img = workdir / f"{c.name}.img"
        with open(img, "wb") as f:
            f.truncate(IMAGE_MIB << 20)
        subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
        images[c.name] = img
    results: dict[str, VmCaseResult] = {}
    disks = [DiskSpec(images[c.name], "btrfs") for c in cases]
    with open_target(spec, disks, name="compress") as t:
        boot = t.seconds.get("boot", 0.0)
        release = t.release
        pattern = resources.files("model.btrfs").joinpath("datapattern.py").read_bytes()
        t.push(pattern, "datapattern.py")
        guest = t.push(
            resources.files("harness.compress").joinpath("guest.py").read_bytes(), GUEST_NAME
        )
        table = [
            {
                "name": c.name,
                "dev": d.dev,
                "mnt": d.mnt,
                "mount_opts": _mount_opts(c, extra_opts),
                "ops": [[o.kind, o.offset, o.length] for o in parse_ops(c.ops)],
                "data": c.data,
                "existing_size": c.existing_size,
            }
            for c, d in zip(cases, t.disks, strict=True)
        ]
        table_path = t.push(json.dumps(table).encode(), "compress_cases.json")
        g0 = time.monotonic()
        r = t.run(
            f"{shlex.join(t.py(guest))} < {shlex.quote(table_path)}",
            timeout=max(spec.timeout - (time.monotonic() - t0) - 20, 10),
            check=False,
        )
        guest_seconds = time.monotonic() - g0
        lines = [json.loads(ln) for ln in r.out.splitlines() if ln.startswith("{")]
        by_name = {ln["name"]: ln for ln in lines}
        for c in cases:
            ln = by_name.get(c.name, {"status": "missing", "error": r.err[-2000:]})
            res = VmCaseResult(c, ln["status"], ln.get("error", ""), ln.get("seconds", 0.0))
            if res.status == "ok":
                local = workdir / f"{c.name}.trace"
                t.fetch(f"{t.tracefs}/instances/{c.name}/trace", local)
                text = local.read_bytes().decode(errors="replace")
                res.trace_text = text
                res.trace = parse_ordered_trace(text)
                res.flusher_writebacks = flusher_before_umount(text)
            results[c.name] = res
        faults = t.faults()
        if faults:
            raise TargetError(f"kernel faults on {t.label}: " + "; ".join(faults))
    rules = spec.rules  # the kernel's zstd version, where the model knows the kernel
    kz = KernelZstd(rules) if rules is not None and available(rules) else None
    for c in cases:
        res = results[c.name]
        if res.status == "ok":
            res.result = read_back(images[c.name], c.data, kz.frame if kz else None)
            res.result.kernel = release
            res.result.dump_tree_extents = dump_tree_extents(images[c.name])
    if kz is not None:
        kz.close()
    run = VmRun(
        spec.kernel,
        release,
        spec.cpus,
        extra_opts,
        boot,
        guest_seconds,
        time.monotonic() - t0,
        results,
    )
    write_atomic(workdir / "run.json", json.dumps(run.to_json(), indent=2) + "\n")
    return run


def run_vm_cases(
    kernel_spec: str,
    cases: list[Case],
    workdir: Path,
    cpus: int = 1,
    extra_opts: str = DETERMINISM_OPTS,
    timeout: float = 240.0,
) -> VmRun:
    """Boot ``kernel_spec`` once (a VM target) and run every case; the images stay in
    ``workdir``, the VM's logs in ``workdir/vm``."""
    spec = TargetSpec(
        kind="vm",
        kernel=kernel_spec,
        cpus=cpus,
        mem_mib=VM_MEM_MIB,
        timeout=timeout,
        log_dir=str(workdir / "vm"),
    )
    return run_cases(spec, cases, workdir, extra_opts)
