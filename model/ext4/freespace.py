"""The free-space state the allocators share: per group free runs, read on demand.

A :class:`GroupSource` is what mount-time code sees (descriptor free counts, BLOCK_UNINIT
flags) plus ``read_bitmap`` (what ``ext4_read_block_bitmap_nowait`` yields: the group's free
runs). Sources: a real image (:class:`ImageGroups`), explicit run lists
(:class:`RunsGroups`, for tests), or the statistical generator (``model.ext4.fragment``).
Each allocator keeps its own :class:`GroupRuns` per loaded group, so several allocators can
start from the same state.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from model.ext4.bitmap import Runs
from model.ext4.image import Ext4Image, num_clusters_in_group


@dataclass(frozen=True)
class Geometry:
    ngroups: int
    blocks_per_group: int
    blocksize_bits: int
    first_data_block: int = 0
    log_groups_per_flex: int = 4
    has_group_desc_csum: bool = True
    blocks_count: int = 0  # 0: ngroups * blocks_per_group + first_data_block

    @property
    def blocksize(self) -> int:
        return 1 << self.blocksize_bits

    @property
    def flex_size(self) -> int:
        """``ext4_flex_bg_size``: 1 << s_log_groups_per_flex."""
        return 1 << self.log_groups_per_flex

    @property
    def total_blocks(self) -> int:
        return self.blocks_count or self.ngroups * self.blocks_per_group + self.first_data_block

    def group_blocks(self, g: int) -> int:
        """``num_clusters_in_group``."""
        if g == self.ngroups - 1:
            return self.total_blocks - (g * self.blocks_per_group + self.first_data_block)
        return self.blocks_per_group

    def group_first_block_no(self, g: int) -> int:
        return g * self.blocks_per_group + self.first_data_block

    @property
    def mb_num_orders(self) -> int:
        """``MB_NUM_ORDERS(sb)``: s_blocksize_bits + 2."""
        return self.blocksize_bits + 2


class GroupSource(Protocol):
    geometry: Geometry

    def desc_free(self, g: int) -> int:
        """``bb_free`` as ``ext4_mb_add_groupinfo`` sets it at mount."""
        ...

    def block_uninit(self, g: int) -> bool:
        """BLOCK_UNINIT honoured (flag set and a descriptor checksum feature)."""
        ...

    def read_bitmap(self, g: int) -> tuple[Sequence[int], Sequence[int]]:
        """The group's free runs (starts, lengths), group-relative, ascending."""
        ...


class RunsGroups:
    """Explicit per-group free runs (tests, hypothesis)."""

    def __init__(self, geometry: Geometry, runs: list[Runs], uninit: set[int] | None = None):
        if len(runs) != geometry.ngroups:
            raise ValueError("one run list per group")
        self.geometry = geometry
        self._runs = [sorted(r) for r in runs]
        self._uninit = uninit or set()

    def desc_free(self, g: int) -> int:
        return sum(n for _, n in self._runs[g])

    def block_uninit(self, g: int) -> bool:
        return g in self._uninit

    def read_bitmap(self, g: int) -> tuple[Sequence[int], Sequence[int]]:
        r = self._runs[g]
        return [s for s, _ in r], [n for _, n in r]


class ImageGroups:
    """A real image's groups, read through :class:`Ext4Image`."""

    def __init__(self, im: Ext4Image):
        sb = im.sb
        self.im = im
        self.geometry = Geometry(
            ngroups=im.groups_count,
            blocks_per_group=sb.blocks_per_group,
            blocksize_bits=sb.blocksize_bits,
            first_data_block=sb.first_data_block,
            log_groups_per_flex=sb.log_groups_per_flex_effective,
            has_group_desc_csum=sb.has_group_desc_csum,
            blocks_count=sb.blocks_count,
        )
        assert all(
            num_clusters_in_group(sb, g) == self.geometry.group_blocks(g)
            for g in (0, im.groups_count - 1)
        )

    def desc_free(self, g: int) -> int:
        if self.block_uninit(g):
            return self.im.ext4_free_clusters_after_init(g)
        return self.im.descs[g].free_blocks_count

    def block_uninit(self, g: int) -> bool:
        return self.geometry.has_group_desc_csum and self.im.descs[g].block_uninit

    def read_bitmap(self, g: int) -> tuple[Sequence[int], Sequence[int]]:
        runs = self.im.ext4_read_block_bitmap(g)
        return [s for s, _ in runs], [n for _, n in runs]


class GroupRuns:
    """One group's free runs, kept sorted and maximal (adjacent runs merged)."""

    __slots__ = ("lens", "starts")

    def __init__(self, starts: Sequence[int], lens: Sequence[int]):
        self.starts = list(starts)
        self.lens = list(lens)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def free(self) -> int:
        return sum(self.lens)

    def runs(self) -> Runs:
        return list(zip(self.starts, self.lens, strict=True))

    def run_at(self, block: int) -> int:
        """Index of the run holding ``block``, or -1 when the block is in use."""
        i = bisect.bisect_right(self.starts, block) - 1
        if i >= 0 and block < self.starts[i] + self.lens[i]:
            return i
        return -1

    def first_free_at_or_after(self, block: int) -> int:
        """``mb_find_next_zero_bit``: first free block >= block, or -1."""
        i = bisect.bisect_right(self.starts, block) - 1
        if i >= 0 and block < self.starts[i] + self.lens[i]:
            return block
        i += 1
        return self.starts[i] if i < len(self.starts) else -1

    def remove(self, start: int, length: int) -> None:
        """Mark [start, start+length) used; it must lie inside one run."""
        i = self.run_at(start)
        if i < 0 or start + length > self.starts[i] + self.lens[i]:
            raise ValueError(f"blocks {start}+{length} are not free")
        s, n = self.starts[i], self.lens[i]
        left = start - s
        right = s + n - (start + length)
        if left and right:
            self.lens[i] = left
            self.starts.insert(i + 1, start + length)
            self.lens.insert(i + 1, right)
        elif left:
            self.lens[i] = left
        elif right:
            self.starts[i] = start + length
            self.lens[i] = right
        else:
            del self.starts[i]
            del self.lens[i]

    def add(self, start: int, length: int) -> tuple[bool, bool]:
        """Mark [start, start+length) free, merging with neighbours; returns whether the
        left and right neighbours were free. Raises if any block is already free."""
        i = bisect.bisect_right(self.starts, start)
        if i > 0 and self.starts[i - 1] + self.lens[i - 1] > start:
            raise ValueError(f"block {start} already free")
        if i < len(self.starts) and self.starts[i] < start + length:
            raise ValueError(f"block {self.starts[i]} already free")
        left = i > 0 and self.starts[i - 1] + self.lens[i - 1] == start
        right = i < len(self.starts) and self.starts[i] == start + length
        if left and right:
            self.lens[i - 1] += length + self.lens[i]
            del self.starts[i]
            del self.lens[i]
        elif left:
            self.lens[i - 1] += length
        elif right:
            self.starts[i] = start
            self.lens[i] += length
        else:
            self.starts.insert(i, start)
            self.lens.insert(i, length)
        return left, right
