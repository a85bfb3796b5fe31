"""What mballoc is asked for: the goal and hint flags of a data allocation.

Held beside ``fs/ext4/balloc.c`` (``ext4_inode_to_goal_block``), ``fs/ext4/extents.c``
(``ext4_alloc_file_blocks``, ``ext4_ext_find_goal``, ``ext4_ext_map_blocks``) and
``fs/ext4/mballoc.c`` (``ext4_mb_group_or_file``) of Debian's 6.1 and 6.12, which agree on
all of it. The path of ``fallocate(fd, 0, 0, len)`` on a new, empty regular file:

1. ``ext4_alloc_file_blocks``: a request that fits one unwritten extent
   (``len <= EXT_UNWRITTEN_MAX_LEN``) gets ``EXT4_GET_BLOCKS_NO_NORMALIZE``; one
   ``ext4_map_blocks`` call maps it all. ``i_size`` is raised only after the call.
2. ``ext4_ext_map_blocks``: ``ar.flags = EXT4_MB_HINT_DATA`` (regular file), plus
   ``EXT4_MB_HINT_NOPREALLOC`` for NO_NORMALIZE; never TRY_GOAL. The goal,
   ``ext4_ext_find_goal``, is ``ext4_inode_to_goal_block`` for a file with no extents.
3. ``ext4_mb_initialize_context`` → ``ext4_mb_group_or_file``: the request's logical end
   against ``i_size`` (0 here) and ``mb_stream_req``: longer than ``mb_stream_req`` blocks
   → ``EXT4_MB_STREAM_ALLOC`` (the inode is open for write, so inode preallocation stays
   eligible), else the per-CPU locality group (``EXT4_MB_HINT_GROUP_ALLOC``).
4. ``ext4_mb_normalize_request`` returns at NOPREALLOC before looking at GROUP_ALLOC, and on
   a fresh mount there is no preallocation to use, so ``ext4_mb_regular_allocator`` runs
   on the request as is: without TRY_GOAL ``ext4_mb_find_by_goal`` does nothing, and a
   STREAM_ALLOC request starts its scan at ``s_mb_last_group`` (0 after mount), not at the
   goal; a GROUP_ALLOC one starts at the goal's group.
5. If mballoc gives fewer blocks than asked (no free extent long enough), the loop in
   ``ext4_alloc_file_blocks`` maps the rest with another request: logical start and
   ``i_size`` moved on, goal the block after the last extent (``ext4_ext_find_goal``), and
   the new unwritten extent merged with the previous one when they touch
   (``ext4_can_extents_be_merged``). :func:`ext4_alloc_file_blocks` follows that loop for
   as long as the extents fit in the inode (4): a fifth would need an extent-tree block,
   whose allocation is not modelled.
"""

from __future__ import annotations

from model.ext4 import constants as C
from model.ext4.freespace import Geometry
from model.ext4.mballoc import Allocation, AllocRequest, Mballoc

EXT_INIT_MAX_LEN = 1 << 15  # ext4_extents.h
EXT_UNWRITTEN_MAX_LEN = EXT_INIT_MAX_LEN - 1
EXT4_IN_INODE_EXTENTS = 4  # (sizeof(i_block) - sizeof(ext4_extent_header)) / sizeof(ext4_extent)


def ext4_inode_to_goal_block(geo: Geometry, inode_group: int, regular: bool = True) -> int:
    """The goal of a file with no blocks yet, on a ``delalloc`` mount (the default; without
    delalloc the kernel adds a colour from the caller's pid, not modelled): the first block
    of the inode's group or, with flex_bg of at least ``EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME``
    groups, of its flex-bg's first group (+1 for a regular file)."""
    flex_size = geo.flex_size if geo.log_groups_per_flex else 1
    block_group = inode_group
    if flex_size >= C.EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME:
        block_group &= ~(flex_size - 1)
        if regular:
            block_group += 1
    return geo.group_first_block_no(block_group)


