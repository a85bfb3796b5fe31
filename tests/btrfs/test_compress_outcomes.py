"""The schedule enumeration, the ordered-extent prediction and the VM runner's parsers
(no VM: the VM half is tests/vm/test_compress_vm.py).

Expected values: the seed case's two 6.1 outcomes follow from inode.c (6.1
``compress_file_range`` marks the inode NOCOMPRESS after the lone block [0,4K) cannot save
a sector; ``inode_need_compress`` reads the flag when a chunk starts) and were both seen on
the real 6.1 (one vCPU + thread_pool=1: the eager one; two vCPUs: the raced one); the
ordered extents are the ops' ranges by arithmetic (128 KiB compressed-extent limit); the
trace files are real guest traces (``compress_traces/README.md``).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import zstandard

from harness.compress.config import CASES, SEED_OPS, parse_ops
from harness.compress.experiment import flusher_before_umount, parse_ordered_trace
from harness.compress.kernel_zstd import (
    KERNEL_ZSTANDARD,
    KernelZstd,
    available,
    compress_fn_for,
)
from model.btrfs import compression as Z
from model.btrfs.compress_predict import (
    PredictedOrdered,
    enumerate_outcomes,
    predict,
    predict_ordered_extents,
)
from model.btrfs.datapattern import pattern_bytes

K = 1024
TRACES = Path(__file__).parent / "compress_traces"


def _lay(p) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    return [(e.offset // K, e.compression) for e in p.extents]


def test_61_seed_case_has_two_outcomes() -> None:
    outs = enumerate_outcomes("6.1", "compress=zstd", parse_ops(SEED_OPS), "text")
    assert len(outs) == 2
    eager, raced = outs
    assert eager.eager and not raced.eager
    assert "eager" in eager.schedules
    # eager: [0,4K) sets NOCOMPRESS before [8K,128K) is looked at: everything plain
    assert _lay(eager.prediction) == [(0, "none"), (8, "none"), (256, "none")]
    assert eager.prediction.inode_flags == ["NOCOMPRESS"]
    # raced: [8K,128K) compressed before the flag is set; only the later write goes plain
    assert _lay(raced.prediction) == [(0, "none"), (8, "zstd"), (256, "none")]
    assert raced.prediction.inode_flags == ["NOCOMPRESS"]
    assert raced.schedules == ["flusher at 8K; compress [8K,128K)"]


def test_612_seed_case_has_one_outcome() -> None:
    """6.12 never sets NOCOMPRESS for a single block at offset 0, so no order matters."""
    outs = enumerate_outcomes("6.12", "compress=zstd", parse_ops(SEED_OPS), "text")
    assert len(outs) == 1 and outs[0].eager
    assert _lay(outs[0].prediction) == [(0, "none"), (8, "zstd"), (256, "zstd")]
    assert sum(len(o.schedules) for o in outs) == 3


def test_first_outcome_is_the_prediction() -> None:
    for c in CASES:
        if c.existing_size or c.data == "random":
            continue
        for k in Z.KERNELS:
            ops = parse_ops(c.ops)
            first = enumerate_outcomes(k, c.mount_opts, ops, c.data)[0]
            p = predict(k, c.mount_opts, ops, c.data)
            assert first.eager
            assert first.prediction.extents == p.extents, (c.name, k)
            assert first.prediction.inode_flags == p.inode_flags


def test_ordered_extents_of_the_seed_case() -> None:
    """Ordered extents: one per plain range and per compressed piece (<= 128 KiB); none
    for the existing file's own writeback; each finished once."""
    oes = predict_ordered_extents("6.12", "compress=zstd", parse_ops(SEED_OPS), "text")
    adds = [(p.file_offset // K, p.num_bytes // K, p.compression) for p in oes if p.event == "add"]
    assert adds == [(0, 4, 0), (8, 120, 3), (256, 128, 3)]
    fins = sorted((p.file_offset, p.num_bytes) for p in oes if p.event == "finish")
    assert fins == sorted((p.file_offset, p.num_bytes) for p in oes if p.event == "add")
    ex = predict_ordered_extents("6.1", "compress=zstd", parse_ops(SEED_OPS), "text", 1 << 20)
    assert [(p.file_offset // K, p.num_bytes // K) for p in ex if p.event == "add"] == [
        (0, 4),
        (8, 120),
        (256, 128),
    ]
    assert all(isinstance(p, PredictedOrdered) for p in ex)


def test_parse_ordered_trace_real_guest() -> None:
    """A real 6.1 guest trace of seed-new-text (two vCPUs): the fsync's writeback saw the
    NOCOMPRESS flag the worker had set for [0,4K) and wrote [8K,128K) plain itself, before
    the worker submitted [0,4K); the eager outcome's extents, in another order."""
    text = (TRACES / "6.1-seed-new-text-2cpu.trace").read_text()
    ev = parse_ordered_trace(text)
    assert [(e.event, e.file_offset // K, e.length // K, e.compress_type) for e in ev] == [
        ("add", 8, 120, 0),
        ("add", 0, 4, 0),
        ("remove", 8, 120, 0),
        ("remove", 0, 4, 0),
        ("add", 256, 128, 0),
        ("remove", 256, 128, 0),
    ]
    assert ev[0].flags == "REGULAR" and ev[0].disk_len == 122880
    assert ev[2].flags == "REGULAR|IO_DONE|COMPLETE"
    assert flusher_before_umount(text) == 0
    # the flusher's writeback at the unmount does show, after the marker
    after = text.split("fsoracle: umount", 1)[1]
    assert "writeback_single_inode_start" in after and " ino=257 " in after
    eager = enumerate_outcomes("6.1", "compress=zstd", parse_ops(SEED_OPS), "text")[0]
    assert sorted((e.file_offset, e.length) for e in ev if e.event == "add") == sorted(
        (p.file_offset, p.num_bytes) for p in eager.ordered if p.event == "add"
    )


def test_flusher_before_umount_counts_only_the_file() -> None:
    line = (
        "kworker/u4:0-12 [000] ..... 10.4: writeback_single_inode_start: bdi btrfs-1: "
        "ino={} state=I_DIRTY_PAGES dirtied_when=1 age=0 index=0 to_write=1 wrote=0"
    )
    text = "\n".join([line.format(258), line.format(257), "x: fsoracle: umount", line.format(257)])
    assert flusher_before_umount(text) == 1


def test_guest_driver_is_stdlib_only() -> None:
    """The guest has the standard library alone: the driver imports nothing else (the
    data pattern module is shipped beside it)."""
    src = Path(__file__).parents[2] / "harness" / "compress" / "guest.py"
    mods = set()
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert mods <= {"__future__", "json", "os", "subprocess", "sys", "time", "datapattern"}
    pattern = Path(__file__).parents[2] / "model" / "btrfs" / "datapattern.py"
    pmods = {
        n.names[0].name
        for n in ast.walk(ast.parse(pattern.read_text()))
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    assert pmods <= {"hashlib", "annotations"}


def _require_kernel_zstd(kernel: str) -> None:
    if not available(kernel):
        version, release = KERNEL_ZSTANDARD[kernel]
        msg = f"python-zstandard {release} (zstd {version}) is not installed (make deps)"
        if os.environ.get("FSORACLE_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.mark.parametrize(("kernel", "stream"), [("6.1", 43107), ("6.12", 42880)])
def test_kernel_zstd_reproduces_the_kernels_frame(kernel: str, stream: int) -> None:
    """The zstd stream the real kernel wrote for text-640K's first 128 KiB (read from the
    VM's image: 43107 bytes on 6.1, 42880 on 6.12) is the length the kernel-version
    library gives; the bundled zstd 1.5.7 gives another (42873), so the version matters."""
    _require_kernel_zstd(kernel)
    data = pattern_bytes("text", 0, 131072)
    with KernelZstd(kernel) as kz:
        assert len(kz.frame(data, 3)) == stream
    assert len(zstandard.ZstdCompressor(level=3, write_checksum=False).compress(data)) != stream
    fn = compress_fn_for(kernel)
    assert fn is not None
    p = predict(kernel, "compress=zstd", parse_ops("write 0 640K"), "text", compress_fn=fn)
    assert all(e.exact for e in p.extents)
    assert predict(kernel, "compress=zstd", parse_ops("write 0 640K"), "text").extents[0].exact is (
        tuple(zstandard.ZSTD_VERSION) == Z.KERNEL_ZSTD_VERSION[kernel]
    )
