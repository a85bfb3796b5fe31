"""The tree checker (``model/btrfs/tree_checker.py``) against real images and against
single-field edits of them.

Real images: ``btrfs check`` passes them (the 'kernel' ones were also written and mounted by
the host kernel), so the kernel's tree-checker rules must find nothing in them.

Edits: each case takes a real leaf or node, changes one field (recomputing the block's
checksum on every copy) and asserts that the rule the kernel source names fires, with the
kernel's message. The expected text is copied from ``fs/btrfs/tree-checker.c`` of Linux 6.12
(the line is cited per case). Where btrfs-progs notices the same edit, the case also runs
``btrfs check`` (or ``dump-tree``) and asserts what it prints.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.btrfs import constants as C
from model.btrfs import tree_checker as tc
from model.btrfs.check import btrfs_check
from model.btrfs.csum import btrfs_name_hash, csum_block
from model.btrfs.findings import BtrfsFinding
from model.btrfs.items import Key
from model.btrfs.reader import BtrfsImage
from model.btrfs.treeblock import TreeBlock, parse_tree_block
from model.linux import U64
from tests.btrfs.images import VARIANTS
from tests.btrfs.imgedit import (
    build_leaf,
    find_node,
    find_slot,
    get,
    item_body,
    item_hdr,
    key_ptr,
    open_image,
    put,
    rewrite_block,
    sparse_copy,
)
from tests.tools import require_tool, run


def tree_checker_findings(img: BtrfsImage) -> list[BtrfsFinding]:
    """Walk every tree (the reader runs the checker on each block read) and return the
    tree-checker findings."""
    btrfs_check(img)
    return [f for f in img.findings if f.code == "tree-checker"]


# ---- real images --------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_real_image_passes_tree_checker(btrfs_image, name: str) -> None:  # type: ignore[no-untyped-def]
    path = btrfs_image(name)
    require_tool("btrfs")
    r = run(["btrfs", "check", "--readonly", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr  # the premise: btrfs-progs passes it
    img = open_image(path)
    found = tree_checker_findings(img)
    assert found == [], "\n".join(map(str, found))
    # the walk did run the checker over something
    assert img.blocks_read >= len(img.trees())


# ---- single-field edits -------------------------------------------------------------------

Mutate = Callable[[bytearray, TreeBlock, int], None]
Pred = Callable[[TreeBlock, int, Key], bool]


@dataclass(frozen=True)
class Case:
    id: str
    image: str
    tree: int
    pred: Pred | None  # None: the first node of the tree (slot 0)
    mutate: Mutate
    expect: str  # regular expression over the finding's message
    kline: int  # line of fs/btrfs/tree-checker.c (Linux 6.12) with the message
    progs: str | None = None  # regular expression over `btrfs check` output
    names_key: bool = True  # False: the block has no slot left to name
    # btrfs-progs' own tree-checker (kernel-shared/tree-checker.c) prints the kernel's line
    progs_same: bool = False


def key_type(t: int) -> Pred:
    return lambda blk, slot, k: k.type == t


def first_slot_of_type(t: int, min_slot: int = 0) -> Pred:
    return lambda blk, slot, k: k.type == t and slot >= min_slot


def set_body(off: int, fmt: str, value: int | Callable[[bytearray, TreeBlock, int], int]) -> Mutate:
    """Set a field ``off`` bytes into the item body."""

    def m(raw: bytearray, blk: TreeBlock, slot: int) -> None:
        v = value(raw, blk, slot) if callable(value) else value
        put(raw, item_body(blk, slot) + off, fmt, v)

    return m


def reg_extent(blk: TreeBlock, slot: int, k: Key) -> bool:
    """A regular (non-inline) file extent."""
    return k.type == C.EXTENT_DATA_KEY and blk.items[slot].size == 53


def dir_item(blk: TreeBlock, slot: int, k: Key) -> bool:
    return k.type == C.DIR_ITEM_KEY and blk.items[slot].size > 30


def swap_with_next_key(raw: bytearray, blk: TreeBlock, slot: int) -> None:
    a, b = item_hdr(slot), item_hdr(slot + 1)
    ka, kb = bytes(raw[a : a + 17]), bytes(raw[b : b + 17])
    raw[a : a + 17], raw[b : b + 17] = kb, ka


def grow_next_item(raw: bytearray, blk: TreeBlock, slot: int) -> None:
    """Make slot+1's body 8 bytes longer: it now overlaps slot's body."""
    h = item_hdr(slot + 1) + 21
    put(raw, h, "I", get(raw, h, "I") + 8)


def clear_nritems(raw: bytearray, blk: TreeBlock, slot: int) -> None:
    put(raw, 96, "I", 0)


def set_header_flags(value: int) -> Mutate:
    def m(raw: bytearray, blk: TreeBlock, slot: int) -> None:
        put(raw, 56, "Q", value)

    return m


def set_owner(value: int) -> Mutate:
    def m(raw: bytearray, blk: TreeBlock, slot: int) -> None:
        put(raw, 88, "Q", value)

    return m


def misalign_ptr(raw: bytearray, blk: TreeBlock, slot: int) -> None:
    off = key_ptr(0) + 17
    put(raw, off, "Q", get(raw, off, "Q") + 512)


def zero_ptr(raw: bytearray, blk: TreeBlock, slot: int) -> None:
    put(raw, key_ptr(0) + 17, "Q", 0)


def swap_node_keys(raw: bytearray, blk: TreeBlock, slot: int) -> None:
    a, b = key_ptr(0), key_ptr(1)
    ka, kb = bytes(raw[a : a + 17]), bytes(raw[b : b + 17])
    raw[a : a + 17], raw[b : b + 17] = kb, ka


def set_key_objectid(value: int) -> Mutate:
    def m(raw: bytearray, blk: TreeBlock, slot: int) -> None:
        put(raw, item_hdr(slot), "Q", value)

    return m


def add_key_offset(delta: int) -> Mutate:
    def m(raw: bytearray, blk: TreeBlock, slot: int) -> None:
        off = item_hdr(slot) + 9
        put(raw, off, "Q", get(raw, off, "Q") + delta)

    return m


def key_offset_after_prev(delta: int) -> Mutate:
    """Key offset = the previous item's key offset + delta (still in key order)."""

    def m(raw: bytearray, blk: TreeBlock, slot: int) -> None:
        put(raw, item_hdr(slot) + 9, "Q", blk.items[slot - 1].key.offset + delta)

    return m


