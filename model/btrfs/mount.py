"""The tree-block cost of ``btrfs_read_block_groups()`` at mount (Linux 6.12,
``fs/btrfs/block-group.c``), derived by running the kernel's search algorithm over real trees.

What the kernel does (6.12)::

    key = (0, BLOCK_GROUP_ITEM, 0)
    loop:
        find_first_block_group(key)      # btrfs_for_each_slot: btrfs_search_slot(key),
                                         # then btrfs_get_next_valid_item / btrfs_next_leaf
                                         # until objectid >= key.objectid and type == 192
        none left -> stop
        read_one_block_group(item)
        key = (item.objectid + item.offset, 192, 0)

Each ``btrfs_search_slot`` walks root → leaf (no readahead: ``btrfs_alloc_path`` leaves
``reada`` at READA_NONE); ``btrfs_next_leaf`` re-searches the last key of the current leaf
(same blocks) and then descends the left edge of the next subtree. So the blocks touched are
the union of those paths: more than "the leaves holding block group items plus the nodes
above them" — a search for (start, 192, 0) lands in the leaf *before* the one whose first
item is (start, 192, length), and the first and the last searches walk further leaves.

With the 2019 SKINNY_BG_TREE RFC (``read_skinny_block_group_tree``) the loop is one
``btrfs_search_slot`` from key (0, 0, 0) and ``btrfs_next_item`` over the whole tree.

"Blocks first read inside" subtracts the blocks ``open_ctree`` read before
``btrfs_read_block_groups``: of the tree searched, only its root node (read by
``load_global_roots`` / ``btrfs_read_roots``). Everything else that open_ctree reads
earlier (chunk tree, dev tree, root tree) belongs to other trees.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from model.btrfs import constants as C
from model.btrfs.items import Key
from model.btrfs.mkfs import Block, MkfsResult, tree_blocks
from model.btrfs.reader import BtrfsImage, TreeRoot
from model.btrfs.treeblock import TreeBlock
from model.errors import FormatError


class SearchableTree(Protocol):
    """What the search needs of a tree: its root block, and per block its level, its keys
    (item keys of a leaf, pointer keys of a node) and its children."""

    def root_block(self) -> Hashable: ...

    def level(self, block: Hashable) -> int: ...

    def keys(self, block: Hashable) -> Sequence[Key]: ...

    def child(self, block: Hashable, slot: int) -> Hashable: ...


class ImageTree:
    """A tree of an image, blocks named by logical address (read once, cached)."""

    def __init__(self, img: BtrfsImage, root: TreeRoot) -> None:
        self.img = img
        self.root = root
        self._cache: dict[int, TreeBlock] = {}
        self._expect: dict[int, int] = {root.bytenr: root.level}

    def _get(self, logical: Hashable) -> TreeBlock:
        assert isinstance(logical, int)
        blk = self._cache.get(logical)
        if blk is None:
            blk = self.img.read_tree_block(logical, level=self._expect.get(logical))
            self._cache[logical] = blk
        return blk

    def root_block(self) -> Hashable:
        return self.root.bytenr

    def level(self, block: Hashable) -> int:
        return self._get(block).level

    def keys(self, block: Hashable) -> Sequence[Key]:
        blk = self._get(block)
        if blk.is_leaf:
            return [ih.key for ih in blk.items]
        return [p.key for p in blk.ptrs]

    def child(self, block: Hashable, slot: int) -> Hashable:
        blk = self._get(block)
        if slot >= len(blk.ptrs):  # an empty node (the tree checker reports it)
            raise FormatError(
                "tree block", blk.physical, f"node has no pointer in slot {slot}", blk.logical
            )
        p = blk.ptrs[slot]
        self._expect[p.blockptr] = blk.level - 1
        return p.blockptr


class BuiltTree:
    """A tree the writer built in memory (:class:`model.btrfs.ctree.ExtentBuffer`), so a layout can
    be measured without writing an image."""

    def __init__(self, root: Block) -> None:
        self.root = root

    def root_block(self) -> Hashable:
        return self.root

    def level(self, block: Hashable) -> int:
        assert isinstance(block, Block)
        return block.level

    def keys(self, block: Hashable) -> Sequence[Key]:
        assert isinstance(block, Block)
        return block.keys

    def child(self, block: Hashable, slot: int) -> Hashable:
        assert isinstance(block, Block)
        return block.children[slot]


def btrfs_bin_search(keys: Sequence[Key], key: Key) -> tuple[bool, int]:
    """``btrfs_bin_search()``: (exact, slot) where slot is the first key >= ``key``."""
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi) // 2
        k = keys[mid]
        if k < key:
            lo = mid + 1
        elif k == key:
            return True, mid
        else:
            hi = mid
    return False, lo


@dataclass
class Path:
    """``struct btrfs_path``: nodes[level] and slots[level], leaf at level 0."""

    nodes: list[Hashable | None] = field(default_factory=lambda: [None] * C.BTRFS_MAX_LEVEL)
    slots: list[int] = field(default_factory=lambda: [0] * C.BTRFS_MAX_LEVEL)


@dataclass
class SearchCost:
    """Blocks touched by a sequence of searches, in first-touch order."""

    visited: list[Hashable] = field(default_factory=list)
    levels: dict[Hashable, int] = field(default_factory=dict)
    searches: int = 0
    next_leaf_calls: int = 0

    def touch(self, tree: SearchableTree, block: Hashable) -> None:
        if block not in self.levels:
            self.levels[block] = tree.level(block)
            self.visited.append(block)


class Searcher:
    """The kernel's read-only search primitives over a :class:`SearchableTree`."""

    def __init__(self, tree: SearchableTree) -> None:
        self.tree = tree
        self.cost = SearchCost()

    def btrfs_search_slot(self, key: Key) -> tuple[int, Path]:
        """Read-only ``btrfs_search_slot(NULL, root, key, path, 0, 0)``: 0 if found, 1 if
        not (path at the slot where it would be)."""
        t = self.tree
        self.cost.searches += 1
        path = Path()
        b = t.root_block()
        while True:
            self.cost.touch(t, b)
            lvl = t.level(b)
            exact, slot = btrfs_bin_search(t.keys(b), key)
            path.nodes[lvl] = b
            if lvl == 0:
                path.slots[0] = slot
                return (0 if exact else 1), path
            if not exact and slot > 0:
                slot -= 1
            path.slots[lvl] = slot
            b = t.child(b, slot)

    def btrfs_next_leaf(self, path: Path) -> int:
        """``btrfs_next_leaf()``: 0 and the path at slot 0 of the next leaf, or 1 at the
        end. The kernel re-searches the current leaf's last key first; that walks blocks
        already touched, so only the climb and the descent to the next leaf are new."""
        t = self.tree
        self.cost.next_leaf_calls += 1
        leaf = path.nodes[0]
        assert leaf is not None
        keys = t.keys(leaf)
        if not keys:
            return 1
        _, fresh = self.btrfs_search_slot(keys[-1])
        self.cost.searches -= 1  # part of next_leaf, not a search of its own
        path.nodes[:] = fresh.nodes
        path.slots[:] = fresh.slots
        level = 1
        nxt: Hashable | None = None
        while level < C.BTRFS_MAX_LEVEL:
            node = path.nodes[level]
            if node is None:
                return 1
            slot = path.slots[level] + 1
            if slot >= len(t.keys(node)):
                level += 1
                continue
            nxt = t.child(node, slot)
            path.slots[level] = slot
            break
        if nxt is None:
            return 1
        while True:
            level -= 1
            self.cost.touch(t, nxt)
            path.nodes[level] = nxt
            path.slots[level] = 0
            if level == 0:
                return 0
            nxt = t.child(nxt, 0)

    def btrfs_get_next_valid_item(self, path: Path) -> Key | None:
        """``btrfs_get_next_valid_item()``: the key at the path, moving to the next leaf
        when the slot is past the end; None at the end of the tree."""
        t = self.tree
        while True:
            leaf = path.nodes[0]
            assert leaf is not None
            keys = t.keys(leaf)
            if path.slots[0] < len(keys):
                return keys[path.slots[0]]
            if self.btrfs_next_leaf(path):
                return None

    def find_first_block_group(self, key: Key, item_type: int) -> Key | None:
        """``find_first_block_group()``: the first item at or after ``key`` with
        objectid >= key.objectid and the block group item type."""
        _, path = self.btrfs_search_slot(key)
        while True:
            found = self.btrfs_get_next_valid_item(path)
            if found is None:
                return None
            if found.objectid >= key.objectid and found.type == item_type:
                return found
            path.slots[0] += 1


