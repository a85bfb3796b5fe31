"""The extent-tree-v2 study's three parts: config (+ a target for a measurement) -> result.

Each result's :meth:`to_json` is the ``--json`` document of its command (``"schema": 1``).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError
from harness.etv2.config import ContentionSweep, CowCostConfig, LeafCapacityConfig
from harness.etv2.cowmeasure import CowMeasurement, measure
from harness.etv2.leafmeasure import LeafCapacity, measure_leaf_capacity
from harness.target import TargetSpec
from model.btrfs import constants as C
from model.btrfs.contention import ContentionConfig, simulate_contention
from model.btrfs.cow import cow_updates, leaf_capacity
from model.btrfs.ctree import BtrfsTree, ExtentBuffer
from model.btrfs.items import Key
from model.btrfs.mkfs import (
    Chunk,
    FsSpec,
    MkfsConfig,
    MkfsError,
    build_tree,
    lay_out_trees,
    plan_filesystem,
    tree_blocks,
)

SEED_ITEMS_PER_16K_LEAF = 680
SEED_COW_EXTENT_TREE = 5
SEED_COW_BG_TREE = 2
SCHEMA = 1
COW_LAYOUTS = ("extent-tree", "bg-tree", "skinny-bg-tree")


# ---- leaf capacity ----------------------------------------------------------------------


@dataclass
class LeafCapacityResult:
    nodesize: int
    rows: list[tuple[str, int]]  # (what is counted, items per leaf)
    measured: LeafCapacity | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "nodesize": self.nodesize,
            "seed": SEED_ITEMS_PER_16K_LEAF,
            "rows": self.rows,
            "measured": self.measured.to_json() if self.measured else None,
        }


def run_leaf_capacity(
    cfg: LeafCapacityConfig, target: TargetSpec | None = None
) -> LeafCapacityResult:
    """The model's counts; with ``target``, also the capacity read off the leaves that
    target's kernel wrote (:mod:`harness.etv2.leafmeasure`)."""
    ns = cfg.nodesize
    rows = [
        ("BLOCK_GROUP_ITEM (24-byte body + 25-byte item header)", leaf_capacity(ns, 24)),
        ("skinny item (empty body, 25-byte item header)", leaf_capacity(ns, 0)),
        ("24-byte bodies alone, no headers (nodesize / 24)", ns // 24),
    ]
    measured = None
    if target is not None:
        measured = measure_leaf_capacity(target, nodesize=ns, block_groups=cfg.block_groups)
    return LeafCapacityResult(ns, rows, measured)


# ---- COW cost ---------------------------------------------------------------------------


@dataclass
class CowCostResult:
    configuration: dict[str, Any]  # the MkfsConfig the filesystem is planned from
    layouts: dict[str, dict[str, Any]]  # per layout: tree_height, pairs, cowed_histogram
    measured: list[CowMeasurement] = field(default_factory=list)
    measured_kernel: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "configuration": self.configuration,
            "layouts": self.layouts,
        }
        if self.measured_kernel is not None:
            out["measured"] = {
                g.layout: {k: v for k, v in dataclasses.asdict(g).items() if k != "trace_lines"}
                for g in self.measured
            }
            out["measured_kernel"] = self.measured_kernel
        return out


def laid_out_bg_tree(spec: FsSpec) -> tuple[ExtentBuffer, list[Chunk]]:
    """The tree holding the block group items of the filesystem the writer lays out from
    ``spec``, at the addresses the writer gives its blocks, and the chunks (their ``used``
    set by the layout) — without writing the image.

    :func:`~model.btrfs.mkfs.lay_out_trees` places every tree block and derives the items
    of the extent and block group trees; the tree is built over them as
    :func:`~model.btrfs.mkfs.write_filesystem` builds it. COW needs only the tree's shape,
    keys, item sizes and block addresses, none of which depends on serialized bytes."""
    plan = lay_out_trees(spec)
    tid = C.EXTENT_TREE_OBJECTID if spec.layout == "extent-tree" else C.BLOCK_GROUP_TREE_OBJECTID
    root = build_tree(plan.dyn_items[(tid, 0)], spec.nodesize, tid, spec.generation)
    for b, a in zip(tree_blocks(root), plan.placed[(tid, 0)], strict=True):
        b.bytenr = a
    return root, spec.chunks


def run_cow_cost(cfg: CowCostConfig, target: TargetSpec | None = None) -> CowCostResult:
    """Blocks the model's ``update_block_group_item`` COW search rewrites for every pair of
    adjacent data block groups, per layout; with ``target``, also the kernel's count
    (:mod:`harness.etv2.cowmeasure`)."""
    mk = MkfsConfig(size=cfg.size, nodesize=cfg.nodesize, fill=cfg.fill)
    try:
        spec = plan_filesystem(mk)
    except MkfsError as e:
        raise UserError(str(e)) from None
    layouts: dict[str, dict[str, Any]] = {}
    for layout in COW_LAYOUTS:
        try:
            root, chunks = laid_out_bg_tree(dataclasses.replace(spec, layout=layout))
        except MkfsError as e:
            raise UserError(str(e)) from None
        tid = C.EXTENT_TREE_OBJECTID if layout == "extent-tree" else C.BLOCK_GROUP_TREE_OBJECTID
        data = [c for c in chunks if c.flags & C.BLOCK_GROUP_DATA]
        hist: Counter[int] = Counter()
        example = None
        for a, b in itertools.pairwise(data):
            tree = BtrfsTree.from_blocks(cfg.nodesize, tid, root, transid=100)
            if layout == "skinny-bg-tree":
                keys = [Key(c.start, C.SKINNY_BLOCK_GROUP_ITEM_KEY, c.used) for c in (a, b)]
            else:
                keys = [Key(c.start, C.BLOCK_GROUP_ITEM_KEY, c.length) for c in (a, b)]
            cost = cow_updates(tree, keys)
            hist[cost.cowed] += 1
            example = example or cost
        if example is None:
            raise UserError(
                f"{len(data)} data block group(s): no two adjacent ones to update"
                " (fill more of the filesystem)"
            )
        layouts[layout] = {
            "tree_height": example.tree_height,
            "pairs": sum(hist.values()),
            "cowed_histogram": dict(sorted(hist.items())),
        }
    res = CowCostResult(dataclasses.asdict(mk), layouts)
    if target is not None:
        res.measured = measure(
            target, size=cfg.size, fill=cfg.fill, nodesize=cfg.nodesize, straddle=True
        )
        res.measured_kernel = target.kernel
    return res


# ---- contention -------------------------------------------------------------------------


@dataclass
class ContentionSweepResult:
    sweep: ContentionSweep
    rows: list[tuple[int, float, float]]  # (global roots, waited fraction, mean wait)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "threads": self.sweep.threads, "rows": self.rows}


def run_contention(cfg: ContentionSweep) -> ContentionSweepResult:
    """The simulation (:mod:`model.btrfs.contention`) for each count of global roots."""
    rows = []
    for m in cfg.global_roots:
        r = simulate_contention(
            ContentionConfig(
                threads=cfg.threads, global_roots=m, ops_per_thread=cfg.ops,
                think=cfg.think, hold=cfg.hold, placement=cfg.placement, seed=cfg.seed,
            )
        )  # fmt: skip
        rows.append((m, r.wait_fraction, r.mean_wait))
        print(f"  simulated {m} global roots", file=sys.stderr)
    return ContentionSweepResult(cfg, rows)