def ext4_mb_group_or_file(
    flags: int,
    logical_end: int,
    isize_blocks: int,
    open_for_write: bool = True,
    fs_busy: bool = False,
    stream_request: int = C.MB_DEFAULT_STREAM_THRESHOLD,
    group_prealloc: int = C.MB_DEFAULT_GROUP_PREALLOC,
) -> int:
    """The flags after ``ext4_mb_group_or_file`` (sizes in blocks, no bigalloc)."""
    if not flags & C.EXT4_MB_HINT_DATA or flags & C.EXT4_MB_HINT_GOAL_ONLY:
        return flags
    group_pa_eligible = group_prealloc > 0
    inode_pa_eligible = True
    size = logical_end
    if size == isize_blocks and not fs_busy and not open_for_write:
        inode_pa_eligible = False
    size = max(size, isize_blocks)
    if size > stream_request:
        group_pa_eligible = False
    if not group_pa_eligible:
        if inode_pa_eligible:
            return flags | C.EXT4_MB_STREAM_ALLOC
        return flags | C.EXT4_MB_HINT_NOPREALLOC
    return flags | C.EXT4_MB_HINT_GROUP_ALLOC


def fallocate_new_file_request(
    geo: Geometry,
    blocks: int,
    inode_group: int,
    stream_request: int = C.MB_DEFAULT_STREAM_THRESHOLD,
) -> AllocRequest:
    """The request ``fallocate(fd, 0, 0, blocks * blocksize)`` on a new empty regular file
    makes of mballoc (see the module docstring)."""
    if not 0 < blocks <= EXT_UNWRITTEN_MAX_LEN:
        raise ValueError(f"{blocks} blocks: one request covers 1..{EXT_UNWRITTEN_MAX_LEN}")
    flags = C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_NOPREALLOC  # EXT4_GET_BLOCKS_NO_NORMALIZE
    flags = ext4_mb_group_or_file(flags, blocks, 0, stream_request=stream_request)
    return AllocRequest(goal=ext4_inode_to_goal_block(geo, inode_group), length=blocks, flags=flags)


class NotModelled(Exception):
    """The kernel would go down a path this model does not follow."""


def ext4_can_extents_be_merged(
    ex1: tuple[int, int, int], ex2: tuple[int, int, int], unwritten: bool = True
) -> bool:
    """Two extents (logical, physical, length) of the same kind merge when they touch both
    logically and physically and the sum fits one extent."""
    l1, p1, n1 = ex1
    l2, p2, n2 = ex2
    if l1 + n1 != l2:
        return False
    if n1 + n2 > EXT_INIT_MAX_LEN:
        return False
    if unwritten and n1 + n2 > EXT_UNWRITTEN_MAX_LEN:
        return False
    return p1 + n1 == p2


def ext4_alloc_file_blocks(
    alloc: Mballoc,
    blocks: int,
    inode_group: int,
    stream_request: int = C.MB_DEFAULT_STREAM_THRESHOLD,
) -> tuple[list[Allocation], list[tuple[int, int, int]]]:
    """``fallocate(fd, 0, 0, blocks * blocksize)`` on a new empty regular file, served by
    ``alloc``: the allocations mballoc makes, in order, and the file's extents afterwards
    (logical, physical, length). Raises :class:`NotModelled` when the kernel would
    normalise the request (over ``EXT_UNWRITTEN_MAX_LEN`` blocks) or need an extent-tree
    block, and ``RuntimeError`` on ENOSPC."""
    if not 0 < blocks <= EXT_UNWRITTEN_MAX_LEN:
        raise NotModelled(f"{blocks} blocks: normalised requests are not modelled")
    geo = alloc.geo
    goal = ext4_inode_to_goal_block(geo, inode_group)
    allocs: list[Allocation] = []
    extents: list[tuple[int, int, int]] = []
    lblk = 0
    while lblk < blocks:
        length = blocks - lblk
        flags = C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_NOPREALLOC
        # ext4_mb_initialize_context: ac_o_ex covers [lblk, lblk + len); i_size is at lblk
        end = lblk + min(length, geo.blocks_per_group)
        flags = ext4_mb_group_or_file(flags, end, lblk, stream_request=stream_request)
        a = alloc.alloc(AllocRequest(goal=goal, length=length, flags=flags))
        if a is None:
            raise RuntimeError("ENOSPC")
        allocs.append(a)
        ex = (lblk, a.block, a.length)
        if extents and ext4_can_extents_be_merged(extents[-1], ex):
            l0, p0, n0 = extents[-1]
            extents[-1] = (l0, p0, n0 + a.length)
        else:
            if len(extents) == EXT4_IN_INODE_EXTENTS:
                raise NotModelled("a fifth extent needs an extent-tree block")
            extents.append(ex)
        lblk += a.length
        goal = a.block + a.length  # ext4_ext_find_goal: after the last extent
    return allocs, extents
