"""The reader under bad input: mutated and truncated real images (hypothesis).

Property: opening an image, walking every tree and decoding every item, ``btrfs_check`` and
the dump summary either succeed or raise :class:`FormatError` naming a structure and an
offset, never another exception; and the work is bounded: blocks read stay within
(blocks the image holds) x (copies of a block on this device) x (walks done), because a walk
never visits a logical block twice and never more blocks than the image holds.

Mutations are found with the reader on the clean image and biased towards what it reads
first: the superblock and its sys_chunk_array, chunk and root tree blocks, tree block
headers, item headers and node pointers, and the fields that size things (nritems, item
offset/size, num_stripes, name_len...). Each may recompute the checksum of what it touched,
so that it reaches the structure checks instead of stopping at the checksum.

The images are small real ones (256 MiB, mkfs.btrfs 6.14), held in memory once per module
and restored after each example. Runs are reproducible: ``derandomize=True``, no database.
"""

from __future__ import annotations

import bisect
import os
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.btrfs.cli import summarize
from model.blocksource import BytesSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.csum import csum_block
from model.btrfs.reader import BtrfsImage
from model.btrfs.superblock import Superblock
from model.btrfs.treeblock import TreeBlock
from model.errors import FormatError
from tests.btrfs.images import make_image
from tests.btrfs.imgedit import load_sparse
from tests.fuzzcli import FAILURES, Mutant, Outcome, content_hash, init_worker, run_batch
from tests.tools import require_root, require_tool

FUZZ_SIZE = 256 << 20
FUZZ_IMAGES = ["default", "nodesize-4k", "rootdir", "rootdir-4k"]

WIDTH = {"B": 1, "H": 2, "I": 4, "Q": 8}


@dataclass(frozen=True)
class Field:
    """An integer field at an absolute image offset."""

    off: int
    fmt: str
    what: str


@dataclass
class ImageMap:
    """A clean image in memory and what the reader found in it."""

    name: str
    buf: bytearray
    sb: Superblock
    # physical starts of every tree block copy (sorted) and of the superblock
    block_starts: list[int] = field(default_factory=list)
    logicals: list[int] = field(default_factory=list)
    # logical -> its ancestors' logicals (nearest first) in the tree it was found in
    ancestors: dict[int, tuple[int, ...]] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)  # node -> its children
    # regions to flip bytes in, by kind: (start, length)
    regions: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    fields: list[Field] = field(default_factory=list)
    pointer_fields: list[tuple[Field, int]] = field(default_factory=list)  # (field, owner blk)

    strategies: dict[str, st.SearchStrategy[Any]] = field(default_factory=dict)

    @property
    def nodesize(self) -> int:
        return self.sb.nodesize

    def sample(self, name: str, seq: list[Any]) -> st.SearchStrategy[Any]:
        """``st.sampled_from(seq)``, built once (the lists are long)."""
        if name not in self.strategies:
            self.strategies[name] = st.sampled_from(seq)
        return self.strategies[name]

    def csum_target(self, off: int) -> int | None:
        """The start of the tree block copy or superblock holding ``off``."""
        if C.SUPER_INFO_OFFSET <= off < C.SUPER_INFO_OFFSET + C.SUPER_INFO_SIZE:
            return C.SUPER_INFO_OFFSET
        i = bisect.bisect_right(self.block_starts, off) - 1
        if i >= 0 and off < self.block_starts[i] + self.nodesize:
            return self.block_starts[i]
        return None


# body fields per item key type: (offset in the body, format, name)
BODY_FIELDS: dict[int, list[tuple[int, str, str]]] = {
    C.CHUNK_ITEM_KEY: [
        (0, "Q", "length"),
        (16, "Q", "stripe_len"),
        (24, "Q", "type"),
        (40, "I", "sector_size"),
        (44, "H", "num_stripes"),
        (46, "H", "sub_stripes"),
        (48, "Q", "stripe0.devid"),
        (56, "Q", "stripe0.offset"),
        (80, "Q", "stripe1.devid"),
        (88, "Q", "stripe1.offset"),
    ],
    C.DIR_ITEM_KEY: [
        (0, "Q", "location.objectid"),
        (8, "B", "location.type"),
        (25, "H", "data_len"),
        (27, "H", "name_len"),
        (29, "B", "ftype"),
    ],
    C.DIR_INDEX_KEY: [(25, "H", "data_len"), (27, "H", "name_len"), (29, "B", "ftype")],
    C.XATTR_ITEM_KEY: [(25, "H", "data_len"), (27, "H", "name_len")],
    C.INODE_REF_KEY: [(8, "H", "name_len")],
    C.INODE_EXTREF_KEY: [(16, "H", "name_len")],
    C.ROOT_REF_KEY: [(16, "H", "name_len")],
    C.ROOT_BACKREF_KEY: [(16, "H", "name_len")],
    C.ROOT_ITEM_KEY: [
        (160, "Q", "generation"),
        (176, "Q", "bytenr"),
        (237, "B", "drop_level"),
        (238, "B", "level"),
    ],
    C.EXTENT_ITEM_KEY: [(0, "Q", "refs"), (16, "Q", "flags"), (24, "B", "inline0.type")],
    C.METADATA_ITEM_KEY: [(0, "Q", "refs"), (16, "Q", "flags"), (24, "B", "inline0.type")],
    C.EXTENT_DATA_KEY: [
        (8, "Q", "ram_bytes"),
        (16, "B", "compression"),
        (20, "B", "type"),
        (21, "Q", "disk_bytenr"),
        (29, "Q", "disk_num_bytes"),
        (45, "Q", "num_bytes"),
    ],
    C.BLOCK_GROUP_ITEM_KEY: [(0, "Q", "used"), (8, "Q", "chunk_objectid"), (16, "Q", "flags")],
    C.DEV_ITEM_KEY: [(0, "Q", "devid"), (16, "Q", "bytes_used")],
    C.DEV_EXTENT_KEY: [(24, "Q", "length")],
    C.FREE_SPACE_INFO_KEY: [(0, "I", "extent_count")],
    C.INODE_ITEM_KEY: [(40, "I", "nlink"), (52, "I", "mode"), (64, "Q", "flags")],
}

SUPER_FIELDS = [
    (72, "Q", "generation"),
    (80, "Q", "root"),
    (88, "Q", "chunk_root"),
    (96, "Q", "log_root"),
    (112, "Q", "total_bytes"),
    (136, "Q", "num_devices"),
    (144, "I", "sectorsize"),
    (148, "I", "nodesize"),
    (160, "I", "sys_chunk_array_size"),
    (164, "Q", "chunk_root_generation"),
    (180, "Q", "compat_ro_flags"),
    (188, "Q", "incompat_flags"),
    (196, "H", "csum_type"),
    (198, "B", "root_level"),
    (199, "B", "chunk_root_level"),
    (200, "B", "log_root_level"),
    (201, "Q", "dev_item.devid"),
]
SUPER_POINTERS = {"root", "chunk_root", "log_root"}


