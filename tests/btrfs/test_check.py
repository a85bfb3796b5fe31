"""``fsoracle btrfs check`` against ``btrfs check`` (btrfs-progs 6.14), both modes.

Clean images: every variant of ``tests/btrfs/images.py`` passes both ``btrfs check`` and
``btrfs check --mode=lowmem`` and our check finds nothing.

Corrupted copies: one field edited in place in a copy of a real image (the reader finds
where the item lives; the leaf's checksum is recomputed where the point is a logical
error). For each, btrfs check's exit status is the oracle (non-zero, except where noted
and explained), ours must agree, and our finding must name the edited thing (the block
group start, tree block bytenr or key, computed from the edit, not from our output).
The input image must be left unmodified by our check.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.check import BtrfsCheckResult, btrfs_check
from model.btrfs.csum import csum_block
from model.btrfs.items import (
    BlockGroupItem,
    DevExtent,
    DevItem,
    ExtentItem,
    FreeSpaceInfo,
    Key,
)
from model.btrfs.reader import BtrfsImage
from tests.btrfs.corrupt import (
    copy_image,
    edit_block,
    find_item,
    flip_csum,
    image_digest,
    rewrite_leaf,
    set_body_u64,
    set_key_offset,
    tree_block_copies,
)
from tests.btrfs.images import VARIANTS, loop_mounted
from tests.tools import require_root, require_tool, run

# ---- helpers ---------------------------------------------------------------------------


def progs_check(path: Path, lowmem: bool = False) -> subprocess.CompletedProcess[str]:
    require_tool("btrfs")
    cmd = ["btrfs", "check", "--readonly"]
    if lowmem:
        cmd.append("--mode=lowmem")
    return run([*cmd, str(path)])


def our_check(path: Path, **kw: bool) -> BtrfsCheckResult:
    with FileSource(path) as src:
        return btrfs_check(BtrfsImage.open(src), **kw)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``fsoracle btrfs check ...`` (the installed entry point next to this Python)."""
    exe = Path(sys.executable).parent / "fsoracle"
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "harness.cli"]
    return run([*prog, "btrfs", "check", *args])


def text(res: BtrfsCheckResult) -> str:
    return "\n".join(str(f) for f in res.findings)


# ---- clean images ----------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_clean_variant(btrfs_image: Callable[[str], Path], name: str) -> None:
    img = btrfs_image(name)
    for lowmem in (False, True):
        r = progs_check(img, lowmem)
        assert r.returncode == 0, f"btrfs check (lowmem={lowmem}) on {name}:\n{r.stderr}"
    res = our_check(img)
    assert res.ok, text(res)
    assert res.blocks_checked > 0


def test_mkfs_stale_free_space_runs_tolerated(btrfs_image: Callable[[str], Path]) -> None:
    """mkfs leaves FREE_SPACE_INFO runs for its temporary chunks at 1 MiB and 5 MiB; btrfs
    check passes the image (test above), and so must we, with the runs present."""
    img = btrfs_image("default")
    require_tool("btrfs")
    dump = run(["btrfs", "inspect-internal", "dump-tree", "-t", "free-space", str(img)]).stdout
    bgs = run(["btrfs", "inspect-internal", "dump-tree", "-t", "extent", str(img)]).stdout
    assert "key (1048576 FREE_SPACE_INFO 4194304)" in dump
    assert "key (5242880 FREE_SPACE_INFO 8388608)" in dump
    assert "(1048576 BLOCK_GROUP_ITEM" not in bgs and "(5242880 BLOCK_GROUP_ITEM" not in bgs
    assert our_check(img).ok


# ---- corrupted copies ------------------------------------------------------------------


@dataclass
class Case:
    """``edit(image_copy) -> needles``: the edit and the strings our findings must name.
    ``progs``: btrfs check's exit status (original, lowmem); ``ours``: our exit status;
    ``warn``: the needles are expected in a warning instead (exit 0)."""

    base: str
    edit: Callable[[Path], list[str]]
    progs: tuple[int, int] = (1, 1)
    ours: int = 1
    warn: bool = False


