"""``fsoracle etv2 ...``: the extent-tree-v2 post's three claims, each beside the seed.

* ``leaf-capacity``: block group items per leaf ("A 16KiB leaf will contain ~680 block
  group items").
* ``cow-cost``: blocks COWed updating two adjacent block groups ("5 blocks ... in a height-3
  extent tree, 2 with a block group tree").
* ``contention``: lock waits on the global roots for N writers and M global roots.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from harness.argtypes import float_range, int_range, seed
from harness.errors import UserError
from harness.etv2 import render
from harness.etv2.config import ContentionSweep, CowCostConfig, LeafCapacityConfig, vm_target
from harness.etv2.experiment import run_contention, run_cow_cost, run_leaf_capacity
from harness.jsonout import dumps
from harness.sizes import parse_size
from harness.target import TargetError, TargetSpec

R = TypeVar("R")


def _measuring(args: argparse.Namespace, run: Callable[[TargetSpec | None], R]) -> R:
    """``run`` with the VM ``--kernel`` boots when ``--measure`` is given (else None); a
    failure of the kernel's side is one line."""
    from vm.errors import VMError

    if not args.measure:
        return run(None)
    try:
        return run(vm_target(args.kernel))
    except (VMError, TargetError) as e:
        raise UserError(f"the kernel measurement failed: {e}") from None


def cmd_leaf_capacity(args: argparse.Namespace) -> int:
    cfg = LeafCapacityConfig(nodesize=parse_size(args.nodesize))
    res = _measuring(args, lambda t: run_leaf_capacity(cfg, t))
    print(dumps(res.to_json()) if args.json else render.leaf_capacity_md(res))
    return 0


def cmd_cow_cost(args: argparse.Namespace) -> int:
    cfg = CowCostConfig(
        size=parse_size(args.size), nodesize=parse_size(args.nodesize), fill=parse_size(args.fill)
    )
    res = _measuring(args, lambda t: run_cow_cost(cfg, t))
    print(dumps(res.to_json(), pretty=True) if args.json else render.cow_cost_md(res))
    return 0


def cmd_contention(args: argparse.Namespace) -> int:
    cfg = ContentionSweep(
        threads=args.threads,
        global_roots=tuple(int(x) for x in args.global_roots.split(",")),
        ops=args.ops,
        think=args.think,
        hold=args.hold,
        placement=args.placement,
        seed=args.seed,
    )
    res = run_contention(cfg)
    print(dumps(res.to_json(), pretty=True) if args.json else render.contention_md(res))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("etv2", help="the extent-tree-v2 post's claims, model vs seed")
    s = p.add_subparsers(dest="etv2_cmd", metavar="SUBCOMMAND")
    s.required = True
    lc = s.add_parser("leaf-capacity", help="block group items per leaf (seed: ~680 at 16K)")
    lc.add_argument("--nodesize", default="16K")
    lc.add_argument("--json", action="store_true")
    lc.add_argument(
        "--measure",
        action="store_true",
        help="also read it off the leaves a kernel writes (one VM boot, ~1 min)",
    )
    lc.add_argument("--kernel", default="debian:6.12")
    lc.set_defaults(func=cmd_leaf_capacity)
    cc = s.add_parser("cow-cost", help="blocks COWed updating two adjacent block groups")
    cc.add_argument("--size", default="128G")
    cc.add_argument("--fill", default="120G")
    cc.add_argument("--nodesize", default="4K")
    cc.add_argument("--json", action="store_true")
    cc.add_argument(
        "--measure",
        action="store_true",
        help="also measure with the btrfs_cow_block tracepoint in a VM",
    )
    cc.add_argument("--kernel", default="debian:6.12")
    cc.set_defaults(func=cmd_cow_cost)
    ct = s.add_parser("contention", help="lock waits on global roots (simulation)")
    ct.add_argument("--threads", type=int_range(1, 4096), default=16)
    ct.add_argument("--global-roots", default="1,2,4,8,16")
    ct.add_argument("--ops", type=int_range(1, 10_000_000), default=2000)
    ct.add_argument("--think", type=float_range(0.0, 1e9), default=10.0)
    ct.add_argument("--hold", type=float_range(0.0, 1e9), default=1.0)
    ct.add_argument("--placement", choices=["spread", "per-thread"], default="spread")
    ct.add_argument("--seed", type=seed, default=0)
    ct.add_argument("--json", action="store_true")
    ct.set_defaults(func=cmd_contention)
