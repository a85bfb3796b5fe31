"""Corrupting copies of real images in place, for the checker's differential tests.

The reader finds where an item lives (leaf, slot, every physical copy of the leaf); the
edit rewrites bytes of the item body or key in every copy and, where the point is a
logical error, recomputes the tree block checksum (``csum_block``) so the block still
reads cleanly. Images are edited through a plain file handle: the model only reads.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.csum import csum_block
from model.btrfs.items import Item, Key
from model.btrfs.reader import BtrfsImage

# offsets inside a leaf item header (struct btrfs_item): key objectid, type, offset, then
# data offset and size
ITEM_KEY_OFFSET_FIELD = 9


@dataclass(frozen=True)
class Located:
    """An item found in an image: its tree, leaf, slot, key, decoded body, the physical
    offsets of every copy of the leaf, and the body's offset inside the leaf."""

    tree: int
    leaf: int
    slot: int
    key: Key
    item: Item
    copies: tuple[int, ...]
    body: int  # offset of the item body from the start of the leaf
    nodesize: int
    csum_type: int


def _data_segments(fd: int, size: int) -> list[tuple[int, int]]:
    """The allocated (start, end) ranges of a sparse file (SEEK_DATA / SEEK_HOLE)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        pos = end
    return out


def copy_image(src: Path, dst: Path) -> Path:
    """A sparse copy (only the allocated ranges are written)."""
    size = src.stat().st_size
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.truncate(size)
        for start, end in _data_segments(fi.fileno(), size):
            fi.seek(start)
            fo.seek(start)
            left = end - start
            while left:
                chunk = fi.read(min(left, 1 << 24))
                fo.write(chunk)
                left -= len(chunk)
    return dst


def image_digest(path: Path) -> str:
    """SHA-256 over the size and every allocated range (offset and bytes) of a sparse
    image: equal digests mean equal contents, without reading gigabytes of holes."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        for start, end in _data_segments(f.fileno(), size):
            f.seek(start)
            data = f.read(end - start)
            h.update(start.to_bytes(8, "little"))
            h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def find_item(
    image: Path,
    tree: int,
    match: Callable[[Key, Item], bool],
    *,
    not_first: bool = False,
) -> Located:
    """The first item of ``tree`` (all trees with that id) for which ``match`` holds.

    ``not_first`` skips items in slot 0 (editing their key would also need the parent's
    key pointer changed)."""
    with FileSource(image) as src:
        img = BtrfsImage.open(src)
        for root in img.trees():
            if root.objectid != tree:
                continue
            for blk, slot, item in img.iter_items(root):
                key = blk.items[slot].key
                if not_first and slot == 0:
                    continue
                if match(key, item):
                    return Located(
                        tree,
                        blk.logical,
                        slot,
                        key,
                        item,
                        tuple(img.chunk_map.map_read(blk.logical, img.sb.nodesize)),
                        C.BTRFS_HEADER_SIZE + blk.items[slot].offset,
                        img.sb.nodesize,
                        img.sb.csum_type,
                    )
    raise LookupError(f"no matching item in tree {tree} of {image}")


def tree_block_copies(image: Path, logical: int) -> list[int]:
    with FileSource(image) as src:
        img = BtrfsImage.open(src)
        return img.chunk_map.map_read(logical, img.sb.nodesize)


def edit_block(
    image: Path,
    copies: tuple[int, ...] | list[int],
    nodesize: int,
    csum_type: int,
    edit: Callable[[bytearray], None],
    *,
    recompute_csum: bool = True,
) -> None:
    """Apply ``edit`` to every copy of a tree block, recomputing its checksum."""
    with open(image, "r+b") as f:
        for phys in copies:
            f.seek(phys)
            buf = bytearray(f.read(nodesize))
            edit(buf)
            if recompute_csum:
                buf[: C.BTRFS_CSUM_SIZE] = csum_block(csum_type, bytes(buf))
            f.seek(phys)
            f.write(buf)


def set_body_u64(image: Path, loc: Located, field_offset: int, value: int) -> None:
    """Rewrite a u64 at ``field_offset`` inside the item body, in every copy."""

    def edit(buf: bytearray) -> None:
        struct.pack_into("<Q", buf, loc.body + field_offset, value)

    edit_block(image, loc.copies, loc.nodesize, loc.csum_type, edit)


def set_key_offset(image: Path, loc: Located, value: int) -> None:
    """Rewrite the item's key offset in its leaf (every copy)."""
    where = C.BTRFS_HEADER_SIZE + loc.slot * C.BTRFS_ITEM_SIZE + ITEM_KEY_OFFSET_FIELD

    def edit(buf: bytearray) -> None:
        struct.pack_into("<Q", buf, where, value)

    edit_block(image, loc.copies, loc.nodesize, loc.csum_type, edit)


def flip_csum(image: Path, phys: int) -> None:
    """Flip a bit of the stored checksum of the tree block copy at ``phys`` (the block
    is otherwise intact, so only the checksum check fails)."""
    with open(image, "r+b") as f:
        f.seek(phys)
        b = f.read(1)
        f.seek(phys)
        f.write(bytes([b[0] ^ 0x01]))


def rewrite_leaf(
    image: Path,
    leaf: int,
    transform: Callable[[list[tuple[Key, bytes]]], list[tuple[Key, bytes]]],
) -> None:
    """Re-pack a leaf (every copy) with ``transform`` applied to its (key, body) list:
    item headers from the front, bodies packed from the end (item 0 last), checksum
    recomputed. The caller keeps keys sorted and the first key unchanged (or the leaf a
    root)."""
    with FileSource(image) as src:
        img = BtrfsImage.open(src)
        blk = img.read_tree_block(leaf)
        copies = img.chunk_map.map_read(leaf, img.sb.nodesize)
        nodesize, csum_type = img.sb.nodesize, img.sb.csum_type
        items = [(ih.key, blk.item_data(slot)) for slot, ih in enumerate(blk.items)]
    new = transform(items)

    def edit(buf: bytearray) -> None:
        data_end = nodesize - C.BTRFS_HEADER_SIZE
        buf[C.BTRFS_HEADER_SIZE :] = bytes(nodesize - C.BTRFS_HEADER_SIZE)
        struct.pack_into("<I", buf, 96, len(new))  # header nritems
        for slot, (key, body) in enumerate(new):
            data_end -= len(body)
            struct.pack_into(
                "<17sII",
                buf,
                C.BTRFS_HEADER_SIZE + slot * C.BTRFS_ITEM_SIZE,
                key.pack(),
                data_end,
                len(body),
            )
            start = C.BTRFS_HEADER_SIZE + data_end
            buf[start : start + len(body)] = body

    edit_block(image, copies, nodesize, csum_type, edit)
