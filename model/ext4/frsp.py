"""The free-space tree allocator of the 2020 RFC ("ext4: add free-space extent based
allocator", v1, 19 Aug 2020: patches 3/9 "add freespace tree allocator", 5/9 "add freespace
tree optimizations", 6/9 "add memory usage tracker", 7/9 "add LRU eviction"). Never merged;
the function names are the patches'.

One tree per flex-bg, two orders over the same nodes (offset ascending; length descending,
equal lengths in insertion order, as ``ext4_mb_rb_insert`` places an equal key to the
right), a meta-tree of loaded trees ordered by their largest free extent, cache aggression
0..3, a node-count memory limit with an active/inactive LRU.

Deviations, stated:
- flex-bg offsets are taken from ``s_first_data_block`` (the RFC's
  ``ext4_blkno_to_flex_offset`` uses ``blkno % (flex_size * blocks_per_group)``, which is
  off by one on 1 KiB-block filesystems where the first data block is 1);
- ``ext4_mb_frsp_meta_reinsert`` erases the tree's meta-tree node before reinserting it
  even the first time, when that rb_node was never inserted (zeroed by kzalloc): we
  insert instead of modelling the corruption;
- the meta-tree (an rb-tree) is searched along the path a perfectly balanced tree over the
  same order would take;
- the read_trylock on the meta-tree always succeeds (one allocating thread).
Trees can be held as arrays (built from generated free space, read-only until first
changed) or as sorted containers; both give the same node order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
from sortedcontainers import SortedDict, SortedList

from model.ext4 import constants as C
from model.ext4.costs import AllocCosts
from model.ext4.freespace import Geometry, GroupSource
from model.ext4.mballoc import Allocation, AllocRequest


class FrspTree:
    """``struct ext4_frsp_tree``: the free-space nodes (offset in flex-bg, length)."""

    def __init__(self, index: int):
        self.index = index
        self.loaded = False
        self.cached = False  # EXT4_MB_FRSP_FLAG_CACHED
        self.max_free_len = 0  # frsp_max_free_len (meta-tree key)
        self.in_meta = False
        self.meta_key: tuple[int, int, int] | None = None
        self.fragments = 0
        self.ref = 0
        self.last_access = 0
        self.active = False
        self.list_node: str | None = None  # "uncached" | "inactive" | None
        # array form (read-only) or exact form
        self.a_lens: npt.NDArray[np.int32] | None = None
        self.a_offs: npt.NDArray[np.int32] | None = None
        self.by_off: SortedDict | None = None  # offset -> (len, seq)
        self.by_len: SortedList | None = None  # (-len, seq, offset)
        self.seq = 0

    # -- views ------------------------------------------------------------------
    def count(self) -> int:
        if self.a_lens is not None:
            return len(self.a_lens)
        return len(self.by_off) if self.by_off is not None else 0

    def largest(self) -> int:
        if self.a_lens is not None:
            return int(self.a_lens[0]) if len(self.a_lens) else 0
        if self.by_len:
            return -int(self.by_len[0][0])
        return 0

    def iter_by_len(self) -> Iterator[tuple[int, int]]:
        """rb_first_cached(&frsp_len_root), rb_next... as (offset, length)."""
        lens, offs = self.a_lens, self.a_offs
        if lens is not None:
            assert offs is not None
            for k in range(len(lens)):
                yield int(offs[k]), int(lens[k])
            return
        k = 0
        while self.by_len is not None and k < len(self.by_len):
            neg, _seq, off = self.by_len[k]
            yield int(off), -int(neg)
            k += 1

    def nodes(self) -> list[tuple[int, int]]:
        """All nodes by offset."""
        if self.a_lens is not None:
            assert self.a_offs is not None
            return sorted(zip(self.a_offs.tolist(), self.a_lens.tolist(), strict=True))
        if self.by_off is None:
            return []
        return [(int(o), int(v[0])) for o, v in self.by_off.items()]

    def search_by_off(self, target: int) -> tuple[int, int] | None:
        """``ext4_mb_frsp_search_by_off``: the node starting exactly at ``target``."""
        if self.a_lens is not None:
            assert self.a_offs is not None
            hit = np.flatnonzero(self.a_offs == target)
            return (target, int(self.a_lens[hit[0]])) if len(hit) else None
        if self.by_off is None or target not in self.by_off:
            return None
        return target, int(self.by_off[target][0])

    # -- changes -----------------------------------------------------------------
    def materialise(self) -> None:
        if self.a_lens is None:
            if self.by_off is None:
                self.by_off = SortedDict()
                self.by_len = SortedList()
            return
        assert self.a_offs is not None
        offs = self.a_offs.tolist()
        lens = self.a_lens.tolist()
        # insertion order of the build is offset order
        rank = {o: i for i, o in enumerate(sorted(offs))}
        self.by_off = SortedDict({o: (n, rank[o]) for o, n in zip(offs, lens, strict=True)})
        self.by_len = SortedList((-n, rank[o], o) for o, n in zip(offs, lens, strict=True))
        self.seq = len(offs)
        self.a_lens = self.a_offs = None

    def insert(self, off: int, length: int) -> None:
        """``ext4_mb_frsp_insert_len`` + ``ext4_mb_frsp_insert_off``."""
        assert self.by_off is not None and self.by_len is not None
        s = self.seq
        self.seq += 1
        self.by_off[off] = (length, s)
        self.by_len.add((-length, s, off))

    def erase(self, off: int) -> int:
        assert self.by_off is not None and self.by_len is not None
        length, s = self.by_off.pop(off)
        self.by_len.remove((-length, s, off))
        return int(length)

    def clear(self) -> None:
        self.a_lens = self.a_offs = None
        self.by_off = None
        self.by_len = None
        self.seq = 0


class FrspAllocator:
    """``ext4_mb_tree_allocator`` and its trees, meta-tree and LRU."""

    def __init__(
        self,
        src: GroupSource,
        aggression: int = C.EXT4_MB_FRSP_DEFAULT_CACHE_AGGRESSION,
        mem_limit: int | None = None,
        clock: Callable[[AllocCosts], float] | None = None,
        hz: int = 250,
        array_trees: bool = False,
    ):
        geo: Geometry = src.geometry
        if not geo.log_groups_per_flex:
            raise ValueError("the free-space tree allocator needs flex_bg (ext4_mb_frsp_on)")
        if not 0 <= aggression <= C.EXT4_MB_FRSP_MAX_CACHE_AGGRESSION:
            raise ValueError("cache aggression is 0..3")
        self.src = src
        self.geo = geo
        self.aggression = aggression
        self.flex_size = geo.flex_size
        self.bpg = geo.blocks_per_group
        self.ntrees = (geo.ngroups + self.flex_size - 1) >> geo.log_groups_per_flex
        self.trees = [FrspTree(i) for i in range(self.ntrees)]
        # ext4_mb_init_freespace_trees: list_add(tree i) for i = 0.. -> head is the last
        self.uncached: dict[int, None] = {i: None for i in range(self.ntrees - 1, -1, -1)}
        for t in self.trees:
            t.list_node = "uncached"
        self.meta = SortedList()  # (-max_free_len, seq, tree index)
        self.meta_seq = 0
        # patch 7: default limit = buddy memory, floor = one worst-case tree; 0 = off
        default = geo.ngroups << (geo.blocksize_bits + 1)
        floor = C.FRSP_NODE_SIZE * self.flex_size * (geo.blocks_per_group // 2)
        if mem_limit is None:
            mem_limit = max(default, floor)
        self.mem_limit = mem_limit & 0xFFFFFFFF  # u32 s_mb_frsp_mem_limit
        # EXT4_FRSP_MEM_LIMIT_TO_NUM_NODES, EXT4_MB_FRSP_MAX_ACTIVE_FRAGMENTS
        self.max_nodes = self.mem_limit // C.FRSP_NODE_SIZE
        self.max_active = self.mem_limit // (2 * C.FRSP_NODE_SIZE)
        self.active: dict[int, None] = {}  # oldest first (list tail = first key)
        self.inactive: dict[int, None] = {}
        self.active_fragments = 0
        self.num_fragments = 0
        self.peak_fragments = 0
        self.crunch = False
        self.trees_cached = 0  # s_mb_num_frsp_trees_cached
        self.costs = AllocCosts()
        self.clock = clock
        self.hz = hz
        self.array_trees = array_trees
        self.bb_free = [src.desc_free(g) for g in range(geo.ngroups)]

    # -------------------------------------------------------------- accounting
    @property
    def memory_bytes(self) -> int:
        """``frsp_tree_usage``: nodes x sizeof(struct ext4_frsp_node)."""
        return self.num_fragments * C.FRSP_NODE_SIZE

    def _jiffies(self) -> int:
        return int(self.clock(self.costs) * self.hz) if self.clock else 0

    def ext4_mb_frsp_alloc_node(self, tree: FrspTree, n: int = 1) -> None:
        self.num_fragments += n
        tree.fragments += n
        if tree.active:
            self.active_fragments += n
        self.peak_fragments = max(self.peak_fragments, self.num_fragments)
        self.crunch = bool(self.mem_limit) and self.num_fragments > self.max_nodes

    def ext4_mb_frsp_free_node(self, tree: FrspTree, n: int = 1) -> None:
        self.num_fragments -= n
        tree.fragments -= n
        if tree.active:
            self.active_fragments -= n
        if not self.mem_limit or self.num_fragments < self.max_nodes:
            self.crunch = False

    # -------------------------------------------------------------- LRU (patch 7)
    def _list_del(self, tree: FrspTree) -> None:
        if tree.list_node == "uncached":
            del self.uncached[tree.index]
        elif tree.list_node == "inactive":
            del self.inactive[tree.index]
        tree.list_node = None

    def ext4_mb_frsp_maintain_lru(self, tree: FrspTree) -> None:
        now = self._jiffies()
        if not tree.active:
            if (
                tree.last_access
                and self.max_active
                and self.active_fragments > self.max_active
                and now - tree.last_access > C.EXT4_MB_FRSP_ACTIVE_THRESHOLD_JIFFIES
            ):
                tree.last_access = now
                return
            tree.active = True
            self.active[tree.index] = None
            self._list_del(tree)
            self.active_fragments += tree.fragments
            while self.max_active and self.active_fragments > self.max_active:
                last = next(iter(self.active))
                del self.active[last]
                lt = self.trees[last]
                lt.active = False
                self.inactive[last] = None
                lt.list_node = "inactive"
                self.active_fragments -= lt.fragments
        tree.last_access = now

    def ext4_frsp_evict(self) -> None:
        for idx in self.inactive:
            t = self.trees[idx]
            if not t.ref:
                del self.inactive[idx]
                t.list_node = None
                self.ext4_mb_frsp_free_tree(t)
                return

    def ext4_mb_frsp_free_tree(self, tree: FrspTree) -> None:
        if not tree.loaded or tree.ref:
            return
        self.ext4_mb_frsp_free_node(tree, tree.count())
        tree.clear()
        tree.loaded = False
        self.costs.evictions += 1

    # -------------------------------------------------------------- trees
    def flex_offset(self, group: int, start: int) -> int:
        return (group % self.flex_size) * self.bpg + start

    def ext4_mb_frsp_load(self, tree: FrspTree) -> None:
        """Read the flex-bg's block bitmaps (all submitted, then waited on) and add every
        free run as a node (``ext4_mb_frsp_bb_to_tree``); runs never merge across groups."""
        g0 = tree.index * self.flex_size
        g1 = min(g0 + self.flex_size, self.geo.ngroups)
        reads = 0
        offs: list[npt.NDArray[np.int64]] = []
        lens: list[npt.NDArray[np.int64]] = []
        for g in range(g0, g1):
            if self.src.block_uninit(g):
                self.costs.bitmaps_synthesised += 1
            else:
                reads += 1
            fast = getattr(self.src, "read_bitmap_arrays", None)
            s, n = fast(g) if fast is not None else self.src.read_bitmap(g)
            base = (g - g0) * self.bpg
            offs.append(np.asarray(s, dtype=np.int64) + base)
            lens.append(np.asarray(n, dtype=np.int64))
            self.costs.bitmaps_scanned += 1
        if reads:
            self.costs.read_batches += 1
            self.costs.bitmaps_prefetched += reads
        o = np.concatenate([np.asarray(x) for x in offs]) if offs else np.zeros(0, np.int64)
        n_ = np.concatenate([np.asarray(x) for x in lens]) if lens else np.zeros(0, np.int64)
        count = len(o)
        order = np.lexsort((o, -n_))  # length descending, then insertion (= offset) order
        tree.clear()
        tree.a_lens = n_[order].astype(np.int32)
        tree.a_offs = o[order].astype(np.int32)
        if not self.array_trees:
            tree.materialise()
        self.ext4_mb_frsp_alloc_node(tree, count)
        self.costs.tree_nodes_inserted += count
        self.costs.trees_built += 1
        if not tree.cached:
            self.trees_cached += 1
        tree.cached = True
        tree.loaded = True

    def ext4_mb_load_allocator(self, group: int, noload: bool = False) -> FrspTree:
        tree = self.trees[group >> self.geo.log_groups_per_flex]
        self.ext4_mb_frsp_maintain_lru(tree)
        if noload:
            return tree
        tree.ref += 1
        if not tree.loaded:
            self.ext4_mb_frsp_load(tree)
        return tree

    def ext4_mb_unload_allocator(self, tree: FrspTree, noload: bool = False) -> None:
        if noload:
            return
        tree.ref -= 1
        if self.crunch:
            self.ext4_frsp_evict()

    def ext4_mb_frsp_meta_reinsert(self, tree: FrspTree) -> None:
        if not tree.loaded:
            return
        expected = tree.largest()
        if tree.max_free_len == expected:
            return
        if tree.meta_key is not None:
            self.meta.remove(tree.meta_key)
        tree.max_free_len = expected
        tree.meta_key = (-expected, self.meta_seq, tree.index)
        self.meta_seq += 1
        self.meta.add(tree.meta_key)
        tree.in_meta = True

    def ext4_mb_frsp_add_region(self, tree: FrspTree, off: int, length: int) -> None:
        """Insert a free region, merging with offset neighbours in the same group."""
        tree.materialise()
        assert tree.by_off is not None
        self.ext4_mb_frsp_alloc_node(tree)
        new_off, new_len = off, length
        i = tree.by_off.bisect_left(off)
        if i > 0:
            po = int(tree.by_off.keys()[i - 1])
            pl = int(tree.by_off[po][0])
            if po + pl == new_off and po // self.bpg == new_off // self.bpg:
                tree.erase(po)
                self.ext4_mb_frsp_free_node(tree)
                new_off, new_len = po, pl + new_len
        j = tree.by_off.bisect_left(off + length)
        if j < len(tree.by_off):
            no = int(tree.by_off.keys()[j])
            if new_off + new_len == no and new_off // self.bpg == no // self.bpg:
                nl = tree.erase(no)
                self.ext4_mb_frsp_free_node(tree)
                new_len += nl
        tree.insert(new_off, new_len)
        self.ext4_mb_frsp_meta_reinsert(tree)

    def mb_mark_used(
        self, tree: FrspTree, group: int, start: int, length: int, node_off: int
    ) -> None:
        """``mb_mark_used`` with free-space trees on: shrink or split the chosen node."""
        self.bb_free[group] -= length
        tree.materialise()
        off = self.flex_offset(group, start)
        nlen = tree.erase(node_off)
        end = node_off + nlen
        if off > node_off:
            if off + length != end:
                self.ext4_mb_frsp_alloc_node(tree)
                tree.insert(off + length, end - (off + length))
            tree.insert(node_off, off - node_off)
        elif length < nlen:
            tree.insert(node_off + length, nlen - length)
        else:
            self.ext4_mb_frsp_free_node(tree)

    # -------------------------------------------------------------- allocation
    def alloc(self, req: AllocRequest) -> Allocation | None:
        before = self.costs.copy()
        ac = _Ac(self, req)
        self.ext4_mb_tree_allocator(ac)
        if ac.status != C.AC_STATUS_FOUND:
            return None
        return Allocation(
            group=ac.res_group,
            start=ac.res_start,
            length=ac.res_len,
            block=self.geo.group_first_block_no(ac.res_group) + ac.res_start,
            criteria=-1 if ac.by_goal else ac.criteria,
            found=ac.found,
            costs=self.costs.minus(before),
        )

    def ext4_mb_frsp_is_better(self, ac: _Ac, length: int) -> tuple[bool, bool]:
        if length == ac.g_len:
            return True, True
        if ac.criteria == 0 and length < ac.g_len:
            return False, False
        if ac.bt_len < ac.g_len and length > ac.bt_len:
            return True, False
        if length > ac.g_len and length < ac.bt_len:
            return True, False
        return False, False

    def ext4_mb_frsp_check_limits(self, ac: _Ac) -> None:
        if ac.status == C.AC_STATUS_FOUND:
            return
        if ac.found > C.MB_DEFAULT_MAX_TO_SCAN and not ac.flags & C.EXT4_MB_HINT_FIRST:
            ac.status = C.AC_STATUS_BREAK

    def ext4_mb_frsp_use_best_found(self, ac: _Ac, flex: int, node_off: int) -> None:
        ac.bt_len = min(ac.bt_len, ac.g_len)
        ac.status = C.AC_STATUS_FOUND
        group = flex * self.flex_size + ac.bt_start // self.bpg
        start = ac.bt_start % self.bpg
        tree = self.ext4_mb_load_allocator(group, noload=True)
        self.mb_mark_used(tree, group, start, ac.bt_len, node_off)
        self.ext4_mb_frsp_meta_reinsert(tree)
        ac.res_group, ac.res_start, ac.res_len = group, start, ac.bt_len

    def ext4_mb_frsp_measure_node(
        self, ac: _Ac, tree_idx: int, node: tuple[int, int], goal: bool
    ) -> int:
        off, length = node
        best_found = False
        mx = 0
        if goal:
            start = ac.goal_flex_off
            if off > start:
                return 0
            mx = off + length - start
            if mx >= ac.g_len or (mx > 0 and ac.flags & C.EXT4_MB_HINT_MERGE):
                best_found = True
            else:
                return 0
            ac.found += 1
            self.costs.extents_measured += 1
        else:
            ac.found += 1
            self.costs.extents_measured += 1
            if ac.flags & C.EXT4_MB_HINT_FIRST:
                best_found = True
            elif ac.criteria < 2 and ac.flags & C.EXT4_MB_HINT_DATA and off < self.bpg:
                return 1
            elif ac.bt_len == 0:
                pass
            else:
                better, best_found = self.ext4_mb_frsp_is_better(ac, length)
                if not better:
                    self.ext4_mb_frsp_check_limits(ac)
                    return 0
        ac.bt_flex = tree_idx
        if goal:
            ac.bt_start, ac.bt_len = ac.goal_flex_off, mx
        else:
            ac.bt_start, ac.bt_len = off, length
        if best_found:
            ac.by_goal = goal
            self.ext4_mb_frsp_use_best_found(ac, tree_idx, off)
        self.ext4_mb_frsp_check_limits(ac)
        return 1

    def ext4_mb_frsp_find_by_goal(self, ac: _Ac) -> None:
        if not ac.flags & C.EXT4_MB_HINT_TRY_GOAL:
            return
        tree = self.ext4_mb_load_allocator(ac.g_group)
        node = tree.search_by_off(ac.goal_flex_off)
        if node is not None and ac.goal_flex_off < node[0] + node[1] - 1:
            self.ext4_mb_frsp_measure_node(ac, tree.index, node, True)
        self.ext4_mb_unload_allocator(tree)

    def ext4_mb_frsp_process(self, ac: _Ac, tree: FrspTree) -> None:
        self.costs.trees_scanned += 1
        it = tree.iter_by_len()
        while ac.status == C.AC_STATUS_CONTINUE:
            node = next(it, None)
            if node is None:
                return
            self.costs.nodes_visited += 1
            if ac.criteria == 0 and node[1] < ac.g_len:
                return
            if self.ext4_mb_frsp_measure_node(ac, tree.index, node, False) == 0:
                return

    def ext4_mb_frsp_should_cache(self, ac: _Ac) -> bool:
        if not self.uncached:
            return False
        if self.aggression >= C.EXT4_MB_FRSP_MAX_CACHE_AGGRESSION:
            return True
        if self.aggression == C.EXT4_MB_FRSP_MIN_CACHE_AGGRESSION:
            return False
        if self.aggression == 1 and ac.criteria == 0:
            return False
        return bool(ac.num_optimizations & 1)

    def ext4_mb_frsp_optimize(self, ac: _Ac) -> int | None:
        """Returns the tree to restart from, or None (no optimisation)."""
        if (
            ac.flags & (C.EXT4_MB_HINT_FIRST | C.EXT4_MB_FRSP_NO_OPTIMIZE)
            or ac.status != C.AC_STATUS_CONTINUE
        ):
            return None
        ac.num_optimizations = (ac.num_optimizations + 1) & 0xFF
        found = best = False
        ret: int | None = None
        lo, hi = 0, len(self.meta)
        while lo < hi:
            mid = (lo + hi) // 2
            neg, _s, idx = self.meta[mid]
            mx = -int(neg)
            self.costs.meta_visited += 1
            better, exact = self.ext4_mb_frsp_is_better(ac, mx)
            if better:
                found = True
                ret = int(idx)
                if exact:
                    best = True
                    break
            if mx > ac.g_len:
                lo = mid + 1
            else:
                hi = mid
        cache_more = False
        if ac.found == 0 and not found:
            if self.ext4_mb_frsp_should_cache(ac):
                cache_more = True
            elif ac.criteria < 2:
                ac.criteria += 1
                ac.groups_scanned = 0
                ret = 0
            else:
                ac.flags |= C.EXT4_MB_HINT_FIRST
        elif not best and self.uncached:
            cache_more = self.ext4_mb_frsp_should_cache(ac)
        if cache_more:
            idx = next(iter(self.uncached))
            del self.uncached[idx]
            self.trees[idx].list_node = None
            ret = idx
        if ret is None:
            ac.flags |= C.EXT4_MB_FRSP_NO_OPTIMIZE
        return ret

    def ext4_mb_tree_allocator(self, ac: _Ac) -> None:
        start_idx = ac.g_group >> self.geo.log_groups_per_flex
        self.ext4_mb_frsp_find_by_goal(ac)
        if ac.status == C.AC_STATUS_FOUND or ac.flags & C.EXT4_MB_HINT_GOAL_ONLY:
            return
        ac.criteria = 0
        ac.groups_scanned = 0
        r = self.ext4_mb_frsp_optimize(ac)
        if r is not None:
            start_idx = r
        while True:  # repeat:
            j = start_idx
            restart = False
            while ac.groups_scanned < self.ntrees and ac.status == C.AC_STATUS_CONTINUE:
                ac.groups_scanned += 1
                tree_idx = j % self.ntrees
                j += 1
                tree = self.ext4_mb_load_allocator(tree_idx * self.flex_size)
                self.ext4_mb_frsp_process(ac, tree)
                r = self.ext4_mb_frsp_optimize(ac)
                self.ext4_mb_unload_allocator(tree)
                if r is not None:
                    start_idx = r
                    restart = True
                    break
            if restart:
                continue
            if ac.status != C.AC_STATUS_FOUND:
                if ac.criteria < 2:
                    ac.criteria += 1
                    ac.groups_scanned = 0
                    ac.flags &= ~C.EXT4_MB_FRSP_NO_OPTIMIZE
                    continue
                if ac.bt_len > 0 and not ac.flags & C.EXT4_MB_HINT_FIRST:
                    tree = self.ext4_mb_load_allocator(ac.bt_flex * self.flex_size)
                    node = tree.search_by_off(ac.bt_start)
                    if node is not None:
                        self.ext4_mb_frsp_use_best_found(ac, ac.bt_flex, node[0])
                        self.ext4_mb_unload_allocator(tree)
                    else:
                        ac.bt_start = ac.bt_flex = ac.bt_len = 0
                        ac.status = C.AC_STATUS_CONTINUE
                        ac.flags |= C.EXT4_MB_HINT_FIRST
                        ac.groups_scanned = 0
                        self.ext4_mb_unload_allocator(tree)
                        continue
            return

    # -------------------------------------------------------------- frees, views
    def free(self, block: int, count: int) -> None:
        """``ext4_free_blocks`` → load the tree, ``mb_free_blocks`` →
        ``ext4_mb_frsp_free_blocks`` (add the region, merging)."""
        g, start = divmod(block - self.geo.first_data_block, self.bpg)
        tree = self.ext4_mb_load_allocator(g)
        self.bb_free[g] += count
        self.ext4_mb_frsp_add_region(tree, self.flex_offset(g, start), count)
        self.ext4_mb_unload_allocator(tree)

    def tree_runs(self, tree: FrspTree) -> dict[int, list[tuple[int, int]]]:
        """A loaded tree's nodes as group-relative runs per group."""
        out: dict[int, list[tuple[int, int]]] = {}
        for off, n in tree.nodes():
            g = tree.index * self.flex_size + off // self.bpg
            out.setdefault(g, []).append((off % self.bpg, n))
        return out


class _Ac:
    """The fields of ``ext4_allocation_context`` the tree allocator uses."""

    def __init__(self, a: FrspAllocator, req: AllocRequest):
        geo = a.geo
        goal = req.goal
        if goal < geo.first_data_block or goal >= geo.total_blocks:
            goal = geo.first_data_block
        g, off = divmod(goal - geo.first_data_block, geo.blocks_per_group)
        self.g_group = g
        self.g_start = off
        self.g_len = req.length
        self.goal_flex_off = a.flex_offset(g, off)
        # ext4_mb_initialize_context: free-space trees force NOPREALLOC
        self.flags = req.flags | C.EXT4_MB_HINT_NOPREALLOC
        self.status = C.AC_STATUS_CONTINUE
        self.criteria = 0
        self.found = 0
        self.groups_scanned = 0
        self.num_optimizations = 0
        self.bt_flex = 0
        self.bt_start = 0
        self.bt_len = 0
        self.by_goal = False
        self.res_group = self.res_start = self.res_len = 0
