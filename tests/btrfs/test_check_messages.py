"""The checks ``btrfs_check`` gained for issue 17, each on a reproducer image next to what
btrfs check (btrfs-progs 6.14) prints for it.

Every reproducer is a copy of a mkfs.btrfs image with one edit (checksums recomputed).
Expected values: btrfs check's exit status, and the line our finding carries must be one
btrfs check prints on the same image (compared with runs of whitespace collapsed), except
where noted: the DEV_ITEM fsid (btrfs check fails there with other lines) and the missing
trees (idem).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.check import BtrfsCheckResult, btrfs_check
from model.btrfs.csum import csum_block
from model.btrfs.items import DevItem, ExtentItem
from model.btrfs.reader import BtrfsImage
from tests.btrfs.corrupt import find_item, rewrite_leaf, set_body_u64
from tests.btrfs.images import make_image
from tests.btrfs.imgedit import edit_super, rewrite_block, sb_get, sparse_copy
from tests.tools import require_tool, run

SIZE = 256 << 20
HEADER_GENERATION = 80


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("mkfs.btrfs")
    d = tmp_path_factory.mktemp("msgs")
    return {n: make_image(n, d / f"{n}.img", size=SIZE) for n in ("default", "bg-tree")}


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def progs(path: Path, *extra: str) -> tuple[int, list[str]]:
    """btrfs check's exit status and its stderr lines without the ERROR:/WARNING: prefix."""
    require_tool("btrfs")
    r = run(["btrfs", "check", "--readonly", *extra, str(path)], timeout=10)
    lines = [norm(re.sub(r"^(ERROR|WARNING): ", "", x)) for x in r.stderr.splitlines()]
    return r.returncode, lines


def ours(path: Path) -> BtrfsCheckResult:
    with FileSource(path) as src:
        return btrfs_check(BtrfsImage.open(src))


def one(res: BtrfsCheckResult, code: str, warning: bool = False) -> str:
    pool = res.warnings if warning else res.findings
    hits = [f for f in pool if f.code == code]
    assert len(hits) == 1, [str(f) for f in res.findings + res.warnings]
    return norm(hits[0].message)


def copy(base: dict[str, Path], tmp_path: Path, name: str = "default") -> Path:
    return sparse_copy(base[name], tmp_path / "r.img")


@contextlib.contextmanager
def opened(p: Path) -> Iterator[BtrfsImage]:
    with FileSource(p) as src:
        yield BtrfsImage.open(src)


def sbv(p: Path, name: str) -> int:
    with open(p, "rb") as f:
        f.seek(C.SUPER_INFO_OFFSET)
        v = sb_get(f.read(C.SUPER_INFO_SIZE), name)
    assert isinstance(v, int)
    return v


# ---- generations ----------------------------------------------------------------------------


def set_header_generation(p: Path, logical: int, gen: int) -> None:
    with opened(p) as img:
        rewrite_block(
            p, img, logical, lambda raw: struct.pack_into("<Q", raw, HEADER_GENERATION, gen)
        )


@pytest.mark.parametrize("which", ["tree-root", "chunk-root", "fs-tree"])
def test_root_generation(which: str, base: dict[str, Path], tmp_path: Path) -> None:
    """A root block whose header generation is one below what its referrer records (the
    superblock's generation, chunk_root_generation, the ROOT_ITEM's generation)."""
    p = copy(base, tmp_path)
    with opened(p) as img:
        if which == "tree-root":
            logical, want = img.sb.root, img.sb.generation
        elif which == "chunk-root":
            logical, want = img.sb.chunk_root, img.sb.chunk_root_generation
        else:
            r = img.tree(C.FS_TREE_OBJECTID)
            assert r is not None
            logical, want = r.bytenr, img.root_items[(C.FS_TREE_OBJECTID, 0)].generation
    set_header_generation(p, logical, want - 1)
    rc, lines = progs(p)
    assert rc == 1
    msg = one(ours(p), "parent-transid")
    assert msg == f"parent transid verify failed on {logical} wanted {want} found {want - 1}"
    assert msg in lines