def edit_bg_used(p: Path) -> list[str]:
    loc = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: isinstance(i, BlockGroupItem) and i.used > 0,
    )
    assert isinstance(loc.item, BlockGroupItem)
    set_body_u64(p, loc, 0, loc.item.used + 4096)
    return [f"block group {loc.key.objectid}"]


def edit_bg_tree_used(p: Path) -> list[str]:
    loc = find_item(
        p,
        C.BLOCK_GROUP_TREE_OBJECTID,
        lambda k, i: isinstance(i, BlockGroupItem) and i.used > 0,
    )
    assert isinstance(loc.item, BlockGroupItem)
    set_body_u64(p, loc, 0, loc.item.used - 4096)
    return [f"block group {loc.key.objectid}"]


def edit_fst_extent_shrunk(p: Path) -> list[str]:
    """Shrink the data block group's free space extent by one sector (key offset)."""
    loc = find_item(
        p,
        C.FREE_SPACE_TREE_OBJECTID,
        lambda k, i: k.type == C.FREE_SPACE_EXTENT_KEY and k.objectid >= 13631488,
        not_first=True,
    )
    set_key_offset(p, loc, loc.key.offset - 4096)
    return [
        f"block group {loc.key.objectid}",
        f"({loc.key.objectid} {C.FREE_SPACE_EXTENT_KEY} {loc.key.offset - 4096})",
    ]


def edit_extent_refs(p: Path) -> list[str]:
    loc = find_item(p, C.EXTENT_TREE_OBJECTID, lambda k, i: isinstance(i, ExtentItem))
    assert isinstance(loc.item, ExtentItem)
    set_body_u64(p, loc, 0, loc.item.refs + 1)
    return [f"{loc.key.objectid} (extent item ({loc.key.objectid} {loc.key.type}"]


def edit_backref_root(p: Path) -> list[str]:
    """The FS_TREE root node's inline TREE_BLOCK_REF names root 7 instead of 5."""
    loc = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: (
            k.type == C.METADATA_ITEM_KEY
            and isinstance(i, ExtentItem)
            and bool(i.inline_refs)
            and i.inline_refs[0].offset == C.FS_TREE_OBJECTID
        ),
    )
    set_body_u64(p, loc, 24 + 1, C.CSUM_TREE_OBJECTID)
    return [f"tree block {loc.key.objectid}", "root 5", "root 7"]


def edit_data_backref_count(p: Path) -> list[str]:
    """An inline EXTENT_DATA_REF's count 1 -> 2 (at 24 + type byte + root/objectid/offset)."""
    loc = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: (
            isinstance(i, ExtentItem)
            and len(i.inline_refs) == 1
            and i.inline_refs[0].type == C.EXTENT_DATA_REF_KEY
            and i.inline_refs[0].count == 1
        ),
    )

    def edit(buf: bytearray) -> None:
        struct.pack_into("<I", buf, loc.body + 24 + 1 + 24, 2)

    edit_block(p, loc.copies, loc.nodesize, loc.csum_type, edit)
    return [f"data extent {loc.key.objectid}"]


def edit_dev_extent_length(p: Path) -> list[str]:
    loc = find_item(
        p,
        C.DEV_TREE_OBJECTID,
        lambda k, i: isinstance(i, DevExtent) and k.offset > 13631488,
    )
    assert isinstance(loc.item, DevExtent)
    set_body_u64(p, loc, 24, loc.item.length - (1 << 20))
    return [f"dev extent ({loc.key.objectid} {C.DEV_EXTENT_KEY} {loc.key.offset})"]


def edit_bg_flags(p: Path) -> list[str]:
    """The DATA block group's flags gain METADATA: its chunk's type no longer matches."""
    loc = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: isinstance(i, BlockGroupItem) and bool(i.flags & C.BLOCK_GROUP_DATA),
    )
    assert isinstance(loc.item, BlockGroupItem)
    set_body_u64(p, loc, 16, loc.item.flags | C.BLOCK_GROUP_METADATA)
    return [f"block group {loc.key.objectid}"]


