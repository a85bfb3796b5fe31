"""Trees printed exactly as ``btrfs inspect-internal dump-tree`` (btrfs-progs 6.14) prints
them: ``kernel-shared/print-tree.c`` (``btrfs_print_tree``, ``btrfs_print_leaf``,
``print_key_type``, ``print_objectid`` and the per-item printers) and
``cmds/inspect-dump-tree.c`` (the per-tree headers and the whole-image order).

Every function yields or returns lines without their trailing newline. The renderer is
pure: times are printed in UTC where btrfs-progs uses ``localtime_r`` (run dump-tree with
``TZ=UTC`` to compare). Item bodies come from the :mod:`model.btrfs.items` codecs, so a
line-for-line match with dump-tree also checks the codecs.

Format facts were taken from print-tree.c and cross-checked against the format strings of
the btrfs-progs 6.14 binary and its output: tests/btrfs/test_dump_tree_parity.py compares
every tree of real images (mkfs variants, kernel-written files, quotas and simple quotas,
non-skinny metadata, a log tree, a finished dev replace) and of a synthetic root tree
holding the rarer items (balance, csum change, raid stripe, string, verity, v1 space cache
header, EXTENT_REF_V0, CSUM_ITEM, odd qgroup flags, out-of-range times). Quirks of 6.14 are
reproduced on purpose: the ``\\t(%u 0x%llx) textent owner root`` line of inline owner refs,
dev replace's ``stop time`` printing the start time, ``unknown stats item bytes`` without
a newline, names and xattr values escaped (:func:`print_escaped`) but ROOT_REF names and
STRING_ITEM data printed raw up to a NUL.

What differs from dump-tree on purpose: an item whose body the codecs refuse prints one
``\\t\\t(fsoracle: ...)`` line (dump-tree prints whatever the bytes decode to), and an
unreadable tree block raises :class:`~model.errors.FormatError` (dump-tree prints an error
on stderr and goes on).
"""

from __future__ import annotations

import struct
import uuid as _uuid
from collections.abc import Iterator

from model.btrfs import constants as C
from model.btrfs.csum import CSUM_NAMES, hash_extent_data_ref
from model.btrfs.items import (
    BlockGroupItem,
    ChunkItem,
    CsumItem,
    DevExtent,
    DevItem,
    DevReplaceItem,
    DevStatsItem,
    DirItem,
    DirLogItem,
    ExtentItem,
    FileExtentItem,
    FreeSpaceInfo,
    InodeExtref,
    InodeItem,
    InodeRef,
    Item,
    Key,
    KeyedRef,
    QgroupItem,
    RootItem,
    RootRef,
    Timespec,
    UuidItem,
)
from model.btrfs.reader import BtrfsImage, TreeRoot
from model.btrfs.treeblock import TreeBlock, btrfs_leaf_data_size, btrfs_nodeptrs_per_block
from model.errors import FormatError
from model.linux import U64

# key types print-tree names that constants.py has no use for
CSUM_ITEM_KEY = 120  # BTRFS_CSUM_ITEM_KEY (never written by current kernels)
EXTENT_REF_V0_KEY = 180  # BTRFS_EXTENT_REF_V0_KEY (deprecated)
CSUM_CHANGE_OBJECTID = C.u64(-13)  # BTRFS_CSUM_CHANGE_OBJECTID (btrfstune --csum)
QGROUP_LEVEL_SHIFT = 48
DEV_STAT_VALUES_MAX = 5

# print_key_type()'s key_to_str[]
KEY_TYPE_NAMES: dict[int, str] = {
    C.INODE_ITEM_KEY: "INODE_ITEM",
    C.INODE_REF_KEY: "INODE_REF",
    C.INODE_EXTREF_KEY: "INODE_EXTREF",
    C.DIR_ITEM_KEY: "DIR_ITEM",
    C.DIR_INDEX_KEY: "DIR_INDEX",
    C.DIR_LOG_ITEM_KEY: "DIR_LOG_ITEM",
    C.DIR_LOG_INDEX_KEY: "DIR_LOG_INDEX",
    C.XATTR_ITEM_KEY: "XATTR_ITEM",
    C.VERITY_DESC_ITEM_KEY: "VERITY_DESC_ITEM",
    C.VERITY_MERKLE_ITEM_KEY: "VERITY_MERKLE_ITEM",
    C.ORPHAN_ITEM_KEY: "ORPHAN_ITEM",
    C.ROOT_ITEM_KEY: "ROOT_ITEM",
    C.ROOT_REF_KEY: "ROOT_REF",
    C.ROOT_BACKREF_KEY: "ROOT_BACKREF",
    C.EXTENT_ITEM_KEY: "EXTENT_ITEM",
    C.METADATA_ITEM_KEY: "METADATA_ITEM",
    C.EXTENT_OWNER_REF_KEY: "EXTENT_OWNER_REF",
    C.TREE_BLOCK_REF_KEY: "TREE_BLOCK_REF",
    C.SHARED_BLOCK_REF_KEY: "SHARED_BLOCK_REF",
    C.EXTENT_DATA_REF_KEY: "EXTENT_DATA_REF",
    C.SHARED_DATA_REF_KEY: "SHARED_DATA_REF",
    EXTENT_REF_V0_KEY: "EXTENT_REF_V0",
    CSUM_ITEM_KEY: "CSUM_ITEM",
    C.EXTENT_CSUM_KEY: "EXTENT_CSUM",
    C.EXTENT_DATA_KEY: "EXTENT_DATA",
    C.BLOCK_GROUP_ITEM_KEY: "BLOCK_GROUP_ITEM",
    C.FREE_SPACE_INFO_KEY: "FREE_SPACE_INFO",
    C.FREE_SPACE_EXTENT_KEY: "FREE_SPACE_EXTENT",
    C.FREE_SPACE_BITMAP_KEY: "FREE_SPACE_BITMAP",
    C.CHUNK_ITEM_KEY: "CHUNK_ITEM",
    C.DEV_ITEM_KEY: "DEV_ITEM",
    C.DEV_EXTENT_KEY: "DEV_EXTENT",
    C.RAID_STRIPE_KEY: "RAID_STRIPE",
    C.TEMPORARY_ITEM_KEY: "TEMPORARY_ITEM",
    C.DEV_REPLACE_KEY: "DEV_REPLACE",
    C.STRING_ITEM_KEY: "STRING_ITEM",
    C.QGROUP_STATUS_KEY: "QGROUP_STATUS",
    C.QGROUP_RELATION_KEY: "QGROUP_RELATION",
    C.QGROUP_INFO_KEY: "QGROUP_INFO",
    C.QGROUP_LIMIT_KEY: "QGROUP_LIMIT",
    C.PERSISTENT_ITEM_KEY: "PERSISTENT_ITEM",
    C.UUID_KEY_SUBVOL: "UUID_KEY_SUBVOL",
    C.UUID_KEY_RECEIVED_SUBVOL: "UUID_KEY_RECEIVED_SUBVOL",
}

