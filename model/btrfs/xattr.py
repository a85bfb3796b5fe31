"""Setting and removing xattrs through the B-tree (``fs/btrfs/xattr.c``: ``btrfs_setxattr``;
``fs/btrfs/dir-item.c``: ``btrfs_insert_xattr_item``, ``insert_with_overflow``,
``btrfs_lookup_xattr``, ``btrfs_match_dir_item_name``, ``btrfs_delete_one_dir_name``),
Linux 6.12, on a :class:`~model.btrfs.ctree.BtrfsTree`.

An xattr is a ``struct btrfs_dir_item`` entry (30 B: location key zeroed, transid, data_len,
name_len, type FT_XATTR) + name + value in the item (ino, XATTR_ITEM, btrfs_name_hash(name));
names whose hashes collide share one item. These are exactly the tree operations one
``setxattr(2)``/``removexattr(2)`` does; the inode item update that follows goes through
the delayed-inode code and rewrites the inode item in place (no shape change).
"""

from __future__ import annotations

from errno import EEXIST, ENOSPC, EOVERFLOW
from typing import Final

from model.btrfs import constants as C
from model.btrfs.constants import BTRFS_ITEM_SIZE
from model.btrfs.csum import btrfs_name_hash
from model.btrfs.ctree import BtrfsTree, Path
from model.btrfs.items import DirItem, Key

XATTR_CREATE: Final = 0x1
XATTR_REPLACE: Final = 0x2

ENODATA: Final = 61


def BTRFS_MAX_XATTR_SIZE(tree: BtrfsTree) -> int:
    """``BTRFS_MAX_XATTR_SIZE()``: name + value bytes one xattr item can hold."""
    return tree.leaf_data_size - BTRFS_ITEM_SIZE - DirItem.STRUCT.size


def xattr_key(ino: int, name: bytes) -> Key:
    return Key(ino, C.XATTR_ITEM_KEY, btrfs_name_hash(name))


def dir_item_entry(name: bytes, value: bytes, transid: int) -> bytes:
    """One xattr entry as ``btrfs_insert_xattr_item`` writes it."""
    return DirItem.STRUCT.pack(bytes(17), transid, len(value), len(name), C.FT_XATTR) + name + value


def btrfs_match_dir_item_name(tree: BtrfsTree, path: Path, name: bytes) -> int | None:
    """``btrfs_match_dir_item_name()``: offset in the path's item of the entry named
    ``name``, or None."""
    data = path.leaf.data[path.slots[0]]
    cur = 0
    while cur < len(data):
        _, _, dlen, nlen, _ = DirItem.STRUCT.unpack_from(data, cur)
        start = cur + DirItem.STRUCT.size
        if nlen == len(name) and data[start : start + nlen] == name:
            return cur
        cur = start + nlen + dlen
    return None


def btrfs_lookup_xattr(tree: BtrfsTree, path: Path, ino: int, name: bytes, mod: int) -> int | None:
    """``btrfs_lookup_xattr()`` / ``btrfs_lookup_match_dir()``: search with
    ``ins_len = -1`` if ``mod < 0``, COW if ``mod != 0``; the entry's offset or None."""
    ins_len = -1 if mod < 0 else 0
    cow = 1 if mod != 0 else 0
    ret = tree.btrfs_search_slot(xattr_key(ino, name), path, ins_len, cow)
    if ret != 0:
        return None
    return btrfs_match_dir_item_name(tree, path, name)


def _write_entry_at_end(path: Path, entry: bytes) -> None:
    leaf = path.leaf
    slot = path.slots[0]
    item = leaf.data[slot]
    leaf.data[slot] = item[: len(item) - len(entry)] + entry


def insert_with_overflow(tree: BtrfsTree, path: Path, key: Key, data_size: int, name: bytes) -> int:
    """``insert_with_overflow()``: insert the item, or on a hash collision extend the
    existing one by ``data_size``. 0 (the new entry is the item's last ``data_size``
    bytes), -EEXIST (the name exists; path at it) or another error."""
    ret = tree.btrfs_insert_empty_item(path, key, data_size)
    if ret == -EEXIST:
        if btrfs_match_dir_item_name(tree, path, name) is not None:
            return -EEXIST
        tree.btrfs_extend_item(path, data_size)
    elif ret < 0:
        return ret
    return 0