def test_root_item_generation(base: dict[str, Path], tmp_path: Path) -> None:
    """The fs tree's ROOT_ITEM generation one above its root block's."""
    p = copy(base, tmp_path)
    loc = find_item(
        p,
        C.ROOT_TREE_OBJECTID,
        lambda k, i: k.type == C.ROOT_ITEM_KEY and k.objectid == C.FS_TREE_OBJECTID,
    )
    with opened(p) as img:
        ri = img.root_items[(C.FS_TREE_OBJECTID, 0)]
    gen = ri.generation
    set_body_u64(p, loc, 160, gen + 1)
    rc, lines = progs(p)
    assert rc == 1
    msg = one(ours(p), "parent-transid")
    assert msg == f"parent transid verify failed on {ri.bytenr} wanted {gen + 1} found {gen}"
    assert msg in lines


def test_log_root_generation(base: dict[str, Path], tmp_path: Path) -> None:
    """log_root pointing at the tree root block (generation, not generation + 1): btrfs
    check prints the transid failure but exits 0 (a listed difference in
    test_check_parity.py); we report it, as the kernel's btrfs_replay_log fails."""
    p = copy(base, tmp_path)
    root, gen = sbv(p, "root"), sbv(p, "generation")
    edit_super(p, {"log_root": root})
    rc, lines = progs(p)
    assert rc == 0
    msg = one(ours(p), "parent-transid")
    assert msg == f"parent transid verify failed on {root} wanted {gen + 1} found {gen}"
    assert msg in lines


def test_log_root_unmapped(base: dict[str, Path], tmp_path: Path) -> None:
    """An aligned log_root no chunk maps: btrfs check cannot set up the log tree (exit 1);
    we report the read error (the log tree is read, though not walked)."""
    p = copy(base, tmp_path)
    edit_super(p, {"log_root": 4096})
    rc, lines = progs(p)
    assert rc == 1 and "Couldn't setup log root tree" in lines
    res = ours(p)
    assert not res.ok
    assert "no chunk maps this address" in one(res, "read-error")


def test_extent_generation(base: dict[str, Path], tmp_path: Path) -> None:
    """An extent item's generation far above the superblock's: lowmem mode fails with our
    line; original mode exits 0 (we follow lowmem and the kernel's tree-checker)."""
    p = copy(base, tmp_path)
    loc = find_item(p, C.EXTENT_TREE_OBJECTID, lambda k, i: isinstance(i, ExtentItem))
    set_body_u64(p, loc, 8, 100)
    assert progs(p)[0] == 0
    rc, lines = progs(p, "--mode=lowmem")
    assert rc == 1
    msg = one(ours(p), "extent-generation")
    sg = sbv(p, "generation")
    assert msg == f"invalid generation for extent {loc.key.objectid}, have 100 expect (0, {sg + 1}]"
    assert msg in lines


def test_root_item_outdated(base: dict[str, Path], tmp_path: Path) -> None:
    """The data relocation tree's ROOT_ITEM generation 0: the kernel reads the root without
    a transid check (0), btrfs check's root item check fails it ("outdated root item")."""
    p = copy(base, tmp_path)
    oid = C.DATA_RELOC_TREE_OBJECTID
    loc = find_item(
        p, C.ROOT_TREE_OBJECTID, lambda k, i: k.type == C.ROOT_ITEM_KEY and k.objectid == oid
    )
    set_body_u64(p, loc, 160, 0)
    rc, lines = progs(p)
    assert rc == 1
    msg = one(ours(p), "root-item")
    assert msg.startswith(f"root item for root {oid}, current bytenr ")
    assert msg in lines


# ---- sizes and devices ------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [4096, 64 << 20])
def test_image_shorter_than_device(cut: int, base: dict[str, Path], tmp_path: Path) -> None:
    p = copy(base, tmp_path)
    os.truncate(p, SIZE - cut)
    rc, lines = progs(p)
    assert rc == 1
    msg = one(ours(p), "device-size")
    assert msg == (
        "block device size is smaller than total_bytes in device item, has "
        f"{SIZE - cut} expect >= {SIZE}"
    )
    assert msg in lines


