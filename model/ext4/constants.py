"""ext4 on-disk and allocator constants.

Every number here is taken from the Linux sources (``fs/ext4/ext4.h``, ``fs/ext4/mballoc.h``,
``fs/ext4/mballoc.c`` of Debian's linux-source-6.1 and linux-source-6.12) or, for the
free-space tree allocator, from the RFC series "ext4: add free-space extent based allocator"
(linux-ext4, 19 Aug 2020, patches 3, 5, 6 and 7 of 9).
"""

from __future__ import annotations

# --- superblock (struct ext4_super_block, ext4.h) ---------------------------------------
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT4_SUPER_MAGIC = 0xEF53
EXT4_MIN_BLOCK_LOG_SIZE = 10  # s_log_block_size is log2(blocksize) - 10

# byte offsets inside the superblock
S_INODES_COUNT = 0x0
S_BLOCKS_COUNT_LO = 0x4
S_FREE_BLOCKS_COUNT_LO = 0xC
S_FIRST_DATA_BLOCK = 0x14
S_LOG_BLOCK_SIZE = 0x18
S_LOG_CLUSTER_SIZE = 0x1C
S_BLOCKS_PER_GROUP = 0x20
S_CLUSTERS_PER_GROUP = 0x24
S_INODES_PER_GROUP = 0x28
S_MAGIC = 0x38
S_REV_LEVEL = 0x4C
S_FIRST_INO = 0x54
S_INODE_SIZE = 0x58
S_FEATURE_COMPAT = 0x5C
S_FEATURE_INCOMPAT = 0x60
S_FEATURE_RO_COMPAT = 0x64
S_UUID = 0x68
S_RESERVED_GDT_BLOCKS = 0xCE
S_DESC_SIZE = 0xFE
S_FIRST_META_BG = 0x104
S_BLOCKS_COUNT_HI = 0x150
S_FREE_BLOCKS_COUNT_HI = 0x158
S_LOG_GROUPS_PER_FLEX = 0x174
S_CHECKSUM_TYPE = 0x175
S_BACKUP_BGS = 0x24C  # __le32 s_backup_bgs[2] (sparse_super2)
S_CHECKSUM_SEED = 0x270
S_CHECKSUM = 0x3FC

EXT4_MAX_BLOCK_LOG_SIZE = 16
EXT4_MAX_CLUSTER_LOG_SIZE = 28
EXT4_GOOD_OLD_REV = 0
EXT4_GOOD_OLD_INODE_SIZE = 128
EXT4_GOOD_OLD_FIRST_INO = 11
EXT4_CRC32C_CHKSUM = 1  # s_checksum_type
EXT4_MAX_DESC_SIZE = 1024  # EXT4_MIN_BLOCK_SIZE

# features (ext4.h)
COMPAT_SPARSE_SUPER2 = 0x0200
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400
INCOMPAT_META_BG = 0x0010
INCOMPAT_64BIT = 0x0080
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_CSUM_SEED = 0x2000

COMPAT_NAMES = {
    0x0001: "dir_prealloc",
    0x0002: "imagic_inodes",
    0x0004: "has_journal",
    0x0008: "ext_attr",
    0x0010: "resize_inode",
    0x0020: "dir_index",
    0x0200: "sparse_super2",
    0x0400: "fast_commit",
    0x0800: "stable_inodes",
    0x1000: "orphan_file",
}
RO_COMPAT_NAMES = {
    0x0001: "sparse_super",
    0x0002: "large_file",
    0x0004: "btree_dir",
    0x0008: "huge_file",
    0x0010: "uninit_bg",
    0x0020: "dir_nlink",
    0x0040: "extra_isize",
    0x0100: "quota",
    0x0200: "bigalloc",
    0x0400: "metadata_csum",
    0x1000: "readonly",
    0x2000: "project",
    0x8000: "verity",
    0x10000: "orphan_present",
}
INCOMPAT_NAMES = {
    0x0001: "compression",
    0x0002: "filetype",
    0x0004: "needs_recovery",
    0x0008: "journal_dev",
    0x0010: "meta_bg",
    0x0040: "extent",
    0x0080: "64bit",
    0x0100: "mmp",
    0x0200: "flex_bg",
    0x0400: "ea_inode",
    0x1000: "dirdata",
    0x2000: "metadata_csum_seed",
    0x4000: "large_dir",
    0x8000: "inline_data",
    0x10000: "encrypt",
    0x20000: "casefold",
}

