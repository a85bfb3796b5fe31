"""Reading free space from a real ext4 image: superblock, group descriptors, block bitmaps.

Sources (Debian's 6.12): ``fs/ext4/super.c`` (``__ext4_fill_super`` and the functions it
calls before ``ext4_check_descriptors``, each mirrored here by name with the kernel's
refusal messages; ``descriptor_loc``), ``fs/ext4/balloc.c`` (``ext4_bg_has_super``,
``ext4_bg_num_gdb``, ``ext4_num_base_meta_blocks``, ``ext4_num_overhead_clusters``,
``ext4_free_clusters_after_init``, ``ext4_init_block_bitmap``,
``ext4_read_block_bitmap_nowait``), ``fs/ext4/ext4.h`` (the structures). The only I/O is
through :class:`model.blocksource.BlockSource`.

Hostile images: every malformed field the reader depends on is a :class:`FormatError`
before it can drive a loop, a division or an allocation. The block count may not exceed the
image (as the kernel refuses a count beyond the device), so the groups, their descriptors
and their bitmaps are bounded by the bytes the image holds; descriptors are decoded per
access and bitmaps read per group, so memory does not follow what the superblock claims.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from model.blocksource import BlockSource
from model.errors import FormatError
from model.ext4 import constants as C
from model.ext4.bitmap import Runs, free_runs


def _u16(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", b, off)[0])


def _u32(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", b, off)[0])


def feature_names(value: int, names: dict[int, str]) -> list[str]:
    out = [n for bit, n in names.items() if value & bit]
    unknown = value & ~sum(names)
    if unknown:
        out.append(f"0x{unknown:x}")
    return out


@dataclass(frozen=True)
class Ext4Superblock:
    """The fields of ``struct ext4_super_block`` the allocator needs."""

    blocks_count: int
    free_blocks_count: int
    first_data_block: int
    log_block_size: int
    log_cluster_size: int
    blocks_per_group: int
    clusters_per_group: int
    inodes_per_group: int
    inodes_count: int
    rev_level: int
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    reserved_gdt_blocks: int
    desc_size_raw: int
    first_meta_bg: int
    log_groups_per_flex: int
    backup_bgs: tuple[int, int]
    inode_size: int
    first_ino: int

    @property
    def blocksize(self) -> int:
        return 1 << (self.log_block_size + C.EXT4_MIN_BLOCK_LOG_SIZE)

    @property
    def blocksize_bits(self) -> int:
        return self.log_block_size + C.EXT4_MIN_BLOCK_LOG_SIZE

    def has_incompat(self, f: int) -> bool:
        return bool(self.feature_incompat & f)

    def has_ro_compat(self, f: int) -> bool:
        return bool(self.feature_ro_compat & f)

    def has_compat(self, f: int) -> bool:
        return bool(self.feature_compat & f)

    @property
    def inodes_per_block(self) -> int:
        """``s_inodes_per_block``: blocksize / ``EXT4_INODE_SIZE`` (128 for revision 0)."""
        isz = self.inode_size if self.rev_level else C.EXT4_GOOD_OLD_INODE_SIZE
        return self.blocksize // isz if isz else 0

    @property
    def itb_per_group(self) -> int:
        """``s_itb_per_group``: inode table blocks per group."""
        return self.inodes_per_group // self.inodes_per_block

    @property
    def desc_size(self) -> int:
        """``EXT4_DESC_SIZE``: ``s_desc_size`` with 64bit, else 32 (``__ext4_fill_super``)."""
        if self.has_incompat(C.INCOMPAT_64BIT):
            return self.desc_size_raw
        return C.EXT4_MIN_DESC_SIZE

    @property
    def desc_per_block(self) -> int:
        return self.blocksize // self.desc_size

    @property
    def groups_count(self) -> int:
        """``s_groups_count``: ceil((blocks - first_data_block) / blocks_per_group)."""
        n = self.blocks_count - self.first_data_block + self.blocks_per_group - 1
        return n // self.blocks_per_group

    @property
    def gdb_count(self) -> int:
        """``s_gdb_count``: descriptor blocks."""
        return (self.groups_count + self.desc_per_block - 1) // self.desc_per_block

    @property
    def log_groups_per_flex_effective(self) -> int:
        """``sbi->s_log_groups_per_flex``: set by ``ext4_fill_flex_info`` only with flex_bg
        and 1..31 on disk, else 0."""
        if not self.has_incompat(C.INCOMPAT_FLEX_BG):
            return 0
        v = self.log_groups_per_flex
        return v if 1 <= v <= 31 else 0

    @property
    def has_group_desc_csum(self) -> bool:
        """``ext4_has_group_desc_csum``: gdt_csum or metadata_csum."""
        return self.has_ro_compat(C.RO_COMPAT_GDT_CSUM) or self.has_ro_compat(
            C.RO_COMPAT_METADATA_CSUM
        )


def _sb_error(field: int, message: str) -> FormatError:
    return FormatError("ext4 superblock", C.SUPERBLOCK_OFFSET + field, message)


def parse_ext4_superblock(raw: bytes, device_bytes: int | None = None) -> Ext4Superblock:
    """Decode the superblock and refuse what ``__ext4_fill_super`` (6.12) refuses before it
    reads the descriptors, in its order and with its messages: :func:`ext4_load_super`,
    :func:`ext4_inode_info_init`, :func:`ext4_block_group_meta_init`,
    :func:`ext4_handle_clustersize`, :func:`ext4_check_geometry` (the block count against
    ``device_bytes``, the size of the image, when given). Bigalloc is refused too: the model
    counts blocks, not clusters. Every value the reader later loops, divides or allocates
    over is bounded once this returns. The superblock checksum is not verified here (a
    finding of ``fsoracle ext4 check``, not a reason to stop reading)."""
    if len(raw) < C.SUPERBLOCK_SIZE:
        raise FormatError("ext4 superblock", C.SUPERBLOCK_OFFSET, "image too small")
    ext4_load_super(raw)
    incompat = _u32(raw, C.S_FEATURE_INCOMPAT)
    ro_compat = _u32(raw, C.S_FEATURE_RO_COMPAT)
    blocks = _u32(raw, C.S_BLOCKS_COUNT_LO)
    free = _u32(raw, C.S_FREE_BLOCKS_COUNT_LO)
    if incompat & C.INCOMPAT_64BIT:
        blocks |= _u32(raw, C.S_BLOCKS_COUNT_HI) << 32
        free |= _u32(raw, C.S_FREE_BLOCKS_COUNT_HI) << 32
    sb = Ext4Superblock(
        blocks_count=blocks,
        free_blocks_count=free,
        first_data_block=_u32(raw, C.S_FIRST_DATA_BLOCK),
        log_block_size=_u32(raw, C.S_LOG_BLOCK_SIZE),
        log_cluster_size=_u32(raw, C.S_LOG_CLUSTER_SIZE),
        blocks_per_group=_u32(raw, C.S_BLOCKS_PER_GROUP),
        clusters_per_group=_u32(raw, C.S_CLUSTERS_PER_GROUP),
        inodes_per_group=_u32(raw, C.S_INODES_PER_GROUP),
        inodes_count=_u32(raw, C.S_INODES_COUNT),
        rev_level=_u32(raw, C.S_REV_LEVEL),
        feature_compat=_u32(raw, C.S_FEATURE_COMPAT),
        feature_incompat=incompat,
        feature_ro_compat=ro_compat,
        reserved_gdt_blocks=_u16(raw, C.S_RESERVED_GDT_BLOCKS),
        desc_size_raw=_u16(raw, C.S_DESC_SIZE),
        first_meta_bg=_u32(raw, C.S_FIRST_META_BG),
        log_groups_per_flex=raw[C.S_LOG_GROUPS_PER_FLEX],
        backup_bgs=(_u32(raw, C.S_BACKUP_BGS), _u32(raw, C.S_BACKUP_BGS + 4)),
        inode_size=_u16(raw, C.S_INODE_SIZE),
        first_ino=_u32(raw, C.S_FIRST_INO),
    )
    if ro_compat & C.RO_COMPAT_BIGALLOC:
        raise _sb_error(
            C.S_FEATURE_RO_COMPAT,
            f"bigalloc (cluster size {1 << (sb.log_cluster_size + 10)} bytes) is not "
            "supported: the model allocates blocks, not clusters",
        )
    ext4_inode_info_init(sb)
    ext4_block_group_meta_init(sb)
    ext4_handle_clustersize(sb)
    ext4_check_geometry(sb, None if device_bytes is None else device_bytes >> sb.blocksize_bits)
    return sb


def ext4_load_super(raw: bytes) -> None:
    """super.c ``ext4_load_super``: the magic, then ``s_log_block_size`` and
    ``s_log_cluster_size`` against ``EXT4_MAX_BLOCK_LOG_SIZE`` (64 KiB blocks) and
    ``EXT4_MAX_CLUSTER_LOG_SIZE``."""
    magic = _u16(raw, C.S_MAGIC)
    if magic != C.EXT4_SUPER_MAGIC:
        raise _sb_error(C.S_MAGIC, f"bad magic 0x{magic:04x} (VFS: Can't find ext4 filesystem)")
    v = _u32(raw, C.S_LOG_BLOCK_SIZE)
    if v > C.EXT4_MAX_BLOCK_LOG_SIZE - C.EXT4_MIN_BLOCK_LOG_SIZE:
        raise _sb_error(C.S_LOG_BLOCK_SIZE, f"Invalid log block size: {v}")
    v = _u32(raw, C.S_LOG_CLUSTER_SIZE)
    if v > C.EXT4_MAX_CLUSTER_LOG_SIZE - C.EXT4_MIN_BLOCK_LOG_SIZE:
        raise _sb_error(C.S_LOG_CLUSTER_SIZE, f"Invalid log cluster size: {v}")


def ext4_inode_info_init(sb: Ext4Superblock) -> None:
    """super.c ``ext4_inode_info_init``: for revision 1 and later, ``s_first_ino`` at least
    ``EXT4_GOOD_OLD_FIRST_INO`` and ``s_inode_size`` a power of two in [128, blocksize]
    (revision 0 has 128-byte inodes). The ``s_want_extra_isize`` checks are not made."""
    if sb.rev_level == C.EXT4_GOOD_OLD_REV:
        return
    if sb.first_ino < C.EXT4_GOOD_OLD_FIRST_INO:
        raise _sb_error(C.S_FIRST_INO, f"invalid first ino: {sb.first_ino}")
    isz = sb.inode_size
    if isz < C.EXT4_GOOD_OLD_INODE_SIZE or isz & (isz - 1) or isz > sb.blocksize:
        raise _sb_error(
            C.S_INODE_SIZE, f"unsupported inode size: {isz} (blocksize: {sb.blocksize})"
        )


def ext4_block_group_meta_init(sb: Ext4Superblock) -> None:
    """super.c ``ext4_block_group_meta_init``: ``s_desc_size`` with 64bit a power of two in
    [64, ``EXT4_MAX_DESC_SIZE``]; ``s_blocks_per_group`` not 0; ``s_inodes_per_group`` in
    [inodes per block, 8 * blocksize] and a multiple of 8."""
    if sb.has_incompat(C.INCOMPAT_64BIT):
        ds = sb.desc_size_raw
        if ds < C.EXT4_MIN_DESC_SIZE_64BIT or ds > C.EXT4_MAX_DESC_SIZE or ds & (ds - 1):
            raise _sb_error(C.S_DESC_SIZE, f"unsupported descriptor size {ds}")
    if sb.blocks_per_group == 0:
        raise _sb_error(
            C.S_BLOCKS_PER_GROUP, "VFS: Can't find ext4 filesystem (s_blocks_per_group is 0)"
        )
    ipg = sb.inodes_per_group
    if ipg < sb.inodes_per_block or ipg > sb.blocksize * 8 or ipg & 7:
        raise _sb_error(C.S_INODES_PER_GROUP, f"invalid inodes per group: {ipg}")


def ext4_handle_clustersize(sb: Ext4Superblock) -> None:
    """super.c ``ext4_handle_clustersize`` without bigalloc: the cluster size equal to the
    block size, ``s_blocks_per_group`` at most 8 * blocksize, ``s_clusters_per_group`` at
    most 8 * blocksize, a multiple of 8 and equal to ``s_blocks_per_group``."""
    clustersize = 1024 << sb.log_cluster_size
    if clustersize != sb.blocksize:
        raise _sb_error(
            C.S_LOG_CLUSTER_SIZE,
            f"fragment/cluster size ({clustersize}) != block size ({sb.blocksize})",
        )
    if sb.blocks_per_group > sb.blocksize * 8:
        raise _sb_error(C.S_BLOCKS_PER_GROUP, f"#blocks per group too big: {sb.blocks_per_group}")
    cpg = sb.clusters_per_group
    if cpg > sb.blocksize * 8 or cpg & 7:
        raise _sb_error(C.S_CLUSTERS_PER_GROUP, f"invalid #clusters per group: {cpg}")
    if sb.blocks_per_group != cpg:
        raise _sb_error(
            C.S_CLUSTERS_PER_GROUP,
            f"blocks per group ({sb.blocks_per_group}) and clusters per group ({cpg}) inconsistent",
        )


def ext4_check_geometry(sb: Ext4Superblock, device_blocks: int | None) -> None:
    """super.c ``ext4_check_geometry``: reserved GDT blocks at most blocksize / 4; the block
    count not beyond the device (here: the image, ``device_blocks`` whole blocks); the first
    data block inside the filesystem and not 0 with 1 KiB blocks; the group count below
    2^32 - descriptors per block; ``s_inodes_count`` = groups * inodes per group.
    (``generic_check_addressable`` cannot fail once the block count fits the image.)"""
    if sb.reserved_gdt_blocks > sb.blocksize // 4:
        raise _sb_error(
            C.S_RESERVED_GDT_BLOCKS,
            f"Number of reserved GDT blocks insanely large: {sb.reserved_gdt_blocks}",
        )
    if device_blocks and sb.blocks_count > device_blocks:
        raise _sb_error(
            C.S_BLOCKS_COUNT_LO,
            f"bad geometry: block count {sb.blocks_count} exceeds size of device "
            f"({device_blocks} blocks)",
        )
    if sb.first_data_block >= sb.blocks_count:
        raise _sb_error(
            C.S_FIRST_DATA_BLOCK,
            f"bad geometry: first data block {sb.first_data_block} is beyond end of "
            f"filesystem ({sb.blocks_count})",
        )
    if sb.first_data_block == 0 and sb.log_block_size == 0:
        raise _sb_error(
            C.S_FIRST_DATA_BLOCK,
            "bad geometry: first data block is 0 with a 1k block and cluster size",
        )
    groups = sb.groups_count
    if groups > (1 << 32) - sb.desc_per_block:
        raise _sb_error(
            C.S_BLOCKS_COUNT_LO,
            f"groups count too large: {groups} (block count {sb.blocks_count}, first data "
            f"block {sb.first_data_block}, blocks per group {sb.blocks_per_group})",
        )
    if groups * sb.inodes_per_group != sb.inodes_count:
        raise _sb_error(
            C.S_INODES_COUNT,
            f"inodes count not valid: {sb.inodes_count} vs {groups * sb.inodes_per_group}",
        )


@dataclass(frozen=True)
class GroupDesc:
    """``struct ext4_group_desc`` fields the allocator needs."""

    group: int
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks_count: int
    flags: int
    offset: int = 0  # byte offset of the descriptor in the image

    @property
    def block_uninit(self) -> bool:
        return bool(self.flags & C.EXT4_BG_BLOCK_UNINIT)


def parse_group_desc(
    raw: bytes, off: int, group: int, desc_size: int, image_offset: int = 0
) -> GroupDesc:
    """Decode one descriptor; the _hi halves count only when ``EXT4_DESC_SIZE >= 64``
    (``ext4_block_bitmap``, ``ext4_free_group_clusters`` in super.c). ``image_offset`` is
    where the descriptor lies in the image (for messages)."""
    wide = desc_size >= C.EXT4_MIN_DESC_SIZE_64BIT
    bb = _u32(raw, off + C.BG_BLOCK_BITMAP_LO)
    ib = _u32(raw, off + C.BG_INODE_BITMAP_LO)
    it = _u32(raw, off + C.BG_INODE_TABLE_LO)
    fb = _u16(raw, off + C.BG_FREE_BLOCKS_COUNT_LO)
    if wide:
        bb |= _u32(raw, off + C.BG_BLOCK_BITMAP_HI) << 32
        ib |= _u32(raw, off + C.BG_INODE_BITMAP_HI) << 32
        it |= _u32(raw, off + C.BG_INODE_TABLE_HI) << 32
        fb |= _u16(raw, off + C.BG_FREE_BLOCKS_COUNT_HI) << 16
    return GroupDesc(group, bb, ib, it, fb, _u16(raw, off + C.BG_FLAGS), image_offset)


def _test_root(a: int, b: int) -> bool:
    """``test_root`` (balloc.c): is ``a`` a power of ``b``?"""
    while True:
        if a < b:
            return False
        if a == b:
            return True
        if a % b:
            return False
        a //= b


def ext4_bg_has_super(sb: Ext4Superblock, group: int) -> bool:
    """balloc.c ``ext4_bg_has_super``."""
    if group == 0:
        return True
    if sb.has_compat(C.COMPAT_SPARSE_SUPER2):
        return group in sb.backup_bgs
    if group <= 1 or not sb.has_ro_compat(C.RO_COMPAT_SPARSE_SUPER):
        return True
    if not group & 1:
        return False
    return _test_root(group, 3) or _test_root(group, 5) or _test_root(group, 7)


def ext4_bg_num_gdb_meta(sb: Ext4Superblock, group: int) -> int:
    first = (group // sb.desc_per_block) * sb.desc_per_block
    last = first + sb.desc_per_block - 1
    return 1 if group in (first, first + 1, last) else 0


def ext4_bg_num_gdb_nometa(sb: Ext4Superblock, group: int) -> int:
    if not ext4_bg_has_super(sb, group):
        return 0
    if sb.has_incompat(C.INCOMPAT_META_BG):
        return sb.first_meta_bg
    return sb.gdb_count


def ext4_bg_num_gdb(sb: Ext4Superblock, group: int) -> int:
    """balloc.c ``ext4_bg_num_gdb``: descriptor blocks (not the reserved ones) in ``group``."""
    metagroup = group // sb.desc_per_block
    if not sb.has_incompat(C.INCOMPAT_META_BG) or metagroup < sb.first_meta_bg:
        return ext4_bg_num_gdb_nometa(sb, group)
    return ext4_bg_num_gdb_meta(sb, group)


def ext4_num_base_meta_blocks(sb: Ext4Superblock, group: int) -> int:
    """balloc.c ``ext4_num_base_meta_blocks``: superblock + descriptors + reserved GDT."""
    num = 1 if ext4_bg_has_super(sb, group) else 0
    if not sb.has_incompat(C.INCOMPAT_META_BG) or group < sb.first_meta_bg * sb.desc_per_block:
        if num:
            num += ext4_bg_num_gdb_nometa(sb, group)
            num += sb.reserved_gdt_blocks
    else:
        num += ext4_bg_num_gdb_meta(sb, group)
    return num


def descriptor_loc(sb: Ext4Superblock, nr: int) -> int:
    """super.c ``descriptor_loc``: the block holding descriptor block ``nr``."""
    sb_block = 1  # the superblock is at byte 1024
    logical_sb_block = (sb_block * 1024) // sb.blocksize
    if not sb.has_incompat(C.INCOMPAT_META_BG) or nr < sb.first_meta_bg:
        return logical_sb_block + nr + 1
    bg = sb.desc_per_block * nr
    has_super = 1 if ext4_bg_has_super(sb, bg) else 0
    if sb.blocksize == 1024 and nr == 0 and sb.first_data_block == 0:
        has_super += 1
    return group_first_block_no(sb, bg) + has_super


def group_first_block_no(sb: Ext4Superblock, group: int) -> int:
    """``ext4_group_first_block_no``."""
    return group * sb.blocks_per_group + sb.first_data_block


def num_clusters_in_group(sb: Ext4Superblock, group: int) -> int:
    """balloc.c ``num_clusters_in_group`` (bigalloc refused: clusters are blocks)."""
    if group == sb.groups_count - 1:
        return sb.blocks_count - group_first_block_no(sb, group)
    return sb.blocks_per_group


class GroupDescs(Sequence[GroupDesc]):
    """The group descriptors, decoded from the image on each access (``ext4_get_group_desc``)
    so that memory does not follow the group count the superblock claims."""

    def __init__(self, src: BlockSource, sb: Ext4Superblock):
        self.src = src
        self.sb = sb
        self._n = sb.groups_count

    def __len__(self) -> int:
        return self._n

    def offset(self, group: int) -> int:
        """Byte offset of group ``group``'s descriptor: block ``descriptor_loc(group /
        EXT4_DESC_PER_BLOCK)``, slot ``group % EXT4_DESC_PER_BLOCK``."""
        sb = self.sb
        nr, i = divmod(group, sb.desc_per_block)
        return descriptor_loc(sb, nr) * sb.blocksize + i * sb.desc_size

    def raw(self, group: int) -> bytes:
        """The descriptor's ``EXT4_DESC_SIZE`` bytes."""
        return self.src.read(
            self.offset(group), self.sb.desc_size, f"group descriptor of group {group}"
        )

    @overload
    def __getitem__(self, index: int) -> GroupDesc: ...

    @overload
    def __getitem__(self, index: slice) -> list[GroupDesc]: ...

    def __getitem__(self, index: int | slice) -> GroupDesc | list[GroupDesc]:
        if isinstance(index, slice):
            return [self[g] for g in range(*index.indices(self._n))]
        g = index + self._n if index < 0 else index
        if not 0 <= g < self._n:
            raise IndexError(f"group {index} of {self._n}")
        off = self.offset(g)
        return parse_group_desc(self.raw(g), 0, g, self.sb.desc_size, off)