def map_image(name: str, buf: bytearray) -> ImageMap:
    """Find the structures of a clean image with the reader."""
    img = BtrfsImage.open(BytesSource(buf))
    sb = img.sb
    m = ImageMap(name, buf, sb)
    regions: dict[str, list[tuple[int, int]]] = {
        "superblock": [(C.SUPER_INFO_OFFSET, 811)],
        "sys_chunk_array": [(C.SUPER_INFO_OFFSET + 811, sb.sys_chunk_array_size)],
        "header": [],
        "item-headers": [],
        "key-ptrs": [],
        "item-bodies": [],
        "chunk-root-tree": [],
    }
    for off, fmt, what in SUPER_FIELDS:
        f = Field(C.SUPER_INFO_OFFSET + off, fmt, f"superblock.{what}")
        m.fields.append(f)
        if what in SUPER_POINTERS:
            m.pointer_fields.append((f, 0))
    # sys_chunk_array entries: key (17) + chunk
    p = 0
    base = C.SUPER_INFO_OFFSET + 811
    while p + 17 + 48 <= sb.sys_chunk_array_size:
        n = int.from_bytes(sb.sys_chunk_array[p + 17 + 44 : p + 17 + 46], "little")
        for off, fmt, what in BODY_FIELDS[C.CHUNK_ITEM_KEY]:
            if off < 48 + 32 * n:
                m.fields.append(Field(base + p + 17 + off, fmt, f"sys_array.chunk.{what}"))
        p += 17 + 48 + 32 * max(n, 1)
    starts: set[int] = set()
    for root in img.trees():
        parent: dict[int, int] = {}
        for blk in img.walk(root):
            copies = img.chunk_map.map_read(blk.logical, sb.nodesize)
            chain: list[int] = []
            q = blk.logical
            while q in parent and len(chain) < C.BTRFS_MAX_LEVEL:
                q = parent[q]
                chain.append(q)
            m.ancestors.setdefault(blk.logical, tuple(chain))
            if blk.logical not in m.logicals:
                m.logicals.append(blk.logical)
            for phys in copies:
                starts.add(phys)
                regions["header"].append((phys, C.BTRFS_HEADER_SIZE))
                if root.objectid in (C.CHUNK_TREE_OBJECTID, C.ROOT_TREE_OBJECTID):
                    regions["chunk-root-tree"].append((phys, sb.nodesize))
                for off, fmt, what in (
                    (48, "Q", "bytenr"),
                    (56, "Q", "flags"),
                    (80, "Q", "generation"),
                    (88, "Q", "owner"),
                    (96, "I", "nritems"),
                    (100, "B", "level"),
                ):
                    m.fields.append(Field(phys + off, fmt, f"header.{what}"))
                if blk.is_leaf:
                    regions["item-headers"].append(
                        (phys + C.BTRFS_HEADER_SIZE, C.BTRFS_ITEM_SIZE * blk.nritems)
                    )
                    for slot, ih in enumerate(blk.items):
                        h = phys + C.BTRFS_HEADER_SIZE + C.BTRFS_ITEM_SIZE * slot
                        body = phys + C.BTRFS_HEADER_SIZE + ih.offset
                        m.fields += [
                            Field(h, "Q", "key.objectid"),
                            Field(h + 8, "B", "key.type"),
                            Field(h + 9, "Q", "key.offset"),
                            Field(h + 17, "I", "item.offset"),
                            Field(h + 21, "I", "item.size"),
                        ]
                        if ih.size:
                            regions["item-bodies"].append((body, ih.size))
                        for off, fmt, what in BODY_FIELDS.get(ih.key.type, []):
                            if off + WIDTH[fmt] <= ih.size:
                                f = Field(body + off, fmt, f"{ih.key.type}.{what}")
                                m.fields.append(f)
                                if what == "bytenr":
                                    m.pointer_fields.append((f, blk.logical))
                else:
                    regions["key-ptrs"].append(
                        (phys + C.BTRFS_HEADER_SIZE, C.BTRFS_KEY_PTR_SIZE * blk.nritems)
                    )
                    for slot, p_ in enumerate(blk.ptrs):
                        kp = phys + C.BTRFS_HEADER_SIZE + C.BTRFS_KEY_PTR_SIZE * slot
                        f = Field(kp + 17, "Q", "ptr.blockptr")
                        m.fields += [f, Field(kp + 25, "Q", "ptr.generation")]
                        m.fields.append(Field(kp, "Q", "ptr.key.objectid"))
                        m.pointer_fields.append((f, blk.logical))
                        parent[p_.blockptr] = blk.logical
                    m.children[blk.logical] = [p_.blockptr for p_ in blk.ptrs]
    m.block_starts = sorted(starts)
    m.regions = {k: v for k, v in regions.items() if v}
    return m


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-images")


@pytest.fixture(scope="module")
def image_map(fuzz_dir: Path, request: pytest.FixtureRequest) -> Iterator[ImageMap]:
    """One small image in memory (pytest groups the tests by image, so one at a time),
    checked unchanged at the end: every example restores what it edited."""
    name: str = request.param
    require_tool("mkfs.btrfs")
    if name.startswith("kernel"):
        require_root("a loop mount")
    path = make_image(name, fuzz_dir / f"{name}.img", size=FUZZ_SIZE)
    m = map_image(name, load_sparse(path))
    path.unlink()
    crc = zlib.crc32(m.buf)
    yield m
    assert zlib.crc32(m.buf) == crc, f"{name}: an example left the image edited"


# ---- applying mutations -------------------------------------------------------------------


