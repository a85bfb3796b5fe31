"""The tiered-storage simulator: a preset, a phase-1 trace (synthetic or recorded in a
guest) and phase-2 reads in; predicted random-read throughput before and after relocation
out, beside the seed's "about 5x with an SSD of about 20 % of the capacity".

Placements compared (all with the SSD capacity of the preset):

- ideal: the units with the highest *true* Zipf probability (closed form, no sampling);
- model ranking, ranges: the 1 MiB range records ranked by ``hot_temp_calc`` after phase 1;
- model ranking, files: the inode records ranked the same way, whole files moved (what the
  VM bench does);
- kernel policy: phase 1 replayed through ``hot_do_relocate`` every 120 s with the 2013
  constants (threshold 150, high/low water, 250 items per run), then the kthread left
  running without I/O for ``policy.horizon_hours``.

The SSD share of reads for each placement is measured on the phase-2 reads (a different
seed from phase 1), and turned into throughput by :mod:`model.hotdata.tiering`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from harness.hot.config import SimSetup
from model.hotdata import constants as C
from model.hotdata.freq import hot_temp_bucket
from model.hotdata.replay import ReplayConfig, replay_trace
from model.hotdata.tiering import (
    Throughput,
    device_ratio,
    fill_files,
    fill_ranges,
    predict_throughput,
    rank_inodes,
    rank_ranges,
    ssd_share_files,
    ssd_share_ranges,
)
from model.hotdata.trace import HotEvent, Trace
from model.hotdata.workload import ZipfWorkload, synth_trace, zipf_reads, zipf_top_fraction


def phase1_trace(s: SimSetup) -> Trace:
    """The synthetic phase-1 trace: setup writes, then ``trace_reads`` reads at the
    all-HDD throughput the model predicts."""
    rate = predict_throughput(s.tiers, 0.0).iops
    return synth_trace(
        s.workload,
        start_ns=s.start_ns,
        reads=s.trace_reads,
        read_rate=rate,
        seed=s.trace_seed,
        setup_writes=s.setup_writes,
    )


def measure_reads(s: SimSetup) -> list[HotEvent]:
    """Phase-2 reads (times are irrelevant to the share and left at 0)."""
    w = s.workload
    return [
        HotEvent(0, "read", ino, off, w.io_size)
        for ino, off in zipf_reads(w, s.measure_seed, s.measure_reads)
    ]


def file_name(s: SimSetup, inode: int) -> str:
    """The data set's file name for an inode (files are created in order: f00000 = 257)."""
    return f"f{inode - s.workload.first_inode:05d}"


def read_plan(s: SimSetup, phase: str, count: int | None = None) -> list[tuple[str, int]]:
    """The reads the guest workload issues, as ``(file name, offset)``: phase ``trace``
    (phase 1, ``trace_reads`` of them) or ``measure`` (phases 2 and 3, ``count`` of them,
    default ``sim_measure_reads``). The guest reads ``io_size`` bytes at each offset with
    O_DIRECT, ``jobs`` readers taking the next entry in turn."""
    seed, n = (
        (s.trace_seed, s.trace_reads) if phase == "trace" else (s.measure_seed, s.measure_reads)
    )
    n = n if count is None else count
    return [(file_name(s, ino), off) for ino, off in zipf_reads(s.workload, seed, n)]


def files_to_move(s: SimSetup, trace: Trace) -> list[int]:
    """The inodes the model ranks hottest after ``trace`` (``hot_temp_calc`` of the inode
    records at the trace's end, hottest first), whole files up to the SSD capacity."""
    tracked = replay_trace(trace, ReplayConfig(timers=False))
    ranked = [ino for _, ino in rank_inodes(tracked.root, tracked.now_ns)]
    chosen = fill_files(ranked, trace.sizes(), s.ssd_capacity)
    return [ino for ino in ranked if ino in chosen]


@dataclass
class Scenario:
    key: str
    label: str
    ssd_bytes: int
    p_ssd: float
    throughput: Throughput
    speedup: float
    note: str = ""


