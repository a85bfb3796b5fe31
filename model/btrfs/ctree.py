"""The btrfs B-tree algorithms of ``fs/btrfs/ctree.c`` (Linux 6.12) as an executable spec.

An in-memory tree whose inserts and deletes go through the kernel's own code paths —
``btrfs_search_slot`` with its top-down node splits (``setup_nodes_for_search``) and merges
(``balance_level``), ``split_leaf`` with its left/right pushes and double splits, the
"leaf less than a third full" rebalancing of ``btrfs_del_items`` — so that one sequence of
operations leaves the same tree shape (leaf boundaries, node splits, height) as the kernel.
Each function below carries the name of the kernel function it ports; read them side by
side with ``ctree.c``.

Model of the kernel's state:

* :class:`ExtentBuffer` is one tree block (``struct extent_buffer``): a leaf holds parallel
  lists of keys and item bodies (``bytes``), a node parallel lists of keys and child blocks.
  Item bodies are always packed from the end of the block with no gap (every kernel leaf
  operation keeps them so), so item offsets are implied by the sizes. A node's pointer
  generation always equals the child's header generation (COW, ``insert_ptr`` and
  ``insert_new_root`` keep them equal), so it is not stored.
* :class:`BtrfsTree` is ``struct btrfs_root`` together with the running transaction: the
  root node, the transaction id, and what the transaction did (blocks COWed, allocated,
  freed). ``should_cow_block`` holds: a block created (or COWed) in the running
  transaction and not yet written is not COWed again; :meth:`BtrfsTree.commit` ends the
  transaction (blocks become WRITTEN, the next transaction COWs them again).
* :class:`Path` is ``struct btrfs_path``: nodes, slots and locks per level. Locks are kept
  only as far as they decide the shape: ``btrfs_search_slot`` restarts (``goto again``)
  when its ``write_lock_level`` is too low to split, balance or COW, and a restart after
  a split can split again one level up, so ``write_lock_level`` and ``unlock_up`` are
  ported exactly. There is no concurrency; every block is "in memory", so the restarts of
  ``read_block_for_search`` for blocks not yet read from disk do not happen here.

Sizes are the on-disk ones: header 101 B, item header 25 B, key pointer 33 B,
``BTRFS_LEAF_DATA_SIZE = nodesize - 101``, ``BTRFS_NODEPTRS_PER_BLOCK = (nodesize - 101) //
33``. Return values follow the kernel: 0, 1, or a negative errno.

Left out on purpose: tree-mod log, qgroups, relocation trees, reada, the nowait and
commit-root search modes, ``btrfs_search_old_slot``, ``btrfs_search_forward``,
``btrfs_split_item`` / ``btrfs_duplicate_item`` (``setup_leaf_for_split``), and the
``-EAGAIN`` restarts for blocks that must first be read from disk.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from errno import EAGAIN, EEXIST, EOVERFLOW

from model.btrfs import constants as C
from model.btrfs.constants import BTRFS_ITEM_SIZE, BTRFS_MAX_LEVEL
from model.btrfs.items import FileExtentItem, Key
from model.btrfs.reader import BtrfsImage, TreeRoot
from model.btrfs.treeblock import btrfs_leaf_data_size, btrfs_nodeptrs_per_block
from model.linux import U32_MAX, U64

BTRFS_READ_LOCK = 1
BTRFS_WRITE_LOCK = 2


class CtreeBug(RuntimeError):
    """A ``BUG()``/``BUG_ON()`` of ctree.c was reached: the model (or its caller) broke an
    invariant the kernel relies on."""


class ExtentBuffer:
    """One tree block (``struct extent_buffer``), identified by the object and by
    ``bytenr``.

    Leaf (``level == 0``): ``keys[i]`` and ``data[i]`` are item i's key and body;
    ``nbytes`` caches the sum of the body sizes (change sizes only through the tree's
    functions, or call :meth:`recount`).
    Node: ``keys[i]`` and ``children[i]`` are pointer i's key and child block.
    ``flags`` is the header flags word (WRITTEN, RELOC, backref revision in bits 56-63).
    """

    __slots__ = (
        "bytenr",
        "children",
        "data",
        "flags",
        "generation",
        "keys",
        "level",
        "nbytes",
        "owner",
    )

    def __init__(self, bytenr: int, level: int, generation: int, owner: int, flags: int) -> None:
        self.bytenr = bytenr
        self.level = level
        self.generation = generation
        self.owner = owner
        self.flags = flags
        self.keys: list[Key] = []
        self.data: list[bytes] = []
        self.nbytes = 0
        self.children: list[ExtentBuffer] = []

    @property
    def nritems(self) -> int:
        """``btrfs_header_nritems()``."""
        return len(self.keys)

    @property
    def is_leaf(self) -> bool:
        return self.level == 0

    @property
    def written(self) -> bool:
        return bool(self.flags & C.HEADER_FLAG_WRITTEN)

    def items(self) -> list[tuple[Key, bytes]]:
        """A leaf's items as (key, body)."""
        return list(zip(self.keys, self.data, strict=True))

    def ptrs(self) -> list[tuple[Key, ExtentBuffer]]:
        """A node's pointers as (key, child)."""
        return list(zip(self.keys, self.children, strict=True))

    def recount(self) -> None:
        """Recompute ``nbytes`` after changing ``data`` directly."""
        self.nbytes = sum(map(len, self.data))

    def __repr__(self) -> str:
        kind = "leaf" if self.level == 0 else f"node(level {self.level})"
        first = self.keys[0] if self.keys else None
        return f"<{kind} {self.bytenr} items {len(self.keys)} first {first}>"


class Path:
    """``struct btrfs_path``: the block, slot and lock held at each level.

    ``visited`` counts the tree blocks this path's searches obtained: the root and every
    child read on the way down (``btrfs_search_slot``, ``btrfs_next_leaf``) — the reads a
    cold cache would do. Neighbours read to push or balance are counted in
    ``BtrfsTree.stats.sibling_reads``."""

    __slots__ = (
        "keep_locks",
        "locks",
        "lowest_level",
        "nodes",
        "search_for_extension",
        "search_for_split",
        "slots",
        "visited",
    )

    def __init__(self) -> None:
        self.nodes: list[ExtentBuffer | None] = [None] * BTRFS_MAX_LEVEL
        self.slots: list[int] = [0] * BTRFS_MAX_LEVEL
        self.locks: list[int] = [0] * BTRFS_MAX_LEVEL
        self.keep_locks = False
        self.lowest_level = 0
        self.search_for_split = False
        self.search_for_extension = False
        self.visited = 0

    def btrfs_release_path(self) -> None:
        """``btrfs_release_path()``: drop every level (slots back to 0)."""
        for i in range(BTRFS_MAX_LEVEL):
            self.slots[i] = 0
            self.nodes[i] = None
            self.locks[i] = 0

    @property
    def leaf(self) -> ExtentBuffer:
        leaf = self.nodes[0]
        if leaf is None:
            raise CtreeBug("path has no leaf")
        return leaf

    def node(self, level: int) -> ExtentBuffer:
        eb = self.nodes[level]
        if eb is None:
            raise CtreeBug(f"path has no block at level {level}")
        return eb


@dataclass
class CtreeStats:
    """Running counters (never reset by a commit): what a COW/mount-cost model needs."""

    searches: int = 0
    next_leaves: int = 0  # btrfs_next_leaf calls
    blocks_visited: int = 0  # root + children read by btrfs_search_slot / btrfs_next_leaf
    sibling_reads: int = 0  # btrfs_read_node_slot: neighbours read to push or balance
    search_restarts: int = 0  # btrfs_search_slot "goto again"
    cows: int = 0
    allocs: int = 0
    frees: int = 0
    leaf_splits: int = 0
    node_splits: int = 0
    new_roots: int = 0
    double_splits: int = 0
    push_leaf_right: int = 0
    push_leaf_left: int = 0
    balance_level: int = 0
    leaves_deleted: int = 0


@dataclass
class TransactionSummary:
    """What one transaction did to the tree (``BtrfsTree.commit`` returns it).

    ``cowed``: (old bytenr, new bytenr) of each COW. ``allocated``: every block allocated
    (COW copies, splits, new roots). ``freed``: blocks freed that existed before the
    transaction (their space is pinned until the commit). ``transient``: blocks both
    allocated and freed in this transaction (never written). ``dirty``: the blocks written
    at commit, i.e. the live blocks of this transaction's generation."""

    transid: int
    cowed: list[tuple[int, int]] = field(default_factory=list)
    allocated: list[int] = field(default_factory=list)
    freed: list[int] = field(default_factory=list)
    transient: list[int] = field(default_factory=list)
    dirty: list[int] = field(default_factory=list)