def chunk_not_system(blk: TreeBlock, slot: int, k: Key) -> bool:
    if k.type != C.CHUNK_ITEM_KEY:
        return False
    ctype = get(blk.raw, item_body(blk, slot) + 24, "Q")
    return not ctype & C.BLOCK_GROUP_SYSTEM


def bg_used_past_length(raw: bytearray, blk: TreeBlock, slot: int) -> int:
    return blk.items[slot].key.offset + 4096


EXTENT, CHUNK, DEV, FS, ROOT = (
    C.EXTENT_TREE_OBJECTID,
    C.CHUNK_TREE_OBJECTID,
    C.DEV_TREE_OBJECTID,
    C.FS_TREE_OBJECTID,
    C.ROOT_TREE_OBJECTID,
)

CASES = [
    Case(
        "bg-used-gt-length",
        "default",
        EXTENT,
        key_type(C.BLOCK_GROUP_ITEM_KEY),
        set_body(0, "Q", bg_used_past_length),
        r"slot=\d+ bg_start=\d+ bg_len=\d+, invalid block group used, "
        r"have (\d+) expect \[0, \d+\)",
        737,
        progs=r"block group \[\d+ \d+\] used \d+ but extent items used",
    ),
    Case(
        "bg-chunk-objectid",
        "default",
        EXTENT,
        key_type(C.BLOCK_GROUP_ITEM_KEY),
        set_body(8, "Q", 257),
        r"invalid block group chunk objectid, have 257 expect 256",
        729,
    ),
    Case(
        "bg-two-profiles",
        "default",
        EXTENT,
        key_type(C.BLOCK_GROUP_ITEM_KEY),
        set_body(16, "Q", C.BLOCK_GROUP_DATA | C.BLOCK_GROUP_RAID1 | C.BLOCK_GROUP_DUP),
        r"invalid profile flags, have 0x30 \(2 bits set\) expect no more than 1 bit set",
        745,
    ),
    Case(
        "chunk-num-stripes-0",
        "default",
        CHUNK,
        chunk_not_system,
        set_body(44, "H", 0),
        r"corrupt leaf: root=3 block=\d+ slot=\d+ chunk_start=\d+, "
        r"invalid chunk num_stripes, have 0",
        846,
        progs_same=True,
    ),
    Case(
        "chunk-stripe-len",
        "default",
        CHUNK,
        chunk_not_system,
        set_body(16, "Q", 4096),
        r"invalid chunk stripe length: 4096",
        887,
        progs_same=True,
    ),
    Case(
        "inode-mode-no-type",
        "default",
        FS,
        key_type(C.INODE_ITEM_KEY),
        set_body(52, "I", 0o755),
        r"slot=\d+ ino=256, invalid mode: has 00 expect valid S_IF\* bit\(s\)",
        1148,
        progs=r"root 5 inode 256 errors 80000, invalid inode mode bit 00\b",
    ),
    Case(
        "inode-mode-unknown-bit",
        "default",
        FS,
        key_type(C.INODE_ITEM_KEY),
        set_body(52, "I", 0o240755),
        r"unknown mode bit detected: 0x10000",
        1135,
        progs=r"invalid inode mode bit 0240000",
    ),
    Case(
        "inode-dir-nlink",
        "default",
        FS,
        key_type(C.INODE_ITEM_KEY),
        set_body(40, "I", 2),
        r"invalid nlink: has 2 expect no more than 1 for dir",
        1155,
        progs=r"directory has invalid nlink 2",
    ),
    Case(
        "dir-name-len-300",
        "rootdir",
        FS,
        dir_item,
        set_body(27, "H", 300),
        r"ino=\d+, dir item name len too long, have 300 max 255",
        604,
        progs=r"name too long",
    ),
    Case(
        "dir-bad-type",
        "rootdir",
        FS,
        dir_item,
        set_body(29, "B", C.FT_MAX),
        r"invalid dir item type, have 9 expect \(0, 9\)",
        576,
        progs=r"filetype mismatch",
    ),
    Case(
        "dir-location-type",
        "rootdir",
        FS,
        dir_item,
        set_body(8, "B", C.EXTENT_DATA_KEY),
        r"invalid location key type, have 108, expect 132 or 1",
        565,
        progs=r"no dir item",
    ),
    Case(
        "dir-name-hash",
        "rootdir",
        FS,
        dir_item,
        set_body(30, "B", ord("~")),
        r"name hash mismatch with key, have 0x[0-9a-f]{16} expect 0x[0-9a-f]{16}",
        646,
        progs=r"no dir item",
    ),
    Case(
        "file-extent-type-3",
        "rootdir",
        FS,
        reg_extent,
        set_body(20, "B", 3),
        r"ino=\d+ file_offset=\d+, invalid type for file extent, have 3 expect range \[0, 2\]",
        249,
        progs=r"bad file extent",
    ),
    Case(
        "items-out-of-order",
        "default",
        ROOT,
        first_slot_of_type(C.ROOT_ITEM_KEY),
        swap_with_next_key,
        r"bad key order, prev \(\d+ \d+ \d+\) current \(\d+ \d+ \d+\)",
        2109,
        progs_same=True,
    ),
    Case(
        "item-overlaps-next",
        "default",
        ROOT,
        first_slot_of_type(C.ROOT_ITEM_KEY),
        grow_next_item,
        r"unexpected item end, have (\d+) expect \d+",
        2130,
        progs_same=True,
    ),
    Case(
        "dev-tree-empty-leaf",
        "default",
        DEV,
        lambda blk, slot, k: slot == 0,
        clear_nritems,
        r"slot=0, invalid root, root 4 must never be empty",
        2059,
        names_key=False,
        progs=r"errors found in extent allocation tree or chunk allocation",
    ),
    Case(
        "leaf-written-flag",
        "default",
        DEV,
        lambda blk, slot, k: slot == 0,
        set_header_flags(C.MIXED_BACKREF_REV << C.BACKREF_REV_SHIFT),
        r"invalid flag for leaf, WRITTEN not set",
        2037,
    ),
    Case(
        "owner-mismatch",
        "default",
        DEV,
        lambda blk, slot, k: slot == 0,
        set_owner(C.CSUM_TREE_OBJECTID),
        r"corrupted leaf, root=4 block=\d+ owner mismatch, have 7 expect 4",
        2282,
        names_key=False,
        progs=r"errors found in extent allocation tree or chunk allocation",
    ),
    Case(
        "dev-item-devid",
        "default",
        CHUNK,
        key_type(C.DEV_ITEM_KEY),
        set_body(0, "Q", 2),
        r"slot=\d+ devid=1 devid mismatch: key has=1 item has=2",
        1061,
        progs=r"errors found in extent allocation tree or chunk allocation",
    ),
    Case(
        "dev-extent-chunk-tree",
        "default",
        DEV,
        key_type(C.DEV_EXTENT_KEY),
        set_body(0, "Q", 5),
        r"invalid dev extent chunk tree id, has 5 expect 3",
        1893,
    ),
    Case(
        "root-item-level",
        "default",
        ROOT,
        key_type(C.ROOT_ITEM_KEY),
        set_body(238, "B", 8),
        r"invalid root level, have 8 expect \[0, 7\]",
        1241,
        progs=r"root \[2 0\] level 0 does not match 8",
    ),
    Case(
        "extent-flags-both",
        "default",
        EXTENT,
        key_type(C.METADATA_ITEM_KEY),
        set_body(16, "Q", C.EXTENT_FLAG_DATA | C.EXTENT_FLAG_TREE_BLOCK),
        r"corrupt leaf: block=\d+ slot=\d+ extent bytenr=\d+ len=16384 "
        r"invalid extent flag, have 0x3 expect 1 bit set in 0x3",
        1451,
    ),
    Case(
        "csum-item-unaligned",
        "rootdir",
        C.CSUM_TREE_OBJECTID,
        lambda blk, slot, k: slot == 1,
        add_key_offset(512),
        r"unaligned key offset for csum item, have \d+ should be aligned to 4096",
        380,
        progs=r"errors found in csum tree",
    ),
    Case(
        "csum-item-overlap",
        "rootdir",
        C.CSUM_TREE_OBJECTID,
        lambda blk, slot, k: slot == 1,
        key_offset_after_prev(4096),
        r"slot=0, csum end range \(\d+\) goes beyond the start range \(\d+\) of the next csum",
        399,
        progs=r"some csum missing",
    ),
    Case(
        "inode-ref-name-len-0",
        "rootdir",
        FS,
        key_type(C.INODE_REF_KEY),
        set_body(8, "H", 0),
        r"invalid inode ref name length, has 0 expect \[1, 255\]",
        1807,
        progs=r"odd dir item",
    ),
    Case(
        "node-unaligned-ptr",
        "rootdir-4k",
        FS,
        None,
        misalign_ptr,
        r"corrupt node: root=5 block=\d+ slot=0, unaligned pointer, have \d+ "
        r"should be aligned to 4096",
        2223,
        progs_same=True,
    ),
    Case(
        "node-null-ptr",
        "rootdir-4k",
        FS,
        None,
        zero_ptr,
        r"slot=0, invalid NULL node pointer",
        2218,
        progs_same=True,
    ),
    Case(
        "node-key-order",
        "rootdir-4k",
        FS,
        None,
        swap_node_keys,
        r"slot=0, bad key order, current \(\d+ \d+ \d+\) next \(\d+ \d+ \d+\)",
        2230,
        progs_same=True,
    ),
]


