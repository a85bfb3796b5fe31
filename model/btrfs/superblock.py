"""``struct btrfs_super_block`` (4096 B at 64 KiB; mirrors at 64 MiB and 256 GiB).

Field offsets are those of ``include/uapi/linux/btrfs_tree.h`` (6.12).

Validation is data: :data:`VALIDATE_SUPER_RULES` holds ``btrfs_validate_super()``
(``fs/btrfs/disk-io.c``, Linux 6.12.117) as one :class:`SuperRule` per check, in the
kernel's order, with its severity and the line the kernel prints;
:func:`open_ctree_super_rules` puts ``open_ctree``'s own superblock checks around it
(magic and offset first, checksum type and checksum, tree root bytenr). Rules flagged
``fatal`` make an image unreadable (:func:`open_ctree_validate_super` raises
:class:`FormatError`); the others are reported by the checker. A table for another kernel
is another tuple of rows. :data:`PROGS_CHECK_SUPER_RULES` holds what btrfs-progs'
``btrfs_check_super()`` refuses and the kernel accepts.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from model.btrfs import constants as C
from model.btrfs.csum import CSUM_SIZES, csum_block
from model.btrfs.items import ChunkItem, DevItem, Key
from model.errors import FormatError
from model.linux import PAGE_SIZE, U64


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


# ---- superblock validation: the rules as data --------------------------------------------

# the page size btrfs_validate_super compares sectorsize with (x86-64, arm64 with 4K pages)
# fs/btrfs/disk-io.c
BTRFS_SUPER_FLAG_SUPP: Final = (
    C.HEADER_FLAG_WRITTEN
    | C.HEADER_FLAG_RELOC
    | C.SUPER_FLAG_ERROR
    | C.SUPER_FLAG_SEEDING
    | C.SUPER_FLAG_METADUMP
    | C.SUPER_FLAG_METADUMP_V2
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class FsDevices:
    """What ``btrfs_validate_super`` reads from ``fs_info->fs_devices``: the fsid and
    metadata_uuid the device scan registered for the filesystem, and ``temp_fsid`` (a
    cloned single device given a random fsid to mount beside its original)."""

    fsid: bytes
    metadata_uuid: bytes
    temp_fsid: bool = False


def device_list_add(sb: Superblock) -> FsDevices:
    """``device_list_add()`` (``fs/btrfs/volumes.c``) for a device scanned alone: a new
    ``fs_devices`` with the superblock's fsid (``alloc_fs_devices``), and its
    metadata_uuid when the METADATA_UUID incompat bit is set, else the fsid again."""
    return FsDevices(sb.fsid, sb.metadata_uuid if sb.has_metadata_uuid else sb.fsid)


@dataclass(frozen=True, slots=True)
class SuperFacts:
    """What a rule looks at: the superblock, which copy it is (``mirror`` 0, 1 or 2; -1
    skips the offset check, as ``btrfs_validate_write_super`` does), the ``fs_devices`` it
    is compared with, and the page size."""

    sb: Superblock
    mirror: int
    fs_devices: FsDevices
    page_size: int = PAGE_SIZE


def _no_args(f: SuperFacts) -> tuple[int | bytes, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class SuperRule:
    """One superblock check: its ``name``, the ``function`` that makes it, its
    ``severity`` (``error``: the mount or the tool refuses the filesystem; ``warning``:
    printed, accepted), ``violated(facts)``, and the line printed when it is violated:
    the printf format ``fmt`` and its ``args(facts)``. ``fatal``: the reader cannot read
    an image that violates it (:func:`open_ctree_validate_super` raises
    :class:`FormatError`); the other rules' violations are findings."""

    name: str
    function: str
    severity: Severity
    violated: Callable[[SuperFacts], bool]
    fmt: str
    args: Callable[[SuperFacts], tuple[int | bytes, ...]] = _no_args
    fatal: bool = False

    def message(self, f: SuperFacts) -> str:
        return printk(self.fmt, self.args(f))