def edit_fst_extent_count(p: Path) -> list[str]:
    loc = find_item(
        p,
        C.FREE_SPACE_TREE_OBJECTID,
        lambda k, i: isinstance(i, FreeSpaceInfo) and k.objectid == 13631488,
    )
    assert isinstance(loc.item, FreeSpaceInfo)

    def edit(buf: bytearray) -> None:
        struct.pack_into("<I", buf, loc.body, loc.item.extent_count + 1)  # type: ignore[union-attr]

    edit_block(p, loc.copies, loc.nodesize, loc.csum_type, edit)
    return [f"({loc.key.objectid} {C.FREE_SPACE_INFO_KEY} {loc.key.offset})"]


def edit_fst_bitmap_bit(p: Path) -> list[str]:
    """Flip one bit of a free space bitmap: a used sector recorded free or vice versa."""
    loc = find_item(
        p,
        C.FREE_SPACE_TREE_OBJECTID,
        lambda k, i: k.type == C.FREE_SPACE_BITMAP_KEY,
    )

    def edit(buf: bytearray) -> None:
        buf[loc.body + 10] ^= 0x10

    edit_block(p, loc.copies, loc.nodesize, loc.csum_type, edit)
    return [f"block group {loc.key.objectid}"]


def edit_stale_fst_run_length(p: Path) -> list[str]:
    """The stale mkfs run at 1 MiB is tolerated only while its length leads to the next
    FREE_SPACE_INFO: make it land inside the SYSTEM block group's free extents."""
    loc = find_item(
        p,
        C.FREE_SPACE_TREE_OBJECTID,
        lambda k, i: k.type == C.FREE_SPACE_INFO_KEY and k.objectid == 1 << 20,
    )
    sys_bg = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: isinstance(i, BlockGroupItem) and bool(i.flags & C.BLOCK_GROUP_SYSTEM),
    )
    target = sys_bg.key.objectid + 4096
    set_key_offset(p, loc, target - loc.key.objectid)
    return [f"space info key at {target}"]


def edit_clear_bg_tree_flag(p: Path) -> list[str]:
    """compat_ro BLOCK_GROUP_TREE cleared (superblock and its mirror): the block group
    items now sit in the wrong tree."""
    with open(p, "r+b") as f:
        for off in (C.btrfs_sb_offset(0), C.btrfs_sb_offset(1)):
            f.seek(off)
            sb = bytearray(f.read(C.SUPER_INFO_SIZE))
            (ro,) = struct.unpack_from("<Q", sb, 180)
            struct.pack_into("<Q", sb, 180, ro & ~C.COMPAT_RO_BLOCK_GROUP_TREE)
            (csum_type,) = struct.unpack_from("<H", sb, 196)
            sb[: C.BTRFS_CSUM_SIZE] = csum_block(csum_type, bytes(sb))
            f.seek(off)
            f.write(sb)
    return [f"found in tree {C.BLOCK_GROUP_TREE_OBJECTID}"]


def edit_remove_extent_item(p: Path) -> list[str]:
    """Delete the METADATA_ITEM of the fs tree root (not the leaf's first item): a tree
    block without an extent item, its space unaccounted."""
    loc = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: (
            k.type == C.METADATA_ITEM_KEY
            and isinstance(i, ExtentItem)
            and bool(i.inline_refs)
            and i.inline_refs[0].offset == C.FS_TREE_OBJECTID
        ),
        not_first=True,
    )
    rewrite_leaf(p, loc.leaf, lambda items: [(k, b) for k, b in items if k != loc.key])
    return [f"tree block {loc.key.objectid}"]


def edit_dev_item_bytes_used(p: Path) -> list[str]:
    loc = find_item(p, C.CHUNK_TREE_OBJECTID, lambda k, i: isinstance(i, DevItem))
    assert isinstance(loc.item, DevItem)
    set_body_u64(p, loc, 16, loc.item.bytes_used + (1 << 20))
    return [f"device item ({C.DEV_ITEMS_OBJECTID} {C.DEV_ITEM_KEY} {loc.key.offset})"]


