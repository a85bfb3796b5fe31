"""The kernel's tree-checker (``fs/btrfs/tree-checker.c``, Linux 6.12), applied to every
tree block read.

Each function here is named after the kernel function it specifies and checks what that
function checks, in the same order, so the two can be read side by side. A violation is a
:class:`~model.btrfs.findings.BtrfsFinding` with code ``tree-checker`` whose message is the line
the kernel prints (``corrupt leaf: root=5 block=30425088 slot=3 ino=257, invalid dir item
type, have 0 expect (0, 9)``) followed by ``; key (objectid type offset)`` of the slot
concerned.

Like the kernel, a block is rejected at its first violation: ``btrfs_check_leaf`` stops at
the first bad slot (later slots may rely on what the earlier checks established, e.g. item
offsets before item contents), so a block yields at most one finding from the leaf/node
checks, or the one from :func:`btrfs_check_eb_owner`, which runs first.

What the kernel reads from ``fs_info`` comes from the :class:`Superblock`: sectorsize,
nodesize, csum_size, generation (``btrfs_super_generation``), incompat flags and
nr_global_roots. Reads past the end of an item or the block give zeros, as
``read_extent_buffer`` / the ``btrfs_get_*`` accessors do out of range.

Not ported: the ``CONFIG_BTRFS_DEBUG``-only ram_bytes/disk_num_bytes check of
``check_extent_data_item``; ``btrfs_verify_level_key`` (the reader checks level, generation
and first key itself). :func:`check_skinny_block_group_item` is fsoracle's own rule for the
2019 SKINNY_BG_TREE RFC's key type 193 (never merged, so the kernel has no rule for it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from model.btrfs import constants as C
from model.btrfs.csum import CSUM_SIZES, btrfs_name_hash, hash_extent_data_ref
from model.btrfs.findings import BtrfsFinding
from model.btrfs.items import (
    EXTENT_DATA_REF,
    SHARED_DATA_REF,
    BlockGroupItem,
    ChunkItem,
    DevItem,
    DirItem,
    ExtentItem,
    FileExtentItem,
    InodeExtref,
    InodeItem,
    InodeRef,
    Key,
    RootItem,
    RootRef,
)
from model.btrfs.superblock import Superblock
from model.btrfs.treeblock import TreeBlock, btrfs_leaf_data_size, btrfs_nodeptrs_per_block
from model.linux import SZ_4K, U32_MAX, U64
from model.stat import S_IFBLK, S_IFDIR, S_IFLNK, S_IFMT, S_IFSOCK, S_ISGID, S_ISUID, S_ISVTX

CODE = "tree-checker"

# the kernel's sizeof() of the on-disk structs (include/uapi/linux/btrfs_tree.h), from the
# layouts in model.btrfs.items
SIZEOF_FILE_EXTENT_ITEM = FileExtentItem.SIZE
FILE_EXTENT_INLINE_DATA_START = FileExtentItem.INLINE_DATA_START
SIZEOF_DIR_ITEM = DirItem.STRUCT.size
SIZEOF_BLOCK_GROUP_ITEM = BlockGroupItem.STRUCT.size
# sizeof(struct btrfs_chunk) includes one struct btrfs_stripe (its last member is
# ``struct btrfs_stripe stripe``, the first of num_stripes)
SIZEOF_CHUNK = ChunkItem.item_size(1)
SIZEOF_DEV_ITEM = DevItem.SIZE
SIZEOF_INODE_ITEM = InodeItem.SIZE
SIZEOF_ROOT_ITEM = RootItem.SIZE
LEGACY_ROOT_ITEM_SIZE = RootItem.SIZE_V1  # btrfs_legacy_root_item_size()
SIZEOF_ROOT_REF = RootRef.STRUCT.size
SIZEOF_EXTENT_ITEM = ExtentItem.STRUCT.size
SIZEOF_TREE_BLOCK_INFO = ExtentItem.TREE_BLOCK_INFO.size
SIZEOF_EXTENT_INLINE_REF = ExtentItem.INLINE_REF.size
SIZEOF_EXTENT_DATA_REF = EXTENT_DATA_REF.size
SIZEOF_SHARED_DATA_REF = SHARED_DATA_REF.size
SIZEOF_INODE_REF = InodeRef.STRUCT.size
SIZEOF_INODE_EXTREF = InodeExtref.STRUCT.size
XATTR_NAME_MAX = 255
BTRFS_NR_FILE_EXTENT_TYPES = 3
BTRFS_NR_COMPRESS_TYPES = 4
BTRFS_STRIPE_LEN_SHIFT = 16

# include/uapi/linux/btrfs_tree.h: BTRFS_INODE_FLAG_MASK, BTRFS_INODE_RO_FLAG_MASK
BTRFS_INODE_FLAG_MASK = 0xFFF | (1 << 31)
BTRFS_INODE_RO_FLAG_MASK = 1 << 0  # BTRFS_INODE_RO_VERITY

# fs/btrfs/volumes.c btrfs_raid_array[] by btrfs_bg_flags_to_raid_index():
# index -> (ncopies, nparity, devs_min, dev_stripes, sub_stripes)
RAID_SINGLE, RAID_RAID0, RAID_RAID1, RAID_DUP, RAID_RAID10 = 0, 1, 2, 3, 4
RAID_RAID5, RAID_RAID6, RAID_RAID1C3, RAID_RAID1C4 = 5, 6, 7, 8
BTRFS_RAID_ARRAY: dict[int, tuple[int, int, int, int, int]] = {
    RAID_SINGLE: (1, 0, 1, 1, 1),
    RAID_RAID0: (1, 0, 1, 1, 1),
    RAID_RAID1: (2, 0, 2, 1, 1),
    RAID_DUP: (2, 0, 1, 2, 1),
    RAID_RAID10: (2, 0, 2, 1, 2),
    RAID_RAID5: (1, 1, 2, 1, 1),
    RAID_RAID6: (1, 2, 3, 1, 1),
    RAID_RAID1C3: (3, 0, 3, 1, 1),
    RAID_RAID1C4: (4, 0, 4, 1, 1),
}

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def btrfs_bg_flags_to_raid_index(flags: int) -> int:
    """``btrfs_bg_flags_to_raid_index()``: SINGLE for no profile bit, else
    ``ilog2(profile >> 2)`` (the highest profile bit wins when several are set)."""
    profile = flags & C.BLOCK_GROUP_PROFILE_MASK
    if not profile:
        return RAID_SINGLE
    return (profile >> 2).bit_length() - 1


def is_fstree(rootid: int) -> bool:
    """``is_fstree()`` (``fs/btrfs/ctree.h``): FS_TREE, or a subvolume id (>= 256 as s64
    and qgroup level 0)."""
    if rootid == C.FS_TREE_OBJECTID:
        return True
    return C.FIRST_FREE_OBJECTID <= rootid < (1 << 63) and (rootid >> 48) & 0xFFFF == 0


def _s64(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def _aligned(v: int, a: int) -> bool:
    return v % a == 0


def _hweight64(v: int) -> int:
    return bin(v & U64).count("1")


def _has_single_bit_set(v: int) -> bool:
    return v != 0 and v & (v - 1) == 0


class _Eb:
    """The extent buffer a check reads: the block's bytes, its header and the fs_info facts
    (from the superblock). Out-of-range reads return 0 like the kernel's accessors."""

    __slots__ = (
        "blk",
        "csum_size",
        "is_leaf",
        "kind",
        "nodesize",
        "owner",
        "raw",
        "rdonly",
        "sb",
        "sectorsize",
        "start",
        "super_gen",
    )

    def __init__(self, blk: TreeBlock, sb: Superblock, rdonly: bool) -> None:
        self.blk = blk
        self.sb = sb
        self.raw = blk.raw
        self.sectorsize = sb.sectorsize
        self.nodesize = sb.nodesize
        self.csum_size = CSUM_SIZES.get(sb.csum_type, 4)
        self.super_gen = sb.generation
        self.owner = blk.header.owner
        self.start = blk.header.bytenr
        self.is_leaf = blk.header.level == 0
        self.kind = "leaf" if self.is_leaf else "node"
        self.rdonly = rdonly

    # -- accessors -----------------------------------------------------------------------

    def _get(self, s: struct.Struct, off: int) -> int:
        if off < 0 or off + s.size > len(self.raw):
            return 0
        v: int = s.unpack_from(self.raw, off)[0]
        return v

    def u8(self, off: int) -> int:
        return self._get(_U8, off)

    def u16(self, off: int) -> int:
        return self._get(_U16, off)

    def u32(self, off: int) -> int:
        return self._get(_U32, off)

    def u64(self, off: int) -> int:
        return self._get(_U64, off)

    def key_at(self, off: int) -> Key:
        return Key(self.u64(off), self.u8(off + 8), self.u64(off + 9))

    def read(self, off: int, n: int) -> bytes:
        return bytes(self.raw[off : off + n]).ljust(n, b"\0")

    def item_ptr(self, slot: int) -> int:
        """``btrfs_item_ptr_offset()``: the item body's offset in the block."""
        return C.BTRFS_HEADER_SIZE + self.blk.items[slot].offset

    def item_size(self, slot: int) -> int:
        return self.blk.items[slot].size

    def item_key(self, slot: int) -> Key:
        return self.blk.items[slot].key

    @property
    def leaf_data_size(self) -> int:
        return btrfs_leaf_data_size(self.nodesize)

    def incompat(self, bit: int) -> bool:
        return bool(self.sb.incompat_flags & bit)

    # -- reporters (the kernel's *_err helpers) -----------------------------------------

    def _finding(self, slot: int, line: str, key: Key | None) -> BtrfsFinding:
        what = f"{self.kind} {self.blk.logical} (owner {self.owner})"
        if slot >= 0:
            what += f" slot {slot}"
        if key is not None:
            what += f" key {key}"
            line += f"; key {key}"
        return BtrfsFinding(CODE, what, line, self.blk.logical, self.owner)

    def _slot_key(self, slot: int) -> Key | None:
        if self.is_leaf and 0 <= slot < len(self.blk.items):
            return self.blk.items[slot].key
        if not self.is_leaf and 0 <= slot < len(self.blk.ptrs):
            return self.blk.ptrs[slot].key
        return None

    def generic_err(self, slot: int, reason: str) -> BtrfsFinding:
        """``generic_err()``: ``corrupt leaf: root=%llu block=%llu slot=%d, <reason>``."""
        line = f"corrupt {self.kind}: root={self.owner} block={self.start} slot={slot}, {reason}"
        return self._finding(slot, line, self._slot_key(slot))

    def file_extent_err(self, slot: int, reason: str) -> BtrfsFinding:
        """``file_extent_err()``: adds ``ino=%llu file_offset=%llu``."""
        k = self.item_key(slot)
        line = (
            f"corrupt {self.kind}: root={self.owner} block={self.start} slot={slot} "
            f"ino={k.objectid} file_offset={k.offset}, {reason}"
        )
        return self._finding(slot, line, k)

    def dir_item_err(self, slot: int, reason: str) -> BtrfsFinding:
        """``dir_item_err()`` (also ``inode_item_err``, ``inode_ref_err``): adds
        ``ino=%llu``."""
        k = self.item_key(slot)
        line = (
            f"corrupt {self.kind}: root={self.owner} block={self.start} slot={slot} "
            f"ino={k.objectid}, {reason}"
        )
        return self._finding(slot, line, k)

    def block_group_err(self, slot: int, reason: str) -> BtrfsFinding:
        """``block_group_err()``: adds ``bg_start=%llu bg_len=%llu``."""
        k = self.item_key(slot)
        line = (
            f"corrupt {self.kind}: root={self.owner} block={self.start} slot={slot} "
            f"bg_start={k.objectid} bg_len={k.offset}, {reason}"
        )
        return self._finding(slot, line, k)

    def chunk_err(self, slot: int, logical: int, reason: str) -> BtrfsFinding:
        """``chunk_err()`` for a leaf: root is always the chunk tree's id."""
        line = (
            f"corrupt leaf: root={C.CHUNK_TREE_OBJECTID} block={self.blk.logical} "
            f"slot={slot} chunk_start={logical}, {reason}"
        )
        return self._finding(slot, line, self.item_key(slot))

    def dev_item_err(self, slot: int, reason: str) -> BtrfsFinding:
        """``dev_item_err()``: ``... slot=%d devid=%llu <reason>`` (no comma)."""
        k = self.item_key(slot)
        line = (
            f"corrupt {self.kind}: root={self.owner} block={self.start} slot={slot} "
            f"devid={k.objectid} {reason}"
        )
        return self._finding(slot, line, k)

    def extent_err(self, slot: int, reason: str) -> BtrfsFinding:
        """``extent_err()``: ``corrupt leaf: block=%llu slot=%d extent bytenr=%llu
        len=%llu <reason>`` (no root, no comma); len is nodesize for METADATA_ITEM and tree
        block refs, else the key offset."""
        k = self.item_key(slot)
        if k.type in (C.METADATA_ITEM_KEY, C.TREE_BLOCK_REF_KEY, C.SHARED_BLOCK_REF_KEY):
            length = self.nodesize
        else:
            length = k.offset
        line = (
            f"corrupt {self.kind}: block={self.blk.logical} slot={slot} "
            f"extent bytenr={k.objectid} len={length} {reason}"
        )
        return self._finding(slot, line, k)


