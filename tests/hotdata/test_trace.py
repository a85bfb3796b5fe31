"""The JSONL trace format, the block-layer reverse map, and the timer replay."""

from __future__ import annotations

import pytest

from model.errors import FormatError
from model.hotdata.constants import RANGE_SIZE, TYPE_NONROT
from model.hotdata.freq import hot_temp_bucket, hot_temp_calc
from model.hotdata.replay import ReplayConfig, replay_trace
from model.hotdata.trace import (
    FiemapExtent,
    FileExtentMap,
    HotEvent,
    Trace,
    TraceHeader,
    format_trace,
    parse_trace,
)

S = 10**9

HEADER = (
    '{"format": "fsoracle-hot-trace", "version": 1, "clock": "monotonic", '
    '"time_offset_ns": 1000, "source": "test", "kernel": "6.12"}'
)
GOOD = (
    HEADER
    + """
# a comment
{"op": "file", "inode": 257, "size": 3000000, "path": "a"}
{"time_ns": 50, "op": "read", "inode": 257, "offset": 4096, "length": 4096}
{"time_ns": 20, "op": "write", "inode": 258, "offset": 0, "length": 8192}

{"time_ns": 50, "op": "delete", "inode": 258}
"""
)


def test_parse_good_trace() -> None:
    t = parse_trace(GOOD.splitlines(keepends=True))
    assert t.header.clock == "monotonic" and t.header.source == "test"
    assert t.header.extra == {"kernel": "6.12"}
    # sorted by time, offset applied, equal times keep file order
    assert [(e.time_ns, e.op, e.inode) for e in t.events] == [
        (1020, "write", 258),
        (1050, "read", 257),
        (1050, "delete", 258),
    ]
    assert t.sizes() == {257: 3000000, 258: 8192}
    assert t.mount_time_ns == 1020


def test_roundtrip() -> None:
    t = parse_trace(GOOD.splitlines())
    again = parse_trace(format_trace(t))
    assert again.events == t.events
    assert again.files == t.files
    assert again.header == t.header


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"time_ns": 1, "op": "read", "inode": 1, "offset": -1, "length": 1}', "'offset'"),
        ('{"time_ns": 1, "op": "read", "inode": 1, "offset": 0}', "'length'"),
        ('{"time_ns": 1, "op": "seek", "inode": 1}', "op 'seek'"),
        ('{"time_ns": 1.5, "op": "read", "inode": 1, "offset": 0, "length": 1}', "'time_ns'"),
        (
            '{"time_ns": 1, "op": "read", "inode": 1, '
            '"offset": 9223372036854775000, "length": 1000}',
            "2^63",
        ),
        (
            '{"op": "file", "inode": 1, "size": 1}\n{"format": "fsoracle-hot-trace", "version": 1}',
            "first",
        ),
        ('{"format": "fsoracle-hot-trace", "version": 2}', "version 2"),
        ('{"format": "fsoracle-hot-trace", "version": 1, "clock": "tai"}', "clock"),
        ('{"format": "other"}', "format"),
    ],
)
def test_bad_lines_raise_format_error(text: str, what: str) -> None:
    with pytest.raises(FormatError) as ei:
        parse_trace(text.splitlines(keepends=True))
    assert ei.value.structure == "hot trace"
    assert what in str(ei.value)


def test_error_offset_is_the_line_start() -> None:
    lines = ['{"op": "file", "inode": 1, "size": 1}\n', "oops\n"]
    with pytest.raises(FormatError) as ei:
        parse_trace(lines)
    assert ei.value.offset == len(lines[0])
    assert "line 2" in str(ei.value)