def _default_allocator(start: int, step: int) -> Callable[[], int]:
    nxt = start

    def alloc() -> int:
        nonlocal nxt
        b = nxt
        nxt += step
        return b

    return alloc


class BtrfsTree:
    """One btrfs tree (``struct btrfs_root``) and its running transaction.

    ``nodesize``: real filesystems use 4096..65536; smaller (down to 1024) is accepted so
    that tests reach deep trees with few items. ``cow=False`` behaves like
    ``btrfs_is_testing()``: ``should_cow_block`` is always false (blocks are changed in
    place, as an image writer wants). ``allocator`` returns the bytenr of each new block
    (default: increasing multiples of nodesize from ``first_bytenr``).

    ``read_log``: None, or a list to which every block the searches obtain is appended in
    order (the root, then each child read on the way down by ``btrfs_search_slot`` and
    ``btrfs_next_leaf``; repeats included): the order a cold cache reads them from disk.
    """

    def __init__(
        self,
        nodesize: int = 16384,
        root_id: int = C.FS_TREE_OBJECTID,
        *,
        transid: int = 1,
        cow: bool = True,
        allocator: Callable[[], int] | None = None,
        first_bytenr: int | None = None,
        create_root: bool = True,
    ) -> None:
        if nodesize < 1024:
            raise ValueError(f"nodesize {nodesize} is too small for the model (>= 1024)")
        self.nodesize = nodesize
        self.leaf_data_size = btrfs_leaf_data_size(nodesize)
        self.nodeptrs_per_block = btrfs_nodeptrs_per_block(nodesize)
        self.root_id = root_id
        self.transid = transid
        self.cow_enabled = cow
        if allocator is None:
            allocator = _default_allocator(
                first_bytenr if first_bytenr is not None else 16 * nodesize, nodesize
            )
        self.allocator = allocator
        self.stats = CtreeStats()
        self._trans = TransactionSummary(transid)
        self._live_new: dict[int, ExtentBuffer] = {}  # allocated this transaction, alive
        self.read_log: list[ExtentBuffer] | None = None
        self.node: ExtentBuffer
        if create_root:
            self.node = self.btrfs_alloc_tree_block(0)

    # ---- blocks and transactions -------------------------------------------------------

    def btrfs_alloc_tree_block(self, level: int) -> ExtentBuffer:
        """``btrfs_alloc_tree_block()`` + ``btrfs_init_new_buffer()``: a new empty block of
        this transaction (backref revision MIXED, owner = this tree)."""
        eb = ExtentBuffer(
            self.allocator(),
            level,
            self.transid,
            self.root_id,
            C.MIXED_BACKREF_REV << C.BACKREF_REV_SHIFT,
        )
        self.stats.allocs += 1
        self._trans.allocated.append(eb.bytenr)
        self._live_new[eb.bytenr] = eb
        return eb

    def btrfs_free_tree_block(self, eb: ExtentBuffer) -> None:
        """``btrfs_free_tree_block()``: a block of this transaction never written goes back
        at once (transient); an older one is freed at commit."""
        self.stats.frees += 1
        if self._live_new.pop(eb.bytenr, None) is not None:
            self._trans.transient.append(eb.bytenr)
        else:
            self._trans.freed.append(eb.bytenr)

    def should_cow_block(self, buf: ExtentBuffer) -> bool:
        """``should_cow_block()``: COW unless the block belongs to the running transaction
        and has not been written (no RELOC, no FORCE_COW in this model)."""
        if not self.cow_enabled:
            return False
        return not (buf.generation == self.transid and not buf.flags & C.HEADER_FLAG_WRITTEN)

    def btrfs_cow_block(
        self, buf: ExtentBuffer, parent: ExtentBuffer | None, parent_slot: int
    ) -> ExtentBuffer:
        """``btrfs_cow_block()``: the block to modify (``buf`` itself, or its COW copy)."""
        if not self.should_cow_block(buf):
            return buf
        return self.btrfs_force_cow_block(buf, parent, parent_slot)

    def btrfs_force_cow_block(
        self, buf: ExtentBuffer, parent: ExtentBuffer | None, parent_slot: int
    ) -> ExtentBuffer:
        """``btrfs_force_cow_block()``: copy ``buf`` into a new block of this transaction,
        point the parent (or the root) at it and free ``buf``."""
        cow = self.btrfs_alloc_tree_block(buf.level)
        cow.keys = list(buf.keys)
        cow.data = list(buf.data)
        cow.nbytes = buf.nbytes
        cow.children = list(buf.children)
        if buf is self.node:
            self.node = cow
        else:
            if parent is None:
                raise CtreeBug("COW of a non-root block without its parent")
            parent.children[parent_slot] = cow
        self.btrfs_free_tree_block(buf)
        self.stats.cows += 1
        self._trans.cowed.append((buf.bytenr, cow.bytenr))
        return cow

    def commit(self) -> TransactionSummary:
        """``btrfs_commit_transaction()`` for this tree: write the blocks of this
        transaction (they get the WRITTEN flag) and start the next one."""
        summary = self._trans
        for eb in self._live_new.values():
            eb.flags |= C.HEADER_FLAG_WRITTEN
        summary.dirty = sorted(self._live_new)
        self._live_new = {}
        self.transid += 1
        self._trans = TransactionSummary(self.transid)
        return summary

    @property
    def pending(self) -> TransactionSummary:
        """What the running transaction has done so far (not a copy)."""
        return self._trans

    # ---- reading ---------------------------------------------------------------------

    def btrfs_read_node_slot(self, parent: ExtentBuffer, slot: int) -> ExtentBuffer | None:
        """``btrfs_read_node_slot()``: the child in ``slot`` (None for -ENOENT)."""
        if slot < 0 or slot >= len(parent.keys):
            return None
        self.stats.sibling_reads += 1
        return parent.children[slot]

    def read_block_for_search(
        self, p: Path, parent: ExtentBuffer, level: int, slot: int
    ) -> ExtentBuffer:
        """``read_block_for_search()``: every block is cached, so never -EAGAIN."""
        p.visited += 1
        self.stats.blocks_visited += 1
        child = parent.children[slot]
        if self.read_log is not None:
            self.read_log.append(child)
        return child

    # ---- leaf space --------------------------------------------------------------------

    def leaf_space_used(self, leaf: ExtentBuffer, start: int, nr: int) -> int:
        """``leaf_space_used()``: bytes of item headers and bodies of items
        [start, start+nr). (As in the kernel, the header count is ``nr`` unclamped.)"""
        if not nr:
            return 0
        n = len(leaf.keys)
        if start == 0 and nr == n:
            return leaf.nbytes + BTRFS_ITEM_SIZE * nr
        end = min(n, start + nr)
        return sum(map(len, leaf.data[start:end])) + BTRFS_ITEM_SIZE * nr

    def btrfs_leaf_free_space(self, leaf: ExtentBuffer) -> int:
        """``btrfs_leaf_free_space()``."""
        n = len(leaf.keys)
        return self.leaf_data_size - (leaf.nbytes + BTRFS_ITEM_SIZE * n if n else 0)

    # ---- search ------------------------------------------------------------------------

    @staticmethod
    def btrfs_bin_search(eb: ExtentBuffer, first_slot: int, key: Key) -> tuple[int, int]:
        """``btrfs_bin_search()``: (0, slot) if ``key`` is in ``eb``, else (1, the slot it
        would be inserted at)."""
        keys = eb.keys
        slot = bisect.bisect_left(keys, key, first_slot)
        if slot < len(keys) and keys[slot] == key:
            return 0, slot
        return 1, slot

    def search_for_key_slot(
        self, eb: ExtentBuffer, search_low_slot: int, key: Key, prev_cmp: int
    ) -> tuple[int, int]:
        """``search_for_key_slot()``: an exact match above means slot 0 below."""
        if prev_cmp == 0:
            return 0, 0
        return self.btrfs_bin_search(eb, search_low_slot, key)

    def btrfs_search_slot_get_root(self, p: Path, write_lock_level: int) -> ExtentBuffer:
        """``btrfs_search_slot_get_root()``: the root node, read- or write-locked."""
        b = self.node
        level = b.level
        p.nodes[level] = b
        p.locks[level] = (
            BTRFS_READ_LOCK
            if write_lock_level < BTRFS_MAX_LEVEL and level > write_lock_level
            else BTRFS_WRITE_LOCK
        )
        p.visited += 1
        self.stats.blocks_visited += 1
        if self.read_log is not None:
            self.read_log.append(b)
        return b

    def unlock_up(
        self,
        path: Path,
        level: int,
        lowest_unlock: int,
        min_write_lock_level: int,
        write_lock_level: int | None,
    ) -> int | None:
        """``unlock_up()``: drop the locks above ``level`` that no slot-0 chain needs;
        returns the lowered ``write_lock_level`` (the kernel's ``*write_lock_level``)."""
        skip_level = level
        check_skip = True
        for i in range(level, BTRFS_MAX_LEVEL):
            if path.nodes[i] is None:
                break
            if not path.locks[i]:
                break
            if check_skip:
                if path.slots[i] == 0:
                    skip_level = i + 1
                    continue
                if path.keep_locks:
                    nritems = path.node(i).nritems
                    if nritems < 1 or path.slots[i] >= nritems - 1:
                        skip_level = i + 1
                        continue
            if i >= lowest_unlock and i > skip_level:
                check_skip = False
                path.locks[i] = 0
                if (
                    write_lock_level is not None
                    and write_lock_level
                    and i > min_write_lock_level
                    and i <= write_lock_level
                ):
                    write_lock_level = i - 1
        return write_lock_level

    def btrfs_search_slot(self, key: Key, p: Path, ins_len: int, cow: int) -> int:
        """``btrfs_search_slot()``: walk from the root to the leaf slot of ``key``.

        ``ins_len > 0``: inserting that many bytes (item header included, unless
        ``p.search_for_extension``): nodes nearly full are split on the way down and the
        leaf is split if it lacks the room. ``ins_len < 0``: deleting: nodes less than half
        full are balanced on the way down. ``cow``: COW every block of the path (once per
        transaction). Returns 0 (found), 1 (not found; slot is where it would go) or a
        negative errno."""
        if not cow and ins_len:
            raise CtreeBug("BUG_ON(!cow && ins_len)")
        self.stats.searches += 1
        lowest_level = p.lowest_level
        lowest_unlock = 1
        write_lock_level = 0
        if ins_len < 0:
            lowest_unlock = 2
            write_lock_level = 2
        elif ins_len > 0:
            write_lock_level = 1
        if not cow:
            write_lock_level = -1
        if cow and (p.keep_locks or p.lowest_level):
            write_lock_level = BTRFS_MAX_LEVEL
        min_write_lock_level = write_lock_level

        while True:  # again:
            prev_cmp = -1
            b: ExtentBuffer | None = self.btrfs_search_slot_get_root(p, write_lock_level)
            restart = False
            while b is not None:
                dec = 0
                level = b.level
                if cow and self.should_cow_block(b):
                    # must have write locks on this node and the parent
                    if level > write_lock_level or (
                        level + 1 > write_lock_level
                        and level + 1 < BTRFS_MAX_LEVEL
                        and p.nodes[level + 1] is not None
                    ):
                        write_lock_level = level + 1
                        p.btrfs_release_path()
                        restart = True
                        break
                    if level == BTRFS_MAX_LEVEL - 1:
                        b = self.btrfs_cow_block(b, None, 0)
                    else:
                        b = self.btrfs_cow_block(b, p.nodes[level + 1], p.slots[level + 1])
                p.nodes[level] = b

                if not ins_len and not p.keep_locks:
                    u = level + 1
                    if u < BTRFS_MAX_LEVEL and p.locks[u]:
                        p.locks[u] = 0

                if level == 0:
                    ret = self.search_leaf(key, p, ins_len, prev_cmp)
                    if not p.search_for_split:
                        self.unlock_up(p, level, lowest_unlock, min_write_lock_level, None)
                    return ret

                ret, slot = self.search_for_key_slot(b, 0, key, prev_cmp)
                prev_cmp = ret
                if ret and slot > 0:
                    dec = 1
                    slot -= 1
                p.slots[level] = slot
                err, write_lock_level = self.setup_nodes_for_search(
                    p, b, level, ins_len, write_lock_level
                )
                if err == -EAGAIN:
                    restart = True
                    break
                if err:
                    return err
                b = p.node(level)
                slot = p.slots[level]

                # slot 0 is special: changing its key changes the parent's
                if slot == 0 and ins_len and write_lock_level < level + 1:
                    write_lock_level = level + 1
                    p.btrfs_release_path()
                    restart = True
                    break

                wll = self.unlock_up(
                    p, level, lowest_unlock, min_write_lock_level, write_lock_level
                )
                assert wll is not None
                write_lock_level = wll

                if level == lowest_level:
                    if dec:
                        p.slots[level] += 1
                    return ret

                b = self.read_block_for_search(p, b, level, slot)
                p.locks[b.level] = (
                    BTRFS_WRITE_LOCK if b.level <= write_lock_level else BTRFS_READ_LOCK
                )
                p.nodes[b.level] = b
            if not restart:
                return 1
            self.stats.search_restarts += 1

    def search_leaf(self, key: Key, path: Path, ins_len: int, prev_cmp: int) -> int:
        """``search_leaf()``: the slot in the leaf, and ``split_leaf`` when an insert of
        ``ins_len`` bytes does not fit. (The kernel's shortcut comparing with the first key
        gives the same slot as the binary search.)"""
        leaf = path.leaf
        leaf_free_space = -1
        if ins_len > 0:
            leaf_free_space = self.btrfs_leaf_free_space(leaf)
        ret, path.slots[0] = self.search_for_key_slot(leaf, 0, key, prev_cmp)
        if ins_len > 0:
            # an existing key: only the item grows, no new item header
            if ret == 0 and not path.search_for_extension:
                ins_len -= BTRFS_ITEM_SIZE
            if leaf_free_space < ins_len:
                err = self.split_leaf(key, path, ins_len, ret == 0)
                if err:
                    ret = err
        return ret

    def setup_nodes_for_search(
        self, p: Path, b: ExtentBuffer, level: int, ins_len: int, write_lock_level: int
    ) -> tuple[int, int]:
        """``setup_nodes_for_search()``: split a node with ``>= NODEPTRS - 3`` pointers
        (inserts), balance one with ``< NODEPTRS / 2`` (deletes). Returns (error,
        write_lock_level); -EAGAIN means restart the search (path released)."""
        if (p.search_for_split or ins_len > 0) and b.nritems >= self.nodeptrs_per_block - 3:
            if write_lock_level < level + 1:
                p.btrfs_release_path()
                return -EAGAIN, level + 1
            return self.split_node(p, level), write_lock_level
        if ins_len < 0 and b.nritems < self.nodeptrs_per_block // 2:
            if write_lock_level < level + 1:
                p.btrfs_release_path()
                return -EAGAIN, level + 1
            ret = self.balance_level(p, level)
            if ret:
                return ret, write_lock_level
            nb = p.nodes[level]
            if nb is None:
                p.btrfs_release_path()
                return -EAGAIN, write_lock_level
            if nb.nritems == 1:
                raise CtreeBug("BUG_ON(btrfs_header_nritems(b) == 1) after balance_level")
        return 0, write_lock_level

    # ---- nodes -------------------------------------------------------------------------

    def fixup_low_keys(self, path: Path, key: Key, level: int) -> None:
        """``fixup_low_keys()``: set the key pointing at the path from ``level`` up, as long
        as the path goes through slot 0."""
        for i in range(level, BTRFS_MAX_LEVEL):
            t = path.nodes[i]
            if t is None:
                break
            tslot = path.slots[i]
            t.keys[tslot] = key
            if tslot != 0:
                break

    def push_node_left(self, dst: ExtentBuffer, src: ExtentBuffer, empty: int) -> int:
        """``push_node_left()``: move pointers from the front of ``src`` to the end of its
        left neighbour ``dst``; without ``empty`` leave at least 8 in ``src``."""
        src_nritems = len(src.keys)
        dst_nritems = len(dst.keys)
        push_items = self.nodeptrs_per_block - dst_nritems
        if not empty and src_nritems <= 8:
            return 1
        if push_items <= 0:
            return 1
        if empty:
            push_items = min(src_nritems, push_items)
            # leave at least 8 pointers in the node if we aren't going to empty it
            if push_items < src_nritems and src_nritems - push_items < 8:
                if push_items <= 8:
                    return 1
                push_items -= 8
        else:
            push_items = min(src_nritems - 8, push_items)
        dst.keys.extend(src.keys[:push_items])
        dst.children.extend(src.children[:push_items])
        del src.keys[:push_items]
        del src.children[:push_items]
        return 0

    def balance_node_right(self, dst: ExtentBuffer, src: ExtentBuffer) -> int:
        """``balance_node_right()``: move up to half (+1) of ``src``'s pointers from its end
        to the front of its right neighbour ``dst``; never empties ``src``."""
        src_nritems = len(src.keys)
        dst_nritems = len(dst.keys)
        push_items = self.nodeptrs_per_block - dst_nritems
        if push_items <= 0:
            return 1
        if src_nritems < 4:
            return 1
        max_push = src_nritems // 2 + 1
        if max_push >= src_nritems:
            return 1
        if max_push < push_items:
            push_items = max_push
        cut = src_nritems - push_items
        dst.keys[0:0] = src.keys[cut:]
        dst.children[0:0] = src.children[cut:]
        del src.keys[cut:]
        del src.children[cut:]
        return 0

    def insert_new_root(self, path: Path, level: int) -> int:
        """``insert_new_root()``: a new root at ``level`` with one pointer to the old."""
        if path.nodes[level] is not None or path.nodes[level - 1] is not self.node:
            raise CtreeBug("insert_new_root: path is not at the root")
        lower = path.node(level - 1)
        lower_key = lower.keys[0]
        c = self.btrfs_alloc_tree_block(level)
        c.keys.append(lower_key)
        c.children.append(lower)
        self.node = c
        self.stats.new_roots += 1
        path.nodes[level] = c
        path.locks[level] = BTRFS_WRITE_LOCK
        path.slots[level] = 0
        return 0

    def insert_ptr(self, path: Path, key: Key, child: ExtentBuffer, slot: int, level: int) -> int:
        """``insert_ptr()``: insert a pointer at ``slot`` of the path's node at ``level``
        (which must have room)."""
        lower = path.node(level)
        nritems = len(lower.keys)
        if slot > nritems:
            raise CtreeBug("insert_ptr: slot > nritems")
        if nritems == self.nodeptrs_per_block:
            raise CtreeBug("insert_ptr: node is full")
        lower.keys.insert(slot, key)
        lower.children.insert(slot, child)
        return 0

    def split_node(self, path: Path, level: int) -> int:
        """``split_node()``: make room in the path's node at ``level``: a new root if it is
        the root, else push to the neighbours (``push_nodes_for_insert``) and, if it is
        still at ``NODEPTRS - 3`` or more, split it at ``(nritems + 1) / 2``."""
        c = path.node(level)
        if c is self.node:
            ret = self.insert_new_root(path, level + 1)
            if ret:
                return ret
        else:
            ret = self.push_nodes_for_insert(path, level)
            c = path.node(level)
            if not ret and c.nritems < self.nodeptrs_per_block - 3:
                return 0
            if ret < 0:
                return ret
        c_nritems = len(c.keys)
        mid = (c_nritems + 1) // 2
        disk_key = c.keys[mid]
        split = self.btrfs_alloc_tree_block(level)
        self.stats.node_splits += 1
        split.keys = c.keys[mid:]
        split.children = c.children[mid:]
        del c.keys[mid:]
        del c.children[mid:]
        self.insert_ptr(path, disk_key, split, path.slots[level + 1] + 1, level + 1)
        if path.slots[level] >= mid:
            path.slots[level] -= mid
            path.nodes[level] = split
            path.slots[level + 1] += 1
        return 0

    def push_nodes_for_insert(self, path: Path, level: int) -> int:
        """``push_nodes_for_insert()``: try to make room in a full node by pushing pointers
        into its left, then its right neighbour (neither must be nearly full). Returns 0 if
        a push happened (the path follows the target slot), 1 otherwise."""
        orig_slot = path.slots[level]
        if level == 0:
            return 1
        mid = path.node(level)
        parent = path.nodes[level + 1] if level < BTRFS_MAX_LEVEL - 1 else None
        if parent is None:
            return 1
        pslot = path.slots[level + 1]

        if pslot:
            left = self.btrfs_read_node_slot(parent, pslot - 1)
            assert left is not None
            left_nr = left.nritems
            if left_nr >= self.nodeptrs_per_block - 1:
                wret = 1
            else:
                left = self.btrfs_cow_block(left, parent, pslot - 1)
                wret = self.push_node_left(left, mid, 0)
            if wret == 0:
                orig_slot += left_nr
                parent.keys[pslot] = mid.keys[0]
                if left.nritems > orig_slot:
                    path.nodes[level] = left
                    path.slots[level + 1] -= 1
                    path.slots[level] = orig_slot
                else:
                    orig_slot -= left.nritems
                    path.slots[level] = orig_slot
                return 0

        if pslot + 1 < parent.nritems:
            right = self.btrfs_read_node_slot(parent, pslot + 1)
            assert right is not None
            right_nr = right.nritems
            if right_nr >= self.nodeptrs_per_block - 1:
                wret = 1
            else:
                right = self.btrfs_cow_block(right, parent, pslot + 1)
                wret = self.balance_node_right(right, mid)
            if wret == 0:
                parent.keys[pslot + 1] = right.keys[0]
                if mid.nritems <= orig_slot:
                    path.nodes[level] = right
                    path.slots[level + 1] += 1
                    path.slots[level] = orig_slot - mid.nritems
                return 0
        return 1

    def balance_level(self, path: Path, level: int) -> int:
        """``balance_level()``: on the way down for a delete. A root with one pointer is
        replaced by its child; a node with at most ``NODEPTRS / 4`` pointers is merged
        into its left neighbour, takes its right neighbour's pointers, and is freed if it
        empties (a node is never left with a single pointer)."""
        self.stats.balance_level += 1
        mid = path.node(level)
        orig_slot = path.slots[level]
        orig_ptr = mid.children[orig_slot]
        parent = path.nodes[level + 1] if level < BTRFS_MAX_LEVEL - 1 else None
        pslot = path.slots[level + 1] if parent is not None else 0

        if parent is None:
            if mid.nritems != 1:
                return 0
            # promote the child to a root
            child = self.btrfs_read_node_slot(mid, 0)
            assert child is not None
            child = self.btrfs_cow_block(child, mid, 0)
            self.node = child
            path.locks[level] = 0
            path.nodes[level] = None
            self.btrfs_free_tree_block(mid)
            return 0
        if mid.nritems > self.nodeptrs_per_block // 4:
            return 0

        left: ExtentBuffer | None = None
        right: ExtentBuffer | None = None
        if pslot:
            left = self.btrfs_read_node_slot(parent, pslot - 1)
            assert left is not None
            left = self.btrfs_cow_block(left, parent, pslot - 1)
        if pslot + 1 < parent.nritems:
            right = self.btrfs_read_node_slot(parent, pslot + 1)
            assert right is not None
            right = self.btrfs_cow_block(right, parent, pslot + 1)

        # first, try to make some room in the middle buffer
        if left is not None:
            orig_slot += left.nritems
            self.push_node_left(left, mid, 1)

        # then try to empty the right most buffer into the middle
        if right is not None:
            self.push_node_left(mid, right, 1)
            if right.nritems == 0:
                self.btrfs_del_ptr(path, level + 1, pslot + 1)
                self.btrfs_free_tree_block(right)
                right = None
            else:
                parent.keys[pslot + 1] = right.keys[0]

        if mid.nritems == 1:
            # never leave a node with one pointer: pull some from the left
            if left is None:
                raise CtreeBug("missing left child when middle child only has 1 item")
            wret = self.balance_node_right(mid, left)
            if wret == 1:
                wret = self.push_node_left(left, mid, 1)
            if wret == 1:
                raise CtreeBug("BUG_ON(wret == 1) in balance_level")

        mid_alive: ExtentBuffer | None = mid
        if mid.nritems == 0:
            self.btrfs_del_ptr(path, level + 1, pslot)
            self.btrfs_free_tree_block(mid)
            mid_alive = None
        else:
            parent.keys[pslot] = mid.keys[0]

        # update the path
        if left is not None:
            if left.nritems > orig_slot:
                path.nodes[level] = left
                path.slots[level + 1] -= 1
                path.slots[level] = orig_slot
            else:
                orig_slot -= left.nritems
                path.slots[level] = orig_slot
        cur = path.nodes[level]
        if (
            cur is None
            or (cur is mid and mid_alive is None)
            or cur.children[path.slots[level]] is not orig_ptr
        ):
            raise CtreeBug("balance_level lost the path's pointer")
        return 0

    def btrfs_del_ptr(self, path: Path, level: int, slot: int) -> int:
        """``btrfs_del_ptr()``: remove pointer ``slot`` of the path's node at ``level``; an
        emptied level-1 root becomes an empty leaf."""
        parent = path.node(level)
        removed = parent.keys[slot]
        del parent.keys[slot]
        del parent.children[slot]
        if not parent.keys and parent is self.node:
            if parent.level != 1:
                raise CtreeBug("BUG_ON(btrfs_header_level(root->node) != 1)")
            parent.level = 0  # just turn the root into a leaf
        elif slot == 0:
            # (an emptied non-root node keeps its stale key 0: the one just removed)
            self.fixup_low_keys(path, parent.keys[0] if parent.keys else removed, level + 1)
        return 0

    # ---- leaves: pushing and splitting -------------------------------------------------

    def __push_leaf_right(
        self,
        path: Path,
        data_size: int,
        empty: int,
        right: ExtentBuffer,
        free_space: int,
        left_nritems: int,
        min_slot: int,
    ) -> int:
        """``__push_leaf_right()``: move items from the end of the path's leaf to the front
        of ``right`` (``free_space`` free), down to ``min_slot`` (at least one item stays
        unless ``empty``). Stops before the insertion slot once moving it would leave the
        left leaf with more room than the right."""
        left = path.leaf
        upper = path.node(1)
        nr = 0 if empty else max(1, min_slot)
        push_space = 0
        push_items = 0
        if path.slots[0] >= left_nritems:
            push_space += data_size
        slot = path.slots[1]
        i = left_nritems - 1
        while i >= nr:
            if not empty and push_items > 0:
                if path.slots[0] > i:
                    break
                if path.slots[0] == i:
                    space = self.btrfs_leaf_free_space(left)
                    if space + push_space * 2 > free_space:
                        break
            if path.slots[0] == i:
                push_space += data_size
            this_item_size = len(left.data[i])
            if this_item_size + BTRFS_ITEM_SIZE + push_space > free_space:
                break
            push_items += 1
            push_space += this_item_size + BTRFS_ITEM_SIZE
            if i == 0:
                break
            i -= 1

        if push_items == 0:
            return 1
        self.stats.push_leaf_right += 1
        cut = left_nritems - push_items
        moved = sum(map(len, left.data[cut:]))
        right.keys[0:0] = left.keys[cut:]
        right.data[0:0] = left.data[cut:]
        del left.keys[cut:]
        del left.data[cut:]
        left.nbytes -= moved
        right.nbytes += moved
        left_nritems = cut
        upper.keys[slot + 1] = right.keys[0]

        # then fixup the leaf pointer in the path
        if path.slots[0] >= left_nritems:
            path.slots[0] -= left_nritems
            path.nodes[0] = right
            path.slots[1] += 1
        return 0

    def push_leaf_right(
        self, path: Path, min_data_size: int, data_size: int, empty: int, min_slot: int
    ) -> int:
        """``push_leaf_right()``: returns 0 if items moved (or the insert moved to the
        right neighbour), 1 if the right neighbour has no room (``data_size``)."""
        left = path.leaf
        upper = path.nodes[1]
        if upper is None:
            return 1
        slot = path.slots[1]
        if slot >= upper.nritems - 1:
            return 1
        right = self.btrfs_read_node_slot(upper, slot + 1)
        assert right is not None
        free_space = self.btrfs_leaf_free_space(right)
        if free_space < data_size:
            return 1
        right = self.btrfs_cow_block(right, upper, slot + 1)
        left_nritems = left.nritems
        if left_nritems == 0:
            return 1
        if path.slots[0] == left_nritems and not empty:
            # key greater than all keys in the leaf and the right neighbour has room:
            # insert there, without touching the left leaf
            path.nodes[0] = right
            path.slots[0] = 0
            path.slots[1] += 1
            return 0
        return self.__push_leaf_right(
            path, min_data_size, empty, right, free_space, left_nritems, min_slot
        )

    def __push_leaf_left(
        self,
        path: Path,
        data_size: int,
        empty: int,
        left: ExtentBuffer,
        free_space: int,
        right_nritems: int,
        max_slot: int,
    ) -> int:
        """``__push_leaf_left()``: move items from the front of the path's leaf to the end
        of ``left`` (``free_space`` free), not past ``max_slot`` (at least one item stays
        unless ``empty``), with the same stop rule at the insertion slot."""
        right = path.leaf
        if empty:
            nr = min(right_nritems, max_slot)
        else:
            nr = min(right_nritems - 1, max_slot)
        push_space = 0
        push_items = 0
        for i in range(nr):
            if not empty and push_items > 0:
                if path.slots[0] < i:
                    break
                if path.slots[0] == i:
                    space = self.btrfs_leaf_free_space(right)
                    if space + push_space * 2 > free_space:
                        break
            if path.slots[0] == i:
                push_space += data_size
            this_item_size = len(right.data[i])
            if this_item_size + BTRFS_ITEM_SIZE + push_space > free_space:
                break
            push_items += 1
            push_space += this_item_size + BTRFS_ITEM_SIZE

        if push_items == 0:
            return 1
        self.stats.push_leaf_left += 1
        old_left_nritems = left.nritems
        if old_left_nritems <= 0:
            raise CtreeBug("BUG_ON(old_left_nritems <= 0)")
        stale_key0 = right.keys[0]
        moved = sum(map(len, right.data[:push_items]))
        left.keys.extend(right.keys[:push_items])
        left.data.extend(right.data[:push_items])
        del right.keys[:push_items]
        del right.data[:push_items]
        left.nbytes += moved
        right.nbytes -= moved
        # an emptied leaf still has its old item 0 header: that key goes up
        self.fixup_low_keys(path, right.keys[0] if right.keys else stale_key0, 1)

        # then fixup the leaf pointer in the path
        if path.slots[0] < push_items:
            path.slots[0] += old_left_nritems
            path.nodes[0] = left
            path.slots[1] -= 1
        else:
            path.slots[0] -= push_items
        if path.slots[0] < 0:
            raise CtreeBug("BUG_ON(path->slots[0] < 0)")
        return 0

    def push_leaf_left(
        self, path: Path, min_data_size: int, data_size: int, empty: int, max_slot: int
    ) -> int:
        """``push_leaf_left()``: returns 0 if items moved, 1 if the left neighbour has no
        room (``data_size``) or there is none."""
        right = path.leaf
        slot = path.slots[1]
        if slot == 0:
            return 1
        upper = path.nodes[1]
        if upper is None:
            return 1
        right_nritems = right.nritems
        if right_nritems == 0:
            return 1
        left = self.btrfs_read_node_slot(upper, slot - 1)
        assert left is not None
        free_space = self.btrfs_leaf_free_space(left)
        if free_space < data_size:
            return 1
        left = self.btrfs_cow_block(left, upper, slot - 1)
        return self.__push_leaf_left(
            path, min_data_size, empty, left, free_space, right_nritems, max_slot
        )

    def copy_for_split(
        self,
        path: Path,
        leaf: ExtentBuffer,
        right: ExtentBuffer,
        slot: int,
        mid: int,
        nritems: int,
    ) -> int:
        """``copy_for_split()``: move items [mid, nritems) of ``leaf`` into the new leaf
        ``right``, link it after ``leaf``; the path follows ``slot``."""
        if mid >= nritems:
            raise CtreeBug("copy_for_split would leave the new leaf empty")
        right.keys = leaf.keys[mid:]
        right.data = leaf.data[mid:]
        right.recount()
        del leaf.keys[mid:]
        del leaf.data[mid:]
        leaf.nbytes -= right.nbytes
        self.insert_ptr(path, right.keys[0], right, path.slots[1] + 1, 1)
        if path.slots[0] != slot:
            raise CtreeBug("BUG_ON(path->slots[0] != slot)")
        if mid <= slot:
            path.nodes[0] = right
            path.slots[0] -= mid
            path.slots[1] += 1
        return 0

    def push_for_double_split(self, path: Path, data_size: int) -> int:
        """``push_for_double_split()``: before splitting a leaf twice around a big item,
        push the items after the slot right, then those before it left."""
        progress = 0
        leaf = path.leaf
        slot = path.slots[0]
        space_needed = data_size
        if slot < leaf.nritems:
            space_needed -= self.btrfs_leaf_free_space(leaf)
        ret = self.push_leaf_right(path, 1, space_needed, 0, slot)
        if ret < 0:
            return ret
        if ret == 0:
            progress += 1
        leaf = path.leaf
        nritems = leaf.nritems
        # our goal is to get our slot at the start or end of a leaf
        if path.slots[0] == 0 or path.slots[0] == nritems:
            return 0
        if self.btrfs_leaf_free_space(leaf) >= data_size:
            return 0
        slot = path.slots[0]
        space_needed = data_size
        if slot > 0:
            space_needed -= self.btrfs_leaf_free_space(leaf)
        ret = self.push_leaf_left(path, 1, space_needed, 0, slot)
        if ret < 0:
            return ret
        if ret == 0:
            progress += 1
        return 0 if progress else 1

    def split_leaf(self, ins_key: Key, path: Path, data_size: int, extend: int) -> int:
        """``split_leaf()``: make ``data_size`` bytes of room at the path's slot.

        First push right, then left; then split: at ``mid = (nritems + 1) / 2`` (split=1),
        or at the slot when the half with the slot would still be too full, with a new
        empty leaf for the item when the slot is at an end (split=0), or twice around a big
        item in the middle (split=2) after ``push_for_double_split`` failed to avoid it."""
        lds = self.leaf_data_size
        leaf = path.leaf
        slot = path.slots[0]
        if extend and data_size + len(leaf.data[slot]) + BTRFS_ITEM_SIZE > lds:
            return -EOVERFLOW

        # first try to make some room by pushing left and right
        if data_size and path.nodes[1] is not None:
            space_needed = data_size
            if slot < leaf.nritems:
                space_needed -= self.btrfs_leaf_free_space(leaf)
            wret = self.push_leaf_right(path, space_needed, space_needed, 0, 0)
            if wret < 0:
                return wret
            if wret:
                space_needed = data_size
                if slot > 0:
                    space_needed -= self.btrfs_leaf_free_space(leaf)
                wret = self.push_leaf_left(path, space_needed, space_needed, 0, U32_MAX)
                if wret < 0:
                    return wret
            leaf = path.leaf
            # did the pushes work?
            if self.btrfs_leaf_free_space(leaf) >= data_size:
                return 0

        if path.nodes[1] is None:
            ret = self.insert_new_root(path, 1)
            if ret:
                return ret

        num_doubles = 0
        tried_avoid_double = 0
        while True:  # again:
            split = 1
            leaf = path.leaf
            slot = path.slots[0]
            nritems = leaf.nritems
            mid = (nritems + 1) // 2
            push_for_double = False
            if mid <= slot:
                if nritems == 1 or self.leaf_space_used(leaf, mid, nritems - mid) + data_size > lds:
                    if slot >= nritems:
                        split = 0
                    else:
                        mid = slot
                        if (
                            mid != nritems
                            and self.leaf_space_used(leaf, mid, nritems - mid) + data_size > lds
                        ):
                            if data_size and not tried_avoid_double:
                                push_for_double = True
                            else:
                                split = 2
            else:
                if self.leaf_space_used(leaf, 0, mid) + data_size > lds:
                    if not extend and data_size and slot == 0:
                        split = 0
                    elif (extend or not data_size) and slot == 0:
                        mid = 1
                    else:
                        mid = slot
                        if (
                            mid != nritems
                            and self.leaf_space_used(leaf, mid, nritems - mid) + data_size > lds
                        ):
                            if data_size and not tried_avoid_double:
                                push_for_double = True
                            else:
                                split = 2

            if push_for_double:
                self.push_for_double_split(path, data_size)
                tried_avoid_double = 1
                if self.btrfs_leaf_free_space(path.leaf) >= data_size:
                    return 0
                continue

            disk_key = ins_key if split == 0 else leaf.keys[mid]
            right = self.btrfs_alloc_tree_block(0)
            self.stats.leaf_splits += 1
            if split == 0:
                if mid <= slot:
                    self.insert_ptr(path, disk_key, right, path.slots[1] + 1, 1)
                    path.nodes[0] = right
                    path.slots[0] = 0
                    path.slots[1] += 1
                else:
                    self.insert_ptr(path, disk_key, right, path.slots[1], 1)
                    path.nodes[0] = right
                    path.slots[0] = 0
                    if path.slots[1] == 0:
                        self.fixup_low_keys(path, disk_key, 1)
                return 0

            self.copy_for_split(path, leaf, right, slot, mid, nritems)
            if split == 2:
                if num_doubles != 0:
                    raise CtreeBug("BUG_ON(num_doubles != 0)")
                num_doubles += 1
                self.stats.double_splits += 1
                continue
            return 0

    # ---- leaves: item operations -------------------------------------------------------

    def btrfs_truncate_item(self, path: Path, new_size: int, from_end: int) -> None:
        """``btrfs_truncate_item()``: shrink the path's item to ``new_size``. ``from_end``
        keeps its first bytes; otherwise its last bytes are kept and the key offset grows
        by the cut (an inline EXTENT_DATA keeps its 21-byte header)."""
        leaf = path.leaf
        slot = path.slots[0]
        old = leaf.data[slot]
        old_size = len(old)
        if old_size == new_size:
            return
        if slot < 0 or slot >= leaf.nritems:
            raise CtreeBug("btrfs_truncate_item: bad slot")
        if new_size > old_size:
            raise CtreeBug("btrfs_truncate_item: new size larger than the item")
        size_diff = old_size - new_size
        leaf.nbytes -= size_diff
        if from_end:
            leaf.data[slot] = old[:new_size]
        else:
            key = leaf.keys[slot]
            if (
                key.type == C.EXTENT_DATA_KEY
                and len(old) > FileExtentItem.TYPE_OFFSET
                and old[FileExtentItem.TYPE_OFFSET] == C.FILE_EXTENT_INLINE
            ):
                hdr = FileExtentItem.INLINE_DATA_START
                if new_size < hdr:  # the kernel's memmove of the header would overrun
                    raise CtreeBug("btrfs_truncate_item: inline extent cut below its header")
                leaf.data[slot] = old[:hdr] + old[size_diff + hdr :]
            else:
                leaf.data[slot] = old[size_diff:]
            new_key = Key(key.objectid, key.type, key.offset + size_diff)
            leaf.keys[slot] = new_key
            if slot == 0:
                self.fixup_low_keys(path, new_key, 1)
        if self.btrfs_leaf_free_space(leaf) < 0:
            raise CtreeBug("leaf free space < 0 after truncate")

    def btrfs_extend_item(self, path: Path, data_size: int) -> None:
        """``btrfs_extend_item()``: grow the path's item by ``data_size`` bytes at its end
        (zeros here; the kernel leaves stale bytes for the caller to overwrite)."""
        leaf = path.leaf
        if self.btrfs_leaf_free_space(leaf) < data_size:
            raise CtreeBug("btrfs_extend_item: not enough free space")
        slot = path.slots[0]
        if slot < 0 or slot >= leaf.nritems:
            raise CtreeBug(f"slot {slot} too large, nritems {leaf.nritems}")
        leaf.data[slot] = leaf.data[slot] + bytes(data_size)
        leaf.nbytes += data_size

    def setup_items_for_insert(self, path: Path, batch: Sequence[tuple[Key, bytes]]) -> None:
        """``setup_items_for_insert()``: put ``batch`` (keys and bodies, sorted) at the
        path's slot; the leaf must have the room."""
        if path.slots[0] == 0:
            self.fixup_low_keys(path, batch[0][0], 1)
        leaf = path.leaf
        slot = path.slots[0]
        total_size = sum(len(d) for _, d in batch) + len(batch) * BTRFS_ITEM_SIZE
        if self.btrfs_leaf_free_space(leaf) < total_size:
            raise CtreeBug(
                f"not enough freespace need {total_size} have {self.btrfs_leaf_free_space(leaf)}"
            )
        leaf.keys[slot:slot] = [k for k, _ in batch]
        leaf.data[slot:slot] = [bytes(d) for _, d in batch]
        leaf.nbytes += total_size - len(batch) * BTRFS_ITEM_SIZE

    def btrfs_insert_empty_items(self, path: Path, batch: Sequence[tuple[Key, bytes]]) -> int:
        """``btrfs_insert_empty_items()``: search with ``ins_len`` = bodies + item headers
        and insert. The kernel's batch carries sizes; here it carries the bodies. Returns
        0, -EEXIST (the first key exists; the path points at it) or another error."""
        total_size = sum(len(d) for _, d in batch) + len(batch) * BTRFS_ITEM_SIZE
        ret = self.btrfs_search_slot(batch[0][0], path, total_size, 1)
        if ret == 0:
            return -EEXIST
        if ret < 0:
            return ret
        self.setup_items_for_insert(path, batch)
        return 0

    def btrfs_insert_empty_item(self, path: Path, key: Key, data_size: int) -> int:
        """``btrfs_insert_empty_item()``: one zero-filled item of ``data_size`` bytes."""
        return self.btrfs_insert_empty_items(path, [(key, bytes(data_size))])

    def btrfs_insert_item(self, key: Key, data: bytes) -> int:
        """``btrfs_insert_item()``: insert one item (0 or -EEXIST)."""
        return self.btrfs_insert_empty_items(Path(), [(key, data)])

    def btrfs_del_leaf(self, path: Path, leaf: ExtentBuffer) -> int:
        """``btrfs_del_leaf()``: unlink the path's (empty) leaf and free it."""
        self.btrfs_del_ptr(path, 1, path.slots[1])
        self.btrfs_free_tree_block(leaf)
        self.stats.leaves_deleted += 1
        return 0

    def btrfs_del_items(self, path: Path, slot: int, nr: int) -> int:
        """``btrfs_del_items()``: delete items [slot, slot+nr) of the path's leaf. An
        emptied leaf is unlinked; one less than a third full is pushed into its left
        neighbour, and if items remain, all of them into its right one (or none), and is
        unlinked if that emptied it."""
        leaf = path.leaf
        leaf.nbytes -= sum(map(len, leaf.data[slot : slot + nr]))
        del leaf.keys[slot : slot + nr]
        del leaf.data[slot : slot + nr]
        nritems = len(leaf.keys)
        if nritems == 0:
            if leaf is self.node:
                leaf.level = 0
            else:
                return self.btrfs_del_leaf(path, leaf)
            return 0
        used = self.leaf_space_used(leaf, 0, nritems)
        if slot == 0:
            self.fixup_low_keys(path, leaf.keys[0], 1)
        if used < self.leaf_data_size // 3:
            # push_leaf_left fixes the path; remember our leaf's slot for btrfs_del_ptr
            slot = path.slots[1]
            # at least the first item must fit in the left neighbour
            min_push_space = BTRFS_ITEM_SIZE + len(leaf.data[0])
            self.push_leaf_left(path, 0, min_push_space, 1, U32_MAX)
            if path.nodes[0] is leaf and leaf.nritems:
                # all the remaining items go right, or none
                nritems = leaf.nritems
                min_push_space = self.leaf_space_used(leaf, 0, nritems)
                self.push_leaf_right(path, 0, min_push_space, 1, 0)
            if leaf.nritems == 0:
                path.slots[1] = slot
                return self.btrfs_del_leaf(path, leaf)
        return 0

    def btrfs_del_item(self, path: Path) -> int:
        """``btrfs_del_item()``: delete the path's item."""
        return self.btrfs_del_items(path, path.slots[0], 1)

    # ---- walking -----------------------------------------------------------------------

    def btrfs_next_leaf(self, path: Path) -> int:
        """``btrfs_next_leaf()`` (``btrfs_next_old_leaf`` without a time_seq): move the path
        to the first item of the next leaf. 0, or 1 at the end of the tree."""
        self.stats.next_leaves += 1
        nritems = path.leaf.nritems
        if nritems == 0:
            return 1
        key = path.leaf.keys[nritems - 1]
        level = 1
        path.btrfs_release_path()
        path.keep_locks = True
        ret = self.btrfs_search_slot(key, path, 0, 0)
        path.keep_locks = False
        if ret < 0:
            return ret
        nritems = path.leaf.nritems
        if nritems > 0 and path.slots[0] < nritems - 1:
            if ret == 0:
                path.slots[0] += 1
            return 0
        if nritems > 0 and ret > 0 and path.slots[0] == nritems - 1:
            return 0

        nxt: ExtentBuffer | None = None
        slot = 0
        while level < BTRFS_MAX_LEVEL:
            c = path.nodes[level]
            if c is None:
                return 1
            slot = path.slots[level] + 1
            if slot >= c.nritems:
                level += 1
                if level == BTRFS_MAX_LEVEL:
                    return 1
                continue
            for i in range(level):
                path.locks[i] = 0
                path.nodes[i] = None
            nxt = self.read_block_for_search(path, c, level, slot)
            break
        assert nxt is not None
        path.slots[level] = slot
        while True:
            level -= 1
            path.nodes[level] = nxt
            path.slots[level] = 0
            path.locks[level] = BTRFS_READ_LOCK
            if not level:
                break
            nxt = self.read_block_for_search(path, nxt, level, 0)
        return 0

    def btrfs_get_next_valid_item(self, path: Path) -> Key | None:
        """``btrfs_get_next_valid_item()``: the key at the path's slot, moving to the next
        leaf (``btrfs_next_leaf``) while the slot is past the end of its leaf; None at the
        end of the tree (the kernel's return value 1)."""
        while True:
            leaf = path.leaf
            if path.slots[0] < leaf.nritems:
                return leaf.keys[path.slots[0]]
            if self.btrfs_next_leaf(path):
                return None

    def btrfs_next_item(self, path: Path) -> int:
        """``btrfs_next_item()``."""
        path.slots[0] += 1
        if path.slots[0] >= path.leaf.nritems:
            return self.btrfs_next_leaf(path)
        return 0

    def btrfs_prev_leaf(self, path: Path) -> int:
        """``btrfs_prev_leaf()``: search for the key just before the leaf's first key."""
        leaf = path.leaf
        orig_key = leaf.keys[0]
        objectid, typ, offset = orig_key.objectid, orig_key.type, orig_key.offset
        if offset > 0:
            offset -= 1
        elif typ > 0:
            typ -= 1
            offset = U64
        elif objectid > 0:
            objectid -= 1
            typ = 0xFF
            offset = U64
        else:
            return 1
        key = Key(objectid, typ, offset)
        path.btrfs_release_path()
        ret = self.btrfs_search_slot(key, path, 0, 0)
        if ret <= 0:
            return ret
        leaf = path.leaf
        if path.slots[0] < leaf.nritems and leaf.keys[path.slots[0]] == orig_key:
            if path.slots[0] > 0:
                path.slots[0] -= 1
                return 0
            return 1
        if leaf.nritems and leaf.keys[0] <= key:
            return 0
        return 1

    def btrfs_previous_item(self, path: Path, min_objectid: int, type_: int) -> int:
        """``btrfs_previous_item()``: walk back to the previous item of ``type_`` not
        below ``min_objectid``. 0 found, 1 not found."""
        while True:
            if path.slots[0] == 0:
                ret = self.btrfs_prev_leaf(path)
                if ret != 0:
                    return ret
            else:
                path.slots[0] -= 1
            leaf = path.leaf
            nritems = leaf.nritems
            if nritems == 0:
                return 1
            if path.slots[0] == nritems:
                path.slots[0] -= 1
            found = leaf.keys[path.slots[0]]
            if found.objectid < min_objectid:
                break
            if found.type == type_:
                return 0
            if found.objectid == min_objectid and found.type < type_:
                break
        return 1

    # ---- conveniences (not kernel functions) -------------------------------------------

    def lookup(self, key: Key) -> bytes | None:
        """The body of ``key``, or None: a read-only ``btrfs_search_slot``."""
        p = Path()
        if self.btrfs_search_slot(key, p, 0, 0) == 0:
            return p.leaf.data[p.slots[0]]
        return None

    def delete(self, key: Key) -> bool:
        """Search with ``ins_len = -1`` and ``btrfs_del_item`` (False if absent)."""
        p = Path()
        ret = self.btrfs_search_slot(key, p, -1, 1)
        if ret != 0:
            return False
        self.btrfs_del_item(p)
        return True

    def height(self) -> int:
        return self.node.level + 1

    def iter_blocks(self) -> Iterator[ExtentBuffer]:
        """Every block, depth first in key order, parents before children."""
        stack = [self.node]
        while stack:
            eb = stack.pop()
            yield eb
            if eb.level:
                stack.extend(reversed(eb.children))

    def leaves(self) -> Iterator[ExtentBuffer]:
        """The leaves in key order."""
        return (eb for eb in self.iter_blocks() if eb.level == 0)

    def iter_items(self) -> Iterator[tuple[Key, bytes]]:
        for leaf in self.leaves():
            yield from zip(leaf.keys, leaf.data, strict=True)

    def shape(self) -> list[list[tuple[Key | None, int]]]:
        """Per level from the root down: (first key, nritems) of every block in key order.
        Two trees with equal shapes have the same leaf boundaries and node splits."""
        levels: list[list[tuple[Key | None, int]]] = []
        row = [self.node]
        while row:
            levels.append([(eb.keys[0] if eb.keys else None, eb.nritems) for eb in row])
            if row[0].level == 0:
                break
            row = [c for eb in row for c in eb.children]
        return levels

    def check(self) -> list[str]:
        """The structural invariants (what ``btrfs check`` / the tree checker would
        object to), as messages; empty when the tree is sound: keys strictly increase
        across leaves, a node's keys are its children's first keys, children are one level
        down and all leaves at level 0, leaves within capacity, node pointer counts within
        ``NODEPTRS_PER_BLOCK`` and non-empty, and no block reachable twice."""
        errs: list[str] = []
        seen: set[int] = set()
        prev: list[Key | None] = [None]

        def walk(eb: ExtentBuffer, level: int, parent_key: Key | None) -> None:
            if id(eb) in seen:
                errs.append(f"{eb!r} reachable twice")
                return
            seen.add(id(eb))
            if eb.level != level:
                errs.append(f"{eb!r} at level {eb.level}, expected {level}")
            if parent_key is not None and (not eb.keys or eb.keys[0] != parent_key):
                errs.append(f"{eb!r}: parent key {parent_key} is not its first key")
            if eb.level == 0:
                if len(eb.data) != len(eb.keys):
                    errs.append(f"{eb!r}: keys and bodies differ in count")
                if eb.nbytes != sum(map(len, eb.data)):
                    errs.append(f"{eb!r}: cached nbytes {eb.nbytes} is stale")
                if self.btrfs_leaf_free_space(eb) < 0:
                    errs.append(f"{eb!r}: over capacity")
                if not eb.keys and eb is not self.node:
                    errs.append(f"{eb!r}: empty non-root leaf")
                for k in eb.keys:
                    if prev[0] is not None and not prev[0] < k:
                        errs.append(f"{eb!r}: key {k} after {prev[0]}")
                    prev[0] = k
                return
            if not eb.keys:
                errs.append(f"{eb!r}: empty node")
            if len(eb.keys) > self.nodeptrs_per_block:
                errs.append(f"{eb!r}: {len(eb.keys)} > NODEPTRS_PER_BLOCK")
            if len(eb.children) != len(eb.keys):
                errs.append(f"{eb!r}: keys and children differ in count")
            for k, c in zip(eb.keys, eb.children, strict=False):
                walk(c, level - 1, k)

        walk(self.node, self.node.level, None)
        return errs

    # ---- building ----------------------------------------------------------------------

    @classmethod
    def from_blocks(
        cls,
        nodesize: int,
        root_id: int,
        root: ExtentBuffer,
        *,
        transid: int,
        cow: bool = True,
        allocator: Callable[[], int] | None = None,
        first_bytenr: int | None = None,
    ) -> BtrfsTree:
        """A tree over existing blocks (none of them new in the running transaction)."""
        t = cls(
            nodesize,
            root_id,
            transid=transid,
            cow=cow,
            allocator=allocator,
            first_bytenr=first_bytenr,
            create_root=False,
        )
        t.node = root
        return t

    @classmethod
    def from_image(cls, img: BtrfsImage, root: TreeRoot, *, cow: bool = True) -> BtrfsTree:
        """Load the tree ``root`` (a :class:`~model.btrfs.reader.TreeRoot`) of an opened
        :class:`~model.btrfs.reader.BtrfsImage`, block for block: bytenr, generation,
        owner and flags as on disk. The running transaction is the superblock's
        generation + 1 (the one the kernel starts after mounting), so every block is COWed
        once by the first modifying search through it. New blocks get bytenrs above every
        loaded one unless an allocator is set afterwards."""
        nodesize = img.sb.nodesize
        built: dict[int, tuple[ExtentBuffer, list[int]]] = {}
        top = 0
        for blk in img.walk(root):
            h = blk.header
            eb = ExtentBuffer(blk.logical, h.level, h.generation, h.owner, h.flags)
            ptrs: list[int] = []
            if blk.is_leaf:
                eb.keys = [ih.key for ih in blk.items]
                eb.data = [blk.item_data(i) for i in range(len(blk.items))]
                eb.recount()
            else:
                eb.keys = [p.key for p in blk.ptrs]
                ptrs = [p.blockptr for p in blk.ptrs]
            built[blk.logical] = (eb, ptrs)
            top = max(top, blk.logical)
        for eb, ptrs in built.values():
            eb.children = [built[b][0] for b in ptrs]
        return cls.from_blocks(
            nodesize,
            root.objectid,
            built[root.bytenr][0],
            transid=img.sb.generation + 1,
            cow=cow,
            first_bytenr=top + nodesize,
        )

    @classmethod
    def from_sorted_items(
        cls,
        items: Iterable[tuple[Key, bytes]],
        nodesize: int = 16384,
        root_id: int = C.FS_TREE_OBJECTID,
        *,
        leaf_fill: float = 1.0,
        node_fill: float = 1.0,
        transid: int = 1,
        cow: bool = True,
        allocator: Callable[[], int] | None = None,
        first_bytenr: int | None = None,
    ) -> BtrfsTree:
        """Build a tree from items in strictly increasing key order, bottom up, fast.

        Fill policy: leaves are packed greedily in key order while item headers + bodies
        stay within ``leaf_fill * BTRFS_LEAF_DATA_SIZE`` (always at least one item); nodes
        take ``max(3, int(node_fill * NODEPTRS_PER_BLOCK))`` pointers (a last node left
        with one pointer takes one from its left neighbour).

        How the defaults (1.0, 1.0) relate to the kernel. For append-ordered inserts
        ``split_leaf`` on the last leaf first pushes its front items into the left
        neighbour (``push_leaf_left`` stops at the first item that does not fit), and
        ``split_node`` fills the left node to ``NODEPTRS_PER_BLOCK`` (``push_node_left``),
        so with items of one size every leaf but the last two is exactly the greedy
        packing and every node but the last two of its level is full: this builder's
        output, except those last two blocks per level. Checked against the host kernel
        (hash-ordered xattrs, ``test_kernel_shape_parity``) and with the port
        (``test_append_order_fill``); fill of all but the last two leaves, port = greedy:
        4 KiB nodes, 100-byte items 97.0 %, 40-byte 99.25 %; 16 KiB nodes 99.8 %. With
        mixed sizes a left leaf is not topped up when the item being inserted needs more
        than the left leaf's free space (``push_leaf_left`` gives up on ``free_space <
        data_size``): items of 0-1000 bytes at 4 KiB, 100 of 4531 leaves differ from the
        greedy ones (same leaf count and mean fill, 91.6 %); items of 0-300 bytes, or any
        mix at 16 KiB, match greedy up to the last two leaves. Random-order inserts (100 k
        equal-size items, port) leave leaves 82-87 % full (pushes to both neighbours come
        before any split) and nodes 61-67 % full: ``leaf_fill``/``node_fill`` imitate that.
        All blocks belong to generation ``transid - 1`` and are WRITTEN, as if committed.
        """
        t = cls(
            nodesize,
            root_id,
            transid=transid,
            cow=cow,
            allocator=allocator,
            first_bytenr=first_bytenr,
            create_root=False,
        )
        gen = transid - 1
        flags = (C.MIXED_BACKREF_REV << C.BACKREF_REV_SHIFT) | C.HEADER_FLAG_WRITTEN
        alloc = t.allocator
        row: list[ExtentBuffer] = []
        for keys, datas in pack_sorted_items(items, nodesize, leaf_fill):
            eb = ExtentBuffer(alloc(), 0, gen, root_id, flags)
            eb.keys = keys
            eb.data = datas
            eb.recount()
            row.append(eb)
        if not row:
            eb = ExtentBuffer(alloc(), 0, gen, root_id, flags)
            row.append(eb)
        per_node = max(3, int(node_fill * t.nodeptrs_per_block))
        per_node = min(per_node, t.nodeptrs_per_block)
        level = 0
        while len(row) > 1:
            level += 1
            if level >= BTRFS_MAX_LEVEL:
                raise ValueError("too many items for BTRFS_MAX_LEVEL levels")
            up: list[ExtentBuffer] = []
            groups = [row[i : i + per_node] for i in range(0, len(row), per_node)]
            if len(groups) > 1 and len(groups[-1]) == 1:
                # never a node with a single pointer: the last takes one from its left
                groups[-1].insert(0, groups[-2].pop())
            for kids in groups:
                eb = ExtentBuffer(alloc(), level, gen, root_id, flags)
                eb.children = kids
                eb.keys = [k.keys[0] for k in kids]
                up.append(eb)
            row = up
        t.node = row[0]
        return t


