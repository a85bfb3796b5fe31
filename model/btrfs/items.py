"""The btrfs item structs (``include/uapi/linux/btrfs_tree.h``), one class per item.

Each class's docstring says where the item lives (tree, key objectid, key type, key
offset) and what its fields mean; its ``struct.Struct`` is compiled once as a class
attribute. :func:`decode_item` picks the class by key type and raises
:class:`~model.errors.FormatError` when the bytes cannot hold the item.

All structs are packed and little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from model.btrfs import constants as C
from model.errors import FormatError

_KEY_STRUCT = struct.Struct("<QBQ")


class Key(NamedTuple):
    """``struct btrfs_disk_key``: (objectid u64, type u8, offset u64), ordered in that order.

    A named tuple: keys are compared and sorted millions of times, and tuple comparison
    runs in C."""

    objectid: int
    type: int
    offset: int

    @classmethod
    def unpack_from(cls, buf: bytes, off: int = 0) -> Key:
        return cls._make(_KEY_STRUCT.unpack_from(buf, off))

    def pack(self) -> bytes:
        return _KEY_STRUCT.pack(self.objectid, self.type, self.offset)

    def __str__(self) -> str:
        return f"({self.objectid} {self.type} {self.offset})"


@dataclass(frozen=True, slots=True)
class Timespec:
    """``struct btrfs_timespec``: sec u64, nsec u32 (12 bytes)."""

    sec: int
    nsec: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QI")

    @classmethod
    def unpack_from(cls, buf: bytes, off: int) -> Timespec:
        return cls(*cls.STRUCT.unpack_from(buf, off))


class Item:
    """Base of all decoded items. ``key`` is the item's key."""

    key: Key
    # key types this class decodes
    KEY_TYPES: ClassVar[tuple[int, ...]] = ()


def _need(key: Key, data: bytes, size: int, name: str, where: int, exact: bool = False) -> None:
    if len(data) < size or (exact and len(data) != size):
        rel = "exactly" if exact else "at least"
        raise FormatError(
            f"{name} item {key}",
            where,
            f"item size {len(data)}, the struct needs {rel} {size} bytes",
        )


@dataclass(frozen=True, slots=True)
class InodeItem(Item):
    """``struct btrfs_inode_item`` (160 B). Key (ino, INODE_ITEM 1, 0) in an fs tree; also
    embedded at the start of every ROOT_ITEM.

    generation: transaction that created the inode; transid: last change; size: i_size;
    nbytes: bytes of extents referenced (not holes, not inline padding); block_group: hint;
    nlink, uid, gid, mode; rdev; flags (BTRFS_INODE_*, NOCOMPRESS = 1 << 3 ...);
    sequence: NFS change counter; then 4 reserved u64; atime, ctime, mtime, otime.
    """

    key: Key
    generation: int
    transid: int
    size: int
    nbytes: int
    block_group: int
    nlink: int
    uid: int
    gid: int
    mode: int
    rdev: int
    flags: int
    sequence: int
    atime: Timespec
    ctime: Timespec
    mtime: Timespec
    otime: Timespec

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.INODE_ITEM_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<5Q4I3Q32x")  # up to the four times
    SIZE: ClassVar[int] = STRUCT.size + 4 * Timespec.STRUCT.size

    @classmethod
    def unpack_from(cls, key: Key, buf: bytes, off: int = 0) -> InodeItem:
        v = cls.STRUCT.unpack_from(buf, off)
        t = off + cls.STRUCT.size
        times = [Timespec.unpack_from(buf, t + 12 * i) for i in range(4)]
        args: list[Any] = [key, *v, *times]
        return cls(*args)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> InodeItem:
        _need(key, data, cls.SIZE, "INODE_ITEM", where, exact=True)
        return cls.unpack_from(key, data)


@dataclass(frozen=True, slots=True)
class InodeRefEntry:
    index: int
    name: bytes


