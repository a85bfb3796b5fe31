"""The image writer against btrfs-progs 6.14 and the host kernel.

Every image the writer makes must pass ``btrfs check`` (original and lowmem mode), print
exactly as ``dump-tree`` prints it through our reader, convert with ``btrfstune`` to the
block group tree our own ``bg-tree`` layout writes, and have the tree shapes of the same
content written by a real kernel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.blocksource import FileSink, FileSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.constants import INCOMPAT_SKINNY_BG_TREE
from model.btrfs.mkfs import MkfsConfig, MkfsError, make_btrfs
from model.btrfs.printtree import dump_tree
from model.btrfs.reader import BtrfsImage
from tests.btrfs.images import loop_mounted
from tests.tools import require_root, require_tool, run

G = 1 << 30
M = 1 << 20

# (size, fill) pairs: an almost empty small fs, and a 128 GiB one mostly full of 4 MiB
# preallocated extents
SIZES = {"1G": (1 * G, 512 * M), "128G": (128 * G, 120 * G)}


def write(path: Path, **kw: object) -> Path:
    cfg = MkfsConfig(**kw)  # type: ignore[arg-type]
    with FileSink(path, cfg.size) as sink:
        make_btrfs(cfg, sink)
    return path


def btrfs_check_both(path: Path) -> None:
    require_tool("btrfs")
    for mode in ([], ["--mode=lowmem"]):
        r = run(["btrfs", "check", *mode, str(path)])
        assert r.returncode == 0, f"btrfs check {mode}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        assert "no error found" in r.stdout


def dump_tree_text(path: Path, tree: int) -> str:
    r = run(["btrfs", "inspect-internal", "dump-tree", "-t", str(tree), str(path)])
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n", 1)[1]  # drop the "btrfs-progs v6.14" banner


def ours_text(path: Path, tree: int) -> str:
    img = BtrfsImage.open(FileSource(path))
    return "".join(line + "\n" for line in dump_tree(img, tree))


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("nodesize", [4096, 16384])
@pytest.mark.parametrize("layout", ["extent-tree", "bg-tree"])
def test_writer_passes_btrfs_check_and_matches_dump_tree(
    tmp_path: Path, layout: str, nodesize: int, size: str
) -> None:
    total, fill = SIZES[size]
    img = write(tmp_path / "w.img", size=total, nodesize=nodesize, layout=layout, fill=fill)
    btrfs_check_both(img)
    ours = BtrfsImage.open(FileSource(img))
    assert btrfs_check(ours).ok
    trees = [r.objectid for r in ours.trees()]
    assert (C.BLOCK_GROUP_TREE_OBJECTID in trees) == (layout == "bg-tree")
    for t in trees:
        assert ours_text(img, t) == dump_tree_text(img, t), f"tree {t}"
    # the data block groups are full of 4 MiB extents: the arithmetic of the layout
    r = run(["btrfs", "inspect-internal", "dump-tree", "-t", "2", str(img)])
    n_extents = len(re.findall(r"\titem \d+ key \(\d+ EXTENT_ITEM 4194304\)", r.stdout))
    assert n_extents == fill // (4 * M)


@pytest.mark.parametrize("nodesize", [4096, 16384])
def test_btrfstune_conversion_gives_our_bg_tree(tmp_path: Path, nodesize: int) -> None:
    """btrfstune --convert-to-block-group-tree on our extent-tree image moves the same
    block group items our bg-tree layout writes. Only the METADATA block group's `used`
    may differ: btrfstune allocates the new tree's blocks (and COWs others) itself."""
    require_tool("btrfstune")
    kw = dict(size=8 * G, nodesize=nodesize, fill=6 * G, files=700)
    et = write(tmp_path / "et.img", layout="extent-tree", **kw)
    bgt = write(tmp_path / "bgt.img", layout="bg-tree", **kw)
    r = run(["btrfstune", "--convert-to-block-group-tree", str(et)])
    assert r.returncode == 0, r.stderr
    btrfs_check_both(et)

    def bgs(path: Path) -> list[tuple[str, str]]:
        out = []
        lines = dump_tree_text(path, 11).splitlines()
        for i, line in enumerate(lines):
            if "BLOCK_GROUP_ITEM" in line:
                out.append((line.split("itemoff")[0].split("key")[1], lines[i + 1].strip()))
        return out

    theirs, ours = bgs(et), bgs(bgt)
    assert [k for k, _ in theirs] == [k for k, _ in ours]
    for (k, a), (_, b) in zip(theirs, ours, strict=True):
        if "METADATA" in a:
            used_a, used_b = int(a.split()[3]), int(b.split()[3])
            assert abs(used_a - used_b) <= 64 * nodesize, (k, a, b)
        else:
            assert a == b, k