@dataclass
class SimReport:
    preset: str
    dataset_bytes: int
    ssd_capacity: int
    io_size: int
    jobs: int
    devices: dict[str, dict[str, Any]]
    device_ratio: float
    scenarios: list[Scenario]
    seed_speedup: float
    seed_fraction: float
    curve: dict[str, list[tuple[float, float]]]
    policy: dict[str, Any]
    trace: dict[str, Any]

    def scenario(self, key: str) -> Scenario:
        return next(s for s in self.scenarios if s.key == key)


def _scenario(
    s: SimSetup, key: str, label: str, ssd_bytes: int, p: float, note: str = ""
) -> Scenario:
    base = predict_throughput(s.tiers, 0.0).iops
    t = predict_throughput(s.tiers, p)
    return Scenario(key, label, ssd_bytes, p, t, t.iops / base, note)


def _ideal_share(w: ZipfWorkload, capacity: int) -> tuple[int, float]:
    k = min(w.units, capacity // w.unit)
    return k * w.unit, zipf_top_fraction(w.units, w.s, k)


def run_sim(
    s: SimSetup,
    trace: Trace | None = None,
    reads: list[HotEvent] | None = None,
    *,
    policy: bool = True,
) -> SimReport:
    """Everything ``fsoracle hot sim`` prints. ``trace`` (phase 1) and ``reads`` (phase 2)
    default to the preset's synthetic ones."""
    trace = trace if trace is not None else phase1_trace(s)
    reads = reads if reads is not None else measure_reads(s)
    sizes = trace.sizes()
    w = s.workload
    cap = s.ssd_capacity

    tracked = replay_trace(trace, ReplayConfig(timers=False))
    now = tracked.now_ns
    ranked_ranges = [k for _, k in rank_ranges(tracked.root, now)]
    ranked_files = [ino for _, ino in rank_inodes(tracked.root, now)]
    if reads and not any(ev.inode in sizes for ev in reads):
        raise UserError(
            "the phase-2 reads name no inode of the phase-1 trace: record both in the same "
            "filesystem (files created in order get inodes 257, 258, ...)"
        )

    def ranges_at(c: int) -> tuple[int, float]:
        chosen = fill_ranges(ranked_ranges, sizes, c)
        used = sum(min(C.RANGE_SIZE, max(0, sizes[i] - (j << C.RANGE_BITS))) for i, j in chosen)
        return used, ssd_share_ranges(reads, chosen)

    def files_at(c: int) -> tuple[int, float]:
        chosen_f = fill_files(ranked_files, sizes, c)
        return sum(sizes[i] for i in chosen_f), ssd_share_files(reads, chosen_f)

    scen = [_scenario(s, "hdd", "everything on the HDD (before)", 0, 0.0)]
    b, p = _ideal_share(w, cap)
    scen.append(_scenario(s, "ideal", "ideal: hottest units by true Zipf probability", b, p))
    b, p = ranges_at(cap)
    scen.append(_scenario(s, "ranges", "model ranking, 1 MiB ranges (kernel granularity)", b, p))
    b, p = files_at(cap)
    scen.append(_scenario(s, "files", "model ranking, whole files (the bench's moves)", b, p))

    pol: dict[str, Any] = {}
    if policy:
        pol = _policy(s, trace, reads)
        scen.append(
            _scenario(
                s,
                "policy",
                f"kernel policy replay ({pol['horizon_h']:g} h, 2013 constants)",
                pol["ssd_bytes"],
                pol["p_ssd"],
                pol["note"],
            )
        )
    scen.append(_scenario(s, "ssd", "everything on the SSD (bound)", w.dataset_bytes, 1.0))

    base = predict_throughput(s.tiers, 0.0).iops
    curve: dict[str, list[tuple[float, float]]] = {"ideal": [], "ranges": [], "files": []}
    for f in s.curve:
        c = int(f * w.dataset_bytes)
        for name, fn in (
            ("ideal", lambda c: _ideal_share(w, c)),
            ("ranges", ranges_at),
            ("files", files_at),
        ):
            _, p = fn(c)
            curve[name].append((f, predict_throughput(s.tiers, p).iops / base))

    hot_buckets = [hot_temp_bucket(t) for t, _ in rank_ranges(tracked.root, now)[:1]]
    wrapped = sum(
        1
        for he in tracked.root.iter_inodes()
        for fr in [he.freq, *(hr.freq for hr in he.iter_ranges())]
        if fr.nr_reads >= 4096 or fr.nr_writes >= 4096
    )
    # counts are u32, but the temperature keeps nr << 20 in 32 bits: >= 4096 wraps
    wrapped_heat = sum(
        1 for he in tracked.root.iter_inodes() if he.freq.nr_reads + he.freq.nr_writes >= 4096
    )
    return SimReport(
        preset=str(s.raw.get("name", "")),
        dataset_bytes=w.dataset_bytes,
        ssd_capacity=cap,
        io_size=w.io_size,
        jobs=s.jobs,
        devices={
            d.name: {
                "latency_ms": d.latency_s * 1e3,
                "rate_cap_iops": None
                if math.isinf(d.rate_cap(w.io_size))
                else d.rate_cap(w.io_size),
            }
            for d in (s.tiers.ssd, s.tiers.hdd)
        },
        device_ratio=device_ratio(s.tiers),
        scenarios=scen,
        seed_speedup=s.seed_speedup,
        seed_fraction=s.seed_fraction,
        curve=curve,
        policy=pol,
        trace={
            "events": len(trace.events),
            "reads": sum(1 for e in trace.events if e.op == "read"),
            "inodes": len(tracked.root.inodes),
            "ranges": sum(len(he.ranges) for he in tracked.root.inodes.values()),
            "hottest_range_bucket": hot_buckets[0] if hot_buckets else None,
            "records_with_counts_ge_4096": wrapped,
            "inodes_with_count_heat_wrapped": wrapped_heat,
            "phase2_reads": len(reads),
        },
    )


def _policy(s: SimSetup, trace: Trace, reads: list[HotEvent]) -> dict[str, Any]:
    """Replay with the relocation kthread and report where the data ended up."""
    until = trace.end_time_ns + s.horizon_ns
    res = replay_trace(
        trace,
        ReplayConfig(
            nonrot_total=s.ssd_capacity, rewrite_delay_ns=s.rewrite_delay_ns, until_ns=until
        ),
    )
    assert res.reloc is not None
    on_ssd = {k for k in res.reloc.on_ssd}
    p = ssd_share_ranges(reads, on_ssd)
    mount = trace.mount_time_ns
    first = next((r for r in res.runs if r.moved_to_ssd), None)
    first_s = None
    if first is not None:
        first_s = (first.run - 2) * C.HOT_RELOC_INTERVAL  # run 2 is the one at mount
    moved_in = sum(r.moved_to_ssd for r in res.runs)
    moved_out = sum(r.moved_to_hdd for r in res.runs)
    fill = res.reloc.nonrot_used / s.ssd_capacity if s.ssd_capacity else 0.0
    if first is None:
        note = "nothing moved: no range reached the threshold"
    else:
        note = (
            f"first move after {first_s / 3600:.1f} h (run {first.run}, threshold {first.thresh}); "
            f"SSD {fill:.0%} full"
        )
    return {
        "horizon_h": s.horizon_ns / C.NSEC_PER_SEC / 3600,
        "runs": len(res.runs),
        "worker_runs": res.worker_runs,
        "first_move_s": first_s,
        "first_move_thresh": None if first is None else first.thresh,
        "final_thresh": res.reloc.thresh,
        "moved_to_ssd": moved_in,
        "moved_to_hdd": moved_out,
        "rewrites": res.rewrites,
        "ssd_bytes": res.reloc.nonrot_used,
        "ssd_fill": fill,
        "p_ssd": p,
        "run_ends": {
            e: sum(1 for r in res.runs if r.end == e) for e in sorted({r.end for r in res.runs})
        },
        "elapsed_after_mount_s": (res.now_ns - mount) / C.NSEC_PER_SEC,
        "note": note,
    }