@dataclass
class MountCost:
    """The prediction for one tree and layout."""

    layout: str
    tree: int
    block_groups: int
    visited: int
    visited_nodes: int
    visited_leaves: int
    already_read: int
    first_read_inside: int
    searches: int
    next_leaf_calls: int
    tree_nodes: int = 0
    tree_leaves: int = 0


def read_block_groups_search(
    tree: SearchableTree,
    *,
    layout: str,
    chunk_lengths: dict[int, int] | None = None,
) -> tuple[SearchCost, int]:
    """Run ``btrfs_read_block_groups``'s search over ``tree``: the blocks it touches (in
    first-touch order, which is the kernel's read order: every read is synchronous) and the
    number of block group items found.

    ``layout`` is ``extent-tree``, ``bg-tree`` (both the 6.12 loop over
    ``find_first_block_group``) or ``skinny-bg-tree`` (one search from (0, 0, 0), then
    ``btrfs_next_item`` over the whole tree, as ``read_skinny_block_group_tree``).
    """
    s = Searcher(tree)
    n = 0
    if layout == "skinny-bg-tree":
        _, path = s.btrfs_search_slot(Key(0, 0, 0))
        while True:
            found = s.btrfs_get_next_valid_item(path)
            if found is None:
                break
            if found.type == C.SKINNY_BLOCK_GROUP_ITEM_KEY:
                n += 1
            path.slots[0] += 1
    else:
        key = Key(0, C.BLOCK_GROUP_ITEM_KEY, 0)
        while True:
            found = s.find_first_block_group(key, C.BLOCK_GROUP_ITEM_KEY)
            if found is None:
                break
            n += 1
            length = found.offset
            if chunk_lengths is not None and length == 0:
                length = chunk_lengths.get(found.objectid, 0)
            if length == 0:  # the next search would find this item again, forever
                raise FormatError(
                    "block group item",
                    0,
                    f"{found} has length 0 (read_one_block_group refuses it: no chunk of "
                    "that length)",
                    found.objectid,
                )
            key = Key(found.objectid + length, C.BLOCK_GROUP_ITEM_KEY, 0)
    return s.cost, n