class Editor:
    """In-place edits of the shared buffer, undone by :meth:`restore`."""

    def __init__(self, m: ImageMap) -> None:
        self.m = m
        self.saved: list[tuple[int, bytes]] = []
        self.recompute: set[int] = set()

    def write(self, off: int, data: bytes) -> None:
        buf = self.m.buf
        data = data[: max(0, len(buf) - off)]
        self.saved.append((off, bytes(buf[off : off + len(data)])))
        buf[off : off + len(data)] = data

    def set_field(self, f: Field, value: int) -> None:
        w = WIDTH[f.fmt]
        self.write(f.off, (value & ((1 << (8 * w)) - 1)).to_bytes(w, "little"))

    def xor(self, off: int, mask: int) -> None:
        self.write(off, bytes([self.m.buf[off] ^ mask]))

    def want_csum(self, off: int) -> None:
        t = self.m.csum_target(off)
        if t is not None:
            self.recompute.add(t)

    def fix_csums(self) -> None:
        buf = self.m.buf
        ctype = self.m.sb.csum_type
        for start in sorted(self.recompute):
            n = C.SUPER_INFO_SIZE if start == C.SUPER_INFO_OFFSET else self.m.nodesize
            self.write(start, csum_block(ctype, bytes(buf[start : start + n])))

    def restore(self) -> None:
        for off, data in reversed(self.saved):
            self.m.buf[off : off + len(data)] = data
        self.saved.clear()


# ---- the property -------------------------------------------------------------------------


def assert_format_error(e: FormatError) -> None:
    """A FormatError names a structure and an offset (and its message says so)."""
    assert isinstance(e.structure, str) and e.structure.strip(), repr(e)
    assert isinstance(e.offset, int) and e.offset >= 0, repr(e)
    assert f"at offset {e.offset}" in str(e)
    assert e.message


def copies_per_block(img: BtrfsImage) -> int:
    """The most copies of one logical block this device can hold: stripes of one chunk
    on the image's device."""
    devid = img.chunk_map.devid
    return max([1] + [sum(s.devid == devid for s in c.stripes) for c in img.chunk_map])


class Budget:
    """Counts the walks made on ``img`` (``walk`` is wrapped: ``iter_items``,
    ``btrfs_check`` and ``summarize`` all walk through it) and checks
    blocks_read <= walks x (blocks the image holds) x (copies of a block)."""

    def __init__(self, img: BtrfsImage) -> None:
        self.img = img
        self.walks = 2  # BtrfsImage.open: the chunk tree, then the root tree
        inner = img.walk

        def counting_walk(*a: Any, **kw: Any) -> Iterator[TreeBlock]:
            self.walks += 1
            return inner(*a, **kw)

        img.walk = counting_walk  # type: ignore[method-assign]

    def check(self) -> None:
        per_walk = max(1, self.img.source.size // self.img.sb.nodesize)
        bound = self.walks * per_walk * copies_per_block(self.img)
        assert self.img.blocks_read <= bound, (self.img.blocks_read, bound, self.walks)


def exercise(src: BytesSource) -> str:
    """Everything a user of the model does with an image; returns how far it got."""
    try:
        img = BtrfsImage.open(src)
    except FormatError as e:
        assert_format_error(e)
        return "open-error"
    budget = Budget(img)
    budget.check()
    outcome = "ok"
    # every tree walked, every item decoded
    for root in img.trees():
        try:
            for _blk, _slot, _item in img.iter_items(root):
                pass
        except FormatError as e:
            assert_format_error(e)
            outcome = "walk-error"
        budget.check()
    # the checker (collects read errors as findings; a runaway walk still raises)
    try:
        btrfs_check(img)
    except FormatError as e:
        assert_format_error(e)
        outcome = "check-error"
    budget.check()
    # the dump summary
    try:
        summarize(img)
    except FormatError as e:
        assert_format_error(e)
        outcome = "summary-error"
    budget.check()
    return outcome


def run_mutated(m: ImageMap, ops: list[Op], truncate_at: int | None) -> str:
    ed = Editor(m)
    try:
        for op in ops:
            op.apply(ed)
        ed.fix_csums()
        view = memoryview(m.buf)
        if truncate_at is not None:
            view = view[:truncate_at]
        return exercise(BytesSource(view))
    finally:
        ed.restore()


# ---- mutation strategies ------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One edit: xor a byte, or set an integer field; ``csum``: recompute the checksum of
    the block (or superblock) it lands in."""

    off: int
    csum: bool
    mask: int = 0  # xor
    fld: Field | None = None  # set
    value: int = 0

    def apply(self, ed: Editor) -> None:
        if self.off >= len(ed.m.buf):
            return
        if self.fld is not None:
            ed.set_field(self.fld, self.value)
        else:
            ed.xor(self.off, self.mask)
        if self.csum:
            ed.want_csum(self.off)


def _in_region(draw: st.DrawFn, m: ImageMap, kind: str) -> int:
    start, length = draw(m.sample(f"region:{kind}", m.regions[kind]))
    return start + draw(st.integers(0, max(0, length - 1)))


@st.composite
def byte_flips(draw: st.DrawFn, m: ImageMap) -> Op:
    """A byte xor'ed anywhere, or (mostly) inside a structure the reader needs."""
    kinds = sorted(m.regions)
    kind = draw(st.sampled_from(["anywhere", *kinds, *kinds]))
    if kind == "anywhere":
        off = draw(st.integers(0, len(m.buf) - 1))
    else:
        off = _in_region(draw, m, kind)
    return Op(off, draw(st.booleans()), mask=draw(st.integers(1, 255)))


def _absurd(draw: st.DrawFn, m: ImageMap, fmt: str) -> int:
    name = f"absurd:{fmt}"
    if name not in m.strategies:
        top = (1 << (8 * WIDTH[fmt])) - 1
        m.strategies[name] = st.one_of(
            st.sampled_from([0, 1, 2, 3, top, top - 1, top >> 1, (top >> 1) + 1]),
            st.sampled_from([255, 256, 300, 4095, 4096, 65535, 65536]),
            st.sampled_from([m.nodesize - 1, m.nodesize, m.nodesize + 1, m.nodesize * 2]),
            st.sampled_from(m.logicals),
            st.integers(0, top),
        )
    v: int = draw(m.strategies[name])
    return v


@st.composite
def field_sets(draw: st.DrawFn, m: ImageMap) -> Op:
    """An integer field set to an absurd value (checksum usually recomputed)."""
    f = draw(m.sample("fields", m.fields))
    csum = draw(st.sampled_from([True, True, True, False]))
    return Op(f.off, csum, fld=f, value=_absurd(draw, m, f.fmt))


@st.composite
def pointer_sets(draw: st.DrawFn, m: ImageMap) -> Op:
    """A block pointer (node pointer, ROOT_ITEM bytenr, superblock root) set to the block
    holding it, one of its ancestors, a sibling (a second parent for one child: a DAG),
    any tree block, or next to one."""
    f, holder = draw(m.sample("pointer_fields", m.pointer_fields))
    kind = draw(st.sampled_from(["self", "ancestor", "sibling", "other"]))
    if kind == "self" and holder:
        target = holder
    elif kind == "ancestor" and m.ancestors.get(holder):
        target = draw(st.sampled_from(m.ancestors[holder]))
    elif kind == "sibling" and m.children.get(holder):
        target = draw(st.sampled_from(m.children[holder]))
    else:
        target = draw(m.sample("logicals", m.logicals))
    target += draw(st.sampled_from([0, 0, 0, 0, m.nodesize, -m.nodesize, m.sb.sectorsize, 1]))
    return Op(f.off, draw(st.sampled_from([True, True, True, False])), fld=f, value=target)


@st.composite
def truncations(draw: st.DrawFn, m: ImageMap) -> int:
    """An image length: anywhere, or around the superblock or a tree block copy."""
    near = draw(st.sampled_from(["anywhere", "superblock", "block", "block"]))
    if near == "anywhere":
        return draw(st.integers(0, len(m.buf)))
    if near == "superblock":
        base = C.SUPER_INFO_OFFSET
        return base + draw(st.integers(-1, C.SUPER_INFO_SIZE))
    start = draw(m.sample("block_starts", m.block_starts))
    return start + draw(st.sampled_from([0, 1, C.BTRFS_HEADER_SIZE, m.nodesize - 1, m.nodesize]))


SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)


