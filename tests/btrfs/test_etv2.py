"""extent-tree-v2: global root assignment, images with several global roots, the COW and
contention models, each against an outside value (kernel rule arithmetic, btrfs-progs,
closed forms)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.blocksource import FileSink, FileSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.contention import ContentionConfig, simulate_contention
from model.btrfs.cow import leaf_capacity
from model.btrfs.globalroots import (
    BlockGroupRef,
    GlobalRoots,
    calculate_global_root_id,
    nr_global_roots,
)
from model.btrfs.items import BlockGroupItem
from model.btrfs.mkfs import MkfsConfig, make_btrfs
from model.btrfs.reader import BtrfsImage

G = 1 << 30


def test_calculate_global_root_id_rule() -> None:
    # block-group.c calculate_global_root_id(): (start / 1 GiB) % nr, 128 MiB units on
    # devices <= 10 GiB; 256 (FIRST_CHUNK_TREE_OBJECTID) without extent-tree-v2
    assert calculate_global_root_id(100 * G, 5 * G + 7, 4) == 1
    assert calculate_global_root_id(100 * G, 8 * G, 4) == 0
    assert calculate_global_root_id(10 * G, 3 * (128 << 20), 4) == 3
    assert calculate_global_root_id(10 * G + 1, 3 * (128 << 20), 4) == 0
    assert calculate_global_root_id(100 * G, 5 * G, 4, extent_tree_v2=False) == 256


def test_global_root_lookups_by_the_kernel_rule() -> None:
    """disk-io.c btrfs_global_root_id(): 0 without extent-tree-v2; else the global_root_id of
    the block group holding bytenr (the first block group's for bytenr 0, 0 outside every
    block group); btrfs_csum_root/btrfs_extent_root are the ROOT_ITEMs of that id,
    btrfs_free_space_root the block group's own id. load_global_roots_objectid(): the
    highest extent-root offset + 1. Ids from the commit message's rule, (start / 1 GiB) % 3
    on a 100 GiB device."""
    starts = [G, 3 * G, 4 * G, 8 * G]
    bgs = [BlockGroupRef(s, G, calculate_global_root_id(100 * G, s, 3)) for s in starts]
    assert [b.global_root_id for b in bgs] == [1, 0, 1, 2]
    v2 = GlobalRoots(list(reversed(bgs)), extent_tree_v2=True)
    assert v2.btrfs_global_root_id(0) == 1  # the first block group
    assert v2.btrfs_global_root_id(G + 5) == 1
    assert v2.btrfs_global_root_id(3 * G) == 0
    assert v2.btrfs_global_root_id(5 * G - 1) == 1
    assert v2.btrfs_global_root_id(8 * G + G // 2) == 2
    assert v2.btrfs_global_root_id(2 * G) == 0  # between block groups
    assert v2.btrfs_global_root_id(9 * G) == 0  # past the last one
    assert tuple(v2.btrfs_csum_root(8 * G)) == (C.CSUM_TREE_OBJECTID, C.ROOT_ITEM_KEY, 2)
    assert tuple(v2.btrfs_extent_root(4 * G)) == (C.EXTENT_TREE_OBJECTID, C.ROOT_ITEM_KEY, 1)
    assert tuple(v2.btrfs_free_space_root(bgs[3])) == (
        C.FREE_SPACE_TREE_OBJECTID,
        C.ROOT_ITEM_KEY,
        2,
    )
    v1 = GlobalRoots(bgs, extent_tree_v2=False)
    assert {v1.btrfs_global_root_id(b) for b in (0, G, 8 * G + 1)} == {0}
    assert tuple(v1.btrfs_free_space_root(bgs[3])) == (
        C.FREE_SPACE_TREE_OBJECTID,
        C.ROOT_ITEM_KEY,
        0,
    )
    assert nr_global_roots([0, 2, 1]) == 3
    assert nr_global_roots([]) == 1


def test_leaf_capacity_arithmetic() -> None:
    # (16384 - 101) // (25 + 24) = 332; (16384 - 101) // 25 = 651; seed's ~680 = 16384/24
    assert leaf_capacity(16384, 24) == 332
    assert leaf_capacity(16384, 0) == 651
    assert 16384 // 24 == 682


def test_extent_tree_v2_image_has_global_roots(tmp_path: Path) -> None:
    cfg = MkfsConfig(
        size=24 * G, nodesize=4096, fill=16 * G, layout="extent-tree-v2", global_roots=4
    )
    path = tmp_path / "v2.img"
    with FileSink(path, cfg.size) as sink:
        make_btrfs(cfg, sink)
    img = BtrfsImage.open(FileSource(path))
    assert img.sb.incompat_flags & C.INCOMPAT_EXTENT_TREE_V2
    assert img.sb.nr_global_roots == 4
    for oid in (C.EXTENT_TREE_OBJECTID, C.CSUM_TREE_OBJECTID, C.FREE_SPACE_TREE_OBJECTID):
        assert sorted(o for (t, o) in img.roots if t == oid) == [0, 1, 2, 3]
    bgt = img.tree(C.BLOCK_GROUP_TREE_OBJECTID)
    assert bgt is not None
    bgs = [it for _, _, it in img.iter_items(bgt) if isinstance(it, BlockGroupItem)]
    for bg in bgs:  # chunk_objectid is the global_root_id by the kernel's rule
        assert bg.chunk_objectid == (bg.key.objectid // G) % 4
        # its extents and free space live in the trees of that id
        ext = img.roots[(C.EXTENT_TREE_OBJECTID, bg.chunk_objectid)]
        keys = [blk.items[s].key for blk, s, _ in img.iter_items(ext)]
        assert (
            any(bg.key.objectid <= k.objectid < bg.key.objectid + bg.key.offset for k in keys)
            or bg.used == 0
        )
        fst = img.roots[(C.FREE_SPACE_TREE_OBJECTID, bg.chunk_objectid)]
        assert any(
            blk.items[s].key.objectid == bg.key.objectid for blk, s, _ in img.iter_items(fst)
        )
    assert btrfs_check(img).ok


def test_cow_cost_command() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "etv2",
            "cow-cost",
            "--size",
            "128G",
            "--fill",
            "120G",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    layouts = json.loads(r.stdout)["layouts"]
    et, bgt = layouts["extent-tree"], layouts["bg-tree"]
    # a height-3 extent tree: at least root + node + 2 leaves, at most + a second node
    assert et["tree_height"] == 3
    assert set(et["cowed_histogram"]) <= {"4", "5"}
    # a block group tree of 2 levels: root + the one leaf holding both items
    assert bgt["tree_height"] == 2
    assert max(bgt["cowed_histogram"], key=lambda k: bgt["cowed_histogram"][k]) == "2"


def test_cow_cost_from_the_layout_equals_the_written_image() -> None:
    """``etv2 cow-cost`` builds the block group items' tree from the writer's layout
    (nothing is serialized); the trees :func:`write_filesystem` builds while writing the
    whole image (to a NullSink) must give the same COW counts for every adjacent pair of
    data block groups, per layout. 100 GiB, 96 GiB of files: a height-3 extent tree with
    both the 4 and the 5 case, a two-level block group tree."""
    import dataclasses
    import itertools
    from collections import Counter

    from harness.etv2.config import CowCostConfig
    from harness.etv2.experiment import run_cow_cost
    from model.blocksource import NullSink
    from model.btrfs.cow import cow_updates
    from model.btrfs.ctree import BtrfsTree
    from model.btrfs.items import Key
    from model.btrfs.mkfs import plan_filesystem, write_filesystem

    cfg = MkfsConfig(size=100 * G, nodesize=4096, fill=96 * G)
    spec = plan_filesystem(cfg)
    written: dict[str, dict[str, object]] = {}
    for layout in ("extent-tree", "bg-tree", "skinny-bg-tree"):
        res = write_filesystem(dataclasses.replace(spec, layout=layout), NullSink())
        tid = C.EXTENT_TREE_OBJECTID if layout == "extent-tree" else C.BLOCK_GROUP_TREE_OBJECTID
        root = res.trees[(tid, 0)]
        data = [c for c in res.chunks if c.flags & C.BLOCK_GROUP_DATA]
        hist: Counter[int] = Counter()
        for a, b in itertools.pairwise(data):
            if layout == "skinny-bg-tree":
                keys = [Key(c.start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, c.used) for c in (a, b)]
            else:
                keys = [Key(c.start, C.BLOCK_GROUP_ITEM_KEY, c.length) for c in (a, b)]
            tree = BtrfsTree.from_blocks(cfg.nodesize, tid, root, transid=100)
            hist[cow_updates(tree, keys).cowed] += 1
        written[layout] = {
            "tree_height": root.level + 1,
            "pairs": len(data) - 1,
            "cowed_histogram": dict(sorted(hist.items())),
        }
    got = run_cow_cost(CowCostConfig(size=cfg.size, fill=cfg.fill, nodesize=cfg.nodesize))
    assert got.layouts == written
    assert got.configuration == dataclasses.asdict(cfg)
    assert set(written["extent-tree"]["cowed_histogram"]) == {4, 5}  # type: ignore[arg-type]
    assert written["bg-tree"]["tree_height"] == 2


def test_contention_light_load_matches_queueing_formula() -> None:
    """Light load, spread placement: each root lock sees arrivals at rate
    T / (think + 3 hold) / M; with Poisson-like arrivals a request waits with probability
    rho = rate * hold (PASTA, M/M/1). Finite callers wait a little less."""
    t, m, think, hold = 16, 16, 40.0, 1.0
    r = simulate_contention(
        ContentionConfig(threads=t, global_roots=m, think=think, hold=hold, ops_per_thread=1500)
    )
    rho = t / (think + 3 * hold) / m * hold
    assert 0.6 * rho <= r.wait_fraction <= 1.1 * rho


def test_contention_falls_with_more_roots() -> None:
    fr = [
        simulate_contention(
            ContentionConfig(threads=8, global_roots=m, ops_per_thread=400)
        ).wait_fraction
        for m in (1, 2, 4, 8)
    ]
    assert fr == sorted(fr, reverse=True)
    one = simulate_contention(ContentionConfig(threads=1, global_roots=1, ops_per_thread=400))
    assert one.waits == 0  # a single writer never waits


@pytest.mark.parametrize("placement", ["spread", "per-thread"])
def test_contention_is_deterministic(placement: str) -> None:
    cfg = ContentionConfig(threads=4, global_roots=2, ops_per_thread=200, placement=placement)
    assert simulate_contention(cfg) == simulate_contention(cfg)


def test_leaf_capacity_read_off_dump_tree_leaves() -> None:
    """Two leaves as btrfs-progs 6.14 printed them for a kernel-written block group tree
    (16 KiB nodes): 166 items with 8149 bytes free, 238 with 4621. (16384-101-8149)/166 =
    (16384-101-4621)/238 = 49 bytes per item; 166 + 8149 // 49 = 238 + 4621 // 49 = 332."""
    from harness.errors import UserError
    from harness.etv2.leafmeasure import capacity_of, leaves_of

    dump = (
        "node 30687232 level 1 items 2 free space 491 generation 9 owner BLOCK_GROUP_TREE\n"
        "leaf 30490624 items 166 free space 8149 generation 9 owner BLOCK_GROUP_TREE\n"
        "leaf 30703616 items 238 free space 4621 generation 9 owner BLOCK_GROUP_TREE\n"
    )
    leaves = leaves_of(dump)
    assert leaves == [(166, 8149), (238, 4621)]
    assert capacity_of(leaves, 16384) == (49, 332)
    with pytest.raises(UserError, match="item size"):
        capacity_of([(166, 8149), (238, 4000)], 16384)