def read_block_groups_cost(
    tree: SearchableTree,
    *,
    layout: str,
    tree_id: int,
    chunk_lengths: dict[int, int] | None = None,
    tree_nodes: int = 0,
    tree_leaves: int = 0,
) -> MountCost:
    """Run ``btrfs_read_block_groups``'s search over ``tree`` and count blocks
    (:func:`read_block_groups_search`)."""
    cost, n = read_block_groups_search(tree, layout=layout, chunk_lengths=chunk_lengths)
    return mount_cost(cost, n, tree.root_block(), layout, tree_id, tree_nodes, tree_leaves)


def mount_cost(
    cost: SearchCost,
    block_groups: int,
    root: Hashable,
    layout: str,
    tree_id: int,
    tree_nodes: int = 0,
    tree_leaves: int = 0,
) -> MountCost:
    """The counts of a search's blocks: visited, and first read inside (all but the root
    node, which ``open_ctree`` read before)."""
    leaves = sum(1 for b in cost.visited if cost.levels[b] == 0)
    already = 1 if root in cost.levels else 0
    return MountCost(
        layout=layout,
        tree=tree_id,
        block_groups=block_groups,
        visited=len(cost.visited),
        visited_nodes=len(cost.visited) - leaves,
        visited_leaves=leaves,
        already_read=already,
        first_read_inside=len(cost.visited) - already,
        searches=cost.searches,
        next_leaf_calls=cost.next_leaf_calls,
        tree_nodes=tree_nodes,
        tree_leaves=tree_leaves,
    )


