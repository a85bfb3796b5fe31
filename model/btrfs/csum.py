"""Checksums (``fs/btrfs/disk-io.c``: ``csum_tree_block``, ``btrfs_check_super_csum``) and
the name and backref hashes (``btrfs_name_hash``, ``hash_extent_data_ref``).

crc32c comes from the ``crc32c`` library and xxhash64 from ``xxhash``; sha256 and
blake2b-256 from :mod:`hashlib`. The digest is stored in the first ``csum_size`` bytes of
the 32-byte csum field, the rest zero.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

import crc32c as _crc32c
import xxhash as _xxhash

from model.btrfs import constants as C
from model.linux import U64

CSUM_SIZES: Final = {
    C.CSUM_TYPE_CRC32: 4,
    C.CSUM_TYPE_XXHASH: 8,
    C.CSUM_TYPE_SHA256: 32,
    C.CSUM_TYPE_BLAKE2: 32,
}
CSUM_NAMES: Final = {
    C.CSUM_TYPE_CRC32: "crc32c",
    C.CSUM_TYPE_XXHASH: "xxhash64",
    C.CSUM_TYPE_SHA256: "sha256",
    C.CSUM_TYPE_BLAKE2: "blake2b",
}


def crc32c_std(data: bytes, init: int = 0) -> int:
    """Standard CRC-32C (as used for the on-disk checksum), continuing from ``init``."""
    return int(_crc32c.crc32c(data, init)) & 0xFFFFFFFF


def crc32c_raw(seed: int, data: bytes) -> int:
    """The kernel's ``crc32c(seed, buf)``: no inversion on entry or exit."""
    return (~crc32c_std(data, (~seed) & 0xFFFFFFFF)) & 0xFFFFFFFF


def btrfs_csum_data(csum_type: int, data: bytes) -> bytes:
    """The digest bytes (``csum_size`` long) of ``data``."""
    if csum_type == C.CSUM_TYPE_CRC32:
        return struct.pack("<I", crc32c_std(data))
    if csum_type == C.CSUM_TYPE_XXHASH:
        return struct.pack("<Q", _xxhash.xxh64_intdigest(data, seed=0))
    if csum_type == C.CSUM_TYPE_SHA256:
        return hashlib.sha256(data).digest()
    if csum_type == C.CSUM_TYPE_BLAKE2:
        return hashlib.blake2b(data, digest_size=32).digest()
    raise KeyError(csum_type)


def csum_block(csum_type: int, block: bytes) -> bytes:
    """The 32-byte csum field for a tree block or superblock: digest of ``block[32:]``,
    zero-padded (``csum_tree_block``)."""
    return btrfs_csum_data(csum_type, block[C.BTRFS_CSUM_SIZE :]).ljust(C.BTRFS_CSUM_SIZE, b"\0")


def btrfs_name_hash(name: bytes) -> int:
    """``btrfs_name_hash()``: the DIR_ITEM key offset, ``crc32c((u32)~1, name)``."""
    return crc32c_raw(0xFFFFFFFE, name)


def hash_extent_data_ref(root_objectid: int, owner: int, offset: int) -> int:
    """``hash_extent_data_ref()`` (``fs/btrfs/extent-tree.c``): the EXTENT_DATA_REF key offset
    and the order of inline data refs."""
    high_crc = crc32c_raw(0xFFFFFFFF, struct.pack("<Q", root_objectid))
    low_crc = crc32c_raw(0xFFFFFFFF, struct.pack("<Q", owner))
    low_crc = crc32c_raw(low_crc, struct.pack("<Q", offset))
    return ((high_crc << 31) ^ low_crc) & U64