@dataclass(frozen=True, slots=True)
class InodeRef(Item):
    """``struct btrfs_inode_ref`` entries packed back to back. Key (ino, INODE_REF 12,
    parent dir ino). Each: index u64 (the DIR_INDEX key offset), name_len u16, name."""

    key: Key
    refs: tuple[InodeRefEntry, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.INODE_REF_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QH")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> InodeRef:
        refs = []
        p = 0
        while p < len(data):
            _need(key, data[p:], cls.STRUCT.size, "INODE_REF", where + p)
            index, nlen = cls.STRUCT.unpack_from(data, p)
            p += cls.STRUCT.size
            if p + nlen > len(data):
                raise FormatError(f"INODE_REF item {key}", where + p, "name runs past the item")
            refs.append(InodeRefEntry(index, bytes(data[p : p + nlen])))
            p += nlen
        return cls(key, tuple(refs))


@dataclass(frozen=True, slots=True)
class InodeExtrefEntry:
    parent_objectid: int
    index: int
    name: bytes


@dataclass(frozen=True, slots=True)
class InodeExtref(Item):
    """``struct btrfs_inode_extref`` entries. Key (ino, INODE_EXTREF 13,
    btrfs_extref_hash(parent, name)). Each: parent_objectid u64, index u64, name_len u16,
    name."""

    key: Key
    refs: tuple[InodeExtrefEntry, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.INODE_EXTREF_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQH")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> InodeExtref:
        refs = []
        p = 0
        while p < len(data):
            _need(key, data[p:], cls.STRUCT.size, "INODE_EXTREF", where + p)
            parent, index, nlen = cls.STRUCT.unpack_from(data, p)
            p += cls.STRUCT.size
            if p + nlen > len(data):
                raise FormatError(f"INODE_EXTREF item {key}", where + p, "name runs past the item")
            refs.append(InodeExtrefEntry(parent, index, bytes(data[p : p + nlen])))
            p += nlen
        return cls(key, tuple(refs))


@dataclass(frozen=True, slots=True)
class DirEntry:
    location: Key
    transid: int
    type: int
    name: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class DirItem(Item):
    """``struct btrfs_dir_item`` entries (30 B + name + data) packed back to back.

    Keys: (dir, DIR_ITEM 84, btrfs_name_hash(name)) — several entries when names collide;
    (dir, DIR_INDEX 96, index) — exactly one entry; (ino, XATTR_ITEM 24, name hash) — data
    is the xattr value. Fields: location key (the inode, or the subvolume's ROOT_ITEM key),
    transid u64, data_len u16, name_len u16, type u8 (BTRFS_FT_*)."""

    key: Key
    entries: tuple[DirEntry, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.DIR_ITEM_KEY, C.DIR_INDEX_KEY, C.XATTR_ITEM_KEY)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<17sQHHB")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> DirItem:
        ents = []
        p = 0
        while p < len(data):
            _need(key, data[p:], cls.STRUCT.size, "DIR_ITEM", where + p)
            loc, transid, dlen, nlen, typ = cls.STRUCT.unpack_from(data, p)
            p += cls.STRUCT.size
            if p + nlen + dlen > len(data):
                raise FormatError(
                    f"DIR_ITEM item {key}", where + p, "name and data run past the item"
                )
            ents.append(
                DirEntry(
                    Key.unpack_from(loc),
                    transid,
                    typ,
                    bytes(data[p : p + nlen]),
                    bytes(data[p + nlen : p + nlen + dlen]),
                )
            )
            p += nlen + dlen
        return cls(key, tuple(ents))


@dataclass(frozen=True, slots=True)
class FileExtentItem(Item):
    """``struct btrfs_file_extent_item``. Key (ino, EXTENT_DATA 108, file offset).

    generation u64, ram_bytes u64 (uncompressed size), compression u8, encryption u8,
    other_encoding u16, type u8 (0 inline, 1 regular, 2 prealloc) = 21 bytes; inline data
    follows from byte 21; regular/prealloc add disk_bytenr (0 = hole), disk_num_bytes,
    offset (into the uncompressed extent), num_bytes (bytes of file covered) = 53 bytes."""

    key: Key
    generation: int
    ram_bytes: int
    compression: int
    encryption: int
    other_encoding: int
    type: int
    disk_bytenr: int = 0
    disk_num_bytes: int = 0
    offset: int = 0
    num_bytes: int = 0
    inline_size: int = 0  # bytes of inline data stored (compressed size if compressed)

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.EXTENT_DATA_KEY,)
    HEAD: ClassVar[struct.Struct] = struct.Struct("<QQBBHB")
    BODY: ClassVar[struct.Struct] = struct.Struct("<4Q")
    TYPE_OFFSET: ClassVar[int] = HEAD.size - 1  # the type byte ends the head
    INLINE_DATA_START: ClassVar[int] = HEAD.size  # BTRFS_FILE_EXTENT_INLINE_DATA_START
    SIZE: ClassVar[int] = HEAD.size + BODY.size

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> FileExtentItem:
        _need(key, data, cls.HEAD.size, "EXTENT_DATA", where)
        head = cls.HEAD.unpack_from(data)
        if head[5] == C.FILE_EXTENT_INLINE:
            inline: list[Any] = [key, *head, 0, 0, 0, 0, len(data) - cls.INLINE_DATA_START]
            return cls(*inline)
        _need(key, data, cls.SIZE, "EXTENT_DATA", where, exact=True)
        args: list[Any] = [key, *head, *cls.BODY.unpack_from(data, cls.HEAD.size)]
        return cls(*args)


@dataclass(frozen=True, slots=True)
class CsumItem(Item):
    """Data checksums. Key (EXTENT_CSUM_OBJECTID -10, EXTENT_CSUM 128, logical of the first
    sector); one csum_size digest per sector, packed."""

    key: Key
    csums: bytes

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.EXTENT_CSUM_KEY,)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> CsumItem:
        return cls(key, bytes(data))