@dataclass(frozen=True, slots=True)
class SuperViolation:
    """A rule a superblock breaks, and the line the rule's function prints for it."""

    rule: SuperRule
    message: str


_PRINTK_CONV = re.compile(r"%(?:pU|(?:ll|l|z)?[udx])")


def printk(fmt: str, args: Sequence[int | bytes]) -> str:
    """``fmt`` filled in as the kernel's ``vsnprintf`` does for the conversions the rules
    use: ``%d %u %lu %llu %zu`` in decimal, ``%llx`` in lower-case hex, ``%pU`` a 16-byte
    UUID in lower case (``5a154e14-84fb-468c-896f-20539bf88b33``)."""
    vals = iter(args)

    def conv(m: re.Match[str]) -> str:
        v = next(vals)
        if m.group(0) == "%pU":
            assert isinstance(v, bytes)
            return str(uuid.UUID(bytes=v))
        assert isinstance(v, int)
        return format(v, "x") if m.group(0).endswith("x") else str(v)

    out = _PRINTK_CONV.sub(conv, fmt)
    assert next(vals, None) is None, f"too many arguments for {fmt!r}"
    return out


def _is_power_of_2(n: int) -> bool:
    """``is_power_of_2()``: 0 is not."""
    return n != 0 and n & (n - 1) == 0


def _is_aligned(x: int, a: int) -> bool:
    """``IS_ALIGNED(x, a)`` on a u64: ``(x & (a - 1)) == 0`` (with ``a`` 0 only 0 is)."""
    return x & ((a - 1) & U64) == 0


def btrfs_sb_fsid_ptr(sb: Superblock) -> bytes:
    """``btrfs_sb_fsid_ptr()``: metadata_uuid with the METADATA_UUID bit, else fsid."""
    return sb.metadata_uuid if sb.has_metadata_uuid else sb.fsid


_V = "btrfs_validate_super"
_OPEN = "open_ctree"

