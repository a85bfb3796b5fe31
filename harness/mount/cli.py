"""``fsoracle bench ...``: benchmarks that boot kernels and set them beside the model.

- ``bench mount [--preset NAME] [--kernel SPEC] [--layouts ...] [--devices virtio,nvme]
  [--size SIZE] [--nodesize N] [--extent-size SIZE] [--repeat N] [--out DIR]``: mount timing
  with ftrace, tree-block reads per window beside ``predict-mount``
  (:mod:`harness.mount.experiment`). Exit 0 when every mounted sample read exactly the predicted
  blocks inside ``btrfs_read_block_groups``, 1 when a sample disagreed or a mount failed
  (a layout the kernel refuses is skipped, not failed), 2 for errors the user can cause.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.argtypes import int_range, seed
from harness.mount.config import load_presets, make_config
from harness.mount.experiment import run_mount_bench
from harness.target.spec import DEVICES
from model.btrfs.mkfs import KERNEL_LAYOUTS
from vm.kernels import DEFAULT_SPEC


def cmd_mount(args: argparse.Namespace) -> int:
    cfg = make_config(
        args.preset,
        kernel=args.kernel,
        overrides={
            "layouts": args.layouts,
            "devices": args.devices,
            "size": args.size,
            "device_size": args.device_size,
            "nodesize": args.nodesize,
            "extent_size": args.extent_size,
            "repeat": args.repeat,
            "seed": args.seed,
        },
    )
    out = Path(args.out) if args.out else Path("results") / time.strftime("mount-%Y%m%d-%H%M%S")
    result = run_mount_bench(
        cfg,
        out,
        keep_images=args.keep_images,
        image_dir=Path(args.image_dir) if args.image_dir else None,
    )
    acc = result.acceptance()
    print((out / "report.md").read_text())
    print(f"results in {out}/ (result.json, report.md, mount.png)", file=sys.stderr)
    return 0 if acc["reads_match"] and not acc["failed"] else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks that boot kernels (mount timing)")
    bsub = p.add_subparsers(dest="bench_cmd", metavar="BENCH")
    bsub.required = True
    presets = sorted(load_presets())
    m = bsub.add_parser(
        "mount",
        help="trace the kernel's mount of each block group layout beside predict-mount",
        description=(
            "Write one image per layout (same block groups and files), boot once, and mount "
            "each image cold on each device REPEAT times with open_ctree and "
            "btrfs_read_block_groups traced; count tree blocks read before, inside and after "
            "btrfs_read_block_groups and compare with the model. Results go to "
            "results/mount-<timestamp>/ (result.json, report.md, mount.png)."
        ),
    )
    m.add_argument("--preset", default="default", choices=presets)
    m.add_argument("--kernel", default=DEFAULT_SPEC, metavar="SPEC")
    m.add_argument("--layouts", help=f"comma-separated, from {','.join(KERNEL_LAYOUTS)}")
    m.add_argument("--devices", help=f"comma-separated, from {','.join(DEVICES)}")
    m.add_argument("--size", help="data written (preallocated files), e.g. 256G, 1T")
    m.add_argument("--device-size", help="device size (default: 10%% more than --size)")
    m.add_argument("--nodesize")
    m.add_argument("--extent-size")
    m.add_argument("--repeat", type=int_range(1, 10_000), help="cold mounts per layout and device")
    m.add_argument("--seed", type=seed, help="the writer's seed (UUIDs, times)")
    m.add_argument("--out", help="output directory (default results/mount-<timestamp>)")
    m.add_argument("--image-dir", help="write the images here and keep them")
    m.add_argument("--keep-images", action="store_true", help="keep OUT/images/")
    m.set_defaults(func=cmd_mount)
