"""``fsoracle ext4 check``: what the 6.12 kernel verifies in the superblock, the group
descriptors and the block bitmaps, and e2fsck's pass-5 free block counts.

Rules, each a function named after the kernel function (or e2fsck pass) it specifies, with
that function's message text:

- super.c ``ext4_fill_flex_info``: an ``s_log_groups_per_flex`` above 31 (ignored by the
  kernel, refused by e2fsprogs): a warning.
- super.c ``ext4_init_metadata_csum``: the checksum type and ``ext4_superblock_csum_verify``
  (metadata_csum); the "metadata_csum and uninit_bg are redundant" warning.
- super.c ``ext4_check_descriptors``: per group, the block bitmap, inode bitmap and inode
  table on the superblock, on the descriptor blocks, or outside the group (outside the
  filesystem with flex_bg), and ``ext4_group_desc_csum_verify`` (crc16 with gdt_csum, crc32c
  with metadata_csum). The kernel stops at the first fatal one; every one is reported here.
- balloc.c ``ext4_read_block_bitmap_nowait``: group 0 BLOCK_UNINIT, the bitmap block range.
- balloc.c ``ext4_validate_block_bitmap`` for bitmaps read from disk:
  ``ext4_block_bitmap_csum_verify`` (metadata_csum), ``ext4_valid_block_bitmap`` (without
  flex_bg: the group's own metadata marked in use), ``ext4_valid_block_bitmap_padding``.
- e2fsck pass 5 ``check_block_bitmaps``: the descriptor's free block count against the
  bitmap (read, or built by ``ext4_init_block_bitmap`` for BLOCK_UNINIT groups) -- the same
  comparison the kernel makes in ``ext4_mb_generate_buddy`` ("block bitmap and bg descriptor
  inconsistent"); and the superblock's total against the sum, a warning only, as e2fsck -n
  does not count it as an error (``PR_5_FREE_BLOCK_COUNT`` is ``PR_NO_OK``).

Conditions that keep the image from being read at all (:mod:`model.ext4.image`) raise
:class:`model.errors.FormatError` instead. Bitmaps are read one group at a time and not kept.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from model.blocksource import BlockSource
from model.errors import FormatError
from model.ext4 import constants as C
from model.ext4.csum import ext4_block_bitmap_csum, ext4_group_desc_csum, ext4_superblock_csum
from model.ext4.image import (
    Ext4Image,
    GroupDesc,
    ext4_bg_num_gdb,
    group_first_block_no,
    num_clusters_in_group,
)


@dataclass(frozen=True, slots=True)
class Ext4Finding:
    """One thing wrong. ``code`` is a stable short identifier, ``what`` names the structure
    (``superblock``, ``group 3``), ``message`` is the kernel's (or e2fsck's) text, ``source``
    the function that reports it, ``group`` the block group when there is one."""

    code: str
    what: str
    message: str
    source: str
    group: int | None = None

    def __str__(self) -> str:
        return f"[{self.code}] {self.what}: {self.message} ({self.source})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Ext4CheckResult:
    findings: list[Ext4Finding] = field(default_factory=list)
    warnings: list[Ext4Finding] = field(default_factory=list)
    groups_checked: int = 0
    bitmaps_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


def _u16(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", b, off)[0])


def _u32(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", b, off)[0])


def ext4_init_metadata_csum(sb_raw: bytes) -> tuple[list[Ext4Finding], list[Ext4Finding]]:
    """super.c ``ext4_init_metadata_csum``: (findings, warnings)."""
    ro = _u32(sb_raw, C.S_FEATURE_RO_COMPAT)
    findings: list[Ext4Finding] = []
    warnings: list[Ext4Finding] = []
    src = "ext4_init_metadata_csum"
    if not ro & C.RO_COMPAT_METADATA_CSUM:
        return findings, warnings
    if ro & C.RO_COMPAT_GDT_CSUM:
        warnings.append(
            Ext4Finding(
                "csum-features",
                "superblock",
                "metadata_csum and uninit_bg are redundant flags; please run fsck.",
                src,
            )
        )
    if sb_raw[C.S_CHECKSUM_TYPE] != C.EXT4_CRC32C_CHKSUM:
        findings.append(
            Ext4Finding(
                "sb-csum-type",
                "superblock",
                "VFS: Found ext4 filesystem with unknown checksum algorithm.",
                src,
            )
        )
    elif _u32(sb_raw, C.S_CHECKSUM) != ext4_superblock_csum(sb_raw):
        findings.append(
            Ext4Finding(
                "sb-csum",
                "superblock",
                "VFS: Found ext4 filesystem with invalid superblock checksum.  Run e2fsck?",
                "ext4_superblock_csum_verify",
            )
        )
    return findings, warnings


def ext4_fill_flex_info(im: Ext4Image) -> list[Ext4Finding]:
    """super.c ``ext4_fill_flex_info``: with flex_bg, an ``s_log_groups_per_flex`` above 31
    is silently taken as 0 (no flex groups) and the filesystem mounts; e2fsprogs refuses such
    a superblock. A warning, not a finding (the kernel's verdict is what ``check`` gives)."""
    sb = im.sb
    v = sb.log_groups_per_flex
    if not sb.has_incompat(C.INCOMPAT_FLEX_BG) or v <= 31:
        return []
    return [
        Ext4Finding(
            "flex-size",
            "superblock",
            f"s_log_groups_per_flex {v} is above 31: the kernel uses no flex groups "
            "(e2fsprogs refuses this superblock)",
            "ext4_fill_flex_info",
        )
    ]


_PARTS = (("bb", "Block bitmap"), ("ib", "Inode bitmap"), ("it", "Inode table"))


def ext4_check_descriptors(im: Ext4Image, sb_raw: bytes) -> tuple[list[Ext4Finding], set[int]]:
    """super.c ``ext4_check_descriptors``: the findings, and the groups with a bad bitmap
    or inode table location (their bitmaps are neither read nor counted: the descriptor is
    known to be wrong). ``sb_block`` is the logical superblock
    block (1 with 1 KiB blocks, else 0); ``last_bg_block`` is ``sb_block +
    ext4_bg_num_gdb(sb, 0)``; without flex_bg each group's range is its own blocks (the last
    group: up to the last block), with flex_bg the whole filesystem."""
    sb = im.sb
    sb_block = C.SUPERBLOCK_OFFSET // sb.blocksize
    last_bg_block = sb_block + ext4_bg_num_gdb(sb, 0)
    flexbg = sb.has_incompat(C.INCOMPAT_FLEX_BG)
    metadata_csum = sb.has_ro_compat(C.RO_COMPAT_METADATA_CSUM)
    gdt_csum = sb.has_ro_compat(C.RO_COMPAT_GDT_CSUM)
    first_block = sb.first_data_block
    ngroups = im.groups_count
    out: list[Ext4Finding] = []
    bad_loc: set[int] = set()
    src = "ext4_check_descriptors"
    for i in range(ngroups):
        if i == ngroups - 1 or flexbg:
            last_block = sb.blocks_count - 1
        else:
            last_block = first_block + sb.blocks_per_group - 1
        gdp = im.descs[i]
        what = f"group {i}"
        locs = {"bb": gdp.block_bitmap, "ib": gdp.inode_bitmap, "it": gdp.inode_table}
        for key, name in _PARTS:
            blk = locs[key]
            bad = False
            if blk == sb_block:
                out.append(
                    Ext4Finding(
                        f"{key}-overlaps-sb",
                        what,
                        f"{name} for group {i} overlaps superblock",
                        src,
                        i,
                    )
                )
                bad = True
            if sb_block + 1 <= blk <= last_bg_block:
                out.append(
                    Ext4Finding(
                        f"{key}-overlaps-gdt",
                        what,
                        f"{name} for group {i} overlaps block group descriptors",
                        src,
                        i,
                    )
                )
                bad = True
            end = blk + sb.itb_per_group - 1 if key == "it" else blk
            if blk < first_block or end > last_block:
                out.append(
                    Ext4Finding(
                        f"{key}-not-in-group",
                        what,
                        f"{name} for group {i} not in group (block {blk})!",
                        src,
                        i,
                    )
                )
                bad = True
            if bad:
                bad_loc.add(i)
        if metadata_csum or gdt_csum:
            raw = im.descs.raw(i)
            want = ext4_group_desc_csum(sb_raw, i, raw, sb.desc_size, metadata_csum, gdt_csum)
            have = _u16(raw, C.BG_CHECKSUM)
            if want != have:
                out.append(
                    Ext4Finding(
                        "desc-csum",
                        what,
                        f"Checksum for group {i} failed ({want}!={have})",
                        "ext4_group_desc_csum_verify",
                        i,
                    )
                )
        if not flexbg:
            first_block += sb.blocks_per_group
    return out, bad_loc


def _free_bits(bitmap: bytes, nbits: int) -> int:
    """Zero bits among the first ``nbits`` (``ext4_count_free``)."""
    v = int.from_bytes(bitmap, "little") & ((1 << nbits) - 1)
    return nbits - v.bit_count()


def _test_bit(bitmap: bytes, bit: int) -> bool:
    return bool(bitmap[bit >> 3] >> (bit & 7) & 1)


def _next_zero_bit(bitmap: bytes, size: int, offset: int) -> int:
    """``ext4_find_next_zero_bit``: the first zero bit in [offset, size), or ``size``."""
    v = ~int.from_bytes(bitmap, "little") >> offset
    if v & ((1 << (size - offset)) - 1) == 0:
        return size
    return offset + ((v & -v).bit_length() - 1)


def ext4_block_bitmap_csum_verify(
    im: Ext4Image, sb_raw: bytes, group: int, bitmap: bytes
) -> Ext4Finding | None:
    """bitmap.c ``ext4_block_bitmap_csum_verify`` (metadata_csum only): crc32c of the first
    clusters-per-group / 8 bytes against ``bg_block_bitmap_csum_lo`` (and ``_hi`` when the
    descriptor is at least ``EXT4_BG_BLOCK_BITMAP_CSUM_HI_END`` bytes; else 16 bits)."""
    sb = im.sb
    if not sb.has_ro_compat(C.RO_COMPAT_METADATA_CSUM):
        return None
    raw = im.descs.raw(group)
    provided = _u16(raw, C.BG_BLOCK_BITMAP_CSUM_LO)
    calculated = ext4_block_bitmap_csum(sb_raw, bitmap, sb.clusters_per_group)
    if sb.desc_size >= C.EXT4_BG_BLOCK_BITMAP_CSUM_HI_END:
        provided |= _u16(raw, C.BG_BLOCK_BITMAP_CSUM_HI) << 16
    else:
        calculated &= 0xFFFF
    if provided == calculated:
        return None
    return Ext4Finding(
        "bbitmap-csum",
        f"group {group}",
        f"bg {group}: bad block bitmap checksum",
        "ext4_validate_block_bitmap",
        group,
    )


def ext4_valid_block_bitmap(im: Ext4Image, gdp: GroupDesc, bitmap: bytes) -> int:
    """balloc.c ``ext4_valid_block_bitmap``: 0, or the first of the group's block bitmap,
    inode bitmap and inode table blocks not marked in use (skipped with flex_bg, where they
    may live in another group)."""
    sb = im.sb
    if sb.has_incompat(C.INCOMPAT_FLEX_BG):
        return 0
    start = group_first_block_no(sb, gdp.group)
    max_bit = sb.clusters_per_group
    for blk in (gdp.block_bitmap, gdp.inode_bitmap):
        off = blk - start
        if off < 0 or off >= max_bit or not _test_bit(bitmap, off):
            return blk
    blk = gdp.inode_table
    off = blk - start
    end = off + sb.itb_per_group - 1
    if off < 0 or off >= max_bit or end >= max_bit:
        return blk
    if _next_zero_bit(bitmap, end + 1, off) < end + 1:
        return blk
    return 0


def ext4_valid_block_bitmap_padding(im: Ext4Image, group: int, bitmap: bytes) -> int:
    """balloc.c ``ext4_valid_block_bitmap_padding``: 0, or the first clear bit past the
    group's last cluster (group-relative, as the kernel prints it)."""
    size = im.sb.blocksize * 8
    offset = num_clusters_in_group(im.sb, group)
    if size <= offset:
        return 0
    nz = _next_zero_bit(bitmap, size, offset)
    return nz if nz < size else 0


def ext4_validate_block_bitmap(
    im: Ext4Image, sb_raw: bytes, group: int, bitmap: bytes
) -> list[Ext4Finding]:
    """balloc.c ``ext4_validate_block_bitmap``: checksum, then the group's metadata bits,
    then the padding (the kernel stops at the first)."""
    f = ext4_block_bitmap_csum_verify(im, sb_raw, group, bitmap)
    if f is not None:
        return [f]
    src = "ext4_validate_block_bitmap"
    blk = ext4_valid_block_bitmap(im, im.descs[group], bitmap)
    if blk:
        msg = f"bg {group}: block {blk}: invalid block bitmap"
        return [Ext4Finding("bbitmap-invalid", f"group {group}", msg, src, group)]
    blk = ext4_valid_block_bitmap_padding(im, group, bitmap)
    if blk:
        msg = f"bg {group}: block {blk}: padding at end of block bitmap is not set"
        return [Ext4Finding("bbitmap-padding", f"group {group}", msg, src, group)]
    return []


def ext4_check(src: BlockSource) -> Ext4CheckResult:
    """Open the image (a :class:`FormatError` when it cannot be read) and run every rule."""
    im = Ext4Image.open(src)
    sb = im.sb
    sb_raw = src.read(C.SUPERBLOCK_OFFSET, C.SUPERBLOCK_SIZE, "ext4 superblock")
    res = Ext4CheckResult()
    f, w = ext4_init_metadata_csum(sb_raw)
    res.findings += f
    res.warnings += w
    res.warnings += ext4_fill_flex_info(im)
    f, bad_loc = ext4_check_descriptors(im, sb_raw)
    res.findings += f
    total = 0
    counted_all = True
    for g in range(im.groups_count):
        res.groups_checked += 1
        gdp = im.descs[g]
        uninit = sb.has_group_desc_csum and gdp.block_uninit
        nbits = num_clusters_in_group(sb, g)
        if uninit and g == 0:
            res.findings.append(
                Ext4Finding(
                    "bbitmap-uninit-bg0",
                    "group 0",
                    "Block bitmap for bg 0 marked uninitialized",
                    "ext4_read_block_bitmap_nowait",
                    0,
                )
            )
            counted_all = False
            continue
        if g in bad_loc:
            counted_all = False
            continue
        if uninit:
            try:
                counted = sum(n for _, n in im.ext4_init_block_bitmap(g))
            except FormatError as e:
                res.findings.append(
                    Ext4Finding(
                        "bbitmap-init", f"group {g}", e.message, "ext4_init_block_bitmap", g
                    )
                )
                counted_all = False
                continue
        else:
            if gdp.block_bitmap <= sb.first_data_block:  # in range, but not readable
                res.findings.append(
                    Ext4Finding(
                        "bbitmap-block",
                        f"group {g}",
                        f"Invalid block bitmap block {gdp.block_bitmap} in block_group {g}",
                        "ext4_read_block_bitmap_nowait",
                        g,
                    )
                )
                counted_all = False
                continue
            bitmap = im.read_block_bitmap_block(g)
            res.bitmaps_read += 1
            res.findings += ext4_validate_block_bitmap(im, sb_raw, g, bitmap)
            counted = _free_bits(bitmap, nbits)
        total += counted
        if counted != gdp.free_blocks_count:
            res.findings.append(
                Ext4Finding(
                    "group-free-count",
                    f"group {g}",
                    f"Free blocks count wrong for group #{g} ({gdp.free_blocks_count}, "
                    f"counted={counted}).",
                    "e2fsck pass 5",
                    g,
                )
            )
    if counted_all and total != sb.free_blocks_count:
        res.warnings.append(
            Ext4Finding(
                "free-count",
                "superblock",
                f"Free blocks count wrong ({sb.free_blocks_count}, counted={total}).",
                "e2fsck pass 5",
            )
        )
    return res
