"""Run the compression case table in a guest kernel and read the result on the host.

One boot per kernel for the whole table: each case gets its own small btrfs image (made
here with mkfs.btrfs, attached as a virtio disk with serial ``cNN``); the guest runs
:mod:`harness.compress_guest` (pushed with a verbatim copy of
``model/btrfs/datapattern.py``), which does each case's ops and unmounts; each case's
ordered-extent trace is read from its tracefs instance with :meth:`Machine.read_trace`;
after the machine stops, each image is read on the host with our reader and with
``dump-tree`` (:func:`harness.compress_host.read_back`, :func:`dump_tree_extents`).

Determinism (the kernel's layout depends on the order in which the async compression
workers and the flusher reach the delalloc ranges): the guest has one vCPU, every mount
adds ``thread_pool=1`` (one worker per btrfs workqueue, so async chunks are compressed
one at a time in queue order), and periodic writeback is off during the ops.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from harness.cmd_compress import parse_ops
from harness.compress_cases import Case
from harness.compress_host import HostResult, dump_tree_extents, read_back
from harness.kernel_zstd import KernelZstd, available, compress_fn_for
from model.btrfs import compression as Z
from model.btrfs.compress_predict import (
    PredictedOrdered,
    Prediction,
    predict,
    predict_ordered_extents,
)
from vm.disks import Disk
from vm.machine import Machine, MachineConfig

GUEST_DIR = "/tmp/fso-compress"
DETERMINISM_OPTS = "thread_pool=1"
IMAGE_MIB = 256


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


def run_vm_cases(
    kernel_spec: str,
    cases: list[Case],
    workdir: Path,
    cpus: int = 1,
    extra_opts: str = DETERMINISM_OPTS,
    timeout: float = 240.0,
) -> VmRun:
    """Boot ``kernel_spec`` once and run every case; the images stay in ``workdir``."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    disks = []
    for i, c in enumerate(cases):
        img = workdir / f"{c.name}.img"
        with open(img, "wb") as f:
            f.truncate(IMAGE_MIB << 20)
        subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
        images[c.name] = img
        disks.append(Disk(img, "virtio", serial=f"c{i:02d}"))
    cfg = MachineConfig(
        kernel=kernel_spec,
        disks=tuple(disks),
        cpus=cpus,
        timeout=timeout,
        name="compress",
        log_dir=workdir / "vm",
    )
    results: dict[str, VmCaseResult] = {}
    with Machine(cfg) as m:
        assert m.boot is not None
        boot = m.boot.seconds_to_ready
        release = m.boot.release
        devs = {d.serial: d.dev for d in m.disks()}
        src = resources.files("model.btrfs").joinpath("datapattern.py").read_bytes()
        m.run(["mkdir", "-p", GUEST_DIR], check=True)
        m.put_file(src, f"{GUEST_DIR}/datapattern.py")
        m.put_file(
            resources.files("harness").joinpath("compress_guest.py").read_bytes(),
            f"{GUEST_DIR}/compress_guest.py",
        )
        spec = [
            {
                "name": c.name,
                "dev": devs[f"c{i:02d}"],
                "mnt": f"/mnt/{c.name}",
                "mount_opts": _mount_opts(c, extra_opts),
                "ops": [[o.kind, o.offset, o.length] for o in parse_ops(c.ops)],
                "data": c.data,
                "existing_size": c.existing_size,
            }
            for i, c in enumerate(cases)
        ]
        g0 = time.monotonic()
        r = m.run(
            ["python3", f"{GUEST_DIR}/compress_guest.py"],
            input=json.dumps(spec).encode(),
            timeout=max(timeout - (time.monotonic() - t0) - 20, 10),
        )
        guest = time.monotonic() - g0
        lines = [json.loads(ln) for ln in r.out.splitlines() if ln.startswith("{")]
        by_name = {ln["name"]: ln for ln in lines}
        for c in cases:
            ln = by_name.get(c.name, {"status": "missing", "error": r.err[-2000:]})
            res = VmCaseResult(c, ln["status"], ln.get("error", ""), ln.get("seconds", 0.0))
            if res.status == "ok":
                text = m.read_trace(f"instances/{c.name}/trace")
                res.trace_text = text
                res.trace = parse_ordered_trace(text)
                res.flusher_writebacks = flusher_before_umount(text)
            results[c.name] = res
        m.check_faults()
    kz = KernelZstd(Z.check_kernel(kernel_spec)) if available(kernel_spec) else None
    for c in cases:
        res = results[c.name]
        if res.status == "ok":
            res.result = read_back(images[c.name], c.data, kz.frame if kz else None)
            res.result.kernel = release
            res.result.dump_tree_extents = dump_tree_extents(images[c.name])
    if kz is not None:
        kz.close()
    return VmRun(
        kernel_spec,
        release,
        cpus,
        extra_opts,
        boot,
        guest,
        time.monotonic() - t0,
        results,
    )


