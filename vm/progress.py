"""Progress lines for slow work (downloads, initramfs builds, boots) on stderr.

One line when a step starts and one when it ends with its wall time, so a log read later
shows where the time went. ``FSORACLE_QUIET=1`` silences them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator


def quiet() -> bool:
    return os.environ.get("FSORACLE_QUIET", "") not in ("", "0")


def note(msg: str) -> None:
    """Print one progress line."""
    if not quiet():
        print(f"[vm] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(msg: str) -> Iterator[None]:
    """Announce ``msg``, run the block, then say how long it took (or that it failed)."""
    note(f"{msg} ...")
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        note(f"{msg}: failed after {time.monotonic() - t0:.1f} s")
        raise
    note(f"{msg}: done in {time.monotonic() - t0:.1f} s")
