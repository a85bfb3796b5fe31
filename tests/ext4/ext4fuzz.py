"""Helpers for an ext4 image fuzzer: where the integer fields of the superblock and of the
group descriptors are, where the block bitmaps are, and how to make the checksums right
again after an edit (so that a mutation gets past the checksum checks to the deeper ones).

The layouts are ``struct ext4_super_block`` and ``struct ext4_group_desc`` of the kernel's
``fs/ext4/ext4.h`` (6.12), the same as e2fsprogs' ``lib/ext2fs/ext2_fs.h`` (1.47); names are
the C names. Byte arrays (uuids, names, the error function names, the mount options, the
reserved padding) are not listed.

    ext4_fields(buf)       -> [(absolute offset, "B"|"H"|"I"|"Q", name), ...]
    ext4_bitmap_blocks(buf) -> [(absolute offset, length), ...]
    fix_ext4_csums(buf)     recompute the superblock and descriptor checksums in place
"""

from __future__ import annotations

import re
import struct

from model.errors import FormatError
from model.ext4 import constants as C
from model.ext4.csum import ext4_block_bitmap_csum, ext4_group_desc_csum, ext4_superblock_csum
from model.ext4.image import Ext4Superblock, descriptor_loc, parse_ext4_superblock

# (format, name): "B"/"H"/"I"/"Q" integers, "Ns" byte arrays, "I[n]" arrays of integers
SUPERBLOCK_LAYOUT: list[tuple[str, str]] = [
    ("I", "s_inodes_count"),
    ("I", "s_blocks_count_lo"),
    ("I", "s_r_blocks_count_lo"),
    ("I", "s_free_blocks_count_lo"),
    ("I", "s_free_inodes_count"),
    ("I", "s_first_data_block"),
    ("I", "s_log_block_size"),
    ("I", "s_log_cluster_size"),
    ("I", "s_blocks_per_group"),
    ("I", "s_clusters_per_group"),
    ("I", "s_inodes_per_group"),
    ("I", "s_mtime"),
    ("I", "s_wtime"),
    ("H", "s_mnt_count"),
    ("H", "s_max_mnt_count"),
    ("H", "s_magic"),
    ("H", "s_state"),
    ("H", "s_errors"),
    ("H", "s_minor_rev_level"),
    ("I", "s_lastcheck"),
    ("I", "s_checkinterval"),
    ("I", "s_creator_os"),
    ("I", "s_rev_level"),
    ("H", "s_def_resuid"),
    ("H", "s_def_resgid"),
    ("I", "s_first_ino"),
    ("H", "s_inode_size"),
    ("H", "s_block_group_nr"),
    ("I", "s_feature_compat"),
    ("I", "s_feature_incompat"),
    ("I", "s_feature_ro_compat"),
    ("16s", "s_uuid"),
    ("16s", "s_volume_name"),
    ("64s", "s_last_mounted"),
    ("I", "s_algorithm_usage_bitmap"),
    ("B", "s_prealloc_blocks"),
    ("B", "s_prealloc_dir_blocks"),
    ("H", "s_reserved_gdt_blocks"),
    ("16s", "s_journal_uuid"),
    ("I", "s_journal_inum"),
    ("I", "s_journal_dev"),
    ("I", "s_last_orphan"),
    ("I[4]", "s_hash_seed"),
    ("B", "s_def_hash_version"),
    ("B", "s_jnl_backup_type"),
    ("H", "s_desc_size"),
    ("I", "s_default_mount_opts"),
    ("I", "s_first_meta_bg"),
    ("I", "s_mkfs_time"),
    ("I[17]", "s_jnl_blocks"),
    ("I", "s_blocks_count_hi"),
    ("I", "s_r_blocks_count_hi"),
    ("I", "s_free_blocks_count_hi"),
    ("H", "s_min_extra_isize"),
    ("H", "s_want_extra_isize"),
    ("I", "s_flags"),
    ("H", "s_raid_stride"),
    ("H", "s_mmp_update_interval"),
    ("Q", "s_mmp_block"),
    ("I", "s_raid_stripe_width"),
    ("B", "s_log_groups_per_flex"),
    ("B", "s_checksum_type"),
    ("B", "s_encryption_level"),
    ("B", "s_reserved_pad"),
    ("Q", "s_kbytes_written"),
    ("I", "s_snapshot_inum"),
    ("I", "s_snapshot_id"),
    ("Q", "s_snapshot_r_blocks_count"),
    ("I", "s_snapshot_list"),
    ("I", "s_error_count"),
    ("I", "s_first_error_time"),
    ("I", "s_first_error_ino"),
    ("Q", "s_first_error_block"),
    ("32s", "s_first_error_func"),
    ("I", "s_first_error_line"),
    ("I", "s_last_error_time"),
    ("I", "s_last_error_ino"),
    ("I", "s_last_error_line"),
    ("Q", "s_last_error_block"),
    ("32s", "s_last_error_func"),
    ("64s", "s_mount_opts"),
    ("I", "s_usr_quota_inum"),
    ("I", "s_grp_quota_inum"),
    ("I", "s_overhead_clusters"),
    ("I[2]", "s_backup_bgs"),
    ("B[4]", "s_encrypt_algos"),
    ("16s", "s_encrypt_pw_salt"),
    ("I", "s_lpf_ino"),
    ("I", "s_prj_quota_inum"),
    ("I", "s_checksum_seed"),
    ("B", "s_wtime_hi"),
    ("B", "s_mtime_hi"),
    ("B", "s_mkfs_time_hi"),
    ("B", "s_lastcheck_hi"),
    ("B", "s_first_error_time_hi"),
    ("B", "s_last_error_time_hi"),
    ("B", "s_first_error_errcode"),
    ("B", "s_last_error_errcode"),
    ("H", "s_encoding"),
    ("H", "s_encoding_flags"),
    ("I", "s_orphan_file_inum"),
    ("376s", "s_reserved"),
    ("I", "s_checksum"),
]