def pack_sorted_items(
    items: Iterable[tuple[Key, bytes]], nodesize: int, leaf_fill: float = 1.0
) -> Iterator[tuple[list[Key], list[bytes]]]:
    """Greedy leaf packing for :meth:`BtrfsTree.from_sorted_items`: yields (keys, bodies)
    per leaf. Keys must strictly increase (ValueError otherwise); an item larger than
    ``BTRFS_MAX_ITEM_SIZE`` is a ValueError."""
    lds = btrfs_leaf_data_size(nodesize)
    cap = int(lds * leaf_fill)
    max_item = lds - BTRFS_ITEM_SIZE
    keys: list[Key] = []
    datas: list[bytes] = []
    used = 0
    prev: Key | None = None
    for key, data in items:
        sz = len(data) + BTRFS_ITEM_SIZE
        if sz > lds:
            raise ValueError(f"item {key} of {len(data)} bytes > BTRFS_MAX_ITEM_SIZE {max_item}")
        if prev is not None and not prev < key:
            raise ValueError(f"keys not strictly increasing: {prev} then {key}")
        prev = key
        if used + sz > cap and keys:
            yield keys, datas
            keys = []
            datas = []
            used = 0
        keys.append(key)
        datas.append(data)
        used += sz
    if keys:
        yield keys, datas
