"""The image writer: a complete btrfs filesystem built by the model (mkfs in Python).

What it writes, and whose rules it follows:

* Chunks sized as the kernel's chunk allocator sizes them (``calc_chunk_size`` in
  ``fs/btrfs/space-info.c``, ``decide_stripe_size_regular`` and
  ``init_alloc_chunk_ctl_policy_regular`` in ``fs/btrfs/volumes.c``, 6.12): SYSTEM 32 MiB,
  METADATA 1 GiB above 50 GiB of device (else 256 MiB), DATA up to 10 GiB with stripes of at
  most 1 GiB — all capped at 10 % of the device and rounded up to 16 MiB when the cap
  applies. SYSTEM and METADATA are DUP, DATA SINGLE. Dev extents are placed first-fit from
  1 MiB (``find_free_dev_extent``), logical addresses follow each other from 1 MiB
  (``find_next_chunk``). Metadata chunks come first in logical order, then data (a kernel
  populating the filesystem would interleave a second metadata chunk among data chunks).
* Superblock copies (``btrfs_sb_offset``) and the 64 KiB stripes they occupy inside block
  groups are excluded from allocation (``exclude_super_stripes``).
* Files: ``--fill`` bytes of preallocated extents of ``--extent-size`` (as ``fallocate``
  makes them: PREALLOC file extents, inode flag PREALLOC, nbytes = size), spread over
  ``--files`` files named ``dNNN/fNNNNNN`` (1000 per directory), inode numbers handed out in
  creation order from 257 as ``btrfs_find_free_objectid`` does, data extents allocated
  first-fit in address order (``find_free_extent`` without clustering).
* Trees: root, chunk, dev, extent, fs, csum (empty: no data written), free space (the exact
  complement of used space), uuid, data-reloc and, per layout, the block group tree.
  Leaves are packed full, as the kernel's ``split_leaf`` + ``push_leaf_left`` leave them
  under append-ordered inserts (measured on kernel-populated images: extent tree leaves
  99 % full); nodes likewise.
* Layouts: ``extent-tree`` (BLOCK_GROUP_ITEMs in the extent tree), ``bg-tree`` (the merged
  block group tree: compat_ro BLOCK_GROUP_TREE, which 6.12 requires with
  FREE_SPACE_TREE_VALID and NO_HOLES), ``skinny-bg-tree`` (bg-tree plus incompat
  :data:`~model.btrfs.constants.INCOMPAT_SKINNY_BG_TREE`, items (start, 193, used) with
  empty bodies).

The writer is deterministic: UUIDs and times derive from ``seed``.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from model.blocksource import BlockSink
from model.btrfs import constants as C
from model.btrfs.check_free_space import BgRange, exclude_super_stripes
from model.btrfs.csum import btrfs_name_hash, csum_block
from model.btrfs.ctree import BtrfsTree, ExtentBuffer
from model.btrfs.encode import (
    encode_block_group_item,
    encode_chunk_item,
    encode_dev_extent,
    encode_dev_item,
    encode_extent_item,
    encode_free_space_info,
    encode_inode_item,
    encode_root_item,
)
from model.btrfs.globalroots import calculate_global_root_id
from model.btrfs.items import (
    BlockGroupItem,
    ChunkItem,
    DevExtent,
    DevItem,
    DirItem,
    ExtentItem,
    FileExtentItem,
    FreeSpaceInfo,
    InlineRef,
    InodeItem,
    InodeRef,
    Key,
    RootItem,
    Stripe,
    Timespec,
)
from model.btrfs.superblock import Superblock
from model.btrfs.treeblock_write import serialize_leaf, serialize_node
from model.linux import SZ_1G, U64

SZ_1M = 1 << 20
SZ_16M = 16 << 20
SZ_32M = 32 << 20
SZ_256M = 256 << 20
BTRFS_MAX_DATA_CHUNK_SIZE = 10 * SZ_1G

LAYOUTS = ("extent-tree", "bg-tree", "skinny-bg-tree", "extent-tree-v2")
# the layouts a kernel mounts (stock 6.x: the first two; ours patched: skinny-bg-tree);
# extent-tree-v2 needs a BTRFS_DEBUG kernel
KERNEL_LAYOUTS = LAYOUTS[:3]
FILES_PER_DIR = 1000
GENERATION = 8
EPOCH = 1_700_000_000
MODE_DIR = 0o040755
MODE_FILE = 0o100644
DEFAULT_INCOMPAT = (
    C.INCOMPAT_MIXED_BACKREF
    | C.INCOMPAT_BIG_METADATA
    | C.INCOMPAT_EXTENDED_IREF
    | C.INCOMPAT_SKINNY_METADATA
    | C.INCOMPAT_NO_HOLES
)


class MkfsError(ValueError):
    """The configuration cannot be built (the message says why)."""


@dataclass(frozen=True)
class MkfsConfig:
    size: int
    nodesize: int = 16384
    sectorsize: int = 4096
    csum_type: int = C.CSUM_TYPE_CRC32
    layout: str = "extent-tree"
    fill: int = 0
    extent_size: int = 4 * SZ_1M
    files: int | None = None
    seed: int = 0
    label: str = ""
    global_roots: int = 1

    def validate(self) -> None:
        if self.layout not in LAYOUTS:
            raise MkfsError(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        for name, v in (("nodesize", self.nodesize), ("sectorsize", self.sectorsize)):
            if v & (v - 1) or v < 4096 or v > 65536:
                raise MkfsError(f"{name} {v} must be a power of two in [4096, 65536]")
        if self.nodesize < self.sectorsize:
            raise MkfsError("nodesize must be at least sectorsize")
        if self.size < 256 * SZ_1M:
            raise MkfsError(f"size {self.size} is below the 256 MiB this writer needs")
        if self.size > MAX_FILE_SIZE:
            raise MkfsError(f"size {self.size} is above {MAX_FILE_SIZE}, the largest file size")
        if self.extent_size <= 0 or self.extent_size % self.sectorsize:
            raise MkfsError("extent size must be a positive multiple of sectorsize")
        if self.extent_size > C.BTRFS_MAX_EXTENT_SIZE:
            raise MkfsError("extent size above BTRFS_MAX_EXTENT_SIZE (128 MiB)")
        if self.fill % self.extent_size:
            raise MkfsError("fill must be a multiple of the extent size")
        if self.files is not None and self.files < 0:
            raise MkfsError("files must be >= 0")
        if not 1 <= self.global_roots <= 1024:
            raise MkfsError("global roots must be in [1, 1024]")
        if self.global_roots > 1 and self.layout != "extent-tree-v2":
            raise MkfsError("several global roots need --layout extent-tree-v2")

    @property
    def n_extents(self) -> int:
        return self.fill // self.extent_size

    @property
    def n_files(self) -> int:
        return self.n_extents if self.files is None else self.files


# the largest size of a file (off_t is signed 64-bit; btrfs' own limit, total_bytes, is u64)
MAX_FILE_SIZE = (1 << 63) - 1


def _uuid(seed: int, what: str) -> bytes:
    return hashlib.sha256(f"fsoracle-mkfs-{seed}-{what}".encode()).digest()[:16]


# ---- chunk allocation ---------------------------------------------------------------


@dataclass
class Chunk:
    """A chunk/block group being laid out: logical start, length, type flags, and the
    physical start of each stripe (all on devid 1)."""

    start: int
    length: int
    flags: int
    stripes: list[int]
    used: int = 0
    excluded: list[tuple[int, int]] = field(default_factory=list)  # super stripes

    @property
    def end(self) -> int:
        return self.start + self.length


def calc_chunk_size(total_bytes: int, flags: int) -> int:
    """``calc_chunk_size()`` (space-info.c, non-zoned)."""
    if flags & C.BLOCK_GROUP_DATA:
        return BTRFS_MAX_DATA_CHUNK_SIZE
    if flags & C.BLOCK_GROUP_SYSTEM:
        return SZ_32M
    return SZ_1G if total_bytes > 50 * SZ_1G else SZ_256M


def round_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def decide_stripe_size_regular(
    total_bytes: int, flags: int, max_avail: int
) -> tuple[int, int, int]:
    """(stripe_size, num_stripes, chunk_size) for one device, ``decide_stripe_size_regular``
    with ``init_alloc_chunk_ctl_policy_regular``'s limits. DUP: two stripes, one copy of
    data."""
    dup = not flags & C.BLOCK_GROUP_DATA
    dev_stripes = 2 if dup else 1
    max_chunk_size = min(calc_chunk_size(total_bytes, flags), total_bytes // 10)
    stripe_size = max_avail // dev_stripes
    num_stripes = dev_stripes
    data_stripes = 1
    if stripe_size * data_stripes > max_chunk_size:
        stripe_size = min(round_up(max_chunk_size // data_stripes, SZ_16M), stripe_size)
    stripe_size = min(stripe_size, SZ_1G)
    stripe_size -= stripe_size % C.BTRFS_STRIPE_LEN
    return stripe_size, num_stripes, stripe_size * data_stripes


class ChunkAllocator:
    """Chunks on one device of ``total_bytes``: dev extents first-fit from 1 MiB, logical
    addresses one after another from 1 MiB."""

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.next_physical = C.BTRFS_DEVICE_RANGE_RESERVED
        self.next_logical = C.BTRFS_DEVICE_RANGE_RESERVED
        self.chunks: list[Chunk] = []

    def btrfs_create_chunk(self, flags: int) -> Chunk:
        avail = self.total - self.next_physical
        stripe, n, chunk_size = decide_stripe_size_regular(self.total, flags, avail)
        if stripe < C.BTRFS_STRIPE_LEN:
            raise MkfsError(
                f"device of {self.total} bytes is full: no room for another chunk"
                f" (type 0x{flags:x})"
            )
        stripes = [self.next_physical + i * stripe for i in range(n)]
        self.next_physical += n * stripe
        profile = 0 if flags & C.BLOCK_GROUP_DATA else C.BLOCK_GROUP_DUP
        c = Chunk(self.next_logical, chunk_size, flags | profile, stripes)
        self.next_logical += chunk_size
        c.excluded = super_stripes(c)
        self.chunks.append(c)
        return c


def chunk_item(c: Chunk, sectorsize: int, dev_uuid: bytes) -> ChunkItem:
    """The chunk item of ``c``, its stripes on devid 1 of ``dev_uuid``."""
    return ChunkItem(
        Key(C.FIRST_CHUNK_TREE_OBJECTID, C.CHUNK_ITEM_KEY, c.start),
        c.length,
        C.EXTENT_TREE_OBJECTID,
        C.BTRFS_STRIPE_LEN,
        c.flags,
        C.BTRFS_STRIPE_LEN,
        C.BTRFS_STRIPE_LEN,
        sectorsize,
        len(c.stripes),
        1,
        tuple(Stripe(1, s, dev_uuid) for s in c.stripes),
    )


def super_stripes(c: Chunk) -> list[tuple[int, int]]:
    """(logical, length) of each range of ``c`` that holds a superblock copy (64 KiB,
    ``btrfs_rmap_block``'s stripe length), as :func:`exclude_super_stripes` finds them:
    never allocated, never free."""
    # exclude_super_stripes reads the chunk's type, length and stripes, not its sector
    # size or device uuid
    item = chunk_item(c, C.SUPER_INFO_SIZE, bytes(16))
    bg = BgRange(c.start, c.length, c.flags)
    return [(start, end - start) for start, end in exclude_super_stripes(bg, item)]


class RangeAllocator:
    """First-fit allocation inside one block group, skipping excluded ranges: the order
    ``find_free_extent`` hands out space when nothing is ever freed."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.cursor = chunk.start
        self.allocated: list[tuple[int, int]] = []

    def alloc(self, size: int) -> int | None:
        pos = self.cursor
        while True:
            if pos + size > self.chunk.end:
                return None
            clash = next(
                (e for e in self.chunk.excluded if e[0] < pos + size and pos < e[0] + e[1]),
                None,
            )
            if clash is None:
                break
            pos = clash[0] + clash[1]
        self.cursor = pos + size
        self.allocated.append((pos, size))
        self.chunk.used += size
        return pos


# ---- tree blocks ----------------------------------------------------------------------


Items = list[tuple[Key, bytes]]


def build_tree(items: Items, nodesize: int, owner: int = 0, generation: int = 0) -> ExtentBuffer:
    """A tree over sorted items, packed as append-ordered inserts leave it
    (:meth:`model.btrfs.ctree.BtrfsTree.from_sorted_items`): full leaves, full nodes, never
    a node with one pointer. Returns the root; addresses are assigned by the caller.

    Keys that do not strictly increase (two items derived from one bad input, say) are a
    :class:`MkfsError`: the writer cannot lay them out."""
    for (a, _), (b, _) in itertools.pairwise(items):
        if not a < b:
            raise MkfsError(f"tree {owner}: key {b} does not follow {a} (keys must increase)")
    return BtrfsTree.from_sorted_items(
        items, nodesize, owner, transid=generation + 1, cow=False, allocator=lambda: 0
    ).node


def tree_blocks(root: ExtentBuffer) -> list[ExtentBuffer]:
    """Breadth-first: the root first."""
    out = [root]
    i = 0
    while i < len(out):
        out.extend(out[i].children)
        i += 1
    return out


def level_counts(item_sizes: Sequence[int], nodesize: int) -> tuple[int, ...]:
    """Blocks per level (index 0 = leaves) that ``build_tree`` makes for items of these
    data sizes."""
    cap = nodesize - C.BTRFS_HEADER_SIZE
    leaves = 1
    used = 0
    first = True
    for s in item_sizes:
        need = C.BTRFS_ITEM_SIZE + s
        if not first and used + need > cap:
            leaves += 1
            used = 0
        used += need
        first = False
    counts = [leaves]
    per_node = cap // C.BTRFS_KEY_PTR_SIZE
    while counts[-1] > 1:
        counts.append((counts[-1] + per_node - 1) // per_node)
    return tuple(counts)


def bfs_levels(counts: Sequence[int]) -> list[int]:
    """Levels of a tree's blocks in ``tree_blocks`` (breadth-first) order."""
    return [lvl for lvl in range(len(counts) - 1, -1, -1) for _ in range(counts[lvl])]


def serialize_block(b: ExtentBuffer, spec: FsSpec) -> bytes:
    """A built block's on-disk bytes (checksum included)."""
    common = dict(
        nodesize=spec.nodesize, bytenr=b.bytenr, generation=spec.generation, owner=b.owner,
        fsid=spec.fsid, chunk_tree_uuid=spec.chunk_uuid, csum_type=spec.csum_type,
    )  # fmt: skip
    if b.level == 0:
        return serialize_leaf(b.items(), **common)  # type: ignore[arg-type]
    ptrs = [(k, c.bytenr, spec.generation) for k, c in zip(b.keys, b.children, strict=True)]
    return serialize_node(ptrs, level=b.level, **common)  # type: ignore[arg-type]


# ---- the filesystem's content -----------------------------------------------------------


def _ts(sec: int) -> Timespec:
    return Timespec(sec, 0)


@lru_cache(maxsize=1024)
def inode_item(
    gen: int, size: int, nbytes: int, nlink: int, mode: int, flags: int = 0, seq: int = 0
) -> bytes:
    """An INODE_ITEM body (cached: most files share one)."""
    t = _ts(EPOCH)
    return encode_inode_item(
        InodeItem(
            Key(0, 0, 0),
            gen,
            gen,
            size,
            nbytes,
            0,
            nlink,
            0,
            0,
            mode,
            0,
            flags,
            seq,
            t,
            t,
            t,
            t,
        )
    )


def dir_entry(ino: int, name: bytes, ftype: int, transid: int) -> bytes:
    """A DIR_ITEM / DIR_INDEX body with one entry pointing at inode ``ino``
    (``struct btrfs_dir_item`` + name, as :func:`encode_dir_item` writes it)."""
    loc = Key(ino, C.INODE_ITEM_KEY, 0).pack()
    return DirItem.STRUCT.pack(loc, transid, 0, len(name), ftype) + name


def inode_ref(index: int, name: bytes) -> bytes:
    """An INODE_REF body with one entry (``struct btrfs_inode_ref`` + name)."""
    return InodeRef.STRUCT.pack(index, len(name)) + name


def prealloc_extent(gen: int, bytenr: int, length: int) -> bytes:
    """A PREALLOC file extent item covering the whole extent (``fallocate``)."""
    head = FileExtentItem.HEAD.pack(gen, length, 0, 0, 0, C.FILE_EXTENT_PREALLOC)
    return head + FileExtentItem.BODY.pack(bytenr, length, 0, length)


def root_item(
    bytenr: int,
    level: int,
    gen: int,
    bytes_used: int,
    *,
    fs_tree: bool,
    uuid: bytes,
    root_dirid: int = 0,
    inode_flags: int = 0,
) -> bytes:
    inode = InodeItem(
        Key(0, 0, 0),
        1,
        0,
        3,
        0,
        0,
        1,
        0,
        0,
        MODE_DIR,
        0,
        inode_flags,
        0,
        _ts(0),
        _ts(0),
        _ts(0),
        _ts(0),
    )
    if not fs_tree:
        inode = InodeItem(
            Key(0, 0, 0),
            1,
            0,
            3,
            0,
            0,
            1,
            0,
            0,
            MODE_DIR,
            0,
            0,
            0,
            _ts(0),
            _ts(0),
            _ts(0),
            _ts(0),
        )
    t = _ts(EPOCH) if fs_tree else _ts(0)
    return encode_root_item(
        RootItem(
            Key(0, 0, 0),
            inode,
            gen,
            root_dirid,
            bytenr,
            0,
            bytes_used,
            0,
            0,
            1,
            Key(0, 0, 0),
            0,
            level,
            gen,
            uuid,
            bytes(16),
            bytes(16),
            0,
            0,
            0,
            0,
            t,
            t,
            _ts(0),
            _ts(0),
        )
    )


@dataclass
class FsContent:
    """The fs tree items and data extents of the files."""

    fs_items: Items
    data_extents: list[tuple[int, int, int, int]]  # (bytenr, length, ino, file offset)


def make_files(cfg: MkfsConfig, alloc_data: Callable[[int], int], gen: int) -> FsContent:
    """Directories ``dNNN`` of up to 1000 files ``fNNNNNN`` in the top directory; each file
    gets its share of the extents, allocated in creation order."""
    n_files = cfg.n_files
    n_ext = cfg.n_extents
    items: Items = []
    extents: list[tuple[int, int, int, int]] = []
    top = C.FIRST_FREE_OBJECTID  # 256
    n_dirs = (n_files + FILES_PER_DIR - 1) // FILES_PER_DIR
    top_size = 0
    next_ino = top + 1
    per_file, extra = divmod(n_ext, n_files) if n_files else (0, 0)
    top_items: Items = []
    file_no = 0
    for d in range(n_dirs):
        dname = f"d{d:03d}".encode()
        dino = next_ino
        next_ino += 1
        top_size += 2 * len(dname)
        top_items.append(
            (
                Key(top, C.DIR_ITEM_KEY, btrfs_name_hash(dname)),
                dir_entry(dino, dname, C.FT_DIR, gen),
            )
        )
        top_items.append((Key(top, C.DIR_INDEX_KEY, 2 + d), dir_entry(dino, dname, C.FT_DIR, gen)))
        n_here = min(FILES_PER_DIR, n_files - d * FILES_PER_DIR)
        dsize = 0
        d_items: Items = []
        for j in range(n_here):
            fname = f"f{file_no:06d}".encode()
            ino = next_ino
            next_ino += 1
            k = per_file + (1 if file_no < extra else 0)
            size = k * cfg.extent_size
            dsize += 2 * len(fname)
            d_items.append(
                (
                    Key(dino, C.DIR_ITEM_KEY, btrfs_name_hash(fname)),
                    dir_entry(ino, fname, C.FT_REG_FILE, gen),
                )
            )
            d_items.append(
                (Key(dino, C.DIR_INDEX_KEY, 2 + j), dir_entry(ino, fname, C.FT_REG_FILE, gen))
            )
            flags = C.BTRFS_INODE_PREALLOC if k else 0
            items.append(
                (Key(ino, C.INODE_ITEM_KEY, 0), inode_item(gen, size, size, 1, MODE_FILE, flags))
            )
            items.append((Key(ino, C.INODE_REF_KEY, dino), inode_ref(2 + j, fname)))
            for e in range(k):
                bytenr = alloc_data(cfg.extent_size)
                off = e * cfg.extent_size
                extents.append((bytenr, cfg.extent_size, ino, off))
                items.append(
                    (
                        Key(ino, C.EXTENT_DATA_KEY, off),
                        prealloc_extent(gen, bytenr, cfg.extent_size),
                    )
                )
            file_no += 1
        items.append((Key(dino, C.INODE_ITEM_KEY, 0), inode_item(gen, dsize, 0, 1, MODE_DIR)))
        items.append((Key(dino, C.INODE_REF_KEY, top), inode_ref(2 + d, dname)))
        items.extend(d_items)
    items.append((Key(top, C.INODE_ITEM_KEY, 0), inode_item(gen, top_size, 0, 1, MODE_DIR)))
    items.append((Key(top, C.INODE_REF_KEY, top), inode_ref(0, b"..")))
    items.extend(top_items)
    items.sort()
    return FsContent(items, extents)


def free_space_items(chunks: Iterable[Chunk], used: dict[int, list[tuple[int, int]]]) -> Items:
    """The free space tree: per block group FREE_SPACE_INFO and one FREE_SPACE_EXTENT per
    free run (the complement of allocated and excluded ranges)."""
    out: Items = []
    for c in chunks:
        taken = sorted(used.get(c.start, []) + c.excluded)
        free: list[tuple[int, int]] = []
        pos = c.start
        for s, ln in taken:
            if s > pos:
                free.append((pos, s - pos))
            pos = max(pos, s + ln)
        if pos < c.end:
            free.append((pos, c.end - pos))
        out.append(
            (
                Key(c.start, C.FREE_SPACE_INFO_KEY, c.length),
                encode_free_space_info(FreeSpaceInfo(Key(0, 0, 0), len(free), 0)),
            )
        )
        for s, ln in free:
            out.append((Key(s, C.FREE_SPACE_EXTENT_KEY, ln), b""))
    return out


# ---- the whole image ----------------------------------------------------------------


@dataclass
class MkfsResult:
    """What was written: per tree (id → root block), the chunks, the superblock bytes."""

    trees: dict[tuple[int, int], ExtentBuffer]  # (ROOT_ITEM objectid, offset) -> root block
    chunks: list[Chunk]
    superblock: bytes
    bytes_used: int
    tree_block_count: int


@dataclass
class FsSpec:
    """Everything an image's layout is computed from: geometry, identity, chunks, the data
    extents, and the items of the content trees (fs trees, csum, uuid, data reloc). The
    bookkeeping trees (root, chunk, dev, extent, free space, block group) are derived."""

    size: int
    nodesize: int
    sectorsize: int
    csum_type: int
    layout: str
    label: str
    generation: int
    fsid: bytes
    dev_uuid: bytes
    chunk_uuid: bytes
    chunks: list[Chunk]
    data_used: dict[int, list[tuple[int, int]]]
    data_extent_items: Items
    trees: dict[int, Items]
    root_items: dict[int, RootItem]  # templates for the content trees' ROOT_ITEMs
    root_extra_items: Items  # root tree items other than ROOT_ITEMs
    dev_stats: bytes = bytes(40)
    global_roots: int = 1  # extent-tree-v2: extent, csum and free space trees per id


def plan_filesystem(cfg: MkfsConfig) -> FsSpec:
    """The content ``cfg`` describes: chunks for metadata and data, files, their extents."""
    cfg.validate()
    gen = GENERATION
    fs_uuid = _uuid(cfg.seed, "fs-tree")
    ca = ChunkAllocator(cfg.size)
    sys_chunk = ca.btrfs_create_chunk(C.BLOCK_GROUP_SYSTEM)
    meta_chunks = [ca.btrfs_create_chunk(C.BLOCK_GROUP_METADATA)]
    est = estimate_metadata_bytes(cfg)
    while sum(c.length for c in meta_chunks) < est * 1.25:
        meta_chunks.append(ca.btrfs_create_chunk(C.BLOCK_GROUP_METADATA))
    data_allocs: list[RangeAllocator] = []

    def alloc_data(size: int) -> int:
        for ra in data_allocs[-1:]:
            pos = ra.alloc(size)
            if pos is not None:
                return pos
        data_allocs.append(RangeAllocator(ca.btrfs_create_chunk(C.BLOCK_GROUP_DATA)))
        pos = data_allocs[-1].alloc(size)
        if pos is None:
            raise MkfsError(f"extent of {size} bytes does not fit an empty data chunk")
        return pos

    try:
        content = make_files(cfg, alloc_data, gen)
    except MkfsError as e:
        raise MkfsError(f"{cfg.fill} bytes of files do not fit {cfg.size} bytes: {e}") from None
    if not data_allocs:  # an empty filesystem still has a data block group
        data_allocs.append(RangeAllocator(ca.btrfs_create_chunk(C.BLOCK_GROUP_DATA)))
    data_extent_items: Items = []
    for bytenr, length, ino, off in content.data_extents:
        ref = InlineRef(
            C.EXTENT_DATA_REF_KEY, root=C.FS_TREE_OBJECTID, objectid=ino, file_offset=off, count=1
        )
        ei = ExtentItem(
            Key(bytenr, C.EXTENT_ITEM_KEY, length), 1, gen, C.EXTENT_FLAG_DATA, inline_refs=(ref,)
        )
        data_extent_items.append((ei.key, encode_extent_item(ei)))
    trees: dict[int, Items] = {
        C.FS_TREE_OBJECTID: content.fs_items,
        C.CSUM_TREE_OBJECTID: [],
        C.UUID_TREE_OBJECTID: [
            (
                Key(
                    int.from_bytes(fs_uuid[:8], "little"),
                    C.UUID_KEY_SUBVOL,
                    int.from_bytes(fs_uuid[8:], "little"),
                ),
                C.FS_TREE_OBJECTID.to_bytes(8, "little"),
            )
        ],
        C.DATA_RELOC_TREE_OBJECTID: [
            (Key(256, C.INODE_ITEM_KEY, 0), inode_item(gen, 0, 0, 1, MODE_DIR)),
            (Key(256, C.INODE_REF_KEY, 256), inode_ref(0, b"..")),
        ],
    }
    root_items = {
        t: decode_root_item(
            root_item(
                0,
                0,
                gen,
                0,
                fs_tree=t in (C.FS_TREE_OBJECTID, C.DATA_RELOC_TREE_OBJECTID),
                uuid=fs_uuid if t == C.FS_TREE_OBJECTID else bytes(16),
                root_dirid=256 if t in (C.FS_TREE_OBJECTID, C.DATA_RELOC_TREE_OBJECTID) else 0,
                inode_flags=C.BTRFS_INODE_ROOT_ITEM_INIT
                if t in (C.FS_TREE_OBJECTID, C.DATA_RELOC_TREE_OBJECTID)
                else 0,
            )
        )
        for t in trees
    }
    extra: Items = [
        (
            Key(C.FS_TREE_OBJECTID, C.INODE_REF_KEY, C.ROOT_TREE_DIR_OBJECTID),
            inode_ref(0, b"default"),
        ),
        (Key(C.ROOT_TREE_DIR_OBJECTID, C.INODE_ITEM_KEY, 0), inode_item(gen, 0, 0, 1, MODE_DIR)),
        (
            Key(C.ROOT_TREE_DIR_OBJECTID, C.INODE_REF_KEY, C.ROOT_TREE_DIR_OBJECTID),
            inode_ref(0, b".."),
        ),
        (
            Key(C.ROOT_TREE_DIR_OBJECTID, C.DIR_ITEM_KEY, btrfs_name_hash(b"default")),
            DirItem.STRUCT.pack(
                Key(C.FS_TREE_OBJECTID, C.ROOT_ITEM_KEY, U64).pack(), gen, 0, 7, C.FT_DIR
            )
            + b"default",
        ),
    ]
    return FsSpec(
        size=cfg.size,
        nodesize=cfg.nodesize,
        sectorsize=cfg.sectorsize,
        csum_type=cfg.csum_type,
        layout=cfg.layout,
        label=cfg.label,
        generation=gen,
        fsid=_uuid(cfg.seed, "fsid"),
        dev_uuid=_uuid(cfg.seed, "dev"),
        chunk_uuid=_uuid(cfg.seed, "chunk-tree"),
        chunks=[sys_chunk, *meta_chunks, *(ra.chunk for ra in data_allocs)],
        data_used={ra.chunk.start: list(ra.allocated) for ra in data_allocs},
        data_extent_items=data_extent_items,
        trees=trees,
        root_items=root_items,
        root_extra_items=extra,
        global_roots=cfg.global_roots,
    )


def decode_root_item(data: bytes) -> RootItem:
    item = RootItem.decode(Key(0, C.ROOT_ITEM_KEY, 0), data, 0)
    return item


def make_btrfs(cfg: MkfsConfig, sink: BlockSink) -> MkfsResult:
    """Write the filesystem ``cfg`` describes to ``sink`` (a sparse file or a buffer)."""
    return write_filesystem(plan_filesystem(cfg), sink)


def chunk_and_dev_trees(spec: FsSpec) -> tuple[Items, Items, DevItem]:
    """The chunk tree (dev item + chunk items) and dev tree (dev stats + dev extents)."""
    chunk_items: Items = []
    dev_items: Items = [(Key(C.DEV_STATS_OBJECTID, C.PERSISTENT_ITEM_KEY, 1), spec.dev_stats)]
    dev_bytes_used = 0
    for c in spec.chunks:
        ci = chunk_item(c, spec.sectorsize, spec.dev_uuid)
        chunk_items.append((ci.key, encode_chunk_item(ci)))
        for s in c.stripes:
            de = DevExtent(
                Key(1, C.DEV_EXTENT_KEY, s),
                C.CHUNK_TREE_OBJECTID,
                C.FIRST_CHUNK_TREE_OBJECTID,
                c.start,
                c.length,
                spec.chunk_uuid,
            )
            dev_items.append((de.key, encode_dev_extent(de)))
            dev_bytes_used += c.length
    dev_item = DevItem(
        Key(C.DEV_ITEMS_OBJECTID, C.DEV_ITEM_KEY, 1),
        1,
        spec.size,
        dev_bytes_used,
        spec.sectorsize,
        spec.sectorsize,
        spec.sectorsize,
        0,
        0,
        0,
        0,
        0,
        0,
        spec.dev_uuid,
        spec.fsid,
    )
    chunk_items.append((dev_item.key, encode_dev_item(dev_item)))
    chunk_items.sort()
    dev_items.sort()
    return chunk_items, dev_items, dev_item


def block_group_items(spec: FsSpec, gids: dict[int, int]) -> Items:
    """One item per chunk, in the layout's form (chunk_objectid is the global_root_id
    under extent-tree-v2, else 256)."""
    out: Items = []
    for c in spec.chunks:
        if spec.layout == "skinny-bg-tree":
            out.append((Key(c.start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, c.used), b""))
        else:
            oid = gids[c.start] if spec.layout == "extent-tree-v2" else C.FIRST_CHUNK_TREE_OBJECTID
            bgi = BlockGroupItem(
                Key(c.start, C.BLOCK_GROUP_ITEM_KEY, c.length), c.used, oid, c.flags
            )
            out.append((bgi.key, encode_block_group_item(bgi)))
    return out


TreeId = tuple[int, int]  # ROOT_ITEM key (objectid, offset): offset = global root id


def global_root_ids(spec: FsSpec) -> dict[int, int]:
    """Chunk start → global_root_id (0 for all without extent-tree-v2)."""
    if spec.layout != "extent-tree-v2":
        return {c.start: 0 for c in spec.chunks}
    return {
        c.start: calculate_global_root_id(spec.size, c.start, spec.global_roots)
        for c in spec.chunks
    }


@dataclass
class TreeLayout:
    """Where :func:`lay_out_trees` puts every tree block, before anything is serialized.

    ``static_roots``: the trees whose items do not depend on the placement (chunk, dev,
    content trees), built. ``dyn_items``: the items of the trees that describe the
    placement (extent, free space, block group trees), sorted; the root tree is built
    last by :func:`write_filesystem` (its items hold the other roots' addresses).
    ``placed``: per tree, the logical address of each block in :func:`tree_blocks` order.
    """

    static_roots: dict[TreeId, ExtentBuffer]
    dyn_items: dict[TreeId, Items]
    placed: dict[TreeId, list[int]]
    trees_present: list[TreeId]
    chunk_items: Items
    dev_item: DevItem
    sys_chunk: Chunk
    n_global: int


def lay_out_trees(spec: FsSpec) -> TreeLayout:
    """Place every tree block and derive the extent, free space and block group trees (a
    fixed point: they describe where the blocks landed); sets each chunk's ``used``.

    Blocks are placed tree by tree — chunk tree in the SYSTEM chunk; the dev tree and the
    content trees in METADATA; then the root, extent and free space trees; the block
    group tree last, so that switching the block group layout moves no other tree's
    blocks. With ``extent-tree-v2`` there are ``global_roots`` extent, csum and free space
    trees (ROOT_ITEM offsets 0..N-1); each block group's items, extents and free space go
    to the trees of its global_root_id (``btrfs_extent_root``, ``btrfs_csum_root``,
    ``btrfs_free_space_root`` look them up by the block group of a bytenr)."""
    ns = spec.nodesize
    gen = spec.generation
    layout = spec.layout
    v2 = layout == "extent-tree-v2"
    n_global = spec.global_roots if v2 else 1
    gids = global_root_ids(spec)
    chunk_starts = [c.start for c in spec.chunks]

    def gid_of(bytenr: int) -> int:
        c = spec.chunks[bisect.bisect_right(chunk_starts, bytenr) - 1]
        return gids[c.start]

    sys_chunk = next((c for c in spec.chunks if c.flags & C.BLOCK_GROUP_SYSTEM), None)
    if sys_chunk is None:
        raise MkfsError("no SYSTEM chunk to hold the chunk tree")
    meta_chunks = [
        c for c in spec.chunks if c.flags & C.BLOCK_GROUP_METADATA and c is not sys_chunk
    ]
    chunk_items, dev_items, dev_item = chunk_and_dev_trees(spec)
    static_trees: dict[TreeId, Items] = {
        (C.CHUNK_TREE_OBJECTID, 0): chunk_items,
        (C.DEV_TREE_OBJECTID, 0): dev_items,
        **{(t, 0): sorted(items) for t, items in spec.trees.items()},
    }
    for g in range(1, n_global):  # the other global csum roots start empty
        static_trees[(C.CSUM_TREE_OBJECTID, g)] = []
    static_roots = {t: build_tree(items, ns, t[0], gen) for t, items in static_trees.items()}
    dyn_ids: list[TreeId] = [(C.ROOT_TREE_OBJECTID, 0)]
    dyn_ids += [(C.EXTENT_TREE_OBJECTID, g) for g in range(n_global)]
    dyn_ids += [(C.FREE_SPACE_TREE_OBJECTID, g) for g in range(n_global)]
    if layout != "extent-tree":
        dyn_ids.append((C.BLOCK_GROUP_TREE_OBJECTID, 0))
    trees_present = sorted(set(static_roots) | set(dyn_ids))
    # the root tree's shape depends only on which trees exist
    root_item_sizes = [RootItem.SIZE] * (len(trees_present) - 2) + [
        len(d) for _, d in spec.root_extra_items
    ]
    root_id = (C.ROOT_TREE_OBJECTID, 0)
    guess: dict[TreeId, tuple[int, ...]] = dict.fromkeys(dyn_ids, (1,))
    guess[root_id] = level_counts(root_item_sizes, ns)
    data_by_gid: dict[int, Items] = {g: [] for g in range(n_global)}
    for k, d in spec.data_extent_items:
        data_by_gid[gid_of(k.objectid)].append((k, d))
    for _round in range(20):
        sys_ra = RangeAllocator(sys_chunk)
        meta_ras = [RangeAllocator(c) for c in meta_chunks]
        for c in [sys_chunk, *meta_chunks]:
            c.used = 0

        def alloc_meta(ras: list[RangeAllocator] = meta_ras) -> int:
            for ra in ras:
                pos = ra.alloc(ns)
                if pos is not None:
                    return pos
            raise MkfsError("the metadata chunks are full")

        placed: dict[TreeId, list[int]] = {}
        levels: dict[TreeId, list[int]] = {}
        for t in sorted(static_roots, key=lambda t: t[0] != C.CHUNK_TREE_OBJECTID):
            levels[t] = [b.level for b in tree_blocks(static_roots[t])]
            if t[0] == C.CHUNK_TREE_OBJECTID:
                got = [sys_ra.alloc(ns) for _ in levels[t]]
                placed[t] = [a for a in got if a is not None]
                if len(placed[t]) != len(got):
                    raise MkfsError("the system chunk is full")
            else:
                placed[t] = [alloc_meta() for _ in levels[t]]
        for t in dyn_ids:
            levels[t] = bfs_levels(guess[t])
            placed[t] = [alloc_meta() for _ in levels[t]]
        used_by_bg: dict[int, list[tuple[int, int]]] = dict(spec.data_used)
        used_by_bg[sys_chunk.start] = list(sys_ra.allocated)
        for ra in meta_ras:
            used_by_bg[ra.chunk.start] = list(ra.allocated)
        for c in spec.chunks:
            c.used = sum(ln for _, ln in used_by_bg.get(c.start, []))
        bg_items = block_group_items(spec, gids)
        extent_items = {g: list(data_by_gid[g]) for g in range(n_global)}
        for t, where in placed.items():
            ref = InlineRef(C.TREE_BLOCK_REF_KEY, offset=t[0])
            for a, lvl in zip(where, levels[t], strict=True):
                ei = ExtentItem(
                    Key(a, C.METADATA_ITEM_KEY, lvl),
                    1,
                    gen,
                    C.EXTENT_FLAG_TREE_BLOCK,
                    inline_refs=(ref,),
                )
                extent_items[gid_of(a)].append((ei.key, encode_extent_item(ei)))
        if layout == "extent-tree":
            extent_items[0] += bg_items
        fst = free_space_items(spec.chunks, used_by_bg)
        fst_by_gid: dict[int, Items] = {g: [] for g in range(n_global)}
        for k, d in fst:
            fst_by_gid[gid_of(k.objectid)].append((k, d))
        dyn_items: dict[TreeId, Items] = {}
        for g in range(n_global):
            dyn_items[(C.EXTENT_TREE_OBJECTID, g)] = sorted(extent_items[g])
            dyn_items[(C.FREE_SPACE_TREE_OBJECTID, g)] = fst_by_gid[g]
        if layout != "extent-tree":
            dyn_items[(C.BLOCK_GROUP_TREE_OBJECTID, 0)] = sorted(bg_items)
        counts = {t: level_counts([len(d) for _, d in dyn_items[t]], ns) for t in dyn_items}
        counts[root_id] = guess[root_id]
        if counts == guess:
            break
        guess = counts
    else:
        raise MkfsError("tree block layout did not converge")
    return TreeLayout(
        static_roots, dyn_items, placed, trees_present, chunk_items, dev_item, sys_chunk, n_global
    )


def write_filesystem(spec: FsSpec, sink: BlockSink) -> MkfsResult:
    """Lay out and write an image: place every tree block (:func:`lay_out_trees`), build
    the trees and the root tree over them, and write the blocks to every stripe and the
    superblock to every mirror in the device."""
    ns = spec.nodesize
    gen = spec.generation
    layout = spec.layout
    v2 = layout == "extent-tree-v2"
    lay = lay_out_trees(spec)
    placed, trees_present, chunk_items = lay.placed, lay.trees_present, lay.chunk_items
    sys_chunk, n_global = lay.sys_chunk, lay.n_global
    chunk_starts = [c.start for c in spec.chunks]
    root_id = (C.ROOT_TREE_OBJECTID, 0)
    roots: dict[TreeId, ExtentBuffer] = dict(lay.static_roots)
    for t, items in lay.dyn_items.items():
        roots[t] = build_tree(items, ns, t[0], gen)
    for t, r in roots.items():
        for b, a in zip(tree_blocks(r), placed[t], strict=True):
            b.bytenr = a
    root_tree_items: Items = list(spec.root_extra_items)
    for t in trees_present:
        if t[0] in (C.CHUNK_TREE_OBJECTID, C.ROOT_TREE_OBJECTID):
            continue
        r = roots[t]
        tmpl = spec.root_items.get(t[0]) or decode_root_item(
            root_item(0, 0, gen, 0, fs_tree=False, uuid=bytes(16))
        )
        ri = dataclasses.replace(
            tmpl,
            bytenr=r.bytenr,
            level=r.level,
            generation=gen,
            generation_v2=gen,
            bytes_used=len(tree_blocks(r)) * ns,
        )
        root_tree_items.append((Key(t[0], C.ROOT_ITEM_KEY, t[1]), encode_root_item(ri)))
    root_tree_items.sort()
    roots[root_id] = build_tree(root_tree_items, ns, C.ROOT_TREE_OBJECTID, gen)
    root_blocks = tree_blocks(roots[root_id])
    if len(root_blocks) != len(placed[root_id]):
        raise MkfsError("root tree shape differs from its prediction")
    for b, a in zip(root_blocks, placed[root_id], strict=True):
        b.bytenr = a

    n_blocks = 0
    for r in roots.values():
        for b in tree_blocks(r):
            data = serialize_block(b, spec)
            c = spec.chunks[bisect.bisect_right(chunk_starts, b.bytenr) - 1]
            for s in c.stripes:
                sink.write(s + (b.bytenr - c.start), data)
            n_blocks += 1

    bytes_used = sum(c.used for c in spec.chunks)
    incompat = DEFAULT_INCOMPAT
    compat_ro = C.COMPAT_RO_FREE_SPACE_TREE | C.COMPAT_RO_FREE_SPACE_TREE_VALID
    if layout != "extent-tree":
        compat_ro |= C.COMPAT_RO_BLOCK_GROUP_TREE
    if layout == "skinny-bg-tree":
        incompat |= C.INCOMPAT_SKINNY_BG_TREE
    if v2:
        incompat |= C.INCOMPAT_EXTENT_TREE_V2
    sys_array = b"".join(
        k.pack() + d for k, d in chunk_items
        if k.type == C.CHUNK_ITEM_KEY and k.offset == sys_chunk.start
    )  # fmt: skip
    sb = build_superblock(
        spec, roots=roots, bytes_used=bytes_used, dev_item=lay.dev_item, sys_array=sys_array,
        compat_ro=compat_ro, incompat=incompat, nr_global_roots=n_global if v2 else 0,
    )  # fmt: skip
    for mirror in range(C.SUPER_MIRROR_MAX):
        off = C.btrfs_sb_offset(mirror)
        if off + C.SUPER_INFO_SIZE > spec.size:
            break
        raw = bytearray(sb)
        raw[48:56] = off.to_bytes(8, "little")
        raw[:32] = csum_block(spec.csum_type, bytes(raw))
        sink.write(off, bytes(raw))
    return MkfsResult(roots, spec.chunks, sb, bytes_used, n_blocks)


def estimate_metadata_bytes(cfg: MkfsConfig) -> int:
    """A generous estimate of tree block bytes (to size the metadata chunks)."""
    # counted as two 53-byte items: the file extent item, and the extent item
    per_extent = (C.BTRFS_ITEM_SIZE + FileExtentItem.SIZE) * 2
    # inode item, inode ref (7-byte name), dir item and dir index, 5 item headers, 17 more
    name = 7
    per_file = (
        InodeItem.SIZE
        + InodeRef.STRUCT.size
        + name
        + 2 * (DirItem.STRUCT.size + name)
        + 5 * C.BTRFS_ITEM_SIZE
        + 17
    )
    payload = cfg.n_extents * per_extent + cfg.n_files * per_file
    leaf = cfg.nodesize - C.BTRFS_HEADER_SIZE
    blocks = payload // leaf + 64
    return (blocks + blocks // 50 + 64) * cfg.nodesize


def build_superblock(
    spec: FsSpec,
    *,
    roots: dict[tuple[int, int], ExtentBuffer],
    bytes_used: int,
    dev_item: DevItem,
    sys_array: bytes,
    compat_ro: int,
    incompat: int,
    nr_global_roots: int = 0,
) -> bytes:
    """The primary superblock's bytes (bytenr and csum are set per copy by the caller)."""
    raw = bytearray(C.SUPER_INFO_SIZE)
    fsid, gen = spec.fsid, spec.generation
    root = roots[(C.ROOT_TREE_OBJECTID, 0)]
    chunk = roots[(C.CHUNK_TREE_OBJECTID, 0)]
    head = Superblock.HEAD.pack(
        bytes(32),
        fsid,
        C.SUPER_INFO_OFFSET,
        C.SUPER_FLAG_WRITTEN,
        C.MAGIC,
        gen,
        root.bytenr,
        chunk.bytenr,
        0,
        spec.size,
        bytes_used,
        C.ROOT_TREE_DIR_OBJECTID,
        1,
        spec.sectorsize,
        spec.nodesize,
        spec.nodesize,
        spec.sectorsize,
        len(sys_array),
        gen,
        0,
        compat_ro,
        incompat,
        spec.csum_type,
        root.level,
        chunk.level,
        0,
    )
    raw[: len(head)] = head
    di = encode_dev_item(dev_item)
    raw[Superblock.DEV_ITEM_OFFSET : Superblock.DEV_ITEM_OFFSET + len(di)] = di
    label = spec.label.encode()[: C.BTRFS_LABEL_SIZE - 1].ljust(C.BTRFS_LABEL_SIZE, b"\0")
    tail = Superblock.TAIL.pack(label, 0, gen, bytes(16), nr_global_roots)
    raw[Superblock.LABEL_OFFSET : Superblock.LABEL_OFFSET + len(tail)] = tail
    raw[Superblock.SYS_CHUNK_ARRAY_OFFSET : Superblock.SYS_CHUNK_ARRAY_OFFSET + len(sys_array)] = (
        sys_array
    )

    # backup root 0: the current roots (btrfs_set_backup_* fields)
    def lv(t: int) -> tuple[int, int]:
        # extent-tree-v2 leaves the extent and csum backup roots empty (backup_super_roots)
        if nr_global_roots and t in (C.EXTENT_TREE_OBJECTID, C.CSUM_TREE_OBJECTID):
            return (0, 0)
        r = roots.get((t, 0))
        return (r.bytenr, r.level) if r else (0, 0)

    ext, fs, dev, csum = (lv(t) for t in (2, 5, 4, 7))
    backup = (
        root.bytenr.to_bytes(8, "little")
        + gen.to_bytes(8, "little")
        + chunk.bytenr.to_bytes(8, "little")
        + gen.to_bytes(8, "little")
        + ext[0].to_bytes(8, "little")
        + gen.to_bytes(8, "little")
        + fs[0].to_bytes(8, "little")
        + gen.to_bytes(8, "little")
        + dev[0].to_bytes(8, "little")
        + gen.to_bytes(8, "little")
        + csum[0].to_bytes(8, "little")
        + gen.to_bytes(8, "little")
        + spec.size.to_bytes(8, "little")
        + bytes_used.to_bytes(8, "little")
        + (1).to_bytes(8, "little")
        + bytes(32)
        + bytes([root.level, chunk.level, ext[1], fs[1], dev[1], csum[1]])
        + bytes(10)
    )
    raw[Superblock.BACKUP_ROOTS_OFFSET : Superblock.BACKUP_ROOTS_OFFSET + 168] = backup
    return bytes(raw)
