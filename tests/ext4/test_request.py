"""The request side (model/ext4/request.py) and the version quirks the VM test found.

Expected values come from the kernel source (balloc.c, extents.c, mballoc.c of Debian's 6.1
and 6.12) worked by hand, not from running the model."""

from __future__ import annotations

import pytest

from model.ext4 import constants as C
from model.ext4.freespace import Geometry, RunsGroups
from model.ext4.mballoc import AllocRequest, Mballoc
from model.ext4.request import (
    EXT_UNWRITTEN_MAX_LEN,
    NotModelled,
    ext4_alloc_file_blocks,
    ext4_can_extents_be_merged,
    ext4_inode_to_goal_block,
    ext4_mb_group_or_file,
    fallocate_new_file_request,
)

DATA_NOPA = C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_NOPREALLOC


def geo(ngroups: int = 8, log_flex: int = 4, bpg: int = 8192, bits: int = 10) -> Geometry:
    return Geometry(
        ngroups=ngroups,
        blocks_per_group=bpg,
        blocksize_bits=bits,
        first_data_block=1 if bits == 10 else 0,
        log_groups_per_flex=log_flex,
    )


def test_goal_block_flex_and_not() -> None:
    # flex_bg 16: a regular file goes to the second group of its inode's flex-bg
    g = geo(ngroups=40, log_flex=4)
    assert ext4_inode_to_goal_block(g, 0) == 1 + 8192
    assert ext4_inode_to_goal_block(g, 19) == 1 + 17 * 8192
    assert ext4_inode_to_goal_block(g, 19, regular=False) == 1 + 16 * 8192
    # flex_bg of 2 (< EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME) or none: the inode's own group
    assert ext4_inode_to_goal_block(geo(log_flex=1), 3) == 1 + 3 * 8192
    assert ext4_inode_to_goal_block(geo(log_flex=0), 3) == 1 + 3 * 8192


def test_group_or_file() -> None:
    # over mb_stream_req (16) with the file open for write: stream allocation
    assert ext4_mb_group_or_file(DATA_NOPA, 17, 0) == DATA_NOPA | C.EXT4_MB_STREAM_ALLOC
    # up to 16: the locality group
    assert ext4_mb_group_or_file(DATA_NOPA, 16, 0) == DATA_NOPA | C.EXT4_MB_HINT_GROUP_ALLOC
    # i_size counts: a 1-block write at the end of a 100-block file is a stream one
    assert ext4_mb_group_or_file(DATA_NOPA, 101, 100) & C.EXT4_MB_STREAM_ALLOC
    # a closed file whose request ends at i_size: no inode PA, NOPREALLOC instead
    flags = ext4_mb_group_or_file(C.EXT4_MB_HINT_DATA, 40, 40, open_for_write=False)
    assert flags == C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_NOPREALLOC
    # metadata and goal-only requests are left alone
    assert ext4_mb_group_or_file(0, 100, 0) == 0
    only = C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_GOAL_ONLY
    assert ext4_mb_group_or_file(only, 100, 0) == only


def test_fallocate_request() -> None:
    g = geo(ngroups=40)
    r = fallocate_new_file_request(g, 64, 0)
    assert r == AllocRequest(1 + 8192, 64, DATA_NOPA | C.EXT4_MB_STREAM_ALLOC)
    assert not r.flags & C.EXT4_MB_HINT_TRY_GOAL
    r = fallocate_new_file_request(g, 16, 0)
    assert r.flags == DATA_NOPA | C.EXT4_MB_HINT_GROUP_ALLOC
    with pytest.raises(ValueError):
        fallocate_new_file_request(g, EXT_UNWRITTEN_MAX_LEN + 1, 0)


def test_extents_merge() -> None:
    assert ext4_can_extents_be_merged((0, 100, 10), (10, 110, 5))
    assert not ext4_can_extents_be_merged((0, 100, 10), (10, 111, 5))  # physical gap
    assert not ext4_can_extents_be_merged((0, 100, 10), (11, 110, 5))  # logical gap
    # an unwritten extent holds at most 32767 blocks, a written one 32768
    assert not ext4_can_extents_be_merged((0, 0, 32760), (32760, 32760, 8))
    assert ext4_can_extents_be_merged((0, 0, 32760), (32760, 32760, 8), unwritten=False)


