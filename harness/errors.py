"""Errors a user can cause: reported as one line, exit status 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment: say what and what to do."""

    exit_status = 2
