"""Helpers for the VM tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vm.guestroot import HOST_TOOLS
from vm.kernels import DEBIAN_KERNELS, DEFAULT_SPEC

VM_TOOLS = (
    "qemu-system-x86_64",
    "qemu-img",
    "apt-get",
    "dpkg-deb",
    "depmod",
    "modprobe",
    "ldd",
    *(cmd for cmd, _pkg, required in HOST_TOOLS if required),
)


def kernels() -> list[str]:
    raw = os.environ.get("FSORACLE_VM_KERNELS", "").strip()
    return [k.strip() for k in raw.split(",") if k.strip()] or [DEFAULT_SPEC]


def expected_release(spec: str) -> str:
    """The release a ``debian:`` spec boots, from the pinned package name alone."""
    return DEBIAN_KERNELS[spec.removeprefix("debian:")].removeprefix("linux-image-")


def _missing(what: str) -> None:
    if os.environ.get("FSORACLE_REQUIRE_TOOLS", "0") not in ("", "0"):
        pytest.fail(f"required for this test: {what} (FSORACLE_REQUIRE_TOOLS=1)")
    pytest.skip(f"missing: {what}")


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None and not Path(n).exists()]
    if missing:
        _missing(", ".join(missing))


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("root (network namespaces)")


# the CLI as its console script runs it, with every family of harness.cli.FAMILIES (a family
# that does not import fails the test that runs it, as it would fail the user)
FSORACLE = "import sys, harness.cli as c; sys.exit(c.main())"