@dataclass(frozen=True, slots=True)
class RootItem(Item):
    """``struct btrfs_root_item`` (439 B; 239 B before generation_v2). Key (tree id,
    ROOT_ITEM 132, 0 or the snapshot's creating transid) in the root tree.

    inode (unused 160 B), generation, root_dirid (256 for fs trees), bytenr (root node),
    byte_limit, bytes_used, last_snapshot, flags (RDONLY bit 0, DEAD bit 48), refs u32,
    drop_progress key and drop_level (deletion progress), level (root node level),
    generation_v2 (== generation when the v2 fields are valid), uuid, parent_uuid,
    received_uuid, c/o/s/r transids, c/o/s/r times, reserved 64."""

    key: Key
    inode: InodeItem
    generation: int
    root_dirid: int
    bytenr: int
    byte_limit: int
    bytes_used: int
    last_snapshot: int
    flags: int
    refs: int
    drop_progress: Key
    drop_level: int
    level: int
    generation_v2: int = 0
    uuid: bytes = bytes(16)
    parent_uuid: bytes = bytes(16)
    received_uuid: bytes = bytes(16)
    ctransid: int = 0
    otransid: int = 0
    stransid: int = 0
    rtransid: int = 0
    ctime: Timespec = Timespec(0, 0)
    otime: Timespec = Timespec(0, 0)
    stime: Timespec = Timespec(0, 0)
    rtime: Timespec = Timespec(0, 0)

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.ROOT_ITEM_KEY,)
    V1: ClassVar[struct.Struct] = struct.Struct("<7QI17sBB")  # after the inode item
    V2: ClassVar[struct.Struct] = struct.Struct("<Q16s16s16s4Q")  # from SIZE_V1
    # btrfs_legacy_root_item_size(): offsetof(struct btrfs_root_item, generation_v2)
    SIZE_V1: ClassVar[int] = InodeItem.SIZE + V1.size
    RESERVED: ClassVar[int] = 64  # reserved[8], after the four times
    SIZE: ClassVar[int] = SIZE_V1 + V2.size + 4 * Timespec.STRUCT.size + RESERVED

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> RootItem:
        _need(key, data, cls.SIZE_V1, "ROOT_ITEM", where)
        inode = InodeItem.unpack_from(Key(0, 0, 0), data, 0)
        v = list(cls.V1.unpack_from(data, InodeItem.SIZE))
        v[8] = Key.unpack_from(v[8])
        args: list[Any] = [key, inode, *v]
        if len(data) >= cls.SIZE:
            args += cls.V2.unpack_from(data, cls.SIZE_V1)
            tbase = cls.SIZE_V1 + cls.V2.size
            args += [Timespec.unpack_from(data, tbase + 12 * i) for i in range(4)]
        return cls(*args)