def test_skinny_is_an_exact_transform_of_bg_tree(tmp_path: Path) -> None:
    """The skinny image is the bg-tree image with tree 11's items rewritten: every tree
    not describing tree 11 is identical byte for byte (dump-tree prints it identically),
    tree 11 holds (start, 193, used) with empty bodies, and converting back gives the
    bg-tree image."""
    require_tool("btrfs")
    kw = dict(size=128 * G, nodesize=4096, fill=100 * G)
    bgt = write(tmp_path / "bgt.img", layout="bg-tree", **kw)
    sk = write(tmp_path / "sk.img", layout="skinny-bg-tree", **kw)
    a, b = BtrfsImage.open(FileSource(bgt)), BtrfsImage.open(FileSource(sk))
    assert b.sb.incompat_flags == a.sb.incompat_flags | INCOMPAT_SKINNY_BG_TREE
    for t in (
        C.CHUNK_TREE_OBJECTID,
        C.DEV_TREE_OBJECTID,
        C.FS_TREE_OBJECTID,
        C.CSUM_TREE_OBJECTID,
        C.UUID_TREE_OBJECTID,
        C.DATA_RELOC_TREE_OBJECTID,
    ):
        ra, rb = a.tree(t), b.tree(t)
        assert ra is not None and rb is not None
        blocks_a = [(x.logical, x.raw) for x in a.walk(ra)]
        blocks_b = [(x.logical, x.raw) for x in b.walk(rb)]
        assert blocks_a == blocks_b, f"tree {t} differs"
    # tree 11: one skinny item per block group item, used in the key, no body
    bg_items = [(blk.items[s].key, it) for blk, s, it in a.iter_items(a.tree(11))]
    sk_items = [(blk.items[s].key, blk.items[s].size) for blk, s, _ in b.iter_items(b.tree(11))]
    assert len(bg_items) == len(sk_items)
    for (ka, ia), (kb, size) in zip(bg_items, sk_items, strict=True):
        assert (kb.objectid, kb.type, size) == (ka.objectid, 193, 0)
        if not ia.flags & C.BLOCK_GROUP_METADATA:  # metadata used differs: tree 11 shrank
            assert kb.offset == ia.used
    assert len(list(b.walk(b.tree(11)))) < len(list(a.walk(a.tree(11))))
    # back to bg-tree with our converter: what dump-tree and dump-super print is identical
    back = tmp_path / "back.img"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "btrfs",
            "convert",
            str(sk),
            str(back),
            "--layout",
            "bg-tree",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    btrfs_check_both(back)
    whole = ["btrfs", "inspect-internal", "dump-tree"]
    assert run([*whole, str(back)]).stdout == run([*whole, str(bgt)]).stdout
    sup = ["btrfs", "inspect-internal", "dump-super", "-f"]
    assert run([*sup, str(back)]).stdout.replace(str(back), "X") == run(
        [*sup, str(bgt)]
    ).stdout.replace(str(bgt), "X")


