"""Blocks a real kernel COWs when two adjacent block groups change, beside the model.

For each layout (block group items in the extent tree, or in the block group tree) the
writer makes the same filesystem; one target mounts each image (a snapshot disk: the image
itself is never changed), settles it (``btrfs filesystem sync``), has the target's
btrfs-progs dump the tree that holds the block group items (the state the next transaction
starts from), then enables the ``btrfs_cow_block`` tracepoint for that tree, deletes one
file whose extent lies in each of two adjacent data block groups, and syncs: one
transaction that changes both groups' ``used`` and so rewrites both items
(``update_block_group_item``). The commands are :func:`harness.etv2.guest.cow_script`.

Separating the block group updates from the rest: the same transaction COWs other blocks
of the extent tree too (the deleted extents' items, tree-block backrefs). The blocks the
block group updates need are those on the root→leaf paths to the two items in the dumped
tree (:func:`harness.dumptree_text.path_to`); the measured count is how many of them the
trace shows COWed (every one must be: the update searches with ``cow=1``). Other COWs of
the tree are reported beside it.

The model's count comes from :func:`model.btrfs.cow.cow_updates` run over the same dumped
tree (rebuilt as :class:`model.btrfs.ctree.ExtentBuffer` blocks): the kernel's search with
COW, done by the model.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.dumptree_text import Blk, parse_dump_tree, path_to
from harness.etv2 import guest
from harness.etv2.config import vm_target
from harness.target import DiskSpec, TargetError, TargetSpec, open_target
from model.blocksource import FileSink, FileSource
from model.btrfs import constants as C
from model.btrfs.cow import cow_updates
from model.btrfs.ctree import BtrfsTree, ExtentBuffer
from model.btrfs.items import ExtentItem, InodeRef, Key
from model.btrfs.mkfs import MkfsConfig, make_btrfs
from model.btrfs.reader import BtrfsImage

TRACE_LINE = re.compile(r"btrfs_cow_block: .*root=(\d+)\([^)]*\) refs=\d+ orig_buf=(\d+)")


@dataclass
class CowMeasurement:
    layout: str
    tree: int
    tree_height: int
    block_groups: tuple[int, int]
    files: tuple[str, str]
    paths: list[list[int]]
    model_cowed: int
    measured_cowed: int
    all_path_blocks_cowed: bool
    other_cows: int
    trace_lines: list[str] = field(default_factory=list)


def file_path(img: BtrfsImage, ino: int) -> str:
    """The path of an inode in the fs tree (from INODE_REF items)."""
    fs = img.tree(C.FS_TREE_OBJECTID)
    assert fs is not None
    refs: dict[int, tuple[int, bytes]] = {}
    for _blk, _slot, item in img.iter_items(fs):
        if isinstance(item, InodeRef) and item.refs:
            refs[item.key.objectid] = (item.key.offset, item.refs[0].name)
    parts = []
    while ino in refs and refs[ino][0] != ino:
        parent, name = refs[ino]
        parts.append(name.decode())
        ino = parent
    return "/".join(reversed(parts))


def pick_pair(img: BtrfsImage, index: int) -> tuple[tuple[Key, Key], tuple[str, str]]:
    """Two adjacent full data block groups, and a file with an extent in each (the last
    extent of the first group, the first of the second)."""
    bg_root = img.block_group_root
    assert bg_root is not None
    bgs = [
        item.key
        for _b, _s, item in img.iter_items(bg_root)
        if item.key.type == C.BLOCK_GROUP_ITEM_KEY and getattr(item, "flags", 0) & 1
    ]
    a, b = bgs[index], bgs[index + 1]
    extent_root = img.tree(C.EXTENT_TREE_OBJECTID)
    assert extent_root is not None
    owners: dict[int, list[tuple[int, int]]] = {a.objectid: [], b.objectid: []}
    for _blk, _slot, item in img.iter_items(extent_root):
        if isinstance(item, ExtentItem) and item.key.type == C.EXTENT_ITEM_KEY:
            for bg in (a, b):
                if bg.objectid <= item.key.objectid < bg.objectid + bg.offset:
                    owners[bg.objectid].append((item.key.objectid, item.inline_refs[0].objectid))
    last_a = max(owners[a.objectid])[1]
    first_b = min(owners[b.objectid])[1]
    return (a, b), (file_path(img, last_a), file_path(img, first_b))


def tree_from_dump(blocks: dict[int, Blk], root: int, nodesize: int, owner: int) -> BtrfsTree:
    """The dumped tree as ctree blocks (item bodies zeroed: only sizes matter to COW)."""
    made: dict[int, ExtentBuffer] = {}
    flags = C.HEADER_FLAG_WRITTEN | (C.MIXED_BACKREF_REV << C.BACKREF_REV_SHIFT)
    for addr, b in blocks.items():
        eb = ExtentBuffer(addr, b.level, 1, owner, flags)
        eb.keys = [Key(*k) for k in b.keys]
        if b.level == 0:
            eb.data = [bytes(n) for n in b.sizes]
            eb.recount()
        made[addr] = eb
    for addr, b in blocks.items():
        made[addr].children = [made[c] for c in b.children]
    return BtrfsTree.from_blocks(nodesize, owner, made[root], transid=1 << 40)


def straddling_pair(img: BtrfsImage) -> int | None:
    """The index of the first adjacent pair of data block groups whose items the model
    puts in leaves under different level-1 nodes (the seed's 5-block case), if any."""
    root = img.tree(C.EXTENT_TREE_OBJECTID)
    assert root is not None
    bgs = [
        item.key
        for _b, _s, item in img.iter_items(root)
        if item.key.type == C.BLOCK_GROUP_ITEM_KEY and getattr(item, "flags", 0) & 1
    ]
    for i in range(len(bgs) - 1):
        tree = BtrfsTree.from_image(img, root)
        if cow_updates(tree, [bgs[i], bgs[i + 1]]).cowed == 5:
            return i
    return None


# one case: (layout, image, the two block group keys, the two files to delete)
_Plan = tuple[str, Path, tuple[Key, Key], tuple[str, str]]


def _plans(
    work: Path, size: int, fill: int, nodesize: int, index: int, straddle: bool
) -> dict[str, _Plan]:
    """The images (written to ``work``) and, per case, what to delete."""
    plans: dict[str, _Plan] = {}
    for layout in ("extent-tree", "bg-tree"):
        cfg = MkfsConfig(size=size, nodesize=nodesize, fill=fill, layout=layout)
        path = work / f"{layout}.img"
        with FileSink(path, cfg.size) as sink:
            make_btrfs(cfg, sink)
        img = BtrfsImage.open(FileSource(path))
        plans[layout] = (layout, path, *pick_pair(img, index))
        if straddle and layout == "extent-tree":
            i = straddling_pair(img)
            if i is not None:
                plans["extent-tree-straddling"] = (layout, path, *pick_pair(img, i))
    return plans


def measure(
    target: TargetSpec | str,
    *,
    size: int = 128 << 30,
    fill: int = 120 << 30,
    nodesize: int = 4096,
    index: int = 40,
    straddle: bool = False,
    workdir: Path | None = None,
) -> list[CowMeasurement]:
    """Run the experiment on one ``target`` (a :class:`TargetSpec`, or a kernel spec for a
    VM): the pair ``index`` on the extent-tree and bg-tree layouts, and with ``straddle``
    also a pair of the extent-tree layout whose items' leaves have different parents (each
    case on its own snapshot disk of the image)."""
    spec = vm_target(target)
    out = []
    with tempfile.TemporaryDirectory(prefix="fsoracle-cow-", dir=workdir) as tmp:
        work = Path(tmp)
        plans = _plans(work, size, fill, nodesize, index, straddle)
        disks = [DiskSpec(p, "btrfs", snapshot=True) for _lay, p, _k, _f in plans.values()]
        budget = 900.0 * (len(disks) + 1)
        with open_target(spec.with_timeout(budget), disks, name="cow") as t:
            for d, (case, (layout, _path, (ka, kb), files)) in zip(
                t.disks, plans.items(), strict=True
            ):
                tree = (
                    C.EXTENT_TREE_OBJECTID
                    if layout == "extent-tree"
                    else C.BLOCK_GROUP_TREE_OBJECTID
                )
                r = t.mount(d)
                if r.status != 0:
                    raise TargetError(f"mount failed ({case}): {r.err.strip()[-500:]}")
                t.run(guest.cow_script(dev=d.dev, mnt=d.mnt, tree=tree, files=files), timeout=900)
                t.umount(d)
                t.fetch(guest.DUMP_FILE, work / "pre.txt")
                t.fetch(guest.TRACE_FILE, work / "cow.txt")
                pre = (work / "pre.txt").read_text()
                trace = (work / "cow.txt").read_text()
                root, blocks = parse_dump_tree(pre)
                keys = [(k.objectid, k.type, k.offset) for k in (ka, kb)]
                paths = [path_to(root, blocks, k) for k in keys]
                on_paths = set(paths[0]) | set(paths[1])
                cowed = {
                    int(mm.group(2))
                    for mm in TRACE_LINE.finditer(trace)
                    if int(mm.group(1)) == tree
                }
                model = cow_updates(tree_from_dump(blocks, root, nodesize, tree), [ka, kb])
                out.append(
                    CowMeasurement(
                        layout=case,
                        tree=tree,
                        tree_height=blocks[root].level + 1,
                        block_groups=(ka.objectid, kb.objectid),
                        files=files,
                        paths=paths,
                        model_cowed=model.cowed,
                        measured_cowed=len(cowed & on_paths),
                        all_path_blocks_cowed=on_paths <= cowed,
                        other_cows=len(cowed - on_paths),
                        trace_lines=[ln for ln in trace.splitlines() if "btrfs_cow_block" in ln],
                    )
                )
            faults = t.faults()
            if faults:
                raise TargetError(f"the kernel reported faults: {'; '.join(faults)}")
    return out
