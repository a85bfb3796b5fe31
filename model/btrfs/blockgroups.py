"""Block groups as the kernel sees them at mount (``fs/btrfs/block-group.c``:
``btrfs_read_block_groups``, ``read_one_block_group``, ``read_bg_from_eb``).

Three layouts exist: items (start, 192, length) in the extent tree; the same items in the
block group tree (tree 11, compat_ro BLOCK_GROUP_TREE); and the 2019 RFC's skinny items
(start, 193, used) in tree 11, whose length and flags come from the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.btrfs import constants as C
from model.btrfs.items import BlockGroupItem, Item, SkinnyBlockGroupItem
from model.btrfs.reader import BtrfsImage, TreeRoot


@dataclass(frozen=True, slots=True)
class BlockGroup:
    """One block group: ``tree`` is the id of the tree that holds its item, ``key_type``
    192 or 193, ``global_root_id`` the chunk_objectid field under EXTENT_TREE_V2 (else 0,
    as ``read_one_block_group`` sets it), ``chunk_objectid`` the raw field."""

    start: int
    length: int
    flags: int
    used: int
    global_root_id: int
    chunk_objectid: int
    tree: int
    key_type: int
    leaf: int  # logical address of the leaf holding the item


def block_group_from_item(img: BtrfsImage, item: Item, tree: int, leaf: int) -> BlockGroup | None:
    """The block group an item describes, or None if the item is not a block group item.

    A skinny item takes length and flags from the chunk mapping at its start; with no such
    chunk, length and flags are 0 (the checker reports it)."""
    v2 = bool(img.sb.incompat_flags & C.INCOMPAT_EXTENT_TREE_V2)
    if isinstance(item, BlockGroupItem):
        return BlockGroup(
            item.key.objectid,
            item.key.offset,
            item.flags,
            item.used,
            item.chunk_objectid if v2 else 0,
            item.chunk_objectid,
            tree,
            C.BLOCK_GROUP_ITEM_KEY,
            leaf,
        )
    if isinstance(item, SkinnyBlockGroupItem):
        chunk = img.chunk_map.chunks.get(item.key.objectid)
        return BlockGroup(
            item.key.objectid,
            chunk.length if chunk else 0,
            chunk.type if chunk else 0,
            item.key.offset,
            0,
            C.FIRST_CHUNK_TREE_OBJECTID,
            tree,
            C.SKINNY_BLOCK_GROUP_ITEM_KEY,
            leaf,
        )
    return None


BG_KEY_TYPES = (C.BLOCK_GROUP_ITEM_KEY, C.SKINNY_BLOCK_GROUP_ITEM_KEY)


def block_group_trees(img: BtrfsImage) -> list[TreeRoot]:
    """The trees that may hold block group items: every extent root and tree 11."""
    return [
        r
        for r in img.trees()
        if r.objectid in (C.EXTENT_TREE_OBJECTID, C.BLOCK_GROUP_TREE_OBJECTID)
    ]


def read_block_groups(img: BtrfsImage) -> list[BlockGroup]:
    """Every block group item found in the extent tree(s) and the block group tree, in
    start order (items in the wrong tree included: the checker flags them)."""
    out: list[BlockGroup] = []
    for root in block_group_trees(img):
        for blk, slot, item in img.iter_items(root):
            if blk.items[slot].key.type not in BG_KEY_TYPES:
                continue
            bg = block_group_from_item(img, item, root.objectid, blk.logical)
            if bg is not None:
                out.append(bg)
    out.sort(key=lambda b: (b.start, b.tree))
    return out
