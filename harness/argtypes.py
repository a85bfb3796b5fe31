"""Option value types with ranges: a value out of range is an argparse error (one line,
exit 2), never a silent wrap, a huge loop or a traceback later.

Use ``type=int_range(lo, hi)`` / ``type=float_range(lo, hi)`` instead of ``type=int`` /
``type=float``; ``tests/test_cli_options.py`` fails on any bare ``int`` or ``float`` option.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

U64_MAX = (1 << 64) - 1


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f"at least {lo}"
    return f"at most {hi}"


def int_range(lo: int | None = 0, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (``None``: unbounded on that side), written in decimal,
    ``0x`` hex or ``0o`` octal, with optional ``_`` separators."""

    def parse(s: str) -> int:
        try:
            v = int(s.strip(), 0)
        except ValueError:
            try:  # int(s, 0) refuses leading zeros ("08"), which people type
                v = int(s.strip(), 10)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{s} is out of range: give a number {_bounds(lo, hi)}"
            )
        return v

    parse.__name__ = "integer"  # argparse names the type in its messages
    parse.bounds = (lo, hi)  # type: ignore[attr-defined]
    return parse


def float_range(lo: float | None = 0.0, hi: float | None = None) -> Callable[[str], float]:
    """A finite number in ``[lo, hi]``."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{s} is out of range: give a number {_bounds(lo, hi)}"
            )
        return v

    parse.__name__ = "number"
    parse.bounds = (lo, hi)  # type: ignore[attr-defined]
    return parse


# the common ones
seed = int_range(0, U64_MAX)
count = int_range(1, 1 << 31)