def btrfs_insert_xattr_item(
    tree: BtrfsTree, path: Path, ino: int, name: bytes, value: bytes
) -> int:
    """``btrfs_insert_xattr_item()``."""
    if len(name) + len(value) > BTRFS_MAX_XATTR_SIZE(tree):
        return -ENOSPC
    data_size = DirItem.STRUCT.size + len(name) + len(value)
    ret = insert_with_overflow(tree, path, xattr_key(ino, name), data_size, name)
    if ret:
        return ret
    _write_entry_at_end(path, dir_item_entry(name, value, tree.transid))
    return 0


def btrfs_delete_one_dir_name(tree: BtrfsTree, path: Path, di: int) -> int:
    """``btrfs_delete_one_dir_name()``: delete the item if the entry at offset ``di`` is
    its only one, else cut the entry out (``btrfs_truncate_item`` from the end)."""
    leaf = path.leaf
    slot = path.slots[0]
    data = leaf.data[slot]
    _, _, dlen, nlen, _ = DirItem.STRUCT.unpack_from(data, di)
    sub_item_len = DirItem.STRUCT.size + nlen + dlen
    item_len = len(data)
    if sub_item_len == item_len:
        return tree.btrfs_del_item(path)
    leaf.data[slot] = data[:di] + data[di + sub_item_len :] + data[item_len - sub_item_len :]
    tree.btrfs_truncate_item(path, item_len - sub_item_len, 1)
    return 0


def btrfs_setxattr(
    tree: BtrfsTree, ino: int, name: bytes, value: bytes | None, flags: int = 0
) -> int:
    """``btrfs_setxattr()``: ``value=None`` removes (``removexattr(2)`` passes
    XATTR_REPLACE). Returns 0 or a negative errno (-ENODATA, -EEXIST, -ENOSPC)."""
    name_len = len(name)
    size = 0 if value is None else len(value)
    if name_len + size > BTRFS_MAX_XATTR_SIZE(tree):
        return -ENOSPC
    path = Path()
    if value is None:
        di = btrfs_lookup_xattr(tree, path, ino, name, -1)
        if di is None and flags & XATTR_REPLACE:
            return -ENODATA
        if di is not None:
            return btrfs_delete_one_dir_name(tree, path, di)
        return 0

    if flags & XATTR_REPLACE:
        if btrfs_lookup_xattr(tree, path, ino, name, 0) is None:
            return -ENODATA
        path.btrfs_release_path()

    found: int | None = None
    ret = btrfs_insert_xattr_item(tree, path, ino, name, value)
    if ret == -EOVERFLOW:
        # an existing item split_leaf could not extend: is our name in it?
        found = btrfs_match_dir_item_name(tree, path, name)
        if found is None and not flags & XATTR_REPLACE:
            return -ENOSPC
    elif ret == -EEXIST:
        found = btrfs_match_dir_item_name(tree, path, name)
        assert found is not None
    elif ret:
        return ret

    if found is not None and flags & XATTR_CREATE:
        return -EEXIST
    if found is None:
        return 0  # inserted, entry already written

    # a replace, done atomically in the item
    leaf = path.leaf
    slot = path.slots[0]
    item = leaf.data[slot]
    _, _, old_data_len, _, _ = DirItem.STRUCT.unpack_from(item, found)
    item_size = len(item)
    data_size = DirItem.STRUCT.size + name_len + size
    if size > old_data_len and tree.btrfs_leaf_free_space(leaf) < size - old_data_len:
        return -ENOSPC
    if old_data_len + name_len + DirItem.STRUCT.size == item_size:
        # no other xattrs packed in the same item
        if size > old_data_len:
            tree.btrfs_extend_item(path, size - old_data_len)
        elif size < old_data_len:
            tree.btrfs_truncate_item(path, data_size, 1)
    else:
        ret = btrfs_delete_one_dir_name(tree, path, found)
        if ret:
            return ret
        tree.btrfs_extend_item(path, data_size)
    _write_entry_at_end(path, dir_item_entry(name, value, tree.transid))
    return 0