# btrfs_validate_super() of Linux 6.12.117 (fs/btrfs/disk-io.c), one row per check, in its
# order. The rescue=ignoresuperflags mount option (flags outside SUPP only reported) is not
# modelled.
VALIDATE_SUPER_RULES: tuple[SuperRule, ...] = (
    SuperRule(
        "magic", _V, "error", lambda f: f.sb.magic != C.MAGIC, "no valid FS found", fatal=True
    ),
    SuperRule(
        "flags",
        _V,
        "error",
        lambda f: bool(f.sb.flags & ~BTRFS_SUPER_FLAG_SUPP),
        "unrecognized or unsupported super flag 0x%llx",
        lambda f: (f.sb.flags & ~BTRFS_SUPER_FLAG_SUPP & U64,),
    ),
    SuperRule(
        "root-level",
        _V,
        "error",
        lambda f: f.sb.root_level >= C.BTRFS_MAX_LEVEL,
        "tree_root level too big: %d >= %d",
        lambda f: (f.sb.root_level, C.BTRFS_MAX_LEVEL),
        fatal=True,
    ),
    SuperRule(
        "chunk-root-level",
        _V,
        "error",
        lambda f: f.sb.chunk_root_level >= C.BTRFS_MAX_LEVEL,
        "chunk_root level too big: %d >= %d",
        lambda f: (f.sb.chunk_root_level, C.BTRFS_MAX_LEVEL),
        fatal=True,
    ),
    SuperRule(
        "log-root-level",
        _V,
        "error",
        lambda f: f.sb.log_root_level >= C.BTRFS_MAX_LEVEL,
        "log_root level too big: %d >= %d",
        lambda f: (f.sb.log_root_level, C.BTRFS_MAX_LEVEL),
    ),
    SuperRule(
        "sectorsize",
        _V,
        "error",
        lambda f: (
            not _is_power_of_2(f.sb.sectorsize)
            or f.sb.sectorsize < 4096
            or f.sb.sectorsize > C.BTRFS_MAX_METADATA_BLOCKSIZE
        ),
        "invalid sectorsize %llu",
        lambda f: (f.sb.sectorsize,),
        fatal=True,
    ),
    SuperRule(
        "sectorsize-page-size",
        _V,
        "error",
        lambda f: (
            f.sb.sectorsize > f.page_size
            or (f.sb.sectorsize != 4096 and f.sb.sectorsize != f.page_size)
        ),
        "sectorsize %llu not yet supported for page size %lu",
        lambda f: (f.sb.sectorsize, f.page_size),
    ),
    SuperRule(
        "nodesize",
        _V,
        "error",
        lambda f: (
            not _is_power_of_2(f.sb.nodesize)
            or f.sb.nodesize < f.sb.sectorsize
            or f.sb.nodesize > C.BTRFS_MAX_METADATA_BLOCKSIZE
        ),
        "invalid nodesize %llu",
        lambda f: (f.sb.nodesize,),
        fatal=True,
    ),
    SuperRule(
        "leafsize",
        _V,
        "error",
        lambda f: f.sb.nodesize != f.sb.leafsize,
        "invalid leafsize %u, should be %llu",
        lambda f: (f.sb.leafsize, f.sb.nodesize),
    ),
    SuperRule(
        "root-unaligned",
        _V,
        "error",
        lambda f: not _is_aligned(f.sb.root, f.sb.sectorsize),
        "tree_root block unaligned: %llu",
        lambda f: (f.sb.root,),
        fatal=True,
    ),
    SuperRule(
        "chunk-root-unaligned",
        _V,
        "error",
        lambda f: not _is_aligned(f.sb.chunk_root, f.sb.sectorsize),
        "chunk_root block unaligned: %llu",
        lambda f: (f.sb.chunk_root,),
        fatal=True,
    ),
    SuperRule(
        "log-root-unaligned",
        _V,
        "error",
        lambda f: not _is_aligned(f.sb.log_root, f.sb.sectorsize),
        "log_root block unaligned: %llu",
        lambda f: (f.sb.log_root,),
    ),
    SuperRule(
        "fsid",
        _V,
        "error",
        lambda f: not f.fs_devices.temp_fsid and f.fs_devices.fsid != f.sb.fsid,
        "superblock fsid doesn't match fsid of fs_devices: %pU != %pU",
        lambda f: (f.sb.fsid, f.fs_devices.fsid),
    ),
    SuperRule(
        "metadata-uuid",
        _V,
        "error",
        lambda f: f.fs_devices.metadata_uuid != btrfs_sb_fsid_ptr(f.sb),
        "superblock metadata_uuid doesn't match metadata uuid of fs_devices: %pU != %pU",
        lambda f: (btrfs_sb_fsid_ptr(f.sb), f.fs_devices.metadata_uuid),
    ),
    SuperRule(
        "dev-item-fsid",
        _V,
        "error",
        lambda f: f.fs_devices.metadata_uuid != f.sb.dev_item.fsid,
        "dev_item UUID does not match metadata fsid: %pU != %pU",
        lambda f: (f.fs_devices.metadata_uuid, f.sb.dev_item.fsid),
    ),
    SuperRule(
        "block-group-tree-features",
        _V,
        "error",
        lambda f: (
            bool(f.sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE)
            and (
                not f.sb.compat_ro_flags & C.COMPAT_RO_FREE_SPACE_TREE_VALID
                or not f.sb.incompat_flags & C.INCOMPAT_NO_HOLES
            )
        ),
        "block-group-tree feature requires free-space-tree and no-holes",
    ),
    SuperRule(
        "bytes-used",
        _V,
        "error",
        lambda f: f.sb.bytes_used < 6 * f.sb.nodesize,
        "bytes_used is too small %llu",
        lambda f: (f.sb.bytes_used,),
    ),
    SuperRule(
        "stripesize",
        _V,
        "error",
        lambda f: not _is_power_of_2(f.sb.stripesize),
        "invalid stripesize %u",
        lambda f: (f.sb.stripesize,),
    ),
    SuperRule(
        "num-devices-suspicious",
        _V,
        "warning",
        lambda f: f.sb.num_devices > 1 << 31,
        "suspicious number of devices: %llu",
        lambda f: (f.sb.num_devices,),
    ),
    SuperRule(
        "num-devices-zero",
        _V,
        "error",
        lambda f: f.sb.num_devices == 0,
        "number of devices is 0",
        fatal=True,
    ),
    SuperRule(
        "super-offset",
        _V,
        "error",
        lambda f: f.mirror >= 0 and f.sb.bytenr != C.btrfs_sb_offset(f.mirror),
        "super offset mismatch %llu != %llu",
        lambda f: (f.sb.bytenr, C.btrfs_sb_offset(f.mirror)),
        fatal=True,
    ),
    SuperRule(
        "sys-array-too-big",
        _V,
        "error",
        lambda f: f.sb.sys_chunk_array_size > C.BTRFS_SYSTEM_CHUNK_ARRAY_SIZE,
        "system chunk array too big %u > %u",
        lambda f: (f.sb.sys_chunk_array_size, C.BTRFS_SYSTEM_CHUNK_ARRAY_SIZE),
        fatal=True,
    ),
    SuperRule(
        "sys-array-too-small",
        _V,
        "error",
        # sizeof(struct btrfs_chunk): the chunk with its one struct btrfs_stripe
        lambda f: f.sb.sys_chunk_array_size < C.BTRFS_DISK_KEY_SIZE + ChunkItem.item_size(1),
        "system chunk array too small %u < %zu",
        lambda f: (f.sb.sys_chunk_array_size, C.BTRFS_DISK_KEY_SIZE + ChunkItem.item_size(1)),
        fatal=True,  # without one SYSTEM chunk the chunk tree cannot be found
    ),
    SuperRule(
        "generation-chunk-root",
        _V,
        "warning",
        lambda f: f.sb.generation < f.sb.chunk_root_generation,
        "suspicious: generation < chunk_root_generation: %llu < %llu",
        lambda f: (f.sb.generation, f.sb.chunk_root_generation),
    ),
    SuperRule(
        "generation-cache",
        _V,
        "warning",
        lambda f: f.sb.generation < f.sb.cache_generation and f.sb.cache_generation != U64,
        "suspicious: generation < cache_generation: %llu < %llu",
        lambda f: (f.sb.generation, f.sb.cache_generation),
    ),
)