def _fs_root(p: Path) -> tuple[int, list[int]]:
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        root = img.tree(C.FS_TREE_OBJECTID)
        assert root is not None
        return root.bytenr, img.chunk_map.map_read(root.bytenr, img.sb.nodesize)


def edit_csum_one_dup_copy(p: Path) -> list[str]:
    bytenr, copies = _fs_root(p)
    assert len(copies) == 2, "metadata must be DUP"
    flip_csum(p, copies[0])
    return [f"tree block {bytenr}"]


def edit_csum_second_copy(p: Path) -> list[str]:
    _, copies = _fs_root(p)
    assert len(copies) == 2, "metadata must be DUP"
    flip_csum(p, copies[1])
    return []


def edit_csum_all_copies(p: Path) -> list[str]:
    bytenr, copies = _fs_root(p)
    for phys in copies:
        flip_csum(p, phys)
    return [f"tree block {bytenr}"]


def edit_csum_leaf_all_copies(p: Path) -> list[str]:
    """A leaf below the fs tree root (not read at open): every copy's checksum bad."""
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        root = img.tree(C.FS_TREE_OBJECTID)
        assert root is not None and root.level > 0
        blk = img.read_tree_block(root.bytenr)
        leaf = blk.ptrs[-1].blockptr
    for phys in tree_block_copies(p, leaf):
        flip_csum(p, phys)
    return [f"tree block {leaf}"]


CASES: dict[str, Case] = {
    "bg-used": Case("default", edit_bg_used),
    "bg-tree-used": Case("bg-tree", edit_bg_tree_used),
    "fst-extent-shrunk": Case("default", edit_fst_extent_shrunk),
    "extent-refs": Case("default", edit_extent_refs),
    "backref-root": Case("default", edit_backref_root),
    "data-backref-count": Case("kernel", edit_data_backref_count),
    "dev-extent-length": Case("default", edit_dev_extent_length),
    "dev-item-bytes-used": Case("default", edit_dev_item_bytes_used),
    "extent-item-removed": Case("default", edit_remove_extent_item),
    # btrfs check's original mode prints the chunk/block group mismatch but exits 0
    # (check_chunks_and_extents() lets check_devices() overwrite the error); lowmem mode
    # and the kernel (read_one_block_group) reject it: we follow them.
    "bg-flags-vs-chunk-type": Case("default", edit_bg_flags, progs=(0, 1)),
    "fst-extent-count": Case("kernel-bitmaps", edit_fst_extent_count),
    "fst-bitmap-bit": Case("kernel-bitmaps", edit_fst_bitmap_bit),
    "fst-stale-run-chain": Case("default", edit_stale_fst_run_length),
    "bg-tree-flag-cleared": Case("bg-tree", edit_clear_bg_tree_flag),
    # DUP metadata, one copy bad: btrfs check warns "checksum verify failed" and reads
    # the good copy (exit 0); so do we (a warning, exit 0)
    "csum-one-dup-copy": Case("default", edit_csum_one_dup_copy, progs=(0, 0), ours=0, warn=True),
    # the second copy bad: both read the first, good copy and never see it
    "csum-second-dup-copy": Case("default", edit_csum_second_copy, progs=(0, 0), ours=0),
    # no good copy of the fs tree root: btrfs check cannot open the filesystem (exit 1)
    "csum-all-dup-copies": Case("default", edit_csum_all_copies),
    "csum-single-copy": Case("meta-single", edit_csum_all_copies),
    "csum-leaf-all-copies": Case("kernel", edit_csum_leaf_all_copies),
}


