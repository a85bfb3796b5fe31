"""Item encoders: the inverse of :mod:`model.btrfs.items`' decoders.

``encode_item(decode_item(key, data)) == data`` for every item of a real image (tested on
the images mkfs.btrfs and the kernel write). The image writer builds its items through
these functions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from model.btrfs import constants as C
from model.btrfs.items import (
    EXTENT_DATA_REF,
    SHARED_DATA_REF,
    BlockGroupItem,
    ChunkItem,
    CsumItem,
    DevExtent,
    DevItem,
    DevReplaceItem,
    DevStatsItem,
    DirItem,
    DirLogItem,
    EmptyItem,
    ExtentItem,
    FileExtentItem,
    FreeSpaceBitmap,
    FreeSpaceExtent,
    FreeSpaceInfo,
    InlineRef,
    InodeExtref,
    InodeItem,
    InodeRef,
    Item,
    KeyedRef,
    QgroupItem,
    RawItem,
    RootItem,
    RootRef,
    SkinnyBlockGroupItem,
    Timespec,
    UuidItem,
)

_TS = Timespec.STRUCT


def _ts(t: Timespec) -> bytes:
    return _TS.pack(t.sec, t.nsec)


def encode_inode_item(it: InodeItem) -> bytes:
    return (
        InodeItem.STRUCT.pack(
            it.generation,
            it.transid,
            it.size,
            it.nbytes,
            it.block_group,
            it.nlink,
            it.uid,
            it.gid,
            it.mode,
            it.rdev,
            it.flags,
            it.sequence,
        )
        + _ts(it.atime)
        + _ts(it.ctime)
        + _ts(it.mtime)
        + _ts(it.otime)
    )


def encode_inode_ref(it: InodeRef) -> bytes:
    return b"".join(InodeRef.STRUCT.pack(r.index, len(r.name)) + r.name for r in it.refs)


def encode_inode_extref(it: InodeExtref) -> bytes:
    return b"".join(
        InodeExtref.STRUCT.pack(r.parent_objectid, r.index, len(r.name)) + r.name for r in it.refs
    )


def encode_dir_item(it: DirItem) -> bytes:
    return b"".join(
        DirItem.STRUCT.pack(e.location.pack(), e.transid, len(e.data), len(e.name), e.type)
        + e.name
        + e.data
        for e in it.entries
    )


def encode_file_extent_item(it: FileExtentItem, inline_data: bytes = b"") -> bytes:
    """A file extent item; inline extents need their data (``inline_size`` bytes)."""
    head = FileExtentItem.HEAD.pack(
        it.generation, it.ram_bytes, it.compression, it.encryption, it.other_encoding, it.type
    )
    if it.type == C.FILE_EXTENT_INLINE:
        return head + inline_data
    return head + FileExtentItem.BODY.pack(
        it.disk_bytenr, it.disk_num_bytes, it.offset, it.num_bytes
    )


def encode_root_item(it: RootItem) -> bytes:
    v1 = encode_inode_item(it.inode) + RootItem.V1.pack(
        it.generation,
        it.root_dirid,
        it.bytenr,
        it.byte_limit,
        it.bytes_used,
        it.last_snapshot,
        it.flags,
        it.refs,
        it.drop_progress.pack(),
        it.drop_level,
        it.level,
    )
    v2 = RootItem.V2.pack(
        it.generation_v2,
        it.uuid,
        it.parent_uuid,
        it.received_uuid,
        it.ctransid,
        it.otransid,
        it.stransid,
        it.rtransid,
    )
    times = _ts(it.ctime) + _ts(it.otime) + _ts(it.stime) + _ts(it.rtime)
    return v1 + v2 + times + bytes(64)


def encode_root_ref(it: RootRef) -> bytes:
    return RootRef.STRUCT.pack(it.dirid, it.sequence, len(it.name)) + it.name


def encode_inline_ref(r: InlineRef) -> bytes:
    if r.type == C.EXTENT_DATA_REF_KEY:
        return bytes([r.type]) + EXTENT_DATA_REF.pack(r.root, r.objectid, r.file_offset, r.count)
    if r.type == C.SHARED_DATA_REF_KEY:
        return ExtentItem.INLINE_REF.pack(r.type, r.offset) + SHARED_DATA_REF.pack(r.count)
    return ExtentItem.INLINE_REF.pack(r.type, r.offset)


def encode_extent_item(it: ExtentItem) -> bytes:
    out = ExtentItem.STRUCT.pack(it.refs, it.generation, it.flags)
    if it.tree_block_key is not None:
        out += ExtentItem.TREE_BLOCK_INFO.pack(it.tree_block_key.pack(), it.tree_block_level or 0)
    return out + b"".join(encode_inline_ref(r) for r in it.inline_refs)


def encode_keyed_ref(it: KeyedRef) -> bytes:
    if it.key.type == C.EXTENT_DATA_REF_KEY:
        return EXTENT_DATA_REF.pack(it.root, it.objectid, it.file_offset, it.count)
    if it.key.type == C.SHARED_DATA_REF_KEY:
        return SHARED_DATA_REF.pack(it.count)
    return b""


def encode_block_group_item(it: BlockGroupItem) -> bytes:
    return BlockGroupItem.STRUCT.pack(it.used, it.chunk_objectid, it.flags)


def encode_free_space_info(it: FreeSpaceInfo) -> bytes:
    return FreeSpaceInfo.STRUCT.pack(it.extent_count, it.flags)


def encode_dev_extent(it: DevExtent) -> bytes:
    return DevExtent.STRUCT.pack(
        it.chunk_tree, it.chunk_objectid, it.chunk_offset, it.length, it.chunk_tree_uuid
    )


def encode_dev_item(it: DevItem) -> bytes:
    return DevItem.STRUCT.pack(
        it.devid,
        it.total_bytes,
        it.bytes_used,
        it.io_align,
        it.io_width,
        it.sector_size,
        it.type,
        it.generation,
        it.start_offset,
        it.dev_group,
        it.seek_speed,
        it.bandwidth,
        it.uuid,
        it.fsid,
    )


def encode_chunk_item(it: ChunkItem) -> bytes:
    head = ChunkItem.STRUCT.pack(
        it.length,
        it.owner,
        it.stripe_len,
        it.type,
        it.io_align,
        it.io_width,
        it.sector_size,
        len(it.stripes),
        it.sub_stripes,
    )
    return head + b"".join(ChunkItem.STRIPE.pack(s.devid, s.offset, s.dev_uuid) for s in it.stripes)


def _u64s(values: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    InodeItem: encode_inode_item,
    InodeRef: encode_inode_ref,
    InodeExtref: encode_inode_extref,
    DirItem: encode_dir_item,
    RootItem: encode_root_item,
    RootRef: encode_root_ref,
    ExtentItem: encode_extent_item,
    KeyedRef: encode_keyed_ref,
    BlockGroupItem: encode_block_group_item,
    SkinnyBlockGroupItem: lambda it: b"",
    FreeSpaceInfo: encode_free_space_info,
    FreeSpaceExtent: lambda it: b"",
    FreeSpaceBitmap: lambda it: it.bitmap,
    DevExtent: encode_dev_extent,
    DevItem: encode_dev_item,
    ChunkItem: encode_chunk_item,
    CsumItem: lambda it: it.csums,
    UuidItem: lambda it: _u64s(it.subvol_ids),
    DevStatsItem: lambda it: _u64s(it.values),
    QgroupItem: lambda it: _u64s(it.values),
    DirLogItem: lambda it: struct.pack("<Q", it.end),
    DevReplaceItem: lambda it: DevReplaceItem.STRUCT.pack(
        it.src_devid,
        it.cursor_left,
        it.cursor_right,
        it.cont_reading_from_srcdev_mode,
        it.replace_state,
        it.time_started,
        it.time_stopped,
        it.num_write_errors,
        it.num_uncorrectable_read_errors,
    ),
    EmptyItem: lambda it: b"",
    RawItem: lambda it: it.data,
}


def encode_item(item: Item, inline_data: bytes = b"") -> bytes:
    """The on-disk body of ``item``. Inline file extents take their data separately (the
    decoded item keeps only its size)."""
    if isinstance(item, FileExtentItem):
        return encode_file_extent_item(item, inline_data)
    enc = _ENCODERS.get(type(item))
    if enc is None:
        raise TypeError(f"no encoder for {type(item).__name__}")
    return enc(item)
