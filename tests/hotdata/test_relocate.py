"""The 2013 btrfs relocation policy, run by run (expected values from hot_relocate.c's
constants: threshold 150, 250 items, high water 75 %, low water 50 %, +10 / -1, every
15th run, re-check every 30 moves)."""

from __future__ import annotations

import pytest

from model.hotdata.constants import (
    HOT_RELOC_THRESHOLD,
    RANGE_SIZE,
    STORAGE_UNKNOWN,
    TYPE_NONROT,
    TYPE_RANGE,
    TYPE_ROT,
)
from model.hotdata.freq import HotFreqData
from model.hotdata.relocate import (
    HotReloc,
    hot_calc_nonrot_ratio,
    hot_do_relocate,
    hot_relocate_extent,
    hot_update_threshold,
)
from model.hotdata.tracking import HotInfo, HotInodeItem, HotRangeItem

MiB = RANGE_SIZE


class Fs:
    """A heat map laid out by hand: ranges of 1 MiB files placed in given buckets."""

    def __init__(self, ssd_mib: int) -> None:
        self.root = HotInfo()
        self.reloc = HotReloc(nonrot_total=ssd_mib * MiB)
        self.sizes: dict[int, int] = {}
        self.next_ino = 257

    def add(
        self, bucket: int, n: int = 1, on_ssd: bool = False, storage: int | None = None
    ) -> list[HotRangeItem]:
        out = []
        for _ in range(n):
            ino = self.next_ino
            self.next_ino += 1
            he = HotInodeItem(freq=HotFreqData(flags=0), i_ino=ino)
            self.root.inodes[ino] = he
            hr = HotRangeItem(
                freq=HotFreqData(flags=TYPE_RANGE, last_temp=bucket << 24), i_ino=ino, start=0
            )
            he.ranges[0] = hr
            hr.in_list = True
            self.root.hot_map[TYPE_RANGE][bucket][hr] = None
            self.sizes[ino] = MiB
            if on_ssd:
                hr.storage_type = TYPE_NONROT
                self.reloc.on_ssd[(ino, 0)] = MiB
                self.reloc.nonrot_used += MiB
            elif storage is not None:
                hr.storage_type = storage
            out.append(hr)
        return out

    def run(self):  # type: ignore[no-untyped-def]
        return hot_do_relocate(self.root, self.reloc, self.sizes)


@pytest.mark.parametrize(
    ("thresh", "used", "update", "want_thresh"),
    [
        (150, 0, False, 150),  # ratio 0 < 75 and no update: unchanged
        (150, 0, True, 149),  # <= 50: -1
        (150, 50, True, 149),  # 50 <= 50: -1
        (150, 51, True, 150),  # between the water levels: unchanged
        (150, 74, False, 150),
        (150, 75, False, 160),  # >= 75 updates even without `update`: +10
        (250, 80, False, 256),  # 260 > 255 -> HEAT_MAX_VALUE + 1
        (0, 10, True, 0),  # -1 -> clamped to 0
        (256, 40, True, 255),
    ],
)
def test_update_threshold(thresh: int, used: int, update: bool, want_thresh: int) -> None:
    # total 100 MiB, so the ratio is `used` (integer percent)
    r = HotReloc(nonrot_total=100 * MiB, thresh=thresh, nonrot_used=used * MiB)
    assert hot_update_threshold(r, update) == used
    assert r.thresh == want_thresh


def test_ratio_is_integer_division() -> None:
    # 2 of 3 bytes: 200 / 3 = 66
    assert hot_calc_nonrot_ratio(HotReloc(nonrot_total=3, nonrot_used=2)) == 66


def test_no_ssd_nothing_moves() -> None:
    fs = Fs(ssd_mib=0)
    fs.add(bucket=200, n=5)
    run = fs.run()
    # ratio 101 >= 75 forces the update; 101 > 100 parks the threshold at 256;
    # buckets 255 down to 256: none -> nothing queued
    assert (run.ratio, run.thresh, run.queued_hot, run.moves) == (101, 256, 0, [])
    assert run.end == "nothing-hot"