OPEN_CTREE_CSUM_RULES: tuple[SuperRule, ...] = (
    SuperRule(
        "csum-type",
        _OPEN,
        "error",
        lambda f: f.sb.csum_type not in CSUM_SIZES,
        "unsupported checksum algorithm: %u",
        lambda f: (f.sb.csum_type,),
        fatal=True,
    ),
    SuperRule(
        "csum",
        _OPEN,
        "error",
        lambda f: (
            f.sb.csum_type in CSUM_SIZES and not btrfs_super_csum_ok(f.sb.raw, f.sb.csum_type)
        ),
        "superblock checksum mismatch",
        fatal=True,
    ),
)
OPEN_CTREE_ROOT_RULES: tuple[SuperRule, ...] = (
    SuperRule(
        "root-bytenr-zero",
        _OPEN,
        "error",
        lambda f: f.sb.root == 0,
        "invalid superblock tree root bytenr",
        fatal=True,
    ),
)


def _rule(rules: Sequence[SuperRule], name: str) -> SuperRule:
    return next(r for r in rules if r.name == name)


def open_ctree_super_rules(validate: Sequence[SuperRule]) -> tuple[SuperRule, ...]:
    """Every superblock check ``open_ctree()`` makes, in the order it makes them, around
    the ``btrfs_validate_super`` rows ``validate``:

    1. ``btrfs_read_dev_one_super()``: a copy without the magic, or whose bytenr is not
       its own offset, is not taken for a superblock (the same conditions as
       ``validate``'s ``magic`` and ``super-offset`` rows, checked first);
    2. ``open_ctree()``: "unsupported checksum algorithm", then "superblock checksum
       mismatch";
    3. ``btrfs_validate_mount_super()``: ``validate`` (the rows above not repeated);
    4. ``open_ctree()``: a tree root at 0 ("invalid superblock tree root bytenr").
    """
    first = (_rule(validate, "magic"), _rule(validate, "super-offset"))
    return (
        *first,
        *OPEN_CTREE_CSUM_RULES,
        *(r for r in validate if r not in first),
        *OPEN_CTREE_ROOT_RULES,
    )


