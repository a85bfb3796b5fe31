"""Global roots (extent-tree-v2): several extent, csum and free space trees, one set per
``global_root_id`` (Linux 6.12 ``fs/btrfs/disk-io.c``: ``btrfs_global_root_id``,
``btrfs_extent_root``, ``btrfs_csum_root``, ``load_global_roots_objectid``;
``fs/btrfs/block-group.c``: ``calculate_global_root_id``; ``fs/btrfs/free-space-tree.c``:
``btrfs_free_space_root``).

Without EXTENT_TREE_V2 every lookup gives global root 0 and a block group item's
chunk_objectid is 256; with it, a new block group's id is its start in GiB (128 MiB units
on devices of at most 10 GiB) modulo the number of global roots, which the kernel takes
as the highest extent-root ROOT_ITEM offset + 1.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from model.btrfs import constants as C
from model.btrfs.items import Key
from model.linux import SZ_1G

SZ_128M = 128 << 20


def calculate_global_root_id(
    total_bytes: int, offset: int, nr_global_roots: int, extent_tree_v2: bool = True
) -> int:
    """``calculate_global_root_id()``: the id a block group starting at ``offset`` gets
    when it is created."""
    if not extent_tree_v2:
        return C.FIRST_CHUNK_TREE_OBJECTID
    div = SZ_128M if total_bytes <= 10 * SZ_1G else SZ_1G
    return (offset // div) % nr_global_roots


def nr_global_roots(extent_root_offsets: Sequence[int]) -> int:
    """``load_global_roots_objectid``: highest extent-root ROOT_ITEM offset + 1."""
    return max(extent_root_offsets, default=0) + 1


@dataclass(frozen=True, slots=True)
class BlockGroupRef:
    start: int
    length: int
    global_root_id: int


class GlobalRoots:
    """Lookups of the kernel's global-root helpers over a set of block groups."""

    def __init__(self, block_groups: Sequence[BlockGroupRef], extent_tree_v2: bool) -> None:
        self.bgs = sorted(block_groups, key=lambda b: b.start)
        self._starts = [b.start for b in self.bgs]
        self.v2 = extent_tree_v2

    def btrfs_lookup_block_group(self, bytenr: int) -> BlockGroupRef | None:
        i = bisect.bisect_right(self._starts, bytenr) - 1
        if i >= 0 and bytenr < self.bgs[i].start + self.bgs[i].length:
            return self.bgs[i]
        return None

    def btrfs_global_root_id(self, bytenr: int) -> int:
        """``btrfs_global_root_id()``: 0 without extent-tree-v2; else the id of the block
        group holding ``bytenr`` (the first block group for bytenr 0)."""
        if not self.v2:
            return 0
        bg = (
            self.btrfs_lookup_block_group(bytenr) if bytenr else (self.bgs[0] if self.bgs else None)
        )
        return bg.global_root_id if bg else 0

    def btrfs_extent_root(self, bytenr: int) -> Key:
        """The ROOT_ITEM key of the extent tree that holds ``bytenr``'s items."""
        return Key(C.EXTENT_TREE_OBJECTID, C.ROOT_ITEM_KEY, self.btrfs_global_root_id(bytenr))

    def btrfs_csum_root(self, bytenr: int) -> Key:
        return Key(C.CSUM_TREE_OBJECTID, C.ROOT_ITEM_KEY, self.btrfs_global_root_id(bytenr))

    def btrfs_free_space_root(self, bg: BlockGroupRef) -> Key:
        """``btrfs_free_space_root()``: keyed by the block group's own id under v2."""
        return Key(C.FREE_SPACE_TREE_OBJECTID, C.ROOT_ITEM_KEY, bg.global_root_id if self.v2 else 0)
