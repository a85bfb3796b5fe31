"""A statistical free-space generator: a fragmented ext4 described without writing it.

Per group, deterministically from (seed, group): the free block count, the number of free
extents, their lengths and the used gaps between them. Parameters:

- ``fragmentation`` F: mean free extents per group as a fraction of the worst case
  (every other block free: blocks_per_group / 2 extents); the count is Poisson.
- ``free_fraction``: mean fraction of a group's allocatable blocks that is free (uniform
  within +-50 %).
- the first group of every flex-bg starts with the flex-bg's block bitmaps, inode bitmaps
  and inode tables (flex_bg packing; backup superblocks and descriptors are not modelled).

Free lengths are a uniform random split of the free blocks (each >= 1: the broken-stick
law, close to geometric); used gaps likewise (interior gaps >= 1). Two views of the same
state: :class:`GeneratedGroups` hands out the runs as arrays when a bitmap is "read" (what
scales to the seed's 491 520 groups), :class:`MaterialisedGroups` writes every group's
4 KiB bitmap and reads runs back from it (the exact per-block model, for ~1 K groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.ext4.bitmap import free_run_arrays, runs_to_bitmap
from model.ext4.freespace import Geometry

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FragSpec:
    ngroups: int
    fragmentation: float = 0.015
    free_fraction: float = 0.5
    blocks_per_group: int = 32768
    blocksize_bits: int = 12
    log_groups_per_flex: int = 4
    inode_table_blocks: int = 512  # per group; 8192 inodes of 256 bytes in 4 KiB blocks
    seed: int = 1

    @property
    def geometry(self) -> Geometry:
        return Geometry(
            ngroups=self.ngroups,
            blocks_per_group=self.blocks_per_group,
            blocksize_bits=self.blocksize_bits,
            first_data_block=0 if self.blocksize_bits > 10 else 1,
            log_groups_per_flex=self.log_groups_per_flex,
            has_group_desc_csum=True,
        )

    @property
    def mean_extents(self) -> float:
        return max(1.0, self.fragmentation * self.blocks_per_group / 2)

    def meta_prefix(self, g: int) -> int:
        flex = 1 << self.log_groups_per_flex
        if g % flex:
            return 0
        return min(self.blocks_per_group - 2, flex * (2 + self.inode_table_blocks))


class GeneratedGroups:
    """The generated state, group runs produced on demand (nothing per-block is kept)."""

    def __init__(self, spec: FragSpec):
        if not 0 < spec.fragmentation <= 1:
            raise ValueError("fragmentation must be in (0, 1]")
        if not 0 < spec.free_fraction < 1:
            raise ValueError("free_fraction must be in (0, 1)")
        self.spec = spec
        self.geometry = spec.geometry
        n = spec.ngroups
        rng = np.random.default_rng([spec.seed, 0xF4EE])
        bpg = spec.blocks_per_group
        prefix = np.array([spec.meta_prefix(g) for g in range(min(n, 1 << 20))][:n], np.int64)
        if len(prefix) < n:  # pragma: no cover - more than 1 M groups
            prefix = np.resize(prefix, n)
        avail = bpg - prefix
        frac = spec.free_fraction * rng.uniform(0.5, 1.5, n)
        free = np.clip((avail * frac).astype(np.int64), 1, avail - 1)
        ext = np.maximum(1, rng.poisson(spec.mean_extents, n)).astype(np.int64)
        ext = np.minimum(ext, np.minimum(free, (avail - free) + 1))
        self.prefix = prefix
        self.free = free
        self.extents = ext
        self._flex = -1
        self._flex_cache: list[tuple[IntArray, IntArray]] = []

    def desc_free(self, g: int) -> int:
        return int(self.free[g])

    def block_uninit(self, g: int) -> bool:
        return False

    def runs(self, g: int) -> tuple[IntArray, IntArray]:
        """Group ``g``'s free runs (starts, lengths), group-relative."""
        f = g >> self.spec.log_groups_per_flex
        if self._flex != f:
            self._flex_cache = self.flex_runs(f)
            self._flex = f
        return self._flex_cache[g - (f << self.spec.log_groups_per_flex)]

    def flex_runs(self, f: int) -> list[tuple[IntArray, IntArray]]:
        """The runs of every group of flex-bg ``f``, drawn together (one generator per
        flex-bg, vectorised over its groups)."""
        spec = self.spec
        g0 = f << spec.log_groups_per_flex
        g1 = min(spec.ngroups, g0 + (1 << spec.log_groups_per_flex))
        rng = np.random.default_rng([spec.seed, f, 0x5EED])
        free = self.free[g0:g1]
        n = self.extents[g0:g1]
        prefix = self.prefix[g0:g1]
        used = spec.blocks_per_group - prefix - free
        lens = _split(rng, free - n, n) + 1  # n parts >= 1 summing to free
        gaps = _split(rng, used - (n - 1), n + 1)  # n + 1 parts, interior >= 1
        k = len(n)
        gseg = np.repeat(np.arange(k), n + 1)
        first_gap = np.concatenate(([0], np.cumsum(n + 1)[:-1]))
        interior = np.ones(len(gaps), dtype=bool)
        interior[first_gap] = False
        interior[np.cumsum(n + 1) - 1] = False
        gaps = gaps + interior
        lseg = np.repeat(np.arange(k), n)
        # start of run j in group i = prefix + gaps[0..j] + lens[0..j-1] (within the group)
        gap_mask = np.ones(len(gaps), dtype=bool)
        gap_mask[np.cumsum(n + 1) - 1] = False  # the gap after the last run is not used
        g_used = gaps[gap_mask]
        cs_g = np.cumsum(g_used)
        cs_l = np.cumsum(lens) - lens
        first_run = np.concatenate(([0], np.cumsum(n)[:-1]))
        base_g = np.repeat(cs_g[first_run] - g_used[first_run], n)
        base_l = np.repeat(cs_l[first_run], n)
        starts = prefix[lseg] + (cs_g - base_g) + (cs_l - base_l)
        del gseg
        out = []
        ends = np.cumsum(n)
        for i in range(k):
            a, b = int(first_run[i]), int(ends[i])
            out.append((starts[a:b].astype(np.int64), lens[a:b].astype(np.int64)))
        return out

    def read_bitmap(self, g: int) -> tuple[Sequence[int], Sequence[int]]:
        s, n = self.runs(g)
        return s.tolist(), n.tolist()

    def read_bitmap_arrays(self, g: int) -> tuple[IntArray, IntArray]:
        """``read_bitmap`` as arrays (what the tree builder consumes)."""
        return self.runs(g)