DESC_LAYOUT: list[tuple[str, str]] = [
    ("I", "bg_block_bitmap_lo"),
    ("I", "bg_inode_bitmap_lo"),
    ("I", "bg_inode_table_lo"),
    ("H", "bg_free_blocks_count_lo"),
    ("H", "bg_free_inodes_count_lo"),
    ("H", "bg_used_dirs_count_lo"),
    ("H", "bg_flags"),
    ("I", "bg_exclude_bitmap_lo"),
    ("H", "bg_block_bitmap_csum_lo"),
    ("H", "bg_inode_bitmap_csum_lo"),
    ("H", "bg_itable_unused_lo"),
    ("H", "bg_checksum"),
    # EXT4_DESC_SIZE >= 64 only
    ("I", "bg_block_bitmap_hi"),
    ("I", "bg_inode_bitmap_hi"),
    ("I", "bg_inode_table_hi"),
    ("H", "bg_free_blocks_count_hi"),
    ("H", "bg_free_inodes_count_hi"),
    ("H", "bg_used_dirs_count_hi"),
    ("H", "bg_itable_unused_hi"),
    ("I", "bg_exclude_bitmap_hi"),
    ("H", "bg_block_bitmap_csum_hi"),
    ("H", "bg_inode_bitmap_csum_hi"),
    ("4s", "bg_reserved"),
]

_ARRAY = re.compile(r"([BHIQ])\[(\d+)\]")


def _flatten(layout: list[tuple[str, str]]) -> tuple[list[tuple[int, str, str]], int]:
    """(relative offset, format char, name) of the integers, and the structure's size."""
    out: list[tuple[int, str, str]] = []
    off = 0
    for fmt, name in layout:
        m = _ARRAY.fullmatch(fmt)
        if m:
            ch, n = m.group(1), int(m.group(2))
            for i in range(n):
                out.append((off, ch, f"{name}[{i}]"))
                off += struct.calcsize(ch)
        elif fmt in ("B", "H", "I", "Q"):
            out.append((off, fmt, name))
            off += struct.calcsize(fmt)
        else:
            off += struct.calcsize(fmt)
    return out, off


SUPERBLOCK_FIELDS, _SB_SIZE = _flatten(SUPERBLOCK_LAYOUT)
DESC_FIELDS, _DESC_SIZE = _flatten(DESC_LAYOUT)
assert _SB_SIZE == C.SUPERBLOCK_SIZE and _DESC_SIZE == 64


def _superblock(buf: bytes | bytearray) -> Ext4Superblock | None:
    """The superblock when it is sane enough to locate the descriptors, else None."""
    try:
        return parse_ext4_superblock(
            bytes(buf[C.SUPERBLOCK_OFFSET : C.SUPERBLOCK_OFFSET + C.SUPERBLOCK_SIZE]), len(buf)
        )
    except FormatError:
        return None


def _desc_offsets(buf: bytes | bytearray, sb: Ext4Superblock) -> list[int]:
    """Absolute offsets of the descriptors that lie inside ``buf``."""
    out = []
    for g in range(sb.groups_count):
        nr, i = divmod(g, sb.desc_per_block)
        off = descriptor_loc(sb, nr) * sb.blocksize + i * sb.desc_size
        if off + sb.desc_size > len(buf):
            break
        out.append(off)
    return out


