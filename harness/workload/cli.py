"""``fsoracle stress ...``: seeded workloads against a kernel, checked against the model.

    fsoracle stress [--target host|vm] [--fs btrfs|ext4]
                    [--layout extent-tree|bg-tree|skinny-bg-tree] [--mkfs mkfs|writer]
                    [--seed S] [--ops N] [--procs P] [--out DIR]
                    [--kernel SPEC] [--device virtio|nvme] [--crash-at K|random [--runs N]]
    fsoracle stress replay LOG [--target host|model|vm] [--fs ...] [--fault NAME,...]
    fsoracle stress fsx [--target host|vm] [--fs ...] [--seed S] [--ops N] [--out DIR]
    fsoracle stress differential [--target host|vm] [--fs ...] [--examples N] [--seed S]
                    [--fault NAME,...]

Every experiment runs the same code on either target (:mod:`harness.target`): ``host`` is
the machine's own kernel with the image loop-mounted (root); ``vm`` boots ``--kernel``
(default debian:6.12) with the image as a disk and checks everything on the host after.
``--crash-at K`` cuts the power when the K-th op line arrives (``random``: a line drawn
from the seed; ``--runs N``: N runs, seeds S..S+N-1), mounts the image again on a fresh
target (log replay) and judges what survived; in a VM the cut is QMP quit (the page cache
is lost), on the host a filesystem freeze (everything written back survives).
``host-mount`` is accepted for ``host``.

Exit 0 when the kernel, the model, the checkers and the outside view agree; 1 on any
difference; 2 for a usage or environment error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from harness.argtypes import float_range, int_range, seed
from harness.errors import UserError
from harness.safeio import write_atomic
from harness.sizes import parse_size
from harness.target import TargetSpec

TARGETS = ("host", "vm")


def _spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from harness.workload.hostmount import MkfsSpec

    spec = MkfsSpec(fs=args.fs, maker=args.mkfs, layout=args.layout, size=parse_size(args.size))
    spec.validate()
    return spec


def _faults(text: str | None):  # type: ignore[no-untyped-def]
    from model.fsstate.faults import Faults

    try:
        return Faults.parse(text or "")
    except ValueError as e:
        raise UserError(str(e)) from None


def _target(args: argparse.Namespace) -> TargetSpec:
    """The ``--target`` and VM options as a :class:`TargetSpec` (validated)."""
    kind = "host" if args.target == "host-mount" else args.target
    if kind not in TARGETS:
        raise UserError(f"--target {args.target!r}: one of {', '.join(TARGETS)}")
    t = TargetSpec(
        kind=kind,
        kernel=args.kernel or TargetSpec.kernel,
        device=args.device,
        mem_mib=args.mem,
        timeout=args.vm_timeout,
    )
    t.validate()
    return t


def _results_dir(args: argparse.Namespace, kind: str, target: TargetSpec) -> Path:
    if args.out:
        return Path(args.out)
    layout = "" if args.fs == "ext4" else f"-{args.layout}-{args.mkfs}"
    where = "host" if target.kind == "host" else target.kernel.replace(":", "-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("results/stress") / f"{stamp}-{kind}-{where}-{args.fs}{layout}-seed{args.seed}"


def cmd_run(args: argparse.Namespace) -> int:
    target = _target(args)
    spec = _spec(args)
    out = _results_dir(args, "crash" if args.crash_at else "stress", target)
    if args.crash_at:
        from harness.workload.crash import crash_jobs, run_crashes, summary_lines

        jobs = crash_jobs(
            spec,
            out,
            seed=args.seed,
            ops=args.ops,
            procs=args.procs,
            crash_at=args.crash_at,
            runs=args.runs,
            keep_image=args.keep_image,
        )
        reps = run_crashes(target, jobs)
        if args.json:
            sys.stdout.write(json.dumps([r.to_json() for r in reps], indent=1) + "\n")
        else:
            for r in reps:
                print("\n".join(r.lines()))
                print()
            if len(reps) > 1:
                text = "\n".join(summary_lines(reps))
                print(text)
                write_atomic(out / "summary.md", text + "\n")
            print(f"logs, walks and reports: {out}")
        return 0 if all(r.ok for r in reps) else 1
    from harness.workload.stress import StressConfig, run_stress

    cfg = StressConfig(
        spec=spec,
        out=out,
        seed=args.seed,
        ops=args.ops,
        procs=args.procs,
        keep_image=args.keep_image,
    )
    (rep,) = run_stress([cfg], target)
    if args.json:
        sys.stdout.write(json.dumps(rep.to_json(), indent=1) + "\n")
    else:
        print("\n".join(rep.lines()))
        print(f"log, walk and report: {out}")
    return 0 if rep.ok else 1


def cmd_replay_crash(args: argparse.Namespace, target: TargetSpec) -> int:
    """``replay LOG --crash-at K``: the log's ops on the target, power cut at op line K."""
    from harness.workload.crash import CrashJob, crash_point, run_crashes
    from harness.workload.hostmount import MkfsSpec
    from harness.workload.replay import load_log

    path = Path(args.log)
    log = load_log(path)
    fs = args.fs or log.header.get("fs")
    if fs not in ("btrfs", "ext4"):
        raise UserError(f"{path}: no fs= in the header: give --fs btrfs|ext4")
    n = len(log.ops)
    if args.crash_at == "random":
        k = crash_point(0, 1, n - 1)
        how = f"random: op line {k}"
    else:
        try:
            k = int(args.crash_at)
        except ValueError:
            raise UserError(
                f"--crash-at {args.crash_at!r}: an op line number or 'random'"
            ) from None
        if not 1 <= k <= n:
            raise UserError(f"--crash-at {k}: the log has op lines 1..{n}")
        how = f"op line {k}"
    spec = MkfsSpec(fs=fs, maker=args.mkfs, layout=args.layout or "extent-tree")
    spec.validate()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("results/stress") / f"{stamp}-crash-{path.stem}"
    job = CrashJob(spec, out, 0, n, len(log.by_proc()), k, how, replay=path)
    (rep,) = run_crashes(target, [job])
    print("\n".join(rep.lines()))
    print(f"log, walk and report: {out}")
    return 0 if rep.ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from harness.workload.replay import replay

    target = None if args.target == "model" else _target(args)
    if args.crash_at:
        if target is None:
            raise UserError("--crash-at needs a kernel: --target host or vm")
        return cmd_replay_crash(args, target)
    spec = None
    if target is not None and (args.layout or args.mkfs != "mkfs"):
        from harness.workload.hostmount import MkfsSpec

        spec = MkfsSpec(fs=args.fs or "btrfs", maker=args.mkfs, layout=args.layout or "extent-tree")
    out = replay(
        Path(args.log),
        target=target,
        fs=args.fs,
        faults=_faults(args.fault),
        walk_path=Path(args.walk) if args.walk else None,
        spec=spec,
        out=Path(args.out) if args.out else None,
    )
    print("\n".join(out.lines()))
    return 0 if out.ok else 1


