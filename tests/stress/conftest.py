"""Fixtures for host-kernel stress tests: loop-mounted images made once per module."""

from __future__ import annotations

from collections.abc import Iterator

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
    """``host_session(fs)`` -> a DriverSession on a fresh image of ``fs`` mounted on the
    host target (one per filesystem per module), torn down at the end."""
    from harness.target import DiskSpec, TargetSpec, open_target
    from harness.workload.hostmount import MkfsSpec, make_image
    from harness.workload.ontarget import session

    stack: dict[str, tuple[object, object]] = {}

    def get(fs: str) -> object:
        need_fs(fs)
        if fs not in stack:
            d = tmp_path_factory.mktemp(f"session-{fs}")
            make_image(d / "fs.img", MkfsSpec(fs=fs))
            t = open_target(TargetSpec(kind="host"), [DiskSpec(d / "fs.img", fs)])
            t.__enter__()
            t.mount(t.disks[0])
            stack[fs] = (session(t, t.disks[0]), t)
        return stack[fs][0]

    yield get
    for s, t in stack.values():
        s.close()  # type: ignore[attr-defined]
        t.__exit__(None, None, None)  # type: ignore[attr-defined]
