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

    def desc_free(self, g: int) -> int:
        return int(self.free[g])

    def block_uninit(self, g: int) -> bool:
        return False

    def runs(self, g: int) -> tuple[IntArray, IntArray]:
        spec = self.spec
        rng = np.random.default_rng([spec.seed, g])
        free = int(self.free[g])
        n = int(self.extents[g])
        avail = spec.blocks_per_group - int(self.prefix[g])
        used = avail - free
        # free lengths: n parts >= 1 summing to free
        cuts = np.sort(rng.integers(0, free - n + 1, n - 1))
        lens = np.diff(np.concatenate(([0], cuts, [free - n]))) + 1
        # gaps: n + 1 parts, interior >= 1, summing to used
        cuts = np.sort(rng.integers(0, used - (n - 1) + 1, n))
        gaps = np.diff(np.concatenate(([0], cuts, [used - (n - 1)])))
        gaps[1:-1] += 1
        starts = (
            int(self.prefix[g]) + np.cumsum(gaps[:-1]) + np.concatenate(([0], np.cumsum(lens[:-1])))
        )
        return starts.astype(np.int64), lens.astype(np.int64)

    def read_bitmap(self, g: int) -> tuple[Sequence[int], Sequence[int]]:
        s, n = self.runs(g)
        return s.tolist(), n.tolist()


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
