"""``fsoracle ext4 alloc-sim``: the allocators over a generated fragmented filesystem, the
free-space tree RFC's table shape (RAM, trees cached, bitmaps read, modelled time; first and
second write), and the seed's orderings checked on ours (:mod:`harness.ext4.render` prints
it beside the seed's numbers)."""

from __future__ import annotations

import gc
import resource
import sys
import time
from typing import Any

from harness.errors import UserError
from harness.ext4.config import AllocSimConfig, load_cost_model
from harness.ext4.seed import seed_orderings
from harness.sizes import parse_size
from model.ext4.costs import CostModel
from model.ext4.fragment import FragSpec, GeneratedGroups, MaterialisedGroups
from model.ext4.frsp import FrspAllocator
from model.ext4.mballoc import Mballoc
from model.ext4.sim import write_file


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


def run_study(cfg: AllocSimConfig) -> dict[str, Any]:
    """The study's JSON document (``"schema": 1``)."""
    cm = load_cost_model(cfg.cost_model)
    if cfg.flex & (cfg.flex - 1) or not 2 <= cfg.flex <= 1 << 16:
        raise UserError("--flex must be a power of two >= 2")
    # the generator's open ends (argparse already holds them to [0, 1])
    if cfg.fragmentation <= 0:
        raise UserError("--fragmentation must be above 0 (at most 1)")
    if not 0 < cfg.free_fraction < 1:
        raise UserError("--free-fraction must be strictly between 0 and 1")
    if cfg.mem_limit:
        parse_size(cfg.mem_limit)  # a bad size fails before any allocator runs
    spec = FragSpec(
        ngroups=cfg.groups,
        fragmentation=cfg.fragmentation,
        free_fraction=cfg.free_fraction,
        log_groups_per_flex=cfg.flex.bit_length() - 1,
        seed=cfg.seed,
    )
    writes = [parse_size(w) for w in cfg.writes.split(",") if w]
    names = [n for n in cfg.allocators.split(",") if n]
    if cfg.mem_limit:
        names.append(f"frsp3@{cfg.mem_limit}")
    if cfg.exact and cfg.groups > 4096:
        raise UserError("--exact writes every bitmap: use it with at most 4096 groups")
    t0 = time.monotonic()
    src: Any = MaterialisedGroups(spec) if cfg.exact else GeneratedGroups(spec)
    if isinstance(src, GeneratedGroups):
        free = int(src.free.sum())
    else:
        free = sum(src.desc_free(g) for g in range(spec.ngroups))
    want = sum((w + (1 << spec.blocksize_bits) - 1) >> spec.blocksize_bits for w in writes)
    if want > free:
        raise UserError(
            f"--writes {cfg.writes}: {want} blocks in all, but the generated filesystem has "
            f"{free} free blocks"
        )
    rows = []
    for name in names:
        t = time.monotonic()
        a = _mk(name, src, cfg.kernel, cm, cfg.exact)
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
        "schema": 1,
        "spec": {
            "groups": spec.ngroups,
            "flex_bgs": (spec.ngroups + cfg.flex - 1) // cfg.flex,
            "blocks_per_group": spec.blocks_per_group,
            "block_size": 1 << spec.blocksize_bits,
            "fragmentation": spec.fragmentation,
            "mean_free_extents_per_group": spec.mean_extents,
            "free_fraction": spec.free_fraction,
            "seed": spec.seed,
            "kernel": cfg.kernel,
            "exact": bool(cfg.exact),
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
    seed = seed_orderings()
    out = []
    fr = [n for n in ("frsp0", "frsp1", "frsp2", "frsp3") if n in by]

    def first(n: str, k: str) -> float:
        return float(by[n][0][k])

    if "frsp0" in by and len(fr) > 1:
        claim = "level 0 fastest on the first write (among the tree levels)"
        out.append(
            {
                "claim": claim,
                "ours": all(
                    first("frsp0", "modelled_seconds") <= first(n, "modelled_seconds") for n in fr
                ),
                "seed": seed[claim],
            }
        )
        claim = "level 0 leanest on the first write"
        out.append(
            {
                "claim": claim,
                "ours": all(first("frsp0", "memory_bytes") <= first(n, "memory_bytes") for n in fr),
                "seed": seed[claim],
            }
        )
    if "frsp3" in by and len(fr) > 1:
        claim = "level 3 holds the most memory"
        out.append(
            {
                "claim": claim,
                "ours": all(
                    by["frsp3"][-1]["memory_bytes"] >= by[n][-1]["memory_bytes"] for n in fr
                ),
                "seed": seed[claim],
            }
        )
    if "buddy" in by and fr:
        for i, w in enumerate(("first", "second")):
            if i < len(by["buddy"]):
                claim = f"buddy slowest on the {w} write"
                out.append(
                    {
                        "claim": claim,
                        "ours": all(
                            by["buddy"][i]["modelled_seconds"] >= by[n][i]["modelled_seconds"]
                            for n in by
                            if n != "buddy" and i < len(by[n])
                        ),
                        "seed": seed[claim],
                    }
                )
    return out
