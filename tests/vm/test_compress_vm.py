"""Issue 8's case table on the stock kernels, against the compression model.

One boot per kernel runs the whole table (``harness/compress/config.py``; one small btrfs
image per case, attached as its own virtio disk): the guest does each case's pwrite/fsync
sequence with the deterministic data of ``model/btrfs/datapattern.py`` (shipped verbatim)
and unmounts; the host then reads each image with our reader and with ``dump-tree``.
Expected values are the model's predictions for that kernel (6.1 or 6.12 rules); the
real kernel is the independent side.

Determinism. The layout depends on the order in which the async compression workers and
the flusher reach the delalloc ranges, so the deterministic run has one vCPU, mounts with
``thread_pool=1`` (one btrfs-delalloc worker: chunks are compressed one at a time, in queue
order) and keeps the flusher away during the ops (``dirty_writeback_centisecs`` an hour,
not 0: with 0 the flusher wakes as soon as the file is first dirtied and writes it back
between the case's writes, see ``harness/compress/guest.py``). The trace shows it: no
flusher writeback of the file before the unmount. Under those conditions the kernel's
layout is the model's eager schedule on every case.

The race. With two vCPUs and the default thread pool, 6.1's seed case on a new file can
end differently: the worker compressing [8K,128K) reads the NOCOMPRESS flag before the
worker compressing the lone block [0,4K) sets it, so [8K,128K) is compressed and only the
write after the fsync goes plain. ``enumerate_outcomes`` lists every result over the
schedules that differ in that order; the racy run (a second boot, the cases with more than
one schedule) asserts the kernel's result is one of them and reports which.

Ordered extents: the guest traces ``btrfs_ordered_extent_add`` / ``_remove`` / ``_split``
for the file in a tracefs instance per case (fetched from the target); the
model's async path must add and finish the same ordered extents (file offset, length,
compression type; the disk length within a sector), with no split.
"""

from __future__ import annotations

import pytest
from vmtesting import _missing, require_tools

from harness.compress.compare import compare_case, compare_ordered, layout
from harness.compress.config import CASES, Case, parse_ops
from harness.compress.experiment import VmRun, run_vm_cases
from harness.compress.kernel_zstd import KERNEL_ZSTANDARD, available, compress_fn_for
from harness.compress.render import render_run
from model.btrfs import compression as Z
from model.btrfs.compress_predict import enumerate_outcomes
from model.linux import SZ_4K

pytestmark = pytest.mark.vm

RACY_CASES = [
    c
    for c in CASES
    if c.name in ("seed-new-text", "seed-new-zeros", "seed-existing-text", "text-640K")
]
_RUNS: dict[tuple[str, str], VmRun | BaseException] = {}


def _run(kernel_spec: str, mode: str, tmp: pytest.TempPathFactory) -> VmRun:
    """One boot per (kernel, mode) for the whole session; a failed boot fails every test
    that needs it without booting again."""
    key = (kernel_spec, mode)
    if key not in _RUNS:
        require_tools("mkfs.btrfs", "btrfs")
        wd = tmp.mktemp(f"compress-{mode}-{kernel_spec.replace(':', '-')}")
        try:
            if mode == "deterministic":
                run = run_vm_cases(kernel_spec, CASES, wd, cpus=1, extra_opts="thread_pool=1")
            else:
                run = run_vm_cases(kernel_spec, RACY_CASES, wd, cpus=2, extra_opts="")
            print("\n" + render_run(run))
            _RUNS[key] = run
        except BaseException as e:  # remembered: the other cases fail fast
            _RUNS[key] = e
            raise
    got = _RUNS[key]
    if isinstance(got, BaseException):
        pytest.fail(f"the {mode} run on {kernel_spec} failed: {got!r}")
    return got


def _result(run: VmRun, case: Case):  # type: ignore[no-untyped-def]
    res = run.results[case.name]
    assert res.status == "ok" and res.result is not None, (res.status, res.error)
    return res


