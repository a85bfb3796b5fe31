"""The bench's workload, generated the same way for the simulator and for the guest.

Random reads of ``io_size`` bytes over a data set of ``files`` files of ``file_size`` bytes.
The data set is cut into ``unit``-byte units (default 1 MiB, the tracking range); unit
popularity follows Zipf's law with exponent ``s`` (P(rank k) proportional to k^-s), and the
ranks are shuffled over the data set with ``seed`` so hot units are scattered over files.
Within a unit the offset is uniform over its ``io_size`` blocks. Inode numbers are those a
fresh btrfs subvolume gives files created in order: 257, 258, ...

Everything is deterministic: ``random.Random(seed)`` (Mersenne Twister; ``random()`` and
``shuffle`` are stable across CPython versions).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from model.btrfs.constants import FIRST_FREE_OBJECTID
from model.hotdata.constants import NSEC_PER_SEC, RANGE_SIZE
from model.hotdata.trace import FileRecord, HotEvent, Trace, TraceHeader


@dataclass(frozen=True)
class ZipfWorkload:
    files: int
    file_size: int
    io_size: int = 4096
    s: float = 0.99
    unit: int = RANGE_SIZE
    seed: int = 1
    first_inode: int = FIRST_FREE_OBJECTID + 1  # the subvolume's root dir, then files

    def __post_init__(self) -> None:
        if self.files <= 0 or self.file_size <= 0 or self.io_size <= 0 or self.unit <= 0:
            raise ValueError("files, file_size, io_size and unit must be positive")
        if self.file_size % self.unit or self.unit % self.io_size:
            raise ValueError("file_size must be a multiple of unit, unit of io_size")

    @property
    def units_per_file(self) -> int:
        return self.file_size // self.unit

    @property
    def units(self) -> int:
        return self.files * self.units_per_file

    @property
    def dataset_bytes(self) -> int:
        return self.files * self.file_size

    def inode(self, file_index: int) -> int:
        return self.first_inode + file_index

    def unit_location(self, unit: int) -> tuple[int, int]:
        """``(inode, byte offset)`` of a unit."""
        f, k = divmod(unit, self.units_per_file)
        return self.inode(f), k * self.unit


def zipf_weights(n: int, s: float) -> list[float]:
    """Unnormalised P(rank k) = k^-s for k = 1..n."""
    return [k ** (-s) for k in range(1, n + 1)]


def generalized_harmonic(n: int, s: float) -> float:
    """H(n, s) = sum_{k=1..n} k^-s."""
    return sum(zipf_weights(n, s))


def zipf_top_fraction(n: int, s: float, k: int) -> float:
    """Share of accesses that go to the ``k`` most popular of ``n`` Zipf(s) items:
    H(k, s) / H(n, s)."""
    k = max(0, min(k, n))
    return generalized_harmonic(k, s) / generalized_harmonic(n, s)


def zipf_rank_to_unit(w: ZipfWorkload) -> list[int]:
    """``order[r]`` = the unit of popularity rank ``r`` (0 = hottest)."""
    order = list(range(w.units))
    random.Random(w.seed).shuffle(order)
    return order


def zipf_unit_probabilities(w: ZipfWorkload) -> list[float]:
    """The true access probability of every unit (by unit number)."""
    weights = zipf_weights(w.units, w.s)
    total = sum(weights)
    order = zipf_rank_to_unit(w)
    probs = [0.0] * w.units
    for r, u in enumerate(order):
        probs[u] = weights[r] / total
    return probs


def zipf_reads(w: ZipfWorkload, seed: int, count: int) -> list[tuple[int, int]]:
    """``count`` reads ``(inode, offset)`` drawn with ``seed`` (independent of the rank
    shuffle, which uses ``w.seed``)."""
    weights = zipf_weights(w.units, w.s)
    cdf: list[float] = []
    acc = 0.0
    for x in weights:
        acc += x
        cdf.append(acc)
    order = zipf_rank_to_unit(w)
    blocks = w.unit // w.io_size
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    for _ in range(count):
        r = bisect.bisect_right(cdf, rng.random() * acc)
        r = min(r, w.units - 1)
        ino, base = w.unit_location(order[r])
        out.append((ino, base + rng.randrange(blocks) * w.io_size))
    return out


def synth_trace(
    w: ZipfWorkload,
    *,
    start_ns: int,
    reads: int,
    read_rate: float,
    seed: int,
    setup_writes: bool = True,
    read_delay_ns: int = 60 * NSEC_PER_SEC,
) -> Trace:
    """The trace the guest would record: at ``start_ns`` (mount) each file written back
    whole once (one ``do_writepages`` call per file, 10 ms apart), then after
    ``read_delay_ns`` the reads, one every ``1/read_rate`` s."""
    files = {w.inode(i): FileRecord(w.inode(i), w.file_size, f"f{i:05d}") for i in range(w.files)}
    events: list[HotEvent] = []
    if setup_writes:
        for i in range(w.files):
            t = start_ns + i * 10_000_000
            events.append(HotEvent(t, "write", w.inode(i), 0, w.file_size))
    t0 = start_ns + read_delay_ns
    step = NSEC_PER_SEC / read_rate
    for j, (ino, off) in enumerate(zipf_reads(w, seed, reads)):
        events.append(HotEvent(t0 + int(j * step), "read", ino, off, w.io_size))
    header = TraceHeader(clock="realtime", mount_time_ns=start_ns, source="synthetic")
    return Trace(header, events, files)
