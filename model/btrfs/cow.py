"""Copy-on-write cost: the tree blocks one transaction dirties for a set of item updates.

The kernel updates a block group item with ``update_block_group_item()``
(``fs/btrfs/block-group.c``): ``btrfs_search_slot(trans, root, key, path, 0, 1)`` COWs
every block on the path (``btrfs_cow_block``, once per transaction:
``should_cow_block``), then the item is rewritten in place. An extent item update
(``lookup_inline_extent_backref`` + ``update_inline_extent_backref``) takes the same path
to its leaf. So the blocks dirtied by a set of updates is the union of their root→leaf
paths — which :class:`model.btrfs.ctree.BtrfsTree` counts, COW for COW.

The seed (extent-tree-v2 post) claims: two adjacent block groups, items in a height-3
extent tree → 5 blocks (root, two level-1 nodes, two leaves); in a block group tree → 2
(root and the one leaf holding both).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from model.btrfs import constants as C
from model.btrfs.ctree import BtrfsTree, ExtentBuffer, Path
from model.btrfs.items import Key
from model.btrfs.treeblock import btrfs_leaf_data_size


@dataclass
class CowCost:
    """Blocks COWed by one transaction of updates, and their levels."""

    updates: list[Key]
    cowed: int
    per_level: dict[int, int] = field(default_factory=dict)
    tree_height: int = 0

    @property
    def description(self) -> str:
        parts = [f"{n} at level {lvl}" for lvl, n in sorted(self.per_level.items(), reverse=True)]
        return ", ".join(parts)


def blocks_by_bytenr(root: ExtentBuffer) -> dict[int, ExtentBuffer]:
    out: dict[int, ExtentBuffer] = {}
    todo = [root]
    while todo:
        eb = todo.pop()
        out[eb.bytenr] = eb
        todo.extend(eb.children)
    return out


def cow_updates(tree: BtrfsTree, keys: list[Key]) -> CowCost:
    """Run one transaction that rewrites each item in ``keys`` in place (the search with
    ``cow=1`` of ``update_block_group_item``) and count the blocks it COWed."""
    before = blocks_by_bytenr(tree.node)
    height = tree.node.level + 1
    for key in keys:
        p = Path()
        ret = tree.btrfs_search_slot(key, p, 0, 1)
        if ret != 0:
            raise KeyError(f"{key} is not in the tree")
        leaf = p.leaf
        slot = p.slots[0]
        leaf.data[slot] = bytes(leaf.data[slot])  # the in-place rewrite
    summary = tree.commit()
    levels = Counter(before[old].level for old, _new in summary.cowed if old in before)
    return CowCost(keys, len(summary.cowed), dict(levels), height)


def leaf_capacity(nodesize: int, item_size: int) -> int:
    """Items of ``item_size`` body bytes one leaf holds: each costs a 25-byte item header
    plus its body in the ``nodesize - 101`` bytes after the tree block header
    (``BTRFS_LEAF_DATA_SIZE``)."""
    return btrfs_leaf_data_size(nodesize) // (C.BTRFS_ITEM_SIZE + item_size)