def ext4_fields(buf: bytes | bytearray) -> list[tuple[int, str, str]]:
    """(absolute offset, struct format char, name) of every integer field of the primary
    superblock and, when the superblock lets us locate them, of every group descriptor
    (named ``bg[G].bg_...``; the ``_hi`` halves only with 64-byte descriptors)."""
    out = [(C.SUPERBLOCK_OFFSET + off, ch, name) for off, ch, name in SUPERBLOCK_FIELDS]
    sb = _superblock(buf)
    if sb is None:
        return out
    for g, base in enumerate(_desc_offsets(buf, sb)):
        for off, ch, name in DESC_FIELDS:
            if off + struct.calcsize(ch) <= sb.desc_size:
                out.append((base + off, ch, f"bg[{g}].{name}"))
    return out


def ext4_bitmap_blocks(buf: bytes | bytearray) -> list[tuple[int, int]]:
    """(absolute offset, length) of each group's block bitmap block that lies inside the
    image, in group order (duplicates removed)."""
    sb = _superblock(buf)
    if sb is None:
        return []
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    for base in _desc_offsets(buf, sb):
        blk = struct.unpack_from("<I", buf, base + C.BG_BLOCK_BITMAP_LO)[0]
        if sb.desc_size >= C.EXT4_MIN_DESC_SIZE_64BIT:
            blk |= struct.unpack_from("<I", buf, base + C.BG_BLOCK_BITMAP_HI)[0] << 32
        off = blk * sb.blocksize
        if 0 < blk < sb.blocks_count and off + sb.blocksize <= len(buf) and off not in seen:
            seen.add(off)
            out.append((off, sb.blocksize))
    return out


def fix_ext4_csums(buf: bytearray, *, bitmaps: bool = False) -> None:
    """Recompute in place, after an edit: with ``bitmaps``, each block bitmap checksum in its
    descriptor (metadata_csum; not for BLOCK_UNINIT groups, whose bitmap is not on disk);
    each group descriptor checksum (gdt_csum or metadata_csum); the primary superblock
    checksum (metadata_csum). Descriptors are only found when the
    edited superblock still lets us locate them; the superblock checksum is always fixed."""
    s0 = C.SUPERBLOCK_OFFSET
    ro = struct.unpack_from("<I", buf, s0 + C.S_FEATURE_RO_COMPAT)[0]
    metadata_csum = bool(ro & C.RO_COMPAT_METADATA_CSUM)
    gdt_csum = bool(ro & C.RO_COMPAT_GDT_CSUM)
    sb = _superblock(buf)
    if sb is not None and (metadata_csum or gdt_csum):
        sb_raw = bytes(buf[s0 : s0 + C.SUPERBLOCK_SIZE])
        ds = sb.desc_size
        for g, base in enumerate(_desc_offsets(buf, sb)):
            flags = struct.unpack_from("<H", buf, base + C.BG_FLAGS)[0]
            if bitmaps and metadata_csum and not flags & C.EXT4_BG_BLOCK_UNINIT:
                blk = struct.unpack_from("<I", buf, base + C.BG_BLOCK_BITMAP_LO)[0]
                if ds >= C.EXT4_MIN_DESC_SIZE_64BIT:
                    blk |= struct.unpack_from("<I", buf, base + C.BG_BLOCK_BITMAP_HI)[0] << 32
                off = blk * sb.blocksize
                if 0 < blk < sb.blocks_count and off + sb.blocksize <= len(buf):
                    c = ext4_block_bitmap_csum(
                        sb_raw, bytes(buf[off : off + sb.blocksize]), sb.clusters_per_group
                    )
                    struct.pack_into("<H", buf, base + C.BG_BLOCK_BITMAP_CSUM_LO, c & 0xFFFF)
                    if ds >= C.EXT4_BG_BLOCK_BITMAP_CSUM_HI_END:
                        struct.pack_into("<H", buf, base + C.BG_BLOCK_BITMAP_CSUM_HI, c >> 16)
            c = ext4_group_desc_csum(
                sb_raw, g, bytes(buf[base : base + ds]), ds, metadata_csum, gdt_csum
            )
            struct.pack_into("<H", buf, base + C.BG_CHECKSUM, c)
    if metadata_csum:
        c = ext4_superblock_csum(bytes(buf[s0 : s0 + C.SUPERBLOCK_SIZE]))
        struct.pack_into("<I", buf, s0 + C.S_CHECKSUM, c)
