"""``fsoracle bench mount``: the kernel's mount, traced, beside the model's prediction.

One image per layout is written by the model's writer from one plan (the same block groups,
files and extents; only where the block group items live differs), every image is attached
twice to one target (a VM: virtio-blk and NVMe, read-only raw drives with ``cache=none``, so
the images are never written and every read reaches the file through O_DIRECT), and the
target boots once. Then, for every repetition × layout × device (interleaved, so drift in a
shared host spreads over all cells), the script of :mod:`harness.mount.guest`:

1. ``btrfs device scan --forget``, ``sync``, ``echo 3 > drop_caches`` (guest cold; the host
   side is cold by ``cache=none``); the device's ``/sys/block/DEV/stat`` is read.
2. With tracing on: ``mount -t btrfs -o ro``, bracketed by ``trace_marker`` writes.
3. ``/sys/block/DEV/stat`` again (the block layer's read requests for the whole mount),
   ``dmesg``, ``umount``, and the trace is copied out.

Each read goes to the window its completion time falls in: before the entry of
``btrfs_read_block_groups``, inside, after the return. The same attribution by
function_graph's own interval for the call must agree exactly, or the sample is refused
(:mod:`harness.mount.trace`).

A layout the kernel refuses (the skinny block group tree on a stock kernel: unknown
incompat bit 24) is tried once per device and reported as skipped with the kernel's reason
(its dmesg line); any other mount failure is a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.mount.config import BenchConfig
from harness.mount.guest import (
    ENTER_EVENT,
    EXIT_EVENT,
    READ_EVENT,
    TRACING,
    UNSUPPORTED,
    Probe,
    kernel_names,
    parse_script_output,
    sample_script,
    setup_tracing,
)
from harness.mount.render import plot_mount_times, render_report
from harness.mount.trace import MountTrace, TraceError, analyse_mount
from harness.mount.verdict import acceptance
from harness.safeio import output_dir, write_atomic
from harness.target import DiskSpec, Runtime, Target, TargetError, TargetSpec, open_target
from model.blocksource import FileSink, FileSource
from model.btrfs.mkfs import KERNEL_LAYOUTS, MkfsError, plan_filesystem, write_filesystem
from model.btrfs.mount import MountCost, predict_mount_reads
from model.btrfs.reader import BtrfsImage, tree_name
from model.errors import FormatError

FORMAT = "fsoracle-mount-bench"
SCHEMA = 1

# ---------------------------------------------------------------- images and predictions


@dataclass
class LayoutImage:
    """One written image and the model's prediction for it."""

    layout: str
    path: Path
    seconds: float
    tree_blocks: int
    cost: MountCost
    reads: list[int]  # predicted first reads inside btrfs_read_block_groups, in order
    root: int  # the searched tree's root node (read before, by open_ctree)


def write_images(
    cfg: BenchConfig, where: Path, note: Callable[[str], None]
) -> dict[str, LayoutImage]:
    """Plan the filesystem once and write it in each layout (``seedtable`` does the same in
    memory); predict each image's reads from the image file itself."""
    output_dir(where)
    t0 = time.monotonic()
    try:
        spec = plan_filesystem(cfg.mkfs())
    except MkfsError as e:
        raise UserError(str(e)) from None
    note(f"planned {cfg.mkfs().n_extents} extents in {time.monotonic() - t0:.1f} s")
    out: dict[str, LayoutImage] = {}
    for layout in cfg.layouts:
        t1 = time.monotonic()
        path = where / f"{layout}.img"
        with FileSink(path, cfg.device_size) as sink:
            res = write_filesystem(dataclasses.replace(spec, layout=layout), sink)
        dt = time.monotonic() - t1
        img = BtrfsImage.open(FileSource(path))
        cost, reads, root = predict_mount_reads(img)
        out[layout] = LayoutImage(layout, path, dt, res.tree_block_count, cost, reads, root)
        note(
            f"wrote {path.name} ({res.tree_block_count} tree blocks, {dt:.1f} s); predicted"
            f" {cost.first_read_inside} first reads inside btrfs_read_block_groups"
        )
    return out


def block_owners(path: Path, addrs: set[int]) -> dict[int, dict[str, Any]]:
    """Tree and level of each address, from the block headers in the image."""
    img = BtrfsImage.open(FileSource(path), run_tree_checker=False)
    out: dict[int, dict[str, Any]] = {}
    for a in sorted(addrs):
        try:
            blk = img.read_tree_block(a)
            out[a] = {"tree": tree_name(blk.header.owner), "level": blk.level}
        except FormatError as e:
            out[a] = {"tree": None, "level": None, "error": str(e)}
    return out


# ---------------------------------------------------------------- samples


