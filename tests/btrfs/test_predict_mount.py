"""``predict-mount`` against a separate, simple re-implementation of the kernel's block
group search over ``btrfs inspect-internal dump-tree`` output.

The reference here does not use fsoracle's reader: it parses dump-tree's text into leaves
(with their first keys and item keys) and nodes (with their children), and counts the
distinct blocks on the root→leaf paths of every leaf the search visits. A search for key k
lands in the leaf reached by taking, at each node, the last child whose key is <= k (or the
first child); from there items are scanned forward leaf by leaf until one with objectid >=
k.objectid and type BLOCK_GROUP_ITEM (192) is found (find_first_block_group, 6.12).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.dumptree_text import parse_dump_tree
from model.blocksource import FileSource, NullSink
from model.btrfs.convert import spec_from_image
from model.btrfs.mkfs import MkfsError, write_filesystem
from model.btrfs.mount import MountCost, predict_built, predict_mount, predict_relayout
from model.btrfs.reader import BtrfsImage
from model.errors import FormatError
from tests.btrfs.images import loop_mounted
from tests.tools import require_root, require_tool, run


def count_chunks(dump_tree_chunk_tree: str) -> int:
    """CHUNK_ITEMs in `dump-tree -t 3` output (item lines only, not node key lines)."""
    return len(re.findall(r"\titem \d+ key \(FIRST_CHUNK_TREE CHUNK_ITEM", dump_tree_chunk_tree))


def reference_count(text: str) -> tuple[int, int]:
    """(distinct blocks visited, block groups found) by the simple re-implementation."""
    root, blocks = parse_dump_tree(text)
    leaves: list[tuple[int, list[int]]] = []  # (leaf, ancestors) in key order

    def collect(addr: int, anc: list[int]) -> None:
        b = blocks[addr]
        if b.level == 0:
            leaves.append((addr, anc))
        for c in b.children:
            collect(c, [*anc, addr])

    collect(root, [])

    def land(k: tuple[int, int, int]) -> int:
        addr = root
        while blocks[addr].level > 0:
            b = blocks[addr]
            idx = max([i for i, kk in enumerate(b.keys) if kk <= k], default=0)
            addr = b.children[idx]
        return next(i for i, (a, _) in enumerate(leaves) if a == addr)

    visited: set[int] = set()

    def visit(i: int) -> None:
        visited.add(leaves[i][0])
        visited.update(leaves[i][1])

    found = 0
    key = (0, 192, 0)
    while True:
        i = land(key)
        visit(i)
        hit = None
        while hit is None and i < len(leaves):
            for k in blocks[leaves[i][0]].keys:
                if k >= key and k[0] >= key[0] and k[1] == 192:
                    hit = k
                    break
            if hit is None:
                i += 1
                if i < len(leaves):
                    visit(i)
        if hit is None:
            break
        found += 1
        key = (hit[0] + hit[2], 192, 0)
    return len(visited), found


def many_bg_image(path: Path, bg_tree: bool) -> Path:
    """16 GiB, 4 KiB nodes, 3000 preallocated 4 MiB files through the host kernel: a
    two-level extent tree with a dozen data block groups spread through it."""
    require_root("a loop mount")
    with open(path, "wb") as f:
        f.truncate(16 << 30)
    extra = ["-O", "block-group-tree"] if bg_tree else []
    subprocess.run(["mkfs.btrfs", "-q", "-f", "-n", "4096", *extra, str(path)], check=True)
    with loop_mounted(path) as mnt:
        for i in range(3000):
            fd = os.open(mnt / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
            os.posix_fallocate(fd, 0, 4 << 20)
            os.close(fd)
    return path


@pytest.fixture(scope="module")
def many_bg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("mkfs.btrfs")
    d = tmp_path_factory.mktemp("many-bg")
    return {
        "extent-tree": many_bg_image(d / "et.img", False),
        "bg-tree": many_bg_image(d / "bgt.img", True),
    }


@pytest.mark.parametrize("variant", ["kernel", "kernel-bg-tree", "rootdir-4k", "default"])
def test_predict_mount_matches_reference(btrfs_image, variant: str) -> None:
    require_tool("btrfs")
    path = btrfs_image(variant)
    check_image(path)


@pytest.mark.parametrize("layout", ["extent-tree", "bg-tree"])
def test_predict_mount_many_block_groups(many_bg: dict[str, Path], layout: str) -> None:
    require_tool("btrfs")
    visited = check_image(many_bg[layout])
    if layout == "extent-tree":
        assert visited > 12  # spread over many leaves: the point of the bg tree


def check_image(path: Path) -> int:
    img = BtrfsImage.open(FileSource(path))
    cost = predict_mount(img)
    r = run(["btrfs", "inspect-internal", "dump-tree", "-t", str(cost.tree), str(path)])
    assert r.returncode == 0, r.stderr
    ref_visited, ref_found = reference_count(r.stdout)
    chunks = run(["btrfs", "inspect-internal", "dump-tree", "-t", "3", str(path)]).stdout
    assert cost.block_groups == ref_found == count_chunks(chunks)
    assert cost.visited == ref_visited
    assert cost.first_read_inside == ref_visited - 1
    return cost.visited


def test_what_if_layouts_follow_item_arithmetic(tmp_path: Path) -> None:
    """The same block groups re-laid out: a block group tree of n 49-byte items (25-byte
    header + 24-byte item) needs ceil(49 n / 3995) 4 KiB leaves, a skinny one ceil(25 n /
    3995), each under one root node when there is more than one leaf."""
    import math

    from model.blocksource import FileSink
    from model.btrfs.mkfs import MkfsConfig, make_btrfs

    cfg = MkfsConfig(size=128 << 30, nodesize=4096, fill=120 << 30)
    path = tmp_path / "w.img"
    with FileSink(path, cfg.size) as sink:
        make_btrfs(cfg, sink)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "btrfs",
            "predict-mount",
            "--json",
            str(path),
            "--what-if",
            "bg-tree",
            "--what-if",
            "skinny-bg-tree",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    et, bgt, sk = json.loads(r.stdout)["predictions"]
    n = et["block_groups"]
    chunks = run(["btrfs", "inspect-internal", "dump-tree", "-t", "3", str(path)]).stdout
    assert n == count_chunks(chunks)
    for cost, item in ((bgt, 49), (sk, 25)):
        leaves = math.ceil(n * item / 3995)
        assert cost["visited_leaves"] == cost["tree_leaves"] == leaves
        assert cost["visited_nodes"] == (1 if leaves > 1 else 0)
    assert et["visited"] > n  # one leaf per block group at least


@pytest.mark.slow
def test_seed_table_reproduced() -> None:
    """The seed's published counts: 14 blocks through a block group tree, 8 through the
    skinny one (exactly), 1080 through the extent tree (within 2 %)."""
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "btrfs", "seed-table", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    rows = {row["layout"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["bg-tree"]["ours"]["visited"] == 14
    assert rows["skinny-bg-tree"]["ours"]["visited"] == 8
    assert abs(rows["extent-tree"]["ours"]["visited"] - 1080) <= 0.02 * 1080


# ---- --what-if: the re-layout computed without writing, against writing it ---------------
#
# The oracle is how `predict-mount --what-if` used to be computed: the writer writes the whole
# re-laid-out filesystem (into a sink that drops the bytes) and the prediction runs over the
# trees it built. predict_relayout must give the same prediction, or refuse the image with the
# same error, on every layout.

RELAYOUTS = ("extent-tree", "bg-tree", "skinny-bg-tree")


def relayout_by_writing(img: BtrfsImage, layout: str) -> MountCost:
    built = write_filesystem(spec_from_image(img, layout), NullSink())
    return predict_built(built, layout)


def outcome(f: Callable[[], MountCost]) -> dict[str, Any] | tuple[str, str]:
    try:
        return dataclasses.asdict(f())
    except (FormatError, MkfsError) as e:
        return (type(e).__name__, str(e))


def relayout_outcomes(path: Path) -> list[tuple[Any, Any]]:
    """(by writing, predict_relayout) per layout."""
    img = BtrfsImage.open(FileSource(path))
    return [
        (
            outcome(lambda: relayout_by_writing(img, lay)),  # noqa: B023
            outcome(lambda: predict_relayout(img, lay)),  # noqa: B023
        )
        for lay in RELAYOUTS
    ]


@pytest.mark.parametrize(
    "variant",
    ["default", "nodesize-4k", "nodesize-64k", "bg-tree", "meta-single", "rootdir", "kernel"],
)
def test_relayout_equals_writing_it(btrfs_image, variant: str) -> None:  # type: ignore[no-untyped-def]
    """mkfs.btrfs images (one of them a block group tree), a --rootdir one and a
    kernel-written one (it holds a snapshot: both refuse it alike)."""
    for old, new in relayout_outcomes(btrfs_image(variant)):
        assert new == old


@pytest.fixture(scope="module")
def writer_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 GiB, 4 KiB nodes, 22 GiB of 4 MiB extents, written in two layouts: 24 block
    groups and an extent tree of two levels."""
    from model.blocksource import FileSink
    from model.btrfs.mkfs import MkfsConfig, make_btrfs

    d = tmp_path_factory.mktemp("relayout")
    out = {}
    for layout in ("extent-tree", "skinny-bg-tree"):
        cfg = MkfsConfig(size=24 << 30, nodesize=4096, fill=22 << 30, layout=layout)
        out[layout] = d / f"{layout}.img"
        with FileSink(out[layout], cfg.size) as sink:
            make_btrfs(cfg, sink)
    return out


def test_relayout_equals_writing_it_many_block_groups(
    writer_images: dict[str, Path], many_bg: dict[str, Path]
) -> None:
    """Writer-made and kernel-made (3000 preallocated files) images with many block groups,
    from each source layout to each layout; the extent tree re-laid out has a node level, so
    the search crosses leaves and nodes."""
    pairs = []
    for path in [*writer_images.values(), *many_bg.values()]:
        pairs += relayout_outcomes(path)
    for old, new in pairs:
        assert new == old
    assert all(isinstance(old, dict) for old, _ in pairs)
    extent = [old for old, _ in pairs if old["layout"] == "extent-tree"]  # type: ignore[index]
    assert min(c["tree_nodes"] for c in extent) >= 1  # type: ignore[index]
    assert min(c["block_groups"] for c in extent) >= 12  # type: ignore[index]