def test_threshold_comes_down_every_15th_run() -> None:
    fs = Fs(ssd_mib=100)
    # run counter: starts at 1, incremented first: calls see run = 2, 3, ...; the update
    # happens when run % 15 == 0, i.e. on the 14th call, then every 15 calls
    threshes = [fs.run().thresh for _ in range(29)]
    assert threshes[:13] == [HOT_RELOC_THRESHOLD] * 13
    assert threshes[13] == HOT_RELOC_THRESHOLD - 1
    assert threshes[14:28] == [HOT_RELOC_THRESHOLD - 1] * 14
    assert threshes[28] == HOT_RELOC_THRESHOLD - 2


def test_at_most_250_per_run() -> None:
    fs = Fs(ssd_mib=10_000)
    fs.add(bucket=200, n=300)
    r1 = fs.run()
    assert (r1.queued_hot, r1.moved_to_ssd, r1.end) == (250, 250, "done")
    r2 = fs.run()
    assert (r2.queued_hot, r2.moved_to_ssd) == (50, 50)
    assert fs.reloc.nonrot_used == 300 * MiB


def test_queue_overruns_by_one_per_further_bucket() -> None:
    fs = Fs(ssd_mib=10_000)
    fs.add(bucket=200, n=250)
    for b in (199, 180, 151):
        fs.add(bucket=b)
    r = fs.run()
    # 250 from bucket 200, then each further non-empty bucket queues its first item before
    # the limit check: 253 queued; the move loop stops at count_to_cold = 250
    assert r.queued_hot == 253
    assert r.moved_to_ssd == 250
    assert r.end == "cold-limit"


def test_limit_is_checked_after_items_not_queued_too() -> None:
    fs = Fs(ssd_mib=10_000)
    fs.add(bucket=200, n=250)
    fs.add(bucket=199, on_ssd=True)  # first of bucket 199: already on the SSD, not queued
    late = fs.add(bucket=199)  # second: never looked at, the limit check broke the loop
    r = fs.run()
    assert r.queued_hot == 250
    assert late[0].storage_type == STORAGE_UNKNOWN


def test_stops_when_high_water_is_reached() -> None:
    fs = Fs(ssd_mib=40)
    fs.add(bucket=200, n=100)
    r = fs.run()
    # after 30 moves 30 of 40 MiB = 75 % -> hot_update_threshold(1): +10, stop
    assert r.moved_to_ssd == 30
    assert r.end == "high-water"
    assert fs.reloc.thresh == HOT_RELOC_THRESHOLD + 10


def test_recheck_every_30_moves_also_lowers_the_threshold() -> None:
    fs = Fs(ssd_mib=1000)
    fs.add(bucket=200, n=65)
    r = fs.run()
    # checks after 30 and 60 moves, SSD <= 50 %: -1 each
    assert r.moved_to_ssd == 65
    assert fs.reloc.thresh == HOT_RELOC_THRESHOLD - 2


def test_cold_first_demotion_moves_everything_it_queued() -> None:
    fs = Fs(ssd_mib=100)
    cold = fs.add(bucket=10, n=80, on_ssd=True)  # 80 % used
    hot = fs.add(bucket=200, n=5)
    r = fs.run()
    # ratio 80 >= 75: threshold 160; 5 hot queued; cold pass from bucket 0 while fewer
    # than 5 are queued: bucket 10 queues up to 250 -> all 80 go back to the HDD, then
    # up to 80 hot ones may come in: all 5.
    assert (r.ratio, r.thresh, r.queued_hot, r.queued_cold) == (80, 160, 5, 80)
    assert (r.moved_to_hdd, r.moved_to_ssd) == (80, 5)
    assert all(hr.storage_type == TYPE_ROT for hr in cold)
    assert all(hr.storage_type == TYPE_NONROT for hr in hot)
    assert fs.reloc.nonrot_used == 5 * MiB
    # demotions come before promotions
    targets = [m.target for m in r.moves]
    assert targets == [TYPE_ROT] * 80 + [TYPE_NONROT] * 5


