"""The ``fsoracle`` command line.

Each command family lives in its room's ``cli`` module (``harness.<room>.cli``) exposing
``register(subparsers)``; a command is a function ``(args) -> int`` (the exit status).
Errors the user can cause (:class:`harness.errors.UserError`, :class:`model.errors.FormatError`
where the input is the problem) end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness.errors import UserError
from model.errors import FormatError

# command families, in the order `fsoracle --help` lists them
FAMILIES = [
    "harness.btrfs.cli",
    "harness.etv2.cli",
    "harness.ext4.cli",
    "harness.hot.cli",
    "harness.compress.cli",
    "harness.workload.cli",
    "harness.target.cli",
    "harness.kernel.cli",
    "harness.mount.cli",
    "harness.report.cli",
]

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsoracle",
        description="Reference model and test oracle for filesystem kernel patches.",
    )
    sub = parser.add_subparsers(dest="family", metavar="COMMAND")
    sub.required = True
    for name in FAMILIES:
        importlib.import_module(name).register(sub)
    return parser


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM / SIGHUP: leave through ``SystemExit`` so that every ``finally`` and context
    manager runs (temporaries removed, QEMU stopped), with the shell's status 128+N."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signals_exit() -> Iterator[None]:
    """Install :func:`_exit_on_signal` for SIGTERM and SIGHUP where they are at their
    default (an ignored signal stays ignored: ``nohup`` keeps working); restored after."""
    saved: dict[int, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread: leave as is
                if signal.getsignal(sig) == signal.SIG_DFL:
                    saved[sig] = signal.signal(sig, _exit_on_signal)
        yield
    finally:
        for signum, old in saved.items():
            signal.signal(signum, old)


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    """Built once per process (argparse parsers keep no state between ``parse_args``
    calls): the batch fuzzer calls :func:`main` thousands of times in one process."""
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    from harness.kernel.patchsets import register_series

    register_series()  # build: kernel specs name the series of patches/
    try:
        with _signals_exit():
            return func(args)
    except UserError as e:
        print(f"fsoracle: {e}", file=sys.stderr)
        return 2
    except FormatError as e:
        # raised while reading past the opening (a walk, a dump): name the image
        image = getattr(args, "image", None)
        where = f"{image}: " if isinstance(image, str) and not str(e).startswith(image) else ""
        print(f"fsoracle: {where}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fsoracle: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
