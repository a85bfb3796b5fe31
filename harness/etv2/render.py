"""The extent-tree-v2 study's results as Markdown (what ``fsoracle etv2 ...`` prints)."""

from __future__ import annotations

from harness.etv2.experiment import (
    SEED_COW_BG_TREE,
    SEED_COW_EXTENT_TREE,
    SEED_ITEMS_PER_16K_LEAF,
    ContentionSweepResult,
    CowCostResult,
    LeafCapacityResult,
)
from model.btrfs.cow import leaf_capacity


def leaf_capacity_md(res: LeafCapacityResult) -> str:
    ns = res.nodesize
    out = [
        f"block group items in one {ns}-byte leaf (seed: ~{SEED_ITEMS_PER_16K_LEAF} at 16 KiB)\n",
        "| counting | items |\n|---|---:|",
    ]
    out += [f"| {what} | {n} |" for what, n in res.rows]
    m = res.measured
    if m:
        sizes = ", ".join(f"{n} items + {f} bytes free" for n, f in m.leaves)
        out.append(
            f"| measured: {m.release}, {m.block_groups} block groups made by"
            f" fallocate, leaves of the block group tree: {sizes}; {m.bytes_per_item}"
            f" bytes per item | {m.capacity} |"
        )
    out.append(
        "\nThe seed's ~680 is nodesize / sizeof(struct btrfs_block_group_item) = 16384 / 24"
        " = 682: it leaves out the 101-byte block header and the 25-byte struct btrfs_item"
        " every item needs. Counted as the kernel stores them, a 16 KiB leaf holds"
        f" {leaf_capacity(16384, 24)}; even skinny items (no body) give"
        f" {leaf_capacity(16384, 0)}."
    )
    return "\n".join(out)


def cow_cost_md(res: CowCostResult) -> str:
    cfg = res.configuration
    out = [
        f"blocks COWed updating two adjacent data block group items, every adjacent pair of"
        f" a {cfg['size'] >> 30} GiB filesystem with {cfg['fill'] >> 30} GiB of"
        f" 4 MiB extents, nodesize {cfg['nodesize']} (model: update_block_group_item's"
        " COW search)\n",
        "| layout | tree height | blocks COWed (pairs) | seed |\n|---|---:|---|---:|",
    ]
    seeds = {"extent-tree": SEED_COW_EXTENT_TREE, "bg-tree": SEED_COW_BG_TREE}
    for layout, r in res.layouts.items():
        h = ", ".join(f"{k}: {v}" for k, v in r["cowed_histogram"].items())
        out.append(f"| {layout} | {r['tree_height']} | {h} | {seeds.get(layout, '-')} |")
    for g in res.measured:
        out.append(
            f"\nmeasured on {res.measured_kernel}, {g.layout}: block groups {g.block_groups}"
            f" (files {g.files[0]}, {g.files[1]} deleted in one transaction):"
            f" {g.measured_cowed} blocks on the two items' paths COWed (model on the same"
            f" tree: {g.model_cowed}); {g.other_cows} other blocks of the tree COWed"
            " by the rest of the transaction"
        )
    out.append(
        "\nThe seed's 5 assumes the two leaves hang from different level-1 nodes. A level-1"
        " node holds up to 121 (4 KiB) or 493 (16 KiB) leaf pointers and a 1 GiB block"
        " group's 256 extent items fill only a few leaves, so adjacent block groups"
        " usually share their parent: root + 1 node + 2 leaves = 4, and 5 only where a"
        " parent boundary falls between them. With a block group tree both items share"
        " one leaf: 2 (root + leaf), or 1 when the tree is a single leaf."
    )
    return "\n".join(out)


def contention_md(res: ContentionSweepResult) -> str:
    c = res.sweep
    out = [
        f"{c.threads} writer threads, think {c.think}, hold {c.hold} per root,"
        f" placement {c.placement}\n",
        "| global roots | lock requests that waited | mean wait (x hold) |\n|---:|---:|---:|",
    ]
    out += [f"| {m} | {100 * frac:.1f} % | {wait / c.hold:.3f} |" for m, frac, wait in res.rows]
    out.append(
        "\nThe seed claims spreading the global roots cuts contention but gives no number."
        " Measured contention is not meaningful on this machine's 2 vCPU guests; this"
        " simulation answers the claim."
    )
    return "\n".join(out)