@pytest.mark.parametrize("image_map", FUZZ_IMAGES, indirect=True)
@settings(SETTINGS, max_examples=200)
@given(data=st.data())
def test_fuzz_byte_flips(image_map: ImageMap, data: st.DataObject) -> None:
    m = image_map
    ops = data.draw(st.lists(byte_flips(m), min_size=1, max_size=4), label="ops")
    run_mutated(m, ops, None)


@pytest.mark.parametrize("image_map", FUZZ_IMAGES, indirect=True)
@settings(SETTINGS, max_examples=200)
@given(data=st.data())
def test_fuzz_absurd_fields(image_map: ImageMap, data: st.DataObject) -> None:
    m = image_map
    ops = data.draw(st.lists(field_sets(m), min_size=1, max_size=3), label="ops")
    run_mutated(m, ops, None)


@pytest.mark.parametrize("image_map", FUZZ_IMAGES, indirect=True)
@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_fuzz_pointers(image_map: ImageMap, data: st.DataObject) -> None:
    m = image_map
    ops = data.draw(st.lists(pointer_sets(m), min_size=1, max_size=2), label="ops")
    run_mutated(m, ops, None)


@pytest.mark.parametrize("image_map", FUZZ_IMAGES, indirect=True)
@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_fuzz_truncation(image_map: ImageMap, data: st.DataObject) -> None:
    m = image_map
    ops = data.draw(st.lists(st.one_of(byte_flips(m), field_sets(m)), max_size=2), label="ops")
    n = data.draw(truncations(m), label="truncate_at")
    run_mutated(m, ops, n)


def test_clean_images_read_whole(fuzz_dir: Path) -> None:
    """The unmutated images pass the property with nothing to report (sanity of the
    harness: the fuzz examples start from readable images)."""
    require_tool("mkfs.btrfs")
    for name in FUZZ_IMAGES:
        path = make_image(name, fuzz_dir / f"clean-{name}.img", size=FUZZ_SIZE)
        buf = load_sparse(path)
        path.unlink()
        assert exercise(BytesSource(buf)) == "ok", name


# ---- the reader's guards, one at a time -----------------------------------------------------


class ClaimedSize:
    """A source that claims to be ``size`` bytes long but reads the whole image: stands
    for an image whose tree has more blocks than the image could hold (overlapping
    blocks), which is the case the walk limit is for."""

    def __init__(self, buf: bytearray, size: int) -> None:
        self._src = BytesSource(buf)
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int, what: str = "data") -> bytes:
        return self._src.read(offset, length, what)


def _clean(name: str, fuzz_dir: Path) -> bytearray:
    require_tool("mkfs.btrfs")
    path = make_image(name, fuzz_dir / f"guard-{name}.img", size=FUZZ_SIZE)
    buf = load_sparse(path)
    path.unlink()
    return buf


def test_walk_limit_is_the_blocks_the_image_holds(fuzz_dir: Path) -> None:
    """A tree with more blocks than size // nodesize is refused, with a FormatError."""
    buf = _clean("rootdir", fuzz_dir)
    img = BtrfsImage.open(BytesSource(buf))
    biggest = max(img.trees(), key=lambda r: sum(1 for _ in img.walk(r)))
    nblocks = sum(1 for _ in img.walk(biggest))
    size = C.SUPER_INFO_OFFSET + C.SUPER_INFO_SIZE  # the least open() accepts
    limit = size // img.sb.nodesize
    assert nblocks > limit > 0  # else this test proves nothing
    small = BtrfsImage.open(ClaimedSize(buf, size))
    root = small.tree(biggest.objectid, biggest.offset)
    assert root is not None
    before = small.blocks_read
    with pytest.raises(FormatError, match=rf"more than {limit} blocks"):
        for _ in small.walk(root, on_error=lambda e: None):
            pass
    # it stopped at the limit: at most limit blocks visited, each copy read at most once
    assert 0 < small.blocks_read - before <= limit * copies_per_block(small)


def test_walk_second_parent_is_refused(fuzz_dir: Path) -> None:
    """A node whose two pointers name the same child: the child is walked once and the
    second visit is a FormatError (also through on_error)."""
    buf = _clean("rootdir-4k", fuzz_dir)
    m = map_image("rootdir-4k", buf)
    img = BtrfsImage.open(BytesSource(buf))
    fs = img.tree(C.FS_TREE_OBJECTID)
    assert fs is not None and fs.level >= 1
    node = img.read_tree_block(fs.bytenr, level=fs.level)
    assert node.nritems >= 2
    ed = Editor(m)
    try:
        for phys in img.chunk_map.map_read(node.logical, img.sb.nodesize):
            kp0 = phys + C.BTRFS_HEADER_SIZE
            kp1 = kp0 + C.BTRFS_KEY_PTR_SIZE
            ed.write(kp1 + 17, buf[kp0 + 17 : kp0 + 33])  # blockptr and generation
            ed.want_csum(phys)
        ed.fix_csums()
        img2 = BtrfsImage.open(BytesSource(buf))
        root = img2.tree(C.FS_TREE_OBJECTID)
        assert root is not None
        with pytest.raises(FormatError, match="reached twice"):
            list(img2.walk(root))
        errors: list[FormatError] = []
        seen = [b.logical for b in img2.walk(root, on_error=errors.append)]
        assert len(seen) == len(set(seen))
        assert [e.logical for e in errors] == [node.ptrs[0].blockptr]
        assert "reached twice" in errors[0].message
    finally:
        ed.restore()


