"""``fsoracle hot bench``: the seed's experiment on a real kernel, in one boot.

Devices (preset ``devices``): the slow disk is virtio-blk with QEMU block throttling
(``iops_cap``, ``bps_cap_mib``; QMP ``block_set_io_throttle``) under a dm-delay target in
the guest (``dm_delay_ms`` on reads and writes); the fast disk is an unthrottled QEMU NVMe.
Each gets its own btrfs: the data set lives on the slow one, and "relocation" is a
file-level move (copy to the fast filesystem, fsync, unlink; the reader then opens the file
where it lives). With 1 MiB files each file is exactly one 1 MiB tracking range, so the
whole-file moves are the moves the kernel's range relocation would make.

Phases (the preset's ``workload``):

0. set-up: both filesystems made, the data set written (each file once, fsynced) with the
   throttle and the delay off, the trace already recording (the set-up writes are in it);
   then the delay and the throttle are switched on.
1. trace: the ``trace_reads`` reads of ``read_plan(setup, "trace")``, O_DIRECT, ``jobs``
   readers; the kernel trace (see :mod:`harness.hot.trace`) ranks the files with the
   model: ``files_to_move`` (``hot_temp_calc`` of the inode records, up to the SSD share).
2. before: ``read_plan(setup, "measure")`` for ``measure_seconds``, everything on the slow
   disk, no tracing.
3. the ranked files are moved (throttle lifted for the copy, restored after), then
   ``after``: the same plan for the same time.

The prediction is the simulator's for the recorded trace (``hot sim --trace``: the
``files`` scenario), with phase 2's plan as the measured reads.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.hot import sim
from harness.hot.config import MiB, load_variant, setup_from_preset
from harness.hot.trace import (
    GROUP,
    PROBES_BTF,
    GuestDriver,
    build_trace,
    check_kernel,
    check_reads,
)
from harness.safeio import output_dir, write_atomic
from harness.target import DiskSpec, TargetSpec, open_target
from model.hotdata.trace import HotEvent, format_trace

SCHEMA = 1  # result.json's "schema"


@dataclass
class PhaseResult:
    name: str
    placement: str
    reads: int
    seconds: float
    iops: float
    per_file: dict[str, int] = field(default_factory=dict)


@dataclass
class BenchResult:
    preset: str
    kernel: str
    release: str
    accel: str
    dataset_bytes: int
    files: int
    ssd_capacity: int
    moved: list[str]
    moved_bytes: int
    phases: list[PhaseResult]
    measured_speedup: float
    predicted_speedup: float
    predicted_iops_before: float
    predicted_iops_after: float
    predicted_p_ssd: float
    measured_p_ssd: float
    seed_speedup: float
    seed_fraction: float
    hottest_by_driver: list[str]
    trace_reads: int
    trace_writes: int
    trace_matches_driver: bool
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.name == name)

    def to_json(self) -> dict[str, Any]:
        """``result.json``: every field, and ``schema``."""
        return {"schema": SCHEMA, **asdict(self)}


def run_hot_bench(
    preset: str, kernel: str, out: Path, say: Callable[[str], None] = print
) -> BenchResult:
    """Run the bench of ``preset`` (``PRESET[:VARIANT]``) in one VM on ``kernel``; write
    ``result.json``, ``phase1.jsonl`` (the recorded trace) and ``phase1-driver.log`` into
    ``out`` (:func:`harness.hot.render.write_bench_report` adds the report and figure)."""
    raw = load_variant(preset)
    try:
        setup = setup_from_preset(raw)
        w = setup.workload
        dev_hdd = raw["devices"]["hdd"]
        iops = int(dev_hdd["iops_cap"]) if dev_hdd.get("iops_cap") else None
        bps = int(float(dev_hdd["bps_cap_mib"]) * MiB) if dev_hdd.get("bps_cap_mib") else None
        delay_ms = int(dev_hdd.get("dm_delay_ms", 0))
        seconds = float(raw["workload"]["measure_seconds"])
        spec = TargetSpec(
            kind="vm",
            kernel=kernel,
            mem_mib=int(raw["workload"].get("guest_ram_mib", 512)),
            cpus=int(raw.get("host", {}).get("cpus", 2)),
            timeout=3000,
            log_dir=str(out / "vm"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"preset {preset!r}: bad or missing value ({e!r})") from None
    check_kernel(kernel)
    output_dir(out)
    work = Path(tempfile.mkdtemp(prefix="images-", dir=out))
    slow_img = work / "hdd.img"
    fast_img = work / "ssd.img"
    with open(slow_img, "wb") as f:
        f.truncate((w.dataset_bytes * 3 // 2 // MiB + 512) * MiB)
    with open(fast_img, "wb") as f:
        f.truncate((max(setup.ssd_capacity * 2, 256 * MiB) // MiB + 256) * MiB)
    disks = [DiskSpec(slow_img, "btrfs", "virtio"), DiskSpec(fast_img, "btrfs", "nvme")]
    names = [sim.file_name(setup, w.first_inode + i) for i in range(w.files)]
    plan1 = sim.read_plan(setup, "trace")
    plan2 = sim.read_plan(setup, "measure", count=max(20000, int(seconds * 3000)))
    slow, fast = "/mnt/hdd", "/mnt/ssd"
    t: dict[str, float] = {}
    t0 = time.monotonic()
    phases: list[PhaseResult] = []
    try:
        with open_target(spec, disks, name="hot-bench") as tg:
            release, accel = tg.release, tg.runtime().accel
            t["boot"] = time.monotonic() - t0
            say(f"booted {release} ({accel}) in {t['boot']:.0f} s")
            g = GuestDriver(tg)
            d_hdd, d_ssd = tg.disks
            hdd, ssd = d_hdd.dev, d_ssd.dev
            g.act("probes", {"probes": list(PROBES_BTF), "group": GROUP})
            mk = g.act(
                "mkfs",
                {
                    "filesystems": [
                        {"dev": hdd, "mnt": slow, "fsid": str(uuid.uuid4()), "dm_delay": "hotslow"},
                        {"dev": ssd, "mnt": fast, "fsid": str(uuid.uuid4())},
                    ]
                },
            )
            sdev = int(mk["mounts"][slow]["s_dev"])
            on = g.act("trace_on", {})
            ts = time.monotonic()
            say(f"set-up: writing {w.files} files of {w.file_size // MiB} MiB on the slow disk")
            files = g.act("create", {"mnt": slow, "names": names, "size": w.file_size})["files"]
            t["setup"] = time.monotonic() - ts
            g.act("delay", {"name": "hotslow", "lower": hdd, "ms": delay_ms})
            tg.set_throttle(d_hdd, iops, bps)
            say(
                f"slow disk: dm-delay {delay_ms} ms, QEMU throttle {iops} IOPS "
                f"{(bps or 0) // MiB} MiB/s; set-up took {t['setup']:.0f} s"
            )
            p1 = g.put_plan(plan1, "plan1.txt")
            p2 = g.put_plan(plan2, "plan2.txt")
            loc = {n: slow for n in names}
            spec_io = {"io_size": w.io_size, "jobs": setup.jobs}
            say(f"phase 1 (trace): {len(plan1)} reads, {setup.jobs} O_DIRECT readers, all on HDD")
            r1 = g.act(
                "read",
                {**spec_io, "plan": p1, "locations": loc, "count": len(plan1), "log": g.log},
                timeout=len(plan1) / 20 + 300,
            )
            phases.append(
                PhaseResult(
                    "trace",
                    "all on HDD, traced",
                    r1["reads"],
                    r1["seconds"],
                    r1["iops"],
                    r1["per_file"],
                )
            )
            say(f"phase 1: {r1['iops']:.0f} reads/s over {r1['seconds']:.0f} s")
            off = g.act("trace_off", {})
            raw_text = g.read_trace(work / "trace.txt")
            log = g.driver_log(work / "hot.log")
            trace, dec = build_trace(
                raw_text, sdev, on, files, f"guest {release} hot bench phase 1"
            )
            write_atomic(out / "phase1.jsonl", "\n".join(format_trace(trace)) + "\n")
            write_atomic(
                (out / "phase1-driver.log"),
                "".join(f"{e.op} {e.name} {e.inode} {e.offset} {e.length}\n" for e in log),
            )
            problems = check_reads(trace, log)
            inode_of = {f["name"]: int(f["inode"]) for f in files}
            name_of = {v: k for k, v in inode_of.items()}
            move_inodes = sim.files_to_move(setup, trace)
            moved = [name_of[i] for i in move_inodes]
            say(
                f"model ranks {len(moved)} files to move ({len(trace.events)} trace events, "
                f"overrun {off['overrun']}, reads vs driver log "
                f"{'equal' if not problems else f'{len(problems)} differ'})"
            )
            say(f"phase 2 (before): {seconds:.0f} s of reads, all on HDD")
            r2 = g.act(
                "read",
                {**spec_io, "plan": p2, "locations": loc, "seconds": seconds},
                timeout=seconds + 300,
            )
            phases.append(
                PhaseResult(
                    "before", "all on HDD", r2["reads"], r2["seconds"], r2["iops"], r2["per_file"]
                )
            )
            say(f"phase 2: {r2['iops']:.0f} reads/s")
            tg.set_throttle(d_hdd, None, None)
            mv = g.act("move", {"src": slow, "dst": fast, "names": moved}, timeout=1200)
            tg.set_throttle(d_hdd, iops, bps)
            for n in moved:
                loc[n] = fast
            say(
                f"moved {mv['files']} files ({mv['moved_bytes'] // MiB} MiB) "
                f"in {mv['seconds']:.0f} s"
            )
            say(f"phase 3 (after): {seconds:.0f} s of reads, {len(moved)} hot files on SSD")
            r3 = g.act(
                "read",
                {**spec_io, "plan": p2, "locations": loc, "seconds": seconds},
                timeout=seconds + 300,
            )
            phases.append(
                PhaseResult(
                    "after",
                    f"{len(moved)} model-ranked files on SSD",
                    r3["reads"],
                    r3["seconds"],
                    r3["iops"],
                    r3["per_file"],
                )
            )
            say(f"phase 3: {r3['iops']:.0f} reads/s")
            g.check_faults()
    finally:
        for p in (slow_img, fast_img, work / "trace.txt", work / "hot.log"):
            p.unlink(missing_ok=True)
        work.rmdir()
    t["total"] = time.monotonic() - t0
    reads = [HotEvent(0, "read", inode_of[n], o, w.io_size) for n, o in plan2]
    rep = sim.run_sim(setup, trace, reads, policy=False)
    files_sc = rep.scenario("files")
    moved_set = set(moved)
    counts = phases[0].per_file
    k_hot = max(1, len(moved) // 4)
    hottest = sorted(counts, key=lambda n: (-counts[n], n))[:k_hot]
    after = phases[2]
    p_ssd_measured = sum(c for n, c in after.per_file.items() if n in moved_set) / max(
        1, after.reads
    )
    res = BenchResult(
        preset=str(raw.get("name", preset)),
        kernel=kernel,
        release=release,
        accel=accel,
        dataset_bytes=w.dataset_bytes,
        files=w.files,
        ssd_capacity=setup.ssd_capacity,
        moved=moved,
        moved_bytes=int(mv["moved_bytes"]),
        phases=phases,
        measured_speedup=phases[2].iops / phases[1].iops if phases[1].iops else 0.0,
        predicted_speedup=files_sc.speedup,
        predicted_iops_before=rep.scenario("hdd").throughput.iops,
        predicted_iops_after=files_sc.throughput.iops,
        predicted_p_ssd=files_sc.p_ssd,
        measured_p_ssd=p_ssd_measured,
        seed_speedup=setup.seed_speedup,
        seed_fraction=setup.seed_fraction,
        hottest_by_driver=hottest,
        trace_reads=sum(1 for e in trace.events if e.op == "read"),
        trace_writes=sum(1 for e in trace.events if e.op == "write"),
        trace_matches_driver=not problems,
        seconds=t,
        notes=[f"trace decode: {asdict(dec) | {'events': len(dec.events)}}"],
    )
    write_atomic(out / "result.json", json.dumps(res.to_json(), indent=1, default=str) + "\n")
    return res
