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

The searches are :mod:`model.btrfs.ctree`'s (``btrfs_search_slot``, ``btrfs_next_leaf``,
``btrfs_get_next_valid_item``), read-only, over the tree as a
:class:`~model.btrfs.ctree.BtrfsTree`: an image's tree (:func:`predict_mount`), a tree the
writer built (:func:`predict_built`), or the tree the writer would build from its input
(:func:`predict_layout`), such as an image re-laid out in another layout
(:func:`predict_relayout`). The blocks they read come from
the tree's ``read_log``.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.btrfs import constants as C
from model.btrfs.convert import spec_from_image
from model.btrfs.ctree import BtrfsTree, ExtentBuffer, Path
from model.btrfs.items import Key
from model.btrfs.mkfs import FsSpec, MkfsResult, build_tree, lay_out_trees
from model.btrfs.reader import BtrfsImage, TreeRoot, tree_name
from model.btrfs.superblock import parse_superblock
from model.errors import FormatError


@dataclass
class SearchCost:
    """The distinct blocks a sequence of searches read, in first-read order, and how many
    searches and ``btrfs_next_leaf`` calls it took."""

    visited: list[ExtentBuffer]
    searches: int
    next_leaf_calls: int


class Searcher:
    """``btrfs_read_block_groups``' searches over one tree (read-only ``btrfs_search_slot``
    and ``btrfs_next_leaf`` of :class:`~model.btrfs.ctree.BtrfsTree`), recording the blocks
    they read (:attr:`BtrfsTree.read_log <model.btrfs.ctree.BtrfsTree>`)."""

    def __init__(self, tree: BtrfsTree) -> None:
        self.tree = tree
        self.searches = 0
        self._next_leaves = tree.stats.next_leaves
        tree.read_log = []

    def btrfs_search_slot(self, key: Key) -> Path:
        """Read-only ``btrfs_search_slot(NULL, root, key, path, 0, 0)``: the path at the
        slot of ``key``, or where it would be."""
        self.searches += 1
        path = Path()
        self.tree.btrfs_search_slot(key, path, 0, 0)
        return path

    def find_first_block_group(self, key: Key, item_type: int) -> Key | None:
        """``find_first_block_group()`` (``btrfs_for_each_slot``): the first item at or
        after ``key`` with objectid >= key.objectid and the block group item type."""
        path = self.btrfs_search_slot(key)
        while True:
            found = self.tree.btrfs_get_next_valid_item(path)
            if found is None:
                return None
            if found.objectid >= key.objectid and found.type == item_type:
                return found
            path.slots[0] += 1

    def read_skinny_block_group_tree(self) -> int:
        """The RFC's ``read_skinny_block_group_tree()``: one search from (0, 0, 0), then
        every item of the tree in turn; the number of skinny block group items."""
        path = self.btrfs_search_slot(Key(0, 0, 0))
        n = 0
        while True:
            found = self.tree.btrfs_get_next_valid_item(path)
            if found is None:
                return n
            if found.type == C.SKINNY_BLOCK_GROUP_ITEM_KEY:
                n += 1
            path.slots[0] += 1

    def cost(self) -> SearchCost:
        log = self.tree.read_log or []
        return SearchCost(
            list(dict.fromkeys(log)),
            self.searches,
            self.tree.stats.next_leaves - self._next_leaves,
        )


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
    tree: BtrfsTree,
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
        n = s.read_skinny_block_group_tree()
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
    return s.cost(), n


def read_block_groups_cost(
    tree: BtrfsTree,
    *,
    layout: str,
    chunk_lengths: dict[int, int] | None = None,
) -> MountCost:
    """Run ``btrfs_read_block_groups``'s search over ``tree`` and count blocks
    (:func:`read_block_groups_search`); the tree's own node and leaf counts come along."""
    cost, n = read_block_groups_search(tree, layout=layout, chunk_lengths=chunk_lengths)
    return mount_cost(cost, n, tree, layout)