def kernel_populated(path: Path, size: int, files: int, nodesize: int) -> Path:
    """mkfs.btrfs + loop mount + the writer's names, created in the writer's order, each
    file preallocated with one 4 MiB extent (fallocate)."""
    require_root("a loop mount")
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.btrfs", "-q", "-f", "-n", str(nodesize), str(path)], check=True)
    with loop_mounted(path) as mnt:
        for i in range(files):
            d = mnt / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir()
            fd = os.open(d / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644)
            os.posix_fallocate(fd, 0, 4 * M)
            os.close(fd)
    return path


def tree_shape(path: Path) -> dict[str, dict[str, int]]:
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "btrfs", "dump", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {t["name"]: t for t in json.loads(r.stdout)["trees"]}


def test_tree_shapes_match_a_kernel_populated_filesystem(tmp_path: Path) -> None:
    """Same files through the host kernel and through the writer: the fs tree holds exactly
    the same number of items, and leaf counts agree within a few percent. The kernel
    inserts each directory's DIR_ITEMs in hash order as files are created, which splits
    those leaves half-full; the writer packs them full, so its fs tree has up to ~8 % fewer
    leaves (measured on a 30 000-file, 128 GiB image: 796 vs 841). The extent tree, filled
    by appends in both, agrees within 3 %."""
    require_tool("mkfs.btrfs")
    files, size, ns = 3000, 16 * G, 4096
    kern = tree_shape(kernel_populated(tmp_path / "k.img", size, files, ns))
    ours = tree_shape(
        write(tmp_path / "o.img", size=size, nodesize=ns, fill=files * 4 * M, files=files)
    )
    assert ours["FS_TREE"]["items"] == kern["FS_TREE"]["items"]
    k, o = kern["FS_TREE"]["leaves"], ours["FS_TREE"]["leaves"]
    assert 0.90 * k <= o <= k, (o, k)
    k, o = kern["EXTENT_TREE"]["leaves"], ours["EXTENT_TREE"]["leaves"]
    assert abs(o - k) <= max(2, 0.03 * k), (o, k)
    assert ours["EXTENT_TREE"]["height"] == kern["EXTENT_TREE"]["height"]
    assert ours["FS_TREE"]["height"] == kern["FS_TREE"]["height"]


def test_writer_refuses_bad_configs(tmp_path: Path) -> None:
    with pytest.raises(MkfsError, match="do not fit"):
        write(tmp_path / "x.img", size=1 * G, fill=2 * G)
    with pytest.raises(MkfsError, match="nodesize"):
        write(tmp_path / "x.img", size=1 * G, nodesize=3000)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "btrfs",
            "mkfs",
            str(tmp_path / "y.img"),
            "--size",
            "1G",
            "--fill",
            "5G",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert not (tmp_path / "y.img").exists() and not (tmp_path / "y.img.tmp").exists()


def dump_tree_counts(path: Path, tree: int) -> tuple[int, int, int]:
    """(nodes, leaves, items) of a tree, from dump-tree's block header lines."""
    r = run(["btrfs", "inspect-internal", "dump-tree", "-t", str(tree), str(path)])
    assert r.returncode == 0, r.stderr
    nodes = len(re.findall(r"^node \d+ level \d+ items", r.stdout, re.M))
    leaves = re.findall(r"^leaf \d+ items (\d+) ", r.stdout, re.M)
    return nodes, len(leaves), sum(int(n) for n in leaves)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["extent-tree", "bg-tree"])
def test_writer_1tib(tmp_path: Path, layout: str) -> None:
    img = write(tmp_path / "t.img", size=1126 * G, nodesize=4096, layout=layout, fill=1 << 40)
    btrfs_check_both(img)
    ours = BtrfsImage.open(FileSource(img))
    assert btrfs_check(ours).ok
    for root in ours.trees():
        st = ours.tree_stats(root)
        assert (st.nodes, st.leaves, st.items) == dump_tree_counts(img, root.objectid), root
