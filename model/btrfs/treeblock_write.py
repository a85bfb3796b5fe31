"""Tree blocks as the kernel writes them: the inverse of
:func:`model.btrfs.treeblock.parse_tree_block`.

Layout (``fs/btrfs/ctree.h``, ``include/uapi/linux/btrfs_tree.h``): the 101-byte
``struct btrfs_header``; in a leaf, ``nritems`` 25-byte ``struct btrfs_item`` (key, offset
counted from the end of the header, size) with the bodies packed from the end of the block
backwards — item 0's body ends at ``nodesize - 101`` (offset-wise), each next body right
before the previous one, no gaps; in a node, ``nritems`` 33-byte ``struct btrfs_key_ptr``
(key, blockptr, generation). Everything between the item table and the bodies (leaf), or
after the pointers (node), is zero: ``prepare_eb_write()`` (``fs/btrfs/extent_io.c``)
zeroes it before every write "to avoid stale content". The checksum (``csum_tree_block``)
covers bytes 32..nodesize and is stored zero-padded in the first 32 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from model.btrfs import constants as C
from model.btrfs.csum import csum_block
from model.btrfs.ctree import ExtentBuffer
from model.btrfs.items import Key
from model.btrfs.treeblock import Header, ItemHeader, KeyPtr


def _pack_header(
    buf: bytearray,
    *,
    fsid: bytes,
    bytenr: int,
    flags: int,
    chunk_tree_uuid: bytes,
    generation: int,
    owner: int,
    nritems: int,
    level: int,
) -> None:
    if len(fsid) != 16 or len(chunk_tree_uuid) != 16:
        raise ValueError("fsid and chunk_tree_uuid are 16 bytes")
    # the csum field stays zero until csum_tree_block fills it
    Header.STRUCT.pack_into(
        buf, 0, bytes(C.BTRFS_CSUM_SIZE), fsid, bytenr, flags, chunk_tree_uuid, generation,
        owner, nritems, level,
    )  # fmt: skip


def csum_tree_block(buf: bytearray, csum_type: int) -> bytes:
    """``csum_tree_block()``: fill the csum field of ``buf`` and return the block."""
    buf[: C.BTRFS_CSUM_SIZE] = csum_block(csum_type, bytes(buf))
    return bytes(buf)


def serialize_leaf(
    items: Sequence[tuple[Key, bytes]],
    *,
    nodesize: int,
    bytenr: int,
    generation: int,
    owner: int,
    fsid: bytes,
    chunk_tree_uuid: bytes,
    flags: int = C.HEADER_FLAG_WRITTEN | (C.MIXED_BACKREF_REV << C.BACKREF_REV_SHIFT),
    csum_type: int = C.CSUM_TYPE_CRC32,
) -> bytes:
    """The on-disk bytes of a leaf holding ``items`` (sorted (key, body) pairs)."""
    buf = bytearray(nodesize)
    _pack_header(
        buf,
        fsid=fsid,
        bytenr=bytenr,
        flags=flags,
        chunk_tree_uuid=chunk_tree_uuid,
        generation=generation,
        owner=owner,
        nritems=len(items),
        level=0,
    )
    end = nodesize - C.BTRFS_HEADER_SIZE  # item offsets count from the end of the header
    pos = C.BTRFS_HEADER_SIZE
    table_end = pos + C.BTRFS_ITEM_SIZE * len(items)
    for key, data in items:
        size = len(data)
        end -= size
        if C.BTRFS_HEADER_SIZE + end < table_end:
            raise ValueError(f"items do not fit in a {nodesize}-byte leaf")
        ItemHeader.STRUCT.pack_into(buf, pos, key.pack(), end, size)
        start = C.BTRFS_HEADER_SIZE + end
        buf[start : start + size] = data
        pos += C.BTRFS_ITEM_SIZE
    return csum_tree_block(buf, csum_type)


def serialize_node(
    ptrs: Sequence[tuple[Key, int, int]],
    *,
    level: int,
    nodesize: int,
    bytenr: int,
    generation: int,
    owner: int,
    fsid: bytes,
    chunk_tree_uuid: bytes,
    flags: int = C.HEADER_FLAG_WRITTEN | (C.MIXED_BACKREF_REV << C.BACKREF_REV_SHIFT),
    csum_type: int = C.CSUM_TYPE_CRC32,
) -> bytes:
    """The on-disk bytes of a node at ``level`` (>= 1) holding ``ptrs`` as (key, child
    bytenr, child generation)."""
    if level < 1:
        raise ValueError("a node has level >= 1")
    if C.BTRFS_HEADER_SIZE + C.BTRFS_KEY_PTR_SIZE * len(ptrs) > nodesize:
        raise ValueError(f"{len(ptrs)} pointers do not fit in a {nodesize}-byte node")
    buf = bytearray(nodesize)
    _pack_header(
        buf,
        fsid=fsid,
        bytenr=bytenr,
        flags=flags,
        chunk_tree_uuid=chunk_tree_uuid,
        generation=generation,
        owner=owner,
        nritems=len(ptrs),
        level=level,
    )
    pos = C.BTRFS_HEADER_SIZE
    for key, blockptr, gen in ptrs:
        KeyPtr.STRUCT.pack_into(buf, pos, key.pack(), blockptr, gen)
        pos += C.BTRFS_KEY_PTR_SIZE
    return csum_tree_block(buf, csum_type)


def serialize_extent_buffer(
    eb: ExtentBuffer,
    *,
    nodesize: int,
    fsid: bytes,
    chunk_tree_uuid: bytes,
    csum_type: int = C.CSUM_TYPE_CRC32,
    written: bool = True,
) -> bytes:
    """A :class:`~model.btrfs.ctree.ExtentBuffer` as written at commit: its header
    fields, WRITTEN set (as ``write_one_eb`` does) unless ``written=False``; a node's
    pointer generations are its children's generations."""
    flags = eb.flags | C.HEADER_FLAG_WRITTEN if written else eb.flags
    if eb.level == 0:
        return serialize_leaf(
            eb.items(),
            nodesize=nodesize,
            bytenr=eb.bytenr,
            generation=eb.generation,
            owner=eb.owner,
            fsid=fsid,
            chunk_tree_uuid=chunk_tree_uuid,
            flags=flags,
            csum_type=csum_type,
        )
    return serialize_node(
        [(k, c.bytenr, c.generation) for k, c in zip(eb.keys, eb.children, strict=True)],
        level=eb.level,
        nodesize=nodesize,
        bytenr=eb.bytenr,
        generation=eb.generation,
        owner=eb.owner,
        fsid=fsid,
        chunk_tree_uuid=chunk_tree_uuid,
        flags=flags,
        csum_type=csum_type,
    )
