"""Records, ranges and the heat map (2013 semantics), aging (2012) and eviction."""

from __future__ import annotations

import pytest

from model.hotdata.constants import RANGE_SIZE, TYPE_INODE, TYPE_RANGE
from model.hotdata.freq import hot_temp_bucket, hot_temp_calc
from model.hotdata.tracking import (
    HotInfo,
    hot_inode_item_delete,
    hot_item_evict,
    hot_map_update,
    hot_temp_cmp,
    hot_update_freqs,
    hot_update_worker,
)

MiB = RANGE_SIZE
S = 10**9


@pytest.mark.parametrize(
    ("start", "length", "ranges"),
    [
        # end = (start + len + 2^20 - 1) >> 20, cur = start >> 20
        (0, 4096, [0]),  # end = (4096 + 2^20 - 1) >> 20 = 1
        (MiB - 1, 2, [0, 1]),  # end = (2^20 + 1 + 2^20 - 1) >> 20 = 2
        (MiB, MiB, [1]),  # end = (3 * 2^20 - 1) >> 20 = 2
        (5 * MiB + 7, 3 * MiB, [5, 6, 7, 8]),  # end = (9 * 2^20 + 6) >> 20 = 9
        (0, 1, [0]),
    ],
)
def test_ranges_touched(start: int, length: int, ranges: list[int]) -> None:
    root = HotInfo()
    hot_update_freqs(root, 300, start, length, False, 10)
    he = root.inodes[300]
    assert sorted(he.ranges) == ranges
    assert he.freq.nr_reads == 1
    assert all(hr.freq.nr_reads == 1 and hr.freq.last_read_time == 10 for hr in he.ranges.values())
    assert all(hr.start == i * MiB and hr.len == MiB for i, hr in he.ranges.items())


def test_zero_length_allocates_nothing() -> None:
    root = HotInfo()
    hot_update_freqs(root, 300, 0, 0, True, 10)
    assert root.inodes == {}


def test_write_counts_per_range_and_inode() -> None:
    root = HotInfo()
    # one writeback of [0, 3 MiB) and one read of the last byte of range 1
    hot_update_freqs(root, 7, 0, 3 * MiB, True, 100)
    hot_update_freqs(root, 7, 2 * MiB - 1, 1, False, 200)
    he = root.inodes[7]
    assert (he.freq.nr_writes, he.freq.nr_reads) == (1, 1)
    assert [(hr.freq.nr_writes, hr.freq.nr_reads) for hr in he.iter_ranges()] == [
        (1, 0),
        (1, 1),
        (1, 0),
    ]


def test_new_records_are_not_on_the_map_until_the_worker() -> None:
    root = HotInfo()
    hot_update_freqs(root, 7, 0, 4096, False, 1000)
    assert not root.inodes[7].in_list
    assert all(not any(b) for t in root.hot_map for b in t)
    hot_update_worker(root, 1000)
    # temperature 2149711871 (test_freq: one read, small clock) -> bucket 128
    he = root.inodes[7]
    hr = he.ranges[0]
    assert he.in_list and hr.in_list
    assert root.bucket(TYPE_INODE, 128) == [he]
    assert root.bucket(TYPE_RANGE, 128) == [hr]
    assert hr.freq.last_temp == 2149711871


def test_bucket_zero_records_are_never_listed() -> None:
    # read once at t = 0, looked at 2^62 ns later: ltr = ltw = 0 (ages >= 2^62),
    # nrr = 131072; the first read at t = 0 leaves avg_delta_reads = (2^64 - 15 + 0) >> 4
    # = 2^60 - 1, so avr = (2^64 - 1 - (2^60 - 1)) >> 40 >> 3 = (15 * 2^60 >> 40) >> 3
    # = 15 * 2^17; avw = 0:
    # temp = 131072 + 1966080 = 2097152 -> bucket 0 == bucket of last_temp 0 -> not listed.
    root = HotInfo()
    hot_update_freqs(root, 9, 0, 1, False, 0)
    hr = root.inodes[9].ranges[0]
    assert hot_temp_calc(hr.freq, 2**62) == 131072 + 15 * 2**17
    hot_update_worker(root, 2**62)
    assert not hr.in_list and not root.inodes[9].in_list
    assert root.bucket(TYPE_RANGE, 0) == []