class MaterialisedGroups:
    """The same state written out as block bitmaps and read back bit by bit."""

    def __init__(self, spec: FragSpec):
        gen = GeneratedGroups(spec)
        self.spec = spec
        self.geometry = spec.geometry
        size = 1 << spec.blocksize_bits
        self.bitmaps: list[bytes] = []
        for g in range(spec.ngroups):
            s, n = gen.runs(g)
            self.bitmaps.append(
                runs_to_bitmap(
                    list(zip(s.tolist(), n.tolist(), strict=True)), spec.blocks_per_group, size
                )
            )
        self._free = [int(x) for x in gen.free]

    def desc_free(self, g: int) -> int:
        return self._free[g]

    def block_uninit(self, g: int) -> bool:
        return False

    def read_bitmap(self, g: int) -> tuple[Sequence[int], Sequence[int]]:
        s, n = free_run_arrays(self.bitmaps[g], self.spec.blocks_per_group)
        return s.tolist(), n.tolist()


def _split(rng: np.random.Generator, totals: IntArray, parts: IntArray) -> IntArray:
    """For each i, ``parts[i]`` non-negative integers summing to ``totals[i]`` (uniform
    cut points, the broken stick), concatenated."""
    cuts = parts - 1
    seg = np.repeat(np.arange(len(parts)), cuts)
    vals = (rng.random(int(cuts.sum())) * np.repeat(totals + 1, cuts)).astype(np.int64)
    big = np.int64(1) << 32  # totals < 2^32: sort by (group, value) in one key
    vals = np.sort(seg * big + vals) - seg * big
    # points per group: 0, sorted cuts..., total
    npts = parts + 1
    pts = np.empty(int(npts.sum()), dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(npts)[:-1]))
    last = first + npts - 1
    inner = np.ones(len(pts), dtype=bool)
    inner[first] = False
    inner[last] = False
    pts[first] = 0
    pts[last] = totals
    pts[inner] = vals
    d = np.diff(pts)
    keep = np.ones(len(d), dtype=bool)
    keep[last[:-1]] = False  # differences across groups
    return d[keep]