@dataclass
class Sample:
    """One cold mount of one image on one device."""

    layout: str
    device: str
    guest_dev: str
    rep: int
    status: str  # ok, skipped, failed, mismatch
    reason: str | None = None
    read_block_groups_us: float | None = None
    open_ctree_us: float | None = None
    mount_us: float | None = None
    reads: dict[str, list[int]] = field(default_factory=dict)
    block_io: dict[str, Any] = field(default_factory=dict)
    predicted_inside: int | None = None
    measured_inside: int | None = None
    same_blocks: bool | None = None
    same_order: bool | None = None
    root_read_before: bool | None = None
    dmesg: list[str] = field(default_factory=list)
    trace_file: str | None = None
    unparsed_lines: int = 0


def judge(sample: Sample, mt: MountTrace, image: LayoutImage) -> None:
    """Fill the sample's numbers from its trace and compare with the prediction."""
    w = mt.windows
    sample.read_block_groups_us = mt.read_block_groups_ns / 1000
    sample.open_ctree_us = mt.open_ctree_ns / 1000 if mt.open_ctree_ns is not None else None
    sample.mount_us = mt.mount_ns / 1000 if mt.mount_ns is not None else None
    sample.reads = w.as_dict()
    sample.unparsed_lines = len(mt.unparsed)
    sample.predicted_inside = image.cost.first_read_inside
    sample.measured_inside = len(w.inside)
    sample.same_blocks = sorted(w.inside) == sorted(image.reads)
    sample.same_order = w.inside == image.reads
    sample.root_read_before = image.root in w.before
    ok = sample.same_blocks and sample.measured_inside == sample.predicted_inside
    sample.status = "ok" if ok and sample.root_read_before else "mismatch"


def run_sample(
    t: Target, image: LayoutImage, device: str, guest_dev: str, rep: int, traces: Path
) -> Sample:
    """One cold, traced mount of ``image`` at the target's block device ``guest_dev``."""
    s = Sample(image.layout, device, guest_dev, rep, status="failed")
    r = t.run(sample_script(guest_dev), timeout=600, check=False)
    rc, s.block_io, s.dmesg, stderr = parse_script_output(r.out)
    tf = traces / f"{image.layout}-{device}-{rep}.trace"
    t.fetch(f"{TRACING}/trace", tf)
    trace = tf.read_bytes().decode(errors="replace")
    s.trace_file = str(tf.relative_to(traces.parent))
    if rc != 0:
        why = [ln for ln in s.dmesg if UNSUPPORTED.search(ln)]
        errs = [ln for ln in s.dmesg if "error" in ln.lower()]
        line = (why or errs or [stderr.strip() or f"mount exited {rc}"])[0]
        s.reason = re.sub(r"^\[\s*[\d.]+\]\s*", "", line)
        s.status = "skipped" if why else "failed"
        return s
    try:
        mt = analyse_mount(trace, READ_EVENT, ENTER_EVENT, EXIT_EVENT)
    except TraceError as e:
        s.reason = f"trace: {e}"
        s.status = "failed"
        return s
    judge(s, mt, image)
    return s


def describe_sample(s: Sample) -> str:
    head = f"{s.layout} on {s.device} #{s.rep + 1}"
    if s.status in ("skipped", "failed"):
        return f"{head}: {s.status.upper()}: {s.reason}"
    r = s.reads
    return (
        f"{head}: btrfs_read_block_groups {(s.read_block_groups_us or 0) / 1000:.1f} ms, "
        f"open_ctree {(s.open_ctree_us or 0) / 1000:.1f} ms; reads before/inside/after "
        f"{len(r['before'])}/{len(r['inside'])}/{len(r['after'])} (predicted inside "
        f"{s.predicted_inside}) {'ok' if s.status == 'ok' else 'MISMATCH'}"
    )


def seed_claims() -> dict[str, Any]:
    """The seed's numbers (the skinny-bg-tree series' claims) the report sets beside ours."""
    from harness.mount.seedtable import load_seed_claims

    claims = load_seed_claims()
    return {
        "file": "btrfs-skinny-bg-tree-rfc-2019.txt",
        "blocks": {lay: claims[f"blocks-{lay}"].seed for lay in KERNEL_LAYOUTS},
        "read_block_groups_ms": claims["read-block-groups-time"].seed,
        "open_ctree_ms": claims["open-ctree-time"].seed,
    }


def _guest_names(dev: str) -> str:
    return "/dev/vdX (virtio-blk-pci)" if dev == "virtio" else "/dev/nvmeXn1 (QEMU nvme)"


# ---------------------------------------------------------------- the result