@dataclass(frozen=True, slots=True)
class RootRef(Item):
    """``struct btrfs_root_ref`` (18 B + name). Keys (parent tree, ROOT_REF 156, child tree)
    and (child tree, ROOT_BACKREF 144, parent tree) in the root tree: dirid u64 (directory
    holding the subvolume), sequence u64 (its DIR_INDEX), name_len u16, name."""

    key: Key
    dirid: int
    sequence: int
    name: bytes

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.ROOT_REF_KEY, C.ROOT_BACKREF_KEY)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQH")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> RootRef:
        _need(key, data, cls.STRUCT.size, "ROOT_REF", where)
        dirid, seq, nlen = cls.STRUCT.unpack_from(data)
        if cls.STRUCT.size + nlen > len(data):
            raise FormatError(f"ROOT_REF item {key}", where, "name runs past the item")
        return cls(key, dirid, seq, bytes(data[cls.STRUCT.size : cls.STRUCT.size + nlen]))


@dataclass(frozen=True, slots=True)
class InlineRef:
    """One inline backref inside an extent item (``struct btrfs_extent_inline_ref``).

    type: TREE_BLOCK_REF 176 (offset = root), SHARED_BLOCK_REF 182 (offset = parent block),
    EXTENT_DATA_REF 178 (root, objectid, offset, count follow in place of the offset),
    SHARED_DATA_REF 184 (offset = parent, then count u32), EXTENT_OWNER_REF 172 (offset =
    root, simple quotas)."""

    type: int
    offset: int = 0  # root or parent
    root: int = 0  # EXTENT_DATA_REF
    objectid: int = 0
    file_offset: int = 0
    count: int = 1


# struct btrfs_extent_data_ref: root, objectid, offset (u64), count (u32); inline after the
# type byte, or the whole body of an EXTENT_DATA_REF item
EXTENT_DATA_REF: struct.Struct = struct.Struct("<3QI")
# struct btrfs_shared_data_ref: count (u32); the whole body of a SHARED_DATA_REF item
SHARED_DATA_REF: struct.Struct = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class ExtentItem(Item):
    """``struct btrfs_extent_item`` (24 B) + optional ``btrfs_tree_block_info`` + inline refs.

    Keys in the extent tree: (bytenr, EXTENT_ITEM 168, length) for data and for tree blocks
    without SKINNY_METADATA (those carry tree_block_info: first key 17 B + level u8);
    (bytenr, METADATA_ITEM 169, level) for tree blocks with SKINNY_METADATA.
    refs u64 (total references), generation u64, flags u64 (DATA 1, TREE_BLOCK 2,
    FULL_BACKREF 0x100)."""

    key: Key
    refs: int
    generation: int
    flags: int
    tree_block_key: Key | None = None
    tree_block_level: int | None = None
    inline_refs: tuple[InlineRef, ...] = field(default_factory=tuple)

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.EXTENT_ITEM_KEY, C.METADATA_ITEM_KEY)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<3Q")
    TREE_BLOCK_INFO: ClassVar[struct.Struct] = struct.Struct("<17sB")  # first key, level
    # struct btrfs_extent_inline_ref: type u8, offset u64 (root or parent); for
    # EXTENT_DATA_REF the btrfs_extent_data_ref takes the offset's place
    INLINE_REF: ClassVar[struct.Struct] = struct.Struct("<BQ")
    INLINE_SIZES: ClassVar[dict[int, int]] = {
        C.TREE_BLOCK_REF_KEY: INLINE_REF.size,
        C.SHARED_BLOCK_REF_KEY: INLINE_REF.size,
        C.EXTENT_DATA_REF_KEY: 1 + EXTENT_DATA_REF.size,
        C.SHARED_DATA_REF_KEY: INLINE_REF.size + SHARED_DATA_REF.size,
        C.EXTENT_OWNER_REF_KEY: INLINE_REF.size,
    }

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> ExtentItem:
        _need(key, data, cls.STRUCT.size, "EXTENT_ITEM", where)
        refs, gen, flags = cls.STRUCT.unpack_from(data)
        p = cls.STRUCT.size
        tbk: Key | None = None
        tbl: int | None = None
        if key.type == C.EXTENT_ITEM_KEY and flags & C.EXTENT_FLAG_TREE_BLOCK:
            _need(key, data, p + cls.TREE_BLOCK_INFO.size, "EXTENT_ITEM", where)
            raw_key, tbl = cls.TREE_BLOCK_INFO.unpack_from(data, p)
            tbk = Key.unpack_from(raw_key)
            p += cls.TREE_BLOCK_INFO.size
        inl: list[InlineRef] = []
        while p < len(data):
            t = data[p]
            size = cls.INLINE_SIZES.get(t)
            if size is None:
                raise FormatError(
                    f"EXTENT_ITEM {key}", where + p, f"unknown inline backref type {t}"
                )
            if p + size > len(data):
                raise FormatError(
                    f"EXTENT_ITEM {key}", where + p, f"inline backref type {t} runs past the item"
                )
            if t == C.EXTENT_DATA_REF_KEY:
                root, oid, off, cnt = EXTENT_DATA_REF.unpack_from(data, p + 1)
                inl.append(InlineRef(t, root=root, objectid=oid, file_offset=off, count=cnt))
            elif t == C.SHARED_DATA_REF_KEY:
                _, parent = cls.INLINE_REF.unpack_from(data, p)
                (cnt,) = SHARED_DATA_REF.unpack_from(data, p + cls.INLINE_REF.size)
                inl.append(InlineRef(t, offset=parent, count=cnt))
            else:
                _, off = cls.INLINE_REF.unpack_from(data, p)
                inl.append(InlineRef(t, offset=off))
            p += size
        return cls(key, refs, gen, flags, tbk, tbl, tuple(inl))