def test_last_temp_is_only_refreshed_on_a_bucket_change() -> None:
    root = HotInfo()
    hot_update_freqs(root, 7, 0, 4096, False, 1000)
    hot_update_worker(root, 1000)
    hr = root.inodes[7].ranges[0]
    first = hr.freq.last_temp
    # 10 more reads: + 10 * 2^17 of count heat, still bucket 128 -> last_temp stale
    for i in range(10):
        hot_update_freqs(root, 7, 0, 4096, False, 1001 + i)
    hot_update_worker(root, 1010)
    assert hot_temp_bucket(hot_temp_calc(hr.freq, 1010)) == 128
    assert hr.freq.last_temp == first
    # 128 more reads: + 2^24 -> bucket 129: moved, last_temp refreshed
    for i in range(128):
        hot_update_freqs(root, 7, 0, 4096, False, 2000 + i)
    hot_update_worker(root, 2127)
    assert hot_temp_bucket(hr.freq.last_temp) == 129
    assert root.bucket(TYPE_RANGE, 129) == [hr]
    assert root.bucket(TYPE_RANGE, 128) == []


def test_worker_sorts_each_bucket_hottest_first_and_stably() -> None:
    root = HotInfo()
    # three files read 1, 3, 3 times at t = 1000: all bucket 128
    for ino, n in ((10, 1), (11, 3), (12, 3)):
        for _ in range(n):
            hot_update_freqs(root, ino, 0, 4096, False, 1000)
    hot_update_worker(root, 1000)
    order = [hr.i_ino for hr in root.bucket(TYPE_RANGE, 128)]
    assert order == [11, 12, 10]


def test_temp_cmp_reads_the_u32_difference_as_int() -> None:
    root = HotInfo()
    hot_update_freqs(root, 1, 0, 1, False, 0)
    hot_update_freqs(root, 2, 0, 1, False, 0)
    a, b = root.inodes[1], root.inodes[2]
    a.freq.last_temp, b.freq.last_temp = 0x2000_0000, 0x1000_0000
    assert hot_temp_cmp(a, b) == -1  # a hotter: first
    # 0xF0000000 - 0x10000000 = 0xE0000000 -> negative as int: "colder" (never happens
    # within one bucket, where the top 8 bits are equal)
    a.freq.last_temp, b.freq.last_temp = 0xF000_0000, 0x1000_0000
    assert hot_temp_cmp(a, b) == 1
    assert hot_temp_cmp(a, a) == 0


def test_aging_2012_drops_idle_ranges_only() -> None:
    root = HotInfo()
    hot_update_freqs(root, 5, 0, 2 * MiB, False, 1 * S)
    hot_update_freqs(root, 5, 0, 1, False, 200 * S)  # range 0 read again at 200 s
    kick = 300 * S
    hot_update_worker(root, 301 * S, kick)  # range 1 idle 300 s exactly: kept
    assert sorted(root.inodes[5].ranges) == [0, 1]
    hot_update_worker(root, 301 * S + 1, kick)  # range 1 idle > 300 s: dropped
    assert sorted(root.inodes[5].ranges) == [0]
    assert root.inodes[5].in_list  # the 2012 code ages ranges, not inodes


def test_no_aging_in_2013() -> None:
    root = HotInfo()
    hot_update_freqs(root, 5, 0, 1, False, 1 * S)
    hot_update_worker(root, 10**6 * S)
    assert sorted(root.inodes[5].ranges) == [0]


def test_evict_frees_coldest_inodes_with_their_ranges() -> None:
    root = HotInfo()
    hot_update_freqs(root, 1, 0, 3 * MiB, False, 1000)  # 1 read: bucket 128
    for _ in range(200):
        hot_update_freqs(root, 2, 0, 1, False, 1000)  # 200 reads: bucket 129
    hot_update_worker(root, 1000)
    assert root.hot_cnt() == 1 + 3 + 1 + 1
    # work 2: the coldest inode (1) goes with its 3 ranges: 4 freed, budget exhausted
    assert hot_item_evict(root, 2) == 4
    assert sorted(root.inodes) == [2]
    assert root.bucket(TYPE_RANGE, 128) == []
    assert hot_item_evict(root, 100) == 2
    assert root.inodes == {}


def test_delete_unlinks_from_map_and_tree() -> None:
    root = HotInfo()
    hot_update_freqs(root, 3, 0, 1, True, 1000)
    hot_update_worker(root, 1000)
    hr = root.inodes[3].ranges[0]
    hot_inode_item_delete(root, 3)
    assert root.inodes == {} and hr.deleting and not hr.in_list
    assert all(not any(b) for t in root.hot_map for b in t)
    # a deleted record is never re-listed: at 10^18 ns its bucket differs from 128
    # (the write is 10^18 ns old: ltw = (2^32 - 931322574) >> 2), and hot_map_update
    # reports the deletion instead of listing it
    assert hot_temp_bucket(hot_temp_calc(hr.freq, 10**18)) != 128
    assert hot_map_update(root, hr, 10**18) is True
    assert not hr.in_list