def cmd_fsx(args: argparse.Namespace) -> int:
    from harness.workload.fsx import run_fsx

    target = _target(args)
    spec = _spec(args)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsoracle-fsx-"))
    rep = run_fsx(spec, out, target, seed=args.seed, ops=args.ops)
    print("\n".join(rep.lines()))
    return 0 if rep.ok else 1


def cmd_differential(args: argparse.Namespace) -> int:
    from harness.workload.diffrun import run_differential

    outcome = run_differential(
        _spec(args),
        _target(args),
        examples=args.examples,
        seed=args.seed,
        faults=_faults(args.fault),
        max_ops=args.max_ops,
        results=Path(args.results),
    )
    print("\n".join(outcome.lines()))
    ok = outcome.found is None and all(c.ok for c in outcome.checkers)
    return 0 if ok else 1


def _vm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", help="with --target vm: kernel spec (default debian:6.12)")
    p.add_argument("--device", default="virtio", help="with --target vm: virtio or nvme")
    p.add_argument(
        "--mem", type=int_range(128, 1 << 20), default=1536, help="with --target vm: guest MiB"
    )
    p.add_argument(
        "--vm-timeout",
        type=float_range(1.0, 7 * 86400.0),
        default=3600.0,
        help="bound on each VM's life (seconds)",
    )


def _fs_options(p: argparse.ArgumentParser, *, fs_default: str | None = "btrfs") -> None:
    p.add_argument("--target", default="host", help="host (loop mounts, root) or vm")
    p.add_argument("--fs", default=fs_default, choices=("btrfs", "ext4"))
    p.add_argument(
        "--layout",
        default="extent-tree",
        help="btrfs: extent-tree, bg-tree, or skinny-bg-tree (with --mkfs writer and a kernel"
        " carrying the series, e.g. --kernel build:6.12+skinny-bg-tree)",
    )
    p.add_argument(
        "--mkfs", default="mkfs", help="btrfs: mkfs (mkfs.btrfs) or writer (fsoracle btrfs mkfs)"
    )
    p.add_argument("--size", default="2G", help="image size (default 2G, sparse)")
    _vm_options(p)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "stress",
        help="seeded stress workloads against a kernel, checked against the model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _fs_options(p)
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument(
        "--ops", type=int_range(1, 10_000_000), default=1000, help="ops per process (fsstress -n)"
    )
    p.add_argument("--procs", type=int_range(1, 256), default=4)
    p.add_argument("--out", help="directory for the log, the walk and the report")
    p.add_argument("--keep-image", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--crash-at", help="cut the power at op line K, or 'random'")
    p.add_argument(
        "--runs",
        type=int_range(1, 100_000),
        default=1,
        help="with --crash-at: runs (seeds S, S+1...)",
    )
    p.set_defaults(func=cmd_run)
    ssub = p.add_subparsers(dest="stress_cmd", metavar="[replay|fsx|differential]")

    r = ssub.add_parser("replay", help="replay a saved op log (the failures' one-liner)")
    r.add_argument("log")
    r.add_argument("--target", default="host", help="host, model or vm")
    r.add_argument("--fs", choices=("btrfs", "ext4"), help="default: the log header's")
    r.add_argument("--layout", help="btrfs layout for the fresh image")
    r.add_argument("--mkfs", default="mkfs", help="mkfs or writer")
    r.add_argument("--fault", help="faults planted in the model, comma-separated")
    r.add_argument("--walk", help="with --target model: the run's walk records")
    r.add_argument("--out", help="keep the replay's image directory here")
    r.add_argument("--crash-at", help="cut the power at op line K (or random)")
    _vm_options(r)
    r.set_defaults(func=cmd_replay)

    f = ssub.add_parser("fsx", help="fsx-style single-file run with every read checked")
    _fs_options(f)
    f.add_argument("--seed", type=seed, default=1)
    f.add_argument("--ops", type=int_range(1, 10_000_000), default=2000)
    f.add_argument("--out")
    f.set_defaults(func=cmd_fsx)

    d = ssub.add_parser("differential", help="hypothesis search for model/kernel disagreements")
    _fs_options(d)
    d.add_argument("--examples", type=int_range(1, 10_000_000), default=200)
    d.add_argument("--seed", type=seed, default=0)
    d.add_argument("--max-ops", type=int_range(1, 10_000), default=12)
    d.add_argument("--fault", help="plant faults in the model (testing the test)")
    d.add_argument("--results", default="results/stress", help="where minimal logs go")
    d.set_defaults(func=cmd_differential)