@dataclass
class MountResult:
    """A bench run: what ran where, the images and their predictions, every sample.
    :meth:`to_json` is ``result.json`` (``"schema": 1``)."""

    config: BenchConfig
    started: str
    wall_seconds: float
    phase_seconds: dict[str, float]
    release: str
    uname: str
    runtime: Runtime
    host: dict[str, Any]
    probe: Probe
    images: dict[str, LayoutImage]
    owners: dict[str, dict[int, dict[str, Any]]]
    seed: dict[str, Any]
    samples: list[Sample]

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "schema": SCHEMA,
            "format": FORMAT,
            "version": 1,
            "started": self.started,
            "wall_seconds": self.wall_seconds,
            "phase_seconds": self.phase_seconds,
            "config": dataclasses.asdict(cfg),
            "kernel": {"spec": cfg.kernel, "release": self.release, "uname": self.uname},
            "accelerator": {"name": self.runtime.accel, "reason": self.runtime.accel_reason},
            "qemu": self.runtime.emulator,
            "boot_seconds": round(self.runtime.ready_seconds, 1),
            "host": self.host,
            "devices": {
                dev: {"drive": "raw, read-only, cache=none, aio=native", "guest": _guest_names(dev)}
                for dev in cfg.devices
            },
            "probe": dataclasses.asdict(self.probe),
            "tracing": {
                "tracer": "function_graph",
                "set_graph_function": "open_ctree",
                "max_graph_depth": 2,
                "trace_clock": "global",
                "options": ["funcgraph-abstime", "funcgraph-proc", "funcgraph-tail"],
            },
            "images": {
                layout: {
                    "file": img.path.name,
                    "write_seconds": round(img.seconds, 1),
                    "tree_blocks": img.tree_blocks,
                    "prediction": dataclasses.asdict(img.cost),
                    "predicted_reads_inside": img.reads,
                    "root": img.root,
                    "blocks": {str(a): v for a, v in self.owners.get(layout, {}).items()},
                }
                for layout, img in self.images.items()
            },
            "seed": self.seed,
            "samples": [dataclasses.asdict(s) for s in self.samples],
        }

    def acceptance(self) -> dict[str, Any]:
        """:func:`harness.mount.verdict.acceptance` of this result."""
        return acceptance(self.to_json())


# ---------------------------------------------------------------- the run


def target_spec(cfg: BenchConfig, out: Path) -> TargetSpec:
    """The VM the bench boots: ``cfg``'s kernel, memory and time bound, logs under ``out``."""
    return TargetSpec(
        kind="vm",
        kernel=cfg.kernel,
        mem_mib=cfg.mem,
        cpus=2,
        timeout=cfg.timeout,
        log_dir=str(out / "vm"),
    )


def run_mount_bench(
    cfg: BenchConfig,
    out: Path,
    *,
    keep_images: bool = False,
    image_dir: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> MountResult:
    """Write the images, boot once, mount every image on every device ``repeat`` times,
    and write result.json, report.md and mount.png under ``out``. Returns the result."""
    say = note or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    t_start = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_at_start = list(os.getloadavg())
    output_dir(out)
    traces = out / "traces"
    traces.mkdir(exist_ok=True)
    images_at = image_dir or out / "images"
    samples: list[Sample] = []
    try:
        images = write_images(cfg, images_at, say)
        t_images = time.monotonic() - t_start
        cells = [(layout, dev) for layout in cfg.layouts for dev in cfg.devices]
        disks = [
            DiskSpec(images[layout].path, "btrfs", device=dev, readonly=True)
            for layout, dev in cells
        ]
        with open_target(target_spec(cfg, out), disks, name="mountbench") as t:
            runtime = t.runtime()
            names = dict(zip(cells, kernel_names(t, [d.dev for d in t.disks]), strict=True))
            probe = setup_tracing(t)
            say(
                f"counting reads at {probe.function} ({probe.fetch}); "
                f"{len(cells) * cfg.repeat} mounts to go"
            )
            refused: set[tuple[str, str]] = set()
            for rep in range(cfg.repeat):
                for cell in cells:
                    if cell in refused:
                        continue
                    layout, dev = cell
                    s = run_sample(t, images[layout], dev, names[cell], rep, traces)
                    samples.append(s)
                    say(describe_sample(s))
                    if s.status == "skipped":
                        refused.add(cell)
            release = t.release
            uname = t.run("uname -a", check=False).out.strip()
        faults = t.faults()
        if faults:
            raise TargetError(
                f"the kernel reported {len(faults)} fault(s) during the bench "
                f"(console log under {out / 'vm'}): " + "; ".join(faults[:3])
            )
        t_vm = time.monotonic() - t_start - t_images
        owners: dict[str, dict[int, dict[str, Any]]] = {}
        for layout, img in images.items():
            addrs = {a for s in samples if s.layout == layout for v in s.reads.values() for a in v}
            owners[layout] = block_owners(img.path, addrs | {img.root})
    finally:
        if not keep_images and image_dir is None:
            shutil.rmtree(images_at, ignore_errors=True)
    result = MountResult(
        config=cfg,
        started=started,
        wall_seconds=round(time.monotonic() - t_start, 1),
        phase_seconds={"images": round(t_images, 1), "vm": round(t_vm, 1)},
        release=release,
        uname=uname,
        runtime=runtime,
        host={"cpus": os.cpu_count(), "load_at_start": load_at_start},
        probe=probe,
        images=images,
        owners=owners,
        seed=seed_claims(),
        samples=samples,
    )
    doc = result.to_json()
    write_atomic(out / "result.json", json.dumps(doc, indent=1) + "\n")
    write_atomic(out / "report.md", render_report(doc))
    plot_mount_times(doc, out / "mount.png")
    return result
