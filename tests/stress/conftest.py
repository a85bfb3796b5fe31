"""Fixtures for host-kernel stress tests: loop-mounted images made once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools import require_root, require_tool


def need_fs(fs: str, maker: str = "mkfs") -> None:
    require_root("a loop mount")
    if fs == "btrfs":
        require_tool("btrfs")
        if maker == "mkfs":
            require_tool("mkfs.btrfs")
    else:
        require_tool("mke2fs")
        require_tool("e2fsck")
        require_tool("debugfs")


@pytest.fixture(scope="module")
def host_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``host_session(fs)`` -> a DriverSession on a fresh loop-mounted image of ``fs``
    (one per filesystem per module), unmounted at the end."""
    from harness.workload.hostmount import FsSpec, loop_mount, make_image
    from harness.workload.session import DriverSession

    stack: dict[str, tuple[object, object, Path]] = {}

    def get(fs: str) -> object:
        need_fs(fs)
        if fs not in stack:
            d = tmp_path_factory.mktemp(f"session-{fs}")
            make_image(d / "fs.img", FsSpec(fs=fs))
            cm = loop_mount(d / "fs.img", d / "mnt")
            cm.__enter__()
            session = DriverSession.host(d / "mnt")
            stack[fs] = (session, cm, d / "fs.img")
        return stack[fs][0]

    yield get
    for session, cm, _img in stack.values():
        session.close()  # type: ignore[attr-defined]
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]