# ---- comparison with the model ----------------------------------------------------------


@dataclass
class CaseComparison:
    """A case's prediction against what the kernel left, field by field."""

    name: str
    kernel: str
    predicted: Prediction
    got: HostResult
    layout_equal: bool  # offset, type, compression, ram_bytes, num_bytes, extent offset
    flags_equal: bool
    size_equal: bool  # i_size
    dump_tree_equal: bool  # our reader == btrfs-progs
    disk_exact: list[tuple[int, int, int]]  # (offset, predicted, real) equal
    disk_off: list[tuple[int, int, int]]  # (offset, predicted, real) not equal
    payload_bytes: list[tuple[int, int, int]]  # (offset, model stream bytes, kernel's)

    @property
    def ok(self) -> bool:
        """Everything the acceptance asks: layout and flags equal; every compressed size
        predicted exactly where the model says it is exact, else within one sector."""
        exact_ok = all(
            p == r
            for (off, p, r) in self.disk_off
            if next(e for e in self.predicted.extents if e.offset == off).exact
        )
        return (
            self.layout_equal
            and self.flags_equal
            and self.size_equal
            and self.dump_tree_equal
            and exact_ok
            and all(abs(p - r) <= Z.SZ_4K for _, p, r in self.disk_off)
        )


def layout(exts: list) -> list[tuple[int, str, str, int, int, int]]:  # type: ignore[type-arg]
    return [
        (e.offset, e.type, e.compression, e.ram_bytes, e.num_bytes, e.extent_offset) for e in exts
    ]


