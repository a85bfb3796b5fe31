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
   readers; the kernel trace (see :mod:`harness.hot_trace`) ranks the files with the
   model: ``files_to_move`` (``hot_temp_calc`` of the inode records, up to the SSD share).
2. before: ``read_plan(setup, "measure")`` for ``measure_seconds``, everything on the slow
   disk, no tracing.
3. the ranked files are moved (throttle lifted for the copy, restored after), then
   ``after``: the same plan for the same time.

The prediction is the simulator's for the recorded trace (``hot sim --trace``: the
``files`` scenario), with phase 2's plan as the measured reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import hot_sim
from harness.errors import UserError
from harness.hot_trace import GROUP, PROBES_BTF, Guest, build_trace, check_kernel, load_variant
from harness.safeio import output_dir, save_figure, write_atomic
from model.hotdata.trace import HotEvent, format_trace

MiB = 2**20


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


def run_bench(preset: str, kernel: str, out: Path, say: Any = print) -> BenchResult:
    from harness.hot_trace import check_reads, parse_driver_log
    from vm.disks import Disk, Throttle
    from vm.machine import Machine, MachineConfig

    raw = load_variant(preset)
    try:
        setup = hot_sim.setup_from_preset(raw)
        w = setup.workload
        dev_hdd = raw["devices"]["hdd"]
        throttle = Throttle(
            iops=int(dev_hdd["iops_cap"]) if dev_hdd.get("iops_cap") else None,
            bps=int(float(dev_hdd["bps_cap_mib"]) * MiB) if dev_hdd.get("bps_cap_mib") else None,
        )
        delay_ms = int(dev_hdd.get("dm_delay_ms", 0))
        seconds = float(raw["workload"]["measure_seconds"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"preset {preset!r}: bad or missing value ({e!r})") from None
    k = check_kernel(kernel)
    output_dir(out)
    work = Path(tempfile.mkdtemp(prefix="images-", dir=out))
    slow_img = work / "hdd.img"
    fast_img = work / "ssd.img"
    with open(slow_img, "wb") as f:
        f.truncate((w.dataset_bytes * 3 // 2 // MiB + 512) * MiB)
    with open(fast_img, "wb") as f:
        f.truncate((max(setup.ssd_capacity * 2, 256 * MiB) // MiB + 256) * MiB)
    cfg = MachineConfig(
        kernel=k,
        disks=(Disk(slow_img, "virtio", serial="hdd"), Disk(fast_img, "nvme", serial="ssd")),
        mem=int(raw["workload"].get("guest_ram_mib", 512)),
        cpus=int(raw.get("host", {}).get("cpus", 2)),
        name="hot-bench",
        timeout=3000,
        log_dir=out / "vm",
    )
    names = [hot_sim.file_name(setup, w.first_inode + i) for i in range(w.files)]
    plan1 = hot_sim.read_plan(setup, "trace")
    plan2 = hot_sim.read_plan(setup, "measure", count=max(20000, int(seconds * 3000)))
    slow, fast = "/mnt/hdd", "/mnt/ssd"
    t: dict[str, float] = {}
    t0 = time.monotonic()
    phases: list[PhaseResult] = []
    try:
        with Machine(cfg) as m:
            assert m.boot is not None
            release, accel = m.boot.release, m.boot.accel
            t["boot"] = time.monotonic() - t0
            say(f"booted {release} ({accel}) in {t['boot']:.0f} s")
            g = Guest(m)
            hdd, ssd = m.disk("hdd").dev, m.disk("ssd").dev
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
            m.set_throttle("hdd", throttle)
            say(
                f"slow disk: dm-delay {delay_ms} ms, QEMU throttle {throttle.iops} IOPS "
                f"{(throttle.bps or 0) // MiB} MiB/s; set-up took {t['setup']:.0f} s"
            )
            g.put_plan(plan1, "/tmp/plan1.txt")
            g.put_plan(plan2, "/tmp/plan2.txt")
            loc = {n: slow for n in names}
            spec = {"io_size": w.io_size, "jobs": setup.jobs}
            say(f"phase 1 (trace): {len(plan1)} reads, {setup.jobs} O_DIRECT readers, all on HDD")
            r1 = g.act(
                "read",
                {
                    **spec,
                    "plan": "/tmp/plan1.txt",
                    "locations": loc,
                    "count": len(plan1),
                    "log": "/tmp/hot.log",
                },
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
            raw_text = g.read_trace()
            log = parse_driver_log(m.get_file("/tmp/hot.log").decode())
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
            move_inodes = hot_sim.files_to_move(setup, trace)
            moved = [name_of[i] for i in move_inodes]
            say(
                f"model ranks {len(moved)} files to move ({len(trace.events)} trace events, "
                f"overrun {off['overrun']}, reads vs driver log "
                f"{'equal' if not problems else f'{len(problems)} differ'})"
            )
            say(f"phase 2 (before): {seconds:.0f} s of reads, all on HDD")
            r2 = g.act(
                "read",
                {**spec, "plan": "/tmp/plan2.txt", "locations": loc, "seconds": seconds},
                timeout=seconds + 300,
            )
            phases.append(
                PhaseResult(
                    "before", "all on HDD", r2["reads"], r2["seconds"], r2["iops"], r2["per_file"]
                )
            )
            say(f"phase 2: {r2['iops']:.0f} reads/s")
            m.set_throttle("hdd", None)
            mv = g.act("move", {"src": slow, "dst": fast, "names": moved}, timeout=1200)
            m.set_throttle("hdd", throttle)
            for n in moved:
                loc[n] = fast
            say(
                f"moved {mv['files']} files ({mv['moved_bytes'] // MiB} MiB) "
                f"in {mv['seconds']:.0f} s"
            )
            say(f"phase 3 (after): {seconds:.0f} s of reads, {len(moved)} hot files on SSD")
            r3 = g.act(
                "read",
                {**spec, "plan": "/tmp/plan2.txt", "locations": loc, "seconds": seconds},
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
            m.check_faults()
    finally:
        slow_img.unlink(missing_ok=True)
        fast_img.unlink(missing_ok=True)
        work.rmdir()
    t["total"] = time.monotonic() - t0
    reads = [HotEvent(0, "read", inode_of[n], o, w.io_size) for n, o in plan2]
    rep = hot_sim.run_sim(setup, trace, reads, policy=False)
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
    write_atomic(out / "result.json", json.dumps(asdict(res), indent=1, default=str) + "\n")
    png = plot(res, out / "hot-bench.png")
    write_atomic(out / "report.md", render(res, png))
    return res


def render(r: BenchResult, png: Path | None = None) -> str:
    L = [
        f"## Hot data relocation on {r.release} ({r.accel}), preset `{r.preset}`\n",
        f"Data set {r.dataset_bytes / MiB:.0f} MiB in {r.files} files on the slow disk; "
        f"SSD share {r.ssd_capacity / MiB:.0f} MiB ({r.ssd_capacity / r.dataset_bytes:.0%}); "
        f"moved {len(r.moved)} files ({r.moved_bytes / MiB:.0f} MiB), ranked by the model from "
        f"the recorded trace ({r.trace_reads} reads, {r.trace_writes} writes; reads "
        f"{'equal to' if r.trace_matches_driver else 'DIFFER from'} the driver's log).\n",
        "| phase | placement | reads | seconds | reads/s |",
        "|---|---|---:|---:|---:|",
    ]
    for p in r.phases:
        L.append(f"| {p.name} | {p.placement} | {p.reads} | {p.seconds:.1f} | {p.iops:.1f} |")
    L += [
        "",
        "| speed-up after/before | value |",
        "|---|---:|",
        f"| measured (phase after / phase before) | **{r.measured_speedup:.2f}x** |",
        f"| model prediction for the recorded trace (`hot sim --trace`, files; "
        f"{r.predicted_iops_before:.0f} -> {r.predicted_iops_after:.0f} reads/s) "
        f"| {r.predicted_speedup:.2f}x |",
        f"| seed (2010): SSD of about {r.seed_fraction:.0%} of capacity | about "
        f"{r.seed_speedup:g}x |",
        "",
        f"Reads served by the moved files: measured {r.measured_p_ssd:.1%}, predicted "
        f"{r.predicted_p_ssd:.1%}. Hottest files by the driver's own phase-1 counts: "
        f"{', '.join(r.hottest_by_driver[:8])}"
        f"{' (all moved)' if set(r.hottest_by_driver) <= set(r.moved) else ' (NOT all moved)'}.",
        f"Wall time: boot {r.seconds.get('boot', 0):.0f} s, set-up {r.seconds.get('setup', 0):.0f}"
        f" s, total {r.seconds.get('total', 0):.0f} s.",
    ]
    if png is not None:
        L.append(f"\n![hot bench]({png.name})")
    return "\n".join(L) + "\n"


def plot(r: BenchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4), dpi=110)
    ph = [p for p in r.phases if p.name in ("before", "after")]
    a1.bar([p.name for p in ph], [p.iops for p in ph], color=["tab:gray", "tab:green"])
    a1.bar(
        ["model before", "model after"],
        [r.predicted_iops_before, r.predicted_iops_after],
        color=["tab:gray", "tab:green"],
        alpha=0.4,
        hatch="//",
    )
    a1.set_ylabel("4 KiB O_DIRECT reads/s")
    a1.set_title("throughput (measured, model)")
    a2.bar(
        ["measured", "model (files)", "seed 2010"],
        [r.measured_speedup, r.predicted_speedup, r.seed_speedup],
        color=["tab:green", "tab:blue", "tab:red"],
    )
    a2.set_ylabel("speed-up after / before")
    a2.set_title(f"SSD = {r.ssd_capacity / r.dataset_bytes:.0%} of the data")
    fig.suptitle(f"hot data relocation, {r.release} ({r.accel}), {r.preset}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("results") / time.strftime("hot-bench-%Y%m%d-%H%M%S")

    def say(msg: str) -> None:
        print(f"hot bench: {msg}", file=sys.stderr, flush=True)

    res = run_bench(args.preset, args.kernel, out, say)
    print((out / "report.md").read_text())
    print(
        f"results in {out}/ (result.json, report.md, hot-bench.png, phase1.jsonl)", file=sys.stderr
    )
    return 0 if res.trace_matches_driver else 1
