"""``fsoracle ext4 alloc-sim``: the allocators over a generated fragmented filesystem, the
free-space tree RFC's table shape (RAM, trees cached, bitmaps read, modelled time; first and
second write) printed beside the seed's numbers, with a PNG plot and Markdown."""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from harness.argtypes import float_range, int_range
from harness.argtypes import seed as seed_type
from harness.errors import UserError
from harness.jsonout import dumps
from harness.safeio import output_dir, save_figure, write_atomic
from harness.sizes import parse_size
from model.ext4.costs import CostModel
from model.ext4.fragment import FragSpec, GeneratedGroups, MaterialisedGroups
from model.ext4.frsp import FrspAllocator
from model.ext4.mballoc import Mballoc
from model.ext4.sim import write_file

PRESET = Path(__file__).resolve().parent / "presets" / "ext4_cost_model.yaml"

# The seed's published numbers (ext4-free-space-tree-allocator-rfc-2020.txt): 60T disk,
# > 490 K groups, > 30 K flex-bgs; RAM as printed there; times in seconds.
SEED: dict[str, dict[str, dict[str, Any]]] = {
    "buddy": {
        "first": {"ram": None, "trees": None, "seconds": 25 * 60 + 51, "perf": "6.8 KB/s"},
        "second": {"ram": None, "trees": None, "seconds": 3 * 60 + 30, "perf": "499 KB/s"},
    },
    "frsp0": {
        "first": {"ram": "43.5 MB", "trees": 201, "seconds": 8, "perf": "2.6 MB/s"},
        "second": {"ram": "48.7 MB", "trees": 226, "seconds": 6, "perf": "48.2 MB/s"},
    },
    "frsp1": {
        "first": {"ram": "193 MB", "trees": 874, "seconds": 47, "perf": "1.5 MB/s"},
        "second": {"ram": "221 MB", "trees": 1007, "seconds": 8, "perf": "26.8 MB/s"},
    },
    "frsp2": {
        "first": {"ram": "3.6 GB", "trees": 16476, "seconds": 8 * 60 + 14, "perf": "21.4 KB/s"},
        "second": {"ram": "6.8 GB", "trees": 30720, "seconds": 9 * 60 + 54, "perf": "178 KB/s"},
    },
    "frsp3": {
        "first": {"ram": "6.8 GB", "trees": 30720, "seconds": 19 * 60 + 22, "perf": "9.1 KB/s"},
        "second": {"ram": "6.8 GB", "trees": 30720, "seconds": 5, "perf": "79 MB/s"},
    },
    "frsp3@1G": {
        "first": {"ram": "1023 MB", "trees": 30720, "seconds": 18 * 60 + 53, "perf": "9.3 KB/s"},
        "second": {"ram": "1023 MB", "trees": 30720, "seconds": 7, "perf": "77.1 MB/s"},
    },
}


def load_cost_model(path: str | None) -> CostModel:
    p = Path(path) if path else PRESET
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise UserError(f"{p}: cannot read the cost model: {e.strerror}") from None
    return CostModel.from_dict(data or {})


def _mk(name: str, src: Any, kernel: str, cm: CostModel, exact: bool) -> Any:
    base, _, lim = name.partition("@")
    if base == "buddy":
        return Mballoc(
            src, kernel, optimize_scan=False, rotational=cm.rotational, fast_skip=not exact
        )
    if base == "optimize-scan":
        return Mballoc(
            src, kernel, optimize_scan=True, rotational=cm.rotational, fast_skip=not exact
        )
    if base.startswith("frsp") and base[4:].isdigit():
        if not 0 <= int(base[4:]) <= 3:
            raise UserError(f"unknown allocator {name!r}: the frsp cache levels are 0..3")
        limit = parse_size(lim) if lim else 0  # the seed ran levels 0..3 with the limit off
        return FrspAllocator(
            src, int(base[4:]), mem_limit=limit, clock=cm.seconds, hz=cm.hz, array_trees=not exact
        )
    raise UserError(f"unknown allocator {name!r}: buddy, optimize-scan, frsp0..frsp3[@LIMIT]")


