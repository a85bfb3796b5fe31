"""Test helpers for outside tools: a missing tool skips, or fails under
FSORACLE_REQUIRE_TOOLS=1 (CI), so no test is skipped forever where CI can install it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (make deps installs it)"
        if os.environ.get("FSORACLE_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        msg = f"{what} needs root"
        if os.environ.get("FSORACLE_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a tool, text mode, TZ=UTC (btrfs-progs prints local times)."""
    env = dict(os.environ, TZ="UTC", LC_ALL="C")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)  # type: ignore[call-overload,no-any-return]