def _edit(tmp_path: Path, btrfs_image, case: Case) -> tuple[Path, TreeBlock, int]:  # type: ignore[no-untyped-def]
    path = sparse_copy(btrfs_image(case.image), tmp_path / f"{case.id}.img")
    img = open_image(path)
    if case.pred is None:
        blk, slot = find_node(img, case.tree), 0
    else:
        blk, slot = find_slot(img, case.tree, case.pred)
    rewrite_block(path, img, blk.logical, lambda raw: case.mutate(raw, blk, slot))
    return path, blk, slot


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_edit_fires_kernel_rule(tmp_path: Path, btrfs_image, case: Case) -> None:  # type: ignore[no-untyped-def]
    path, blk, slot = _edit(tmp_path, btrfs_image, case)
    errors: list[Exception] = []
    img = open_image(path, errors)
    found = tree_checker_findings(img)
    assert found, f"{case.id}: no tree-checker finding (read errors: {errors})"
    # the kernel rejects the block at its first violation: exactly one finding, on it
    on_block = [f for f in found if f.bytenr == blk.logical]
    assert len(on_block) == 1, "\n".join(map(str, found))
    f = on_block[0]
    assert re.search(case.expect, f.message), f"{case.id}: {f.message}"
    # the message names the slot and its key (the edited slot, or its neighbour for the
    # rules reported on slot - 1 / detected at slot + 1)
    m = re.search(r"slot=(\d+)", f.message)
    if m is not None:
        assert abs(int(m.group(1)) - slot) <= 1
    if case.names_key:
        assert "; key (" in f.message
    if case.progs is not None or case.progs_same:
        require_tool("btrfs")
        r = run(["btrfs", "check", "--readonly", str(path)])
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        if case.progs is not None:
            assert re.search(case.progs, out), out
        if case.progs_same:  # the same line, word for word
            assert f.message.split("; key ")[0] in out.splitlines(), out


