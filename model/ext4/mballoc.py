"""mballoc's regular allocator (the buddy allocator) as in Linux 6.1 and 6.12.

Held side by side with ``fs/ext4/mballoc.c`` of Debian's linux-source-6.1 and -6.12; the
function names are the kernel's. The buddy of a group is kept as its free runs: the buddy
bitmaps of ``ext4_mb_generate_buddy`` are the greedy split of every run into maximal aligned
power-of-two chunks (``ext4_mb_mark_free_simple``, orders 0..blocksize_bits+1), and
``mb_mark_used``/``mb_free_blocks`` keep that canonical split, so chunks and
``bb_counters`` are derived from the runs.

Not modelled: request normalisation and preallocation (``ext4_mb_normalize_request``,
inode/locality-group PAs), RAID stripes (``s_stripe`` = 0), concurrency (group locks are
never contended, so 6.12's try-lock skips never fire), fast-commit replay.

Versions differ in (an input, ``kernel="6.1"|"6.12"``): criteria (6.1: CR0..CR3; 6.12:
CR_POWER2_ALIGNED, CR_GOAL_LEN_FAST, CR_BEST_AVAIL_LEN, CR_GOAL_LEN_SLOW, CR_ANY_FREE), the
optimised scan (6.1: lists in insertion order, ``ext4_mb_choose_next_group_cr0/cr1``; Debian
6.12: xarrays walked in group order from the goal, ``ext4_mb_scan_groups_p2_aligned``,
``_goal_fast``, ``_best_avail``), 6.12's complex scan skipping short runs at cheap criteria,
``ext4_mb_check_limits`` (6.1 re-checks the best extent), prefetch of BLOCK_UNINIT groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sortedcontainers import SortedList

from model.ext4 import constants as C
from model.ext4.costs import AllocCosts
from model.ext4.freespace import Geometry, GroupRuns, GroupSource
from model.linux import PAGE_SIZE


def fls(x: int) -> int:
    """Linux ``fls``: 1-based index of the most significant set bit (0 for 0)."""
    return x.bit_length()


def ffs(x: int) -> int:
    """Linux ``ffs``: 1-based index of the least significant set bit (0 for 0)."""
    return (x & -x).bit_length()


def ext4_mb_mark_free_simple(first: int, length: int, blocksize_bits: int) -> list[tuple[int, int]]:
    """The chunks (start, order) a free run is split into (``ext4_mb_mark_free_simple``)."""
    border = 2 << blocksize_bits
    out = []
    while length > 0:
        mx = ffs(first | border) - 1
        mn = fls(length) - 1
        o = min(mx, mn)
        out.append((first, o))
        first += 1 << o
        length -= 1 << o
    return out


@dataclass(frozen=True)
class AllocRequest:
    """An ``ext4_allocation_request``: goal block (absolute), length, hint flags."""

    goal: int
    length: int
    flags: int = C.EXT4_MB_HINT_DATA | C.EXT4_MB_HINT_TRY_GOAL | C.EXT4_MB_STREAM_ALLOC


@dataclass
class Allocation:
    group: int
    start: int  # group-relative
    length: int
    block: int  # absolute
    criteria: int  # ac_criteria when found (-1: by goal)
    found: int  # ac_found
    costs: AllocCosts


@dataclass
class FreeExtent:
    group: int = 0
    start: int = 0
    length: int = 0


@dataclass
class AllocationContext:
    o_len: int
    g: FreeExtent
    flags: int
    b: FreeExtent = field(default_factory=FreeExtent)
    status: int = C.AC_STATUS_CONTINUE
    found: int = 0
    criteria: int = 0
    order2: int = 0
    groups_scanned: int = 0
    groups_linear_remaining: int = 0
    orig_goal_len: int = 0
    prefetch_grp: int = 0
    prefetch_nr: int = 0
    prefetch_ios: int = 0
    by_goal: bool = False


class GroupInfo:
    """``struct ext4_group_info`` (the fields the allocator reads)."""

    __slots__ = (
        "bb_avg_fragment_size_order",
        "bb_counters",
        "bb_first_free",
        "bb_fragments",
        "bb_free",
        "bb_largest_free_order",
        "need_init",
        "runs",
    )

    def __init__(self, bb_free: int, norders: int):
        self.bb_free = bb_free
        self.bb_fragments = 0
        self.bb_first_free = 0
        self.bb_largest_free_order = -1
        self.bb_avg_fragment_size_order = -1
        self.bb_counters = [0] * norders
        self.need_init = True
        self.runs: GroupRuns | None = None


class Mballoc:
    """The regular allocator over one free-space state.

    ``optimize_scan`` defaults as ``__ext4_fill_super`` sets it: on with at least
    ``MB_DEFAULT_LINEAR_SCAN_THRESHOLD`` (16) groups. ``rotational`` sets
    ``s_mb_max_linear_groups`` (``ext4_mb_init``: 0 on non-rotational devices, else 4).
    """

    def __init__(
        self,
        src: GroupSource,
        kernel: str = "6.12",
        optimize_scan: bool | None = None,
        rotational: bool = False,
        prefetch: bool = True,
        fast_skip: bool = True,
    ):
        self.fast_skip = fast_skip
        if kernel not in ("6.1", "6.12"):
            raise ValueError(f"kernel {kernel!r}: 6.1 or 6.12")
        self.src = src
        self.geo: Geometry = src.geometry
        self.kernel = kernel
        self.v612 = kernel == "6.12"
        g = self.geo
        self.ngroups = g.ngroups
        self.norders = g.mb_num_orders
        if optimize_scan is None:
            optimize_scan = g.ngroups >= C.MB_DEFAULT_LINEAR_SCAN_THRESHOLD
        self.optimize_scan = optimize_scan
        self.max_linear_groups = C.MB_DEFAULT_LINEAR_LIMIT if rotational else 0
        self.prefetch_enabled = prefetch
        self.flex_size = 1 << g.log_groups_per_flex  # ext4_flex_bg_size
        self.groups = [GroupInfo(src.desc_free(i), self.norders) for i in range(g.ngroups)]
        # ext4_mb_init_backend: prefetch sizes
        if g.log_groups_per_flex:
            blk_max_segment = 65536
            pf = min(1 << g.log_groups_per_flex, blk_max_segment >> (g.blocksize_bits - 9)) * 8
        else:
            pf = 32
        self.s_mb_prefetch = min(pf, g.ngroups)
        self.s_mb_prefetch_limit = min(self.s_mb_prefetch * 4, g.ngroups)
        self.s_mb_last_group = 0
        self.s_mb_last_start = 0
        # optimise-scan structures
        if self.v612:
            self.lfo_x: list[SortedList] = [SortedList() for _ in range(self.norders)]
            self.afs_x: list[SortedList] = [SortedList() for _ in range(self.norders)]
        else:
            self.lfo_l: list[dict[int, None]] = [{} for _ in range(self.norders)]
            self.afs_l: list[dict[int, None]] = [{} for _ in range(self.norders)]
        self.bitmap_cached: set[int] = set()
        self.read_attempted = np.zeros(g.ngroups, dtype=bool)  # EXT4_GROUP_INFO_BBITMAP_READ
        # mirrors of the per-group fields for the vectorised linear skip (see _next_candidate)
        n = g.ngroups
        self.a_free = np.array([gi.bb_free for gi in self.groups], dtype=np.int64)
        self.a_frag = np.zeros(n, dtype=np.int64)
        self.a_lfo = np.full(n, -1, dtype=np.int64)
        self.a_need_init = np.ones(n, dtype=bool)
        # the group descriptors as the allocator finds them: free count and BLOCK_UNINIT
        # (honoured) at mount, then as ext4_mb_mark_diskspace_used and ext4_free_blocks
        # leave them (the first allocation from a group clears its BLOCK_UNINIT)
        self.a_uninit = np.array([src.block_uninit(i) for i in range(n)], dtype=bool)
        self.desc_free = [src.desc_free(i) for i in range(n)]
        idx = np.arange(n)
        lg = g.log_groups_per_flex
        self.a_flex_first = (idx & ((1 << lg) - 1)) == 0 if lg else np.zeros(n, dtype=bool)
        self.a_flex_mod0 = (idx % self.flex_size) == 0
        self.costs = AllocCosts()
        self.groups_initialised = 0

    # ------------------------------------------------------------------ memory
    @property
    def memory_bytes(self) -> int:
        """Buddy cache held: one bitmap block and one buddy block per initialised group."""
        return self.groups_initialised * 2 * self.geo.blocksize

    # ------------------------------------------------------------------ buddy upkeep
    def _counters_add(self, grp: GroupInfo, start: int, length: int, sign: int) -> None:
        for _, o in ext4_mb_mark_free_simple(start, length, self.geo.blocksize_bits):
            grp.bb_counters[o] += sign

    def _sync(self, g: int) -> None:
        grp = self.groups[g]
        self.a_free[g] = grp.bb_free
        self.a_frag[g] = grp.bb_fragments
        self.a_lfo[g] = grp.bb_largest_free_order
        self.a_need_init[g] = grp.need_init

    def mb_set_largest_free_order(self, g: int) -> None:
        grp = self.groups[g]
        old = grp.bb_largest_free_order
        new = -1
        for o in range(self.norders - 1, -1, -1):
            if grp.bb_counters[o] > 0:
                new = o
                break
        if new == old:
            return
        if old >= 0:
            if self.v612:
                self.lfo_x[old].discard(g)
            else:
                self.lfo_l[old].pop(g, None)
        grp.bb_largest_free_order = new
        if self.optimize_scan and new >= 0 and grp.bb_free:
            if self.v612:
                self.lfo_x[new].add(g)
            else:
                self.lfo_l[new][g] = None

    def mb_avg_fragment_size_order(self, length: int) -> int:
        order = fls(length) - 2
        if order < 0:
            return 0
        if order == self.norders:
            order -= 1
        if self.v612 and order > self.norders:
            order = self.norders - 1
        return order

    def mb_update_avg_fragment_size(self, g: int) -> None:
        if not self.optimize_scan:
            return
        grp = self.groups[g]
        old = grp.bb_avg_fragment_size_order
        new = (
            -1
            if grp.bb_fragments == 0
            else self.mb_avg_fragment_size_order(grp.bb_free // grp.bb_fragments)
        )
        if new == old:
            return
        if old >= 0:
            if self.v612:
                self.afs_x[old].discard(g)
            else:
                self.afs_l[old].pop(g, None)
        grp.bb_avg_fragment_size_order = new
        if new >= 0:
            if self.v612:
                self.afs_x[new].add(g)
            else:
                self.afs_l[new][g] = None

    def ext4_mb_generate_buddy(self, g: int) -> None:
        grp = self.groups[g]
        starts, lens = self.src.read_bitmap(g)
        runs = GroupRuns(starts, lens)
        grp.runs = runs
        grp.bb_counters = [0] * self.norders
        for s, n in zip(runs.starts, runs.lens, strict=True):
            self._counters_add(grp, s, n, 1)
        grp.bb_fragments = len(runs)
        grp.bb_first_free = runs.starts[0] if len(runs) else self.geo.blocksize * 8
        free = runs.free
        if free != grp.bb_free:
            # "block bitmap and bg descriptor inconsistent": the bitmap wins
            grp.bb_free = free
        self.mb_set_largest_free_order(g)
        self.mb_update_avg_fragment_size(g)
        grp.need_init = False
        self.groups_initialised += 1
        self.costs.buddies_built += 1
        self._sync(g)

    def _read_bitmap_io(self, g: int) -> None:
        """``ext4_read_block_bitmap_nowait`` + wait, as an I/O count."""
        if self.a_uninit[g]:
            self.costs.bitmaps_synthesised += 1
        elif g not in self.bitmap_cached:
            self.costs.bitmaps_read += 1
        self.bitmap_cached.add(g)

    def ext4_mb_init_cache(self, first: int, gpp: int) -> None:
        """``ext4_mb_init_cache``: the groups of one buddy-cache page (``groups_per_page``
        = PAGE_SIZE / blocksize / 2, at least 1) that still need it: bitmap read (or
        synthesised), copied, buddy generated."""
        for h in range(first, min(first + gpp, self.ngroups)):
            if self.groups[h].need_init:
                self._read_bitmap_io(h)
                self.ext4_mb_generate_buddy(h)

    def ext4_mb_init_group(self, g: int) -> None:
        """``ext4_mb_init_group``: initialise the page holding group ``g``."""
        gpp = max(1, (PAGE_SIZE >> self.geo.blocksize_bits) >> 1)
        self.ext4_mb_init_cache(g - g % gpp, gpp)

    def ext4_mb_load_buddy(self, g: int) -> GroupInfo:
        if self.groups[g].need_init:
            self.ext4_mb_init_group(g)
        return self.groups[g]

    # ------------------------------------------------------------------ buddy queries
    def _chunk_walk(self, runs: GroupRuns, i: int) -> list[tuple[int, int]]:
        return ext4_mb_mark_free_simple(runs.starts[i], runs.lens[i], self.geo.blocksize_bits)

    def mb_find_extent(self, g: int, block: int, needed: int) -> FreeExtent:
        """``mb_find_extent``: from ``block``, the chunk holding it and the following chunks
        of the same run until ``needed`` is covered (or the run or bitmap ends)."""
        runs = self.groups[g].runs
        assert runs is not None
        i = runs.run_at(block)
        if i < 0:
            return FreeExtent(0, 0, 0)
        end = runs.starts[i] + runs.lens[i]
        maxbits = self.geo.blocksize * 8
        fe_len = 0
        for cs, o in self._chunk_walk(runs, i):
            ce = cs + (1 << o)
            if ce <= block:
                continue
            if fe_len == 0:
                fe_len = ce - block
            else:
                fe_len += 1 << o
            if needed <= fe_len or ce >= maxbits or ce >= end:
                break
        return FreeExtent(g, block, fe_len)

    def mb_mark_used(self, g: int, ex: FreeExtent) -> None:
        grp = self.groups[g]
        runs = grp.runs
        assert runs is not None
        start, length = ex.start, ex.length
        grp.bb_free -= length
        if grp.bb_first_free == start:
            grp.bb_first_free += length
        mlen = start != 0 and runs.run_at(start - 1) >= 0
        mx = start + length < self.geo.blocksize * 8 and runs.run_at(start + length) >= 0
        if mlen and mx:
            grp.bb_fragments += 1
        elif not mlen and not mx:
            grp.bb_fragments -= 1
        i = runs.run_at(start)
        s, n = runs.starts[i], runs.lens[i]
        self._counters_add(grp, s, n, -1)
        runs.remove(start, length)
        if start > s:
            self._counters_add(grp, s, start - s, 1)
        if start + length < s + n:
            self._counters_add(grp, start + length, s + n - start - length, 1)
        self.mb_set_largest_free_order(g)
        self.mb_update_avg_fragment_size(g)
        self._sync(g)

    def mb_free_blocks(self, g: int, first: int, count: int) -> None:
        grp = self.ext4_mb_load_buddy(g)
        runs = grp.runs
        assert runs is not None
        li = runs.run_at(first - 1) if first else -1
        ri = runs.run_at(first + count)
        if li >= 0:
            self._counters_add(grp, runs.starts[li], runs.lens[li], -1)
        if ri >= 0:
            self._counters_add(grp, runs.starts[ri], runs.lens[ri], -1)
        left, right = runs.add(first, count)
        grp.bb_free += count
        grp.bb_first_free = min(grp.bb_first_free, first)
        if left and right:
            grp.bb_fragments -= 1
        elif not left and not right:
            grp.bb_fragments += 1
        i = runs.run_at(first)
        self._counters_add(grp, runs.starts[i], runs.lens[i], 1)
        self.mb_set_largest_free_order(g)
        self.mb_update_avg_fragment_size(g)
        self._sync(g)

    def free(self, block: int, count: int) -> None:
        """``ext4_free_blocks`` of blocks inside one group."""
        g, off = divmod(block - self.geo.first_data_block, self.geo.blocks_per_group)
        self.mb_free_blocks(g, off, count)
        self.desc_free[g] += count

    # ------------------------------------------------------------------ allocation
    def ext4_mb_use_best_found(self, ac: AllocationContext) -> None:
        ac.b.length = min(ac.b.length, ac.g.length)
        self.mb_mark_used(ac.b.group, ac.b)
        ac.status = C.AC_STATUS_FOUND
        if ac.flags & C.EXT4_MB_STREAM_ALLOC:
            self.s_mb_last_group = ac.b.group
            self.s_mb_last_start = ac.b.start

    def ext4_mb_check_limits(self, ac: AllocationContext, g: int, finish_group: bool) -> None:
        if ac.status == C.AC_STATUS_FOUND:
            return
        if ac.found > C.MB_DEFAULT_MAX_TO_SCAN and not ac.flags & C.EXT4_MB_HINT_FIRST:
            ac.status = C.AC_STATUS_BREAK
            return
        if ac.b.length < ac.g.length:
            return
        if finish_group or ac.found > C.MB_DEFAULT_MIN_TO_SCAN:
            if self.v612:
                self.ext4_mb_use_best_found(ac)
            elif ac.b.group == g:
                ex = self.mb_find_extent(g, ac.b.start, ac.g.length)
                if ex.length >= ac.g.length:
                    self.ext4_mb_use_best_found(ac)

    def ext4_mb_measure_extent(self, ac: AllocationContext, ex: FreeExtent) -> None:
        ac.found += 1
        self.costs.extents_measured += 1
        b, gx = ac.b, ac.g
        if ac.flags & C.EXT4_MB_HINT_FIRST or ex.length == gx.length:
            ac.b = FreeExtent(ex.group, ex.start, ex.length)
            self.ext4_mb_use_best_found(ac)
            return
        if b.length == 0:
            ac.b = FreeExtent(ex.group, ex.start, ex.length)
            return
        if b.length < gx.length:
            if ex.length > b.length:
                ac.b = FreeExtent(ex.group, ex.start, ex.length)
        elif ex.length > gx.length and ex.length < b.length:
            ac.b = FreeExtent(ex.group, ex.start, ex.length)
        self.ext4_mb_check_limits(ac, ex.group, False)

    def ext4_mb_try_best_found(self, ac: AllocationContext) -> None:
        g = ac.b.group
        self.ext4_mb_load_buddy(g)
        ex = self.mb_find_extent(g, ac.b.start, ac.b.length)
        if ex.length > 0:
            ac.b = ex
            self.ext4_mb_use_best_found(ac)

    def ext4_mb_find_by_goal(self, ac: AllocationContext) -> None:
        if not ac.flags & (C.EXT4_MB_HINT_TRY_GOAL | C.EXT4_MB_HINT_GOAL_ONLY):
            return
        g = ac.g.group
        if self.groups[g].bb_free == 0:
            return
        self.ext4_mb_load_buddy(g)
        ex = self.mb_find_extent(g, ac.g.start, ac.g.length)
        if ex.length >= ac.g.length or (ex.length > 0 and ac.flags & C.EXT4_MB_HINT_MERGE):
            ac.found += 1
            ac.b = ex
            ac.by_goal = True
            self.ext4_mb_use_best_found(ac)

    def ext4_mb_simple_scan_group(self, ac: AllocationContext, g: int) -> None:
        grp = self.groups[g]
        runs = grp.runs
        assert runs is not None
        for i in range(ac.order2, self.norders):
            if grp.bb_counters[i] == 0:
                continue
            k = -1
            for ri in range(len(runs)):
                for cs, o in self._chunk_walk(runs, ri):
                    if o == i:
                        k = cs
                        break
                if k >= 0:
                    break
            assert k >= 0, "bb_counters disagree with the runs"
            ac.found += 1
            self.costs.extents_measured += 1
            ac.b = FreeExtent(g, k, 1 << i)
            self.ext4_mb_use_best_found(ac)
            break

    def ext4_mb_complex_scan_group(self, ac: AllocationContext, g: int) -> None:
        grp = self.groups[g]
        runs = grp.runs
        assert runs is not None
        free = grp.bb_free
        i = grp.bb_first_free
        cheap = self.v612 and ac.criteria < C.CR_GOAL_LEN_SLOW
        while free and ac.status == C.AC_STATUS_CONTINUE:
            i = runs.first_free_at_or_after(i)
            if i < 0:
                break
            if cheap:
                ri = runs.run_at(i)
                j = runs.starts[ri] + runs.lens[ri]
                freelen = j - i
                if freelen < ac.g.length:
                    i = j
                    free -= freelen
                    continue
            ex = self.mb_find_extent(g, i, ac.g.length)
            if ex.length <= 0 or free < ex.length:
                break
            self.ext4_mb_measure_extent(ac, ex)
            i += ex.length
            free -= ex.length
        self.ext4_mb_check_limits(ac, g, True)

    def _flex_first(self, g: int) -> bool:
        lg = self.geo.log_groups_per_flex
        return bool(lg) and (g & ((1 << lg) - 1)) == 0

    def ext4_mb_good_group(self, ac: AllocationContext, g: int, cr: int) -> bool:
        grp = self.groups[g]
        free = grp.bb_free
        if free == 0 or grp.bb_fragments == 0:
            return False
        if cr == C.CR_POWER2_ALIGNED:
            if (
                ac.flags & C.EXT4_MB_HINT_DATA
                and self.flex_size >= C.EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME
                and g % self.flex_size == 0
            ):
                return False
            if free < ac.g.length:
                return False
            if ac.order2 >= self.norders:
                return True
            return grp.bb_largest_free_order >= ac.order2
        if self.v612:
            if cr in (C.CR_GOAL_LEN_FAST, C.CR_BEST_AVAIL_LEN):
                return free // grp.bb_fragments >= ac.g.length
            if cr == C.CR_GOAL_LEN_SLOW:
                return free >= ac.g.length
            return True
        if cr == 1:
            return free // grp.bb_fragments >= ac.g.length
        if cr == 2:
            return free >= ac.g.length
        return True

    def _cr_expensive(self, cr: int) -> bool:
        return cr >= (C.CR_GOAL_LEN_SLOW if self.v612 else 2)

    def ext4_mb_good_group_nolock(self, ac: AllocationContext, g: int, cr: int) -> bool:
        self.costs.groups_considered += 1
        grp = self.groups[g]
        free = grp.bb_free
        if free == 0:
            return False
        last_cheap = C.CR_ANY_FREE if self.v612 else 3
        if cr < last_cheap and free < ac.g.length:
            return False
        if grp.need_init:
            if (
                not self._cr_expensive(cr)
                and (not self.geo.log_groups_per_flex or not self._flex_first(g))
                and not self.a_uninit[g]
            ):
                return False
            self.ext4_mb_init_group(g)
        return self.ext4_mb_good_group(ac, g, cr)

    def ext4_mb_prefetch(self, group: int, nr: int, ios: int) -> tuple[int, int]:
        batch = 0
        while nr > 0:
            nr -= 1
            first_try = not self.read_attempted[group]
            self.read_attempted[group] = True
            grp = self.groups[group]
            uninit = bool(self.a_uninit[group])
            if (
                first_try
                and grp.need_init
                and self.desc_free[group] > 0
                and (self.v612 or not uninit)
                and group not in self.bitmap_cached
            ):
                self.bitmap_cached.add(group)
                if uninit:
                    self.costs.bitmaps_synthesised += 1
                else:
                    ios += 1
                    batch += 1
            group += 1
            if group >= self.ngroups:
                group = 0
        if batch:
            self.costs.read_batches += 1
            self.costs.bitmaps_prefetched += batch
        return group, ios

    def ext4_mb_prefetch_fini(self, group: int, nr: int) -> None:
        """Initialise the buddies of the ``nr`` groups before ``group`` (last first).

        6.1 takes the group descriptor before stepping back, so the free-count and
        BLOCK_UNINIT tests read the descriptor of the group AFTER the one it initialises
        (fixed in 6.4 by "ext4: get correct ext4_group_info in ext4_mb_prefetch_fini"; 6.12
        steps back first). 6.12 also no longer skips BLOCK_UNINIT groups."""
        while nr > 0:
            nr -= 1
            desc = group
            if not group:
                group = self.ngroups
            group -= 1
            if self.v612:
                desc = group
            grp = self.groups[group]
            if (
                grp.need_init
                and self.desc_free[desc] > 0
                and (self.v612 or not self.a_uninit[desc])
            ):
                self.ext4_mb_init_group(group)

    def _candidates(self, ac: AllocationContext, a: int, b: int, cr: int) -> np.ndarray:
        """Groups in [a, b) that ``ext4_mb_good_group_nolock`` would not turn away before
        loading a buddy (vectorised over the mirrors; same tests, same order)."""
        free = self.a_free[a:b]
        glen = ac.g.length
        ok = free > 0
        last_cheap = C.CR_ANY_FREE if self.v612 else 3
        if cr < last_cheap:
            ok &= free >= glen
        ni = self.a_need_init[a:b]
        if not self._cr_expensive(cr):
            ok &= ~(ni & ~self.a_flex_first[a:b] & ~self.a_uninit[a:b])
        frag = self.a_frag[a:b]
        gg = frag > 0
        if cr == C.CR_POWER2_ALIGNED:
            if (
                ac.flags & C.EXT4_MB_HINT_DATA
                and self.flex_size >= C.EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME
            ):
                gg &= ~self.a_flex_mod0[a:b]
            gg &= free >= glen
            if ac.order2 < self.norders:
                gg &= self.a_lfo[a:b] >= ac.order2
        elif cr == 1 or (self.v612 and cr == C.CR_BEST_AVAIL_LEN):
            gg &= free // np.maximum(frag, 1) >= glen
        elif (self.v612 and cr == C.CR_GOAL_LEN_SLOW) or (not self.v612 and cr == 2):
            gg &= free >= glen
        ok &= ni | gg
        return ok

    def _next_candidate(self, ac: AllocationContext, pos: int, end: int, cr: int) -> int:
        """First group in [pos, end) worth a slow look (``end`` if none)."""
        if not self.fast_skip:
            return pos
        w = 64
        a = pos
        while a < end:
            b = min(end, a + w)
            hit = np.flatnonzero(self._candidates(ac, a, b, cr))
            if len(hit):
                return a + int(hit[0])
            a = b
            w = min(w * 4, 1 << 16)
        return end

    def _prefetch_jump(self, p: int, limit: int) -> tuple[int, int]:
        """Prefetch points from ``p`` whose whole range is already marked READ do nothing
        but move the point on (``ext4_mb_prefetch`` tests EXT4_MB_GRP_TEST_AND_SET_READ
        first). Returns the first point that may do something and the ``nr`` of the last
        no-op call before it (0 if none)."""
        if not self.fast_skip:
            return p, 0
        w = 256
        a = p
        y = limit
        while a < limit:
            b = min(limit, a + w)
            hit = np.flatnonzero(~self.read_attempted[a:b])
            if len(hit):
                y = a + int(hit[0])
                break
            a = b
            w = min(w * 4, 1 << 16)
        if self.geo.log_groups_per_flex:
            if self.s_mb_prefetch < self.flex_size:
                return p, 0
            q = max(p, y & ~(self.flex_size - 1))
            prev = max(p, q - self.flex_size)
        else:
            step = self.s_mb_prefetch
            q = p + ((y - p) // step) * step
            prev = max(p, q - step)
        return q, (q - prev if q > p else 0)

    def _prefetch_may_trigger(self, cr: int, ios: int) -> bool:
        return self.prefetch_enabled and (self._cr_expensive(cr) or ios < self.s_mb_prefetch_limit)

    def _scan(self, ac: AllocationContext, g: int, cr: int) -> None:
        ac.groups_scanned += 1
        self.costs.groups_scanned += 1
        if cr == C.CR_POWER2_ALIGNED:
            self.ext4_mb_simple_scan_group(ac, g)
        else:
            self.ext4_mb_complex_scan_group(ac, g)

    # ---- 6.1 -----------------------------------------------------------------
    def _should_optimize_scan(self, ac: AllocationContext) -> bool:
        if not self.optimize_scan:
            return False
        return ac.criteria < (C.CR_GOAL_LEN_SLOW if self.v612 else 2)

    def next_linear_group(self, ac: AllocationContext, group: int) -> int:
        if self._should_optimize_scan(ac):
            if ac.groups_linear_remaining:
                ac.groups_linear_remaining -= 1
            else:
                return group
        return 0 if group + 1 >= self.ngroups else group + 1

    def ext4_mb_choose_next_group_cr0(self, ac: AllocationContext, group: int) -> tuple[int, int]:
        if ac.status == C.AC_STATUS_FOUND:
            return 0, group
        for i in range(ac.order2, self.norders):
            for g in self.lfo_l[i]:
                self.costs.groups_considered += 1
                if self.ext4_mb_good_group(ac, g, 0):
                    return 0, g
        return 1, group

    def ext4_mb_choose_next_group_cr1(self, ac: AllocationContext, group: int) -> tuple[int, int]:
        for i in range(self.mb_avg_fragment_size_order(ac.g.length), self.norders):
            for g in self.afs_l[i]:
                self.costs.groups_considered += 1
                if self.ext4_mb_good_group(ac, g, 1):
                    return 1, g
        return 2, group

    def ext4_mb_choose_next_group(self, ac: AllocationContext, group: int) -> tuple[int, int]:
        new_cr = ac.criteria
        if not self._should_optimize_scan(ac) or ac.groups_linear_remaining:
            return new_cr, self.next_linear_group(ac, group)
        if new_cr == 0:
            return self.ext4_mb_choose_next_group_cr0(ac, group)
        return self.ext4_mb_choose_next_group_cr1(ac, group)

    def _regular_61(self, ac: AllocationContext) -> None:
        ngroups = self.ngroups
        cr = 0 if ac.order2 else 1
        prefetch_grp = 0
        nr = 0
        prefetch_ios = 0
        while True:  # repeat:
            jumped = False
            while cr < 4 and ac.status == C.AC_STATUS_CONTINUE:
                ac.criteria = cr
                group = ac.g.group if ac.g.group < ngroups else 0
                ac.groups_linear_remaining = self.max_linear_groups
                prefetch_grp = group
                i = 0
                new_cr = cr
                while i < ngroups:
                    if new_cr != cr:
                        cr = new_cr
                        jumped = True
                        break
                    if not self._should_optimize_scan(ac):
                        seg_end = min(ngroups, group + (ngroups - i))
                        stop = self._next_candidate(ac, group, seg_end, cr)
                        if (
                            self._prefetch_may_trigger(cr, prefetch_ios)
                            and group <= prefetch_grp < stop
                        ):
                            q, _last = self._prefetch_jump(prefetch_grp, stop)
                            if q > prefetch_grp:
                                # no-op calls leave prefetch_ios unchanged: nr = 0
                                prefetch_grp, nr = q % ngroups, 0
                            stop = min(stop, q)
                        if stop > group:
                            self.costs.groups_considered += stop - group
                            i += stop - group
                            group = 0 if stop >= ngroups else stop
                            if i >= ngroups:
                                break
                            if stop == seg_end:
                                continue
                    if (
                        self.prefetch_enabled
                        and prefetch_grp == group
                        and (cr > 1 or prefetch_ios < self.s_mb_prefetch_limit)
                    ):
                        curr = prefetch_ios
                        nr = self.s_mb_prefetch
                        if self.geo.log_groups_per_flex:
                            nr = self.flex_size - (group & (self.flex_size - 1))
                            nr = min(nr, self.s_mb_prefetch)
                        prefetch_grp, prefetch_ios = self.ext4_mb_prefetch(group, nr, prefetch_ios)
                        if prefetch_ios == curr:
                            nr = 0
                    if self.ext4_mb_good_group_nolock(ac, group, cr):
                        self.ext4_mb_load_buddy(group)
                        if self.ext4_mb_good_group(ac, group, cr):
                            self._scan(ac, group, cr)
                            if ac.status != C.AC_STATUS_CONTINUE:
                                break
                    i += 1
                    new_cr, group = self.ext4_mb_choose_next_group(ac, group)
                if jumped:
                    jumped = False
                    continue
                if ac.status != C.AC_STATUS_CONTINUE:
                    break
                cr += 1
            if (
                ac.b.length > 0
                and ac.status != C.AC_STATUS_FOUND
                and not ac.flags & C.EXT4_MB_HINT_FIRST
            ):
                self.ext4_mb_try_best_found(ac)
                if ac.status != C.AC_STATUS_FOUND:
                    ac.b = FreeExtent()
                    ac.status = C.AC_STATUS_CONTINUE
                    ac.flags |= C.EXT4_MB_HINT_FIRST
                    cr = 3
                    continue
            break
        if nr:
            self.ext4_mb_prefetch_fini(prefetch_grp, nr)

    # ---- 6.12 ----------------------------------------------------------------
    def ext4_mb_might_prefetch(self, ac: AllocationContext, group: int) -> None:
        if not self.prefetch_enabled or ac.prefetch_grp != group:
            return
        if self._cr_expensive(ac.criteria) or ac.prefetch_ios < self.s_mb_prefetch_limit:
            nr = self.s_mb_prefetch
            if self.geo.log_groups_per_flex:
                nr = self.flex_size - (group & (self.flex_size - 1))
                nr = min(nr, self.s_mb_prefetch)
            ac.prefetch_nr = nr
            ac.prefetch_grp, ac.prefetch_ios = self.ext4_mb_prefetch(group, nr, ac.prefetch_ios)

    def ext4_mb_scan_group(self, ac: AllocationContext, group: int) -> None:
        self.ext4_mb_might_prefetch(ac, group)
        cr = ac.criteria
        if not self.ext4_mb_good_group_nolock(ac, group, cr):
            return
        self.ext4_mb_load_buddy(group)
        if not self.ext4_mb_good_group(ac, group, cr):
            return
        self._scan(ac, group, cr)

    def ext4_mb_scan_groups_xa_range(
        self, ac: AllocationContext, xa: SortedList, start: int, end: int
    ) -> None:
        pos = start
        while True:
            k = xa.bisect_left(pos)
            if k >= len(xa):
                return
            g = int(xa[k])
            if g >= end:
                return
            self.costs.groups_considered += 1
            self.ext4_mb_scan_group(ac, g)
            if ac.status != C.AC_STATUS_CONTINUE:
                return
            pos = g + 1

    def ext4_mb_scan_groups_p2_aligned(self, ac: AllocationContext, group: int) -> None:
        start, end = group, self.ngroups
        while True:
            for i in range(ac.order2, self.norders):
                if self.lfo_x[i]:
                    self.ext4_mb_scan_groups_xa_range(ac, self.lfo_x[i], start, end)
                if ac.status != C.AC_STATUS_CONTINUE:
                    return
            if start:
                end, start = start, 0
                continue
            break
        ac.criteria = C.CR_GOAL_LEN_FAST

    def ext4_mb_scan_groups_goal_fast(self, ac: AllocationContext, group: int) -> None:
        start, end = group, self.ngroups
        while True:
            for i in range(self.mb_avg_fragment_size_order(ac.g.length), self.norders):
                if self.afs_x[i]:
                    self.ext4_mb_scan_groups_xa_range(ac, self.afs_x[i], start, end)
                if ac.status != C.AC_STATUS_CONTINUE:
                    return
            if start:
                end, start = start, 0
                continue
            break
        if ac.flags & C.EXT4_MB_HINT_DATA:
            ac.criteria = C.CR_BEST_AVAIL_LEN
        else:
            ac.criteria = C.CR_GOAL_LEN_SLOW

    def ext4_mb_scan_groups_best_avail(self, ac: AllocationContext, group: int) -> None:
        order = fls(ac.g.length) - 1
        if order - 1 > self.norders:
            order = self.norders
        min_order = max(0, order - C.MB_DEFAULT_BEST_AVAIL_TRIM_ORDER)
        if (1 << min_order) < ac.o_len:
            min_order = fls(ac.o_len)
        start, end = group, self.ngroups
        while True:
            for i in range(order, min_order - 1, -1):
                ac.g.length = 1 << i
                frag_order = self.mb_avg_fragment_size_order(ac.g.length)
                if self.afs_x[frag_order]:
                    self.ext4_mb_scan_groups_xa_range(ac, self.afs_x[frag_order], start, end)
                if ac.status != C.AC_STATUS_CONTINUE:
                    return
            if start:
                end, start = start, 0
                continue
            break
        ac.g.length = ac.orig_goal_len
        ac.criteria = C.CR_GOAL_LEN_SLOW

    def ext4_mb_scan_groups_linear(self, ac: AllocationContext, start: int, count: int) -> int:
        group = start
        k = 0
        while k < count:
            # groups that would be turned away cheaply are passed over in bulk; prefetch
            # points on the way whose groups were all tried already are no-ops
            seg_end = min(self.ngroups, group + (count - k))
            stop = self._next_candidate(ac, group, seg_end, ac.criteria)
            if (
                self._prefetch_may_trigger(ac.criteria, ac.prefetch_ios)
                and group <= ac.prefetch_grp < stop
            ):
                q, last_nr = self._prefetch_jump(ac.prefetch_grp, stop)
                if q > ac.prefetch_grp:
                    ac.prefetch_grp, ac.prefetch_nr = q % self.ngroups, last_nr
                stop = min(stop, q)
            if stop > group:
                self.costs.groups_considered += stop - group
                k += stop - group
                group = 0 if stop >= self.ngroups else stop
                if k >= count:
                    break
                if stop == seg_end:
                    continue
            self.ext4_mb_scan_group(ac, group)
            if ac.status != C.AC_STATUS_CONTINUE:
                return group
            k += 1
            group = 0 if group + 1 >= self.ngroups else group + 1
        if count == self.ngroups:
            ac.criteria += 1
        return group

    def ext4_mb_scan_groups(self, ac: AllocationContext) -> None:
        start = ac.g.group if ac.g.group < self.ngroups else 0
        ac.prefetch_grp = start
        ac.prefetch_nr = 0
        if not self._should_optimize_scan(ac):
            self.ext4_mb_scan_groups_linear(ac, start, self.ngroups)
            return
        if self.max_linear_groups:
            start = self.ext4_mb_scan_groups_linear(ac, start, self.max_linear_groups)
            if ac.status != C.AC_STATUS_CONTINUE:
                return
        if ac.criteria == C.CR_POWER2_ALIGNED:
            self.ext4_mb_scan_groups_p2_aligned(ac, start)
        elif ac.criteria == C.CR_GOAL_LEN_FAST:
            self.ext4_mb_scan_groups_goal_fast(ac, start)
        elif ac.criteria == C.CR_BEST_AVAIL_LEN:
            self.ext4_mb_scan_groups_best_avail(ac, start)

    def _regular_612(self, ac: AllocationContext) -> None:
        ac.criteria = C.CR_POWER2_ALIGNED if ac.order2 else C.CR_GOAL_LEN_FAST
        ac.prefetch_ios = 0
        while True:
            while ac.criteria < C.CR_ANY_FREE + 1:
                self.ext4_mb_scan_groups(ac)
                if ac.status != C.AC_STATUS_CONTINUE:
                    break
            if (
                ac.b.length > 0
                and ac.status != C.AC_STATUS_FOUND
                and not ac.flags & C.EXT4_MB_HINT_FIRST
            ):
                self.ext4_mb_try_best_found(ac)
                if ac.status != C.AC_STATUS_FOUND:
                    ac.b = FreeExtent()
                    ac.status = C.AC_STATUS_CONTINUE
                    ac.flags |= C.EXT4_MB_HINT_FIRST
                    ac.criteria = C.CR_ANY_FREE
                    continue
            break
        if ac.prefetch_nr:
            self.ext4_mb_prefetch_fini(ac.prefetch_grp, ac.prefetch_nr)

    def ext4_mb_regular_allocator(self, ac: AllocationContext) -> None:
        self.ext4_mb_find_by_goal(ac)
        if ac.status == C.AC_STATUS_FOUND or ac.flags & C.EXT4_MB_HINT_GOAL_ONLY:
            return
        i = fls(ac.g.length)
        ac.order2 = 0
        if C.MB_DEFAULT_ORDER2_REQS <= i <= self.norders and (ac.g.length & ~(1 << (i - 1))) == 0:
            ac.order2 = i - 1
        if ac.flags & C.EXT4_MB_STREAM_ALLOC:
            ac.g.group = self.s_mb_last_group
            ac.g.start = self.s_mb_last_start
        if self.v612:
            self._regular_612(ac)
        else:
            self._regular_61(ac)

    def ext4_mb_initialize_context(self, req: AllocRequest) -> AllocationContext:
        geo = self.geo
        # "just a dirty hack to filter too big requests"
        length = min(req.length, geo.blocks_per_group)
        goal = req.goal
        if goal < geo.first_data_block or goal >= geo.total_blocks:
            goal = geo.first_data_block
        g, off = divmod(goal - geo.first_data_block, geo.blocks_per_group)
        return AllocationContext(
            o_len=length,
            g=FreeExtent(g, off, length),
            flags=req.flags,
            orig_goal_len=length,
        )

    def ext4_mb_mark_diskspace_used(self, g: int, length: int) -> None:
        """The descriptor side of an allocation (6.12: ``ext4_mb_mark_context``): BLOCK_UNINIT
        cleared (its count is already ``ext4_free_clusters_after_init``'s), count lowered."""
        self.a_uninit[g] = False
        self.desc_free[g] -= length

    def alloc(self, req: AllocRequest) -> Allocation | None:
        """``ext4_mb_new_blocks`` without preallocation: one extent of at most
        ``req.length`` blocks, or None (ENOSPC)."""
        before = self.costs.copy()
        ac = self.ext4_mb_initialize_context(req)
        self.ext4_mb_regular_allocator(ac)
        if ac.status != C.AC_STATUS_FOUND:
            return None
        b = ac.b
        self.ext4_mb_mark_diskspace_used(b.group, b.length)
        return Allocation(
            group=b.group,
            start=b.start,
            length=b.length,
            block=self.geo.group_first_block_no(b.group) + b.start,
            criteria=-1 if ac.by_goal else ac.criteria,
            found=ac.found,
            costs=self.costs.minus(before),
        )

    # ------------------------------------------------------------------ views
    def loaded_runs(self) -> dict[int, list[tuple[int, int]]]:
        """Free runs of every initialised group (group-relative)."""
        return {g: gi.runs.runs() for g, gi in enumerate(self.groups) if gi.runs is not None}

    def check_buddy(self, g: int) -> None:
        """``__mb_check_buddy`` in spirit: counters, fragments, free agree with the runs."""
        gi = self.groups[g]
        assert gi.runs is not None
        counters = [0] * self.norders
        for s, n in gi.runs.runs():
            for _, o in ext4_mb_mark_free_simple(s, n, self.geo.blocksize_bits):
                counters[o] += 1
        assert counters == gi.bb_counters, (g, counters, gi.bb_counters)
        assert gi.bb_fragments == len(gi.runs)
        assert gi.bb_free == gi.runs.free
