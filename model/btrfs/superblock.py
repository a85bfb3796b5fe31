"""``struct btrfs_super_block`` (4096 B at 64 KiB; mirrors at 64 MiB and 256 GiB).

Field offsets are those of ``include/uapi/linux/btrfs_tree.h`` (6.12). The checks in
:func:`btrfs_validate_super` follow ``btrfs_validate_super()`` in ``fs/btrfs/disk-io.c``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from model.btrfs import constants as C
from model.btrfs.csum import CSUM_SIZES, csum_block
from model.btrfs.items import ChunkItem, DevItem, Key
from model.errors import FormatError


@dataclass(frozen=True, slots=True)
class BackupRoot:
    """``struct btrfs_root_backup`` (168 B)."""

    tree_root: int
    tree_root_gen: int
    chunk_root: int
    chunk_root_gen: int
    extent_root: int
    extent_root_gen: int
    fs_root: int
    fs_root_gen: int
    dev_root: int
    dev_root_gen: int
    csum_root: int
    csum_root_gen: int
    total_bytes: int
    bytes_used: int
    num_devices: int
    tree_root_level: int
    chunk_root_level: int
    extent_root_level: int
    fs_root_level: int
    dev_root_level: int
    csum_root_level: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<15Q32x6B10x")


@dataclass(frozen=True, slots=True)
class Superblock:
    """A decoded superblock; ``raw`` keeps the 4096 bytes it came from."""

    csum: bytes
    fsid: bytes
    bytenr: int
    flags: int
    magic: int
    generation: int
    root: int
    chunk_root: int
    log_root: int
    total_bytes: int
    bytes_used: int
    root_dir_objectid: int
    num_devices: int
    sectorsize: int
    nodesize: int
    leafsize: int
    stripesize: int
    sys_chunk_array_size: int
    chunk_root_generation: int
    compat_flags: int
    compat_ro_flags: int
    incompat_flags: int
    csum_type: int
    root_level: int
    chunk_root_level: int
    log_root_level: int
    dev_item: DevItem
    label: bytes
    cache_generation: int
    uuid_tree_generation: int
    metadata_uuid: bytes
    nr_global_roots: int
    sys_chunk_array: bytes
    backup_roots: tuple[BackupRoot, ...]
    raw: bytes

    HEAD: ClassVar[struct.Struct] = struct.Struct("<32s16sQQQQQQQ8xQQQQIIIIIQQQQHBBB")
    TAIL: ClassVar[struct.Struct] = struct.Struct("<256sQQ16sQ216x")
    DEV_ITEM_OFFSET: ClassVar[int] = 201
    LABEL_OFFSET: ClassVar[int] = 299
    SYS_CHUNK_ARRAY_OFFSET: ClassVar[int] = 811
    BACKUP_ROOTS_OFFSET: ClassVar[int] = 2859

    @property
    def csum_size(self) -> int:
        return CSUM_SIZES[self.csum_type]

    @property
    def label_str(self) -> str:
        return self.label.split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def has_metadata_uuid(self) -> bool:
        return bool(self.incompat_flags & C.INCOMPAT_METADATA_UUID)

    @property
    def header_fsid(self) -> bytes:
        """The fsid every tree block header carries (metadata_uuid if set)."""
        return self.metadata_uuid if self.has_metadata_uuid else self.fsid


def btrfs_super_csum_ok(raw: bytes, csum_type: int) -> bool:
    """``btrfs_check_super_csum()``: digest of bytes [32, 4096)."""
    return raw[: C.BTRFS_CSUM_SIZE] == csum_block(csum_type, raw)


def parse_superblock(raw: bytes, where: int = C.SUPER_INFO_OFFSET) -> Superblock:
    """Decode 4096 superblock bytes (no validation beyond what decoding needs)."""
    if len(raw) != C.SUPER_INFO_SIZE:
        raise FormatError("superblock", where, f"{len(raw)} bytes, expected 4096")
    head = Superblock.HEAD.unpack_from(raw, 0)
    dev_item = DevItem.decode(
        Key(C.DEV_ITEMS_OBJECTID, C.DEV_ITEM_KEY, 0),
        raw[Superblock.DEV_ITEM_OFFSET : Superblock.DEV_ITEM_OFFSET + DevItem.SIZE],
        where + Superblock.DEV_ITEM_OFFSET,
    )
    label, cache_gen, uuid_gen, metadata_uuid, nr_global = Superblock.TAIL.unpack_from(
        raw, Superblock.LABEL_OFFSET
    )
    backups = tuple(
        BackupRoot(
            *BackupRoot.STRUCT.unpack_from(
                raw, Superblock.BACKUP_ROOTS_OFFSET + i * BackupRoot.STRUCT.size
            )
        )
        for i in range(C.BTRFS_NUM_BACKUP_ROOTS)
    )
    sca = raw[
        Superblock.SYS_CHUNK_ARRAY_OFFSET : Superblock.SYS_CHUNK_ARRAY_OFFSET
        + C.BTRFS_SYSTEM_CHUNK_ARRAY_SIZE
    ]
    args: list[Any] = [
        *head,
        dev_item,
        label,
        cache_gen,
        uuid_gen,
        metadata_uuid,
        nr_global,
        sca,
        backups,
        bytes(raw),
    ]
    return Superblock(*args)


def btrfs_validate_super(sb: Superblock, mirror: int, where: int) -> None:
    """The checks of ``btrfs_validate_super()`` that make an image unreadable.

    Raises :class:`FormatError` naming the field. (The checksum is checked separately:
    a bad superblock checksum is a reason to refuse the image, as the kernel does.)
    """

    def bad(msg: str) -> FormatError:
        return FormatError(f"superblock (mirror {mirror})", where, msg)

    if sb.magic != C.MAGIC:
        raise bad(f"bad magic 0x{sb.magic:016x}: not a btrfs filesystem")
    if sb.csum_type not in CSUM_SIZES:
        raise bad(f"unknown csum_type {sb.csum_type}")
    if not btrfs_super_csum_ok(sb.raw, sb.csum_type):
        raise bad("superblock checksum mismatch")
    if sb.bytenr != where:
        raise bad(f"bytenr {sb.bytenr} is not the copy's own offset {where}")
    if sb.sectorsize < 4096 or sb.sectorsize > 65536 or sb.sectorsize & (sb.sectorsize - 1):
        raise bad(f"invalid sectorsize {sb.sectorsize}")
    if (
        sb.nodesize < sb.sectorsize
        or sb.nodesize > C.BTRFS_MAX_METADATA_BLOCKSIZE
        or sb.nodesize & (sb.nodesize - 1)
    ):
        raise bad(f"invalid nodesize {sb.nodesize}")
    if sb.root_level >= C.BTRFS_MAX_LEVEL or sb.chunk_root_level >= C.BTRFS_MAX_LEVEL:
        raise bad(f"invalid root level {sb.root_level} / chunk root level {sb.chunk_root_level}")
    for name, v in (("root", sb.root), ("chunk_root", sb.chunk_root)):
        if v % sb.sectorsize:
            raise bad(f"{name} {v} is not aligned to sectorsize {sb.sectorsize}")
    if sb.sys_chunk_array_size > C.BTRFS_SYSTEM_CHUNK_ARRAY_SIZE:
        raise bad(f"sys_chunk_array_size {sb.sys_chunk_array_size} is too large")
    if sb.num_devices == 0:
        raise bad("num_devices is 0")


def btrfs_read_sys_array(sb: Superblock, where: int) -> list[ChunkItem]:
    """``btrfs_read_sys_array()``: the (disk key, chunk) pairs of the SYSTEM chunks."""
    out: list[ChunkItem] = []
    arr = sb.sys_chunk_array[: sb.sys_chunk_array_size]
    p = 0
    base = where + Superblock.SYS_CHUNK_ARRAY_OFFSET
    while p < len(arr):
        if p + C.BTRFS_DISK_KEY_SIZE > len(arr):
            raise FormatError("sys_chunk_array", base + p, "short key")
        key = Key.unpack_from(arr, p)
        p += C.BTRFS_DISK_KEY_SIZE
        if key.type != C.CHUNK_ITEM_KEY:
            raise FormatError("sys_chunk_array", base + p, f"unexpected item type {key.type}")
        if p + ChunkItem.STRUCT.size > len(arr):
            raise FormatError("sys_chunk_array", base + p, "short chunk item")
        num_stripes = struct.unpack_from("<H", arr, p + 44)[0]
        size = ChunkItem.item_size(num_stripes)
        if num_stripes == 0 or p + size > len(arr):
            raise FormatError(
                "sys_chunk_array", base + p, f"chunk with {num_stripes} stripes does not fit"
            )
        chunk = ChunkItem.decode(key, arr[p : p + size], base + p)
        if not chunk.type & C.BLOCK_GROUP_SYSTEM:
            raise FormatError(
                "sys_chunk_array", base + p, f"chunk type 0x{chunk.type:x} is not SYSTEM"
            )
        out.append(chunk)
        p += size
    return out