def test_super_total_bytes_smaller(base: dict[str, Path], tmp_path: Path) -> None:
    p = copy(base, tmp_path)
    edit_super(p, {"total_bytes": SIZE - 4096})
    rc, lines = progs(p)
    assert rc == 1
    msg = one(ours(p), "super-total-bytes")
    assert msg == f"super total bytes {SIZE - 4096} smaller than real device(s) size {SIZE}"
    assert msg in lines


def test_super_total_bytes_larger_is_a_warning(base: dict[str, Path], tmp_path: Path) -> None:
    p = copy(base, tmp_path)
    edit_super(p, {"total_bytes": SIZE + 4096})
    rc, lines = progs(p)
    assert rc == 0
    res = ours(p)
    assert res.ok
    msg = one(res, "super-total-bytes", warning=True)
    assert msg.startswith("minor unaligned/mismatch device size detected")
    assert any(msg == x or msg.startswith(x + " ") for x in lines), lines


def test_dev_item_total_bytes_larger(base: dict[str, Path], tmp_path: Path) -> None:
    """The chunk tree's DEV_ITEM claims twice the image: both size checks fail."""
    p = copy(base, tmp_path)
    loc = find_item(p, C.CHUNK_TREE_OBJECTID, lambda k, i: isinstance(i, DevItem))
    set_body_u64(p, loc, 8, 2 * SIZE)
    rc, lines = progs(p)
    assert rc == 1
    res = ours(p)
    for code in ("device-size", "super-total-bytes"):
        assert one(res, code) in lines


@pytest.mark.parametrize("n", [2, 1 << 40])
def test_num_devices(n: int, base: dict[str, Path], tmp_path: Path) -> None:
    p = copy(base, tmp_path)
    edit_super(p, {"num_devices": n})
    rc, lines = progs(p)
    assert rc == 1
    res = ours(p)
    msg = one(res, "super-num-devices")
    assert msg == f"super num devices mismatch, have {n} expect 1"
    assert msg in lines
    if n > 1 << 31:  # and the kernel's warning, which btrfs check prints too
        assert one(res, "super-warning", warning=True) in lines


def test_dev_item_fsid(base: dict[str, Path], tmp_path: Path) -> None:
    """A chunk tree DEV_ITEM with another fsid: the kernel's read_one_dev looks for a seed
    filesystem with that fsid and fails; btrfs check fails too (exit 1, with other lines:
    it takes the device for a seed's and cannot map the tree root)."""
    p = copy(base, tmp_path)
    loc = find_item(p, C.CHUNK_TREE_OBJECTID, lambda k, i: isinstance(i, DevItem))
    other = uuid.UUID(int=5)
    with open(p, "r+b") as f:
        for phys in loc.copies:
            f.seek(phys)
            raw = bytearray(f.read(loc.nodesize))
            raw[loc.body + 82 : loc.body + 98] = other.bytes
            raw[:32] = csum_block(loc.csum_type, bytes(raw))
            f.seek(phys)
            f.write(raw)
    assert progs(p)[0] == 1
    assert str(other) in one(ours(p), "device-fsid")


# ---- missing trees ------------------------------------------------------------------------------


def test_block_group_tree_claimed_but_missing(base: dict[str, Path], tmp_path: Path) -> None:
    p = copy(base, tmp_path)
    edit_super(p, {"compat_ro_flags": sbv(p, "compat_ro_flags") | C.COMPAT_RO_BLOCK_GROUP_TREE})
    rc, lines = progs(p)
    assert rc == 1 and "couldn't load block group tree" in lines
    res = ours(p)
    assert [f.what for f in res.findings if f.code == "root-missing"] == [
        f"tree {C.BLOCK_GROUP_TREE_OBJECTID} (BLOCK_GROUP_TREE)"
    ]


def test_empty_root_tree(base: dict[str, Path], tmp_path: Path) -> None:
    p = copy(base, tmp_path)
    rewrite_leaf(p, sbv(p, "root"), lambda items: [])
    rc, lines = progs(p)
    assert rc == 1 and "could not setup extent tree" in lines
    res = ours(p)
    assert [f.what for f in res.findings if f.code == "root-missing"] == [
        f"tree {C.EXTENT_TREE_OBJECTID} (EXTENT_TREE)"
    ]