def compare_case(kernel: str, case: Case, got: HostResult) -> CaseComparison:
    """The prediction for ``kernel`` (6.1 / 6.12) against the kernel's result; zstd sizes
    come from the kernel's zstd version when installed (:mod:`harness.kernel_zstd`: exact),
    else from the bundled one (within a sector); zlib and lzo from userspace (estimates)."""
    pred = predict(
        kernel,
        case.mount_opts,
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    exact, off, payload = [], [], []
    for p, h in zip(pred.extents, got.extents, strict=False):
        if p.offset != h.offset or p.type != h.type:
            continue
        pv, hv = (
            (p.inline_size, h.inline_size)
            if p.type == "inline"
            else (p.disk_num_bytes, h.disk_num_bytes)
        )
        (exact if pv == hv else off).append((p.offset, pv, hv))
    m = _model_raw_sizes(kernel, case)
    for off_, real in sorted(got.compressed_payload_sizes.items()):
        if off_ in m:
            payload.append((off_, m[off_], real))
    dt = [
        (
            e.offset,
            e.type,
            e.compression,
            e.ram_bytes,
            e.num_bytes,
            e.disk_num_bytes if e.type == "regular" else e.inline_size,
        )
        for e in got.extents
    ]
    return CaseComparison(
        case.name,
        kernel,
        pred,
        got,
        layout(pred.extents) == layout(got.extents),
        pred.inode_flags == got.inode_flags,
        pred.i_size == got.i_size,
        dt == got.dump_tree_extents,
        exact,
        off,
        payload,
    )


def _model_raw_sizes(kernel: str, case: Case) -> dict[int, int]:
    """The model's compressed stream length (before sector alignment) per extent offset."""
    from model.btrfs.compress_predict import run_ops

    w = run_ops(
        kernel,
        Z.parse_mount_options(case.mount_opts),
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    out = {}
    for it in w.items:
        if it.ext_id is not None and it.offset == 0:
            out[it.file_offset] = w.disk[it.ext_id].raw_size
    return out


@dataclass
class OrderedComparison:
    name: str
    predicted: list[PredictedOrdered]
    trace: list[TraceEvent]

    def _kernel(self, event: str) -> list[tuple[int, int]]:
        return [(e.file_offset, e.length) for e in self.trace if e.event == event]

    def _model(self, event: str) -> list[tuple[int, int]]:
        return [(p.file_offset, p.num_bytes) for p in self.predicted if p.event == event]

    @property
    def added(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(model, kernel) ordered extents added: (file_offset, num_bytes) in order."""
        return self._model("add"), self._kernel("add")

    @property
    def finished(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self._model("finish"), self._kernel("remove")

    @property
    def compression(self) -> tuple[list[int], list[int]]:
        """Compression type per added ordered extent, in (file_offset) order."""
        m = sorted((p.file_offset, p.compression) for p in self.predicted if p.event == "add")
        k = sorted((e.file_offset, e.compress_type) for e in self.trace if e.event == "add")
        return [c for _, c in m], [c for _, c in k]

    @property
    def splits(self) -> int:
        return sum(1 for e in self.trace if e.event == "split")

    @property
    def ok(self) -> bool:
        (ma, ka), (mf, kf) = self.added, self.finished
        mc, kc = self.compression
        return sorted(ma) == sorted(ka) and sorted(mf) == sorted(kf) and mc == kc


def compare_ordered(kernel: str, case: Case, trace: list[TraceEvent]) -> OrderedComparison:
    pred = predict_ordered_extents(
        kernel,
        case.mount_opts,
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    return OrderedComparison(case.name, pred, trace)


def render_run(run: VmRun) -> str:
    """A markdown table: one row per case, the kernel's extents beside the verdicts."""
    kernel = Z.check_kernel(run.kernel_spec)
    lines = [
        f"{run.release} ({run.cpus} vCPU, +{run.extra_opts}): boot {run.boot_seconds:.1f} s, "
        f"cases {run.guest_seconds:.1f} s, total {run.total_seconds:.1f} s",
        "",
        "| case | kernel's extents (offset type compression ram/num disk) | flags | layout+flags "
        "| disk_num_bytes | ordered extents add/remove |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in run.results.items():
        if res.result is None:
            lines.append(f"| {name} | {res.status}: {res.error} | | | | |")
            continue
        cmp = compare_case(kernel, res.case, res.result)
        oc = compare_ordered(kernel, res.case, res.trace)
        exts = "; ".join(_ext_text(e) for e in res.result.extents)
        if cmp.disk_off:
            disk = "off: " + ", ".join(f"@{o // 1024}K {p}≠{r}" for o, p, r in cmp.disk_off)
        else:
            disk = "exact"
        _, ka = oc.added
        _, kf = oc.finished
        lines.append(
            f"| {name} | {exts} | {' '.join(res.result.inode_flags) or '-'} | "
            f"{'equal' if cmp.layout_equal and cmp.flags_equal else 'DIFFERS'} | {disk} | "
            f"{len(ka)}/{len(kf)} {'equal' if oc.ok else 'DIFFERS'} |"
        )
    return "\n".join(lines)


def _ext_text(e: object) -> str:
    from model.btrfs.compress_predict import PredictedExtent

    assert isinstance(e, PredictedExtent)
    k = 1024
    if e.type == "inline":
        return f"{e.offset // k}K inline {e.compression} {e.ram_bytes} ({e.inline_size} B)"
    size = (
        f"{e.ram_bytes // k}K"
        if e.num_bytes == e.ram_bytes
        else f"{e.ram_bytes // k}K/{e.num_bytes // k}K"
    )
    return f"{e.offset // k}K {e.compression} {size} {e.disk_num_bytes // k}K"