@pytest.fixture(scope="module")
def image_for(
    btrfs_image: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name != "kernel-bitmaps":
            return btrfs_image(name)
        if name not in built:
            built[name] = make_bitmap_image(tmp_path_factory.mktemp("bitmaps") / "bm.img")
        return built[name]

    return get


def make_bitmap_image(path: Path) -> Path:
    """A kernel-written image whose data block group's free space is fragmented past the
    bitmap threshold (164 extents for an 8 MiB block group): 400 4 KiB files, every other
    one deleted."""
    require_tool("mkfs.btrfs")
    require_root("a loop mount")
    with open(path, "wb") as f:
        f.truncate(1 << 30)
    subprocess.run(["mkfs.btrfs", "-f", "-q", "-n", "4096", str(path)], check=True)
    with loop_mounted(path) as mnt:
        d = mnt / "frag"
        d.mkdir()
        for i in range(400):
            (d / f"{i}").write_bytes(os.urandom(4096))
        os.sync()
        for i in range(0, 400, 2):
            (d / f"{i}").unlink()
        os.sync()
    dump = run(["btrfs", "inspect-internal", "dump-tree", "-t", "free-space", str(path)])
    assert "FREE_SPACE_BITMAP" in dump.stdout, "the free space tree should use bitmaps"
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_corruption(image_for: Callable[[str], Path], tmp_path: Path, case: str) -> None:
    c = CASES[case]
    p = copy_image(image_for(c.base), tmp_path / f"{case}.img")
    needles = c.edit(p)
    orig = progs_check(p).returncode
    lowmem = progs_check(p, lowmem=True).returncode
    assert (orig, lowmem) == c.progs, f"btrfs check exits {(orig, lowmem)}"
    before = image_digest(p)
    res = our_check(p)
    assert image_digest(p) == before, "our check modified the image"
    assert (0 if res.ok else 1) == c.ours, text(res)
    pool = res.warnings if c.warn else res.findings
    joined = "\n".join(str(f) for f in pool)
    for n in needles:
        assert n in joined, f"{n!r} not named in:\n{joined}"


def test_data_csum_optional(btrfs_image: Callable[[str], Path], tmp_path: Path) -> None:
    """A flipped data byte: btrfs check passes without --check-data-csum and fails with
    it; our check likewise without / with ``verify_data_csums``."""
    p = copy_image(btrfs_image("kernel"), tmp_path / "data.img")
    loc = find_item(p, C.CSUM_TREE_OBJECTID, lambda k, i: k.type == C.EXTENT_CSUM_KEY)
    sector = loc.key.offset + 4096
    with FileSource(p) as src:
        phys = BtrfsImage.open(src).chunk_map.map_read(sector, 4096)[0]
    with open(p, "r+b") as f:
        f.seek(phys + 7)
        b = f.read(1)
        f.seek(phys + 7)
        f.write(bytes([b[0] ^ 1]))
    assert progs_check(p).returncode == 0
    require_tool("btrfs")
    assert run(["btrfs", "check", "--check-data-csum", str(p)]).returncode == 1
    assert our_check(p).ok
    res = our_check(p, verify_data_csums=True)
    assert not res.ok and str(sector) in text(res)


# ---- the skinny block group items (RFC key type 193): the hook ---------------------------


def _to_skinny(items: list[tuple[Key, bytes]], only: int | None = None) -> list[tuple[Key, bytes]]:
    """(start, 192, length) + 24-byte item -> (start, 193, used) + empty item."""
    out = []
    for key, body in items:
        if key.type == C.BLOCK_GROUP_ITEM_KEY and only in (None, key.objectid):
            (used,) = struct.unpack_from("<Q", body, 0)
            out.append((Key(key.objectid, C.SKINNY_BLOCK_GROUP_ITEM_KEY, used), b""))
        else:
            out.append((key, body))
    return out


def set_incompat_bit(image: Path, bit: int) -> None:
    """Set an incompat bit in every superblock copy (offset 188), checksum recomputed."""
    from model.btrfs.csum import csum_block

    size = image.stat().st_size
    with open(image, "r+b") as f:
        for mirror in range(C.SUPER_MIRROR_MAX):
            off = C.btrfs_sb_offset(mirror)
            if off + C.SUPER_INFO_SIZE > size:
                break
            f.seek(off)
            raw = bytearray(f.read(C.SUPER_INFO_SIZE))
            flags = int.from_bytes(raw[188:196], "little") | bit
            raw[188:196] = flags.to_bytes(8, "little")
            csum_type = int.from_bytes(raw[196:198], "little")
            raw[:32] = csum_block(csum_type, bytes(raw))
            f.seek(off)
            f.write(raw)


def test_skinny_bg_items_accepted_in_bg_tree(
    btrfs_image: Callable[[str], Path], tmp_path: Path
) -> None:
    """Model-only (btrfs-progs knows no key type 193): with compat_ro BLOCK_GROUP_TREE and
    the forward-port's incompat bit SKINNY_BG_TREE, tree 11 holding only skinny items
    (start, 193, used) is accepted; length and flags come from the chunks. Without the
    bit, the same tree is refused (the kernel patch's tree-checker rule)."""
    p = copy_image(btrfs_image("bg-tree"), tmp_path / "skinny.img")
    with FileSource(p) as src:
        root = BtrfsImage.open(src).tree(C.BLOCK_GROUP_TREE_OBJECTID)
    assert root is not None and root.level == 0
    rewrite_leaf(p, root.bytenr, _to_skinny)
    res = our_check(p)
    assert not res.ok and "SKINNY_BG_TREE incompat bit unset" in text(res)
    set_incompat_bit(p, C.INCOMPAT_SKINNY_BG_TREE)
    res = our_check(p)
    assert res.ok, text(res)
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        keys = [blk.items[slot].key for blk, slot, _ in img.iter_items(root)]
    assert keys and all(k.type == C.SKINNY_BLOCK_GROUP_ITEM_KEY for k in keys)


def test_skinny_bg_item_outside_bg_tree(btrfs_image: Callable[[str], Path], tmp_path: Path) -> None:
    """A skinny item in the extent tree is in the wrong tree: ignored and reported, and
    its chunk then has no block group. btrfs check (lowmem) fails it; original mode prints
    "Chunk[...] is not found in block group" but exits 0 (the dropped check_chunks error,
    as for bg-flags-vs-chunk-type); the kernel's check_chunk_block_group_mappings refuses
    to mount."""
    p = copy_image(btrfs_image("default"), tmp_path / "skinny-ext.img")
    loc = find_item(
        p,
        C.EXTENT_TREE_OBJECTID,
        lambda k, i: isinstance(i, BlockGroupItem) and bool(i.flags & C.BLOCK_GROUP_DATA),
    )
    assert isinstance(loc.item, BlockGroupItem)
    rewrite_leaf(p, loc.leaf, lambda items: _to_skinny(items, loc.key.objectid))
    assert progs_check(p, lowmem=True).returncode == 1
    assert "is not found in block group" in progs_check(p).stderr
    res = our_check(p)
    assert not res.ok
    skinny = f"({loc.key.objectid} {C.SKINNY_BLOCK_GROUP_ITEM_KEY} {loc.item.used})"
    assert any(f.code == "item-wrong-tree" and skinny in f.what for f in res.findings)
    assert f"chunk ({C.FIRST_CHUNK_TREE_OBJECTID} {C.CHUNK_ITEM_KEY} {loc.key.objectid})" in (
        text(res)
    )


def _writer_skinny(tmp_path: Path, name: str) -> Path:
    from model.blocksource import FileSink
    from model.btrfs.mkfs import MkfsConfig, make_btrfs

    p = tmp_path / name
    with FileSink(str(p), 1 << 30) as sink:
        make_btrfs(MkfsConfig(size=1 << 30, layout="skinny-bg-tree"), sink)
    return p


def test_skinny_used_must_equal_the_extents(tmp_path: Path) -> None:
    """A skinny item's key offset is its block group's used bytes: one that is a sector off
    the sum of the extent items in the block group is a bg-used finding naming it (the
    writer's image is clean first)."""
    p = _writer_skinny(tmp_path, "skinny.img")
    assert our_check(p).ok, text(our_check(p))
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        root = img.tree(C.BLOCK_GROUP_TREE_OBJECTID)
        assert root is not None and root.level == 0
        keys = [blk.items[slot].key for blk, slot, _ in img.iter_items(root)]
    victim = next(k for k in keys if k.offset > 0)

    def bump(items: list[tuple[Key, bytes]]) -> list[tuple[Key, bytes]]:
        return [
            (Key(k.objectid, k.type, k.offset + 4096) if k == victim else k, b) for k, b in items
        ]

    rewrite_leaf(p, root.bytenr, bump)
    res = our_check(p)
    hits = [f for f in res.findings if f.code == "bg-used"]
    assert hits and str(victim.objectid) in hits[0].message
    assert f"used {victim.offset + 4096}" in hits[0].message


def test_regular_item_in_skinny_tree(tmp_path: Path) -> None:
    """With SKINNY_BG_TREE the kernel patch reads tree 11 item by item and stops at any item
    that is not skinny (-EUCLEAN, patch 3): a regular (start, 192, length) item there is
    reported, and its chunk then has no block group."""
    p = _writer_skinny(tmp_path, "mixed.img")
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        root = img.tree(C.BLOCK_GROUP_TREE_OBJECTID)
        assert root is not None
        chunk = img.chunk_map.lookup(img.sb.root)
        assert chunk is not None
        start, length, flags = chunk.key.offset, chunk.length, chunk.type

    def regular(items: list[tuple[Key, bytes]]) -> list[tuple[Key, bytes]]:
        out = []
        for k, b in items:
            if k.objectid == start:
                body = struct.pack("<QQQ", k.offset, C.FIRST_CHUNK_TREE_OBJECTID, flags)
                out.append((Key(start, C.BLOCK_GROUP_ITEM_KEY, length), body))
            else:
                out.append((k, b))
        return out

    rewrite_leaf(p, root.bytenr, regular)
    res = our_check(p)
    assert any(
        f.code == "item-wrong-tree" and f"({start} {C.BLOCK_GROUP_ITEM_KEY} {length})" in f.what
        for f in res.findings
    ), text(res)


# ---- the CLI, once per verdict ---------------------------------------------------------


def test_cli_verdicts(btrfs_image: Callable[[str], Path], tmp_path: Path) -> None:
    clean = btrfs_image("default")
    r = cli(str(clean))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no error found" in r.stdout

    bad = copy_image(clean, tmp_path / "bad.img")
    needles = edit_bg_used(bad)
    before = image_digest(bad)
    r = cli(str(bad), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert any(needles[0] in f["what"] + f["message"] for f in doc["findings"])
    assert image_digest(bad) == before

    with tempfile.NamedTemporaryFile(dir=tmp_path, suffix=".img") as junk:
        junk.write(b"not btrfs" * 100000)
        junk.flush()
        r = cli(junk.name)
        assert r.returncode == 2
        assert "not a readable btrfs image" in r.stderr


# ---- a large image (slow) --------------------------------------------------------------


@pytest.mark.slow
def test_large_image(tmp_path: Path) -> None:
    """A 128 GiB sparse image with 120 000 files (about a million items), written by the
    kernel: btrfs check passes it, so must we, in bounded time and memory."""
    import random
    import resource
    import time

    require_tool("mkfs.btrfs")
    require_root("a loop mount")
    p = tmp_path / "big.img"
    with open(p, "wb") as f:
        f.truncate(128 << 30)
    subprocess.run(["mkfs.btrfs", "-f", "-q", str(p)], check=True)
    rng = random.Random(5)
    blob = os.urandom(1 << 20)
    with loop_mounted(p) as mnt:
        for d in range(120):
            dd = mnt / f"d{d}"
            dd.mkdir()
            for i in range(1000):
                sz = rng.choice([3000, 4096, 8192, 12000, 16384, 40000])
                off = rng.randrange(0, len(blob) - sz)
                (dd / f"f{i}").write_bytes(blob[off : off + sz])
        os.sync()
    assert progs_check(p).returncode == 0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    res = our_check(p)
    elapsed = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert res.ok, text(res)
    assert elapsed < 120, f"{elapsed:.1f} s"
    assert rss - rss0 < 1 << 20, f"{(rss - rss0) // 1024} MiB more resident"  # KiB units