def _groups(g: Geometry, runs: list[list[tuple[int, int]]]) -> RunsGroups:
    return RunsGroups(g, runs)


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_alloc_file_blocks_splits_and_moves_on(kernel: str) -> None:
    """No free extent holds the request: mballoc's best found (the longest, 300 blocks in
    group 2) comes first, the loop asks for the rest from there (stream allocation from
    s_mb_last_group = 2): the next 100 blocks come from group 2's other run."""
    g = geo(ngroups=4, log_flex=0, bpg=1024)
    runs = [[], [(10, 50)], [(0, 300), (500, 200)], [(0, 20)]]
    m = Mballoc(_groups(g, runs), kernel)
    allocs, extents = ext4_alloc_file_blocks(m, 400, 0)
    base2 = 1 + 2 * 1024
    assert [(a.block, a.length) for a in allocs] == [(base2, 300), (base2 + 500, 100)]
    assert extents == [(0, base2, 300), (300, base2 + 500, 100)]


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_alloc_file_blocks_merges_touching_pieces(kernel: str) -> None:
    """Free space: the last 200 blocks of group 0 and the first 150 of group 1. A request
    of 300: no group holds it, so the last criteria's best found is taken (group 0's 200,
    the longest); the loop asks for the other 100 (stream, from group 0, which is now full):
    group 1's run serves it from its start, physically right after the first piece, so the
    two unwritten extents merge into one."""
    g = geo(ngroups=2, log_flex=0, bpg=1024)
    runs = [[(824, 200)], [(0, 150)]]
    m = Mballoc(_groups(g, runs), kernel)
    allocs, extents = ext4_alloc_file_blocks(m, 300, 0)
    assert [(a.block, a.length) for a in allocs] == [(1 + 824, 200), (1 + 1024, 100)]
    assert extents == [(0, 1 + 824, 300)]


def test_alloc_file_blocks_refuses_an_extent_tree_block() -> None:
    g = geo(ngroups=1, log_flex=0, bpg=1024)
    runs = [[(i * 20, 10) for i in range(50)]]
    with pytest.raises(NotModelled):
        ext4_alloc_file_blocks(Mballoc(_groups(g, runs), "6.1"), 60, 0)


def test_request_over_a_group_is_cut_to_a_group() -> None:
    """ext4_mb_initialize_context: len >= EXT4_CLUSTERS_PER_GROUP is cut to it."""
    g = geo(ngroups=3, log_flex=0, bpg=1024)
    runs = [[(0, 1024)], [(0, 1024)], [(0, 1023)]]
    for kernel in ("6.1", "6.12"):
        a = Mballoc(_groups(g, runs), kernel).alloc(
            AllocRequest(1, 3000, C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_TRY_GOAL)
        )
        assert a is not None and (a.block, a.length) == (1, 1024)


@pytest.mark.parametrize(
    ("kernel", "initialised"),
    [
        # 6.1 steps back AFTER taking the descriptor: group h is judged by h+1's descriptor,
        # so the BLOCK_UNINIT group 2 (judged by group 3) is initialised and group 1
        # (judged by the BLOCK_UNINIT group 2) is not
        ("6.1", {0, 2, 3}),
        # 6.12: own descriptor, and BLOCK_UNINIT groups are not skipped
        ("6.12", {0, 1, 2, 3}),
    ],
)
def test_prefetch_fini_descriptor(kernel: str, initialised: set[int]) -> None:
    g = geo(ngroups=4, log_flex=0, bpg=4096, bits=12)  # 4 KiB: one group per buddy page
    runs = [[(100, 50)], [(0, 4096)], [(0, 4096)], [(10, 10)]]
    m = Mballoc(RunsGroups(g, runs, uninit={2}), kernel)
    m.ext4_mb_prefetch_fini(0, 4)  # the 4 groups before group 0, wrapping: 3, 2, 1, 0
    assert {i for i, gi in enumerate(m.groups) if not gi.need_init} == initialised


def test_first_allocation_clears_block_uninit() -> None:
    g = geo(ngroups=2, log_flex=0, bpg=1024)
    m = Mballoc(RunsGroups(g, [[(0, 1024)], [(0, 1024)]], uninit={1}), "6.1")
    a = m.alloc(AllocRequest(1 + 1024, 8, C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_TRY_GOAL))
    assert a is not None and a.group == 1
    assert not m.a_uninit[1] and m.desc_free[1] == 1016
    m.free(a.block, 8)
    assert m.desc_free[1] == 1024