def ext4_group_desc_init(src: BlockSource, sb: Ext4Superblock) -> GroupDescs:
    """super.c ``ext4_group_desc_init`` up to (not including) ``ext4_check_descriptors``:
    ``s_first_meta_bg`` not past the descriptor blocks, and every descriptor block
    (``descriptor_loc``) inside the image ("can't read group descriptor %d")."""
    db_count = sb.gdb_count
    if sb.has_incompat(C.INCOMPAT_META_BG) and sb.first_meta_bg > db_count:
        raise _sb_error(
            C.S_FIRST_META_BG,
            f"first meta block group too large: {sb.first_meta_bg} (group descriptor block "
            f"count {db_count})",
        )
    last = src.size // sb.blocksize
    for nr in range(db_count):
        blk = descriptor_loc(sb, nr)
        if blk >= last:
            raise FormatError(
                f"group descriptor block {nr}",
                blk * sb.blocksize,
                f"can't read group descriptor {nr} (block {blk} is past the end of the "
                f"image, {last} blocks)",
            )
    return GroupDescs(src, sb)


@dataclass
class Ext4Image:
    """An opened image: superblock and descriptors; bitmaps read on demand."""

    src: BlockSource
    sb: Ext4Superblock
    descs: GroupDescs
    bitmaps_read: int = 0
    bitmaps_synthesised: int = 0
    _runs: dict[int, Runs] = field(default_factory=dict)

    @classmethod
    def open(cls, src: BlockSource) -> Ext4Image:
        """Read and check the superblock against the image's size (:func:`parse_ext4_superblock`)
        and locate the descriptors (:func:`ext4_group_desc_init`); nothing per group is
        read or held until asked for."""
        raw = src.read(C.SUPERBLOCK_OFFSET, C.SUPERBLOCK_SIZE, "ext4 superblock")
        sb = parse_ext4_superblock(raw, src.size)
        return cls(src, sb, ext4_group_desc_init(src, sb))

    @property
    def groups_count(self) -> int:
        return len(self.descs)

    def block_in_group(self, block: int, group: int) -> bool:
        """balloc.c ``ext4_block_in_group``."""
        return (block - self.sb.first_data_block) // self.sb.blocks_per_group == group

    def ext4_num_overhead_clusters(self, group: int) -> int:
        """balloc.c ``ext4_num_overhead_clusters`` (cluster ratio 1)."""
        sb = self.sb
        gdp = self.descs[group]
        start = group_first_block_no(sb, group)
        end = start + sb.blocks_per_group - 1
        base = ext4_num_base_meta_blocks(sb, group)
        num = base
        itb_per_group = sb.itb_per_group
        it_start, it_end = gdp.inode_table, gdp.inode_table + itb_per_group - 1
        ic_start = ic_end = -1
        if it_start <= end and it_end >= start:
            ic_start = max(it_start, start) - start
            ic_end = min(it_end, end) - start
            num += ic_end - ic_start + 1
            if ic_start == base - 1:
                num -= 1
        bcl = -1
        if self.block_in_group(gdp.block_bitmap, group):
            bcl = gdp.block_bitmap - start
            if bcl >= base and (bcl < ic_start or bcl > ic_end):
                num += 1
        if self.block_in_group(gdp.inode_bitmap, group):
            icl = gdp.inode_bitmap - start
            if icl != bcl and icl >= base and (icl < ic_start or icl > ic_end):
                num += 1
        return num

    def ext4_free_clusters_after_init(self, group: int) -> int:
        """balloc.c ``ext4_free_clusters_after_init``."""
        return num_clusters_in_group(self.sb, group) - self.ext4_num_overhead_clusters(group)

    def ext4_init_block_bitmap(self, group: int) -> Runs:
        """balloc.c ``ext4_init_block_bitmap``: the bitmap of a BLOCK_UNINIT group, as free
        runs (base metadata, the group's own bitmaps and inode table in use; bits past the
        group's last block set by ``ext4_mark_bitmap_end``). Base metadata that does not fit
        the bitmap is corruption (``-EFSCORRUPTED``), as in the kernel. The descriptor
        checksum the kernel verifies first is left to ``fsoracle ext4 check``."""
        sb = self.sb
        gdp = self.descs[group]
        nbits = sb.blocksize * 8
        bit_max = ext4_num_base_meta_blocks(sb, group)
        if bit_max >> 3 >= sb.blocksize:
            raise FormatError(
                f"group descriptor of group {group}",
                gdp.offset,
                f"Failed to init block bitmap for group {group}: {bit_max} base metadata "
                f"blocks do not fit a {sb.blocksize}-byte bitmap",
            )
        used = np.zeros(nbits, dtype=np.bool_)
        used[:bit_max] = True
        start = group_first_block_no(sb, group)
        for blk in (gdp.block_bitmap, gdp.inode_bitmap):
            if self.block_in_group(blk, group):
                used[blk - start] = True
        # the inode table blocks that fall in this group (bounded: at most a group's bits)
        lo = max(gdp.inode_table, start)
        hi = min(gdp.inode_table + sb.itb_per_group, start + sb.blocks_per_group)
        if lo < hi:
            used[lo - start : hi - start] = True
        used[num_clusters_in_group(sb, group) :] = True
        return free_runs(np.packbits(used, bitorder="little").tobytes(), nbits)

    def ext4_read_block_bitmap(self, group: int) -> Runs:
        """balloc.c ``ext4_read_block_bitmap_nowait`` + wait: the group's free runs
        (group-relative block numbers). BLOCK_UNINIT is honoured only with a descriptor
        checksum feature; group 0 marked uninit, and a bitmap block at or before the first
        data block or past the last block, are corruption, with the kernel's messages.
        (``ext4_validate_block_bitmap``'s checks are ``fsoracle ext4 check``'s.)"""
        cached = self._runs.get(group)
        if cached is not None:
            return cached
        sb = self.sb
        gdp = self.descs[group]
        if sb.has_group_desc_csum and gdp.block_uninit:
            if group == 0:
                raise FormatError(
                    "group descriptor of group 0",
                    gdp.offset,
                    "Block bitmap for bg 0 marked uninitialized",
                )
            runs = self.ext4_init_block_bitmap(group)
            self.bitmaps_synthesised += 1
        else:
            data = self.read_block_bitmap_block(group)
            self.bitmaps_read += 1
            runs = free_runs(data, num_clusters_in_group(sb, group))
        self._runs[group] = runs
        return runs

    def read_block_bitmap_block(self, group: int) -> bytes:
        """The on-disk block bitmap of ``group`` (``ext4_read_block_bitmap_nowait``'s block
        number check, then the read)."""
        sb = self.sb
        gdp = self.descs[group]
        blk = gdp.block_bitmap
        if blk <= sb.first_data_block or blk >= sb.blocks_count:
            raise FormatError(
                f"group descriptor of group {group}",
                gdp.offset,
                f"Invalid block bitmap block {blk} in block_group {group}",
            )
        return self.src.read(blk * sb.blocksize, sb.blocksize, f"block bitmap of group {group}")

    def group_free_extents(self, group: int) -> Runs:
        """Free extents of a group in absolute block numbers (start, length)."""
        base = group_first_block_no(self.sb, group)
        return [(base + s, n) for s, n in self.ext4_read_block_bitmap(group)]