# --- group descriptor (struct ext4_group_desc) -------------------------------------------
EXT4_MIN_DESC_SIZE = 32
EXT4_MIN_DESC_SIZE_64BIT = 64
BG_BLOCK_BITMAP_LO = 0x0
BG_INODE_BITMAP_LO = 0x4
BG_INODE_TABLE_LO = 0x8
BG_FREE_BLOCKS_COUNT_LO = 0xC
BG_FLAGS = 0x12
BG_BLOCK_BITMAP_CSUM_LO = 0x18
BG_CHECKSUM = 0x1E
BG_BLOCK_BITMAP_HI = 0x20
BG_INODE_BITMAP_HI = 0x24
BG_INODE_TABLE_HI = 0x28
BG_FREE_BLOCKS_COUNT_HI = 0x2C
BG_BLOCK_BITMAP_CSUM_HI = 0x38
EXT4_BG_BLOCK_BITMAP_CSUM_HI_END = 0x3A

EXT4_BG_INODE_UNINIT = 0x0001
EXT4_BG_BLOCK_UNINIT = 0x0002
EXT4_BG_INODE_ZEROED = 0x0004
BG_FLAG_NAMES = {
    EXT4_BG_INODE_UNINIT: "INODE_UNINIT",
    EXT4_BG_BLOCK_UNINIT: "BLOCK_UNINIT",
    EXT4_BG_INODE_ZEROED: "ITABLE_ZEROED",
}

# --- mballoc tunables (mballoc.h) ---------------------------------------------------------
MB_DEFAULT_MAX_TO_SCAN = 200
MB_DEFAULT_MIN_TO_SCAN = 10
MB_DEFAULT_STREAM_THRESHOLD = 16
MB_DEFAULT_ORDER2_REQS = 2
MB_DEFAULT_GROUP_PREALLOC = 512
MB_DEFAULT_LINEAR_LIMIT = 4
MB_DEFAULT_LINEAR_SCAN_THRESHOLD = 16
MB_DEFAULT_BEST_AVAIL_TRIM_ORDER = 3  # 6.12 only
EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME = 4  # ext4.h
MAX_WRITEPAGES_EXTENT_LEN = 2048  # inode.c: blocks mapped per ext4_map_blocks in writeback

# allocation hints (ext4.h)
EXT4_MB_HINT_MERGE = 0x0001
EXT4_MB_HINT_FIRST = 0x0008
EXT4_MB_HINT_DATA = 0x0020
EXT4_MB_HINT_NOPREALLOC = 0x0040
EXT4_MB_HINT_GROUP_ALLOC = 0x0080
EXT4_MB_HINT_GOAL_ONLY = 0x0100
EXT4_MB_HINT_TRY_GOAL = 0x0200
EXT4_MB_STREAM_ALLOC = 0x0800
EXT4_MB_FRSP_NO_OPTIMIZE = 0x8000  # RFC patch 5

AC_STATUS_CONTINUE = 1
AC_STATUS_FOUND = 2
AC_STATUS_BREAK = 3

# criteria: 6.1 numbers them 0..3; 6.12 names five (enum criteria, ext4.h)
CR_POWER2_ALIGNED = 0
CR_GOAL_LEN_FAST = 1
CR_BEST_AVAIL_LEN = 2
CR_GOAL_LEN_SLOW = 3
CR_ANY_FREE = 4

# --- free-space tree allocator RFC (v1, Aug 2020) -------------------------------------------
# struct ext4_frsp_node: two ext4_grpblk_t (4 B each) + two struct rb_node (24 B each on 64-bit)
FRSP_NODE_SIZE = 4 + 4 + 24 + 24  # 56
EXT4_MB_FRSP_MIN_CACHE_AGGRESSION = 0
EXT4_MB_FRSP_DEFAULT_CACHE_AGGRESSION = 1
EXT4_MB_FRSP_MAX_CACHE_AGGRESSION = 3
EXT4_MB_FRSP_ACTIVE_THRESHOLD_JIFFIES = 100
