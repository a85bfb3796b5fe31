"""``fsoracle bench mount``: the kernel's mount, traced, beside the model's prediction.

One image per layout is written by the model's writer from one plan (the same block groups,
files and extents; only where the block group items live differs), every image is attached
twice to one guest (virtio-blk and NVMe, read-only raw drives with ``cache=none``, so the
images are never written and every read reaches the file through O_DIRECT), and the guest
boots once. Then, for every repetition × layout × device (interleaved, so drift in a shared
host spreads over all cells):

1. ``btrfs device scan --forget``, ``sync``, ``echo 3 > drop_caches`` (guest cold; the host
   side is cold by ``cache=none``); the device's ``/sys/block/DEV/stat`` is read.
2. With tracing on: ``mount -t btrfs -o ro``, bracketed by ``trace_marker`` writes.
3. ``/sys/block/DEV/stat`` again (the block layer's read requests for the whole mount),
   ``dmesg``, ``umount``, and the trace is copied out.

What is traced (one ring buffer, ``trace_clock`` global, so every CPU's events share a
clock):

- function_graph on ``open_ctree`` (``set_graph_function``, ``max_graph_depth`` 2, options
  ``funcgraph-abstime``, ``funcgraph-proc``, ``funcgraph-tail``): the durations of
  ``open_ctree`` and of ``btrfs_read_block_groups``, as the seed measured them.
- A kprobe event on the function that validates a tree block freshly read from disk, run
  once per read at bio completion and never for a cached block: 6.12
  ``btrfs_validate_extent_buffer(eb, check)`` (``fs/btrfs/disk-io.c``, called from
  ``end_bbio_meta_read`` in ``extent_io.c``), 6.1 ``validate_extent_buffer(eb)`` (static,
  called from ``btrfs_validate_metadata_buffer``; in 6.1 that function takes a page and runs
  once per page, so it would count a 16 KiB block four times). The function is chosen by
  name from ``/proc/kallsyms``. It records the block's logical address ``eb->start``:
  through BTF (``bytenr=eb->start``) where the kernel's probe parser supports it (6.12), with
  ``raw=+0(%di):u64`` fetched beside it and checked equal; else ``+0(%di):u64`` alone
  (``start`` is the first member of ``struct extent_buffer`` in 6.1 and 6.12,
  ``extent_io.h``; the first argument is in %rdi on x86-64).
- The window: a kprobe and a kretprobe on ``btrfs_read_block_groups`` (events in the same
  buffer as the reads). Each read goes to the window its completion time falls in: before
  the entry, inside, after the return. The same attribution by function_graph's own
  interval for the call must agree exactly, or the sample is refused.

A layout the kernel refuses (the skinny block group tree on a stock kernel: unknown
incompat bit 24) is tried once per device and reported as skipped with the kernel's reason
(its dmesg line); any other mount failure is a failure.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.mounttrace import MountTrace, TraceError, analyse_mount
from harness.safeio import output_dir, save_figure, write_atomic
from harness.sizes import parse_size
from model.blocksource import FileSink, FileSource
from model.btrfs.mkfs import MkfsConfig, MkfsError, plan_filesystem, write_filesystem
from model.btrfs.mount import MountCost, predict_mount_reads
from model.btrfs.reader import BtrfsImage, tree_name
from model.errors import FormatError

PRESETS = Path(__file__).resolve().parent / "presets" / "mount_bench.yaml"
LAYOUTS = ("extent-tree", "bg-tree", "skinny-bg-tree")
DEVICES = ("virtio", "nvme")
ABBR = {"extent-tree": "et", "bg-tree": "bgt", "skinny-bg-tree": "skinny"}
TRACING = "/sys/kernel/tracing"
MNT = "/mnt/fso-bench"
GROUP = "fsoracle"
READ_EVENT = "tree_block_read"
ENTER_EVENT = "rbg_enter"
EXIT_EVENT = "rbg_exit"
# functions that validate a freshly read tree block, newest first: (name, BTF argument)
VALIDATORS = (("btrfs_validate_extent_buffer", "eb"), ("validate_extent_buffer", "eb"))
# a mount the kernel refuses for a feature it does not know: skipped, not failed
UNSUPPORTED = re.compile(r"unknown incompat features|unsupported (optional )?features", re.I)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BenchConfig:
    """One bench run: the images (``size`` bytes of ``extent_size`` files on a
    ``device_size`` device), which layouts and devices, how many cold mounts each."""

    preset: str
    kernel: str
    layouts: tuple[str, ...]
    devices: tuple[str, ...]
    size: int
    device_size: int
    nodesize: int
    extent_size: int
    repeat: int
    seed: int = 0
    mem: int = 1536
    timeout: float = 5400.0

    def mkfs(self) -> MkfsConfig:
        return MkfsConfig(
            size=self.device_size,
            nodesize=self.nodesize,
            fill=self.size,
            extent_size=self.extent_size,
            seed=self.seed,
        )


def load_presets(path: Path = PRESETS) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    presets: dict[str, dict[str, Any]] = doc["presets"]
    return presets


def default_device_size(size: int) -> int:
    """10 % more than the data, rounded up to a GiB (room for metadata and the chunk
    allocator's 10 % cap on chunk sizes)."""
    return max(-(-size * 11 // (10 << 30)), 1) << 30


def _list(value: Any, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(i).strip() for i in items if str(i).strip())
    bad = [i for i in out if i not in allowed]
    if bad or not out:
        raise UserError(f"{what} {','.join(bad) or '(none)'}: use some of {','.join(allowed)}")
    return out


def make_config(
    preset: str = "default",
    *,
    kernel: str = "debian:6.12",
    overrides: dict[str, Any] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
) -> BenchConfig:
    """A preset's values with ``overrides`` (None values ignored) on top."""
    table = presets if presets is not None else load_presets()
    if preset not in table:
        raise UserError(f"no preset {preset!r}: use one of {', '.join(sorted(table))}")
    v = dict(table[preset])
    v.update({k: x for k, x in (overrides or {}).items() if x is not None})
    size = parse_size(str(v["size"]))
    device_size = (
        parse_size(str(v["device_size"])) if v.get("device_size") else default_device_size(size)
    )
    repeat = int(v.get("repeat", 3))
    if repeat < 1:
        raise UserError("--repeat must be at least 1")
    cfg = BenchConfig(
        preset=preset,
        kernel=kernel,
        layouts=_list(v.get("layouts", LAYOUTS), LAYOUTS, "layouts"),
        devices=_list(v.get("devices", DEVICES), DEVICES, "devices"),
        size=size,
        device_size=device_size,
        nodesize=parse_size(str(v.get("nodesize", "4K"))),
        extent_size=parse_size(str(v.get("extent_size", "4M"))),
        repeat=repeat,
        seed=int(v.get("seed", 0)),
        mem=int(v.get("mem", 1536)),
        timeout=float(v.get("timeout", 5400)),
    )
    try:
        cfg.mkfs().validate()
    except MkfsError as e:
        raise UserError(str(e)) from None
    return cfg


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


# ---------------------------------------------------------------- the guest


@dataclass
class Probe:
    """How reads are counted in this kernel (recorded in result.json)."""

    function: str
    fetch: str
    definitions: list[str]
    btf: bool


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def setup_tracing(m: Any) -> Probe:
    """Define the probes and the function_graph tracer once per boot."""
    m.run("modprobe btrfs 2>/dev/null; mkdir -p " + MNT)
    have = m.run(
        f"test -w {TRACING}/kprobe_events && grep -qw function_graph {TRACING}/available_tracers"
    )
    if have.status != 0:
        raise UserError(
            "the guest kernel lacks kprobe events or the function_graph tracer "
            "(CONFIG_KPROBE_EVENTS, CONFIG_FUNCTION_GRAPH_TRACER): cannot trace the mount"
        )
    syms = m.run("cat /proc/kallsyms", check=True).out
    names = {parts[2] for parts in (ln.split() for ln in syms.splitlines()) if len(parts) >= 3}
    for need in ("open_ctree", "btrfs_read_block_groups"):
        if need not in names:
            raise UserError(f"the guest kernel has no {need} symbol: is btrfs built or loaded?")
    func, arg = next(((f, a) for f, a in VALIDATORS if f in names), (None, None))
    if func is None:
        raise UserError(
            "the guest kernel has none of " + ", ".join(f for f, _ in VALIDATORS) + ": "
            "find the function that validates a freshly read tree block and add it"
        )
    T = TRACING
    m.run(
        f"echo 0 > {T}/tracing_on; echo nop > {T}/current_tracer; "
        f"echo 0 > {T}/events/enable; echo > {T}/kprobe_events",
        check=True,
    )
    candidates = [
        (f"bytenr={arg}->start raw=+0(%di):u64", True),
        ("bytenr=+0(%di):u64", False),
    ]
    for fetch, btf in candidates:  # noqa: B007 - the accepted pair is used below
        read_def = f"p:{GROUP}/{READ_EVENT} {func} {fetch}"
        if m.run(f"echo {_sh_quote(read_def)} >> {T}/kprobe_events").status == 0:
            break
    else:
        err = m.run(f"tail -3 {T}/error_log").out
        raise UserError(f"cannot define a kprobe on {func}: {err.strip()}")
    defs = [
        read_def,
        f"p:{GROUP}/{ENTER_EVENT} btrfs_read_block_groups",
        f"r:{GROUP}/{EXIT_EVENT} btrfs_read_block_groups ret=$retval",
    ]
    for d in defs[1:]:
        m.run(f"echo {_sh_quote(d)} >> {T}/kprobe_events", check=True)
    m.run(
        f"cd {T} && echo global > trace_clock && echo 4096 > buffer_size_kb && "
        "echo open_ctree > set_graph_function && echo 2 > max_graph_depth && "
        "echo function_graph > current_tracer && echo funcgraph-abstime > trace_options && "
        "echo funcgraph-proc > trace_options && echo funcgraph-tail > trace_options && "
        f"echo 1 > events/{GROUP}/enable && echo > trace",
        check=True,
    )
    return Probe(function=func, fetch=fetch, definitions=defs, btf=btf)


SAMPLE_SCRIPT = r"""
T={tracing}; D={dev}; M={mnt}
echo 0 > $T/tracing_on; echo > $T/trace
umount $M 2>/dev/null
btrfs device scan --forget >/dev/null 2>&1
sync; echo 3 > /proc/sys/vm/drop_caches
dmesg -c >/dev/null
# Where the block layer counts this disk's requests: the disk itself, unless it keeps no
# I/O statistics (queue/iostats 0): then an NVMe multipath head node (6.1's nvme0n1 is
# bio-based and counts nothing) whose requests are counted on its hidden path devices
# nvme0c*n1
S=$D
if [ "$(cat /sys/block/$D/queue/iostats 2>/dev/null)" = 0 ]; then
  P=$(echo $D | sed -n 's/^nvme\([0-9]*\)n\([0-9]*\)$/nvme\1c*n\2/p')
  [ -n "$P" ] && S=$(cd /sys/block && echo $P)
fi
iosum() {{
  for d in $S; do cat /sys/block/$d/stat; done |
    awk '{{for (i = 1; i <= NF; i++) t[i] += $i}}
         END {{for (i = 1; i <= NF; i++) printf "%d ", t[i]; print ""}}'
}}
s0=$(iosum)
echo 1 > $T/tracing_on
echo fsoracle-mount-begin > $T/trace_marker
mount -t btrfs -o ro /dev/$D $M 2>/tmp/fso-mount.err
rc=$?
echo fsoracle-mount-end > $T/trace_marker
echo 0 > $T/tracing_on
s1=$(iosum)
[ $rc -eq 0 ] && umount $M
echo "statdev=$S"
echo "rc=$rc"
echo "stat0=$s0"
echo "stat1=$s1"
echo "--dmesg--"
dmesg -c
echo "--stderr--"
cat /tmp/fso-mount.err
"""

STAT_FIELDS = ("read_ios", "read_merges", "read_sectors", "read_ticks_ms")


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


def parse_script_output(text: str) -> tuple[int, dict[str, Any], list[str], str]:
    """rc, block-layer read deltas, dmesg lines, mount's stderr."""
    head, _, rest = text.partition("--dmesg--\n")
    dmesg, _, stderr = rest.partition("--stderr--\n")
    kv = dict(ln.split("=", 1) for ln in head.splitlines() if "=" in ln)
    stat_dev = kv.get("statdev", "").strip()
    s0 = [int(x) for x in kv.get("stat0", "").split()]
    s1 = [int(x) for x in kv.get("stat1", "").split()]
    delta: dict[str, Any] = {
        n: s1[i] - s0[i] for i, n in enumerate(STAT_FIELDS) if i < min(len(s0), len(s1))
    }
    if stat_dev:
        delta["device"] = stat_dev
    return int(kv.get("rc", "-1")), delta, [ln for ln in dmesg.splitlines() if ln.strip()], stderr


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
    m: Any, image: LayoutImage, device: str, guest_dev: str, rep: int, traces: Path
) -> Sample:
    s = Sample(image.layout, device, guest_dev, rep, status="failed")
    script = SAMPLE_SCRIPT.format(tracing=TRACING, dev=guest_dev, mnt=MNT)
    r = m.run(script, timeout=600)
    rc, s.block_io, s.dmesg, stderr = parse_script_output(r.out)
    trace = m.read_trace("trace")
    tf = traces / f"{image.layout}-{device}-{rep}.trace"
    write_atomic(tf, trace)
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


# ---------------------------------------------------------------- the run


def qemu_version() -> str:
    from vm.accel import find_qemu

    try:
        out = subprocess.run([find_qemu(), "--version"], capture_output=True, text=True).stdout
    except Exception as e:  # recorded, not fatal
        return f"unknown ({e})"
    return out.splitlines()[0].strip() if out else "unknown"


def run_bench(
    cfg: BenchConfig,
    out: Path,
    *,
    keep_images: bool = False,
    image_dir: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the images, boot once, mount every image on every device ``repeat`` times,
    and write result.json, report.md and mount.png under ``out``. Returns the result."""
    from harness.cmd_vm import vm_errors
    from vm import Disk, Machine, MachineConfig

    say = note or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    t_start = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    output_dir(out)
    traces = out / "traces"
    traces.mkdir(exist_ok=True)
    images_at = image_dir or out / "images"
    samples: list[Sample] = []
    try:
        images = write_images(cfg, images_at, say)
        t_images = time.monotonic() - t_start
        disks = []
        serial: dict[tuple[str, str], str] = {}
        for layout in cfg.layouts:
            for dev in cfg.devices:
                serial[(layout, dev)] = f"{ABBR[layout]}-{dev}"
                disks.append(
                    Disk(images[layout].path, dev, serial=serial[(layout, dev)], readonly=True)  # type: ignore[arg-type]
                )
        mc = MachineConfig(
            kernel=cfg.kernel,
            disks=tuple(disks),
            mem=cfg.mem,
            cpus=2,
            timeout=cfg.timeout,
            name="mountbench",
            log_dir=out / "vm",
        )
        with vm_errors(), Machine(mc) as m:
            assert m.boot is not None
            boot = m.boot
            names = {d.serial: d.name for d in m.disks()}
            probe = setup_tracing(m)
            say(
                f"counting reads at {probe.function} ({probe.fetch}); "
                f"{len(cfg.layouts) * len(cfg.devices) * cfg.repeat} mounts to go"
            )
            refused: dict[tuple[str, str], Sample] = {}
            for rep in range(cfg.repeat):
                for layout in cfg.layouts:
                    for dev in cfg.devices:
                        if (layout, dev) in refused:
                            continue
                        gdev = names[serial[(layout, dev)]]
                        s = run_sample(m, images[layout], dev, gdev, rep, traces)
                        samples.append(s)
                        say(describe(s))
                        if s.status == "skipped":
                            refused[(layout, dev)] = s
            kernel_release = boot.release
            uname = m.run("uname -a").out.strip()
        t_vm = time.monotonic() - t_start - t_images
        owners: dict[str, dict[int, dict[str, Any]]] = {}
        for layout, img in images.items():
            addrs = {a for s in samples if s.layout == layout for v in s.reads.values() for a in v}
            owners[layout] = block_owners(img.path, addrs | {img.root})
    finally:
        if not keep_images and image_dir is None:
            shutil.rmtree(images_at, ignore_errors=True)
    result = {
        "format": "fsoracle-mount-bench",
        "version": 1,
        "started": started,
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "phase_seconds": {"images": round(t_images, 1), "vm": round(t_vm, 1)},
        "config": dataclasses.asdict(cfg),
        "kernel": {"spec": cfg.kernel, "release": kernel_release, "uname": uname},
        "accelerator": {"name": boot.accel, "reason": boot.accel_reason},
        "qemu": qemu_version(),
        "boot_seconds": round(boot.seconds_to_ready, 1),
        "host": {"cpus": os.cpu_count(), "load_at_start": list(os.getloadavg())},
        "devices": {
            dev: {"drive": "raw, read-only, cache=none, aio=native", "guest": names_for(dev)}
            for dev in cfg.devices
        },
        "probe": dataclasses.asdict(probe),
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
                "blocks": {str(a): v for a, v in owners.get(layout, {}).items()},
            }
            for layout, img in images.items()
        },
        "seed": seed_claims(),
        "samples": [dataclasses.asdict(s) for s in samples],
    }
    write_atomic(out / "result.json", json.dumps(result, indent=1) + "\n")
    write_atomic(out / "report.md", render_report(result))
    plot(result, out / "mount.png")
    return result


def names_for(dev: str) -> str:
    return "/dev/vdX (virtio-blk-pci)" if dev == "virtio" else "/dev/nvmeXn1 (QEMU nvme)"


def describe(s: Sample) -> str:
    head = f"{s.layout} on {s.device} #{s.rep + 1}"
    if s.status in ("skipped", "failed"):
        return f"{head}: {s.status.upper()}: {s.reason}"
    r = s.reads
    return (
        f"{head}: btrfs_read_block_groups {s.read_block_groups_us / 1000:.1f} ms, open_ctree "
        f"{(s.open_ctree_us or 0) / 1000:.1f} ms; reads before/inside/after "
        f"{len(r['before'])}/{len(r['inside'])}/{len(r['after'])} (predicted inside "
        f"{s.predicted_inside}) {'ok' if s.status == 'ok' else 'MISMATCH'}"
    )


def seed_claims() -> dict[str, Any]:
    from harness.seedtable import load_seed_claims

    claims = load_seed_claims()
    return {
        "file": "btrfs-skinny-bg-tree-rfc-2019.txt",
        "blocks": {lay: claims[f"blocks-{lay}"].seed for lay in LAYOUTS},
        "read_block_groups_ms": claims["read-block-groups-time"].seed,
        "open_ctree_ms": claims["open-ctree-time"].seed,
    }


# ---------------------------------------------------------------- report


def _ok(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["samples"] if s["status"] in ("ok", "mismatch")]


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cells(result: dict[str, Any]) -> list[tuple[str, str]]:
    c = result["config"]
    return [(lay, dev) for lay in c["layouts"] for dev in c["devices"]]


def timing(result: dict[str, Any], layout: str, dev: str, key: str) -> list[float]:
    return [
        s[key] / 1000
        for s in _ok(result)
        if s["layout"] == layout and s["device"] == dev and s[key] is not None
    ]


def acceptance(result: dict[str, Any]) -> dict[str, Any]:
    """Every measured sample equals the prediction; bg-tree faster than extent-tree."""
    samples = _ok(result)
    all_match = bool(samples) and all(s["status"] == "ok" for s in samples)
    faster = {}
    for dev in result["config"]["devices"]:
        et = timing(result, "extent-tree", dev, "read_block_groups_us")
        bg = timing(result, "bg-tree", dev, "read_block_groups_us")
        if et and bg:
            faster[dev] = _med(bg) < _med(et)
    failed = [s for s in result["samples"] if s["status"] == "failed"]
    return {"reads_match": all_match, "bg_tree_faster": faster, "failed": len(failed)}


def render_report(result: dict[str, Any]) -> str:
    c = result["config"]
    seed = result["seed"]
    L: list[str] = []
    add = L.append
    add("# Mount timing: `btrfs_read_block_groups` traced, beside the model\n")
    add(
        f"Kernel `{result['kernel']['spec']}` ({result['kernel']['release']}), "
        f"{result['accelerator']['name'].upper()} ({_short(result['accelerator']['reason'])}), "
        f"{result['qemu']}; preset `{c['preset']}`: {c['size'] >> 30} GiB of "
        f"{c['extent_size'] >> 20} MiB preallocated extents on a {c['device_size'] >> 30} GiB "
        f"device, nodesize {c['nodesize']}, {c['repeat']} cold read-only mounts per layout and "
        f"device, one boot. Started {result['started']}, {result['wall_seconds']:.0f} s wall "
        f"(images {result['phase_seconds']['images']:.0f} s, VM "
        f"{result['phase_seconds']['vm']:.0f} s).\n"
    )
    acc = acceptance(result)
    add("## Tree blocks read, per window (measured in every sample vs the model)\n")
    add(
        f"Reads counted by a kprobe on `{result['probe']['function']}` "
        f"(`{result['probe']['fetch']}`), attributed by time to before / inside / after "
        "`btrfs_read_block_groups`. *Predicted* is `fsoracle btrfs predict-mount`'s "
        '"first read inside"; *same blocks* compares the addresses, not only the count; '
        "*root before*: the searched tree's root node was read before the window, as the "
        "model assumes.\n"
    )
    add(
        "| layout | device | samples | before | inside (measured) | inside (predicted) | "
        "after | same blocks | same order | root before |"
    )
    add("|---|---|---:|---:|---:|---:|---:|---|---|---|")
    for lay, dev in cells(result):
        ss = [s for s in result["samples"] if s["layout"] == lay and s["device"] == dev]
        ok = [s for s in ss if s["status"] in ("ok", "mismatch")]
        pred = result["images"][lay]["prediction"]["first_read_inside"]
        if not ok:
            st = ss[0]["status"] if ss else "not run"
            add(f"| {lay} | {dev} | 0 | | {st} | {pred} | | | | |")
            continue

        def span(key: str, ok: list[dict[str, Any]] = ok) -> str:
            v = sorted({len(s["reads"][key]) for s in ok})
            return str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"

        def yes(key: str, ok: list[dict[str, Any]] = ok) -> str:
            n = sum(1 for s in ok if s[key])
            return "yes" if n == len(ok) else f"{n}/{len(ok)}"

        add(
            f"| {lay} | {dev} | {len(ok)} | {span('before')} | {span('inside')} | {pred} | "
            f"{span('after')} | {yes('same_blocks')} | {yes('same_order')} | "
            f"{yes('root_read_before')} |"
        )
    verdict = "holds" if acc["reads_match"] else "DOES NOT HOLD"
    add(f"\nMeasured == predicted inside the window, every sample: **{verdict}**.\n")
    add(what_is_read(result))
    add("## Times (median, min-max over the samples)\n")
    add(
        "| layout | device | `btrfs_read_block_groups` ms | `open_ctree` ms | mount ms | "
        "block-layer reads (mount) |"
    )
    add("|---|---|---:|---:|---:|---:|")
    for lay, dev in cells(result):
        ok = [
            s
            for s in _ok(result)
            if s["layout"] == lay and s["device"] == dev and s["block_io"].get("read_ios")
        ]

        def fmt(key: str, lay: str = lay, dev: str = dev) -> str:
            v = timing(result, lay, dev, key)
            return f"{_med(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-"

        ios = sorted(s["block_io"]["read_ios"] for s in ok)
        io = f"{_med(ios):.0f}" if ios else "-"
        add(
            f"| {lay} | {dev} | {fmt('read_block_groups_us')} | {fmt('open_ctree_us')} | "
            f"{fmt('mount_us')} | {io} |"
        )
    add("\n## Ratios beside the seed\n")
    sm = seed["read_block_groups_ms"]
    so = seed["open_ctree_ms"]
    add(
        "The seed (2019 RFC, 1 TiB used, 4 KiB nodes, virtio-blk over a sparse file on NVMe) "
        "measured "
        f"`btrfs_read_block_groups` {sm['before_ms']} → {sm['after_ms']} ms "
        f"(×{sm['before_ms'] / sm['after_ms']:.1f}) and `open_ctree` {so['before_ms']} → "
        f"{so['after_ms']} ms (×{so['before_ms'] / so['after_ms']:.1f}), extent tree → its "
        "block group tree.\n"
    )
    add(
        "| device | layouts | `btrfs_read_block_groups` ms | ratio | seed ratio | "
        "`open_ctree` ratio | seed |"
    )
    add("|---|---|---:|---:|---:|---:|---:|")
    for dev in c["devices"]:
        et = _med(timing(result, "extent-tree", dev, "read_block_groups_us"))
        eo = _med(timing(result, "extent-tree", dev, "open_ctree_us"))
        for lay in ("bg-tree", "skinny-bg-tree"):
            v = timing(result, lay, dev, "read_block_groups_us")
            if not v or math.isnan(et):
                continue
            o = _med(timing(result, lay, dev, "open_ctree_us"))
            add(
                f"| {dev} | extent-tree → {lay} | {et:.1f} → {_med(v):.1f} | "
                f"×{et / _med(v):.1f} | ×{sm['before_ms'] / sm['after_ms']:.1f} | "
                f"×{eo / o:.1f} | ×{so['before_ms'] / so['after_ms']:.1f} |"
            )
    faster = ", ".join(f"{d}: {'yes' if f else 'NO'}" for d, f in acc["bg_tree_faster"].items())
    add(
        "\nMedian `btrfs_read_block_groups` of the block group tree below the extent "
        f"tree's: {faster}.\n"
    )
    add("## Blocks beside the seed's table\n")
    add(
        "The seed counts every block the search touches, the root included; the kernel reads "
        "the root before the window (*root before* above), so measured = inside + 1.\n"
    )
    add("| layout | seed (nodes + leaves) | model: visited | measured: inside + root |")
    add("|---|---:|---:|---:|")
    for lay in c["layouts"]:
        sb = seed["blocks"][lay]
        p = result["images"][lay]["prediction"]
        ok = [s for s in _ok(result) if s["layout"] == lay]
        meas = sorted({len(s["reads"]["inside"]) + int(bool(s["root_read_before"])) for s in ok})
        mtxt = "/".join(str(x) for x in meas) if meas else "skipped"
        add(
            f"| {lay} | {sb['total']} ({sb['nodes']} + {sb['leaves']}) | {p['visited']} "
            f"({p['visited_nodes']} + {p['visited_leaves']}) | {mtxt} |"
        )
    if c["size"] != 1 << 40:
        add(
            f"\n(This run has {c['size'] >> 30} GiB, the seed 1 TiB: block counts scale with the "
            "number of block groups.)"
        )
    skipped = [s for s in result["samples"] if s["status"] == "skipped"]
    failed = [s for s in result["samples"] if s["status"] == "failed"]
    if skipped:
        add("\n## Skipped (the kernel refused the layout)\n")
        for s in skipped:
            add(f"- {s['layout']} on {s['device']}: `{s['reason']}`")
    if failed:
        add("\n## Failed\n")
        for s in failed:
            add(f"- {s['layout']} on {s['device']} #{s['rep'] + 1}: {s['reason']}")
    add("\nRaw samples: `result.json`; traces: `traces/`; plot: `mount.png`.\n")
    return "\n".join(L) + "\n"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def what_is_read(result: dict[str, Any]) -> str:
    """Per layout, the trees each window reads (first sample), from the block headers."""
    rows = ["| layout | window | blocks by tree (first sample) |", "|---|---|---|"]
    for lay in result["config"]["layouts"]:
        ok = [s for s in _ok(result) if s["layout"] == lay]
        if not ok:
            continue
        blocks = result["images"][lay]["blocks"]
        for win in ("before", "inside", "after"):
            count: dict[str, int] = {}
            for a in ok[0]["reads"][win]:
                t = blocks.get(str(a), {}).get("tree") or "?"
                count[t] = count.get(t, 0) + 1
            txt = ", ".join(f"{t} {n}" for t, n in sorted(count.items())) or "none"
            rows.append(f"| {lay} | {win} | {txt} |")
    return "\n".join(rows) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["config"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = {"extent-tree": "#c0504d", "bg-tree": "#4f81bd", "skinny-bg-tree": "#9bbb59"}
    seed = result["seed"]
    for ax, key, title, seed_ms in (
        (axes[0], "read_block_groups_us", "btrfs_read_block_groups", seed["read_block_groups_ms"]),
        (axes[1], "open_ctree_us", "open_ctree", seed["open_ctree_ms"]),
    ):
        n = len(c["layouts"])
        width = 0.8 / max(n, 1)
        for j, dev in enumerate(c["devices"]):
            for i, lay in enumerate(c["layouts"]):
                v = timing(result, lay, dev, key)
                x = j + (i - (n - 1) / 2) * width
                if not v:
                    ax.text(
                        x, 0.02, "skipped", rotation=90, ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform(),
                    )  # fmt: skip
                    continue
                ax.bar(x, _med(v), width * 0.9, color=colors[lay], label=lay if j == 0 else None)
                ax.plot([x] * len(v), v, "k.", markersize=3)
        # the seed's two published times (extent tree, skinny block group tree), hatched
        xs = len(c["devices"])
        for i, (lay, ms) in enumerate(
            (("extent-tree", seed_ms["before_ms"]), ("skinny-bg-tree", seed_ms["after_ms"]))
        ):
            x = xs + (i - 0.5) * width
            label = f"seed: {lay}" if ax is axes[0] else None
            ax.bar(x, ms, width * 0.9, color=colors[lay], hatch="//", alpha=0.6, label=label)
        ax.set_xticks(range(xs + 1), [*c["devices"], "seed (2019,\nvirtio)"])
        ax.set_yscale("log")
        ax.set_ylabel("ms (bar: median; dots: samples)")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{result['kernel']['release']}, {result['accelerator']['name'].upper()}: "
        f"{c['size'] >> 30} GiB of {c['extent_size'] >> 20} MiB extents, nodesize "
        f"{c['nodesize']}, {c['repeat']} cold mounts each"
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
