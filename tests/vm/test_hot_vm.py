"""Issue 10 on a real kernel: the hot-data trace recorded in a guest (``fsoracle hot trace``)
against the guest driver's own log, and the relocation bench (``fsoracle hot bench``).

Independent sides: the driver logs every read/write it issued (file, inode from fstat,
offset, length); the trace comes from kprobe events in the kernel. Expected write lengths
are page arithmetic on the driver's writes; the bench's moved files are checked against
the driver's own per-file read counts and against ``fsoracle hot temp`` on the trace.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from model.hotdata.trace import parse_trace

PAGE = 4096
Run = Callable[..., CompletedProcess[str]]


def _btf_args(spec: str) -> bool:
    from vm.kernels import resolve_kernel

    return resolve_kernel(spec).config_value("PROBE_EVENTS_BTF_ARGS") == "y"


def _log(path: Path) -> list[tuple[str, str, int, int, int]]:
    out = []
    for line in path.read_text().splitlines():
        op, name, ino, off, length = line.split()
        out.append((op, name, int(ino), int(off), int(length)))
    return out


@pytest.mark.vm
@pytest.mark.timeout(300)
def test_hot_trace_mixed_matches_driver_log(
    vm_tools: None, kernel_spec: str, fsoracle: Run, tmp_path: Path
) -> None:
    out, dlog = tmp_path / "t.jsonl", tmp_path / "driver.log"
    p = fsoracle(
        "hot", "trace", "--workload", "mixed", "--kernel", kernel_spec,
        "--out", str(out), "--driver-log", str(dlog),
    )  # fmt: skip
    if not _btf_args(kernel_spec):  # 6.1: refused before booting, one line, status 2
        assert p.returncode == 2 and "PROBE_EVENTS_BTF_ARGS" in p.stderr
        return
    assert p.returncode == 0, p.stderr[-3000:]
    trace = parse_trace(out.read_text().splitlines())
    log = _log(dlog)
    assert len(log) == 13
    # reads: same (inode, offset, length) multiset, and the same count per inode
    want_r = Counter((ino, off, n) for op, _, ino, off, n in log if op == "R")
    got_r = Counter((e.inode, e.offset, e.length) for e in trace.events if e.op == "read")
    assert got_r == want_r
    # writes: one writeback per pwrite+fsync, of the pages that pwrite dirtied, in order
    for ino in {i for _, _, i, _, _ in log}:
        want_w = [
            ((off + n + PAGE - 1) // PAGE - off // PAGE) * PAGE
            for op, _, i, off, n in log
            if op == "W" and i == ino
        ]
        got_w = [e.length for e in trace.events if e.op == "write" and e.inode == ino]
        assert got_w == want_w, ino
    # the order of the driver's ops is the order of the trace's events
    kinds = [("read" if op == "R" else "write", ino) for op, _, ino, _, _ in log]
    assert [(e.op, e.inode) for e in trace.events] == kinds
    # file records: the driver's names and sizes
    assert {r.path for r in trace.files.values()} == {"m0", "m1", "m2"}
    assert trace.files[min(trace.files)].size == 64 * PAGE  # m0: 64 pages, rewritten inside
    # model times are CLOCK_REALTIME: within a day of the host's clock
    assert abs(trace.events[0].time_ns - time.time_ns()) < 86400 * 10**9
    assert trace.header.clock == "monotonic" and trace.header.time_offset_ns > 0


@pytest.mark.vm
@pytest.mark.timeout(420)
def test_hot_bench_smoke(vm_tools: None, kernel_spec: str, fsoracle: Run, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    p = fsoracle(
        "hot", "bench", "--preset", "hot_bench:smoke", "--kernel", kernel_spec, "--out", str(out)
    )
    if not _btf_args(kernel_spec):
        assert p.returncode == 2 and "PROBE_EVENTS_BTF_ARGS" in p.stderr
        return
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "result.json").read_text())
    ph = {x["name"]: x for x in res["phases"]}
    # the moved hot files make the same reads faster than with everything on the slow disk
    assert ph["after"]["iops"] > 1.5 * ph["before"]["iops"], ph
    # 20 % of 64 files of 1 MiB = 12.8 MiB: 12 whole files
    assert len(res["moved"]) == 12 and res["moved_bytes"] == 12 * 2**20
    # independent: the driver's own phase-1 read counts per file; the 3 hottest are moved
    counts = Counter(name for op, name, *_ in _log(out / "phase1-driver.log") if op == "R")
    assert sum(counts.values()) == 1500
    assert {n for n, _ in counts.most_common(3)} <= set(res["moved"])
    # the moved files are the hottest inodes by `fsoracle hot temp` over the recorded trace
    t = fsoracle("hot", "temp", "--trace", str(out / "phase1.jsonl"), "--json")
    assert t.returncode == 0, t.stderr
    temps = {r["inode"]: r["temp"] for r in json.loads(t.stdout)["inodes"]}
    trace = parse_trace((out / "phase1.jsonl").read_text().splitlines())
    ino = {r.path: i for i, r in trace.files.items()}
    moved = {ino[n] for n in res["moved"]}
    assert min(temps[i] for i in moved) >= max(temps[i] for i in temps if i not in moved)
    assert (out / "hot-bench.png").stat().st_size > 0
    assert "| measured" in (out / "report.md").read_text()


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hot_bench_full_preset(
    vm_tools: None, kernel_spec: str, fsoracle: Run, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    p = fsoracle("hot", "bench", "--kernel", kernel_spec, "--out", str(out), timeout=900)
    if not _btf_args(kernel_spec):
        assert p.returncode == 2 and "PROBE_EVENTS_BTF_ARGS" in p.stderr
        return
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "result.json").read_text())
    assert res["trace_matches_driver"]
    assert res["measured_speedup"] > 2.0
    assert res["moved_bytes"] <= 0.2 * 2**30