def image_layout(img: BtrfsImage) -> str:
    """Which block group layout an image has."""
    if not img.sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE:
        return "extent-tree"
    root = img.tree(C.BLOCK_GROUP_TREE_OBJECTID)
    if root is not None:
        for _blk, _slot, item in img.iter_items(root):
            return (
                "skinny-bg-tree" if item.key.type == C.SKINNY_BLOCK_GROUP_ITEM_KEY else ("bg-tree")
            )
    return "bg-tree"


def block_group_root(img: BtrfsImage) -> TreeRoot:
    """The tree ``btrfs_read_block_groups`` searches; an image without it cannot be
    mounted (``btrfs_read_roots`` / ``load_global_roots`` fail), a :class:`FormatError`
    naming the root tree."""
    root = img.block_group_root
    if root is not None:
        return root
    rt = img.roots[(C.ROOT_TREE_OBJECTID, 0)]
    phys = img.chunk_map.map_read(rt.bytenr, img.sb.nodesize)[0]
    if img.sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE:
        msg = (
            "compat_ro BLOCK_GROUP_TREE is set but there is no ROOT_ITEM of the block group"
            f" tree ({C.BLOCK_GROUP_TREE_OBJECTID})"
        )
    else:
        msg = f"there is no ROOT_ITEM of the extent tree ({C.EXTENT_TREE_OBJECTID})"
    raise FormatError("root tree", phys, msg, rt.bytenr)


def predict_mount(img: BtrfsImage) -> MountCost:
    """``btrfs_read_block_groups``'s tree-block cost for an image as it is laid out."""
    layout = image_layout(img)
    root = block_group_root(img)
    st = img.tree_stats(root)
    return read_block_groups_cost(
        ImageTree(img, root),
        layout=layout,
        tree_id=root.objectid,
        chunk_lengths={c.key.offset: c.length for c in img.chunk_map},
        tree_nodes=st.nodes,
        tree_leaves=st.leaves,
    )


def predict_mount_reads(img: BtrfsImage) -> tuple[MountCost, list[int], int]:
    """:func:`predict_mount` with the blocks behind its counts: the logical addresses of the
    blocks ``btrfs_read_block_groups`` first reads from disk, in read order, and the root
    node's address (read earlier by ``open_ctree``), for comparison with a kernel trace."""
    layout = image_layout(img)
    root = block_group_root(img)
    st = img.tree_stats(root)
    search, n = read_block_groups_search(
        ImageTree(img, root),
        layout=layout,
        chunk_lengths={c.key.offset: c.length for c in img.chunk_map},
    )
    cost = mount_cost(search, n, root.bytenr, layout, root.objectid, st.nodes, st.leaves)
    reads = [b for b in search.visited if isinstance(b, int) and b != root.bytenr]
    return cost, reads, root.bytenr


def bg_tree_id(layout: str) -> int:
    return C.EXTENT_TREE_OBJECTID if layout == "extent-tree" else C.BLOCK_GROUP_TREE_OBJECTID


def predict_built(res: MkfsResult, layout: str) -> MountCost:
    """The prediction for a filesystem the writer laid out in memory."""
    tid = bg_tree_id(layout)
    root = res.trees[(tid, 0)]
    blocks = tree_blocks(root)
    leaves = sum(1 for b in blocks if b.level == 0)
    return read_block_groups_cost(
        BuiltTree(root),
        layout=layout,
        tree_id=tid,
        chunk_lengths={c.start: c.length for c in res.chunks},
        tree_nodes=len(blocks) - leaves,
        tree_leaves=leaves,
    )
