"""Tree blocks: ``struct btrfs_header`` (101 B), leaves and nodes (``fs/btrfs/ctree.h``,
``include/uapi/linux/btrfs_tree.h``).

A leaf is the header, then ``nritems`` item headers (key 17 B, offset u32, size u32; the
offset counts from the end of the header), then free space, then the item bodies packed at
the end of the block. A node is the header and ``nritems`` key pointers (key 17 B,
blockptr u64, generation u64).

:func:`parse_tree_block` decodes only what must hold for the block to be walked at all (the
layout); the kernel's finer rules live in :mod:`model.btrfs.tree_checker`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from model.btrfs import constants as C
from model.btrfs.items import Item, Key, decode_item
from model.errors import FormatError


@dataclass(frozen=True, slots=True)
class Header:
    """``struct btrfs_header``: csum 32, fsid 16, bytenr u64 (the block's own logical
    address), flags u64 (WRITTEN, RELOC; backref revision in bits 56-63), chunk_tree_uuid
    16, generation u64, owner u64 (tree id), nritems u32, level u8."""

    csum: bytes
    fsid: bytes
    bytenr: int
    flags: int
    chunk_tree_uuid: bytes
    generation: int
    owner: int
    nritems: int
    level: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<32s16sQQ16sQQIB")

    @classmethod
    def unpack_from(cls, buf: bytes) -> Header:
        return cls(*cls.STRUCT.unpack_from(buf, 0))

    @property
    def backref_rev(self) -> int:
        return self.flags >> C.BACKREF_REV_SHIFT


@dataclass(frozen=True, slots=True)
class ItemHeader:
    """``struct btrfs_item``: key, offset (of the body, from byte 101), size."""

    key: Key
    offset: int
    size: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<17sII")


@dataclass(frozen=True, slots=True)
class KeyPtr:
    """``struct btrfs_key_ptr``: key (first key of the child), blockptr, generation."""

    key: Key
    blockptr: int
    generation: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<17sQQ")


@dataclass(frozen=True, slots=True)
class TreeBlock:
    """A parsed tree block. ``physical`` is where it was read (first good copy)."""

    logical: int
    physical: int
    header: Header
    raw: bytes
    items: tuple[ItemHeader, ...] = ()
    ptrs: tuple[KeyPtr, ...] = ()

    @property
    def level(self) -> int:
        return self.header.level

    @property
    def nritems(self) -> int:
        return self.header.nritems

    @property
    def is_leaf(self) -> bool:
        return self.header.level == 0

    def item_data(self, slot: int) -> bytes:
        ih = self.items[slot]
        start = C.BTRFS_HEADER_SIZE + ih.offset
        return self.raw[start : start + ih.size]

    def item(self, slot: int) -> Item:
        """The decoded item in ``slot`` (FormatError if its body is malformed)."""
        ih = self.items[slot]
        return decode_item(
            ih.key, self.item_data(slot), self.physical + C.BTRFS_HEADER_SIZE + ih.offset
        )

    def iter_items(self) -> Iterator[tuple[int, Item]]:
        for slot in range(len(self.items)):
            yield slot, self.item(slot)

    def first_key(self) -> Key | None:
        if self.is_leaf:
            return self.items[0].key if self.items else None
        return self.ptrs[0].key if self.ptrs else None

    def leaf_free_space(self) -> int:
        """``btrfs_leaf_free_space()``: bytes between the item headers and the data."""
        data_start = C.BTRFS_HEADER_SIZE + (
            self.items[-1].offset if self.items else len(self.raw) - C.BTRFS_HEADER_SIZE
        )
        return data_start - (C.BTRFS_HEADER_SIZE + C.BTRFS_ITEM_SIZE * len(self.items))


def btrfs_leaf_data_size(nodesize: int) -> int:
    """``BTRFS_LEAF_DATA_SIZE()``: bytes after the header."""
    return nodesize - C.BTRFS_HEADER_SIZE


def btrfs_nodeptrs_per_block(nodesize: int) -> int:
    """``BTRFS_NODEPTRS_PER_BLOCK()``."""
    return btrfs_leaf_data_size(nodesize) // C.BTRFS_KEY_PTR_SIZE


def parse_tree_block(raw: bytes, logical: int, physical: int) -> TreeBlock:
    """Decode a tree block's header and item/pointer table.

    Raises :class:`FormatError` when the table cannot be laid out in the block: too many
    items, a level beyond BTRFS_MAX_LEVEL, item bodies outside the data area. (That the
    bodies are packed without gaps, keys are sorted and so on is the tree checker's job:
    those blocks can still be walked.)
    """
    nodesize = len(raw)
    if nodesize < C.BTRFS_HEADER_SIZE:
        raise FormatError("tree block", physical, "shorter than its header", logical)
    hdr = Header.unpack_from(raw)
    if hdr.level >= C.BTRFS_MAX_LEVEL:
        raise FormatError(
            "tree block",
            physical,
            f"level {hdr.level} >= BTRFS_MAX_LEVEL {C.BTRFS_MAX_LEVEL}",
            logical,
        )
    data_size = btrfs_leaf_data_size(nodesize)
    if hdr.level == 0:
        if hdr.nritems * C.BTRFS_ITEM_SIZE > data_size:
            raise FormatError(
                "leaf",
                physical,
                f"nritems {hdr.nritems} cannot fit in a {nodesize}-byte leaf",
                logical,
            )
        items = []
        for i in range(hdr.nritems):
            k, off, size = ItemHeader.STRUCT.unpack_from(
                raw, C.BTRFS_HEADER_SIZE + i * C.BTRFS_ITEM_SIZE
            )
            if off + size > data_size:
                raise FormatError(
                    f"leaf item {i}",
                    physical + C.BTRFS_HEADER_SIZE + i * C.BTRFS_ITEM_SIZE,
                    f"body [{off}, {off + size}) ends past the leaf's data area ({data_size})",
                    logical,
                )
            items.append(ItemHeader(Key.unpack_from(k), off, size))
        return TreeBlock(logical, physical, hdr, raw, items=tuple(items))
    if hdr.nritems == 0 or hdr.nritems > btrfs_nodeptrs_per_block(nodesize):
        raise FormatError(
            "node",
            physical,
            f"nritems {hdr.nritems} is not in [1, {btrfs_nodeptrs_per_block(nodesize)}]",
            logical,
        )
    ptrs = []
    for i in range(hdr.nritems):
        k, ptr, gen = KeyPtr.STRUCT.unpack_from(raw, C.BTRFS_HEADER_SIZE + i * C.BTRFS_KEY_PTR_SIZE)
        ptrs.append(KeyPtr(Key.unpack_from(k), ptr, gen))
    return TreeBlock(logical, physical, hdr, raw, ptrs=tuple(ptrs))
