"""The allocator study: writes served by one allocator over one free-space state.

A write of N bytes is what delayed-allocation writeback asks of mballoc: requests of at most
``MAX_WRITEPAGES_EXTENT_LEN`` (2048) blocks (``mpage_map_and_submit_extent``), each for what
is still unmapped, the goal of the first being the file's goal block
(``ext4_inode_to_goal_block``: with flex_bg >= 4 a regular file starts in the second group of
its inode's flex-bg; the inode sits near the root directory, flex-bg 0) and of the next the
block after the last extent (``ext4_ext_find_goal``). Hints as the kernel sets them: every
request is DATA; with the buddy allocator a file over ``mb_stream_req`` blocks is a stream
allocation, and requests after the first carry TRY_GOAL (set by
``ext4_mb_normalize_request`` when merging with the left extent); the free-space tree
allocator forces NOPREALLOC, so normalisation, and with it TRY_GOAL, never happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from model.ext4 import constants as C
from model.ext4.costs import AllocCosts, CostModel
from model.ext4.freespace import Geometry
from model.ext4.frsp import FrspAllocator
from model.ext4.mballoc import Allocation, AllocRequest, Mballoc


class Allocator(Protocol):
    costs: AllocCosts

    def alloc(self, req: AllocRequest) -> Allocation | None: ...

    @property
    def memory_bytes(self) -> int: ...


@dataclass
class WriteResult:
    nbytes: int
    blocks: int
    allocations: int
    extents: list[tuple[int, int]]  # (block, length)
    costs: AllocCosts
    seconds: float
    memory_bytes: int
    trees_cached: int
    groups_initialised: int
    criteria: dict[int, int] = field(default_factory=dict)


def file_goal_group(geo: Geometry, inode_group: int = 0) -> int:
    """``ext4_inode_to_goal_block`` for a regular file (delalloc: colour not used)."""
    flex = geo.flex_size if geo.log_groups_per_flex else 1
    g = inode_group
    if flex >= C.EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME:
        g = (g & ~(flex - 1)) + 1
    return min(g, geo.ngroups - 1)


def write_file(
    alloc: Allocator, geo: Geometry, nbytes: int, cost: CostModel, inode_group: int = 0
) -> WriteResult:
    blocks = (nbytes + geo.blocksize - 1) // geo.blocksize
    remaining = blocks
    goal = geo.group_first_block_no(file_goal_group(geo, inode_group))
    frsp = isinstance(alloc, FrspAllocator)
    before = alloc.costs.copy()
    extents: list[tuple[int, int]] = []
    criteria: dict[int, int] = {}
    first = True
    while remaining:
        length = min(remaining, C.MAX_WRITEPAGES_EXTENT_LEN)
        flags = C.EXT4_MB_HINT_DATA
        if not frsp:
            if blocks > C.MB_DEFAULT_STREAM_THRESHOLD:
                flags |= C.EXT4_MB_STREAM_ALLOC
            if not first:
                flags |= C.EXT4_MB_HINT_TRY_GOAL
        a = alloc.alloc(AllocRequest(goal=goal, length=length, flags=flags))
        if a is None:
            raise RuntimeError("ENOSPC")
        extents.append((a.block, a.length))
        criteria[a.criteria] = criteria.get(a.criteria, 0) + 1
        remaining -= a.length
        goal = a.block + a.length
        first = False
    spent = alloc.costs.minus(before)
    return WriteResult(
        nbytes=nbytes,
        blocks=blocks,
        allocations=len(extents),
        extents=extents,
        costs=spent,
        seconds=cost.seconds(spent),
        memory_bytes=alloc.memory_bytes,
        trees_cached=alloc.trees_cached if isinstance(alloc, FrspAllocator) else 0,
        groups_initialised=alloc.groups_initialised if isinstance(alloc, Mballoc) else 0,
        criteria=criteria,
    )
