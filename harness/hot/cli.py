"""``fsoracle hot ...``: hot data tracking with the model (temperatures of a trace, the
tiered-storage simulator, the bench's synthetic traces)."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from harness.argtypes import int_range
from harness.errors import UserError
from harness.hot.render import render_temp
from harness.hot.temp import temp_report
from harness.jsonout import dumps
from harness.safeio import check_output, read_text_input, write_atomic
from model.hotdata import constants as C
from model.hotdata.replay import ReplayConfig, replay_trace
from model.hotdata.trace import Trace, format_trace, parse_trace


def _read_trace(path: str | None) -> Trace:
    """A trace file, or stdin for ``-``/None."""
    if path in (None, "-"):
        return parse_trace(sys.stdin)
    return parse_trace(io.StringIO(read_text_input(path, "access trace")))


def cmd_temp(args: argparse.Namespace) -> int:
    if args.age and not args.timers:
        raise UserError("--age ages records in the update worker: give --timers too")
    trace = _read_trace(args.trace)
    cfg = ReplayConfig(
        timers=args.timers, age_kick_ns=C.TIME_TO_KICK * C.NSEC_PER_SEC if args.age else None
    )
    res = replay_trace(trace, cfg)
    now = args.now if args.now is not None else res.now_ns
    rep = temp_report(res.root, now)
    if args.json:
        print(dumps(rep))
        return 0
    sys.stdout.write(render_temp(rep))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from harness.hot.config import load_preset, setup_from_preset
    from harness.hot.render import plot_sim, render_sim
    from harness.hot.sim import run_sim

    setup = setup_from_preset(load_preset(args.preset))
    trace = _read_trace(args.trace) if args.trace else None
    reads = None
    if args.measure_trace:
        reads = [e for e in _read_trace(args.measure_trace).events if e.op == "read"]
    report = run_sim(setup, trace, reads, policy=not args.no_policy)
    png = None
    if not args.no_plot:
        png = plot_sim(report, Path(args.out) / f"hot-sim-{report.preset or 'preset'}.png")
    if args.json:
        print(dumps(report))
    else:
        sys.stdout.write(render_sim(report, png))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from harness.hot.config import load_preset, setup_from_preset
    from harness.hot.sim import measure_reads, phase1_trace

    setup = setup_from_preset(load_preset(args.preset))
    trace = phase1_trace(setup)
    if args.phase == "measure":
        trace = Trace(trace.header, measure_reads(setup), trace.files)
    lines = format_trace(trace)
    if args.out in (None, "-"):
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        write_atomic(args.out, "\n".join(lines) + "\n", force=args.force)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from harness.hot import trace as hot_trace

    out = Path(args.out)
    # refuse a bad output before the guest boots (checked again when written)
    for path in (args.out, args.driver_log, args.raw):
        if path is not None:
            check_output(path, force=args.force)

    def say(msg: str) -> None:
        print(f"hot trace: {msg}", file=sys.stderr, flush=True)

    rec = hot_trace.record(args.kernel, args.workload, preset=args.preset, say=say)
    hot_trace.write_trace(rec.trace, out, force=args.force)
    if args.driver_log:
        write_atomic(
            args.driver_log,
            "".join(f"{e.op} {e.name} {e.inode} {e.offset} {e.length}\n" for e in rec.log),
            force=args.force,
        )
    problems = hot_trace.check_reads(rec.trace, rec.log)
    reads = sum(1 for e in rec.trace.events if e.op == "read")
    writes = sum(1 for e in rec.trace.events if e.op == "write")
    print(
        f"{out}: {reads} reads, {writes} writes, {len(rec.trace.files)} files "
        f"({rec.info.get('release', '')}); driver log {len(rec.log)} ops; "
        f"reads vs driver log: {'equal' if not problems else f'{len(problems)} differ'}"
    )
    d = rec.decoded
    print(
        f"  probe hits {len(rec.raw_text.splitlines())} lines; other filesystems {d.other_dev}, "
        f"empty writebacks {d.empty_writebacks}, unpaired {d.unpaired_returns}/"
        f"{d.unfinished_calls}, buffer overrun {rec.info.get('overrun')}"
    )
    if args.raw:
        write_atomic(args.raw, rec.raw_text, force=args.force)
    for p in problems[:10]:
        print(f"  {p}")
    return 0 if not problems else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.hot.experiment import run_hot_bench
    from harness.hot.render import write_bench_report

    out = Path(args.out) if args.out else Path("results") / time.strftime("hot-bench-%Y%m%d-%H%M%S")

    def say(msg: str) -> None:
        print(f"hot bench: {msg}", file=sys.stderr, flush=True)

    res = run_hot_bench(args.preset, args.kernel, out, say)
    print(write_bench_report(res, out).read_text())
    print(
        f"results in {out}/ (result.json, report.md, hot-bench.png, phase1.jsonl)", file=sys.stderr
    )
    return 0 if res.trace_matches_driver else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("hot", help="hot data tracking: temperatures, tiering simulator")
    hsub = p.add_subparsers(dest="hot_cmd", metavar="SUBCOMMAND")
    hsub.required = True

    t = hsub.add_parser("temp", help="records, temperatures and heat buckets of a trace")
    t.add_argument("--trace", help="JSONL access trace (default: stdin)")
    t.add_argument(
        "--now",
        type=int_range(0, (1 << 63) - 1),
        help="temperature time, ns (default: the last event)",
    )
    t.add_argument(
        "--timers",
        action="store_true",
        help=f"run hot_update_worker every {C.HOT_UPDATE_INTERVAL} s (fills the heat map)",
    )
    t.add_argument("--age", action="store_true", help="with --timers: the 2012 aging (300 s)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_temp)

    s = hsub.add_parser("sim", help="predicted throughput before/after relocation (Markdown + PNG)")
    s.add_argument("--preset", default="hot_bench", help="preset name or YAML path")
    s.add_argument("--trace", help="phase-1 trace recorded in a guest (default: synthetic)")
    s.add_argument("--measure-trace", help="phase-2 reads as a trace (default: synthetic)")
    s.add_argument("--out", default="results", help="directory for the PNG")
    s.add_argument("--no-plot", action="store_true")
    s.add_argument("--no-policy", action="store_true", help="skip the kernel policy replay")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sim)

    y = hsub.add_parser("synth", help="the preset's synthetic trace (phase 1 or 2) as JSONL")
    y.add_argument("--preset", default="hot_bench")
    y.add_argument("--phase", choices=["trace", "measure"], default="trace")
    y.add_argument("--out", help="file (default: stdout)")
    y.add_argument("--force", action="store_true", help="replace --out if it exists")
    y.set_defaults(func=cmd_synth)

    r = hsub.add_parser("trace", help="record a workload's accesses in a guest kernel (JSONL)")
    r.add_argument("--workload", required=True, choices=["phase1", "mixed"])
    r.add_argument("--kernel", default="debian:6.12", metavar="SPEC")
    r.add_argument("--preset", default="hot_bench", help="PRESET[:VARIANT] (phase1)")
    r.add_argument("--out", required=True, help="trace file to write")
    r.add_argument("--driver-log", help="also write the guest driver's own log here")
    r.add_argument("--raw", help="also write the tracefs text here")
    r.add_argument("--force", action="store_true", help="replace the output files if they exist")
    r.set_defaults(func=cmd_trace)

    b = hsub.add_parser("bench", help="VM bench: reads before/after moving the hot files")
    b.add_argument("--preset", default="hot_bench", help="PRESET[:VARIANT], e.g. hot_bench:smoke")
    b.add_argument("--kernel", default="debian:6.12", metavar="SPEC")
    b.add_argument("--out", help="directory (default: results/hot-bench-TIME)")
    b.set_defaults(func=cmd_bench)