def test_same_device_range_read_once(fuzz_dir: Path) -> None:
    """A DUP chunk whose two stripes name the same device range: a block is read once
    (its one bad copy is one error, not two)."""
    buf = _clean("default", fuzz_dir)
    m = map_image("default", buf)
    img = BtrfsImage.open(BytesSource(buf))
    fs = img.tree(C.FS_TREE_OBJECTID)
    assert fs is not None
    chunk = img.chunk_map.lookup(fs.bytenr)
    assert chunk is not None and chunk.type & C.BLOCK_GROUP_DUP and chunk.num_stripes == 2
    # the chunk item in the chunk tree: stripe 1's offset := stripe 0's
    ed = Editor(m)
    try:
        ct = img.tree(C.CHUNK_TREE_OBJECTID)
        assert ct is not None
        leaf = img.read_tree_block(ct.bytenr, level=0)
        slot = next(i for i, ih in enumerate(leaf.items) if ih.key == chunk.key)
        for phys in img.chunk_map.map_read(leaf.logical, img.sb.nodesize):
            body = phys + C.BTRFS_HEADER_SIZE + leaf.items[slot].offset
            ed.write(body + 48 + 32 + 8, buf[body + 48 + 8 : body + 48 + 16])
            ed.want_csum(phys)
        # and the fs tree root block's (single remaining) copy is corrupt
        first = img.chunk_map.map_read(fs.bytenr, img.sb.nodesize)[0]
        ed.xor(first + 200, 0xFF)
        ed.fix_csums()
        img2 = BtrfsImage.open(BytesSource(buf))
        assert img2.chunk_map.map_read(fs.bytenr, img.sb.nodesize) == [first, first]
        before = img2.blocks_read
        with pytest.raises(FormatError, match="checksum mismatch"):
            img2.read_tree_block(fs.bytenr)
        assert img2.blocks_read - before == 1
    finally:
        ed.restore()


# ---- heavier images (make vm-test) ----------------------------------------------------------

SLOW_IMAGES = ["kernel", "bg-tree", "mixed-bg", "csum-sha256", "nodesize-64k", "meta-single"]


@pytest.mark.slow
@pytest.mark.parametrize("image_map", SLOW_IMAGES, indirect=True)
@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_fuzz_more_images(image_map: ImageMap, data: st.DataObject) -> None:
    m = image_map
    op = st.one_of(byte_flips(m), field_sets(m), pointer_sets(m))
    ops = data.draw(st.lists(op, min_size=1, max_size=3), label="ops")
    cut = data.draw(st.none() | truncations(m), label="truncate_at")
    run_mutated(m, ops, cut)


# ---- the CLI in batches: what a user runs, on thousands of mutated images -----------------
#
# The mutants are made here (deterministically, from FUZZ_SEED) and run by a few worker
# processes (tests/fuzzcli.py) that call harness.cli.main(argv) in-process, with an alarm
# per command and RLIMIT_AS. Families: superblock fields, tree block header fields, item
# headers and bodies, truncation, pointer cycles (a node pointing at itself, an ancestor or a
# sibling's child), zeroed blocks; ext4 images get their superblock, group descriptor,
# bitmap, truncation and zeroed-block families (tests/ext4/ext4fuzz.py). Each btrfs mutant
# runs `btrfs check` and one more command in rotation (dump, dump --tree all, predict-mount
# --what-if, convert, check --check-data-csum, dump --json); each ext4 mutant `ext4 check`
# and `ext4 dump`.

CLI_BTRFS_IMAGES = ["rootdir", "rootdir-4k", "default"]
BTRFS_FAMILIES = ["superblock", "header", "items", "truncation", "pointers", "zeroed"]
BTRFS_SECOND = [
    ("btrfs", "dump", "{img}"),
    ("btrfs", "dump", "{img}", "--tree", "all"),
    ("btrfs", "predict-mount", "{img}", "--what-if", "bg-tree"),
    ("btrfs", "convert", "{img}", "{out}", "--layout", "bg-tree"),
    ("btrfs", "check", "{img}", "--check-data-csum"),
    ("btrfs", "dump", "{img}", "--json"),
]
FUZZ_SEED = int(os.environ.get("FSORACLE_FUZZ_SEED", "17"))
N_BTRFS = int(os.environ.get("FSORACLE_FUZZ_BTRFS", "2100"))
N_EXT4 = int(os.environ.get("FSORACLE_FUZZ_EXT4", "900"))
WORKERS = 2

# struct btrfs_super_block fields the CLI fuzz sets (include/uapi/linux/btrfs_tree.h offsets)
SUPER_FIELDS_CLI = [
    *SUPER_FIELDS,
    (56, "Q", "flags"),
    (64, "Q", "magic"),
    (120, "Q", "bytes_used"),
    (128, "Q", "root_dir_objectid"),
    (152, "I", "leafsize"),
    (156, "I", "stripesize"),
    (172, "Q", "compat_flags"),
    (201 + 8, "Q", "dev_item.total_bytes"),
    (201 + 16, "Q", "dev_item.bytes_used"),
    (201 + 32, "I", "dev_item.sector_size"),
    (201 + 44, "Q", "dev_item.generation"),
    (555, "Q", "cache_generation"),
    (563, "Q", "uuid_tree_generation"),
    (587, "Q", "nr_global_roots"),
]
SUPER_UUIDS = [(32, "fsid"), (201 + 66, "dev_item.uuid"), (201 + 82, "dev_item.fsid")]
HEADER_FIELDS = [
    (48, "Q", "bytenr"),
    (56, "Q", "flags"),
    (80, "Q", "generation"),
    (88, "Q", "owner"),
    (96, "I", "nritems"),
    (100, "B", "level"),
]
HEADER_UUIDS = [(32, "fsid"), (64, "chunk_tree_uuid")]


@dataclass
class CliMap:
    """An :class:`ImageMap` plus, for each tree block copy, the starts of all its copies."""

    m: ImageMap
    copies: dict[int, list[int]]
    path: Path


def cli_map(name: str, path: Path) -> CliMap:
    m = map_image(name, load_sparse(path))
    img = BtrfsImage.open(BytesSource(m.buf))
    copies: dict[int, list[int]] = {}
    for logical in m.logicals:
        phys = sorted(set(img.chunk_map.map_read(logical, m.nodesize)))
        for p in phys:
            copies[p] = phys
    return CliMap(m, copies, path)


