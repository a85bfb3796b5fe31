# ruff: noqa: E501  (trace lines kept exactly as the kernel prints them)
"""Host-side parsing of the guest's hot-data probes (no VM).

The trace lines below are in the format a 6.12 guest printed for the probes of
``harness.hot.trace.PROBES_BTF`` (tracefs ``trace`` with the ``mono`` clock: task-pid, CPU,
flags, ``SECS.USECS``, event name, probe address, then the fetched ``name=value`` args).
Expected values are worked out by hand from those lines.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import UserError
from harness.hot.config import load_variant
from harness.hot.trace import (
    LogEntry,
    check_reads,
    hot_events,
    mixed_ops,
    parse_driver_log,
    parse_trace_lines,
)
from model.hotdata.trace import HotEvent, Trace, TraceHeader, format_trace, parse_trace

LLONG_MAX = 9223372036854775807
TEXT = """\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
         python3-294     [001] .....     9.597475: wb: (do_writepages+0x4/0x280) ino=257 dev=27 idx=0 nr=9223372036854775807
         python3-294     [001] .....     9.610754: wbret: (filemap_fdatawrite_wbc+0x63/0x90 <- do_writepages) ino=257 dev=27 nr=9223372036854775743
         python3-294     [001] .....     9.622238: wb: (do_writepages+0x4/0x280) ino=1 dev=27 idx=0 nr=9223372036854775807
         python3-294     [001] .....     9.623903: wbret: (filemap_fdatawrite_wbc+0x63/0x90 <- do_writepages) ino=1 dev=27 nr=9223372036854775803
    kworker/u8:1-31      [000] .....     9.700000: wb: (do_writepages+0x4/0x280) ino=258 dev=27 idx=64 nr=9223372036854775807
         python3-294     [001] .N...    10.174228: dread: (btrfs_direct_read+0x4/0x200 [btrfs]) ino=257 dev=27 pos=20480 len=4096
    kworker/u8:1-31      [000] .....     9.800000: wbret: ([unknown/kretprobe'd] <- do_writepages) ino=258 dev=27 nr=9223372036854775807
              dd-312     [000] .....    10.200001: dread: (btrfs_direct_read+0x4/0x200 [btrfs]) ino=257 dev=28 pos=0 len=4096
              dd-312     [000] .....    10.300000: dread: (btrfs_direct_read+0x4/0x200 [btrfs]) ino=259 dev=27 pos=1048576 len=16384
         python3-294     [001] .....    11.000000: wbret: (x+0x1/0x2 <- do_writepages) ino=259 dev=27 nr=5
"""


def test_parse_lines_times_and_args() -> None:
    raw = parse_trace_lines(TEXT)
    assert [r.event for r in raw] == [
        "wb",
        "wbret",
        "wb",
        "wbret",
        "wb",
        "dread",
        "wbret",
        "dread",
        "dread",
        "wbret",
    ]
    first = raw[0]
    assert first.time_ns == 9 * 10**9 + 597475 * 1000
    assert first.pid == 294
    assert first.args == {"ino": 257, "dev": 27, "idx": 0, "nr": LLONG_MAX}
    kw = raw[4]  # a task name with '/' and ':' in it
    assert kw.pid == 31 and kw.args["idx"] == 64
    assert raw[5].time_ns == 10 * 10**9 + 174228 * 1000
    assert raw[5].args == {"ino": 257, "dev": 27, "pos": 20480, "len": 4096}


def test_hot_events_filters_pairs_and_offsets() -> None:
    off = 1_795_000_000_000_000_000
    d = hot_events(parse_trace_lines(TEXT), dev=27, time_offset_ns=off)
    assert d.events == [
        # 64 pages written by one fsync: nr_to_write went LLONG_MAX -> LLONG_MAX - 64
        HotEvent(off + 9_597_475_000, "write", 257, 0, 64 * 4096),
        HotEvent(off + 10_174_228_000, "read", 257, 20480, 4096),
        HotEvent(off + 10_300_000_000, "read", 259, 1 << 20, 16384),
    ]
    assert d.empty_writebacks == 1  # inode 258's flusher call wrote nothing
    assert d.other_dev == 1  # the dev=28 read
    assert d.unpaired_returns == 1  # pid 294's last return has no entry left
    assert d.unfinished_calls == 0


def test_hot_events_writeback_offset_is_writeback_index() -> None:
    text = (
        "  t-5 [000] ..... 1.000000: wb: (do_writepages+0x4/0x280) ino=300 dev=7 idx=10 "
        "nr=1024\n"
        "  t-6 [001] ..... 1.000001: wb: (do_writepages+0x4/0x280) ino=301 dev=7 idx=0 "
        "nr=1024\n"
        "  t-5 [000] ..... 1.000002: wbret: (a <- do_writepages) ino=300 dev=7 nr=1021\n"
        "  t-6 [001] ..... 1.000003: wbret: (a <- do_writepages) ino=301 dev=7 nr=1000\n"
    )
    d = hot_events(parse_trace_lines(text), dev=7, time_offset_ns=0)
    assert d.events == [
        HotEvent(1_000_000_000, "write", 300, 10 * 4096, 3 * 4096),
        HotEvent(1_000_001_000, "write", 301, 0, 24 * 4096),
    ]


def test_driver_log_and_check_reads() -> None:
    log = parse_driver_log("R f00001 258 4096 4096\nW m0 257 0 8192\nR f00001 258 4096 4096\n")
    assert log[1] == LogEntry("W", "m0", 257, 0, 8192)
    ev = [HotEvent(1, "read", 258, 4096, 4096), HotEvent(2, "read", 258, 4096, 4096)]
    t = Trace(TraceHeader(), ev, {})
    assert check_reads(t, log) == []
    t1 = Trace(TraceHeader(), ev[:1], {})
    assert check_reads(t1, log) == ["read inode 258 @4096+4096: trace 1, driver 2"]
    with pytest.raises(ValueError):
        parse_driver_log("X a 1 2 3\n")


def test_trace_header_round_trip_monotonic_clock() -> None:
    """A guest trace keeps monotonic times and the realtime offset; the model sees realtime."""
    hdr = TraceHeader(clock="monotonic", time_offset_ns=1000, mount_time_ns=5, source="g")
    t = Trace(hdr, [HotEvent(1010, "read", 257, 0, 4096)], {})
    lines = format_trace(t)
    assert '"time_ns":10' in lines[1]
    back = parse_trace(lines)
    assert back.events[0].time_ns == 1010 and back.mount_time_ns == 1005


def test_mixed_ops_are_page_aligned_direct_reads() -> None:
    for kind, _name, off, length in mixed_ops():
        if kind == "R":
            assert off % 4096 == 0 and length % 4096 == 0


def test_variants() -> None:
    base = load_variant("hot_bench")
    smoke = load_variant("hot_bench:smoke")
    assert "variants" not in base
    assert smoke["name"] == "hot_bench:smoke"
    assert smoke["workload"]["files"] == 64
    # everything the smoke variant does not name is the registered preset's
    assert smoke["devices"] == base["devices"]
    assert smoke["workload"]["zipf_exponent"] == base["workload"]["zipf_exponent"] == 0.99
    assert base["workload"]["files"] == 1024 and base["workload"]["measure_seconds"] == 30
    with pytest.raises(UserError):
        load_variant("hot_bench:nope")


@pytest.mark.parametrize(
    "args",
    [
        ["hot", "bench", "--preset", "no_such_preset"],
        ["hot", "bench", "--preset", "hot_bench:nope"],
        ["hot", "bench", "--kernel", "debian:9.99"],
        ["hot", "trace", "--workload", "mixed", "--kernel", "path:/no/such", "--out", "x"],
    ],
)
def test_bad_input_one_line_exit_2(args: list[str], tmp_path: object) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("fsoracle: ")