def test_never_moved_ranges_spend_the_cold_budget_on_the_hdd() -> None:
    fs = Fs(ssd_mib=100)
    on_ssd = fs.add(bucket=100, n=76, on_ssd=True)
    never = fs.add(bucket=5, n=10)  # storage_type -1: on the HDD, but "not ROT"
    fs.add(bucket=200, n=3)
    r = fs.run()
    # cold pass starts at bucket 0: bucket 5 queues the 10 never-moved ranges (10 >= 3
    # hot: the search stops), they are rewritten on the HDD, nothing leaves the SSD
    assert r.queued_cold == 10
    assert r.moved_to_hdd == 10 and all(not m.was_on_ssd for m in r.moves if m.target == TYPE_ROT)
    assert all(hr.storage_type == TYPE_NONROT for hr in on_ssd)
    assert all(hr.storage_type == TYPE_ROT for hr in never)
    assert r.moved_to_ssd == 3
    assert fs.reloc.nonrot_used == 79 * MiB


def test_past_high_water_the_ssd_freezes() -> None:
    fs = Fs(ssd_mib=100)
    fs.add(bucket=10, n=80, on_ssd=True)
    fs.add(bucket=155, n=3)
    seen = []
    for _ in range(12):
        r = fs.run()
        seen.append((r.thresh, r.end, len(r.moves)))
    # 80 % >= 75: +10 every run, 160 > 155 at once: nothing hot is queued, so the cold pass
    # (which needs something hot) never runs either; the threshold climbs to 256
    assert seen[0] == (160, "nothing-hot", 0)
    assert [t for t, _, _ in seen] == [160, 170, 180, 190, 200, 210, 220, 230, 240, 250, 256, 256]
    assert fs.reloc.nonrot_used == 80 * MiB


def test_enospc_ends_the_run() -> None:
    fs = Fs(ssd_mib=10)
    fs.add(bucket=200, n=7, on_ssd=True)  # 70 %: below high water; these are listed hot
    fs.add(bucket=200, n=4)
    r = fs.run()
    # 8 MiB, 9 MiB, then 10 of 10 MiB would fill the SSD completely: -ENOSPC
    assert r.moved_to_ssd == 2
    assert r.end == "enospc"
    assert fs.reloc.nonrot_used == 9 * MiB


def test_relocate_extent_pages_and_eof() -> None:
    r = HotReloc(nonrot_total=100 * MiB)
    hr = HotRangeItem(freq=HotFreqData(flags=TYPE_RANGE), i_ino=300, start=MiB)
    # i_size 1.5 MiB: pages 256 .. (1.5 MiB - 1) >> 12 = 383 -> 128 pages, 512 KiB
    assert hot_relocate_extent(hr, r, TYPE_NONROT, MiB + MiB // 2) == (128, 128 * 4096)
    assert r.nonrot_used == 512 * 1024 and hr.storage_type == TYPE_NONROT
    past = HotRangeItem(freq=HotFreqData(flags=TYPE_RANGE), i_ino=300, start=2 * MiB)
    assert hot_relocate_extent(past, r, TYPE_NONROT, MiB + MiB // 2) == (0, 0)
    assert past.storage_type == STORAGE_UNKNOWN
    assert hot_relocate_extent(past, r, TYPE_NONROT, 0) == (0, 0)
    assert hot_relocate_extent(past, r, TYPE_NONROT, None)[0] < 0  # -ENOENT
    # back to the HDD frees the SSD bytes
    assert hot_relocate_extent(hr, r, TYPE_ROT, MiB + MiB // 2) == (128, 128 * 4096)
    assert r.nonrot_used == 0