def _absurd_value(rng: random.Random, m: ImageMap, fmt: str) -> int:
    top = (1 << (8 * WIDTH[fmt])) - 1
    pick = rng.randrange(5)
    if pick == 0:
        return rng.choice([0, 1, 2, 3, top, top - 1, top >> 1, (top >> 1) + 1])
    if pick == 1:
        return rng.choice([255, 256, 300, 4095, 4096, 65535, 65536])
    if pick == 2:
        return rng.choice([m.nodesize - 1, m.nodesize, m.nodesize + 1, m.nodesize * 2])
    if pick == 3 and m.logicals:
        return rng.choice(m.logicals) & top
    return rng.randrange(top + 1)


def _targets(cm: CliMap, off: int, all_copies: bool) -> list[int]:
    """``off`` and, with ``all_copies``, the same byte in the block's other copies."""
    start = cm.m.csum_target(off)
    if not all_copies or start is None or start not in cm.copies:
        return [off]
    return [c + (off - start) for c in cm.copies[start]]


def btrfs_mutant(cm: CliMap, family: str, rng: random.Random) -> tuple[Editor, int | None, str]:
    """Apply one family's mutation to the shared buffer (undone by ``Editor.restore``)."""
    m = cm.m
    ed = Editor(m)
    csum = rng.random() < 0.85
    every = rng.random() < 0.7
    cut: int | None = None
    note = ""

    def set_at(off: int, fmt: str, value: int, what: str) -> None:
        for t in _targets(cm, off, every):
            ed.set_field(Field(t, fmt, what), value)
            if csum:
                ed.want_csum(t)

    def flip_at(off: int) -> None:
        mask = rng.randrange(1, 256)
        for t in _targets(cm, off, every):
            ed.xor(t, mask)
            if csum:
                ed.want_csum(t)

    if family == "superblock":
        if rng.random() < 0.85:
            off, fmt, what = rng.choice(SUPER_FIELDS_CLI)
            value = _absurd_value(rng, m, fmt)
            set_at(C.SUPER_INFO_OFFSET + off, fmt, value, what)
            note = f"superblock.{what} = {value}"
        else:
            off, what = rng.choice(SUPER_UUIDS)
            flip_at(C.SUPER_INFO_OFFSET + off + rng.randrange(16))
            note = f"superblock.{what} byte flipped"
    elif family == "header":
        start = rng.choice(m.block_starts)
        if rng.random() < 0.8:
            off, fmt, what = rng.choice(HEADER_FIELDS)
            value = _absurd_value(rng, m, fmt)
            set_at(start + off, fmt, value, what)
            note = f"header.{what} of block at {start} = {value}"
        else:
            off, what = rng.choice(HEADER_UUIDS)
            flip_at(start + off + rng.randrange(16))
            note = f"header.{what} of block at {start} flipped"
    elif family == "items":
        item_fields = [f for f in m.fields if not f.what.startswith(("superblock", "header"))]
        for _ in range(rng.choice([1, 1, 1, 2])):
            if rng.random() < 0.7:
                f = rng.choice(item_fields)
                value = _absurd_value(rng, m, f.fmt)
                set_at(f.off, f.fmt, value, f.what)
                note += f"{f.what} at {f.off} = {value}; "
            else:
                start, length = rng.choice(m.regions["item-bodies"])
                off = start + rng.randrange(length)
                flip_at(off)
                note += f"item body byte at {off} flipped; "
    elif family == "pointers":
        f, holder = rng.choice(m.pointer_fields)
        kind = rng.choice(["self", "ancestor", "sibling", "other"])
        if kind == "self" and holder:
            target = holder
        elif kind == "ancestor" and m.ancestors.get(holder):
            target = rng.choice(m.ancestors[holder])
        elif kind == "sibling" and m.children.get(holder):
            target = rng.choice(m.children[holder])
        else:
            target = rng.choice(m.logicals)
        target += rng.choice([0, 0, 0, 0, m.nodesize, -m.nodesize, m.sb.sectorsize, 1])
        set_at(f.off, f.fmt, target & ((1 << 64) - 1), f.what)
        note = f"{f.what} at {f.off} ({kind}) = {target}"
    elif family == "truncation":
        near = rng.choice(["anywhere", "superblock", "block", "block", "block"])
        if near == "anywhere":
            cut = rng.randrange(len(m.buf) + 1)
        elif near == "superblock":
            cut = C.SUPER_INFO_OFFSET + rng.randrange(-1, C.SUPER_INFO_SIZE + 1)
        else:
            cut = rng.choice(m.block_starts) + rng.choice(
                [0, 1, C.BTRFS_HEADER_SIZE, m.nodesize - 1, m.nodesize]
            )
        note = f"truncated to {cut}"
    elif family == "zeroed":
        pick = rng.randrange(4)
        if pick <= 1:
            start = rng.choice(m.block_starts)
            for t in _targets(cm, start, every or pick == 1):
                ed.write(t, bytes(m.nodesize))
            note = f"tree block at {start} zeroed ({'every copy' if every else 'one copy'})"
        elif pick == 2:
            base = C.SUPER_INFO_OFFSET + 811
            ed.write(base, bytes(m.sb.sys_chunk_array_size))
            if csum:
                ed.want_csum(C.SUPER_INFO_OFFSET)
            note = "sys_chunk_array zeroed"
        else:
            start = rng.choice(m.block_starts)
            n = rng.choice([512, 4096])
            off = start + rng.randrange(0, m.nodesize, 512)
            for t in _targets(cm, off, every):
                ed.write(t, bytes(n))
            note = f"{n} bytes zeroed at {off}"
    else:
        raise KeyError(family)
    ed.fix_csums()
    return ed, cut, note


