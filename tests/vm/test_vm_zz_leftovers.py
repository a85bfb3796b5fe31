"""Runs last in tests/vm (file order): nothing the VM tests started may be left running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vm.net import NETNS_PREFIX


def children_named(prefix: str) -> list[str]:
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == me and comm.startswith(prefix):
            found.append(f"{stat.parent.name} {comm}")
    return found


@pytest.mark.vm
def test_no_qemu_process_or_namespace_of_ours_is_left() -> None:
    assert children_named("qemu-system") == []
    ours = (f"{NETNS_PREFIX}{os.getpid()}-", f"fsotest-decoy-{os.getpid()}")
    run_netns = Path("/run/netns")
    left = [p.name for p in run_netns.iterdir()] if run_netns.is_dir() else []
    assert [n for n in left if n.startswith(ours)] == []