def mount_cost(cost: SearchCost, block_groups: int, tree: BtrfsTree, layout: str) -> MountCost:
    """The counts of a search's blocks: visited, and first read inside (all but the root
    node, which ``open_ctree`` read before)."""
    leaves = sum(1 for b in cost.visited if b.level == 0)
    already = 1 if any(b is tree.node for b in cost.visited) else 0
    tree_blocks = sum(1 for _ in tree.iter_blocks())
    tree_leaves = sum(1 for _ in tree.leaves())
    return MountCost(
        layout=layout,
        tree=tree.root_id,
        block_groups=block_groups,
        visited=len(cost.visited),
        visited_nodes=len(cost.visited) - leaves,
        visited_leaves=leaves,
        already_read=already,
        first_read_inside=len(cost.visited) - already,
        searches=cost.searches,
        next_leaf_calls=cost.next_leaf_calls,
        tree_nodes=tree_blocks - tree_leaves,
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


def image_tree(img: BtrfsImage, root: TreeRoot) -> BtrfsTree:
    """The tree ``root`` of ``img`` as a read-only :class:`BtrfsTree`: every block read and
    checked by the reader's walk, and the tree's structure by :meth:`BtrfsTree.check` (keys
    strictly increasing, no empty leaf below the root...), which the kernel's tree checker
    guarantees before any search runs (``btrfs_search_slot`` and ``btrfs_next_leaf`` rely on
    it: over unsorted keys ``btrfs_next_leaf`` can return to the same leaf forever). A bad
    block or structure is a :class:`FormatError`."""
    tree = BtrfsTree.from_image(img, root, cow=False)
    errs = tree.check()
    if errs:
        phys = img.chunk_map.map_read(root.bytenr, img.sb.nodesize)[0]
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise FormatError(f"tree {tree_name(root.objectid)}", phys, errs[0] + more, root.bytenr)
    return tree


def predict_mount(img: BtrfsImage) -> MountCost:
    """``btrfs_read_block_groups``'s tree-block cost for an image as it is laid out."""
    return predict_mount_reads(img)[0]


def predict_mount_reads(img: BtrfsImage) -> tuple[MountCost, list[int], int]:
    """:func:`predict_mount` with the blocks behind its counts: the logical addresses of the
    blocks ``btrfs_read_block_groups`` first reads from disk, in read order, and the root
    node's address (read earlier by ``open_ctree``), for comparison with a kernel trace."""
    layout = image_layout(img)
    root = block_group_root(img)
    tree = image_tree(img, root)
    lengths = {c.key.offset: c.length for c in img.chunk_map}
    search, n = read_block_groups_search(tree, layout=layout, chunk_lengths=lengths)
    cost = mount_cost(search, n, tree, layout)
    reads = [b.bytenr for b in search.visited if b is not tree.node]
    return cost, reads, root.bytenr


def bg_tree_id(layout: str) -> int:
    """The tree that holds the block group items in ``layout``."""
    return C.EXTENT_TREE_OBJECTID if layout == "extent-tree" else C.BLOCK_GROUP_TREE_OBJECTID


def built_tree(root: ExtentBuffer, nodesize: int, tree_id: int) -> BtrfsTree:
    """A tree the writer built in memory (:func:`model.btrfs.mkfs.build_tree`), read-only."""
    return BtrfsTree.from_blocks(nodesize, tree_id, root, transid=0, cow=False)


def predict_built(res: MkfsResult, layout: str) -> MountCost:
    """The prediction for a filesystem the writer laid out in memory."""
    tid = bg_tree_id(layout)
    nodesize = parse_superblock(res.superblock).nodesize
    return read_block_groups_cost(
        built_tree(res.trees[(tid, 0)], nodesize, tid),
        layout=layout,
        chunk_lengths={c.start: c.length for c in res.chunks},
    )


def predict_layout(spec: FsSpec) -> MountCost:
    """The prediction for the filesystem the writer would lay out from ``spec``, without
    writing it: the writer places every tree block (:func:`~model.btrfs.mkfs.lay_out_trees`:
    which gives the block group items — one per chunk, in the layout's form — and, in the
    extent tree, the items they sit among: the data extents and one METADATA_ITEM per tree
    block placed), and only the tree holding the block group items is built and searched.
    Nothing is serialized. What the writer cannot lay out raises
    :class:`~model.btrfs.mkfs.MkfsError`."""
    plan = lay_out_trees(spec)
    tid = bg_tree_id(spec.layout)
    root = build_tree(plan.dyn_items[(tid, 0)], spec.nodesize, tid, spec.generation)
    return read_block_groups_cost(
        built_tree(root, spec.nodesize, tid),
        layout=spec.layout,
        chunk_lengths={c.start: c.length for c in spec.chunks},
    )


def predict_relayout(img: BtrfsImage, layout: str) -> MountCost:
    """The prediction for ``img`` re-laid out in ``layout`` by the writer, without writing
    it: the writer's input is read back from the image
    (:func:`~model.btrfs.convert.spec_from_image`) and laid out by :func:`predict_layout`.

    Bad input raises :class:`FormatError` (the reader's) or
    :class:`~model.btrfs.mkfs.MkfsError` (what the writer cannot lay out)."""
    return predict_layout(spec_from_image(img, layout))