@dataclass(frozen=True, slots=True)
class KeyedRef(Item):
    """Keyed (non-inline) backrefs in the extent tree, all keyed (bytenr, TYPE, x):

    TREE_BLOCK_REF 176: x = root, empty item; SHARED_BLOCK_REF 182: x = parent block, empty;
    EXTENT_DATA_REF 178: x = hash_extent_data_ref(root, objectid, offset); item root u64,
    objectid u64, offset u64, count u32 (28 B); SHARED_DATA_REF 184: x = parent block, item
    count u32 (4 B); EXTENT_OWNER_REF 172 is only ever inline."""

    key: Key
    root: int = 0
    objectid: int = 0
    file_offset: int = 0
    count: int = 1

    KEY_TYPES: ClassVar[tuple[int, ...]] = (
        C.TREE_BLOCK_REF_KEY,
        C.SHARED_BLOCK_REF_KEY,
        C.EXTENT_DATA_REF_KEY,
        C.SHARED_DATA_REF_KEY,
    )

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> KeyedRef:
        if key.type == C.EXTENT_DATA_REF_KEY:
            _need(key, data, EXTENT_DATA_REF.size, "EXTENT_DATA_REF", where, exact=True)
            root, oid, off, cnt = EXTENT_DATA_REF.unpack_from(data)
            return cls(key, root, oid, off, cnt)
        if key.type == C.SHARED_DATA_REF_KEY:
            _need(key, data, SHARED_DATA_REF.size, "SHARED_DATA_REF", where, exact=True)
            return cls(key, count=SHARED_DATA_REF.unpack_from(data)[0])
        return cls(key)


@dataclass(frozen=True, slots=True)
class BlockGroupItem(Item):
    """``struct btrfs_block_group_item`` (24 B). Key (start, BLOCK_GROUP_ITEM 192, length) in
    the extent tree, or in the block group tree (11) with compat_ro BLOCK_GROUP_TREE.
    used u64 (bytes allocated inside), chunk_objectid u64 (256; the global_root_id with
    EXTENT_TREE_V2), flags u64 (type and profile bits)."""

    key: Key
    used: int
    chunk_objectid: int
    flags: int

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.BLOCK_GROUP_ITEM_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<3Q")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> BlockGroupItem:
        _need(key, data, cls.STRUCT.size, "BLOCK_GROUP_ITEM", where, exact=True)
        return cls(key, *cls.STRUCT.unpack_from(data))

    @property
    def start(self) -> int:
        return self.key.objectid

    @property
    def length(self) -> int:
        return self.key.offset


