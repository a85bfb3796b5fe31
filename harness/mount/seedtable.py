"""``fsoracle btrfs seed-table``: the SKINNY_BG_TREE RFC's table of tree blocks read by
``btrfs_read_block_groups`` (1 TiB used, 4 KiB nodes, 4 MiB extents) beside the model's
prediction for the same configuration, laid out by the writer in memory
(:func:`model.btrfs.mount.predict_layout`: nothing is written)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from harness.errors import UserError
from harness.jsonout import dumps
from harness.series import Claim, load_series, patches_dir
from harness.sizes import parse_size
from model.btrfs.mkfs import MkfsConfig, MkfsError, plan_filesystem
from model.btrfs.mount import MountCost, predict_layout

SEED_LAYOUTS = ("extent-tree", "bg-tree", "skinny-bg-tree")

EXPLANATION = """\
Why the numbers differ from the seed's:
- extent tree, nodes: the writer packs interior nodes full (121 pointers at 4 KiB), as
  appends leave them; the seed's kernel-grown extent tree had been split and COWed over a
  long population run, so its nodes were emptier and more of them sit above the same
  leaves. Leaves: one per block group item, plus the leaf *before* it whenever the item
  opens a leaf (the search key (start, 192, 0) sorts before it), plus the first and the last
  searches' walks; our 1 TiB has {bgs} block groups (1024 data groups of 1 GiB, one more
  because the superblock copy at 256 GiB takes a 64 KiB stripe out of one of them, plus
  SYSTEM and METADATA), the seed's about 1025.
- block group trees: {bgs} items of 49 bytes (25-byte header + 24-byte item) fill
  ceil({bgs} * 49 / 3995) leaves, and skinny items of 25 bytes ceil({bgs} * 25 / 3995);
  the seed's 13 and 7 leaves are the same arithmetic for its slightly smaller count.
  The seed counts the root node too; "first read inside" subtracts it because open_ctree
  reads each tree's root before btrfs_read_block_groups runs."""


def load_seed_claims() -> dict[str, Claim]:
    """The skinny-bg-tree series' claims by id (the seed's numbers are each one's ``seed``)."""
    return {c.id: c for c in load_series(patches_dir() / "skinny-bg-tree").claims}


def seed_table(args: argparse.Namespace) -> int:
    claims = load_seed_claims()
    cfg = MkfsConfig(
        size=parse_size(args.size),
        nodesize=parse_size(args.nodesize),
        fill=parse_size(args.fill),
        extent_size=parse_size(args.extent_size),
    )
    t0 = time.monotonic()
    try:
        spec = plan_filesystem(cfg)
    except MkfsError as e:
        raise UserError(str(e)) from None
    print(f"planned {cfg.n_extents} extents in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    rows: list[tuple[str, MountCost, dict[str, int]]] = []
    for layout in SEED_LAYOUTS:
        t1 = time.monotonic()
        cost = predict_layout(dataclasses.replace(spec, layout=layout))
        rows.append((layout, cost, claims[f"blocks-{layout}"].seed))
        print(f"laid out {layout} in {time.monotonic() - t1:.1f} s", file=sys.stderr)
    if args.json:
        sys.stdout.write(
            dumps(
                {
                    "configuration": dataclasses.asdict(cfg),
                    "rows": [
                        {"layout": lay, "seed": seed, "ours": cost} for lay, cost, seed in rows
                    ],
                },
                pretty=True,
            )
            + "\n"
        )
        return 0
    print(
        f"btrfs_read_block_groups tree blocks: {cfg.fill >> 30} GiB of"
        f" {cfg.extent_size >> 20} MiB extents, nodesize {cfg.nodesize},"
        f" device {cfg.size >> 30} GiB\n"
    )
    print(
        "| layout | seed nodes | seed leaves | seed total | our nodes | our leaves |"
        " our total | first read inside | difference |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for layout, cost, seed in rows:
        diff = cost.visited - seed["total"]
        print(
            f"| {layout} | {seed['nodes']} | {seed['leaves']} | {seed['total']} |"
            f" {cost.visited_nodes} | {cost.visited_leaves} | {cost.visited} |"
            f" {cost.first_read_inside} | {diff:+d} ({100 * diff / seed['total']:+.1f} %) |"
        )
    print()
    print(EXPLANATION.format(bgs=rows[0][1].block_groups))
    return 0