# btrfs-progs 6.14 btrfs_check_super() (kernel-shared/disk-io.c): its checks the kernel
# does not make (btrfs check, dump-tree... refuse the filesystem; the kernel mounts it).
# Observed with `btrfs check` on mutated mkfs.btrfs images: "ERROR: invalid stripesize 1",
# "ERROR: invalid total_bytes 0", each followed by "superblock checksum matches but it has
# invalid members".
_PROGS = "btrfs_check_super (btrfs-progs)"
PROGS_CHECK_SUPER_RULES: tuple[SuperRule, ...] = (
    SuperRule(
        "progs-total-bytes-zero",
        _PROGS,
        "error",
        lambda f: f.sb.total_bytes == 0,
        "invalid total_bytes 0",
    ),
    SuperRule(
        "progs-stripesize",
        _PROGS,
        "error",
        lambda f: f.sb.stripesize != 4096 and f.sb.stripesize != f.sb.sectorsize,
        "invalid stripesize %u",
        lambda f: (f.sb.stripesize,),
    ),
)


def apply_super_rules(rules: Sequence[SuperRule], facts: SuperFacts) -> list[SuperViolation]:
    """The rules ``facts`` violate, in the rules' order, each with its printed line."""
    return [SuperViolation(r, r.message(facts)) for r in rules if r.violated(facts)]


def btrfs_validate_super(
    sb: Superblock,
    mirror: int,
    fs_devices: FsDevices | None = None,
    *,
    page_size: int = PAGE_SIZE,
    rules: Sequence[SuperRule] = VALIDATE_SUPER_RULES,
) -> list[SuperViolation]:
    """``btrfs_validate_super()``: every rule of ``rules`` the superblock violates, in
    order (the kernel, too, checks them all before it fails). ``fs_devices`` defaults to
    what :func:`device_list_add` makes of this superblock scanned alone."""
    fd = fs_devices if fs_devices is not None else device_list_add(sb)
    return apply_super_rules(rules, SuperFacts(sb, mirror, fd, page_size))


def open_ctree_validate_super(
    sb: Superblock,
    mirror: int,
    where: int,
    *,
    rules: Sequence[SuperRule] = VALIDATE_SUPER_RULES,
) -> list[SuperViolation]:
    """The superblock checks of ``open_ctree()`` (:func:`open_ctree_super_rules` around
    ``rules``) for a device scanned alone: raises :class:`FormatError` for the first
    violated rule that is ``fatal`` (the image cannot be read), and returns the
    violations of the others (errors that make the kernel refuse the mount, and
    warnings), for the checker to report."""
    facts = SuperFacts(sb, mirror, device_list_add(sb))
    out: list[SuperViolation] = []
    for rule in open_ctree_super_rules(rules):  # in order: a fatal one stops the reading
        if not rule.violated(facts):
            continue
        msg = rule.message(facts)
        if rule.fatal:
            raise FormatError(f"superblock (mirror {mirror})", where, f"{msg} [{rule.name}]")
        out.append(SuperViolation(rule, msg))
    return out


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
        num_stripes = ChunkItem.STRUCT.unpack_from(arr, p)[7]
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
