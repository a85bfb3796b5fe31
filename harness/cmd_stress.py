"""``fsoracle stress ...``: seeded workloads against a kernel, checked against the model.

    fsoracle stress [--target host-mount|vm] [--fs btrfs|ext4] [--layout extent-tree|bg-tree]
                    [--mkfs mkfs|writer] [--seed S] [--ops N] [--procs P] [--out DIR]
    fsoracle stress replay LOG [--target host-mount|model|vm] [--fs ...] [--fault NAME,...]
    fsoracle stress fsx [--target host-mount] [--fs ...] [--seed S] [--ops N] [--out DIR]
    fsoracle stress differential [--fs ...] [--examples N] [--seed S] [--fault NAME,...]

Exit 0 when the kernel, the model, the checkers and the outside view agree; 1 on any
difference; 2 for a usage or environment error (``--target vm`` until vm/ lands).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from harness.errors import UserError
from harness.sizes import parse_size

TARGETS = ("host-mount", "vm")


def _spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from harness.workload.hostmount import FsSpec

    spec = FsSpec(fs=args.fs, maker=args.mkfs, layout=args.layout, size=parse_size(args.size))
    spec.validate()
    return spec


def _faults(text: str | None):  # type: ignore[no-untyped-def]
    from model.fsstate.faults import Faults

    try:
        return Faults.parse(text or "")
    except ValueError as e:
        raise UserError(str(e)) from None


def _need_host_target(target: str) -> None:
    if target == "vm":
        raise UserError(
            "--target vm is not available yet: the VM half of issue 6 (vm/) has not landed;"
            " use --target host-mount"
        )
    if target != "host-mount":
        raise UserError(f"--target {target!r}: one of {', '.join(TARGETS)}")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.workload.stress import StressConfig, run_host_stress

    _need_host_target(args.target)
    spec = _spec(args)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsoracle-stress-"))
    cfg = StressConfig(
        spec=spec,
        out=out,
        seed=args.seed,
        ops=args.ops,
        procs=args.procs,
        keep_image=args.keep_image,
    )
    rep = run_host_stress(cfg)
    if args.json:
        sys.stdout.write(json.dumps(rep.to_json(), indent=1) + "\n")
    else:
        print("\n".join(rep.lines()))
        print(f"log, walk and report: {out}")
    return 0 if rep.ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from harness.workload.replay import replay

    if args.target == "vm":
        _need_host_target("vm")
    spec = None
    if args.target == "host-mount" and (args.layout or args.mkfs != "mkfs"):
        from harness.workload.hostmount import FsSpec

        spec = FsSpec(fs=args.fs or "btrfs", maker=args.mkfs, layout=args.layout or "extent-tree")
    out = replay(
        Path(args.log),
        target=args.target,
        fs=args.fs,
        faults=_faults(args.fault),
        walk_path=Path(args.walk) if args.walk else None,
        spec=spec,
        out=Path(args.out) if args.out else None,
    )
    print("\n".join(out.lines()))
    return 0 if out.ok else 1


def cmd_fsx(args: argparse.Namespace) -> int:
    from harness.workload.fsx import run_host_fsx

    _need_host_target(args.target)
    spec = _spec(args)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsoracle-fsx-"))
    rep = run_host_fsx(spec, out, seed=args.seed, ops=args.ops)
    print("\n".join(rep.lines()))
    return 0 if rep.ok else 1


def cmd_differential(args: argparse.Namespace) -> int:
    from harness.workload.differential import run_host_differential

    _need_host_target(args.target)
    spec = _spec(args)
    outcome = run_host_differential(
        spec,
        examples=args.examples,
        seed=args.seed,
        faults=_faults(args.fault),
        max_ops=args.max_ops,
        results=Path(args.results),
    )
    print("\n".join(outcome.lines()))
    return 0 if outcome.found is None else 1


def _fs_options(p: argparse.ArgumentParser, *, fs_default: str | None = "btrfs") -> None:
    p.add_argument("--target", default="host-mount", help="host-mount (now) or vm (pending)")
    p.add_argument("--fs", default=fs_default, choices=("btrfs", "ext4"))
    p.add_argument("--layout", default="extent-tree", help="btrfs: extent-tree or bg-tree")
    p.add_argument(
        "--mkfs", default="mkfs", help="btrfs: mkfs (mkfs.btrfs) or writer (fsoracle btrfs mkfs)"
    )
    p.add_argument("--size", default="2G", help="image size (default 2G, sparse)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "stress",
        help="seeded stress workloads against a kernel, checked against the model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _fs_options(p)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=1000, help="ops per process (fsstress -n)")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--out", help="directory for the log, the walk and the report")
    p.add_argument("--keep-image", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)
    ssub = p.add_subparsers(dest="stress_cmd", metavar="[replay|fsx|differential]")

    r = ssub.add_parser("replay", help="replay a saved op log (the failures' one-liner)")
    r.add_argument("log")
    r.add_argument("--target", default="host-mount", help="host-mount, model or vm")
    r.add_argument("--fs", choices=("btrfs", "ext4"), help="default: the log header's")
    r.add_argument("--layout", help="btrfs layout for the fresh image")
    r.add_argument("--mkfs", default="mkfs", help="mkfs or writer")
    r.add_argument("--fault", help="faults planted in the model, comma-separated")
    r.add_argument("--walk", help="with --target model: the run's walk records")
    r.add_argument("--out", help="keep the replay's image directory here")
    r.set_defaults(func=cmd_replay)

    f = ssub.add_parser("fsx", help="fsx-style single-file run with every read checked")
    _fs_options(f)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--ops", type=int, default=2000)
    f.add_argument("--out")
    f.set_defaults(func=cmd_fsx)

    d = ssub.add_parser("differential", help="hypothesis search for model/kernel disagreements")
    _fs_options(d)
    d.add_argument("--examples", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--max-ops", type=int, default=12)
    d.add_argument("--fault", help="plant faults in the model (testing the test)")
    d.add_argument("--results", default="results/stress", help="where minimal logs go")
    d.set_defaults(func=cmd_differential)
