"""Bad images at the CLI (issue 17): ``predict-mount``, ``convert`` and ``check`` end in one
line on stderr naming the image, exit status 2 (or 1 with findings for ``check``), never a
traceback; ``convert`` runs the checker first.

The inconsistencies are edits of copies of mkfs.btrfs images; btrfs check (btrfs-progs
6.14) fails each of them (asserted here), which is what makes them bad input.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.items import Key
from model.btrfs.reader import BtrfsImage
from tests.btrfs.corrupt import rewrite_leaf
from tests.btrfs.images import make_image
from tests.btrfs.imgedit import edit_super, rewrite_block, sb_get, sparse_copy
from tests.tools import require_tool, run

SIZE = 256 << 20


def fsoracle(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "fsoracle"
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "harness.cli"]
    return run([*prog, *args])


def assert_one_line(
    r: subprocess.CompletedProcess[str], image: Path | None, status: int = 2
) -> str:
    """Exit ``status``, one line on stderr naming ``image`` (when given), no traceback."""
    assert r.returncode == status, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    if image is not None:
        assert str(image) in r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("mkfs.btrfs")
    return make_image("default", tmp_path_factory.mktemp("badcli") / "clean.img", size=SIZE)


def progs_rejects(p: Path, *extra: str) -> bool:
    require_tool("btrfs")
    return run(["btrfs", "check", "--readonly", *extra, str(p)], timeout=10).returncode != 0


def sb_field(p: Path, name: str) -> int:
    with open(p, "rb") as f:
        f.seek(C.SUPER_INFO_OFFSET)
        v = sb_get(f.read(C.SUPER_INFO_SIZE), name)
    assert isinstance(v, int)
    return v


def bg_tree_claimed(clean: Path, tmp_path: Path) -> Path:
    p = sparse_copy(clean, tmp_path / "bgt-claimed.img")
    ro = sb_field(p, "compat_ro_flags") | C.COMPAT_RO_BLOCK_GROUP_TREE
    edit_super(p, {"compat_ro_flags": ro})
    return p


def empty_root_tree(clean: Path, tmp_path: Path) -> Path:
    p = sparse_copy(clean, tmp_path / "empty-root.img")
    rewrite_leaf(p, sb_field(p, "root"), lambda items: [])
    return p


def duplicate_key(clean: Path, tmp_path: Path) -> Path:
    """The fs tree's (leaf) root holds its second item twice."""
    p = sparse_copy(clean, tmp_path / "dup.img")
    with FileSource(p) as src:
        root = BtrfsImage.open(src).tree(C.FS_TREE_OBJECTID)
    assert root is not None and root.level == 0
    rewrite_leaf(p, root.bytenr, lambda items: [*items[:2], items[1], *items[2:]])
    return p