@dataclass(frozen=True, slots=True)
class SkinnyBlockGroupItem(Item):
    """The 2019 SKINNY_BG_TREE RFC's item (never merged): key (start, 193, used) in tree 11,
    empty item; length and flags come from the chunk mapping at ``start``."""

    key: Key

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.SKINNY_BLOCK_GROUP_ITEM_KEY,)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> SkinnyBlockGroupItem:
        _need(key, data, 0, "SKINNY_BLOCK_GROUP_ITEM", where, exact=True)
        return cls(key)

    @property
    def start(self) -> int:
        return self.key.objectid

    @property
    def used(self) -> int:
        return self.key.offset


@dataclass(frozen=True, slots=True)
class FreeSpaceInfo(Item):
    """``struct btrfs_free_space_info`` (8 B). Key (bg start, FREE_SPACE_INFO 198, bg length)
    in the free space tree: extent_count u32 (free extents in the block group), flags u32
    (USING_BITMAPS 1)."""

    key: Key
    extent_count: int
    flags: int

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.FREE_SPACE_INFO_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<II")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> FreeSpaceInfo:
        _need(key, data, cls.STRUCT.size, "FREE_SPACE_INFO", where, exact=True)
        return cls(key, *cls.STRUCT.unpack_from(data))


@dataclass(frozen=True, slots=True)
class FreeSpaceExtent(Item):
    """A free extent: key (start, FREE_SPACE_EXTENT 199, length), empty item."""

    key: Key

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.FREE_SPACE_EXTENT_KEY,)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> FreeSpaceExtent:
        _need(key, data, 0, "FREE_SPACE_EXTENT", where, exact=True)
        return cls(key)


