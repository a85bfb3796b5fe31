"""Interim evidence on the HOST kernel (not 6.1 / 6.12: those are the VM half's job).

Each case of issue 8's table runs through the host kernel on a loop mount; the file's
extent items and inode flags, read back with our reader, must equal ``dump-tree``'s and
the prediction of the closest modelled kernel (6.12, compressor sizes of the host's zstd
1.5.7). Expected values come from the running kernel; the test fails on a kernel older
than 6.12, whose rules differ (see test_compression.py for 6.1's).

The kernel's layout is not deterministic from run to run: compression runs on async
workers while writeback moves on to the next dirty range, and which of them reaches a
range first decides, e.g., whether a lone first block goes inline compressed or plain
(seen under load: (0, regular, none) instead of (0, inline, zstd)). So each case runs up
to ``ATTEMPTS`` times on a fresh filesystem and passes when the kernel produces the
predicted layout in one of them; every outcome seen is in the failure message. A wrong
model fails every attempt; the btrfs-progs parity and the size checks hold on every run.
"""

from __future__ import annotations

import os

import pytest

from harness.compress.config import CASES, Case, parse_ops
from harness.compress.host import run_host_case
from model.btrfs.compress_predict import predict
from tests.tools import require_root, require_tool

ATTEMPTS = 4


def _host_version() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_host_kernel_matches_612_model(case: Case) -> None:
    require_root("loop mounts")
    require_tool("mkfs.btrfs")
    require_tool("btrfs")
    if _host_version() < (6, 12):
        pytest.fail(f"host kernel {os.uname().release} is older than the 6.12 rules")
    ops = parse_ops(case.ops)
    pred = predict("6.12", case.mount_opts, ops, case.data, case.existing_size, "6.18")
    want = [(e.offset, e.type, e.compression, e.ram_bytes, e.num_bytes) for e in pred.extents]
    seen = []
    for _ in range(ATTEMPTS):
        host = run_host_case(case.mount_opts, ops, case.data, case.existing_size)
        got = [(e.offset, e.type, e.compression, e.ram_bytes, e.num_bytes) for e in host.extents]
        seen.append((got, host.inode_flags))
        if got == want and host.inode_flags == pred.inode_flags:
            break
    else:
        pytest.fail(f"predicted {want} flags {pred.inode_flags}; the kernel gave {seen}")
    # our reader and btrfs-progs agree on the items
    assert host.dump_tree_extents == [
        (
            e.offset,
            e.type,
            e.compression,
            e.ram_bytes,
            e.num_bytes,
            e.disk_num_bytes if e.type == "regular" else e.inline_size,
        )
        for e in host.extents
    ]
    assert pred.i_size == host.i_size
    for p, h in zip(pred.extents, host.extents, strict=True):
        assert p.extent_offset == h.extent_offset
        if p.type == "inline":
            assert p.inline_size == h.inline_size
        elif p.exact:
            assert p.disk_num_bytes == h.disk_num_bytes
        else:  # zlib / lzo: userspace compressors, sizes within one sector
            assert abs(p.disk_num_bytes - h.disk_num_bytes) <= 4096
    # zstd: the on-disk frames are the bytes python-zstandard (zstd 1.5.7) produces
    assert all(host.zstd_byte_exact.values())