def test_extent_map_back_to_files() -> None:
    m = FileExtentMap(
        [
            FiemapExtent(inode=257, logical=0, physical=1 << 20, length=65536),
            FiemapExtent(inode=258, logical=8192, physical=(1 << 20) + 65536, length=4096),
        ]
    )
    # a request from 4 KiB before the first extent to 4 KiB past the second one
    got = m.to_file((1 << 20) - 4096, 4096 + 65536 + 4096 + 4096)
    assert got == [(257, 0, 65536), (258, 8192, 4096)]
    assert m.to_file((1 << 20) + 4096, 512) == [(257, 4096, 512)]
    assert m.to_file(0, 4096) == []


def _trace(events: list[HotEvent], sizes: dict[int, int] | None = None) -> Trace:
    from model.hotdata.trace import FileRecord

    files = {i: FileRecord(i, s) for i, s in (sizes or {}).items()}
    return Trace(TraceHeader(mount_time_ns=0), sorted(events, key=lambda e: e.time_ns), files)


def test_replay_without_timers_is_just_the_updates() -> None:
    evs = [HotEvent(1000, "read", 257, 0, 4096)]
    res = replay_trace(_trace(evs), ReplayConfig(timers=False))
    hr = res.root.inodes[257].ranges[0]
    assert res.worker_runs == 0 and not hr.in_list
    assert hot_temp_calc(hr.freq, 1000) == 2149711871  # as in test_freq


def test_timers_worker_every_150s_and_kthread_every_120s() -> None:
    # one range written once at 1 s and read 3000 times from 2 s (clock near boot), looked
    # at by the worker at 150 s:
    #   nrr = 3000 * 2^17 = 393216000, nrw = 2^17 = 131072
    #   ltr: last read 147.997 s ago >> 30 = 137 -> (2^32 - 137) >> 2 = 1073741789
    #   ltw: last write 149 s ago >> 30 = 138    -> (2^32 - 138) >> 2 = 1073741789
    #   sum so far 2540830650; avr + avw add at most 2 * 2097151 -> <= 2545024952
    #   151 * 2^24 = 2533359616 <= temp < 152 * 2^24 = 2550136832: bucket 151
    evs = [HotEvent(1 * S, "write", 257, 0, RANGE_SIZE)]
    evs += [HotEvent(2 * S + i * 1000, "read", 257, 0, 4096) for i in range(3000)]
    tr = _trace(evs, {257: RANGE_SIZE})
    res = replay_trace(
        tr,
        ReplayConfig(nonrot_total=100 * RANGE_SIZE, until_ns=250 * S),
    )
    hr = res.root.inodes[257].ranges[0]
    assert hot_temp_bucket(hot_temp_calc(hr.freq, 150 * S)) == 151
    # kthread at 0 (run 2), 120 s (run 3), 240 s (run 4); worker at 150 s only
    assert [r.run for r in res.runs] == [2, 3, 4]
    assert res.worker_runs == 1
    # at 0 s and 120 s the heat map is still empty (first worker run at 150 s)
    assert [r.moved_to_ssd for r in res.runs] == [0, 0, 1]
    assert hr.storage_type == TYPE_NONROT
    assert res.reloc is not None and res.reloc.nonrot_used == RANGE_SIZE


def test_moves_are_written_back_and_counted() -> None:
    evs = [HotEvent(1 * S, "write", 257, 0, RANGE_SIZE)]
    evs += [HotEvent(2 * S + i * 1000, "read", 257, 0, 4096) for i in range(3000)]
    res = replay_trace(
        _trace(evs, {257: RANGE_SIZE}),
        ReplayConfig(nonrot_total=100 * RANGE_SIZE, until_ns=300 * S, rewrite_delay_ns=30 * S),
    )
    hr = res.root.inodes[257].ranges[0]
    # moved at 240 s, written back at 270 s: a second write
    assert res.rewrites == 1
    assert hr.freq.nr_writes == 2 and hr.freq.last_write_time == 270 * S


def test_delete_event_forgets_the_inode() -> None:
    evs = [HotEvent(1, "read", 257, 0, 1), HotEvent(2, "delete", 257)]
    res = replay_trace(_trace(evs), ReplayConfig(timers=False))
    assert res.root.inodes == {}
