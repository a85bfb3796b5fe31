"""``fsoracle ext4 ...``: free space of real ext4 images, and the allocator study.

fsoracle ext4 dump IMAGE [--json]
fsoracle ext4 check IMAGE [--json]
fsoracle ext4 alloc-sim --groups N [--flex 16] [--fragmentation F] [--writes 10M,100M]
                        [--allocators buddy,optimize-scan,frsp0,...] [--mem-limit 1G]
                        [--kernel 6.1|6.12] [--seed S] [--json] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.argtypes import float_range, int_range
from harness.argtypes import seed as seed_type
from harness.ext4.config import MAX_GROUPS, AllocSimConfig
from harness.jsonout import dumps


def cmd_dump(args: argparse.Namespace) -> int:
    from harness.ext4.images import dump_image
    from harness.ext4.render import dump_text

    data = dump_image(args.image)
    if args.json:
        print(dumps(data))
        return 0
    sys.stdout.write(dump_text(data))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The superblock, descriptor and block bitmap checks of the 6.12 kernel and e2fsck's
    pass-5 free counts (``model.ext4.check``): 0 clean, 1 findings, 2 unreadable."""
    from harness.ext4.images import check_image, check_json
    from harness.ext4.render import check_text

    res = check_image(args.image)
    if args.json:
        sys.stdout.write(dumps(check_json(args.image, res)) + "\n")
    else:
        sys.stdout.write(check_text(res))
    return 0 if res.ok else 1


def cmd_alloc_sim(args: argparse.Namespace) -> int:
    from harness.ext4.render import plot_allocators, table_markdown
    from harness.ext4.sim import run_study
    from harness.safeio import output_dir, write_atomic

    cfg = AllocSimConfig(
        groups=args.groups,
        flex=args.flex,
        fragmentation=args.fragmentation,
        free_fraction=args.free_fraction,
        writes=args.writes,
        allocators=args.allocators,
        mem_limit=args.mem_limit,
        kernel=args.kernel,
        cost_model=args.cost_model,
        seed=args.seed,
        exact=args.exact,
    )
    data = run_study(cfg)
    md = table_markdown(data)
    if args.out:
        out = output_dir(args.out)
        write_atomic(out / "ext4_alloc_sim.md", md)
        write_atomic(out / "ext4_alloc_sim.json", dumps(data, pretty=True))
        plot_allocators(data, out / "ext4_alloc_sim.png")
    if args.json:
        print(dumps(data))
    else:
        print(md)
        print(f"wall {data['wall_seconds']:.1f} s, max RSS {data['max_rss_mib']:.0f} MiB")
    return 0


def _register_alloc_sim(fam: Any) -> None:
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


def register(sub: Any) -> None:
    p = sub.add_parser("ext4", help="ext4 free space and allocators")
    fam = p.add_subparsers(dest="ext4_cmd", metavar="SUBCOMMAND")
    fam.required = True
    d = fam.add_parser("dump", help="per group free count and free extents")
    d.add_argument("image")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_dump)
    c = fam.add_parser(
        "check",
        help="the 6.12 kernel's superblock, descriptor and block bitmap checks and "
        "e2fsck's free block counts; exit 1 on a finding",
    )
    c.add_argument("image")
    c.add_argument("--json", action="store_true", help="one JSON document (schema 1)")
    c.set_defaults(func=cmd_check)
    _register_alloc_sim(fam)