@pytest.mark.parametrize("make", [bg_tree_claimed, empty_root_tree])
def test_predict_mount_without_block_group_root(make, clean: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = make(clean, tmp_path)
    assert progs_rejects(p)
    err = assert_one_line(fsoracle("btrfs", "predict-mount", str(p)), p)
    assert "cannot predict the mount" in err and "ROOT_ITEM" in err


def test_predict_mount_what_if_duplicate_keys(clean: Path, tmp_path: Path) -> None:
    p = duplicate_key(clean, tmp_path)
    assert progs_rejects(p)
    err = assert_one_line(fsoracle("btrfs", "predict-mount", str(p), "--what-if", "bg-tree"), p)
    assert "keys must strictly increase" in err


def test_convert_runs_the_checker_first(clean: Path, tmp_path: Path) -> None:
    p = duplicate_key(clean, tmp_path)
    out = tmp_path / "out.img"
    err = assert_one_line(fsoracle("btrfs", "convert", str(p), str(out), "--layout", "bg-tree"), p)
    assert "fsoracle btrfs check" in err and "bad key order" in err
    assert "--force-inconsistent" in err
    assert not out.exists() and not Path(str(out) + ".tmp").exists()
    # forced: it goes on, and stops where the writer cannot lay the leaf out again
    r = fsoracle(
        "btrfs", "convert", str(p), str(out), "--layout", "bg-tree", "--force-inconsistent"
    )
    err = assert_one_line(r, p)
    assert "cannot convert" in err and "keys must strictly increase" in err
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_convert_refuses_a_superblock_finding(clean: Path, tmp_path: Path) -> None:
    """A superblock the kernel refuses (leafsize != nodesize; btrfs check accepts it, a
    listed difference) is an inconsistency convert refuses too, naming the rule's line."""
    p = sparse_copy(clean, tmp_path / "leaf.img")
    edit_super(p, {"leafsize": 0})
    out = tmp_path / "out.img"
    err = assert_one_line(fsoracle("btrfs", "convert", str(p), str(out), "--layout", "bg-tree"), p)
    assert "invalid leafsize 0" in err
    r = fsoracle(
        "btrfs", "convert", str(p), str(out), "--layout", "bg-tree", "--force-inconsistent"
    )
    assert r.returncode == 0, r.stderr
    assert out.exists()


def test_check_and_dump_on_unmapped_log_root(clean: Path, tmp_path: Path) -> None:
    """An aligned log_root that no chunk maps: dump walks the log tree and exits 2; check
    (which reads the log root, as btrfs check does) reports it and exits 1."""
    p = sparse_copy(clean, tmp_path / "log.img")
    edit_super(p, {"log_root": 4096})
    assert progs_rejects(p)
    # (dump's walk errors do not name the image yet: cmd_dump is outside this change)
    assert_one_line(fsoracle("btrfs", "dump", "--tree", "all", str(p)), None)
    r = fsoracle("btrfs", "check", str(p))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "read-error" in r.stdout and "Traceback" not in r.stderr


def test_predict_mount_zero_length_block_group(clean: Path, tmp_path: Path) -> None:
    """A block group item (X, 192, 0) where no chunk starts: the search for the next block
    group would find it again forever; it is a FormatError instead."""
    p = sparse_copy(clean, tmp_path / "bg0.img")
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        ext = img.tree(C.EXTENT_TREE_OBJECTID)
        assert ext is not None and ext.level == 0
        data = next(c for c in img.chunk_map if c.type & C.BLOCK_GROUP_DATA)
    start = data.key.offset

    def edit(items: list[tuple[Key, bytes]]) -> list[tuple[Key, bytes]]:
        out = [
            (Key(start + 4096, k.type, 0), b) if (k.objectid, k.type) == (start, 192) else (k, b)
            for k, b in items
        ]
        assert out != items and [k for k, _ in out] == sorted(k for k, _ in out)
        return out

    rewrite_leaf(p, ext.bytenr, edit)
    # the chunk has no block group now: lowmem mode fails it (the original mode drops the
    # check_chunks error, see test_check.py's bg-flags-vs-chunk-type)
    assert progs_rejects(p, "--mode=lowmem")
    err = assert_one_line(fsoracle("btrfs", "predict-mount", str(p)), p)
    assert "has length 0" in err


def test_predict_mount_empty_node(tmp_path: Path) -> None:
    """The extent tree's root node (level 1) with nritems 0: the reader refuses the node
    (a FormatError, one line), the search never indexes an empty node."""
    require_tool("mkfs.btrfs")
    p = make_image("rootdir-4k", tmp_path / "node.img", size=SIZE)
    with FileSource(p) as src:
        img = BtrfsImage.open(src)
        ext = img.tree(C.EXTENT_TREE_OBJECTID)
        assert ext is not None and ext.level == 1
        rewrite_block(p, img, ext.bytenr, lambda raw: struct.pack_into("<I", raw, 96, 0))
    assert progs_rejects(p)
    err = assert_one_line(fsoracle("btrfs", "predict-mount", str(p)), p)
    assert "nritems 0" in err