# -- leaf item checks ----------------------------------------------------------------------

ItemCheck = Callable[[_Eb, Key, int, Key], "BtrfsFinding | None"]


def check_prev_ino(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_prev_ino()``: in subvolume trees an XATTR/INODE_REF/INODE_EXTREF/DIR_*/
    EXTENT_DATA item must follow an item of the same inode (its INODE_ITEM comes first)."""
    if slot == 0:
        return None
    if not is_fstree(eb.owner):
        return None
    if key.objectid == prev_key.objectid:
        return None
    return eb.dir_item_err(
        slot,
        f"invalid previous key objectid, have {prev_key.objectid} expect {key.objectid}",
    )


def _file_extent_end(eb: _Eb, key: Key, ptr: int) -> int:
    """``file_extent_end()`` (u64 arithmetic)."""
    if eb.u8(ptr + 20) == C.FILE_EXTENT_INLINE:
        length = eb.u64(ptr + 8)  # ram_bytes
        ss = eb.sectorsize
        return ((key.offset + length + ss - 1) & U64) & ~(ss - 1)
    return (key.offset + eb.u64(ptr + 45)) & U64  # num_bytes


def check_extent_data_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_extent_data_item()``: EXTENT_DATA (file extent) items."""
    ss = eb.sectorsize
    item_size = eb.item_size(slot)
    if not _aligned(key.offset, ss):
        return eb.file_extent_err(
            slot,
            f"unaligned file_offset for file extent, have {key.offset} should be aligned to {ss}",
        )
    bad = check_prev_ino(eb, key, slot, prev_key)
    if bad:
        return bad
    fi = eb.item_ptr(slot)
    if item_size < FILE_EXTENT_INLINE_DATA_START:
        return eb.file_extent_err(
            slot,
            f"invalid item size, have {item_size} expect "
            f"[{FILE_EXTENT_INLINE_DATA_START}, {SZ_4K})",
        )
    ram_bytes = eb.u64(fi + 8)
    compression = eb.u8(fi + 16)
    encryption = eb.u8(fi + 17)
    ftype = eb.u8(fi + 20)
    if ftype >= BTRFS_NR_FILE_EXTENT_TYPES:
        return eb.file_extent_err(
            slot,
            f"invalid type for file extent, have {ftype} expect range "
            f"[0, {BTRFS_NR_FILE_EXTENT_TYPES - 1}]",
        )
    if compression >= BTRFS_NR_COMPRESS_TYPES:
        return eb.file_extent_err(
            slot,
            f"invalid compression for file extent, have {compression} expect range "
            f"[0, {BTRFS_NR_COMPRESS_TYPES - 1}]",
        )
    if encryption:
        return eb.file_extent_err(
            slot, f"invalid encryption for file extent, have {encryption} expect 0"
        )
    if ftype == C.FILE_EXTENT_INLINE:
        if key.offset:
            return eb.file_extent_err(
                slot,
                f"invalid file_offset for inline file extent, have {key.offset} expect 0",
            )
        if compression != C.COMPRESS_NONE:
            return None
        if item_size != FILE_EXTENT_INLINE_DATA_START + ram_bytes:
            return eb.file_extent_err(
                slot,
                f"invalid ram_bytes for uncompressed inline extent, have {item_size} "
                f"expect {FILE_EXTENT_INLINE_DATA_START + ram_bytes}",
            )
        return None
    if item_size != SIZEOF_FILE_EXTENT_ITEM:
        return eb.file_extent_err(
            slot,
            f"invalid item size for reg/prealloc file extent, have {item_size} "
            f"expect {SIZEOF_FILE_EXTENT_ITEM}",
        )
    # CHECK_FE_ALIGNED for ram_bytes, disk_bytenr, disk_num_bytes, offset, num_bytes
    for name, off in (
        ("ram_bytes", 8),
        ("disk_bytenr", 21),
        ("disk_num_bytes", 29),
        ("offset", 37),
        ("num_bytes", 45),
    ):
        v = eb.u64(fi + off)
        if not _aligned(v, ss):
            return eb.file_extent_err(
                slot,
                f"invalid {name} for file extent, have {v}, should be aligned to {ss}",
            )
    num_bytes = eb.u64(fi + 45)
    if num_bytes + key.offset > U64:
        return eb.file_extent_err(
            slot,
            f"extent end overflow, have file offset {key.offset} extent num bytes {num_bytes}",
        )
    if slot > 0 and prev_key.objectid == key.objectid and prev_key.type == C.EXTENT_DATA_KEY:
        prev_end = _file_extent_end(eb, prev_key, eb.item_ptr(slot - 1))
        if prev_end > key.offset:
            return eb.file_extent_err(
                slot - 1,
                f"file extent end range ({prev_end}) goes beyond start offset "
                f"({key.offset}) of the next file extent",
            )
    return None


def check_csum_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_csum_item()``: EXTENT_CSUM items."""
    ss = eb.sectorsize
    csumsize = eb.csum_size
    if key.objectid != C.EXTENT_CSUM_OBJECTID:
        return eb.generic_err(
            slot,
            f"invalid key objectid for csum item, have {key.objectid} "
            f"expect {C.EXTENT_CSUM_OBJECTID}",
        )
    if not _aligned(key.offset, ss):
        return eb.generic_err(
            slot,
            f"unaligned key offset for csum item, have {key.offset} should be aligned to {ss}",
        )
    if not _aligned(eb.item_size(slot), csumsize):
        return eb.generic_err(
            slot,
            f"unaligned item size for csum item, have {eb.item_size(slot)} "
            f"should be aligned to {csumsize}",
        )
    if slot > 0 and prev_key.type == C.EXTENT_CSUM_KEY:
        prev_csum_end = ((eb.item_size(slot - 1) // csumsize) * ss + prev_key.offset) & U64
        if prev_csum_end > key.offset:
            return eb.generic_err(
                slot - 1,
                f"csum end range ({prev_csum_end}) goes beyond the start range "
                f"({key.offset}) of the next csum item",
            )
    return None


def check_inode_key(eb: _Eb, key: Key, slot: int) -> BtrfsFinding | None:
    """``check_inode_key()``: ``key`` is an INODE_ITEM's own key, or the location key of a
    dir item that points to an inode."""
    item_type = eb.item_key(slot).type
    is_inode_item = item_type == C.INODE_ITEM_KEY
    if item_type == C.XATTR_ITEM_KEY:
        if key.objectid != 0 or key.type != 0 or key.offset != 0:
            # the kernel returns -EUCLEAN here without printing a message
            return eb.dir_item_err(
                slot, f"invalid location key for XATTR item, have {key} expect (0 0 0)"
            )
        return None
    if (
        key.objectid < C.FIRST_FREE_OBJECTID or key.objectid > C.LAST_FREE_OBJECTID
    ) and key.objectid not in (C.ROOT_TREE_DIR_OBJECTID, C.FREE_INO_OBJECTID):
        rng = (
            f"{C.ROOT_TREE_DIR_OBJECTID} or [{C.FIRST_FREE_OBJECTID}, "
            f"{C.LAST_FREE_OBJECTID}] or {C.FREE_INO_OBJECTID}"
        )
        if is_inode_item:
            return eb.generic_err(slot, f"invalid key objectid: has {key.objectid} expect {rng}")
        return eb.dir_item_err(
            slot, f"invalid location key objectid: has {key.objectid} expect {rng}"
        )
    if key.offset != 0:
        if is_inode_item:
            return eb.dir_item_err(slot, f"invalid key offset: has {key.offset} expect 0")
        return eb.dir_item_err(slot, f"invalid location key offset:has {key.offset} expect 0")
    return None


def check_root_key(eb: _Eb, key: Key, slot: int) -> BtrfsFinding | None:
    """``check_root_key()``: a ROOT_ITEM's key, or a dir item's location key pointing to
    a subvolume."""
    is_root_item = eb.item_key(slot).type == C.ROOT_ITEM_KEY
    if is_root_item and key.objectid == C.TREE_RELOC_OBJECTID and not is_fstree(key.offset):
        return eb.generic_err(
            slot,
            f"invalid reloc tree for root {_s64(key.offset)}, root id is not a subvolume tree",
        )
    if key.objectid == 0:
        if is_root_item:
            return eb.generic_err(slot, "invalid root id 0")
        return eb.dir_item_err(slot, "invalid location key root id 0")
    if not is_fstree(key.objectid) and not is_root_item:
        return eb.dir_item_err(
            slot,
            f"invalid location key objectid, have {key.objectid} expect "
            f"[{C.FIRST_FREE_OBJECTID}, {C.LAST_FREE_OBJECTID}]",
        )
    if key.objectid == C.TREE_RELOC_OBJECTID and key.offset == 0:
        return eb.generic_err(slot, "invalid root id 0 for reloc tree")
    return None


def check_dir_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_dir_item()``: DIR_ITEM, DIR_INDEX and XATTR_ITEM entries."""
    bad = check_prev_ino(eb, key, slot, prev_key)
    if bad:
        return bad
    item_size = eb.item_size(slot)
    base = eb.item_ptr(slot)
    max_xattr = eb.leaf_data_size - C.BTRFS_ITEM_SIZE - SIZEOF_DIR_ITEM
    cur = 0
    while cur < item_size:
        if cur + SIZEOF_DIR_ITEM > item_size:
            return eb.dir_item_err(
                slot,
                f"dir item header crosses item boundary, have {cur + SIZEOF_DIR_ITEM} "
                f"boundary {item_size}",
            )
        di = base + cur
        location = eb.key_at(di)
        if location.type == C.ROOT_ITEM_KEY:
            bad = check_root_key(eb, location, slot)
            if bad:
                return bad
        elif location.type in (C.INODE_ITEM_KEY, 0):
            bad = check_inode_key(eb, location, slot)
            if bad:
                return bad
        else:
            return eb.dir_item_err(
                slot,
                f"invalid location key type, have {location.type}, expect "
                f"{C.ROOT_ITEM_KEY} or {C.INODE_ITEM_KEY}",
            )
        dir_type = eb.u8(di + 29) & ~C.FT_ENCRYPTED  # btrfs_dir_ftype()
        if dir_type <= C.FT_UNKNOWN or dir_type >= C.FT_MAX:
            return eb.dir_item_err(
                slot, f"invalid dir item type, have {dir_type} expect (0, {C.FT_MAX})"
            )
        if key.type == C.XATTR_ITEM_KEY and dir_type != C.FT_XATTR:
            return eb.dir_item_err(
                slot,
                f"invalid dir item type for XATTR key, have {dir_type} expect {C.FT_XATTR}",
            )
        if dir_type == C.FT_XATTR and key.type != C.XATTR_ITEM_KEY:
            return eb.dir_item_err(slot, "xattr dir type found for non-XATTR key")
        max_name_len = XATTR_NAME_MAX if dir_type == C.FT_XATTR else C.BTRFS_NAME_LEN
        data_len = eb.u16(di + 25)
        name_len = eb.u16(di + 27)
        if name_len > max_name_len:
            return eb.dir_item_err(
                slot, f"dir item name len too long, have {name_len} max {max_name_len}"
            )
        if name_len + data_len > max_xattr:
            return eb.dir_item_err(
                slot,
                f"dir item name and data len too long, have {name_len + data_len} max {max_xattr}",
            )
        if data_len and dir_type != C.FT_XATTR:
            return eb.dir_item_err(
                slot, f"dir item with invalid data len, have {data_len} expect 0"
            )
        total_size = SIZEOF_DIR_ITEM + name_len + data_len
        if cur + total_size > item_size:
            return eb.dir_item_err(
                slot,
                f"dir item data crosses item boundary, have {cur + total_size} "
                f"boundary {item_size}",
            )
        if key.type in (C.DIR_ITEM_KEY, C.XATTR_ITEM_KEY):
            name_hash = btrfs_name_hash(eb.read(di + SIZEOF_DIR_ITEM, name_len))
            if key.offset != name_hash:
                return eb.dir_item_err(
                    slot,
                    f"name hash mismatch with key, have 0x{name_hash:016x} "
                    f"expect 0x{key.offset:016x}",
                )
        cur += total_size
    return None


def check_block_group_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_block_group_item()``: BLOCK_GROUP_ITEM (start, 192, length)."""
    item_size = eb.item_size(slot)
    if key.offset == 0:
        return eb.block_group_err(slot, "invalid block group size 0")
    if item_size != SIZEOF_BLOCK_GROUP_ITEM:
        return eb.block_group_err(
            slot, f"invalid item size, have {item_size} expect {SIZEOF_BLOCK_GROUP_ITEM}"
        )
    p = eb.item_ptr(slot)
    used = eb.u64(p)
    chunk_objectid = eb.u64(p + 8)
    flags = eb.u64(p + 16)
    if eb.incompat(C.INCOMPAT_EXTENT_TREE_V2):
        nr = eb.sb.nr_global_roots
        if nr and chunk_objectid >= nr:
            return eb.block_group_err(
                slot,
                f"invalid block group global root id, have {chunk_objectid}, needs to be <= {nr}",
            )
    elif chunk_objectid != C.FIRST_CHUNK_TREE_OBJECTID:
        return eb.block_group_err(
            slot,
            f"invalid block group chunk objectid, have {chunk_objectid} "
            f"expect {C.FIRST_CHUNK_TREE_OBJECTID}",
        )
    if used > key.offset:
        return eb.block_group_err(
            slot, f"invalid block group used, have {used} expect [0, {key.offset})"
        )
    profile = flags & C.BLOCK_GROUP_PROFILE_MASK
    if _hweight64(profile) > 1:
        return eb.block_group_err(
            slot,
            f"invalid profile flags, have 0x{profile:x} ({_hweight64(profile)} bits set) "
            "expect no more than 1 bit set",
        )
    btype = flags & C.BLOCK_GROUP_TYPE_MASK
    if btype not in (
        C.BLOCK_GROUP_DATA,
        C.BLOCK_GROUP_METADATA,
        C.BLOCK_GROUP_SYSTEM,
        C.BLOCK_GROUP_METADATA | C.BLOCK_GROUP_DATA,
    ):
        return eb.block_group_err(
            slot,
            f"invalid type, have 0x{btype:x} ({_hweight64(btype)} bits set) expect either "
            f"0x{C.BLOCK_GROUP_DATA:x}, 0x{C.BLOCK_GROUP_METADATA:x}, "
            f"0x{C.BLOCK_GROUP_SYSTEM:x} or "
            f"0x{C.BLOCK_GROUP_METADATA | C.BLOCK_GROUP_DATA:x}",
        )
    return None


def check_skinny_block_group_item(
    eb: _Eb, key: Key, slot: int, prev_key: Key
) -> BtrfsFinding | None:
    """fsoracle's rule (in the forward-port only) for the 2019 SKINNY_BG_TREE RFC's item, key
    (start, SKINNY_BLOCK_GROUP_ITEM 193, used), empty body, in the block group tree.

    What a leaf alone can prove, in this order:

    1. the item is empty (the RFC inserts it with ``data_size = 0``);
    2. the leaf belongs to the block group tree (11): the RFC's
       ``read_skinny_block_group_tree`` reads only that tree;
    3. ``start`` is sectorsize-aligned (it is a chunk's logical start, and
       ``btrfs_check_chunk_valid`` requires chunk starts aligned);
    4. ``used`` is sectorsize-aligned: it is a sum of extent lengths, each aligned
       (data extents by ``check_extent_item``, tree blocks are nodesize);
    5. ``used`` <= min(total_bytes, the chunk length limit - 1): the RFC's
       ``read_one_block_group`` requires used <= the chunk's length; a chunk's logical
       length never exceeds the physical bytes of its stripes, hence the superblock's
       total_bytes, and ``btrfs_check_chunk_valid`` caps it below
       ``btrfs_stripe_nr_to_offset(U32_MAX)``;
    6. ``start + used`` does not overflow u64 (start + length cannot either);
    7. the SKINNY_BG_TREE incompat bit is set;
    8. the previous skinny item is not the same block group and its used bytes end at or
       before this start.

    Rules 1-8 and their messages are the kernel patch's
    (``patches/skinny-bg-tree/0002-...``), so the model and the patched kernel agree.

    Not checkable without the chunk map (done where block groups are read,
    :mod:`model.btrfs.blockgroups`): that a chunk starts exactly at ``start``, that
    ``used`` <= that chunk's length, and the flags (they come from the chunk).
    """
    ss = eb.sectorsize

    def err(reason: str) -> BtrfsFinding:
        line = (
            f"corrupt {eb.kind}: root={eb.owner} block={eb.start} slot={slot} "
            f"bg_start={key.objectid} used={key.offset}, {reason}"
        )
        return eb._finding(slot, line, key)

    item_size = eb.item_size(slot)
    if item_size != 0:
        return err(f"invalid skinny block group item size, have {item_size} expect 0")
    if eb.owner != C.BLOCK_GROUP_TREE_OBJECTID:
        return err(
            f"skinny block group item in tree {eb.owner}, expect "
            f"{C.BLOCK_GROUP_TREE_OBJECTID} (block group tree)"
        )
    if not _aligned(key.objectid, ss):
        return err(f"invalid block group start, have {key.objectid} should be aligned to {ss}")
    if not _aligned(key.offset, ss):
        return err(f"invalid block group used, have {key.offset} should be aligned to {ss}")
    limit = min(eb.sb.total_bytes, (U32_MAX << BTRFS_STRIPE_LEN_SHIFT) - 1)
    if key.offset > limit:
        return err(f"invalid block group used, have {key.offset} expect [0, {limit}]")
    if key.objectid + key.offset > U64:
        return err(f"block group end overflow, have start {key.objectid} used {key.offset}")
    if not eb.incompat(C.INCOMPAT_SKINNY_BG_TREE):
        return err("SKINNY_BLOCK_GROUP_ITEM present but SKINNY_BG_TREE incompat bit unset")
    # block groups do not overlap and used <= length: the previous one's used bytes end at
    # or before this start (patches/skinny-bg-tree 0002)
    if slot > 0 and prev_key.type == C.SKINNY_BLOCK_GROUP_ITEM_KEY:
        if prev_key.objectid == key.objectid:
            return err(f"duplicate skinny block group item, previous used {prev_key.offset}")
        if prev_key.objectid + prev_key.offset > key.objectid:
            return err(
                "overlapping skinny block group item, previous start "
                f"{prev_key.objectid} used {prev_key.offset}"
            )
    return None


def btrfs_check_chunk_valid(
    sb: Superblock, chunk: ChunkItem, logical: int, err: Callable[[str], BtrfsFinding]
) -> BtrfsFinding | None:
    """``btrfs_check_chunk_valid()``: the checks shared by chunk tree items and the
    superblock's sys_chunk_array. ``err`` formats the report (``chunk_err``)."""
    ss = sb.sectorsize
    length = chunk.length
    stripe_len = chunk.stripe_len
    num_stripes = chunk.num_stripes
    sub_stripes = chunk.sub_stripes
    ctype = chunk.type
    ncopies, nparity, _, _, _ = BTRFS_RAID_ARRAY[btrfs_bg_flags_to_raid_index(ctype)]
    if not num_stripes:
        return err(f"invalid chunk num_stripes, have {num_stripes}")
    if num_stripes < ncopies:
        return err(f"invalid chunk num_stripes < ncopies, have {num_stripes} < {ncopies}")
    if nparity and num_stripes == nparity:
        return err(f"invalid chunk num_stripes == nparity, have {num_stripes} == {nparity}")
    if not _aligned(logical, ss):
        return err(f"invalid chunk logical, have {logical} should aligned to {ss}")
    if chunk.sector_size != ss:
        return err(f"invalid chunk sectorsize, have {chunk.sector_size} expect {ss}")
    if not length or not _aligned(length, ss):
        return err(f"invalid chunk length, have {length}")
    if logical + length > U64:
        return err(
            f"invalid chunk logical start and length, have logical start {logical} length {length}"
        )
    if stripe_len != C.BTRFS_STRIPE_LEN:
        return err(f"invalid chunk stripe length: {stripe_len}")
    limit = U32_MAX << BTRFS_STRIPE_LEN_SHIFT
    if length >= limit:
        return err(f"chunk length too large: have {length} limit {limit}")
    known = C.BLOCK_GROUP_TYPE_MASK | C.BLOCK_GROUP_PROFILE_MASK
    if ctype & ~known:
        return err(f"unrecognized chunk type: 0x{ctype & ~known & U64:x}")
    profile = ctype & C.BLOCK_GROUP_PROFILE_MASK
    if not _has_single_bit_set(profile) and profile != 0:
        return err(f"invalid chunk profile flag: 0x{profile:x}, expect 0 or 1 bit set")
    if ctype & C.BLOCK_GROUP_TYPE_MASK == 0:
        return err(
            f"missing chunk type flag, have 0x{ctype:x} one bit must be set in "
            f"0x{C.BLOCK_GROUP_TYPE_MASK:x}"
        )
    if ctype & C.BLOCK_GROUP_SYSTEM and ctype & (C.BLOCK_GROUP_METADATA | C.BLOCK_GROUP_DATA):
        return err(f"system chunk with data or metadata type: 0x{ctype:x}")
    mixed = bool(sb.incompat_flags & C.INCOMPAT_MIXED_GROUPS)
    if not mixed and ctype & C.BLOCK_GROUP_METADATA and ctype & C.BLOCK_GROUP_DATA:
        return err(f"mixed chunk type in non-mixed mode: 0x{ctype:x}")
    ra = BTRFS_RAID_ARRAY
    if (
        (ctype & C.BLOCK_GROUP_RAID10 and sub_stripes != ra[RAID_RAID10][4])
        or (ctype & C.BLOCK_GROUP_RAID1 and num_stripes != ra[RAID_RAID1][2])
        or (ctype & C.BLOCK_GROUP_RAID1C3 and num_stripes != ra[RAID_RAID1C3][2])
        or (ctype & C.BLOCK_GROUP_RAID1C4 and num_stripes != ra[RAID_RAID1C4][2])
        or (ctype & C.BLOCK_GROUP_RAID5 and num_stripes < ra[RAID_RAID5][2])
        or (ctype & C.BLOCK_GROUP_RAID6 and num_stripes < ra[RAID_RAID6][2])
        or (ctype & C.BLOCK_GROUP_DUP and num_stripes != ra[RAID_DUP][3])
        or (profile == 0 and num_stripes != ra[RAID_SINGLE][3])
    ):
        return err(
            f"invalid num_stripes:sub_stripes {num_stripes}:{sub_stripes} for profile {profile}"
        )
    return None


def _chunk_from_leaf(eb: _Eb, key: Key, p: int) -> ChunkItem:
    """The fixed part of a chunk item as the accessors see it (stripes not needed)."""
    length, owner, stripe_len, ctype = (eb.u64(p + 8 * i) for i in range(4))
    return ChunkItem(
        key,
        length,
        owner,
        stripe_len,
        ctype,
        eb.u32(p + 32),
        eb.u32(p + 36),
        eb.u32(p + 40),
        eb.u16(p + 44),
        eb.u16(p + 46),
        (),
    )


def check_leaf_chunk_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_leaf_chunk_item()``: the item size, then ``btrfs_check_chunk_valid``."""
    item_size = eb.item_size(slot)

    def err(reason: str) -> BtrfsFinding:
        return eb.chunk_err(slot, key.offset, reason)

    if item_size < SIZEOF_CHUNK:
        return err(
            f"invalid chunk item size: have {item_size} expect "
            f"[{SIZEOF_CHUNK}, {eb.leaf_data_size})"
        )
    chunk = _chunk_from_leaf(eb, key, eb.item_ptr(slot))
    if chunk.num_stripes != 0 and ChunkItem.item_size(chunk.num_stripes) != item_size:
        return err(
            f"invalid chunk item size: have {item_size} expect "
            f"{ChunkItem.item_size(chunk.num_stripes)}"
        )
    return btrfs_check_chunk_valid(eb.sb, chunk, key.offset, err)


def check_dev_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_dev_item()``: DEV_ITEM (1, 216, devid) in the chunk tree."""
    item_size = eb.item_size(slot)
    if key.objectid != C.DEV_ITEMS_OBJECTID:
        return eb.dev_item_err(
            slot, f"invalid objectid: has={key.objectid} expect={C.DEV_ITEMS_OBJECTID}"
        )
    if item_size != SIZEOF_DEV_ITEM:
        return eb.dev_item_err(slot, f"invalid item size: has {item_size} expect {SIZEOF_DEV_ITEM}")
    p = eb.item_ptr(slot)
    devid, total_bytes, bytes_used = eb.u64(p), eb.u64(p + 8), eb.u64(p + 16)
    if devid != key.offset:
        return eb.dev_item_err(slot, f"devid mismatch: key has={key.offset} item has={devid}")
    if bytes_used > total_bytes:
        return eb.dev_item_err(
            slot, f"invalid bytes used: have {bytes_used} expect [0, {total_bytes}]"
        )
    return None


def check_inode_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_inode_item()``: INODE_ITEM (ino, 1, 0)."""
    bad = check_inode_key(eb, key, slot)
    if bad:
        return bad
    item_size = eb.item_size(slot)
    if item_size != SIZEOF_INODE_ITEM:
        return eb.generic_err(
            slot, f"invalid item size: has {item_size} expect {SIZEOF_INODE_ITEM}"
        )
    p = eb.item_ptr(slot)
    gen_limit = eb.super_gen + 1  # "super block generation + 1 to handle log tree"
    generation = eb.u64(p)
    transid = eb.u64(p + 8)
    nlink = eb.u32(p + 40)
    mode = eb.u32(p + 52)
    iflags = eb.u64(p + 64)
    if generation > gen_limit:
        return eb.dir_item_err(
            slot, f"invalid inode generation: has {generation} expect (0, {gen_limit}]"
        )
    if transid > gen_limit:
        return eb.dir_item_err(
            slot, f"invalid inode transid: has {transid} expect [0, {gen_limit}]"
        )
    valid_mask = S_IFMT | S_ISUID | S_ISGID | S_ISVTX | 0o777
    if mode & ~valid_mask:
        return eb.dir_item_err(slot, f"unknown mode bit detected: 0x{mode & ~valid_mask:x}")
    fmt = mode & S_IFMT
    if not _has_single_bit_set(fmt) and fmt not in (S_IFLNK, S_IFBLK, S_IFSOCK):
        return eb.dir_item_err(slot, f"invalid mode: has 0{fmt:o} expect valid S_IF* bit(s)")
    if fmt == S_IFDIR and nlink > 1:
        return eb.dir_item_err(slot, f"invalid nlink: has {nlink} expect no more than 1 for dir")
    flags = iflags & 0xFFFFFFFF
    ro_flags = iflags >> 32
    if flags & ~BTRFS_INODE_FLAG_MASK:
        return eb.dir_item_err(slot, f"unknown incompat flags detected: 0x{flags:x}")
    if not eb.rdonly and ro_flags & ~BTRFS_INODE_RO_FLAG_MASK:
        return eb.dir_item_err(
            slot, f"unknown ro-compat flags detected on writeable mount: 0x{ro_flags:x}"
        )
    return None


def check_root_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_root_item()``: ROOT_ITEM (tree id, 132, 0 or transid) in the root tree."""
    bad = check_root_key(eb, key, slot)
    if bad:
        return bad
    item_size = eb.item_size(slot)
    if item_size not in (SIZEOF_ROOT_ITEM, LEGACY_ROOT_ITEM_SIZE):
        return eb.generic_err(
            slot,
            f"invalid root item size, have {item_size} expect {SIZEOF_ROOT_ITEM} "
            f"or {LEGACY_ROOT_ITEM_SIZE}",
        )
    p = eb.item_ptr(slot)
    # a legacy item reads as zeros from generation_v2 on ("ri = { 0 }")
    ri = eb.read(p, item_size).ljust(SIZEOF_ROOT_ITEM, b"\0")
    v1 = RootItem.V1.unpack_from(ri, InodeItem.SIZE)
    generation, bytenr, last_snapshot, flags = v1[0], v1[2], v1[5], v1[6]
    drop_objectid = Key.unpack_from(v1[8]).objectid
    drop_level, level = v1[9], v1[10]
    generation_v2 = RootItem.V2.unpack_from(ri, RootItem.SIZE_V1)[0]
    gen_limit = eb.super_gen + 1
    if generation > gen_limit:
        return eb.generic_err(
            slot, f"invalid root generation, have {generation} expect (0, {gen_limit}]"
        )
    if generation_v2 > gen_limit:
        return eb.generic_err(
            slot, f"invalid root v2 generation, have {generation_v2} expect (0, {gen_limit}]"
        )
    if last_snapshot > gen_limit:
        return eb.generic_err(
            slot,
            f"invalid root last_snapshot, have {last_snapshot} expect (0, {gen_limit}]",
        )
    if not _aligned(bytenr, eb.sectorsize):
        return eb.generic_err(
            slot,
            f"invalid root bytenr, have {bytenr} expect to be aligned to {eb.sectorsize}",
        )
    if level >= C.BTRFS_MAX_LEVEL:
        return eb.generic_err(
            slot, f"invalid root level, have {level} expect [0, {C.BTRFS_MAX_LEVEL - 1}]"
        )
    if drop_level >= C.BTRFS_MAX_LEVEL:
        return eb.generic_err(
            slot,
            f"invalid root drop_level, have {drop_level} expect [0, {C.BTRFS_MAX_LEVEL - 1}]",
        )
    if drop_objectid != 0 and drop_level == 0:
        return eb.generic_err(
            slot,
            f"invalid root drop_level 0 with non-zero drop_progress objectid {drop_objectid}",
        )
    valid = C.ROOT_SUBVOL_RDONLY | C.ROOT_SUBVOL_DEAD
    if flags & ~valid:
        return eb.generic_err(slot, f"invalid root flags, have 0x{flags:x} expect mask 0x{valid:x}")
    return None


def check_root_ref(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_root_ref()``: ROOT_REF / ROOT_BACKREF."""
    item_size = eb.item_size(slot)
    if item_size <= SIZEOF_ROOT_REF:
        return eb.generic_err(
            slot,
            f"invalid root ref item size for key type {key.type}, have {item_size} "
            f"expect > {SIZEOF_ROOT_REF}",
        )
    name_len = eb.u16(eb.item_ptr(slot) + 16)
    if name_len > C.BTRFS_NAME_LEN:
        return eb.generic_err(
            slot,
            f"root ref name too long for key type {key.type}, have {name_len} "
            f"max {C.BTRFS_NAME_LEN}",
        )
    if item_size != SIZEOF_ROOT_REF + name_len:
        return eb.generic_err(
            slot,
            f"invalid root ref item size for key type {key.type}, have {item_size} "
            f"expect {SIZEOF_ROOT_REF + name_len}",
        )
    return None


def is_valid_dref_root(rootid: int) -> bool:
    """``is_valid_dref_root()``: subvolumes, the data reloc tree, the root tree (v1
    space cache)."""
    return is_fstree(rootid) or rootid in (C.DATA_RELOC_TREE_OBJECTID, C.ROOT_TREE_OBJECTID)


def _extent_inline_ref_size(t: int) -> int:
    """``btrfs_extent_inline_ref_size()``: 0 for an unknown type."""
    if t in (C.TREE_BLOCK_REF_KEY, C.SHARED_BLOCK_REF_KEY, C.EXTENT_OWNER_REF_KEY):
        return SIZEOF_EXTENT_INLINE_REF
    if t == C.SHARED_DATA_REF_KEY:
        return SIZEOF_SHARED_DATA_REF + SIZEOF_EXTENT_INLINE_REF
    if t == C.EXTENT_DATA_REF_KEY:
        return SIZEOF_EXTENT_DATA_REF + 1
    return 0


def check_extent_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_extent_item()``: EXTENT_ITEM / METADATA_ITEM with their inline refs."""
    ss = eb.sectorsize
    if key.type == C.METADATA_ITEM_KEY and not eb.incompat(C.INCOMPAT_SKINNY_METADATA):
        return eb.generic_err(
            slot,
            "invalid key type, METADATA_ITEM type invalid when SKINNY_METADATA feature disabled",
        )
    if not _aligned(key.objectid, ss):
        return eb.generic_err(
            slot, f"invalid key objectid, have {key.objectid} expect to be aligned to {ss}"
        )
    if key.type == C.METADATA_ITEM_KEY and key.offset >= C.BTRFS_MAX_LEVEL:
        return eb.extent_err(
            slot,
            f"invalid tree level, have {key.offset} expect [0, {C.BTRFS_MAX_LEVEL - 1}]",
        )
    item_size = eb.item_size(slot)
    if item_size < SIZEOF_EXTENT_ITEM:
        return eb.extent_err(
            slot,
            f"invalid item size, have {item_size} expect [{SIZEOF_EXTENT_ITEM}, "
            f"{eb.leaf_data_size})",
        )
    ei = eb.item_ptr(slot)
    end = ei + item_size
    total_refs = eb.u64(ei)
    generation = eb.u64(ei + 8)
    flags = eb.u64(ei + 16)
    gen_limit = eb.super_gen + 1
    if generation > gen_limit:
        return eb.extent_err(slot, f"invalid generation, have {generation} expect (0, {gen_limit}]")
    both = C.EXTENT_FLAG_DATA | C.EXTENT_FLAG_TREE_BLOCK
    if not _has_single_bit_set(flags & both):
        return eb.extent_err(
            slot, f"invalid extent flag, have 0x{flags:x} expect 1 bit set in 0x{both:x}"
        )
    is_tree_block = bool(flags & C.EXTENT_FLAG_TREE_BLOCK)
    if is_tree_block:
        if key.type == C.EXTENT_ITEM_KEY and key.offset != eb.nodesize:
            return eb.extent_err(
                slot, f"invalid extent length, have {key.offset} expect {eb.nodesize}"
            )
    else:
        if key.type != C.EXTENT_ITEM_KEY:
            return eb.extent_err(
                slot,
                f"invalid key type, have {key.type} expect {C.EXTENT_ITEM_KEY} for data backref",
            )
        if not _aligned(key.offset, ss):
            return eb.extent_err(
                slot, f"invalid extent length, have {key.offset} expect aligned to {ss}"
            )
        if flags & C.BLOCK_FLAG_FULL_BACKREF:
            return eb.extent_err(slot, "invalid extent flag, data has full backref set")
    ptr = ei + SIZEOF_EXTENT_ITEM
    if is_tree_block and key.type != C.METADATA_ITEM_KEY:
        level = eb.u8(ptr + 17)
        if level >= C.BTRFS_MAX_LEVEL:
            return eb.extent_err(
                slot,
                f"invalid tree block info level, have {level} expect [0, {C.BTRFS_MAX_LEVEL - 1}]",
            )
        ptr += SIZEOF_TREE_BLOCK_INFO
    inline_refs = 0
    last_type = 0
    last_seq = U64
    while ptr < end:
        if ptr + SIZEOF_EXTENT_INLINE_REF > end:
            return eb.extent_err(
                slot,
                f"inline ref item overflows extent item, ptr {ptr} iref size "
                f"{SIZEOF_EXTENT_INLINE_REF} end {end}",
            )
        inline_type = eb.u8(ptr)
        inline_offset = eb.u64(ptr + 1)
        seq = inline_offset
        size = _extent_inline_ref_size(inline_type)
        if ptr + size > end:
            return eb.extent_err(
                slot,
                f"inline ref item overflows extent item, ptr {ptr} iref size {size} end {end}",
            )
        if inline_type == C.TREE_BLOCK_REF_KEY:
            inline_refs += 1
        elif inline_type == C.SHARED_BLOCK_REF_KEY:
            if not _aligned(inline_offset, ss):
                return eb.extent_err(
                    slot,
                    f"invalid tree parent bytenr, have {inline_offset} expect aligned to {ss}",
                )
            inline_refs += 1
        elif inline_type == C.EXTENT_DATA_REF_KEY:
            d = ptr + 1
            dref_root, dref_objectid, dref_offset = eb.u64(d), eb.u64(d + 8), eb.u64(d + 16)
            dref_count = eb.u32(d + 24)
            seq = hash_extent_data_ref(dref_root, dref_objectid, dref_offset)
            if not is_valid_dref_root(dref_root):
                return eb.extent_err(slot, f"invalid data ref root value {dref_root}")
            if dref_objectid < C.FIRST_FREE_OBJECTID or dref_objectid > C.LAST_FREE_OBJECTID:
                return eb.extent_err(slot, f"invalid data ref objectid value {dref_objectid}")
            if not _aligned(dref_offset, ss):
                return eb.extent_err(
                    slot,
                    f"invalid data ref offset, have {dref_offset} expect aligned to {ss}",
                )
            if dref_count == 0:
                return eb.extent_err(slot, "invalid data ref count, should have non-zero value")
            inline_refs += dref_count
        elif inline_type == C.SHARED_DATA_REF_KEY:
            count = eb.u32(ptr + SIZEOF_EXTENT_INLINE_REF)
            if not _aligned(inline_offset, ss):
                return eb.extent_err(
                    slot,
                    f"invalid data parent bytenr, have {inline_offset} expect aligned to {ss}",
                )
            if count == 0:
                return eb.extent_err(
                    slot, "invalid shared data ref count, should have non-zero value"
                )
            inline_refs += count
        elif inline_type == C.EXTENT_OWNER_REF_KEY:
            pass  # WARN_ON(!SIMPLE_QUOTA) only
        else:
            return eb.extent_err(slot, f"unknown inline ref type: {inline_type}")
        if inline_type < last_type:
            return eb.extent_err(
                slot,
                f"inline ref out-of-order: has type {inline_type}, prev type {last_type}",
            )
        if inline_type > last_type:
            last_seq = U64
        if seq > last_seq:
            return eb.extent_err(
                slot,
                f"inline ref out-of-order: has type {inline_type} offset {inline_offset} "
                f"seq 0x{seq:x}, prev type {last_type} seq 0x{last_seq:x}",
            )
        last_type = inline_type
        last_seq = seq
        ptr += size
    if ptr != end:
        return eb.extent_err(slot, "invalid extent item size, padding bytes found")
    if inline_refs > total_refs:
        return eb.extent_err(
            slot, f"invalid extent refs, have {total_refs} expect >= inline {inline_refs}"
        )
    if prev_key.type in (C.EXTENT_ITEM_KEY, C.METADATA_ITEM_KEY):
        if prev_key.type == C.METADATA_ITEM_KEY:
            prev_end = prev_key.objectid + eb.nodesize
        else:
            prev_end = prev_key.objectid + prev_key.offset
        prev_end &= U64
        if prev_end > key.objectid:
            return eb.extent_err(
                slot,
                f"previous extent [{prev_key.objectid} {prev_key.type} {prev_key.offset}] "
                f"overlaps current extent [{key.objectid} {key.type} {key.offset}]",
            )
    return None


def check_simple_keyed_refs(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_simple_keyed_refs()``: TREE_BLOCK_REF, SHARED_BLOCK_REF (empty) and
    SHARED_DATA_REF (count u32)."""
    ss = eb.sectorsize
    expect = 0
    if key.type == C.SHARED_DATA_REF_KEY:
        if eb.u32(eb.item_ptr(slot)) == 0:
            return eb.extent_err(
                slot, "invalid shared data backref count, should have non-zero value"
            )
        expect = SIZEOF_SHARED_DATA_REF
    if eb.item_size(slot) != expect:
        return eb.generic_err(
            slot,
            f"invalid item size, have {eb.item_size(slot)} expect {expect} for key type {key.type}",
        )
    if not _aligned(key.objectid, ss):
        return eb.generic_err(
            slot,
            f"invalid key objectid for shared block ref, have {key.objectid} "
            f"expect aligned to {ss}",
        )
    if key.type != C.TREE_BLOCK_REF_KEY and not _aligned(key.offset, ss):
        return eb.extent_err(
            slot, f"invalid tree parent bytenr, have {key.offset} expect aligned to {ss}"
        )
    return None


def check_extent_data_ref(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_extent_data_ref()``: keyed EXTENT_DATA_REF items (one or more 28-byte
    refs; the key hash is not checked, collisions may spill)."""
    ss = eb.sectorsize
    item_size = eb.item_size(slot)
    if item_size % SIZEOF_EXTENT_DATA_REF:
        return eb.generic_err(
            slot,
            f"invalid item size, have {item_size} expect aligned to "
            f"{SIZEOF_EXTENT_DATA_REF} for key type {key.type}",
        )
    if not _aligned(key.objectid, ss):
        return eb.generic_err(
            slot,
            f"invalid key objectid for shared block ref, have {key.objectid} "
            f"expect aligned to {ss}",
        )
    ptr = eb.item_ptr(slot)
    end = ptr + item_size
    while ptr < end:
        root, objectid, offset = eb.u64(ptr), eb.u64(ptr + 8), eb.u64(ptr + 16)
        count = eb.u32(ptr + 24)
        if not is_valid_dref_root(root):
            return eb.extent_err(slot, f"invalid extent data backref root value {root}")
        if objectid < C.FIRST_FREE_OBJECTID or objectid > C.LAST_FREE_OBJECTID:
            return eb.extent_err(slot, f"invalid extent data backref objectid value {objectid}")
        if not _aligned(offset, ss):
            return eb.extent_err(
                slot,
                f"invalid extent data backref offset, have {offset} expect aligned to {ss}",
            )
        if count == 0:
            return eb.extent_err(
                slot, "invalid extent data backref count, should have non-zero value"
            )
        ptr += SIZEOF_EXTENT_DATA_REF
    return None


def check_inode_ref(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_inode_ref()``: INODE_REF entries (index u64, name_len u16, name)."""
    bad = check_prev_ino(eb, key, slot, prev_key)
    if bad:
        return bad
    item_size = eb.item_size(slot)
    if item_size <= SIZEOF_INODE_REF:
        return eb.dir_item_err(
            slot,
            f"invalid item size, have {item_size} expect ({SIZEOF_INODE_REF}, {eb.leaf_data_size})",
        )
    ptr = eb.item_ptr(slot)
    end = ptr + item_size
    while ptr < end:
        if ptr + SIZEOF_INODE_REF > end:
            return eb.dir_item_err(
                slot,
                f"inode ref overflow, ptr {ptr} end {end} inode_ref_size {SIZEOF_INODE_REF}",
            )
        namelen = eb.u16(ptr + 8)
        if namelen == 0 or namelen > C.BTRFS_NAME_LEN:
            return eb.dir_item_err(
                slot,
                f"invalid inode ref name length, has {namelen} expect [1, {C.BTRFS_NAME_LEN}]",
            )
        if ptr + SIZEOF_INODE_REF + namelen > end:
            return eb.dir_item_err(
                slot, f"inode ref overflow, ptr {ptr} end {end} namelen {namelen}"
            )
        ptr += SIZEOF_INODE_REF + namelen
    return None


def check_inode_extref(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_inode_extref()``: INODE_EXTREF entries (parent u64, index u64, name_len
    u16, name)."""
    bad = check_prev_ino(eb, key, slot, prev_key)
    if bad:
        return bad
    ptr = eb.item_ptr(slot)
    end = ptr + eb.item_size(slot)
    while ptr < end:
        if ptr + SIZEOF_INODE_EXTREF > end:
            return eb.dir_item_err(
                slot,
                f"inode extref overflow, ptr {ptr} end {end} inode_extref size "
                f"{SIZEOF_INODE_EXTREF}",
            )
        namelen = eb.u16(ptr + 16)
        if ptr + SIZEOF_INODE_EXTREF + namelen > end:
            return eb.dir_item_err(
                slot, f"inode extref overflow, ptr {ptr} end {end} namelen {namelen}"
            )
        ptr += SIZEOF_INODE_EXTREF + namelen
    return None


def check_raid_stripe_extent(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_raid_stripe_extent()``: RAID_STRIPE items."""
    if not _aligned(key.objectid, eb.sectorsize):
        return eb.generic_err(
            slot,
            f"invalid key objectid for raid stripe extent, have {key.objectid} "
            f"expect aligned to {eb.sectorsize}",
        )
    if not eb.incompat(C.INCOMPAT_RAID_STRIPE_TREE):
        return eb.generic_err(
            slot, "RAID_STRIPE_EXTENT present but RAID_STRIPE_TREE incompat bit unset"
        )
    return None


def check_dev_extent_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_dev_extent_item()``: DEV_EXTENT (devid, 204, physical). The kernel does not
    check the item size here (the fields are read from the block as they lie)."""
    ss = eb.sectorsize
    de = eb.item_ptr(slot)
    chunk_tree, chunk_objectid = eb.u64(de), eb.u64(de + 8)
    chunk_offset, length = eb.u64(de + 16), eb.u64(de + 24)
    if chunk_tree != C.CHUNK_TREE_OBJECTID:
        return eb.generic_err(
            slot,
            f"invalid dev extent chunk tree id, has {chunk_tree} expect {C.CHUNK_TREE_OBJECTID}",
        )
    if chunk_objectid != C.FIRST_CHUNK_TREE_OBJECTID:
        return eb.generic_err(
            slot,
            f"invalid dev extent chunk objectid, has {chunk_objectid} "
            f"expect {C.FIRST_CHUNK_TREE_OBJECTID}",
        )
    if not _aligned(key.offset, ss):
        return eb.generic_err(
            slot, f"invalid dev extent key.offset, has {key.offset} not aligned to {ss}"
        )
    if not _aligned(chunk_offset, ss):
        return eb.generic_err(
            slot, f"invalid dev extent chunk offset, has {chunk_offset} not aligned to {ss}"
        )
    if not _aligned(length, ss):
        return eb.generic_err(slot, f"invalid dev extent length, has {length} not aligned to {ss}")
    if slot and prev_key.objectid == key.objectid and prev_key.type == key.type:
        prev_len = eb.u64(eb.item_ptr(slot - 1) + 24)
        if (prev_key.offset + prev_len) & U64 > key.offset:
            return eb.generic_err(
                slot,
                f"dev extent overlap, prev offset {prev_key.offset} len {prev_len} "
                f"current offset {key.offset}",
            )
    return None


# check_leaf_item()'s switch
LEAF_ITEM_CHECKS: dict[int, ItemCheck] = {
    C.EXTENT_DATA_KEY: check_extent_data_item,
    C.EXTENT_CSUM_KEY: check_csum_item,
    C.DIR_ITEM_KEY: check_dir_item,
    C.DIR_INDEX_KEY: check_dir_item,
    C.XATTR_ITEM_KEY: check_dir_item,
    C.INODE_REF_KEY: check_inode_ref,
    C.INODE_EXTREF_KEY: check_inode_extref,
    C.BLOCK_GROUP_ITEM_KEY: check_block_group_item,
    C.CHUNK_ITEM_KEY: check_leaf_chunk_item,
    C.DEV_ITEM_KEY: check_dev_item,
    C.DEV_EXTENT_KEY: check_dev_extent_item,
    C.INODE_ITEM_KEY: check_inode_item,
    C.ROOT_ITEM_KEY: check_root_item,
    C.ROOT_REF_KEY: check_root_ref,
    C.ROOT_BACKREF_KEY: check_root_ref,
    C.EXTENT_ITEM_KEY: check_extent_item,
    C.METADATA_ITEM_KEY: check_extent_item,
    C.TREE_BLOCK_REF_KEY: check_simple_keyed_refs,
    C.SHARED_DATA_REF_KEY: check_simple_keyed_refs,
    C.SHARED_BLOCK_REF_KEY: check_simple_keyed_refs,
    C.EXTENT_DATA_REF_KEY: check_extent_data_ref,
    C.RAID_STRIPE_KEY: check_raid_stripe_extent,
    # fsoracle's own rule, not in the kernel's switch
    C.SKINNY_BLOCK_GROUP_ITEM_KEY: check_skinny_block_group_item,
}


def check_leaf_item(eb: _Eb, key: Key, slot: int, prev_key: Key) -> BtrfsFinding | None:
    """``check_leaf_item()``: dispatch on the key type (other types are not checked)."""
    fn = LEAF_ITEM_CHECKS.get(key.type)
    return fn(eb, key, slot, prev_key) if fn is not None else None


# -- leaves and nodes ----------------------------------------------------------------------


def _btrfs_check_leaf(eb: _Eb) -> BtrfsFinding | None:
    blk = eb.blk
    hdr = blk.header
    if hdr.level != 0:
        return eb.generic_err(0, f"invalid level for leaf, have {hdr.level} expect 0")
    if not hdr.flags & C.HEADER_FLAG_WRITTEN:
        return eb.generic_err(0, "invalid flag for leaf, WRITTEN not set")
    nritems = hdr.nritems
    if nritems == 0 and not hdr.flags & C.HEADER_FLAG_RELOC:
        owner = hdr.owner
        # "These trees must never be empty"
        if owner in (
            C.ROOT_TREE_OBJECTID,
            C.CHUNK_TREE_OBJECTID,
            C.DEV_TREE_OBJECTID,
            C.FS_TREE_OBJECTID,
            C.DATA_RELOC_TREE_OBJECTID,
        ):
            return eb.generic_err(0, f"invalid root, root {owner} must never be empty")
        if owner == 0:
            return eb.generic_err(0, "invalid owner, root 0 is not defined")
        if eb.incompat(C.INCOMPAT_EXTENT_TREE_V2):  # may have empty extent trees
            return None
        if owner == C.EXTENT_TREE_OBJECTID:
            return eb.generic_err(0, f"invalid root, root {owner} must never be empty")
        return None
    if nritems == 0:
        return None
    data_size = eb.leaf_data_size
    prev_key = Key(0, 0, 0)  # no valid key type is 0: every key sorts after it
    items = blk.items
    for slot in range(min(nritems, len(items))):
        ih = items[slot]
        key = ih.key
        if not prev_key < key:
            return eb.generic_err(
                slot,
                f"bad key order, prev ({prev_key.objectid} {prev_key.type} "
                f"{prev_key.offset}) current ({key.objectid} {key.type} {key.offset})",
            )
        item_data_end = ih.offset + ih.size
        item_end_expected = data_size if slot == 0 else items[slot - 1].offset
        if item_data_end != item_end_expected:
            return eb.generic_err(
                slot, f"unexpected item end, have {item_data_end} expect {item_end_expected}"
            )
        if item_data_end > data_size:
            return eb.generic_err(
                slot,
                f"slot end outside of leaf, have {item_data_end} expect range [0, {data_size}]",
            )
        item_nr_end = C.BTRFS_HEADER_SIZE + C.BTRFS_ITEM_SIZE * (slot + 1)
        if eb.item_ptr(slot) < item_nr_end:
            return eb.generic_err(
                slot,
                f"slot overlaps with its data, item end {item_nr_end} "
                f"data start {eb.item_ptr(slot)}",
            )
        bad = check_leaf_item(eb, key, slot, prev_key)
        if bad:
            return bad
        prev_key = key
    return None


def btrfs_check_leaf(blk: TreeBlock, sb: Superblock, *, rdonly: bool = False) -> list[BtrfsFinding]:
    """``btrfs_check_leaf()`` (``__btrfs_check_leaf``): level 0, WRITTEN set, the trees
    that may never be an empty leaf (root, chunk, dev, fs, data reloc; extent unless
    EXTENT_TREE_V2; not for RELOC blocks; owner 0 undefined), then per slot: key order,
    item end == previous item's offset (slot 0: the data area's end), inside the leaf,
    not overlapping the item headers, and ``check_leaf_item``.

    ``rdonly`` is ``sb_rdonly()``: unknown inode ro-compat flags are only an error on a
    writeable mount (the default)."""
    bad = _btrfs_check_leaf(_Eb(blk, sb, rdonly))
    return [bad] if bad else []


def _btrfs_check_node(eb: _Eb) -> BtrfsFinding | None:
    blk = eb.blk
    hdr = blk.header
    level = hdr.level
    nr = hdr.nritems
    if not hdr.flags & C.HEADER_FLAG_WRITTEN:
        return eb.generic_err(0, "invalid flag for node, WRITTEN not set")
    if level <= 0 or level >= C.BTRFS_MAX_LEVEL:
        return eb.generic_err(
            0, f"invalid level for node, have {level} expect [1, {C.BTRFS_MAX_LEVEL - 1}]"
        )
    maxptrs = btrfs_nodeptrs_per_block(eb.nodesize)
    if nr == 0 or nr > maxptrs:
        line = (
            f"corrupt node: root={eb.owner} block={blk.logical}, nritems too "
            f"{'small' if nr == 0 else 'large'}, have {nr} expect range [1,{maxptrs}]"
        )
        return eb._finding(-1, line, None)
    ptrs = blk.ptrs
    # the kernel's loop stops at nr - 1: the last pointer is not checked here
    for slot in range(min(nr, len(ptrs)) - 1):
        bytenr = ptrs[slot].blockptr
        key = ptrs[slot].key
        next_key = ptrs[slot + 1].key
        if not bytenr:
            return eb.generic_err(slot, "invalid NULL node pointer")
        if not _aligned(bytenr, eb.sectorsize):
            return eb.generic_err(
                slot, f"unaligned pointer, have {bytenr} should be aligned to {eb.sectorsize}"
            )
        if not key < next_key:
            return eb.generic_err(
                slot,
                f"bad key order, current ({key.objectid} {key.type} {key.offset}) "
                f"next ({next_key.objectid} {next_key.type} {next_key.offset})",
            )
    return None


def btrfs_check_node(blk: TreeBlock, sb: Superblock) -> list[BtrfsFinding]:
    """``btrfs_check_node()`` (``__btrfs_check_node``): WRITTEN set, level in [1, 7],
    nritems in [1, BTRFS_NODEPTRS_PER_BLOCK], and for slots 0..nritems-2: non-NULL,
    sectorsize-aligned pointer and strictly increasing keys."""
    bad = _btrfs_check_node(_Eb(blk, sb, False))
    return [bad] if bad else []


def btrfs_check_eb_owner(blk: TreeBlock, sb: Superblock, root_owner: int) -> list[BtrfsFinding]:
    """``btrfs_check_eb_owner()``: the header owner must be the tree being read (any
    subvolume tree for a subvolume: snapshots share blocks). Skipped for root_owner 0,
    the log tree and reloc trees, whose owners the caller cannot know."""
    eb_owner = blk.header.owner
    kind = "leaf" if blk.header.level == 0 else "node"
    if root_owner in (0, C.TREE_LOG_OBJECTID, C.TREE_RELOC_OBJECTID):
        return []
    if not is_fstree(root_owner):
        if root_owner != eb_owner:
            line = (
                f"corrupted {kind}, root={root_owner} block={blk.header.bytenr} "
                f"owner mismatch, have {eb_owner} expect {root_owner}"
            )
            return [BtrfsFinding(CODE, f"{kind} {blk.logical}", line, blk.logical, root_owner)]
        return []
    if not is_fstree(eb_owner):
        line = (
            f"corrupted {kind}, root={root_owner} block={blk.header.bytenr} "
            f"owner mismatch, have {eb_owner} expect "
            f"[{C.FIRST_FREE_OBJECTID}, {C.LAST_FREE_OBJECTID}]"
        )
        return [BtrfsFinding(CODE, f"{kind} {blk.logical}", line, blk.logical, root_owner)]
    return []


def check_sys_chunk_array(sb: Superblock, chunks: list[ChunkItem]) -> list[BtrfsFinding]:
    """``btrfs_check_chunk_valid()`` on each chunk of the superblock's sys_chunk_array
    (``read_one_chunk`` runs it only for those: chunk tree items went through the tree
    checker). Reported as ``corrupt superblock syschunk array: chunk_start=%llu, ...``."""
    out: list[BtrfsFinding] = []
    for chunk in chunks:
        logical = chunk.key.offset

        def err(reason: str, logical: int = logical) -> BtrfsFinding:
            line = f"corrupt superblock syschunk array: chunk_start={logical}, {reason}"
            return BtrfsFinding(CODE, f"sys_chunk_array chunk {logical}", line, logical)

        bad = btrfs_check_chunk_valid(sb, chunk, logical, err)
        if bad:
            out.append(bad)
    return out


def check_tree_block(
    blk: TreeBlock, sb: Superblock, *, owner_root: int | None = None
) -> list[BtrfsFinding]:
    """Entry point used by the reader for every block read: ``btrfs_check_eb_owner`` (when
    the caller knows which tree it reads) then ``btrfs_check_leaf`` or
    ``btrfs_check_node``, as ``btrfs_validate_extent_buffer`` orders them."""
    if owner_root is not None:
        bad = btrfs_check_eb_owner(blk, sb, owner_root)
        if bad:  # the kernel stops here ("goto out")
            return bad
    if blk.header.level == 0:
        return btrfs_check_leaf(blk, sb)
    return btrfs_check_node(blk, sb)