# print_objectid()'s switch on the objectid (after the per-type cases)
OBJECTID_NAMES: dict[int, str] = {
    C.ROOT_TREE_OBJECTID: "ROOT_TREE",
    C.EXTENT_TREE_OBJECTID: "EXTENT_TREE",
    C.CHUNK_TREE_OBJECTID: "CHUNK_TREE",
    C.DEV_TREE_OBJECTID: "DEV_TREE",
    C.FS_TREE_OBJECTID: "FS_TREE",
    C.ROOT_TREE_DIR_OBJECTID: "ROOT_TREE_DIR",
    C.CSUM_TREE_OBJECTID: "CSUM_TREE",
    C.BALANCE_OBJECTID: "BALANCE",
    C.ORPHAN_OBJECTID: "ORPHAN",
    C.TREE_LOG_OBJECTID: "TREE_LOG",
    C.TREE_LOG_FIXUP_OBJECTID: "LOG_FIXUP",
    C.TREE_RELOC_OBJECTID: "TREE_RELOC",
    C.DATA_RELOC_TREE_OBJECTID: "DATA_RELOC_TREE",
    C.EXTENT_CSUM_OBJECTID: "EXTENT_CSUM",
    C.FREE_SPACE_OBJECTID: "FREE_SPACE",
    C.FREE_INO_OBJECTID: "FREE_INO",
    C.QUOTA_TREE_OBJECTID: "QUOTA_TREE",
    C.UUID_TREE_OBJECTID: "UUID_TREE",
    C.FREE_SPACE_TREE_OBJECTID: "FREE_SPACE_TREE",
    C.MULTIPLE_OBJECTIDS: "MULTIPLE",
    C.BLOCK_GROUP_TREE_OBJECTID: "BLOCK_GROUP_TREE",
    CSUM_CHANGE_OBJECTID: "CSUM_CHANGE",
    C.RAID_STRIPE_TREE_OBJECTID: "RAID_STRIPE_TREE",
    U64: "-1",
}

# cmd_inspect_dump_tree(): the word before " tree key (...)" for each ROOT_ITEM
DUMP_TREE_LABELS: dict[int, str] = {
    C.ROOT_TREE_OBJECTID: "root",
    C.EXTENT_TREE_OBJECTID: "extent",
    C.CHUNK_TREE_OBJECTID: "chunk",
    C.DEV_TREE_OBJECTID: "device",
    C.FS_TREE_OBJECTID: "fs",
    C.ROOT_TREE_DIR_OBJECTID: "directory",
    C.CSUM_TREE_OBJECTID: "checksum",
    C.ORPHAN_OBJECTID: "orphan",
    C.TREE_LOG_OBJECTID: "log",
    C.TREE_LOG_FIXUP_OBJECTID: "log fixup",
    C.TREE_RELOC_OBJECTID: "reloc",
    C.DATA_RELOC_TREE_OBJECTID: "data reloc",
    C.EXTENT_CSUM_OBJECTID: "extent checksum",
    C.QUOTA_TREE_OBJECTID: "quota",
    C.UUID_TREE_OBJECTID: "uuid",
    C.FREE_SPACE_TREE_OBJECTID: "free space",
    C.MULTIPLE_OBJECTIDS: "multiple",
    C.BLOCK_GROUP_TREE_OBJECTID: "block group",
    C.RAID_STRIPE_TREE_OBJECTID: "raid stripe",
}

DIR_ITEM_TYPE_NAMES: dict[int, str] = {
    C.FT_REG_FILE: "FILE",
    C.FT_DIR: "DIR",
    C.FT_CHRDEV: "CHRDEV",
    C.FT_BLKDEV: "BLKDEV",
    C.FT_FIFO: "FIFO",
    C.FT_SOCK: "SOCK",
    C.FT_SYMLINK: "SYMLINK",
    C.FT_XATTR: "XATTR",
}

FILE_EXTENT_TYPE_NAMES = {
    C.FILE_EXTENT_INLINE: "inline",
    C.FILE_EXTENT_PREALLOC: "prealloc",
    C.FILE_EXTENT_REG: "regular",
}

QGROUP_STATUS_FLAG_ON = 1 << 0
QGROUP_STATUS_FLAG_RESCAN = 1 << 1
QGROUP_STATUS_FLAG_INCONSISTENT = 1 << 2
QGROUP_STATUS_FLAG_SIMPLE_MODE = 1 << 3
QGROUP_STATUS_FLAGS_MASK = 0xF

BACKREF_REV_MASK = 0xFF << C.BACKREF_REV_SHIFT


# ---- small formatting helpers ---------------------------------------------------------


def _cstr(b: bytes, n: int = C.BTRFS_NAME_LEN) -> str:
    """``printf("%.*s", n, buf)``: at most n bytes, stopping at a NUL; bytes that are not
    UTF-8 come back as surrogate escapes (encode with ``surrogateescape`` to get them)."""
    return bytes(b[:n]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 27: "\\e"}
_ESCAPES.update({32: "\\ ", 92: "\\\\"})


def print_escaped(b: bytes, n: int = C.BTRFS_NAME_LEN) -> str:
    """How 6.14 prints names and xattr values (dir items, inode refs and extrefs): the
    first ``min(len, 255)`` bytes, NULs included; C escapes for BEL..CR and ESC, ``\\ ``
    for a space, ``\\\\`` for a backslash, ``\\ooo`` for other bytes outside 33..126.
    (Measured against dump-tree 6.14 with every byte value; ROOT_REF names and STRING_ITEM
    data are still printed raw with ``%.*s``.)"""
    out = []
    for c in bytes(b[:n]):
        e = _ESCAPES.get(c)
        if e is not None:
            out.append(e)
        elif 33 <= c <= 126:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03o}")
    return "".join(out)


def uuid_unparse(b: bytes) -> str:
    """libuuid's ``uuid_unparse()`` (lower case)."""
    return str(_uuid.UUID(bytes=bytes(b)))