@dataclass(frozen=True, slots=True)
class FreeSpaceBitmap(Item):
    """A free-space bitmap: key (start, FREE_SPACE_BITMAP 200, length); one bit per sector,
    LSB first within each byte, 1 = free."""

    key: Key
    bitmap: bytes

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.FREE_SPACE_BITMAP_KEY,)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> FreeSpaceBitmap:
        return cls(key, bytes(data))

    def free_ranges(self, sectorsize: int) -> list[tuple[int, int]]:
        """The free (start, length) runs the bitmap describes, in order."""
        out: list[tuple[int, int]] = []
        # bits past the bitmap's bytes are 0 (not free): never loop past them, whatever
        # the key's length says
        nbits = min(self.key.offset // sectorsize, 8 * len(self.bitmap))
        bits = int.from_bytes(self.bitmap, "little")
        i = 0
        while i < nbits:
            if (bits >> i) & 1:
                j = i
                while j < nbits and (bits >> j) & 1:
                    j += 1
                out.append((self.key.objectid + i * sectorsize, (j - i) * sectorsize))
                i = j
            else:
                i += 1
        return out


@dataclass(frozen=True, slots=True)
class DevExtent(Item):
    """``struct btrfs_dev_extent`` (48 B). Key (devid, DEV_EXTENT 204, physical start) in the
    dev tree: chunk_tree (3), chunk_objectid (256), chunk_offset (logical start of the
    chunk), length, chunk_tree_uuid."""

    key: Key
    chunk_tree: int
    chunk_objectid: int
    chunk_offset: int
    length: int
    chunk_tree_uuid: bytes

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.DEV_EXTENT_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<4Q16s")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> DevExtent:
        _need(key, data, cls.STRUCT.size, "DEV_EXTENT", where, exact=True)
        return cls(key, *cls.STRUCT.unpack_from(data))


@dataclass(frozen=True, slots=True)
class DevItem(Item):
    """``struct btrfs_dev_item`` (98 B). Key (DEV_ITEMS 1, DEV_ITEM 216, devid) in the chunk
    tree; a copy sits in the superblock. devid, total_bytes, bytes_used (sum of its dev
    extents), io_align, io_width, sector_size, type, generation, start_offset, dev_group,
    seek_speed, bandwidth, uuid (device), fsid."""

    key: Key
    devid: int
    total_bytes: int
    bytes_used: int
    io_align: int
    io_width: int
    sector_size: int
    type: int
    generation: int
    start_offset: int
    dev_group: int
    seek_speed: int
    bandwidth: int
    uuid: bytes
    fsid: bytes

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.DEV_ITEM_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<3Q3I3QIBB16s16s")
    SIZE: ClassVar[int] = STRUCT.size

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> DevItem:
        _need(key, data, cls.SIZE, "DEV_ITEM", where, exact=True)
        return cls(key, *cls.STRUCT.unpack_from(data))


@dataclass(frozen=True, slots=True)
class Stripe:
    """``struct btrfs_stripe`` (32 B): devid u64, offset u64 (physical), dev_uuid."""

    devid: int
    offset: int
    dev_uuid: bytes


@dataclass(frozen=True, slots=True)
class ChunkItem(Item):
    """``struct btrfs_chunk`` (48 B + 32 B per stripe). Key (FIRST_CHUNK_TREE 256,
    CHUNK_ITEM 228, logical start) in the chunk tree; SYSTEM chunks also in the superblock's
    sys_chunk_array. length, owner (2), stripe_len (64 KiB), type (block group flags),
    io_align, io_width, sector_size, num_stripes u16, sub_stripes u16, then the stripes."""

    key: Key
    length: int
    owner: int
    stripe_len: int
    type: int
    io_align: int
    io_width: int
    sector_size: int
    num_stripes: int
    sub_stripes: int
    stripes: tuple[Stripe, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.CHUNK_ITEM_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<4Q3IHH")
    STRIPE: ClassVar[struct.Struct] = struct.Struct("<QQ16s")

    @classmethod
    def item_size(cls, num_stripes: int) -> int:
        """``btrfs_chunk_item_size()``."""
        return cls.STRUCT.size + num_stripes * cls.STRIPE.size

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> ChunkItem:
        _need(key, data, cls.item_size(1), "CHUNK_ITEM", where)
        v = cls.STRUCT.unpack_from(data)
        n = v[7]
        if n == 0 or len(data) < cls.item_size(n):
            raise FormatError(
                f"CHUNK_ITEM {key}",
                where,
                f"num_stripes {n} does not fit the item size {len(data)}",
            )
        stripes = tuple(
            Stripe(*cls.STRIPE.unpack_from(data, cls.STRUCT.size + i * cls.STRIPE.size))
            for i in range(n)
        )
        args: list[Any] = [key, *v, stripes]
        return cls(*args)

    @property
    def start(self) -> int:
        return self.key.objectid if self.key.type != C.CHUNK_ITEM_KEY else self.key.offset


@dataclass(frozen=True, slots=True)
class UuidItem(Item):
    """UUID tree items. Key (uuid low u64, UUID_KEY_SUBVOL 251 / RECEIVED_SUBVOL 252,
    uuid high u64): a list of u64 subvolume ids."""

    key: Key
    subvol_ids: tuple[int, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.UUID_KEY_SUBVOL, C.UUID_KEY_RECEIVED_SUBVOL)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> UuidItem:
        if len(data) % 8:
            raise FormatError(
                f"UUID item {key}", where, f"item size {len(data)} is not a multiple of 8"
            )
        return cls(key, struct.unpack(f"<{len(data) // 8}Q", data))


@dataclass(frozen=True, slots=True)
class DevStatsItem(Item):
    """Device statistics: key (DEV_STATS_OBJECTID 0, PERSISTENT_ITEM 249, devid) in the dev
    tree: u64 counters (write_errs, read_errs, flush_errs, corruption_errs, generation)."""

    key: Key
    values: tuple[int, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.PERSISTENT_ITEM_KEY,)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> DevStatsItem:
        n = len(data) // 8
        return cls(key, struct.unpack_from(f"<{n}Q", data))


@dataclass(frozen=True, slots=True)
class DirLogItem(Item):
    """Log tree DIR_LOG_ITEM 60 / DIR_LOG_INDEX 72: key (dir, type, start), item end u64."""

    key: Key
    end: int

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.DIR_LOG_ITEM_KEY, C.DIR_LOG_INDEX_KEY)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> DirLogItem:
        _need(key, data, 8, "DIR_LOG_ITEM", where, exact=True)
        return cls(key, struct.unpack_from("<Q", data)[0])


@dataclass(frozen=True, slots=True)
class QgroupItem(Item):
    """Quota tree items: QGROUP_STATUS 240 (version, generation, flags, rescan[, enable_gen]),
    QGROUP_INFO 242 (generation, rfer, rfer_cmpr, excl, excl_cmpr), QGROUP_LIMIT 244 (flags,
    max_rfer, max_excl, rsv_rfer, rsv_excl), QGROUP_RELATION 246 (empty)."""

    key: Key
    values: tuple[int, ...]

    KEY_TYPES: ClassVar[tuple[int, ...]] = (
        C.QGROUP_STATUS_KEY,
        C.QGROUP_INFO_KEY,
        C.QGROUP_LIMIT_KEY,
        C.QGROUP_RELATION_KEY,
    )

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> QgroupItem:
        return cls(key, struct.unpack_from(f"<{len(data) // 8}Q", data))


@dataclass(frozen=True, slots=True)
class DevReplaceItem(Item):
    """``struct btrfs_dev_replace_item`` (72 B; the kernel ignores an item of another size,
    ``btrfs_init_dev_replace``). Key (DEV_REPLACE_DEVID
    0, DEV_REPLACE 250, 0) in the dev tree: the state of the last ``btrfs replace``.
    src_devid (-1 once finished), cursor_left/cursor_right (progress), the
    cont_reading_from_srcdev_mode (0 ALWAYS, 1 AVOID), replace_state (0 never started, 1
    started, 2 finished, 3 canceled, 4 suspended), time_started, time_stopped (seconds),
    num_write_errors, num_uncorrectable_read_errors; all u64."""

    key: Key
    src_devid: int
    cursor_left: int
    cursor_right: int
    cont_reading_from_srcdev_mode: int
    replace_state: int
    time_started: int
    time_stopped: int
    num_write_errors: int
    num_uncorrectable_read_errors: int

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.DEV_REPLACE_KEY,)
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<9Q")

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> DevReplaceItem:
        _need(key, data, cls.STRUCT.size, "DEV_REPLACE", where, exact=True)
        return cls(key, *cls.STRUCT.unpack_from(data))


