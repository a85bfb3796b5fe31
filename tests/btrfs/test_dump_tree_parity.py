"""Differential test: :mod:`model.btrfs.printtree` against ``btrfs inspect-internal
dump-tree`` (btrfs-progs 6.14), line for line, on every image of ``images.VARIANTS`` and a
few extra images made here for the item types those lack (special files, escaped names
and xattr values, hard-link extrefs, inode flags, zlib/lzo/zstd, quotas and simple quotas
with owner refs, non-skinny metadata, a log tree, a finished dev replace, and a mkfs
image whose root tree leaf is rebuilt to hold the rarer item types).

Everything expected comes from dump-tree's text: the list of trees (``dump-tree -r``), each
tree's output (``-t ID``), the whole-image output, and — through a small parser written
here — the node/leaf/item counts and the block group table that ``fsoracle btrfs dump
--json`` must report. dump-tree runs with TZ=UTC; only its ``btrfs-progs v6.14`` banner is
dropped.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs.csum import csum_block
from model.btrfs.items import Key
from model.btrfs.printtree import dump_tree, print_all
from model.btrfs.reader import BtrfsImage
from tests.btrfs.images import SIZE, VARIANTS, loop_mounted
from tests.tools import require_root, require_tool

# ---- dump-tree ----------------------------------------------------------------------------

ENV = dict(os.environ, TZ="UTC", LC_ALL="C")


_runs: dict[tuple[str, ...], list[str]] = {}


def dump_tree_lines(image: Path, *args: str) -> list[str]:
    """dump-tree's stdout as lines (bytes that are not UTF-8 kept as surrogate escapes),
    without the ``btrfs-progs v6.14`` banner. Cached per session (images are read-only)."""
    k = (str(image), *args)
    if k not in _runs:
        _runs[k] = _dump_tree_lines(image, *args)
    return _runs[k]


def _dump_tree_lines(image: Path, *args: str) -> list[str]:
    r = subprocess.run(
        ["btrfs", "inspect-internal", "dump-tree", *args, str(image)],
        capture_output=True,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode("utf-8", "surrogateescape").split("\n")
    assert lines[0] == "btrfs-progs v6.14", lines[0]
    if lines[-1] == "":
        lines.pop()
    return lines[1:]


def ours(lines: Iterable[str]) -> list[str]:
    """Our lines, split again on newlines so both sides are cut the same way."""
    return "\n".join(lines).split("\n")


def first_difference(expected: list[str], got: list[str], what: str) -> str:
    """The first differing region as a unified diff (at most 60 lines)."""
    diff = list(
        difflib.unified_diff(expected, got, "dump-tree " + what, "fsoracle", n=3, lineterm="")
    )
    hunk_starts = [i for i, line in enumerate(diff) if line.startswith("@@")]
    end = hunk_starts[1] if len(hunk_starts) > 1 else len(diff)
    region = diff[: min(end, 60)]
    return f"{what}: {len(expected)} lines from dump-tree, {len(got)} from fsoracle\n" + "\n".join(
        region
    )


# names dump-tree prints for tree objectids (print_objectid); anything else is a number
TREE_IDS = {
    "ROOT_TREE": 1,
    "EXTENT_TREE": 2,
    "CHUNK_TREE": 3,
    "DEV_TREE": 4,
    "FS_TREE": 5,
    "CSUM_TREE": 7,
    "QUOTA_TREE": 8,
    "UUID_TREE": 9,
    "FREE_SPACE_TREE": 10,
    "BLOCK_GROUP_TREE": 11,
    "RAID_STRIPE_TREE": 12,
    "TREE_LOG": (1 << 64) - 6,
    "TREE_RELOC": (1 << 64) - 8,
    "DATA_RELOC_TREE": (1 << 64) - 9,
}
TREE_LOG = TREE_IDS["TREE_LOG"]
U64 = (1 << 64) - 1


def trees_from_roots_listing(image: Path) -> list[int]:
    """Tree ids from ``dump-tree -r``: root, chunk and log root tree, then every ROOT_ITEM
    key (the per-subvolume log trees, ``(TREE_LOG ROOT_ITEM n)``, are part of the log root
    tree's output, not trees of their own for ``-t``)."""
    ids: list[int] = []
    for line in dump_tree_lines(image, "-r"):
        if line.startswith("root tree:"):
            ids.append(1)
        elif line.startswith("chunk tree:"):
            ids.append(3)
        elif line.startswith("log root tree:"):
            ids.append(TREE_LOG)
        else:
            m = re.search(r"tree key \((\S+) ROOT_ITEM \S+\)", line)
            if m:
                tid = TREE_IDS[m[1]] if m[1] in TREE_IDS else int(m[1])
                if tid != TREE_LOG and tid not in ids:
                    ids.append(tid)
    return ids


# ---- an independent parser of dump-tree's text ----------------------------------------------

NODE_RE = re.compile(r"^node \d+ level (\d+) items (\d+) free space")
LEAF_RE = re.compile(r"^leaf \d+ items (\d+) free space")
BG_KEY_RE = re.compile(r"^\titem \d+ key \((\d+) BLOCK_GROUP_ITEM (\d+)\) itemoff")
BG_BODY_RE = re.compile(r"^\t\tblock group used (\d+) chunk_objectid \d+ flags (\S+)$")
BG_FLAG_BITS = {
    "DATA": 1 << 0,
    "SYSTEM": 1 << 1,
    "METADATA": 1 << 2,
    "RAID0": 1 << 3,
    "RAID1": 1 << 4,
    "DUP": 1 << 5,
    "RAID10": 1 << 6,
    "RAID5": 1 << 7,
    "RAID6": 1 << 8,
    "RAID1C3": 1 << 9,
    "RAID1C4": 1 << 10,
    "single": 0,
}


def count_blocks(lines: list[str]) -> tuple[int, int, int]:
    """(nodes, leaves, items in leaves) from the block header lines."""
    nodes = leaves = items = 0
    for line in lines:
        if NODE_RE.match(line):
            nodes += 1
        elif m := LEAF_RE.match(line):
            leaves += 1
            items += int(m[1])
    return nodes, leaves, items


def block_groups(lines: list[str]) -> list[tuple[int, int, int, int]]:
    """(start, length, flags, used) of every BLOCK_GROUP_ITEM in a tree's output."""
    out = []
    for i, line in enumerate(lines):
        if m := BG_KEY_RE.match(line):
            b = BG_BODY_RE.match(lines[i + 1])
            assert b, lines[i + 1]
            flags = 0
            for name in b[2].split("|"):
                flags |= BG_FLAG_BITS[name]
            out.append((int(m[1]), int(m[2]), flags, int(b[1])))
    return out


# ---- extra images for the item types VARIANTS lacks -----------------------------------------


def _sh(*cmd: str | Path) -> None:
    r = subprocess.run([str(c) for c in cmd], capture_output=True)
    if r.returncode:
        raise RuntimeError(f"{cmd} failed: {r.stderr.decode(errors='replace').strip()}")


def _mkfs(path: Path, *opts: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(SIZE)
    _sh("mkfs.btrfs", "-f", "-q", *opts, path)
    return path


def _write_exotic(mnt: Path) -> None:
    """Special files, names and xattr values with every byte value, 40 long hard links in
    one directory (INODE_EXTREF), inode flags, times before 1970 and after 2100, zlib /
    lzo / zstd regular and inline extents, a punched and preallocated file, quotas with a
    level-1 qgroup and limits, a read-only snapshot, a default subvolume."""
    d = mnt / "exotic"
    d.mkdir()
    os.mknod(d / "chr", 0o020600, os.makedev(1, 3))
    os.mknod(d / "blk", 0o060600, os.makedev(7, 0))
    os.mkfifo(d / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "sock"))
    every = bytes(b for b in range(1, 256) if b != ord("/"))
    (d / os.fsdecode(b"A" + every[:120])).write_bytes(b"")
    (d / os.fsdecode(b"B" + every[120:])).write_bytes(b"")
    (d / ("n" * 255)).write_bytes(b"long name")
    (d / "target").write_bytes(b"t" * 100)
    (d / "links").mkdir()
    for i in range(40):
        os.link(d / "target", d / "links" / (f"{i:03d}-\\ " + "L" * 200))
    x = d / "xattrs"
    x.write_bytes(b"x")
    os.setxattr(x, "user.all", bytes(range(256)))
    os.setxattr(x, "user.long", b"v" * 1000)
    os.setxattr(x, "user.empty", b"")
    os.setxattr(x, os.fsdecode(b"user.\xc3\xa9t\xc3\xa9 \\"), "été".encode())
    t = d / "times"
    t.write_bytes(b"t")
    os.utime(t, ns=(-315619200_123456789, 7258118400_999999999))
    for flag, name in (
        ("+i", "immutable"),
        ("+a", "append"),
        ("+d", "nodump"),
        ("+A", "noatime"),
        ("+S", "sync"),
        ("+c", "compress"),
        ("+C", "nocow"),
    ):
        (d / name).touch()
        _sh("chattr", flag, d / name)
    (d / "dirsync").mkdir()
    _sh("chattr", "+D", d / "dirsync")
    for alg in ("zlib", "lzo", "zstd"):
        for name, data in ((f"comp-{alg}", b"compressible " * 20000), (f"inl-{alg}", b"a" * 3000)):
            (d / name).touch()
            _sh("btrfs", "property", "set", d / name, "compression", alg)
            (d / name).write_bytes(data)
    os.symlink("T" * 1000, d / "longlink")
    (d / "holey").write_bytes(os.urandom(200000))
    _sh("fallocate", "-p", "-o", "40960", "-l", "65536", d / "holey")
    _sh("fallocate", "-n", "-o", "0", "-l", "1M", d / "holey")
    _sh("btrfs", "quota", "enable", mnt)
    _sh("btrfs", "subvolume", "create", mnt / "sv")
    (mnt / "sv" / "f").write_bytes(os.urandom(30000))
    _sh("btrfs", "subvolume", "snapshot", "-r", mnt / "sv", mnt / "sv-ro")
    _sh("btrfs", "qgroup", "create", "1/100", mnt)
    _sh("btrfs", "qgroup", "assign", "0/256", "1/100", mnt)
    _sh("btrfs", "qgroup", "limit", "100M", mnt / "sv")
    _sh("btrfs", "qgroup", "limit", "-e", "50M", "1/100", mnt)
    _sh("btrfs", "subvolume", "set-default", mnt / "sv")
    os.sync()


def _exotic(*mkfs_opts: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        _mkfs(path, *mkfs_opts)
        with loop_mounted(path) as mnt:
            _write_exotic(mnt)
        return path

    return make


def _log_tree(path: Path) -> Path:
    """A copy of the image taken after fsyncs and before any commit: the superblock names a
    log root tree holding a log tree for the fs tree (DIR_LOG items...)."""
    src = _mkfs(path.with_suffix(".src"), "-n", "4096")
    with loop_mounted(src, "commit=300") as mnt:
        d = mnt / "d"
        d.mkdir()
        for i in range(5):
            (d / f"pre{i}").write_bytes(b"p" * 100)
        os.sync()
        for i in range(3):
            fd = os.open(d / f"logged{i}", os.O_CREAT | os.O_WRONLY)
            os.write(fd, os.urandom(20000))
            os.fsync(fd)
            os.close(fd)
        (d / "pre0").unlink()
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        _sh("cp", "--sparse=always", src, path)
    src.unlink()
    return path


def _dev_replace(path: Path) -> Path:
    """The target of a finished ``btrfs replace``: its dev tree holds a DEV_REPLACE item."""
    src = _mkfs(path.with_suffix(".src"))
    with open(path, "wb") as f:
        f.truncate(SIZE)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        with loop_mounted(src) as mnt:
            (mnt / "f").write_bytes(os.urandom(100000))
            os.sync()
            _sh("btrfs", "replace", "start", "-B", "-f", "1", loop, mnt)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    src.unlink()
    return path


def _q(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}Q", *(x & U64 for x in v))


def _synthetic_root_items(fs_root_item: bytes) -> list[tuple[Key, bytes]]:
    """Items of the types no real image here holds, with values chosen to hit every branch
    of their printers (keys sort anywhere: the leaf is rebuilt in key order)."""
    inode = bytearray(160)
    struct.pack_into(
        "<5Q4I3Q", inode, 0, 7, 8, 9, 10, 11, 3, 1000, 1000, 0o100644, 258, 0x80000801, 12
    )
    # times: year 1, year -1199, year 10000, and -1 (u64 max as a signed time_t)
    for i, (sec, ns) in enumerate(
        ((-62135596800, 5), (-100000000000, 0), (253402300800, 999999999), (-1, 1))
    ):
        struct.pack_into("<QI", inode, 112 + 12 * i, sec & U64, ns)
    legacy_root = bytearray(fs_root_item[:239])  # a ROOT_ITEM before generation_v2
    struct.pack_into("<Q", legacy_root, 160 + 48, 1)  # flags RDONLY

    def balance_args(b: int) -> bytes:
        return struct.pack("<Q2I7Q2I2I", *(b + i for i in range(1, 15))).ljust(136, b"\0")

    balance = _q(0x1F) + balance_args(0) + balance_args(100) + balance_args(200) + bytes(32)
    qg = (1 << 48) | 100
    return [
        (Key(-11 & U64, 0, 22020096), Key(257, 1, 0).pack() + _q(5, 3, 1)),  # v1 cache header
        (Key(-4 & U64, 248, 0), balance),  # paused balance
        (Key(-13 & U64, 248, 2), b""),  # csum change to sha256
        (Key(-13 & U64, 248, 9), b""),
        (Key(1000, 248, 0), b""),
        (Key(1000, 249, 1), _q(1, 2)),
        (Key(0, 249, 2), _q(1, 2, 3, 4, 5, 6, 7)),  # dev stats with two unknown values
        (Key(1001, 253, 0), b"hello\0world"),  # STRING_ITEM
        (Key(1002, 230, 65536), _q(1, 1048576, 2, 2097152)),  # RAID_STRIPE
        (Key(1003, 36, 0), b"desc"),  # VERITY_DESC_ITEM
        (Key(1003, 37, 0), b"merkle"),
        (Key(1004, 180, 5), _q(5)),  # EXTENT_REF_V0
        (Key(1004, 120, 0), _q(5)),  # CSUM_ITEM
        (Key(1005, 172, 0), _q(5)),  # keyed EXTENT_OWNER_REF
        (Key(0, 240, 0), _q(1, 9, 0xF07, 12345, 0)),  # QGROUP_STATUS, unknown flags
        (Key(0, 242, qg), _q(9, 1, 2, 3, 4)),
        (Key(0, 244, qg), _q(3, -1, 5, -2, 7)),
        (Key(qg, 246, 5), b""),
        (Key(5, 246, qg), b""),
        (Key(0x1234, 252, 0x5678), b"x" * 12),  # uuid item of an illegal size
        (Key(0x1234, 251, -1 & U64), _q(5, 6)),
        (Key(-5 & U64, 48, 257), b""),  # ORPHAN_ITEM
        (Key(1006, 7, -1 & U64), b"zz"),  # a type print-tree does not know
        (Key(1008, 1, 0), bytes(inode)),
        (Key(1007, 132, 0), bytes(legacy_root)),  # a second tree on the fs tree's root
        (Key(-8 & U64, 132, 5), fs_root_item),  # a reloc tree for FS_TREE
    ]


def _synthetic(path: Path) -> Path:
    """A mkfs image whose root tree leaf is rebuilt with :func:`_synthetic_root_items` added
    (bodies repacked in key order, header flags WRITTEN|RELOC, checksum redone, every
    copy written). No mount needed."""
    _mkfs(path)
    img = BtrfsImage.open(FileSource(str(path)))
    blk = img.read_tree_block(img.sb.root)
    assert blk.is_leaf, "mkfs's root tree is one leaf"
    items = [(ih.key, blk.item_data(i)) for i, ih in enumerate(blk.items)]
    fs_root_item = next(body for k, body in items if (k.objectid, k.type) == (5, 132))
    items = sorted(items + _synthetic_root_items(fs_root_item), key=lambda kv: kv[0])
    n = len(blk.raw)
    raw = bytearray(n)
    raw[:101] = blk.raw[:101]
    struct.pack_into("<Q", raw, 56, (1 << 56) | 0x3)  # flags: WRITTEN|RELOC, backref rev 1
    struct.pack_into("<I", raw, 96, len(items))
    end = n - 101
    for i, (k, body) in enumerate(items):
        end -= len(body)
        raw[101 + end : 101 + end + len(body)] = body
        struct.pack_into("<17sII", raw, 101 + 25 * i, k.pack(), end, len(body))
    assert 25 * len(items) <= end
    raw[:32] = csum_block(img.sb.csum_type, bytes(raw))
    with open(path, "r+b") as f:
        for phys in img.chunk_map.map_read(blk.logical, n):
            f.seek(phys)
            f.write(raw)
    return path


EXTRA: dict[str, Callable[[Path], Path]] = {
    "synthetic": _synthetic,
    "exotic": _exotic("-n", "4096"),
    "exotic-noskinny": _exotic("-O", "^skinny-metadata"),
    "exotic-squota": _exotic("-O", "squota"),
    "log-tree": _log_tree,
    "dev-replace": _dev_replace,
}
_extra_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def any_image(btrfs_image, btrfs_image_dir: Path):  # type: ignore[no-untyped-def]
    """``any_image(name)``: a VARIANTS image, or one of the EXTRA images built here."""

    def get(name: str) -> Path:
        if name in VARIANTS:
            path: Path = btrfs_image(name)
            return path
        require_tool("mkfs.btrfs")
        if name != "synthetic":
            require_root("a loop mount")
        if name not in _extra_built:
            _extra_built[name] = EXTRA[name](btrfs_image_dir / f"parity-{name}.img")
        return _extra_built[name]

    return get


ALL_IMAGES = [*VARIANTS, *EXTRA]


# ---- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_every_tree_matches_dump_tree(name: str, any_image) -> None:  # type: ignore[no-untyped-def]
    """``dump-tree -t ID`` for every tree ``dump-tree -r`` lists, and the whole-image dump,
    equal our renderer line for line; the reader sees the same set of trees."""
    require_tool("btrfs")
    path = any_image(name)
    img = BtrfsImage.open(FileSource(str(path)))
    tree_ids = trees_from_roots_listing(path)
    assert sorted(tree_ids) == sorted({r.objectid for r in img.trees()})
    failures = []
    for tid in tree_ids:
        expected = dump_tree_lines(path, "-t", str(tid))
        got = ours(dump_tree(img, tid))
        if got != expected:
            failures.append(first_difference(expected, got, f"-t {tid}"))
    expected = dump_tree_lines(path)
    got = ours(print_all(img))
    if got != expected:
        failures.append(first_difference(expected, got, "(whole image)"))
    assert not failures, f"{name}: {len(failures)} mismatches\n\n" + "\n\n".join(failures)


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_counts_and_block_groups_match_dump_tree(
    name: str,
    any_image,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``fsoracle btrfs dump --json``: per-tree node, leaf and item counts, and the block
    group table (start, length, flags, used), as counted in dump-tree's text."""
    require_tool("btrfs")
    from harness.cli import main

    path = any_image(name)
    assert main(["btrfs", "dump", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ours_counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for t in doc["trees"]:
        c = ours_counts[t["id"]]
        c[0] += t["nodes"]
        c[1] += t["leaves"]
        c[2] += t["items"]
    theirs_counts = {}
    bgs = []
    for tid in trees_from_roots_listing(path):
        lines = dump_tree_lines(path, "-t", str(tid))
        theirs_counts[tid] = list(count_blocks(lines))
        if tid in (2, 11):
            bgs += block_groups(lines)
    assert dict(ours_counts) == theirs_counts
    assert bgs, "dump-tree shows no block group item"
    got = sorted((b["start"], b["length"], b["flags"], b["used"]) for b in doc["block_groups"])
    assert got == sorted(bgs)


@pytest.mark.parametrize(
    ("name", "tree", "dump_tree_args"),
    [
        ("default", "extent", ["-t", "extent"]),
        ("bg-tree", "extent", ["-t", "extent"]),
        ("kernel", "extent", ["-t", "extent"]),
        ("kernel", "all", []),
        ("exotic", "fs", ["-t", "fs"]),
    ],
)
def test_cli_tree_matches_dump_tree(
    name: str,
    tree: str,
    dump_tree_args: list[str],
    any_image,  # type: ignore[no-untyped-def]
) -> None:
    """``fsoracle btrfs dump IMAGE --tree extent`` prints what ``dump-tree -t extent`` does,
    and ``--tree all`` what ``dump-tree IMAGE`` does (bytes compared, as a user sees them:
    the exotic image's names are not all UTF-8)."""
    require_tool("btrfs")
    path = any_image(name)
    fsoracle = shutil.which("fsoracle") or str(Path(sys.executable).with_name("fsoracle"))
    r = subprocess.run(
        [fsoracle, "btrfs", "dump", str(path), "--tree", tree], capture_output=True, env=ENV
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    expected = dump_tree_lines(path, *dump_tree_args)
    got = r.stdout.decode("utf-8", "surrogateescape").split("\n")
    assert got[-1] == ""
    got.pop()
    assert got == expected, first_difference(expected, got, f"--tree {tree} (CLI)")
