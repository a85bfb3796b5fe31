"""Errors a user can cause: reported as one line, exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator

from vm.console import render_faults
from vm.errors import GuestFault, VMUserError


class UserError(Exception):
    """A problem with the user's input or environment: say what and what to do."""

    exit_status = 2


def need_tool(name: str) -> str:
    """The path of host program ``name``; a :class:`UserError` saying how to get it if it
    is not installed."""
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} is not installed (make deps installs it)")
    return path


@contextlib.contextmanager
def vm_errors() -> Iterator[None]:
    """Turn ``vm``'s user-facing errors into :class:`UserError` (exit 2, one line), printing
    a kernel fault's excerpt first. Commands that resolve or build kernels use it."""
    try:
        yield
    except GuestFault as e:
        print(render_faults(e.faults), file=sys.stderr)
        raise UserError(str(e)) from e
    except VMUserError as e:
        raise UserError(str(e)) from e