def _s64(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """Days since 1970-01-01 → (year, month, day), proleptic Gregorian, any range."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def strftime_utc(sec: int) -> str:
    """``strftime("%Y-%m-%d %H:%M:%S", localtime_r(sec))`` with TZ=UTC; ``sec`` is the
    u64 on disk, cast to a signed time_t as print_timespec does."""
    t = _s64(sec)
    days, rem = divmod(t, 86400)
    y, m, d = _civil_from_days(days)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    return f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}"


def print_timespec(ts: Timespec, prefix: str) -> str:
    """``print_timespec()``: ``<prefix><sec>.<nsec> (<date>)``."""
    return f"{prefix}{ts.sec}.{ts.nsec} ({strftime_utc(ts.sec)})"


def btrfs_qgroup_level(qgroupid: int) -> int:
    return qgroupid >> QGROUP_LEVEL_SHIFT


def btrfs_qgroup_subvolid(qgroupid: int) -> int:
    return qgroupid & ((1 << QGROUP_LEVEL_SHIFT) - 1)


def print_objectid(objectid: int, type: int) -> str:
    """``print_objectid()``: special objectids by name, depending on the key type."""
    if type == C.PERSISTENT_ITEM_KEY:
        return "DEV_STATS" if objectid == C.DEV_STATS_OBJECTID else str(objectid)
    if type == C.DEV_EXTENT_KEY:
        return str(objectid)
    if type == C.QGROUP_RELATION_KEY:
        return f"{btrfs_qgroup_level(objectid)}/{btrfs_qgroup_subvolid(objectid)}"
    if type in (C.UUID_KEY_SUBVOL, C.UUID_KEY_RECEIVED_SUBVOL):
        return f"0x{objectid:016x}"
    if objectid == C.ROOT_TREE_OBJECTID and type == C.DEV_ITEM_KEY:
        return "DEV_ITEMS"
    if objectid == C.FIRST_CHUNK_TREE_OBJECTID and type == C.CHUNK_ITEM_KEY:
        return "FIRST_CHUNK_TREE"
    return OBJECTID_NAMES.get(objectid, str(objectid))


def print_key_type(objectid: int, type: int) -> str:
    """``print_key_type()``."""
    if type == 0 and objectid == C.FREE_SPACE_OBJECTID:
        return "UNTYPED"
    return KEY_TYPE_NAMES.get(type, f"UNKNOWN.{type}")


def btrfs_print_key(key: Key) -> str:
    """``btrfs_print_key()``: ``key (OBJECTID TYPE OFFSET)``."""
    oid, typ, off = key.objectid, key.type, key.offset
    out = f"key ({print_objectid(oid, typ)} {print_key_type(oid, typ)}"
    if typ in (C.QGROUP_RELATION_KEY, C.QGROUP_INFO_KEY, C.QGROUP_LIMIT_KEY):
        return out + f" {btrfs_qgroup_level(off)}/{btrfs_qgroup_subvolid(off)})"
    if typ in (C.UUID_KEY_SUBVOL, C.UUID_KEY_RECEIVED_SUBVOL):
        return out + f" 0x{off:016x})"
    if typ == C.ROOT_ITEM_KEY:
        if oid == C.TREE_RELOC_OBJECTID:
            return out + f" {print_objectid(off, typ)})"
        return out + f" {off})"
    if off == U64:
        return out + " -1)"
    return out + f" {off})"


def btrfs_bg_type_to_raid_name(flags: int) -> str:
    """``btrfs_bg_type_to_raid_name()`` via ``btrfs_bg_flags_to_raid_index()``'s order."""
    for bit, name in (
        (C.BLOCK_GROUP_RAID10, "RAID10"),
        (C.BLOCK_GROUP_RAID1, "RAID1"),
        (C.BLOCK_GROUP_RAID1C3, "RAID1C3"),
        (C.BLOCK_GROUP_RAID1C4, "RAID1C4"),
        (C.BLOCK_GROUP_DUP, "DUP"),
        (C.BLOCK_GROUP_RAID0, "RAID0"),
        (C.BLOCK_GROUP_RAID5, "RAID5"),
        (C.BLOCK_GROUP_RAID6, "RAID6"),
    ):
        if flags & bit:
            return name
    return "single"


def bg_flags_to_str(flags: int) -> str:
    """``bg_flags_to_str()``: ``DATA|METADATA|SYSTEM`` then the profile; only DATA clears
    the "empty" flag, and a SINGLE profile prints as ``single`` (no bit for it)."""
    ret = ""
    empty = True
    if flags & C.BLOCK_GROUP_DATA:
        empty = False
        ret = "DATA"
    if flags & C.BLOCK_GROUP_METADATA:
        if not empty:
            ret += "|"
        ret += "METADATA"
    if flags & C.BLOCK_GROUP_SYSTEM:
        if not empty:
            ret += "|"
        ret += "SYSTEM"
    name = btrfs_bg_type_to_raid_name(flags)
    if not name.startswith("SINGLE"):
        ret += "|" + name
    return ret


def extent_flags_to_str(flags: int) -> str:
    """``extent_flags_to_str()``."""
    ret = ""
    empty = True
    if flags & C.EXTENT_FLAG_DATA:
        empty = False
        ret = "DATA"
    if flags & C.EXTENT_FLAG_TREE_BLOCK:
        if not empty:
            ret += "|"
        ret += "TREE_BLOCK"
    if flags & C.BLOCK_FLAG_FULL_BACKREF:
        ret += "|FULL_BACKREF"
    return ret


def inode_flags_to_str(flags: int) -> str:
    """``inode_flags_to_str()`` (``sprint_readable_flag`` + ``none``)."""
    known = 0
    parts = []
    for bit, name in C.INODE_FLAG_NAMES:
        known |= bit
        if flags & bit:
            parts.append(name)
    if flags & ~known:
        parts.append(f"UNKNOWN: 0x{flags & ~known:x}")
    return "|".join(parts) or "none"


def header_flags_to_str(flags: int) -> str:
    """``header_flags_to_str()``."""
    parts = []
    if flags & C.HEADER_FLAG_WRITTEN:
        parts.append("WRITTEN")
    if flags & C.HEADER_FLAG_RELOC:
        parts.append("RELOC")
    return "|".join(parts)


def qgroup_flags_to_str(flags: int) -> str:
    """``qgroup_flags_to_str()``."""
    ret = "ON" if flags & QGROUP_STATUS_FLAG_ON else "OFF"
    if flags & QGROUP_STATUS_FLAG_SIMPLE_MODE:
        ret += "|SIMPLE_MODE"
    if flags & QGROUP_STATUS_FLAG_RESCAN:
        ret += "|SCANNING"
    if flags & QGROUP_STATUS_FLAG_INCONSISTENT:
        ret += "|INCONSISTENT"
    if flags & ~QGROUP_STATUS_FLAGS_MASK:
        ret += f"|UNKNOWN(0x{flags & ~QGROUP_STATUS_FLAGS_MASK:x})"
    return ret


# ---- per-item printers ----------------------------------------------------------------


def print_inode_item(ii: InodeItem) -> list[str]:
    return [
        f"\t\tgeneration {ii.generation} transid {ii.transid} size {ii.size} nbytes {ii.nbytes}",
        f"\t\tblock group {ii.block_group} mode {ii.mode:o} links {ii.nlink} uid {ii.uid}"
        f" gid {ii.gid} rdev {ii.rdev}",
        f"\t\tsequence {ii.sequence} flags 0x{ii.flags:x}({inode_flags_to_str(ii.flags)})",
        print_timespec(ii.atime, "\t\tatime "),
        print_timespec(ii.ctime, "\t\tctime "),
        print_timespec(ii.mtime, "\t\tmtime "),
        print_timespec(ii.otime, "\t\totime "),
    ]


def print_inode_ref_item(ref: InodeRef) -> list[str]:
    return [
        f"\t\tindex {e.index} namelen {len(e.name)} name: {print_escaped(e.name)}" for e in ref.refs
    ]


def print_inode_extref_item(ref: InodeExtref) -> list[str]:
    return [
        f"\t\tindex {e.index} parent {e.parent_objectid} namelen {len(e.name)}"
        f" name: {print_escaped(e.name)}"
        for e in ref.refs
    ]


def print_dir_item_type(t: int) -> str:
    return DIR_ITEM_TYPE_NAMES.get(t, f"DIR_ITEM.{t}")


def print_dir_item(di: DirItem) -> list[str]:
    out = []
    for e in di.entries:
        out.append(f"\t\tlocation {btrfs_print_key(e.location)} type {print_dir_item_type(e.type)}")
        out.append(f"\t\ttransid {e.transid} data_len {len(e.data)} name_len {len(e.name)}")
        out.append(f"\t\tname: {print_escaped(e.name)}")
        if e.data:
            out.append(f"\t\tdata {print_escaped(e.data)}")
    return out


def print_root_item(ri: RootItem) -> list[str]:
    flags_str = "RDONLY" if ri.flags & C.ROOT_SUBVOL_RDONLY else "none"
    out = [
        f"\t\tgeneration {ri.generation} root_dirid {ri.root_dirid} bytenr {ri.bytenr}"
        f" byte_limit {ri.byte_limit} bytes_used {ri.bytes_used}",
        f"\t\tlast_snapshot {ri.last_snapshot} flags 0x{ri.flags:x}({flags_str}) refs {ri.refs}",
        f"\t\tdrop_progress {btrfs_print_key(ri.drop_progress)} drop_level {ri.drop_level}",
        f"\t\tlevel {ri.level} generation_v2 {ri.generation_v2}",
    ]
    if ri.generation == ri.generation_v2:
        out += [
            f"\t\tuuid {uuid_unparse(ri.uuid)}",
            f"\t\tparent_uuid {uuid_unparse(ri.parent_uuid)}",
            f"\t\treceived_uuid {uuid_unparse(ri.received_uuid)}",
            f"\t\tctransid {ri.ctransid} otransid {ri.otransid} stransid {ri.stransid}"
            f" rtransid {ri.rtransid}",
            print_timespec(ri.ctime, "\t\tctime "),
            print_timespec(ri.otime, "\t\totime "),
            print_timespec(ri.stime, "\t\tstime "),
            print_timespec(ri.rtime, "\t\trtime "),
        ]
    return out


def print_root_ref(ref: RootRef, tag: str) -> list[str]:
    return [
        f"\t\troot {tag} key dirid {ref.dirid} sequence {ref.sequence}"
        f" name {_cstr(ref.name, len(ref.name))}"
    ]


def print_extent_item(ei: ExtentItem) -> list[str]:
    """``print_extent_item()``: refs/gen/flags, the tree block info (or the skinny level),
    then each inline ref with its type and sort sequence (``(TYPE 0xSEQ)``)."""
    out = [f"\t\trefs {ei.refs} gen {ei.generation} flags {extent_flags_to_str(ei.flags)}"]
    metadata = ei.key.type == C.METADATA_ITEM_KEY
    if ei.flags & C.EXTENT_FLAG_TREE_BLOCK and not metadata:
        assert ei.tree_block_key is not None
        out.append(
            f"\t\ttree block {btrfs_print_key(ei.tree_block_key)} level {ei.tree_block_level}"
        )
    elif metadata:
        out.append(f"\t\ttree block skinny level {_s32(ei.key.offset)}")
    for r in ei.inline_refs:
        t = r.type
        if t == C.TREE_BLOCK_REF_KEY:
            out.append(
                f"\t\t({t} 0x{r.offset:x}) tree block backref root {print_objectid(r.offset, 0)}"
            )
        elif t == C.SHARED_BLOCK_REF_KEY:
            out.append(f"\t\t({t} 0x{r.offset:x}) shared block backref parent {r.offset}")
        elif t == C.EXTENT_DATA_REF_KEY:
            seq = hash_extent_data_ref(r.root, r.objectid, r.file_offset)
            out.append(
                f"\t\t({t} 0x{seq:x}) extent data backref root {print_objectid(r.root, 0)}"
                f" objectid {r.objectid} offset {r.file_offset} count {r.count}"
            )
        elif t == C.SHARED_DATA_REF_KEY:
            out.append(
                f"\t\t({t} 0x{r.offset:x}) shared data backref parent {r.offset} count {r.count}"
            )
        elif t == C.EXTENT_OWNER_REF_KEY:
            # 6.14's format string is "\t\(%u 0x%llx) textent owner root %llu\n"
            out.append(f"\t({t} 0x{r.offset:x}) textent owner root {r.offset}")
        else:  # the codec refuses unknown types; print_extent_item returns here
            break
    return out


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & (1 << 31) else v


def print_keyed_ref(ref: KeyedRef) -> list[str]:
    """The keyed backrefs: TREE_BLOCK_REF, SHARED_BLOCK_REF, ``print_extent_data_ref()``,
    ``print_shared_data_ref()``."""
    t = ref.key.type
    if t == C.TREE_BLOCK_REF_KEY:
        return ["\t\ttree block backref"]
    if t == C.SHARED_BLOCK_REF_KEY:
        return ["\t\tshared block backref"]
    if t == C.EXTENT_DATA_REF_KEY:
        return [
            f"\t\textent data backref root {print_objectid(ref.root, 0)}"
            f" objectid {ref.objectid} offset {ref.file_offset} count {ref.count}"
        ]
    return [f"\t\tshared data backref count {ref.count}"]


def print_extent_csum(item: CsumItem, item_size: int, sectorsize: int, csum_size: int) -> list[str]:
    """``print_extent_csum()`` without ``--csum-items``: the range the item covers."""
    size = ((item_size // csum_size) * sectorsize) & 0xFFFFFFFF
    start = item.key.offset
    return [f"\t\trange start {start} end {(start + size) & U64} length {size}"]


def print_file_extent_item(fi: FileExtentItem) -> list[str]:
    comp = C.COMPRESS_NAMES.get(fi.compression, f"UNKNOWN.{fi.compression}")
    out = [
        f"\t\tgeneration {fi.generation} type {fi.type}"
        f" ({FILE_EXTENT_TYPE_NAMES.get(fi.type, 'unknown')})"
    ]
    if fi.type == C.FILE_EXTENT_INLINE:
        out.append(
            f"\t\tinline extent data size {fi.inline_size} ram_bytes {fi.ram_bytes}"
            f" compression {fi.compression} ({comp})"
        )
        return out
    if fi.type == C.FILE_EXTENT_PREALLOC:
        out.append(f"\t\tprealloc data disk byte {fi.disk_bytenr} nr {fi.disk_num_bytes}")
        out.append(f"\t\tprealloc data offset {fi.offset} nr {fi.num_bytes}")
        return out
    out.append(f"\t\textent data disk byte {fi.disk_bytenr} nr {fi.disk_num_bytes}")
    out.append(f"\t\textent data offset {fi.offset} nr {fi.num_bytes} ram {fi.ram_bytes}")
    out.append(f"\t\textent compression {fi.compression} ({comp})")
    return out


def print_block_group_item(bg: BlockGroupItem) -> list[str]:
    return [
        f"\t\tblock group used {bg.used} chunk_objectid {bg.chunk_objectid}"
        f" flags {bg_flags_to_str(bg.flags)}"
    ]


def print_free_space_info(fsi: FreeSpaceInfo) -> list[str]:
    return [f"\t\tfree space info extent count {fsi.extent_count} flags {fsi.flags}"]


def print_chunk_item(chunk: ChunkItem) -> list[str]:
    out = [
        f"\t\tlength {chunk.length} owner {chunk.owner} stripe_len {chunk.stripe_len}"
        f" type {bg_flags_to_str(chunk.type)}",
        f"\t\tio_align {chunk.io_align} io_width {chunk.io_width} sector_size {chunk.sector_size}",
        f"\t\tnum_stripes {chunk.num_stripes} sub_stripes {chunk.sub_stripes}",
    ]
    for i, s in enumerate(chunk.stripes):
        out.append(f"\t\t\tstripe {i} devid {s.devid} offset {s.offset}")
        out.append(f"\t\t\tdev_uuid {uuid_unparse(s.dev_uuid)}")
    return out


def print_dev_item(dev: DevItem) -> list[str]:
    return [
        f"\t\tdevid {dev.devid} total_bytes {dev.total_bytes} bytes_used {dev.bytes_used}",
        f"\t\tio_align {dev.io_align} io_width {dev.io_width} sector_size {dev.sector_size}"
        f" type {dev.type}",
        f"\t\tgeneration {dev.generation} start_offset {dev.start_offset}"
        f" dev_group {dev.dev_group}",
        f"\t\tseek_speed {dev.seek_speed} bandwidth {dev.bandwidth}",
        f"\t\tuuid {uuid_unparse(dev.uuid)}",
        f"\t\tfsid {uuid_unparse(dev.fsid)}",
    ]


def print_dev_extent(de: DevExtent) -> list[str]:
    return [
        f"\t\tdev extent chunk_tree {de.chunk_tree}",
        f"\t\tchunk_objectid {de.chunk_objectid} chunk_offset {de.chunk_offset} length {de.length}",
        f"\t\tchunk_tree_uuid {uuid_unparse(de.chunk_tree_uuid)}",
    ]


def _vals(values: tuple[int, ...], n: int) -> list[int]:
    return list(values[:n]) + [0] * max(0, n - len(values))


def print_qgroup_status(q: QgroupItem) -> list[str]:
    version, generation, flags, rescan, enable_gen = _vals(q.values, 5)
    line = (
        f"\t\tversion {version} generation {generation} flags {qgroup_flags_to_str(flags)}"
        f" scan {rescan}"
    )
    if flags & QGROUP_STATUS_FLAG_SIMPLE_MODE:
        line += f" enable_gen {enable_gen}"
    return [line]


def print_qgroup_info(q: QgroupItem) -> list[str]:
    gen, rfer, rfer_c, excl, excl_c = _vals(q.values, 5)
    return [
        f"\t\tgeneration {gen}",
        f"\t\treferenced {rfer} referenced_compressed {rfer_c}",
        f"\t\texclusive {excl} exclusive_compressed {excl_c}",
    ]


def print_qgroup_limit(q: QgroupItem) -> list[str]:
    flags, max_rfer, max_excl, rsv_rfer, rsv_excl = _vals(q.values, 5)
    return [
        f"\t\tflags {flags:x}",
        f"\t\tmax_referenced {_s64(max_rfer)} max_exclusive {_s64(max_excl)}",
        f"\t\trsv_referenced {_s64(rsv_rfer)} rsv_exclusive {_s64(rsv_excl)}",
    ]


def print_uuid_item(item_size: int, u: UuidItem | None) -> list[str]:
    if item_size % 8 or u is None:
        return [f"btrfs: uuid item with illegal size {item_size}!"]
    return [f"\t\tsubvol_id {v}" for v in u.subvol_ids]


def print_dev_stats(st: DevStatsItem, item_size: int) -> list[str]:
    v = _vals(st.values, DEV_STAT_VALUES_MAX)
    out = [
        "\t\tdevice stats",
        f"\t\twrite_errs {v[0]} read_errs {v[1]} flush_errs {v[2]} corruption_errs {v[3]}"
        f" generation {v[4]}",
    ]
    known = DEV_STAT_VALUES_MAX * 8
    if known < item_size:
        # "unknown stats item bytes %u" has no newline: the first unknown value follows
        text = f"\t\tunknown stats item bytes {item_size - known}"
        i = DEV_STAT_VALUES_MAX
        while i * 8 < item_size:
            val = st.values[i] if i < len(st.values) else 0
            text += f"\t\tunknown item {i} offset {i * 8} value {val}\n"
            i += 1
        out += text.rstrip("\n").split("\n")
    return out


def print_persistent_item(item: Item, item_size: int) -> list[str]:
    k = item.key
    out = [
        f"\t\tpersistent item objectid {print_objectid(k.objectid, C.PERSISTENT_ITEM_KEY)}"
        f" offset {k.offset}"
    ]
    if k.objectid == C.DEV_STATS_OBJECTID and isinstance(item, DevStatsItem):
        out += print_dev_stats(item, item_size)
    else:
        out.append(f"\t\tunknown persistent item objectid {k.objectid}")
    return out


def print_disk_balance_args(raw: bytes) -> list[str]:
    """``print_disk_balance_args()`` over a 136-byte ``struct btrfs_disk_balance_args``."""
    (profiles, umin, umax, devid, pstart, pend, vstart, vend, target, flags, lmin, lmax) = (
        struct.unpack_from("<Q2I7Q2I", raw.ljust(136, b"\0"))
    )
    smin, smax = struct.unpack_from("<2I", raw.ljust(136, b"\0"), 80)
    return [
        f"\t\tprofiles {profiles} devid {devid} target {target} flags {flags}",
        f"\t\tusage_min {umin} usage_max {umax} pstart {pstart} pend {pend}",
        f"\t\tvstart {vstart} vend {vend} limit_min {lmin} limit_max {lmax}",
        f"\t\tstripes_min {smin} stripes_max {smax}",
    ]


def print_balance_item(raw: bytes) -> list[str]:
    """``print_balance_item()``: flags u64, then data/meta/sys balance args (136 B each)."""
    raw = raw.ljust(8 + 3 * 136, b"\0")
    out = [f"\t\tbalance status flags {struct.unpack_from('<Q', raw)[0]}"]
    for i, name in enumerate(("DATA", "METADATA", "SYSTEM")):
        out.append(f"\t\t{name}")
        out += print_disk_balance_args(raw[8 + 136 * i : 8 + 136 * (i + 1)])
    return out


def print_temporary_item(key: Key, raw: bytes) -> list[str]:
    out = [
        f"\t\ttemporary item objectid {print_objectid(key.objectid, C.TEMPORARY_ITEM_KEY)}"
        f" offset {key.offset}"
    ]
    if key.objectid == C.BALANCE_OBJECTID:
        out += print_balance_item(raw)
    elif key.objectid == CSUM_CHANGE_OBJECTID:
        if key.offset in CSUM_NAMES:
            out.append(f"\t\ttarget csum type {CSUM_NAMES[key.offset]} ({key.offset})")
        else:
            out.append(f"\t\tunknown csum type {key.offset}")
    else:
        out.append(f"\t\tunknown temporary item objectid {key.objectid}")
    return out


DEV_REPLACE_MODES = {0: "ALWAYS", 1: "AVOID"}
DEV_REPLACE_STATES = {
    0: "NEVER_STARTED",
    1: "STARTED",
    2: "FINISHED",
    3: "CANCELED",
    4: "SUSPENDED",
}


def print_dev_replace_item(dr: DevReplaceItem) -> list[str]:
    """``print_dev_replace_item()``."""
    mode = dr.cont_reading_from_srcdev_mode
    state = dr.replace_state
    mode_s = DEV_REPLACE_MODES.get(mode, f"unknown({mode})")
    state_s = DEV_REPLACE_STATES.get(state, f"unknown({state})")
    started = dr.time_started
    return [
        f"\t\tsrc devid {_s64(dr.src_devid)} cursor left {dr.cursor_left}"
        f" cursor right {dr.cursor_right} mode {mode_s}",
        f"\t\tstate {state_s} write errors {dr.num_write_errors}"
        f" uncorrectable read errors {dr.num_uncorrectable_read_errors}",
        f"\t\tstart time {started} ({strftime_utc(started)})",
        # print-tree.c passes time_started to the "stop time" line too
        f"\t\tstop time {started} ({strftime_utc(started)})",
    ]


def print_raid_stripe_key(raw: bytes) -> list[str]:
    """``print_raid_stripe_key()``: ``struct btrfs_raid_stride`` (devid u64, physical u64)
    entries."""
    return [
        "\t\t\tstripe {} devid {} physical {}".format(i, *struct.unpack_from("<2Q", raw, i * 16))
        for i in range(len(raw) // 16)
    ]


def print_free_space_header(raw: bytes) -> list[str]:
    """``print_free_space_header()``: the v1 space cache header (location key, generation,
    num_entries, num_bitmaps)."""
    raw = raw.ljust(41, b"\0")
    loc = Key.unpack_from(raw, 0)
    gen, entries, bitmaps = struct.unpack_from("<3Q", raw, 17)
    return [
        f"\t\tlocation {btrfs_print_key(loc)}",
        f"\t\tcache generation {gen} entries {entries} bitmaps {bitmaps}",
    ]


# ---- blocks -----------------------------------------------------------------------------


def btrfs_leaf_free_space(blk: TreeBlock) -> int:
    """btrfs-progs ``btrfs_leaf_free_space()``: ``BTRFS_LEAF_DATA_SIZE`` minus
    ``leaf_space_used(leaf, 0, nritems)`` (the data span from the first item's end to the
    last item's start, plus the item headers)."""
    data_size = btrfs_leaf_data_size(len(blk.raw))
    items = blk.items
    if not items:
        return data_size
    used = (items[0].offset + items[0].size) - items[-1].offset
    return data_size - (used + C.BTRFS_ITEM_SIZE * len(items))


def print_header_info(blk: TreeBlock) -> list[str]:
    """``print_header_info()``: the two header lines and the fs/chunk uuids."""
    h = blk.header
    flags = h.flags & ~BACKREF_REV_MASK
    backref_rev = h.flags >> C.BACKREF_REV_SHIFT
    owner = print_objectid(h.owner, 0)
    if h.level:
        free = (btrfs_nodeptrs_per_block(len(blk.raw)) - h.nritems) & 0xFFFFFFFF
        first = (
            f"node {blk.logical} level {h.level} items {h.nritems} free space {free}"
            f" generation {h.generation} owner {owner}"
        )
    else:
        first = (
            f"leaf {h.bytenr} items {h.nritems} free space {btrfs_leaf_free_space(blk)}"
            f" generation {h.generation} owner {owner}"
        )
    kind = "node" if h.level else "leaf"
    return [
        first,
        f"{kind} {h.bytenr} flags 0x{flags:x}({header_flags_to_str(flags)})"
        f" backref revision {backref_rev}",
        f"fs uuid {uuid_unparse(h.fsid)}",
        f"chunk uuid {uuid_unparse(h.chunk_tree_uuid)}",
    ]


def _print_item_body(img: BtrfsImage, blk: TreeBlock, slot: int) -> list[str]:
    """The ``switch (type)`` of ``btrfs_print_leaf()`` for one item."""
    ih = blk.items[slot]
    key = ih.key
    t = key.type
    raw = blk.item_data(slot)
    out: list[str] = []
    if t == 0 and key.objectid == C.FREE_SPACE_OBJECTID:
        out += print_free_space_header(raw)
    # types print-tree prints from the raw bytes, or not at all
    if t == C.ORPHAN_ITEM_KEY:
        return ["\t\torphan item"]
    if t == C.FREE_SPACE_EXTENT_KEY:
        return ["\t\tfree space extent"]
    if t == C.FREE_SPACE_BITMAP_KEY:
        return ["\t\tfree space bitmap"]
    if t == EXTENT_REF_V0_KEY:
        return ["\t\textent ref v0 (deprecated)"]
    if t == CSUM_ITEM_KEY:
        return ["\t\tcsum item"]
    if t == C.STRING_ITEM_KEY:
        return [f"\t\titem data {_cstr(raw, len(raw))}"]
    if t == C.TEMPORARY_ITEM_KEY:
        return print_temporary_item(key, raw)
    if t == C.RAID_STRIPE_KEY:
        return print_raid_stripe_key(raw)
    if t == C.EXTENT_OWNER_REF_KEY:
        (root_id,) = struct.unpack_from("<Q", raw.ljust(8, b"\0"))
        return [f"\t\textent owner root {root_id}"]
    if t in (C.UUID_KEY_SUBVOL, C.UUID_KEY_RECEIVED_SUBVOL) and ih.size % 8:
        return print_uuid_item(ih.size, None)
    if t not in _DECODED_TYPES:
        return out
    try:
        item = blk.item(slot)
    except FormatError as e:
        return [f"\t\t(fsoracle: cannot decode this item: {e.message})"]
    if isinstance(item, InodeItem):
        return print_inode_item(item)
    if isinstance(item, InodeRef):
        return print_inode_ref_item(item)
    if isinstance(item, InodeExtref):
        return print_inode_extref_item(item)
    if isinstance(item, DirItem):
        return print_dir_item(item)
    if isinstance(item, DirLogItem):
        return [f"\t\tdir log end {item.end}"]
    if isinstance(item, RootItem):
        return print_root_item(item)
    if isinstance(item, RootRef):
        return print_root_ref(item, "ref" if t == C.ROOT_REF_KEY else "backref")
    if isinstance(item, ExtentItem):
        return print_extent_item(item)
    if isinstance(item, KeyedRef):
        return print_keyed_ref(item)
    if isinstance(item, CsumItem):
        return print_extent_csum(item, ih.size, img.sb.sectorsize, img.sb.csum_size)
    if isinstance(item, FileExtentItem):
        return print_file_extent_item(item)
    if isinstance(item, BlockGroupItem):
        return print_block_group_item(item)
    if isinstance(item, FreeSpaceInfo):
        return print_free_space_info(item)
    if isinstance(item, ChunkItem):
        return print_chunk_item(item)
    if isinstance(item, DevItem):
        return print_dev_item(item)
    if isinstance(item, DevExtent):
        return print_dev_extent(item)
    if isinstance(item, QgroupItem):
        if t == C.QGROUP_STATUS_KEY:
            return print_qgroup_status(item)
        if t == C.QGROUP_INFO_KEY:
            return print_qgroup_info(item)
        if t == C.QGROUP_LIMIT_KEY:
            return print_qgroup_limit(item)
        return []  # QGROUP_RELATION: key only
    if isinstance(item, UuidItem):
        return print_uuid_item(ih.size, item)
    if isinstance(item, DevStatsItem):
        return print_persistent_item(item, ih.size)
    if isinstance(item, DevReplaceItem):
        return print_dev_replace_item(item)
    return out


_DECODED_TYPES = frozenset(
    {
        C.INODE_ITEM_KEY,
        C.INODE_REF_KEY,
        C.INODE_EXTREF_KEY,
        C.DIR_ITEM_KEY,
        C.DIR_INDEX_KEY,
        C.XATTR_ITEM_KEY,
        C.DIR_LOG_ITEM_KEY,
        C.DIR_LOG_INDEX_KEY,
        C.ROOT_ITEM_KEY,
        C.ROOT_REF_KEY,
        C.ROOT_BACKREF_KEY,
        C.EXTENT_ITEM_KEY,
        C.METADATA_ITEM_KEY,
        C.TREE_BLOCK_REF_KEY,
        C.SHARED_BLOCK_REF_KEY,
        C.EXTENT_DATA_REF_KEY,
        C.SHARED_DATA_REF_KEY,
        C.EXTENT_CSUM_KEY,
        C.EXTENT_DATA_KEY,
        C.BLOCK_GROUP_ITEM_KEY,
        C.FREE_SPACE_INFO_KEY,
        C.CHUNK_ITEM_KEY,
        C.DEV_ITEM_KEY,
        C.DEV_EXTENT_KEY,
        C.QGROUP_STATUS_KEY,
        C.QGROUP_INFO_KEY,
        C.QGROUP_LIMIT_KEY,
        C.QGROUP_RELATION_KEY,
        C.UUID_KEY_SUBVOL,
        C.UUID_KEY_RECEIVED_SUBVOL,
        C.PERSISTENT_ITEM_KEY,
        C.DEV_REPLACE_KEY,
    }
)


def btrfs_print_leaf(img: BtrfsImage, blk: TreeBlock) -> Iterator[str]:
    """``btrfs_print_leaf()``: the header, then per item ``\\titem N key (...) itemoff O
    itemsize S`` and its body."""
    yield from print_header_info(blk)
    for slot, ih in enumerate(blk.items):
        yield f"\titem {slot} {btrfs_print_key(ih.key)} itemoff {ih.offset} itemsize {ih.size}"
        for text in _print_item_body(img, blk, slot):
            yield from text.split("\n")


def btrfs_print_node(blk: TreeBlock) -> Iterator[str]:
    """The node half of ``btrfs_print_tree()``: the header and one line per key pointer."""
    yield from print_header_info(blk)
    for p in blk.ptrs:
        yield f"\t{btrfs_print_key(p.key)} block {p.blockptr} gen {p.generation}"


def btrfs_print_block(img: BtrfsImage, blk: TreeBlock) -> Iterator[str]:
    if blk.is_leaf:
        yield from btrfs_print_leaf(img, blk)
    else:
        yield from btrfs_print_node(blk)


def btrfs_print_tree(img: BtrfsImage, blk: TreeBlock, owner: int | None = None) -> Iterator[str]:
    """``btrfs_print_tree(eb, BTRFS_PRINT_TREE_FOLLOW | BTRFS_PRINT_TREE_BFS)``: the block,
    then ``bfs_print_children()``: every level below it, left to right, nodes before
    leaves. Children are read as ``read_node_slot()`` does (level, generation and first
    key checked); a block met twice is a loop (FormatError)."""
    yield from btrfs_print_block(img, blk)
    seen = {blk.logical}
    level = [blk]
    while level and not level[0].is_leaf:
        nxt: list[TreeBlock] = []
        for parent in level:
            for p in parent.ptrs:
                if p.blockptr in seen:
                    raise FormatError(
                        "tree block", 0, "reached twice while printing (a loop)", p.blockptr
                    )
                seen.add(p.blockptr)
                child = img.read_tree_block(
                    p.blockptr,
                    level=parent.level - 1,
                    generation=p.generation,
                    first_key=p.key,
                    owner_hint=owner,
                )
                yield from btrfs_print_block(img, child)
                if not child.is_leaf:
                    nxt.append(child)
        level = nxt


def _read_root_node(img: BtrfsImage, root: TreeRoot) -> TreeBlock:
    # dump-tree reads a root node with no level or transid expectation
    return img.read_tree_block(root.bytenr, owner_hint=root.objectid)


def _root_item_header(objectid: int, offset: int) -> str:
    """``<label> tree key (OBJECTID ROOT_ITEM OFFSET) `` (note the trailing space)."""
    label = DUMP_TREE_LABELS.get(objectid, "file")
    return f"{label} tree {btrfs_print_key(Key(objectid, C.ROOT_ITEM_KEY, offset))} "


def print_tree(img: BtrfsImage, root: TreeRoot) -> Iterator[str]:
    """What ``btrfs inspect-internal dump-tree -t ID`` prints for one tree after its
    ``btrfs-progs v6.14`` banner: ``root tree`` / ``chunk tree`` / ``log root tree`` /
    ``block group tree`` for the trees it special-cases, else ``<label> tree key (...) ``
    for the ROOT_ITEM, then the tree breadth first."""
    oid = root.objectid
    if oid == C.ROOT_TREE_OBJECTID:
        yield "root tree"
    elif oid == C.CHUNK_TREE_OBJECTID:
        yield "chunk tree"
    elif oid == C.TREE_LOG_OBJECTID and root.offset == 0:
        yield "log root tree"
    elif oid == C.BLOCK_GROUP_TREE_OBJECTID:
        yield "block group tree"
    else:
        yield _root_item_header(oid, root.offset)
    yield from btrfs_print_tree(img, _read_root_node(img, root), oid)


def _log_root_items(img: BtrfsImage) -> Iterator[tuple[Key, RootItem]]:
    """The ROOT_ITEMs of the log root tree (the per-subvolume log trees)."""
    log = img.roots.get((C.TREE_LOG_OBJECTID, 0))
    if log is None:
        return
    for blk, slot, item in img.iter_items(log):
        if blk.items[slot].key.type == C.ROOT_ITEM_KEY and isinstance(item, RootItem):
            yield blk.items[slot].key, item


def print_all(img: BtrfsImage) -> Iterator[str]:
    """What ``btrfs inspect-internal dump-tree IMAGE`` prints after its banner: the root
    tree, the chunk tree, the log root tree, every tree the root tree's ROOT_ITEMs name (in
    key order), the log trees, then ``total bytes``, ``bytes used`` and ``uuid``."""
    for oid, title in (
        (C.ROOT_TREE_OBJECTID, "root tree"),
        (C.CHUNK_TREE_OBJECTID, "chunk tree"),
        (C.TREE_LOG_OBJECTID, "log root tree"),
    ):
        r = img.roots.get((oid, 0))
        if r is None:
            continue
        yield title
        yield from btrfs_print_tree(img, _read_root_node(img, r), oid)
    for k in sorted(img.root_items):
        ri = img.root_items[k]
        yield _root_item_header(*k)
        yield from btrfs_print_tree(img, img.read_tree_block(ri.bytenr, owner_hint=k[0]), k[0])
    for key, ri in _log_root_items(img):
        yield _root_item_header(key.objectid, key.offset)
        yield from btrfs_print_tree(img, img.read_tree_block(ri.bytenr), key.objectid)
    yield from print_footer(img)


def print_footer(img: BtrfsImage) -> Iterator[str]:
    """The three lines dump-tree ends with once it has scanned the ROOT_ITEMs."""
    sb = img.sb
    yield f"total bytes {sb.total_bytes}"
    yield f"bytes used {sb.bytes_used}"
    yield f"uuid {uuid_unparse(sb.fsid)}"


# the trees ``dump-tree -t`` prints before (and instead of) scanning the ROOT_ITEMs
_NOT_IN_ROOT_TREE = (
    C.ROOT_TREE_OBJECTID,
    C.CHUNK_TREE_OBJECTID,
    C.TREE_LOG_OBJECTID,
    C.BLOCK_GROUP_TREE_OBJECTID,
)


def dump_tree(img: BtrfsImage, tree_id: int) -> Iterator[str]:
    """Everything ``btrfs inspect-internal dump-tree -t TREE_ID`` prints after its banner:
    the root, chunk, log root and block group trees alone; for other ids every tree whose
    ROOT_ITEM has that objectid (snapshots of one id, reloc trees...), in key order, then
    the footer (``total bytes``, ``bytes used``, ``uuid``)."""
    if tree_id in _NOT_IN_ROOT_TREE:
        r = img.tree(tree_id, 0) if tree_id != C.BLOCK_GROUP_TREE_OBJECTID else img.tree(tree_id)
        if r is not None:
            yield from print_tree(img, r)
        return
    for k in sorted(img.roots):
        if k[0] == tree_id:
            yield from print_tree(img, img.roots[k])
    yield from print_footer(img)