def run_study(args: argparse.Namespace) -> dict[str, Any]:
    cm = load_cost_model(args.cost_model)
    if args.flex & (args.flex - 1) or not 2 <= args.flex <= 1 << 16:
        raise UserError("--flex must be a power of two >= 2")
    # the generator's open ends (argparse already holds them to [0, 1])
    if args.fragmentation <= 0:
        raise UserError("--fragmentation must be above 0 (at most 1)")
    if not 0 < args.free_fraction < 1:
        raise UserError("--free-fraction must be strictly between 0 and 1")
    if args.mem_limit:
        parse_size(args.mem_limit)  # a bad size fails before any allocator runs
    spec = FragSpec(
        ngroups=args.groups,
        fragmentation=args.fragmentation,
        free_fraction=args.free_fraction,
        log_groups_per_flex=args.flex.bit_length() - 1,
        seed=args.seed,
    )
    writes = [parse_size(w) for w in args.writes.split(",") if w]
    names = [n for n in args.allocators.split(",") if n]
    if args.mem_limit:
        names.append(f"frsp3@{args.mem_limit}")
    if args.exact and args.groups > 4096:
        raise UserError("--exact writes every bitmap: use it with at most 4096 groups")
    t0 = time.monotonic()
    src: Any = MaterialisedGroups(spec) if args.exact else GeneratedGroups(spec)
    if isinstance(src, GeneratedGroups):
        free = int(src.free.sum())
    else:
        free = sum(src.desc_free(g) for g in range(spec.ngroups))
    want = sum((w + (1 << spec.blocksize_bits) - 1) >> spec.blocksize_bits for w in writes)
    if want > free:
        raise UserError(
            f"--writes {args.writes}: {want} blocks in all, but the generated filesystem has "
            f"{free} free blocks"
        )
    rows = []
    for name in names:
        t = time.monotonic()
        a = _mk(name, src, args.kernel, cm, args.exact)
        res = []
        for nbytes in writes:
            r = write_file(a, spec.geometry, nbytes, cm)
            res.append(
                {
                    "bytes": nbytes,
                    "allocations": r.allocations,
                    "allocated_blocks": sum(n for _, n in r.extents),
                    "memory_bytes": r.memory_bytes,
                    "trees_cached": r.trees_cached if name.startswith("frsp") else None,
                    "groups_initialised": r.groups_initialised,
                    "bitmaps_read": r.costs.bitmaps_read + r.costs.bitmaps_prefetched,
                    "modelled_seconds": r.seconds,
                    "io_seconds": cm.io_seconds(r.costs),
                    "criteria": r.criteria,
                    "costs": r.costs.as_dict(),
                }
            )
        rows.append({"allocator": name, "writes": res, "wall_seconds": time.monotonic() - t})
        del a
        gc.collect()
        print(f"  {name}: done in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
    return {
        "spec": {
            "groups": spec.ngroups,
            "flex_bgs": (spec.ngroups + args.flex - 1) // args.flex,
            "blocks_per_group": spec.blocks_per_group,
            "block_size": 1 << spec.blocksize_bits,
            "fragmentation": spec.fragmentation,
            "mean_free_extents_per_group": spec.mean_extents,
            "free_fraction": spec.free_fraction,
            "seed": spec.seed,
            "kernel": args.kernel,
            "exact": bool(args.exact),
        },
        "cost_model": cm.__dict__,
        "rows": rows,
        "orderings": orderings(rows),
        "wall_seconds": time.monotonic() - t0,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def orderings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed's claims, checked on ours and on the seed's own numbers."""
    by = {r["allocator"]: r["writes"] for r in rows}
    out = []
    fr = [n for n in ("frsp0", "frsp1", "frsp2", "frsp3") if n in by]

    def first(n: str, k: str) -> float:
        return float(by[n][0][k])

    if "frsp0" in by and len(fr) > 1:
        out.append(
            {
                "claim": "level 0 fastest on the first write (among the tree levels)",
                "ours": all(
                    first("frsp0", "modelled_seconds") <= first(n, "modelled_seconds") for n in fr
                ),
                "seed": True,
            }
        )
        out.append(
            {
                "claim": "level 0 leanest on the first write",
                "ours": all(first("frsp0", "memory_bytes") <= first(n, "memory_bytes") for n in fr),
                "seed": True,
            }
        )
    if "frsp3" in by and len(fr) > 1:
        out.append(
            {
                "claim": "level 3 holds the most memory",
                "ours": all(
                    by["frsp3"][-1]["memory_bytes"] >= by[n][-1]["memory_bytes"] for n in fr
                ),
                "seed": True,
            }
        )
    if "buddy" in by and fr:
        for i, w in enumerate(("first", "second")):
            if i < len(by["buddy"]):
                out.append(
                    {
                        "claim": f"buddy slowest on the {w} write",
                        "ours": all(
                            by["buddy"][i]["modelled_seconds"] >= by[n][i]["modelled_seconds"]
                            for n in by
                            if n != "buddy" and i < len(by[n])
                        ),
                        "seed": {"first": True, "second": False}[w],
                    }
                )
    return out


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 60:
        return f"{int(s // 60)}m{s % 60:04.1f}s"
    return f"{s:.2f}s"


def table_markdown(data: dict[str, Any]) -> str:
    lines = []
    spec = data["spec"]
    lines.append(
        f"{spec['groups']} groups ({spec['flex_bgs']} flex-bgs), "
        f"{spec['mean_free_extents_per_group']:.0f} free extents per group on average, "
        f"{spec['free_fraction']:.0%} free; kernel {spec['kernel']} for the buddy rows.\n"
    )
    for wi, wname in enumerate(("First", "Second")):
        lines.append(f"**{wname} write**\n")
        lines.append(
            "| allocator | RAM ours | RAM seed | trees cached ours | seed | bitmaps read "
            "| groups with buddies | allocations | modelled time | seed time |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in data["rows"]:
            if wi >= len(r["writes"]):
                continue
            w = r["writes"][wi]
            seed = SEED.get(r["allocator"], {}).get(("first", "second")[wi], {})
            lines.append(
                f"| {r['allocator']} | {_fmt_bytes(w['memory_bytes'])} | {seed.get('ram') or '-'} "
                f"| {w['trees_cached'] if w['trees_cached'] is not None else '-'} "
                f"| {seed.get('trees') or '-'} | {w['bitmaps_read']} | {w['groups_initialised']} "
                f"| {w['allocations']} | {_fmt_s(w['modelled_seconds'])} "
                f"| {_fmt_s(seed.get('seconds'))} |"
            )
        lines.append("")
    lines.append("| seed claim | ours | seed |")
    lines.append("|---|---|---|")
    for o in data["orderings"]:
        lines.append(
            f"| {o['claim']} | {'holds' if o['ours'] else 'does not hold'} | "
            f"{'holds' if o['seed'] else 'does not hold'} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["allocator"] for r in data["rows"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for wi, ax in enumerate(axes[:2]):
        ours = [
            r["writes"][wi]["modelled_seconds"] if wi < len(r["writes"]) else 0
            for r in data["rows"]
        ]
        seed = [SEED.get(n, {}).get(("first", "second")[wi], {}).get("seconds") or 0 for n in names]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [max(v, 1e-3) for v in ours], 0.4, label="model")
        have = [i for i in x if seed[i]]
        ax.bar([i + 0.2 for i in have], [seed[i] for i in have], 0.4, label="seed")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, rotation=30)
        ax.set_ylabel("seconds")
        ax.set_title(("first", "second")[wi] + " write: time")
        ax.legend()
    ax = axes[2]
    mem = [r["writes"][-1]["memory_bytes"] / (1 << 20) for r in data["rows"]]
    ax.bar(names, [max(m, 1e-3) for m in mem])
    ax.set_yscale("log")
    ax.set_ylabel("MiB held after the last write")
    ax.set_title("memory")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def cmd_alloc_sim(args: argparse.Namespace) -> int:
    data = run_study(args)
    md = table_markdown(data)
    if args.out:
        out = output_dir(args.out)
        write_atomic(out / "ext4_alloc_sim.md", md)
        write_atomic(out / "ext4_alloc_sim.json", dumps(data, pretty=True))
        plot(data, out / "ext4_alloc_sim.png")
    if args.json:
        print(dumps(data))
    else:
        print(md)
        print(f"wall {data['wall_seconds']:.1f} s, max RSS {data['max_rss_mib']:.0f} MiB")
    return 0


# the largest --groups: the generator keeps a few arrays per group (~70 bytes each; 4 M
# groups ~ 280 MiB before any allocator), 8.5 times the seed's 491 520 groups
MAX_GROUPS = 1 << 22


def register(fam: Any) -> None:
    p = fam.add_parser("alloc-sim", help="allocators over a generated fragmented filesystem")
    p.add_argument(
        "--groups",
        type=int_range(1, MAX_GROUPS),
        required=True,
        help=f"block groups of 128 MiB (1..{MAX_GROUPS})",
    )
    p.add_argument(
        "--flex",
        type=int_range(2, 1 << 16),
        default=16,
        help="groups per flex-bg, a power of two (default 16)",
    )
    p.add_argument(
        "--fragmentation",
        type=float_range(0.0, 1.0),
        default=0.0151,
        help="mean free extents per group / (blocks_per_group / 2), in (0, 1] (default 0.0151)",
    )
    p.add_argument(
        "--free-fraction",
        type=float_range(0.0, 1.0),
        default=0.5,
        help="mean free fraction of a group, in (0, 1) (default 0.5)",
    )
    p.add_argument("--writes", default="10M,100M", help="file sizes written in turn")
    p.add_argument("--allocators", default="buddy,optimize-scan,frsp0,frsp1,frsp2,frsp3")
    p.add_argument("--mem-limit", default=None, help="adds a frsp3 row with this limit")
    p.add_argument("--kernel", choices=["6.1", "6.12"], default="6.12")
    p.add_argument("--cost-model", default=None)
    p.add_argument("--seed", type=seed_type, default=1, help="generator seed (default 1)")
    p.add_argument("--exact", action="store_true", help="per-block bitmaps (<= 4096 groups)")
    p.add_argument("--out", default=None, help="write .md, .json and .png here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alloc_sim)
