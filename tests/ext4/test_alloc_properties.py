"""Property tests (hypothesis) for the allocators over random free-space states: every
allocator hands out only free blocks, never twice; freed blocks merge back; the free-space
trees always equal the bitmap view; the memory limit holds."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.ext4 import constants as C
from model.ext4.freespace import Geometry, RunsGroups
from model.ext4.frsp import FrspAllocator
from model.ext4.mballoc import AllocRequest, Mballoc

BPG = 1024  # small groups: 1 KiB blocks hold 8192 bits, only the first 1024 are used


@st.composite
def states(draw: st.DrawFn) -> tuple[Geometry, list[list[tuple[int, int]]]]:
    log_flex = draw(st.sampled_from([1, 2, 3]))
    ngroups = draw(st.integers(min_value=1 << log_flex, max_value=24))
    geo = Geometry(
        ngroups=ngroups,
        blocks_per_group=BPG,
        blocksize_bits=10,
        first_data_block=1,
        log_groups_per_flex=log_flex,
    )
    runs = []
    for g in range(ngroups):
        size = geo.group_blocks(g)
        cuts = sorted(draw(st.lists(st.integers(0, size), max_size=30)))
        pts = sorted(set(cuts))
        r = []
        free = draw(st.booleans())
        prev = 0
        for p in [*pts, size]:
            if free and p > prev:
                r.append((prev, p - prev))
            free = not free
            prev = p
        runs.append(r)
    return geo, runs


def _bitmap(geo: Geometry, runs: list[list[tuple[int, int]]]) -> set[int]:
    out = set()
    for g, rr in enumerate(runs):
        base = geo.group_first_block_no(g)
        for s, n in rr:
            out.update(range(base + s, base + s + n))
    return out


requests = st.lists(
    st.tuples(st.integers(0, 1 << 20), st.integers(1, 600), st.sampled_from([0, 1, 2])),
    min_size=1,
    max_size=25,
)

FLAGS = [
    C.EXT4_MB_HINT_DATA,
    C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_TRY_GOAL | C.EXT4_MB_STREAM_ALLOC,
    0,
]


def _allocators(src: RunsGroups, mem_limit: int = 0) -> list[object]:
    out: list[object] = []
    for k in ("6.1", "6.12"):
        for opt in (False, True):
            out.append(Mballoc(src, k, optimize_scan=opt))
    for lvl in range(4):
        out.append(FrspAllocator(src, lvl, mem_limit=mem_limit))
    return out


def _check_frsp_trees(a: FrspAllocator, free: set[int]) -> None:
    geo = a.geo
    for t in a.trees:
        if not t.loaded:
            continue
        for g, rr in a.tree_runs(t).items():
            base = geo.group_first_block_no(g)
            got = {b for s, n in rr for b in range(base + s, base + s + n)}
            inside = {b for b in free if base <= b < base + geo.blocks_per_group}
            assert got == inside, (t.index, g)
        # nodes never merge across groups, and are maximal inside a group
        nodes = t.nodes()
        for (o1, n1), (o2, _n2) in itertools.pairwise(nodes):
            assert o1 + n1 <= o2
            if o1 + n1 == o2:
                assert o1 // geo.blocks_per_group != o2 // geo.blocks_per_group


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=states(), reqs=requests)
def test_allocators_hand_out_free_blocks_once_and_frees_merge(state, reqs) -> None:  # type: ignore[no-untyped-def]
    geo, runs = state
    src = RunsGroups(geo, runs)
    initial = _bitmap(geo, runs)
    for a in _allocators(src):
        free = set(initial)
        got: list[tuple[int, int]] = []
        for goal, length, fl in reqs:
            r = a.alloc(
                AllocRequest(
                    goal=goal % (geo.total_blocks or 1),
                    length=length,  # type: ignore[attr-defined]
                    flags=FLAGS[fl],
                )
            )
            if r is None:
                # ENOSPC only when nothing at all is free
                assert not free
                continue
            assert 1 <= r.length <= length
            blocks = set(range(r.block, r.block + r.length))
            assert blocks <= free, (type(a).__name__, r)
            assert r.start + r.length <= geo.blocks_per_group
            free -= blocks
            got.append((r.block, r.length))
        if isinstance(a, Mballoc):
            for g in a.loaded_runs():
                a.check_buddy(g)
                base = geo.group_first_block_no(g)
                view = {base + s + i for s, n in a.groups[g].runs.runs() for i in range(n)}  # type: ignore[union-attr]
                assert view == {b for b in free if base <= b < base + geo.blocks_per_group}
        else:
            assert isinstance(a, FrspAllocator)
            _check_frsp_trees(a, free)
        # free everything back: the state returns to the initial one
        for blk, n in reversed(got):
            a.free(blk, n)  # type: ignore[attr-defined]
            free |= set(range(blk, blk + n))
        assert free == initial
        if isinstance(a, Mballoc):
            for g, rr in a.loaded_runs().items():
                a.check_buddy(g)
                assert rr == sorted(runs[g]), g
        else:
            assert isinstance(a, FrspAllocator)
            _check_frsp_trees(a, free)
            for t in a.trees:
                if t.loaded:
                    for g, rr in a.tree_runs(t).items():
                        assert rr == sorted(runs[g])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=states(), reqs=requests, trees_allowed=st.integers(1, 3))
def test_memory_limit_holds(state, reqs, trees_allowed) -> None:  # type: ignore[no-untyped-def]
    """With a limit, and every access inside one EXT4_MB_FRSP_ACTIVE_THRESHOLD_JIFFIES
    window (no clock: all at jiffy 0), nodes held after each allocation never exceed the
    limit by more than one worst-case tree (the tree being processed cannot be evicted), the
    peak by two, and evicted trees keep their meta-tree entry. (With a clock, reloaded cold
    trees can escape both LRU lists: see the next test.)"""
    geo, runs = state
    src = RunsGroups(geo, runs)
    worst_tree = C.FRSP_NODE_SIZE * geo.flex_size * (geo.blocks_per_group // 2 + 1)
    limit = trees_allowed * worst_tree // 4
    for lvl in range(4):
        a = FrspAllocator(src, lvl, mem_limit=limit)
        assert a.mem_limit == limit
        for goal, length, fl in reqs:
            in_meta_before = {t.index for t in a.trees if t.in_meta}
            a.alloc(AllocRequest(goal=goal % geo.total_blocks, length=length, flags=FLAGS[fl]))
            assert a.memory_bytes <= limit + worst_tree
            assert a.peak_fragments * C.FRSP_NODE_SIZE <= limit + 2 * worst_tree
            assert in_meta_before <= {t.index for t in a.trees if t.in_meta}
            if a.crunch:
                # over the limit only while every loaded tree is active or referenced
                assert all(a.trees[i].ref or not a.trees[i].loaded for i in a.inactive)


def test_default_memory_limit_is_buddy_size_with_one_tree_floor() -> None:
    """Patch 7: default = ngroups << (blocksize_bits + 1), floor = 56 x flex x bpg / 2."""
    geo = Geometry(ngroups=491520, blocks_per_group=32768, blocksize_bits=12, log_groups_per_flex=4)

    class Empty:
        geometry = geo

        def desc_free(self, g: int) -> int:
            return 0

        def block_uninit(self, g: int) -> bool:
            return False

        def read_bitmap(self, g: int) -> tuple[list[int], list[int]]:
            return [], []

    a = FrspAllocator(Empty(), 1)
    assert a.mem_limit == 491520 << 13 == 4_026_531_840
    small = Geometry(ngroups=32, blocks_per_group=32768, blocksize_bits=12, log_groups_per_flex=4)

    class Small(Empty):
        geometry = small

    b = FrspAllocator(Small(), 1)
    assert b.mem_limit == 56 * 16 * 16384 == 14_680_064
    assert C.FRSP_NODE_SIZE == 56


def test_rfc_lru_keeps_reloaded_cold_trees_off_both_lists() -> None:
    """A finding, not a wish: in patch 7 an evicted tree that is loaded again more than
    EXT4_MB_FRSP_ACTIVE_THRESHOLD_JIFFIES after its last access, while the active half is
    over its share, is put on neither list (ext4_mb_frsp_maintain_lru returns early and
    ext4_frsp_evict only looks at the inactive list), so it can never be evicted and the
    memory limit stops holding. Arithmetic: 8 trees of 2 groups x 512 one-block runs."""
    geo = Geometry(
        ngroups=16,
        blocks_per_group=BPG,
        blocksize_bits=10,
        first_data_block=1,
        log_groups_per_flex=1,
    )
    runs = [[(2 * i, 1) for i in range(BPG // 2)] for _ in range(16)]
    src = RunsGroups(geo, runs)
    now = [0.0]
    tree_nodes = 2 * (BPG // 2)
    limit = 2 * tree_nodes * C.FRSP_NODE_SIZE  # room for two trees, one active
    a = FrspAllocator(src, 0, mem_limit=limit, clock=lambda _c: now[0], hz=250)
    for _ in range(2):
        for t in range(8):
            now[0] += 1.0  # 250 jiffies between accesses
            tree = a.ext4_mb_load_allocator(t * 2)
            a.ext4_mb_unload_allocator(tree)
    leaked = [t.index for t in a.trees if t.loaded and not t.active and t.list_node is None]
    assert leaked, "expected loaded trees on no list"
    assert a.memory_bytes > limit + tree_nodes * C.FRSP_NODE_SIZE
    assert a.costs.evictions >= 6
