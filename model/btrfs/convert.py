"""Rewriting an image's metadata in another block group layout.

:func:`spec_from_image` reads an image back into the :class:`~model.btrfs.mkfs.FsSpec` the
writer lays out: its chunks, its data extents and their backrefs, and the items of its
content trees (fs trees, subvolumes, csum, uuid, quota, data reloc). The bookkeeping trees
(root, chunk, dev, extent tree's tree-block items, free space, block group) are derived
again by :func:`~model.btrfs.mkfs.write_filesystem`, so converting between
``extent-tree``, ``bg-tree`` and ``skinny-bg-tree`` changes only where block group items
live and what they look like — and the tree blocks that describe them.

Limits: one device, no mixed block groups, no extent-tree-v2, no log tree to replay.
Bad input raises :class:`~model.errors.FormatError` (unreadable blocks, keys out of order)
or :class:`~model.btrfs.mkfs.MkfsError` (what the writer cannot lay out).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from model.btrfs import constants as C
from model.btrfs.check_free_space import btrfs_calc_stripe_length
from model.btrfs.items import DevStatsItem, Item, Key, RootItem
from model.btrfs.mkfs import LAYOUTS, Chunk, FsSpec, Items, MkfsError, super_stripes
from model.btrfs.reader import BtrfsImage, TreeRoot, tree_name
from model.btrfs.treeblock import TreeBlock
from model.errors import FormatError
from model.linux import U64

# trees the writer derives rather than copies
BOOKKEEPING_TREES = {
    C.ROOT_TREE_OBJECTID,
    C.EXTENT_TREE_OBJECTID,
    C.CHUNK_TREE_OBJECTID,
    C.DEV_TREE_OBJECTID,
    C.FREE_SPACE_TREE_OBJECTID,
    C.BLOCK_GROUP_TREE_OBJECTID,
}


def items_in_key_order(img: BtrfsImage, root: TreeRoot) -> Iterator[tuple[TreeBlock, int, Item]]:
    """:meth:`BtrfsImage.iter_items`, refusing keys that do not strictly increase (a
    duplicate or out-of-order key, which ``check_leaf``'s "bad key order" reports): the
    writer cannot lay such items out again (:class:`FormatError` naming the leaf)."""
    prev: Key | None = None
    for blk, slot, item in img.iter_items(root):
        key = blk.items[slot].key
        if prev is not None and key <= prev:
            raise FormatError(
                "tree block",
                blk.physical,
                f"tree {tree_name(root.objectid)} slot {slot}: key {key} does not follow "
                f"{prev} (keys must strictly increase)",
                blk.logical,
            )
        prev = key
        yield blk, slot, item


def spec_from_image(img: BtrfsImage, layout: str) -> FsSpec:
    """The writer's input that reproduces ``img`` in ``layout``."""
    if layout not in LAYOUTS:
        raise MkfsError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    sb = img.sb
    if sb.num_devices != 1:
        raise MkfsError(f"{sb.num_devices} devices: only single-device images convert")
    if sb.incompat_flags & (C.INCOMPAT_MIXED_GROUPS | C.INCOMPAT_EXTENT_TREE_V2):
        raise MkfsError("mixed block groups and extent-tree-v2 images do not convert")
    if sb.log_root:
        raise MkfsError("the image has a log tree: mount it once to replay the log first")
    devid = sb.dev_item.devid
    chunks: list[Chunk] = []
    for ci in img.chunk_map:
        if any(s.devid != devid for s in ci.stripes):
            raise MkfsError(f"chunk {ci.key.offset} has stripes on another device")
        dev_len = btrfs_calc_stripe_length(ci)
        if (
            ci.length == 0
            or ci.length % sb.sectorsize
            or ci.key.offset + ci.length > U64
            or any(s.offset + dev_len > sb.dev_item.total_bytes for s in ci.stripes)
        ):
            raise MkfsError(
                f"chunk {ci.key.offset} of length {ci.length} does not fit the device"
                f" ({sb.dev_item.total_bytes} bytes): the writer cannot lay it out"
            )
        c = Chunk(ci.key.offset, ci.length, ci.type, [s.offset for s in ci.stripes])
        c.excluded = super_stripes(c)
        chunks.append(c)
    data_chunks = sorted((c for c in chunks if c.flags & C.BLOCK_GROUP_DATA), key=lambda c: c.start)
    data_starts = [c.start for c in data_chunks]

    def data_chunk(bytenr: int) -> Chunk | None:
        i = bisect.bisect_right(data_starts, bytenr) - 1
        if i >= 0 and bytenr < data_chunks[i].end:
            return data_chunks[i]
        return None

    data_used: dict[int, list[tuple[int, int]]] = {s: [] for s in data_starts}
    data_items: Items = []
    extent_root = img.tree(C.EXTENT_TREE_OBJECTID)
    if extent_root is None:
        raise MkfsError("the image has no extent tree")
    for blk, slot, _item in items_in_key_order(img, extent_root):
        key = blk.items[slot].key
        if key.type in (C.BLOCK_GROUP_ITEM_KEY, C.SKINNY_BLOCK_GROUP_ITEM_KEY):
            continue
        dc = data_chunk(key.objectid)
        if dc is None:
            continue  # tree block extents and their refs: derived again
        data_items.append((key, blk.item_data(slot)))
        if key.type == C.EXTENT_ITEM_KEY:
            data_used[dc.start].append((key.objectid, key.offset))
    trees: dict[int, Items] = {}
    root_items: dict[int, RootItem] = {}
    for (oid, off), root in img.roots.items():
        if oid in BOOKKEEPING_TREES or oid == C.TREE_LOG_OBJECTID:
            continue
        if off != 0:
            raise MkfsError(f"tree {oid} has ROOT_ITEM offset {off}: snapshots do not convert")
        trees[oid] = [
            (blk.items[s].key, blk.item_data(s)) for blk, s, _ in items_in_key_order(img, root)
        ]
        root_items[oid] = img.root_items[(oid, off)]
    root_tree = img.tree(C.ROOT_TREE_OBJECTID)
    assert root_tree is not None
    extra: Items = [
        (blk.items[s].key, blk.item_data(s))
        for blk, s, _ in items_in_key_order(img, root_tree)
        if blk.items[s].key.type != C.ROOT_ITEM_KEY
    ]
    dev_stats = bytes(40)
    dev_root = img.tree(C.DEV_TREE_OBJECTID)
    if dev_root is not None:
        for blk, s, item in img.iter_items(dev_root):
            if isinstance(item, DevStatsItem):
                dev_stats = blk.item_data(s)
    chunk_root = img.read_tree_block(sb.chunk_root)
    return FsSpec(
        size=sb.dev_item.total_bytes,
        nodesize=sb.nodesize,
        sectorsize=sb.sectorsize,
        csum_type=sb.csum_type,
        layout=layout,
        label=sb.label_str,
        generation=sb.generation,
        fsid=sb.fsid,
        dev_uuid=sb.dev_item.uuid,
        chunk_uuid=chunk_root.header.chunk_tree_uuid,
        chunks=chunks,
        data_used=data_used,
        data_extent_items=data_items,
        trees=trees,
        root_items=root_items,
        root_extra_items=extra,
        dev_stats=dev_stats,
    )
