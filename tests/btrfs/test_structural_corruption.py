"""Corruptions that change a tree's structure, made with the model's tree editing
(:mod:`model.btrfs.ctree`: search, delete, rebalance, fix the parents' keys): the edited
tree is written back over its own blocks, and both ``btrfs check`` and ours must flag the
missing item, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.ctree import BtrfsTree
from model.btrfs.ctree import Path as CPath
from model.btrfs.items import Key
from model.btrfs.reader import BtrfsImage
from model.btrfs.treeblock_write import serialize_extent_buffer
from tests.btrfs.corrupt import copy_image
from tests.tools import require_tool, run


def delete_item(image: Path, tree_id: int, key: Key) -> None:
    """Delete ``key`` from tree ``tree_id`` of ``image`` in place: ctree's
    ``btrfs_search_slot(ins_len=-1)`` + ``btrfs_del_item`` without COW, then every block of
    the tree is rewritten at its own address (every copy), checksums recomputed."""
    img = BtrfsImage.open(FileSource(image))
    root = img.tree(tree_id)
    assert root is not None
    tree = BtrfsTree.from_image(img, root, cow=False)
    p = CPath()
    assert tree.btrfs_search_slot(key, p, -1, 1) == 0, f"{key} not in tree {tree_id}"
    assert tree.btrfs_del_item(p) == 0
    sb = img.sb
    chunk_uuid = img.read_tree_block(sb.chunk_root).header.chunk_tree_uuid
    with open(image, "r+b") as f:
        todo = [tree.node]
        while todo:
            eb = todo.pop()
            todo.extend(eb.children)
            raw = serialize_extent_buffer(
                eb,
                nodesize=sb.nodesize,
                fsid=sb.header_fsid,
                chunk_tree_uuid=chunk_uuid,
                csum_type=sb.csum_type,
            )
            for phys in img.chunk_map.map_read(eb.bytenr, sb.nodesize):
                f.seek(phys)
                f.write(raw)


def items_of(image: Path, tree_id: int, key_type: int) -> list[Key]:
    img = BtrfsImage.open(FileSource(image))
    root = img.tree(tree_id)
    assert root is not None
    return [
        blk.items[s].key for blk, s, _ in img.iter_items(root) if blk.items[s].key.type == key_type
    ]


def verdicts(image: Path) -> tuple[int, str]:
    require_tool("btrfs")
    r = run(["btrfs", "check", str(image)])
    res = btrfs_check(BtrfsImage.open(FileSource(image)))
    return r.returncode, "\n".join(str(f) for f in res.findings)


@pytest.mark.parametrize("variant", ["kernel", "rootdir-4k"])
def test_block_group_item_removed(btrfs_image, tmp_path: Path, variant: str) -> None:
    img = copy_image(btrfs_image(variant), tmp_path / "x.img")
    bgs = items_of(img, C.EXTENT_TREE_OBJECTID, C.BLOCK_GROUP_ITEM_KEY)
    victim = bgs[-1]
    delete_item(img, C.EXTENT_TREE_OBJECTID, victim)
    assert victim not in items_of(img, C.EXTENT_TREE_OBJECTID, C.BLOCK_GROUP_ITEM_KEY)
    rc, found = verdicts(img)
    assert rc != 0
    assert str(victim.objectid) in found


@pytest.mark.parametrize("variant", ["kernel", "rootdir-4k"])
def test_data_backref_dropped(btrfs_image, tmp_path: Path, variant: str) -> None:
    """The extent item of a data extent (with its inline backref) removed: the file extent
    that points at it has no backref any more, and its block group's `used` is too big."""
    img = copy_image(btrfs_image(variant), tmp_path / "x.img")
    data_bgs = items_of(img, C.EXTENT_TREE_OBJECTID, C.BLOCK_GROUP_ITEM_KEY)
    extents = items_of(img, C.EXTENT_TREE_OBJECTID, C.EXTENT_ITEM_KEY)
    in_data = [
        k
        for k in extents
        if any(b.objectid <= k.objectid < b.objectid + b.offset for b in data_bgs)
        and k.offset >= 4096
    ]
    victim = in_data[len(in_data) // 2]
    delete_item(img, C.EXTENT_TREE_OBJECTID, victim)
    rc, found = verdicts(img)
    assert rc != 0
    assert str(victim.objectid) in found
