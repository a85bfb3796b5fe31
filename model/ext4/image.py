"""Reading free space from a real ext4 image: superblock, group descriptors, block bitmaps.

Sources: ``fs/ext4/super.c`` (``__ext4_fill_super``: geometry checks, ``s_desc_size``,
``descriptor_loc``), ``fs/ext4/balloc.c`` (``ext4_bg_has_super``, ``ext4_bg_num_gdb``,
``ext4_num_base_meta_blocks``, ``ext4_num_overhead_clusters``,
``ext4_free_clusters_after_init``, ``ext4_init_block_bitmap``,
``ext4_read_block_bitmap_nowait``), ``fs/ext4/ext4.h`` (the structures). The only I/O is
through :class:`model.blocksource.BlockSource`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

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
    def itb_per_group(self) -> int:
        """``s_itb_per_group``: inode table blocks per group (``EXT4_INODE_SIZE`` is 128
        for revision 0)."""
        isz = self.inode_size if self.rev_level else 128
        return self.inodes_per_group // (self.blocksize // isz)

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


def parse_superblock(raw: bytes) -> Ext4Superblock:
    """Decode and check the superblock (the checks ``__ext4_fill_super`` makes that matter
    here). Bigalloc is refused: the model counts blocks, not clusters."""
    if len(raw) < C.SUPERBLOCK_SIZE:
        raise FormatError("ext4 superblock", C.SUPERBLOCK_OFFSET, "image too small")
    magic = _u16(raw, C.S_MAGIC)
    if magic != C.EXT4_SUPER_MAGIC:
        raise FormatError(
            "ext4 superblock", C.SUPERBLOCK_OFFSET + C.S_MAGIC, f"bad magic 0x{magic:04x}"
        )
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
    )
    off = C.SUPERBLOCK_OFFSET
    if ro_compat & C.RO_COMPAT_BIGALLOC:
        raise FormatError(
            "ext4 superblock",
            off + C.S_FEATURE_RO_COMPAT,
            "bigalloc (cluster size "
            f"{1 << (sb.log_cluster_size + 10)} bytes) is not supported: the model "
            "allocates blocks, not clusters",
        )
    if sb.log_block_size > 6:
        raise FormatError("ext4 superblock", off + C.S_LOG_BLOCK_SIZE, "block size > 64 KiB")
    if sb.blocks_per_group == 0 or sb.blocks_per_group > 8 * sb.blocksize:
        raise FormatError(
            "ext4 superblock",
            off + C.S_BLOCKS_PER_GROUP,
            f"blocks per group {sb.blocks_per_group} not in 1..{8 * sb.blocksize}",
        )
    if sb.first_data_block >= sb.blocks_count:
        raise FormatError(
            "ext4 superblock", off + C.S_FIRST_DATA_BLOCK, "first data block past the end"
        )
    if incompat & C.INCOMPAT_64BIT and (
        sb.desc_size_raw < C.EXT4_MIN_DESC_SIZE_64BIT
        or sb.desc_size_raw > 1024
        or sb.desc_size_raw & (sb.desc_size_raw - 1)
    ):
        raise FormatError(
            "ext4 superblock",
            off + C.S_DESC_SIZE,
            f"unsupported descriptor size {sb.desc_size_raw}",
        )
    return sb


@dataclass(frozen=True)
class GroupDesc:
    """``struct ext4_group_desc`` fields the allocator needs."""

    group: int
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks_count: int
    flags: int

    @property
    def block_uninit(self) -> bool:
        return bool(self.flags & C.EXT4_BG_BLOCK_UNINIT)


def parse_group_desc(raw: bytes, off: int, group: int, desc_size: int) -> GroupDesc:
    """Decode one descriptor; the _hi halves count only when ``EXT4_DESC_SIZE >= 64``
    (``ext4_block_bitmap``, ``ext4_free_group_clusters`` in super.c)."""
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
    return GroupDesc(group, bb, ib, it, fb, _u16(raw, off + C.BG_FLAGS))


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


@dataclass
class Ext4Image:
    """An opened image: superblock and descriptors; bitmaps read on demand."""

    src: BlockSource
    sb: Ext4Superblock
    descs: list[GroupDesc]
    bitmaps_read: int = 0
    bitmaps_synthesised: int = 0
    _runs: dict[int, Runs] = field(default_factory=dict)

    @classmethod
    def open(cls, src: BlockSource) -> Ext4Image:
        raw = src.read(C.SUPERBLOCK_OFFSET, C.SUPERBLOCK_SIZE, "ext4 superblock")
        sb = parse_superblock(raw)
        ngroups = sb.groups_count
        if sb.blocks_count * sb.blocksize > src.size:
            raise FormatError(
                "ext4 superblock",
                C.SUPERBLOCK_OFFSET + C.S_BLOCKS_COUNT_LO,
                f"{sb.blocks_count} blocks of {sb.blocksize} bytes but the image has "
                f"{src.size} bytes",
            )
        descs: list[GroupDesc] = []
        dpb = sb.desc_per_block
        for nr in range(sb.gdb_count):
            blk = descriptor_loc(sb, nr)
            data = src.read(blk * sb.blocksize, sb.blocksize, f"group descriptor block {nr}")
            for i in range(dpb):
                g = nr * dpb + i
                if g >= ngroups:
                    break
                descs.append(parse_group_desc(data, i * sb.desc_size, g, sb.desc_size))
        return cls(src, sb, descs)

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
        group's last block set by ``ext4_mark_bitmap_end``)."""
        sb = self.sb
        gdp = self.descs[group]
        nbits = sb.blocksize * 8
        used = bytearray(nbits)
        for b in range(min(ext4_num_base_meta_blocks(sb, group), nbits)):
            used[b] = 1
        start = group_first_block_no(sb, group)
        for blk in (gdp.block_bitmap, gdp.inode_bitmap):
            if self.block_in_group(blk, group):
                used[blk - start] = 1
        itb_per_group = sb.itb_per_group
        for blk in range(gdp.inode_table, gdp.inode_table + itb_per_group):
            if self.block_in_group(blk, group):
                used[blk - start] = 1
        for b in range(num_clusters_in_group(sb, group), nbits):
            used[b] = 1
        runs: Runs = []
        i = 0
        while i < nbits:
            if used[i]:
                i += 1
                continue
            j = i
            while j < nbits and not used[j]:
                j += 1
            runs.append((i, j - i))
            i = j
        return runs

    def ext4_read_block_bitmap(self, group: int) -> Runs:
        """balloc.c ``ext4_read_block_bitmap_nowait`` + wait: the group's free runs
        (group-relative block numbers). BLOCK_UNINIT is honoured only with a descriptor
        checksum feature; group 0 marked uninit is corruption, as in the kernel."""
        cached = self._runs.get(group)
        if cached is not None:
            return cached
        sb = self.sb
        gdp = self.descs[group]
        if sb.has_group_desc_csum and gdp.block_uninit:
            if group == 0:
                raise FormatError(
                    "group descriptor", group, "block bitmap for group 0 marked uninitialized"
                )
            runs = self.ext4_init_block_bitmap(group)
            self.bitmaps_synthesised += 1
        else:
            blk = gdp.block_bitmap
            if blk <= sb.first_data_block or blk >= sb.blocks_count:
                raise FormatError(
                    "group descriptor",
                    group,
                    f"invalid block bitmap block {blk} in group {group}",
                )
            data = self.src.read(blk * sb.blocksize, sb.blocksize, f"block bitmap of group {group}")
            self.bitmaps_read += 1
            runs = free_runs(data, num_clusters_in_group(sb, group))
        self._runs[group] = runs
        return runs

    def group_free_extents(self, group: int) -> Runs:
        """Free extents of a group in absolute block numbers (start, length)."""
        base = group_first_block_no(self.sb, group)
        return [(base + s, n) for s, n in self.ext4_read_block_bitmap(group)]