@dataclass(frozen=True, slots=True)
class EmptyItem(Item):
    """Items that carry only their key: ORPHAN_ITEM 48 (key (ORPHAN -5, 48, ino))."""

    key: Key

    KEY_TYPES: ClassVar[tuple[int, ...]] = (C.ORPHAN_ITEM_KEY,)

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> EmptyItem:
        return cls(key)


@dataclass(frozen=True, slots=True)
class RawItem(Item):
    """An item whose body this model keeps as bytes (balance, verity, raid stripe, string
    items and unknown types)."""

    key: Key
    data: bytes

    @classmethod
    def decode(cls, key: Key, data: bytes, where: int) -> RawItem:
        return cls(key, bytes(data))


_CLASSES: list[type] = [
    InodeItem,
    InodeRef,
    InodeExtref,
    DirItem,
    FileExtentItem,
    CsumItem,
    RootItem,
    RootRef,
    ExtentItem,
    KeyedRef,
    BlockGroupItem,
    SkinnyBlockGroupItem,
    FreeSpaceInfo,
    FreeSpaceExtent,
    FreeSpaceBitmap,
    DevExtent,
    DevItem,
    ChunkItem,
    UuidItem,
    DevStatsItem,
    DirLogItem,
    QgroupItem,
    DevReplaceItem,
    EmptyItem,
]
DECODERS: dict[int, Callable[[Key, bytes, int], Item]] = {}
for _cls in _CLASSES:
    for _t in _cls.KEY_TYPES:  # type: ignore[attr-defined]
        DECODERS[_t] = _cls.decode  # type: ignore[attr-defined]


def decode_item(key: Key, data: bytes, where: int = 0) -> Item:
    """Decode an item body by its key type; ``where`` is the physical offset of the body
    (for error messages). Unknown types give a :class:`RawItem`."""
    dec = DECODERS.get(key.type)
    if dec is None:
        return RawItem.decode(key, data, where)
    try:
        return dec(key, data, where)
    except struct.error as e:  # a struct the size checks above let through
        raise FormatError(f"item {key}", where, f"cannot decode: {e}") from None