def btrfs_mutants(maps: list[CliMap], n: int, seed: int, first_id: int) -> list[Mutant]:
    rng = random.Random(seed)
    out: list[Mutant] = []
    for i in range(n):
        cm = maps[i % len(maps)]
        family = BTRFS_FAMILIES[(i // len(maps)) % len(BTRFS_FAMILIES)]
        ed, cut, note = btrfs_mutant(cm, family, rng)
        try:
            patches = tuple((off, bytes(cm.m.buf[off : off + len(d)])) for off, d in ed.saved)
        finally:
            ed.restore()
        ident = first_id + i
        out.append(
            Mutant(
                ident,
                "btrfs",
                cm.m.name,
                family,
                patches,
                cut,
                (("btrfs", "check", "{img}"), BTRFS_SECOND[ident % len(BTRFS_SECOND)]),
                note,
            )
        )
    return out


# ---- ext4 mutants ---------------------------------------------------------------------------

EXT4_FAMILIES = ["superblock", "descriptors", "bitmaps", "pointers", "truncation", "zeroed"]
# name -> (mke2fs options, size); populated from tests.btrfs.images.populate_tree
CLI_EXT4_IMAGES: dict[str, tuple[list[str], int]] = {
    "ext4-4k": (["-b", "4096"], 64 << 20),
    "ext4-1k-crc16": (["-b", "1024", "-O", "^metadata_csum,uninit_bg"], 32 << 20),
}
EXT4_SECOND = [("ext4", "dump", "{img}"), ("ext4", "dump", "{img}", "--json")]


def make_ext4(name: str, path: Path) -> Path:
    import shutil
    import subprocess
    import tempfile

    from tests.btrfs.images import populate_tree

    opts, size = CLI_EXT4_IMAGES[name]
    src = Path(tempfile.mkdtemp(prefix="fsoracle-ext4-rootdir-"))
    try:
        populate_tree(src)
        with open(path, "wb") as f:
            f.truncate(size)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", *opts, "-d", str(src), str(path)],
            check=True,
            capture_output=True,
        )
    finally:
        shutil.rmtree(src)
    return path


@dataclass
class Ext4Map:
    name: str
    buf: bytearray
    fields: list[tuple[int, str, str]]
    bitmaps: list[tuple[int, int]]
    blocksize: int
    meta_blocks: list[int]  # offsets of blocks a descriptor points at, and of the GDT


def ext4_map(name: str, path: Path) -> Ext4Map:
    from tests.ext4.ext4fuzz import ext4_bitmap_blocks, ext4_fields

    buf = load_sparse(path)
    fields = ext4_fields(buf)
    log = struct.unpack_from("<I", buf, 1024 + 24)[0]
    bs = 1024 << log
    metas = sorted({off for off, _ in ext4_bitmap_blocks(buf)})
    desc = [off for off, _, n in fields if n.startswith("bg[")]
    gdt = sorted({o - o % bs for o in desc})
    return Ext4Map(name, buf, fields, ext4_bitmap_blocks(buf), bs, sorted(set(metas + gdt)))


def ext4_mutant(
    em: Ext4Map, family: str, rng: random.Random
) -> tuple[list[tuple[int, bytes]], int | None, str]:
    """(patches, truncation, note) for one mutation of ``em``'s clean bytes."""
    from tests.ext4.ext4fuzz import fix_ext4_csums

    buf = em.buf
    saved: list[tuple[int, bytes]] = []

    def write(off: int, data: bytes) -> None:
        data = data[: max(0, len(buf) - off)]
        saved.append((off, bytes(buf[off : off + len(data)])))
        buf[off : off + len(data)] = data

    def set_field(off: int, fmt: str, value: int) -> None:
        w = WIDTH[fmt]
        write(off, (value & ((1 << (8 * w)) - 1)).to_bytes(w, "little"))

    sb_fields = [f for f in em.fields if not f[2].startswith("bg[")]
    bg_fields = [f for f in em.fields if f[2].startswith("bg[")]
    cut: int | None = None
    note = ""
    if family == "superblock":
        off, fmt, name = rng.choice(sb_fields)
        top = (1 << (8 * WIDTH[fmt])) - 1
        old = int.from_bytes(buf[off : off + WIDTH[fmt]], "little")
        value = rng.choice(
            [
                0,
                1,
                top,
                top >> 1,
                old + 1,
                old - 1,
                old * 2,
                old ^ (1 << rng.randrange(8 * WIDTH[fmt])),
                rng.randrange(top + 1),
            ]
        )
        set_field(off, fmt, value)
        note = f"{name} = {value & top}"
    elif family == "descriptors":
        off, fmt, name = rng.choice(bg_fields)
        top = (1 << (8 * WIDTH[fmt])) - 1
        old = int.from_bytes(buf[off : off + WIDTH[fmt]], "little")
        value = rng.choice(
            [
                0,
                1,
                top,
                old + 1,
                old - 1,
                old ^ (1 << rng.randrange(8 * WIDTH[fmt])),
                rng.randrange(top + 1),
            ]
        )
        set_field(off, fmt, value)
        note = f"{name} = {value & top}"
    elif family == "bitmaps":
        off, length = rng.choice(em.bitmaps)
        for _ in range(rng.choice([1, 1, 2, 8])):
            at = off + rng.randrange(length)
            write(at, bytes([buf[at] ^ (1 << rng.randrange(8))]))
        note = f"bits flipped in the bitmap at {off}"
    elif family == "pointers":
        ptrs = [f for f in bg_fields if f[2].endswith(("_bitmap_lo", "_table_lo"))]
        off, fmt, name = rng.choice(ptrs)
        target = rng.choice(em.meta_blocks) // em.blocksize + rng.choice([0, 0, 1, -1])
        set_field(off, fmt, target)
        note = f"{name} = block {target}"
    elif family == "truncation":
        near = rng.choice(["anywhere", "meta", "meta", "superblock"])
        if near == "anywhere":
            cut = rng.randrange(len(buf) + 1)
        elif near == "superblock":
            cut = 1024 + rng.randrange(-1, 1025)
        else:
            cut = rng.choice(em.meta_blocks) + rng.choice([0, 1, em.blocksize - 1, em.blocksize])
        note = f"truncated to {cut}"
        if rng.random() < 0.5 and cut > 2048:
            # and the superblock shrunk to match (a bad resize): the kernel's geometry check
            # passes, the groups past the end are what is missing
            blocks = cut // em.blocksize
            off = next(o for o, _, n in em.fields if n == "s_blocks_count_lo")
            set_field(off, "I", blocks)
            note += f", s_blocks_count_lo = {blocks}"
    elif family == "zeroed":
        if rng.random() < 0.2:
            write(1024, bytes(1024))
            note = "superblock zeroed"
        else:
            at = rng.choice(em.meta_blocks)
            write(at, bytes(em.blocksize))
            note = f"block at {at} zeroed"
    else:
        raise KeyError(family)
    fixed = rng.random() < 0.85
    if fixed:
        before = {o: bytes(buf[o : o + n]) for o, n in _csum_regions(em)}
        fix_ext4_csums(buf, bitmaps=rng.random() < 0.7)
        for o, old in before.items():
            if bytes(buf[o : o + len(old)]) != old:
                saved.append((o, old))
        note += " (checksums fixed)"
    try:
        patches = [(o, bytes(buf[o : o + len(d)])) for o, d in saved]
    finally:
        for o, d in reversed(saved):
            buf[o : o + len(d)] = d
    return patches, cut, note


def _csum_regions(em: Ext4Map) -> list[tuple[int, int]]:
    """What fix_ext4_csums may write: the superblock and the descriptor blocks."""
    gdt = sorted({o - o % em.blocksize for o, _, n in em.fields if n.startswith("bg[")})
    return [(1024, 1024)] + [(o, em.blocksize) for o in gdt]


def ext4_mutants(maps: list[Ext4Map], n: int, seed: int, first_id: int) -> list[Mutant]:
    rng = random.Random(seed)
    out: list[Mutant] = []
    for i in range(n):
        em = maps[i % len(maps)]
        family = EXT4_FAMILIES[(i // len(maps)) % len(EXT4_FAMILIES)]
        patches, cut, note = ext4_mutant(em, family, rng)
        ident = first_id + i
        cmds = (("ext4", "check", "{img}"), EXT4_SECOND[ident % len(EXT4_SECOND)])
        out.append(Mutant(ident, "ext4", em.name, family, tuple(patches), cut, cmds, note))
    return out


def run_cli_fuzz(
    mutants: list[Mutant], clean: dict[str, Path], workdir: Path
) -> tuple[list[Outcome], float]:
    """The mutants in batches on ``WORKERS`` spawned processes; (outcomes, seconds). A
    worker that cannot start breaks the pool (an error here), it is not restarted."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    workdir.mkdir(parents=True, exist_ok=True)
    batches = [mutants[i : i + 25] for i in range(0, len(mutants), 25)]
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(
        WORKERS,
        mp_context=mp.get_context("spawn"),
        initializer=init_worker,
        initargs=(str(workdir), {k: str(v) for k, v in clean.items()}),
    ) as pool:
        for res in pool.map(run_batch, batches):
            outcomes += res
    return outcomes, time.monotonic() - t0


def histogram(outcomes: list[Outcome]) -> str:
    """Family x status table (one row per fs/family/command kind)."""
    statuses = ["0", "1", "2", *FAILURES]
    rows: dict[tuple[str, str, str], Counter[str]] = {}
    for o in outcomes:
        kind = o.command.split()[1] if o.command.split()[1] != "check" else o.command
        rows.setdefault((o.fs, o.family, kind), Counter())[str(o.status)] += 1
    lines = ["| fs | family | command | " + " | ".join(statuses) + " |"]
    lines.append("|---|---|---|" + "---:|" * len(statuses))
    for (fs, fam, kind), c in sorted(rows.items()):
        lines.append(f"| {fs} | {fam} | {kind} | " + " | ".join(str(c[s]) for s in statuses) + " |")
    return "\n".join(lines)


def describe(o: Outcome, m: Mutant | None) -> str:
    if m is None:
        return f"`{o.command}`: {o.status}: {o.detail}"
    return (
        f"mutant {m.ident} ({m.fs} {m.image}, {m.family}: {m.note.strip()}) `{o.command}`:"
        f" {o.status}: {o.detail.strip()[-600:]}"
    )


CHECKS = ("btrfs check", "ext4 check")


def test_cli_fuzz_batch(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Thousands of mutated btrfs and ext4 images through the CLI: exit status only 0, 1 or
    2, no traceback, no hang, bounded memory, inputs unchanged; at least a quarter of the
    images end in a finding (exit 1), and every family reaches the checker."""
    require_tool("mkfs.btrfs")
    require_tool("mkfs.ext4")
    d = tmp_path_factory.mktemp("cli-fuzz")
    clean = {n: make_image(n, d / f"{n}.img", size=FUZZ_SIZE) for n in CLI_BTRFS_IMAGES}
    mutants = btrfs_mutants([cli_map(n, p) for n, p in clean.items()], N_BTRFS, FUZZ_SEED, 0)
    ext4 = {n: make_ext4(n, d / f"{n}.img") for n in CLI_EXT4_IMAGES}
    mutants += ext4_mutants(
        [ext4_map(n, p) for n, p in ext4.items()], N_EXT4, FUZZ_SEED + 1, len(mutants)
    )
    clean |= ext4
    hashes = {k: content_hash(p) for k, p in clean.items()}
    outcomes, secs = run_cli_fuzz(mutants, clean, d / "work")
    by_id = {m.ident: m for m in mutants}
    print(f"\n{len(mutants)} mutated images, {len(outcomes)} commands in {secs:.0f} s")
    print(histogram(outcomes))
    per: dict[str, list[float]] = {}
    for o in outcomes:
        per.setdefault(o.command, []).append(o.seconds)
    for cmd, ts in sorted(per.items()):
        print(
            f"  {cmd}: {len(ts)} runs, mean {1000 * sum(ts) / len(ts):.0f} ms, max {max(ts):.1f} s"
        )
    assert {k: content_hash(p) for k, p in clean.items()} == hashes
    bad = [o for o in outcomes if o.status not in (0, 1, 2)]
    assert not bad, f"{len(bad)} failures:\n" + "\n".join(
        describe(o, by_id.get(o.ident)) for o in bad[:12]
    )
    assert len({o.ident for o in outcomes}) == len(mutants)
    found = {o.ident for o in outcomes if o.command in CHECKS and o.status == 1}
    assert len(found) >= 0.25 * len(mutants), f"only {len(found)} of {len(mutants)} found"
    assert len(mutants) >= 3000 or (N_BTRFS, N_EXT4) != (2100, 900)
    for fs, families in (("btrfs", BTRFS_FAMILIES), ("ext4", EXT4_FAMILIES)):
        for fam in families:
            reached = [
                o
                for o in outcomes
                if o.fs == fs and o.family == fam and o.command in CHECKS and o.status in (0, 1)
            ]
            assert reached, f"no {fs} {fam} mutant reached the checker"


def test_planted_internal_bug_is_a_traceback(
    btrfs_image: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The no-traceback rule can fail: an internal bug (planted here, test-only: the checker
    indexes an empty list) is not turned into a one-line error. The fuzz worker classifies
    it as ``traceback``, and the CLI run as a program prints the traceback and exits 1;
    a user-caused error on the same command stays one line."""
    import signal
    import subprocess
    import sys

    import model.btrfs.check as check_mod
    from tests.fuzzcli import _on_alarm, run_main

    img = str(btrfs_image("default"))
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        with monkeypatch.context() as mp:
            mp.setattr(check_mod, "btrfs_check", lambda *a, **k: [][0])
            status, detail, _ = run_main(["btrfs", "check", img])
        assert status == "traceback" and "IndexError" in detail
        status, detail, _ = run_main(["btrfs", "check", img + ".missing"])
        assert status == 2 and "no such file" in detail
    finally:
        signal.signal(signal.SIGALRM, old)
    planted = (
        "import sys, model.btrfs.check as c\n"
        "c.btrfs_check = lambda *a, **k: [][0]\n"
        "from harness.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", planted, "btrfs", "check", img], capture_output=True, text=True
    )
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and "IndexError" in r.stderr
