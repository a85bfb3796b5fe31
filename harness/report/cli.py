"""``fsoracle report SERIES|all``: one page per patch series for reviewers.

For each claim of the series' cover letter (``patches/SERIES/series.yaml``): the seed's
sentence and numbers, the model function that states it, the experiment and tests that
check it, the measured numbers beside the seed's with a verdict, then the invariants with
their property tests, the experiments run and the known gaps. Writes ``OUT/SERIES.md``
(plots under ``OUT/SERIES/plots/``), ``OUT/SERIES.html`` (self-contained) and the results
of the experiments it ran under ``OUT/SERIES/results/``. Exit 0, or 1 when a report found
a problem in its own inputs (a quote not in the seed, a model function or test that does
not exist); differing numbers are findings, not errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.errors import UserError
from harness.safeio import output_dir


def typed_command(args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from its options (for the report's header)."""
    words = ["fsoracle", "report", args.series]
    if args.kernel != "debian:6.12":
        words += ["--kernel", args.kernel]
    words += ["--out", args.out]
    for d in args.from_ or []:
        words += ["--from", d]
    for flag in ("run_slow", "run_vm", "no_run", "no_plots"):
        if getattr(args, flag):
            words.append("--" + flag.replace("_", "-"))
    return " ".join(words)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.build import build_report
    from harness.report.render import write_index, write_report
    from harness.report.runner import Runner, git_commit
    from harness.series import load_series, patches_dir, series_names

    names = series_names() if args.series == "all" else [args.series]
    if not names:
        raise UserError("no series found under patches/")
    from_dirs = [Path(d) for d in args.from_ or []]
    for d in from_dirs:
        if not d.is_dir():
            raise UserError(f"--from {d}: not a directory")
    out = Path(args.out)
    output_dir(out)
    command = typed_command(args)
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = git_commit()
    written = []
    bad = 0
    for name in names:
        series = load_series(patches_dir() / name)
        runner = Runner(
            name,
            out / name / "results",
            from_dirs,
            run=not args.no_run,
            run_slow=args.run_slow,
            run_vm=args.run_vm,
            kernel=args.kernel,
        )
        rep = build_report(
            series,
            runner,
            out,
            command=command,
            generated=generated,
            commit=commit,
            plots=not args.no_plots,
        )
        md, page = write_report(rep, out)
        written.append((rep, md, page))
        counts = ", ".join(f"{n} {k}" for k, n in sorted(rep.counts().items()))
        print(f"{name}: {md} {page} ({counts})")
        for p in rep.problems:
            print(f"  problem: {p}", file=sys.stderr)
        bad += bool(rep.problems)
    if len(written) > 1:
        print(f"index: {write_index(written, out)}")
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "report",
        help="per-series reviewer report: claims, model, checks, measured vs seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("series", help="a folder of patches/ (e.g. skinny-bg-tree), or 'all'")
    p.add_argument("--kernel", default="debian:6.12", metavar="SPEC", help="for VM experiments")
    p.add_argument("--out", default="results/reports", help="output directory")
    p.add_argument(
        "--from",
        dest="from_",
        action="append",
        metavar="RESULTS",
        help="reuse results found here (DIR/SERIES/results/ID.json, DIR/results/ID.json or "
        "DIR/ID.json); may be repeated",
    )
    p.add_argument("--run-slow", action="store_true", help="also run slow experiments")
    p.add_argument("--run-vm", action="store_true", help="also run experiments that boot VMs")
    p.add_argument("--no-run", action="store_true", help="run nothing; use --from only")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_report)