@pytest.mark.timeout(420)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_layout_matches_model(
    vm_tools: None, kernel_spec: str, case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = _run(kernel_spec, "deterministic", tmp_path_factory)
    kernel = Z.check_modelled_kernel(kernel_spec)
    res = _result(run, case)
    assert res.flusher_writebacks == 0, "the flusher wrote the file back during the ops"
    cmp = compare_case(kernel, case, res.result)
    # our reader and btrfs-progs agree on the items
    assert cmp.dump_tree_equal, (res.result.extents, res.result.dump_tree_extents)
    assert layout(res.result.extents) == layout(cmp.predicted.extents)
    assert res.result.inode_flags == cmp.predicted.inode_flags
    assert res.result.i_size == cmp.predicted.i_size
    for off, want, got in cmp.disk_off:
        e = next(e for e in cmp.predicted.extents if e.offset == off)
        assert not e.exact, f"@{off}: exact size {want} predicted, the kernel wrote {got}"
        assert abs(want - got) < SZ_4K, f"@{off}: {want} vs {got}: more than a sector"
    assert cmp.ok


@pytest.mark.timeout(420)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ordered_extents_match_model(
    vm_tools: None, kernel_spec: str, case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = _run(kernel_spec, "deterministic", tmp_path_factory)
    kernel = Z.check_modelled_kernel(kernel_spec)
    res = _result(run, case)
    oc = compare_ordered(kernel, case, res.trace)
    (m_add, k_add), (m_fin, k_fin) = oc.added, oc.finished
    assert sorted(k_add) == sorted(m_add)
    assert sorted(k_fin) == sorted(m_fin)
    assert sorted(k_add) == sorted(k_fin), "every ordered extent added was removed"
    assert oc.compression[1] == oc.compression[0]
    assert oc.splits == 0
    model_disk = {(p.file_offset, p.num_bytes): p.disk_num_bytes for p in oc.predicted}
    for e in res.trace:
        assert abs(e.disk_len - model_disk[(e.file_offset, e.length)]) < SZ_4K
        if e.compress_type == Z.BTRFS_COMPRESS_NONE:
            assert e.disk_len == e.length


@pytest.mark.timeout(420)
@pytest.mark.parametrize("case", RACY_CASES, ids=[c.name for c in RACY_CASES])
def test_racy_outcome_is_enumerated(
    vm_tools: None, kernel_spec: str, case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = _run(kernel_spec, "racy", tmp_path_factory)
    kernel = Z.check_modelled_kernel(kernel_spec)
    res = _result(run, case)
    outs = enumerate_outcomes(
        kernel,
        case.mount_opts,
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    got = (layout(res.result.extents), res.result.inode_flags)
    match = [o for o in outs if (layout(o.prediction.extents), o.prediction.inode_flags) == got]
    assert match, f"the kernel's {got} is none of the {len(outs)} enumerated outcomes"
    o = match[0]
    print(
        f"{kernel_spec} {case.name}: "
        + ("eager schedule" if o.eager else f"raced schedule ({o.schedules[0]})")
    )
    oc = compare_ordered(kernel, case, res.trace)
    assert sorted(e.file_offset for e in oc.trace if e.event == "add") == sorted(
        p.file_offset for p in o.ordered if p.event == "add"
    )


@pytest.mark.timeout(420)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zstd_sizes_are_the_kernels(
    vm_tools: None, kernel_spec: str, case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the kernel's zstd version (harness/compress/kernel_zstd.py) every zstd extent's size is
    predicted exactly, and its frame on disk is that library's output byte for byte."""
    kernel = Z.check_modelled_kernel(kernel_spec)
    if not available(kernel):
        version, release = KERNEL_ZSTANDARD[kernel]
        _missing(f"python-zstandard {release} (zstd {version}) for {kernel}: make deps")
    run = _run(kernel_spec, "deterministic", tmp_path_factory)
    res = _result(run, case)
    cmp = compare_case(kernel, case, res.result)
    for e in cmp.predicted.extents:
        if e.compression == "zstd":
            assert e.exact
    assert not [d for d in cmp.disk_off if cmp.predicted.extents and _is_zstd(cmp, d[0])]
    for off, model_len, kernel_len in cmp.payload_bytes:
        if _is_zstd(cmp, off):
            assert model_len == kernel_len, f"@{off}: zstd stream {model_len} vs {kernel_len}"
    assert all(res.result.zstd_byte_exact.values())


def _is_zstd(cmp, off: int) -> bool:  # type: ignore[no-untyped-def]
    return any(e.offset == off and e.compression == "zstd" for e in cmp.predicted.extents)
