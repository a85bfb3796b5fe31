"""Two-tier throughput model and placements: how fast random reads go once some data is on
the SSD.

Device model (the parameters live in ``harness/hot/presets/hot_bench.yaml``, fixed before the
experiment):

- ``latency_s``: the time one I/O keeps its issuing job waiting on that device, whatever
  the concurrency (dm-delay delays every bio by the same amount; the emulated device's own
  service time is folded in);
- ``iops_cap`` / ``bps_cap``: a sustained rate limit (QEMU's block throttling is a leaky
  bucket: bursts pass, the long-run rate does not exceed the limit);
- the host: ``cpu_s_per_io`` of CPU per I/O (guest kernel, QEMU, TCG) on ``cpus`` CPUs.

With ``jobs`` synchronous readers (each issues its next read when the previous one is
done) and a fraction ``p`` of reads served by the SSD, the throughput is the smallest of
the bounds of a closed system (asymptotic bound analysis)::

    jobs / (cpu + p * L_ssd + (1 - p) * L_hdd)      the jobs' cycle time
    cpus / cpu                                      CPU saturation
    cap_ssd / p,  cap_hdd / (1 - p)                 each device's rate limit

so with everything on the HDD and the HDD's limit binding, the throughput is the HDD's
IOPS limit, and when the HDD limit binds before and after relocation the speed-up is
``1 / (1 - p)``: the classic cache argument, 5x for 80 % of reads served by the SSD.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from model.hotdata.constants import RANGE_BITS
from model.hotdata.freq import hot_temp_calc
from model.hotdata.trace import HotEvent
from model.hotdata.tracking import HotInfo


@dataclass(frozen=True)
class DeviceModel:
    name: str
    latency_s: float
    iops_cap: float | None = None
    bps_cap: float | None = None

    def rate_cap(self, io_size: int) -> float:
        """Sustained I/Os per second the limits allow (inf without limits)."""
        cap = math.inf
        if self.iops_cap:
            cap = min(cap, self.iops_cap)
        if self.bps_cap:
            cap = min(cap, self.bps_cap / io_size)
        return cap


@dataclass(frozen=True)
class TierModel:
    ssd: DeviceModel
    hdd: DeviceModel
    jobs: int
    io_size: int
    cpu_s_per_io: float = 0.0
    cpus: int = 1


@dataclass(frozen=True)
class Throughput:
    iops: float
    limiter: str  # which bound is the smallest
    p_ssd: float

    def mib_s(self, io_size: int) -> float:
        return self.iops * io_size / 2**20


def throughput_bounds(m: TierModel, p_ssd: float) -> dict[str, float]:
    """Every bound of the model for SSD read share ``p_ssd`` (0..1)."""
    p = min(max(p_ssd, 0.0), 1.0)
    cycle = m.cpu_s_per_io + p * m.ssd.latency_s + (1 - p) * m.hdd.latency_s
    out = {"jobs/latency": m.jobs / cycle if cycle > 0 else math.inf}
    if m.cpu_s_per_io > 0:
        out["cpu"] = m.cpus / m.cpu_s_per_io
    if p > 0:
        out[f"{m.ssd.name} limit"] = m.ssd.rate_cap(m.io_size) / p
    if p < 1:
        out[f"{m.hdd.name} limit"] = m.hdd.rate_cap(m.io_size) / (1 - p)
    return out


def predict_throughput(m: TierModel, p_ssd: float) -> Throughput:
    """Random-read I/Os per second with a share ``p_ssd`` of reads on the SSD."""
    bounds = throughput_bounds(m, p_ssd)
    limiter = min(bounds, key=lambda k: bounds[k])
    return Throughput(bounds[limiter], limiter, min(max(p_ssd, 0.0), 1.0))


def device_ratio(m: TierModel) -> float:
    """All reads on the SSD vs all on the HDD: the most any placement can give."""
    return predict_throughput(m, 1.0).iops / predict_throughput(m, 0.0).iops


# --- placements ---------------------------------------------------------------------


RangeKey = tuple[int, int]  # (inode, range index)


def rank_ranges(root: HotInfo, now_ns: int) -> list[tuple[int, RangeKey]]:
    """Every range record by current temperature, hottest first (ties: inode, offset)."""
    items = [(hot_temp_calc(hr.freq, now_ns), (hr.i_ino, hr.index)) for hr in root.iter_ranges()]
    items.sort(key=lambda t: (-t[0], t[1]))
    return items


def rank_inodes(root: HotInfo, now_ns: int) -> list[tuple[int, int]]:
    """Every inode record by current temperature, hottest first (ties: inode number)."""
    items = [(hot_temp_calc(he.freq, now_ns), he.i_ino) for he in root.iter_inodes()]
    items.sort(key=lambda t: (-t[0], t[1]))
    return items


def range_bytes(key: RangeKey, sizes: dict[int, int]) -> int:
    """Bytes of a 1 MiB range inside its file."""
    ino, idx = key
    start = idx << RANGE_BITS
    return max(0, min(sizes.get(ino, 0), start + (1 << RANGE_BITS)) - start)


def fill_ranges(ranked: Iterable[RangeKey], sizes: dict[int, int], capacity: int) -> set[RangeKey]:
    """Take ranges in rank order while they fit (first fit: a range too big is skipped)."""
    chosen: set[RangeKey] = set()
    used = 0
    for key in ranked:
        b = range_bytes(key, sizes)
        if used + b <= capacity:
            chosen.add(key)
            used += b
    return chosen


def fill_files(ranked: Iterable[int], sizes: dict[int, int], capacity: int) -> set[int]:
    """Take whole files in rank order while they fit (first fit)."""
    chosen: set[int] = set()
    used = 0
    for ino in ranked:
        b = sizes.get(ino, 0)
        if used + b <= capacity:
            chosen.add(ino)
            used += b
    return chosen


def ssd_share_ranges(reads: Iterable[HotEvent], on_ssd: set[RangeKey]) -> float:
    """Share of read I/Os served by the SSD when ``on_ssd`` ranges live there (an I/O
    spanning ranges is served by the SSD only if all of them are)."""
    n = hit = 0
    for ev in reads:
        if ev.op != "read" or ev.length == 0:
            continue
        n += 1
        first = ev.offset >> RANGE_BITS
        last = (ev.offset + ev.length - 1) >> RANGE_BITS
        if all((ev.inode, i) in on_ssd for i in range(first, last + 1)):
            hit += 1
    return hit / n if n else 0.0


def ssd_share_files(reads: Iterable[HotEvent], on_ssd: set[int]) -> float:
    """Share of read I/Os served by the SSD when the ``on_ssd`` files live there."""
    n = hit = 0
    for ev in reads:
        if ev.op != "read" or ev.length == 0:
            continue
        n += 1
        hit += ev.inode in on_ssd
    return hit / n if n else 0.0