def test_bg_used_message_values(tmp_path: Path, btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """The numbers in the message are the edited ones: used = length + 4096."""
    case = CASES[0]
    path, blk, slot = _edit(tmp_path, btrfs_image, case)
    key = blk.items[slot].key
    found = tree_checker_findings(open_image(path))
    want = (
        f"corrupt leaf: root=2 block={blk.logical} slot={slot} bg_start={key.objectid} "
        f"bg_len={key.offset}, invalid block group used, have {key.offset + 4096} "
        f"expect [0, {key.offset}); key ({key.objectid} 192 {key.offset})"
    )
    assert [f.message for f in found] == [want]


# ---- rules checked on a block in memory (no walk needed) ----------------------------------


def _leaf(btrfs_image, name: str, tree: int, pred: Pred):  # type: ignore[no-untyped-def]
    img = open_image(btrfs_image(name))
    blk, slot = find_slot(img, tree, pred)
    return img, blk, slot


def _check(
    img: BtrfsImage, raw: bytearray, logical: int, owner_root: int | None = None
) -> list[str]:
    blk = parse_tree_block(bytes(raw), logical, 0)
    return [f.message for f in tc.check_tree_block(blk, img.sb, owner_root=owner_root)]


def test_extent_tree_may_be_empty_only_with_extent_tree_v2(btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """tree-checker.c:2072-2078: an empty extent tree leaf is corrupt unless
    EXTENT_TREE_V2 (checked before the owner==EXTENT rule)."""
    img, blk, _ = _leaf(btrfs_image, "default", EXTENT, lambda b, s, k: s == 0)
    raw = bytearray(blk.raw)
    put(raw, 96, "I", 0)
    assert _check(img, raw, blk.logical) == [
        f"corrupt leaf: root=2 block={blk.logical} slot=0, invalid root, root 2 must never be empty"
    ]
    from dataclasses import replace

    v2 = replace(img.sb, incompat_flags=img.sb.incompat_flags | C.INCOMPAT_EXTENT_TREE_V2)
    assert tc.check_tree_block(parse_tree_block(bytes(raw), blk.logical, 0), v2) == []
    # a RELOC leaf is exempt (tree-checker.c:2049)
    put(raw, 56, "Q", get(raw, 56, "Q") | C.HEADER_FLAG_RELOC)
    assert _check(img, raw, blk.logical) == []
    # owner 0 is not a tree (tree-checker.c:2066)
    put(raw, 56, "Q", get(raw, 56, "Q") & ~C.HEADER_FLAG_RELOC)
    put(raw, 88, "Q", 0)
    assert _check(img, raw, blk.logical) == [
        f"corrupt leaf: root=0 block={blk.logical} slot=0, invalid owner, root 0 is not defined"
    ]
    # an empty csum tree leaf is fine (mkfs writes one)
    put(raw, 88, "Q", C.CSUM_TREE_OBJECTID)
    assert _check(img, raw, blk.logical) == []


def test_node_last_pointer_not_checked(btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """__btrfs_check_node loops `slot < nr - 1` (tree-checker.c:2212): the last pointer's
    NULL/alignment is not the tree checker's business (the read of the child fails)."""
    img = open_image(btrfs_image("rootdir-4k"))
    node = find_node(img, FS)
    raw = bytearray(node.raw)
    put(raw, key_ptr(node.nritems - 1) + 17, "Q", 0)
    assert _check(img, raw, node.logical) == []
    put(raw, key_ptr(0) + 17, "Q", 0)
    assert len(_check(img, raw, node.logical)) == 1


def test_sys_chunk_array_checked(tmp_path: Path, btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """read_one_chunk() runs btrfs_check_chunk_valid on sys_chunk_array chunks
    (volumes.c:7092); chunk_err() reports them as 'corrupt superblock syschunk array'
    (tree-checker.c:797)."""
    path = sparse_copy(btrfs_image("default"), tmp_path / "sys.img")
    with open(path, "r+b") as f:
        f.seek(C.SUPER_INFO_OFFSET)
        sb = bytearray(f.read(C.SUPER_INFO_SIZE))
        # first chunk: key 17 B, then length, owner, stripe_len...
        stripe_len_at = 811 + 17 + 16
        put(sb, stripe_len_at, "Q", 32768)
        sb[:32] = csum_block(get(sb, 196, "H"), bytes(sb))
        f.seek(C.SUPER_INFO_OFFSET)
        f.write(sb)
    img = open_image(path)
    msgs = [f.message for f in img.findings if f.code == "tree-checker"]
    assert len(msgs) == 1
    assert re.fullmatch(
        r"corrupt superblock syschunk array: chunk_start=\d+, invalid chunk stripe length: 32768",
        msgs[0],
    )


# ---- the skinny block group item (fsoracle's own rule) ------------------------------------


def _with_skinny_bit(img):  # type: ignore[no-untyped-def]
    """The image as if its superblock carried the forward-port's SKINNY_BG_TREE bit."""
    img.sb = dataclasses.replace(
        img.sb, incompat_flags=img.sb.incompat_flags | C.INCOMPAT_SKINNY_BG_TREE
    )
    return img


def _skinny_leaf(btrfs_image, used: list[tuple[int, int]], owner: int | None = None):  # type: ignore[no-untyped-def]
    """A block group tree leaf rebuilt with skinny items (start, 193, used)."""
    img, blk, _ = _leaf(btrfs_image, "bg-tree", C.BLOCK_GROUP_TREE_OBJECTID, lambda b, s, k: s == 0)
    img = _with_skinny_bit(img)
    items = [(Key(start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, u), b"") for start, u in used]
    raw = build_leaf(blk.raw, items)
    if owner is not None:
        put(raw, 88, "Q", owner)
    return img, blk, raw


def test_skinny_bg_leaf_clean(btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """The real block group tree's items, made skinny (used = the item's used field):
    nothing to report."""
    img, blk, _ = _leaf(btrfs_image, "bg-tree", C.BLOCK_GROUP_TREE_OBJECTID, lambda b, s, k: s == 0)
    img = _with_skinny_bit(img)
    items = []
    for slot, ih in enumerate(blk.items):
        used = struct.unpack_from("<Q", blk.item_data(slot))[0]
        items.append((Key(ih.key.objectid, C.SKINNY_BLOCK_GROUP_ITEM_KEY, used), b""))
    assert _check(img, build_leaf(blk.raw, items), blk.logical) == []


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        ("size", r"invalid skinny block group item size, have 24 expect 0"),
        ("owner", r"skinny block group item in tree 2, expect 11 \(block group tree\)"),
        ("start", r"invalid block group start, have \d+ should be aligned to 4096"),
        ("used-align", r"invalid block group used, have 1000 should be aligned to 4096"),
        ("used-total", r"invalid block group used, have \d+ expect \[0, 1073741824\]"),
        ("bit-unset", r"SKINNY_BLOCK_GROUP_ITEM present but SKINNY_BG_TREE incompat bit unset"),
    ],
)
def test_skinny_bg_rules(btrfs_image, edit: str, expect: str) -> None:  # type: ignore[no-untyped-def]
    start = 13631488  # a chunk start mkfs uses (any sectorsize-aligned start will do)
    used = 1 << 20
    img, blk, _ = _skinny_leaf(btrfs_image, [(start, used)])
    assert img.sb.total_bytes == 1 << 30  # tests.btrfs.images.SIZE
    items = [(Key(start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, used), b"")]
    owner = None
    if edit == "size":
        items = [(items[0][0], bytes(24))]
    elif edit == "owner":
        owner = C.EXTENT_TREE_OBJECTID
    elif edit == "start":
        items = [(Key(start + 512, C.SKINNY_BLOCK_GROUP_ITEM_KEY, used), b"")]
    elif edit == "used-align":
        items = [(Key(start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, 1000), b"")]
    elif edit == "used-total":
        items = [(Key(start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, (1 << 30) + 4096), b"")]
    elif edit == "bit-unset":
        img.sb = dataclasses.replace(
            img.sb, incompat_flags=img.sb.incompat_flags & ~C.INCOMPAT_SKINNY_BG_TREE
        )
    raw = build_leaf(blk.raw, items)
    if owner is not None:
        put(raw, 88, "Q", owner)
    msgs = _check(img, raw, blk.logical)
    assert len(msgs) == 1, msgs
    assert re.search(r"slot=0 bg_start=\d+ used=\d+, " + expect, msgs[0]), msgs[0]


@pytest.mark.parametrize(
    ("second", "expect"),
    [
        (
            (13631488, 8192),
            r"slot=1 bg_start=13631488 used=8192, duplicate skinny block group"
            r" item, previous used 4096",
        ),
        (
            (13631488 + 4096, 0),
            r"overlapping skinny block group item, previous start 13631488"
            r" used 8192",
        ),
    ],
)
def test_skinny_bg_neighbours(btrfs_image, second: tuple[int, int], expect: str) -> None:  # type: ignore[no-untyped-def]
    """The patch's rule for neighbours: two items for one block group, or a block group
    starting before the previous one's used bytes end."""
    first = (13631488, 4096 if second[1] == 8192 else 8192)
    img, blk, raw = _skinny_leaf(btrfs_image, [first, second])
    msgs = _check(img, raw, blk.logical)
    assert len(msgs) == 1, msgs
    assert re.search(expect, msgs[0]), msgs[0]


def test_skinny_bg_item_in_real_image(tmp_path: Path, btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """A 24-byte item re-keyed to type 193 in a real block group tree is caught by the
    reader's tree checker (the item would have to be empty)."""
    path = sparse_copy(btrfs_image("bg-tree"), tmp_path / "skinny.img")
    img = open_image(path)
    blk, slot = find_slot(img, C.BLOCK_GROUP_TREE_OBJECTID, key_type(C.BLOCK_GROUP_ITEM_KEY))
    rewrite_block(path, img, blk.logical, lambda raw: put(raw, item_hdr(slot) + 8, "B", 193))
    errors: list[Exception] = []
    found = tree_checker_findings(open_image(path, errors))
    assert len(found) == 1
    assert "invalid skinny block group item size, have 24 expect 0" in found[0].message


def test_checker_never_raises_on_garbage_items(btrfs_image) -> None:  # type: ignore[no-untyped-def]
    """Every item type the dispatcher knows, with a 1-byte body: a finding or nothing,
    never an exception (reads past the item give zeros, as in the kernel)."""
    img, blk, _ = _leaf(btrfs_image, "default", ROOT, lambda b, s, k: s == 0)
    for t in sorted(tc.LEAF_ITEM_CHECKS):
        for body in (b"", b"\xff", b"\xff" * 40):
            raw = build_leaf(blk.raw, [(Key(256, t, 0), body)])
            found = tc.check_tree_block(parse_tree_block(bytes(raw), blk.logical, 0), img.sb)
            assert len(found) <= 1


# ---- rules on synthetic leaves (a real leaf's header, items written here) -----------------

NS = 16384  # nodesize of the 'default' image
SS = 4096


def inode_item(mode: int = 0o100644, nlink: int = 1, gen: int = 1) -> bytes:
    """struct btrfs_inode_item (160 B): generation, transid, size, nbytes, block_group,
    nlink, uid, gid, mode, rdev, flags, sequence, reserved, 4 timespecs."""
    return struct.pack("<5Q4I3Q32x", gen, gen, 0, 0, 0, nlink, 0, 0, mode, 0, 0, 0) + bytes(48)


def reg_extent(disk_bytenr: int, num_bytes: int, offset: int = 0) -> bytes:
    """struct btrfs_file_extent_item, type REG (53 B)."""
    return struct.pack(
        "<QQBBHB4Q", 1, num_bytes, 0, 0, 0, 1, disk_bytenr, num_bytes, offset, num_bytes
    )


def inline_extent(ram_bytes: int, data: bytes) -> bytes:
    return struct.pack("<QQBBHB", 1, ram_bytes, 0, 0, 0, 0) + data


def dir_entry(location: Key, ftype: int, name: bytes, data: bytes = b"") -> bytes:
    return location.pack() + struct.pack("<QHHB", 1, len(data), len(name), ftype) + name + data


def root_item(generation: int = 1, bytenr: int = 1 << 22) -> bytes:
    b = bytearray(439)
    struct.pack_into("<3Q", b, 160, generation, 256, bytenr)
    return bytes(b)


def extent_item(refs: int, flags: int, inline: bytes = b"") -> bytes:
    return struct.pack("<3Q", refs, 1, flags) + inline


def tbr(root: int) -> bytes:  # inline TREE_BLOCK_REF
    return struct.pack("<BQ", C.TREE_BLOCK_REF_KEY, root)


def sbr(parent: int) -> bytes:  # inline SHARED_BLOCK_REF
    return struct.pack("<BQ", C.SHARED_BLOCK_REF_KEY, parent)


def edr(root: int, objectid: int, offset: int, count: int) -> bytes:  # inline EXTENT_DATA_REF
    return struct.pack("<B3QI", C.EXTENT_DATA_REF_KEY, root, objectid, offset, count)


def dev_extent(chunk_offset: int, length: int) -> bytes:
    return struct.pack("<4Q16s", 3, 256, chunk_offset, length, bytes(16))


INO = Key(257, C.INODE_ITEM_KEY, 0)
DATA = C.EXTENT_FLAG_DATA
TREE = C.EXTENT_FLAG_TREE_BLOCK
BIG_GEN = 1 << 40

SYNTHETIC: list[tuple[str, int, list[tuple[Key, bytes]], str, int]] = [
    # (id, header owner, items, expected message (regex), tree-checker.c line)
    (
        "prev-ino",
        FS,
        [(INO, inode_item()), (Key(258, C.INODE_REF_KEY, 256), b"\0" * 8 + b"\1\0x")],
        r"slot=1 ino=258, invalid previous key objectid, have 257 expect 258",
        203,
    ),
    (
        "file-extent-overlap",
        FS,
        [
            (INO, inode_item()),
            (Key(257, C.EXTENT_DATA_KEY, 0), reg_extent(1 << 22, 8192)),
            (Key(257, C.EXTENT_DATA_KEY, 4096), reg_extent(1 << 23, 4096)),
        ],
        r"slot=1 ino=257 file_offset=0, file extent end range \(8192\) goes beyond "
        r"start offset \(4096\) of the next file extent",
        338,
    ),
    (
        "inline-offset",
        FS,
        [(INO, inode_item()), (Key(257, C.EXTENT_DATA_KEY, 4096), inline_extent(3, b"abc"))],
        r"invalid file_offset for inline file extent, have 4096 expect 0",
        277,
    ),
    (
        "inline-ram-bytes",
        FS,
        [(INO, inode_item()), (Key(257, C.EXTENT_DATA_KEY, 0), inline_extent(10, b"abcde"))],
        r"invalid ram_bytes for uncompressed inline extent, have 26 expect 31",
        291,
    ),
    (
        "extent-unaligned-bytenr",
        FS,
        [(INO, inode_item()), (Key(257, C.EXTENT_DATA_KEY, 0), reg_extent(SS + 1, SS))],
        r"invalid disk_bytenr for file extent, have 4097, should be aligned to 4096",
        114,
    ),
    (
        "xattr-type",
        FS,
        [
            (INO, inode_item()),
            (
                Key(257, C.XATTR_ITEM_KEY, btrfs_name_hash(b"user.a")),
                dir_entry(Key(0, 0, 0), C.FT_REG_FILE, b"user.a", b"v"),
            ),
        ],
        r"invalid dir item type for XATTR key, have 1 expect 8",
        584,
    ),
    (
        "xattr-type-in-dir-item",
        FS,
        [
            (INO, inode_item(mode=0o40755)),
            (
                Key(257, C.DIR_ITEM_KEY, btrfs_name_hash(b"a")),
                dir_entry(Key(258, 1, 0), C.FT_XATTR, b"a"),
            ),
        ],
        r"xattr dir type found for non-XATTR key",
        591,
    ),
    (
        "dir-location-non-fs-tree",
        FS,
        [
            (INO, inode_item(mode=0o40755)),
            (
                Key(257, C.DIR_ITEM_KEY, btrfs_name_hash(b"a")),
                dir_entry(Key(2, C.ROOT_ITEM_KEY, U64), C.FT_DIR, b"a"),
            ),
        ],
        r"invalid location key objectid, have 2 expect \[256, 18446744073709551360\]",
        499,
    ),
    (
        "inode-generation",
        FS,
        [(INO, inode_item(gen=BIG_GEN))],
        rf"invalid inode generation: has {BIG_GEN} expect \(0, \d+\]",
        1114,
    ),
    (
        "extref-overflow",
        FS,
        [
            (INO, inode_item()),
            (Key(257, C.INODE_EXTREF_KEY, 1), struct.pack("<QQH", 256, 2, 50) + b"abc"),
        ],
        r"inode extref overflow, ptr \d+ end \d+ namelen 50",
        1852,
    ),
    (
        "reloc-root-of-non-subvolume",
        ROOT,
        [(Key(C.TREE_RELOC_OBJECTID, C.ROOT_ITEM_KEY, 2), root_item())],
        r"invalid reloc tree for root 2, root id is not a subvolume tree",
        481,
    ),
    (
        "root-generation",
        ROOT,
        [(Key(5, C.ROOT_ITEM_KEY, 0), root_item(generation=BIG_GEN))],
        rf"invalid root generation, have {BIG_GEN} expect \(0, \d+\]",
        1210,
    ),
    (
        "root-ref-name",
        ROOT,
        [(Key(5, C.ROOT_REF_KEY, 256), struct.pack("<QQH", 256, 2, 300) + b"x" * 300)],
        r"root ref name too long for key type 156, have 300 max 255",
        1296,
    ),
    (
        "inline-ref-order",
        EXTENT,
        [(Key(1 << 22, C.METADATA_ITEM_KEY, 0), extent_item(2, TREE, sbr(1 << 20) + tbr(5)))],
        r"extent bytenr=4194304 len=16384 inline ref out-of-order: has type 176, prev type 182",
        1613,
    ),
    (
        "extent-padding",
        EXTENT,
        [(Key(1 << 22, C.EXTENT_ITEM_KEY, NS), extent_item(1, TREE))],
        r"invalid extent item size, padding bytes found",
        1634,
    ),
    (
        "extent-refs",
        EXTENT,
        [(Key(1 << 22, C.EXTENT_ITEM_KEY, SS), extent_item(0, DATA, edr(5, 257, 0, 1)))],
        r"invalid extent refs, have 0 expect >= inline 1",
        1641,
    ),
    (
        "data-ref-objectid",
        EXTENT,
        [(Key(1 << 22, C.EXTENT_ITEM_KEY, SS), extent_item(1, DATA, edr(5, 5, 0, 1)))],
        r"invalid data ref objectid value 5",
        1568,
    ),
    (
        "extent-overlap",
        EXTENT,
        [
            (Key(1 << 22, C.METADATA_ITEM_KEY, 0), extent_item(1, TREE, tbr(5))),
            (Key((1 << 22) + SS, C.METADATA_ITEM_KEY, 0), extent_item(1, TREE, tbr(5))),
        ],
        r"previous extent \[4194304 169 0\] overlaps current extent \[4198400 169 0\]",
        1657,
    ),
    (
        "keyed-tree-block-ref-size",
        EXTENT,
        [(Key(1 << 22, C.TREE_BLOCK_REF_KEY, 5), b"\0\0\0\0")],
        r"slot=0, invalid item size, have 4 expect 0 for key type 176",
        1688,
    ),
    (
        "shared-data-ref-count",
        EXTENT,
        [(Key(1 << 22, C.SHARED_DATA_REF_KEY, 1 << 20), b"\0\0\0\0")],
        r"invalid shared data backref count, should have non-zero value",
        1679,
    ),
    (
        "shared-block-ref-parent",
        EXTENT,
        [(Key(1 << 22, C.SHARED_BLOCK_REF_KEY, SS + 1), b"")],
        r"invalid tree parent bytenr, have 4097 expect aligned to 4096",
        1702,
    ),
    (
        "extent-data-ref-size",
        EXTENT,
        [(Key(1 << 22, C.EXTENT_DATA_REF_KEY, 1), bytes(27))],
        r"invalid item size, have 27 expect aligned to 28 for key type 178",
        1718,
    ),
    (
        "extent-data-ref-root",
        EXTENT,
        [(Key(1 << 22, C.EXTENT_DATA_REF_KEY, 1), struct.pack("<3QI", 2, 257, 0, 1))],
        r"invalid extent data backref root value 2",
        1744,
    ),
    (
        "raid-stripe-without-feature",
        C.RAID_STRIPE_TREE_OBJECTID,
        [(Key(1 << 22, C.RAID_STRIPE_KEY, SS), bytes(16))],
        r"RAID_STRIPE_EXTENT present but RAID_STRIPE_TREE incompat bit unset",
        1873,
    ),
    (
        "dev-extent-overlap",
        DEV,
        [
            (Key(1, C.DEV_EXTENT_KEY, 1 << 20), dev_extent(1 << 22, 8 << 20)),
            (Key(1, C.DEV_EXTENT_KEY, 4 << 20), dev_extent(1 << 24, 8 << 20)),
        ],
        r"slot=1, dev extent overlap, prev offset 1048576 len 8388608 current offset 4194304",
        1938,
    ),
]


@pytest.mark.parametrize(
    ("owner", "items", "expect", "kline"),
    [c[1:] for c in SYNTHETIC],
    ids=[c[0] for c in SYNTHETIC],
)
def test_synthetic_leaf(btrfs_image, owner: int, items, expect: str, kline: int) -> None:  # type: ignore[no-untyped-def]
    img, blk, _ = _leaf(btrfs_image, "default", ROOT, lambda b, s, k: s == 0)
    assert img.sb.nodesize == NS and img.sb.sectorsize == SS
    raw = build_leaf(blk.raw, items)
    put(raw, 88, "Q", owner)
    msgs = _check(img, raw, blk.logical)
    assert len(msgs) == 1, msgs
    assert re.search(expect, msgs[0]), msgs[0]
    # the leaf without its last item (the offending one) is clean: the rule fired, not
    # some other fault of the synthetic leaf
    if len(items) > 1:
        prefix = build_leaf(blk.raw, items[:-1])
        put(prefix, 88, "Q", owner)
        assert _check(img, prefix, blk.logical) == []
