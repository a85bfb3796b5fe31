"""ext4 metadata checksums: the superblock, group descriptors and block bitmaps.

Sources: ``fs/ext4/super.c`` (``ext4_superblock_csum``, ``ext4_init_metadata_csum`` for the
seed, ``ext4_group_desc_csum``), ``fs/ext4/bitmap.c`` (``ext4_block_bitmap_csum_verify``),
``fs/ext4/ext4.h`` (``ext4_chksum``: crc32c continued from a seed, no inversion on entry or
exit) and ``lib/crc16.c`` (``crc16``: CRC-16, polynomial 0x8005 bit-reflected, no final
inversion). crc32c comes from the ``crc32c`` library.
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

from model.ext4 import constants as C


def _crc16_table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_CRC16 = _crc16_table()


def crc16(crc: int, data: bytes) -> int:
    """``lib/crc16.c`` ``crc16(crc, buffer, len)``."""
    crc &= 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ b) & 0xFF]
    return crc


def ext4_chksum(crc: int, data: bytes) -> int:
    """``ext4_chksum(sbi, crc, address, length)`` (ext4.h): crc32c from ``crc``, no inversion
    on entry or exit (the crypto shash ``crc32c`` driver's raw update)."""
    std = int(_crc32c.crc32c(data, (~crc) & 0xFFFFFFFF))
    return (~std) & 0xFFFFFFFF


def csum_seed(sb_raw: bytes) -> int:
    """``sbi->s_csum_seed`` (``ext4_init_metadata_csum``): ``s_checksum_seed`` with the
    csum_seed feature, else ``ext4_chksum(~0, s_uuid)``."""
    incompat = struct.unpack_from("<I", sb_raw, C.S_FEATURE_INCOMPAT)[0]
    if incompat & C.INCOMPAT_CSUM_SEED:
        return int(struct.unpack_from("<I", sb_raw, C.S_CHECKSUM_SEED)[0])
    return ext4_chksum(0xFFFFFFFF, sb_raw[C.S_UUID : C.S_UUID + 16])


def ext4_superblock_csum(sb_raw: bytes) -> int:
    """super.c ``ext4_superblock_csum``: crc32c(~0) of the superblock up to ``s_checksum``."""
    return ext4_chksum(0xFFFFFFFF, sb_raw[: C.S_CHECKSUM])


def ext4_group_desc_csum(
    sb_raw: bytes, group: int, desc: bytes, desc_size: int, metadata_csum: bool, gdt_csum: bool
) -> int:
    """super.c ``ext4_group_desc_csum``: with metadata_csum the low 16 bits of crc32c(seed,
    le32 group, descriptor with ``bg_checksum`` zeroed); with gdt_csum crc16(~0, uuid, le32
    group, the descriptor without ``bg_checksum``; the part past it only with 64bit); else 0.
    ``desc`` holds the descriptor's ``desc_size`` bytes."""
    off = C.BG_CHECKSUM
    le_group = struct.pack("<I", group & 0xFFFFFFFF)
    if metadata_csum:
        c = ext4_chksum(csum_seed(sb_raw), le_group)
        c = ext4_chksum(c, desc[:off])
        c = ext4_chksum(c, b"\0\0")
        if off + 2 < desc_size:
            c = ext4_chksum(c, desc[off + 2 : desc_size])
        return c & 0xFFFF
    if not gdt_csum:
        return 0
    incompat = struct.unpack_from("<I", sb_raw, C.S_FEATURE_INCOMPAT)[0]
    crc = crc16(0xFFFF, sb_raw[C.S_UUID : C.S_UUID + 16])
    crc = crc16(crc, le_group)
    crc = crc16(crc, desc[:off])
    if incompat & C.INCOMPAT_64BIT and off + 2 < desc_size:
        crc = crc16(crc, desc[off + 2 : desc_size])
    return crc


def ext4_block_bitmap_csum(sb_raw: bytes, bitmap: bytes, clusters_per_group: int) -> int:
    """bitmap.c ``ext4_block_bitmap_csum_verify``'s ``calculated``: crc32c(seed) of the first
    ``EXT4_CLUSTERS_PER_GROUP / 8`` bytes of the bitmap block (the caller keeps the low 16
    bits when the descriptor has no ``bg_block_bitmap_csum_hi``)."""
    return ext4_chksum(csum_seed(sb_raw), bitmap[: clusters_per_group // 8])
