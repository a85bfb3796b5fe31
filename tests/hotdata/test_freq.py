"""The moving average and the temperature: hand-computed tables and properties against an
independent derivation (plain integer arithmetic with % and //, not shifts and masks)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from model.hotdata.constants import TYPE_RANGE
from model.hotdata.freq import (
    HotFreqData,
    hot_freq_calc,
    hot_freq_update,
    hot_is_obsolete,
    hot_temp_bucket,
    hot_temp_calc,
    hot_temp_parts,
)
from model.linux import U32_MAX, U64

M32 = 2**32
M64 = 2**64
T2026 = 1_793_491_200_000_000_000  # 2026-11-01T00:00:00Z in ns (1793491200 s * 10^9)


def ref_temp(nr_r: int, nr_w: int, lr: int, lw: int, ar: int, aw: int, now: int) -> int:
    """The 2013 temperature written from the constants' meaning, not from the C text:
    count heat = (count * 2^20 mod 2^32) / 8; age heat = max(2^32 - age/2^30, 0) / 4 with
    age = (now - last) mod 2^64; average heat = min((2^64 - 1 - avg) / 2^40, 2^32 - 1) / 8;
    the sum mod 2^32."""

    def count_heat(n: int) -> int:
        return ((n * 2**20) % M32) // 8

    def age_heat(last: int) -> int:
        age = ((now - last) % M64) // 2**30
        return max(M32 - age, 0) // 4

    def avg_heat(avg: int) -> int:
        return min((M64 - 1 - avg) // 2**40, M32 - 1) // 8

    total = count_heat(nr_r) + count_heat(nr_w) + age_heat(lr) + age_heat(lw)
    return (total + avg_heat(ar) + avg_heat(aw)) % M32


def ref_freq_calc(old: int, cur: int, avg: int) -> int:
    """avg' = floor((15 * avg + (floor((cur - old) / 16) mod 2^64)) mod 2^64 / 16)."""
    delta = ((cur - old) // 16) % M64
    return ((15 * avg + delta) % M64) // 16


def freq(**kw: int) -> HotFreqData:
    return HotFreqData(flags=TYPE_RANGE, **kw)


# --- hot_freq_calc: hand-computed ----------------------------------------------------


def test_first_access_wraps_the_initial_average() -> None:
    # avg = 2^64 - 1 (never accessed), old = 0, cur = 1000:
    #   new_delta = 1000 >> 4 = 62
    #   (avg << 4) mod 2^64 = 2^64 - 16;  - avg = 2^64 - 16 - (2^64 - 1) = -15 = 2^64 - 15
    #   + 62 = 2^64 + 47 = 47 (mod 2^64);  47 >> 4 = 2
    assert hot_freq_calc(0, 1000, U64) == 2


def test_first_access_at_a_2026_wall_clock() -> None:
    # cur = 1793491200000000000 (2026-11-01), old = 0:
    #   new_delta = cur >> 4 = 112093200000000000 (cur is a multiple of 16)
    #   2^64 - 15 + 112093200000000000 wraps to 112093199999999985;  >> 4 = 7005824999999999
    assert hot_freq_calc(0, T2026, U64) == 7_005_824_999_999_999


def test_steady_state_average_is_delta_over_16() -> None:
    # equal spacing d = 1600 ns: new_delta = 100; the fixed point of
    # avg = (15 avg + 100) / 16 is avg = 100:  (1500 + 100) / 16 = 100
    assert hot_freq_calc(1000, 2600, 100) == 100
    # from avg = 1600: (16 * 1600 - 1600 + 100) >> 4 = 24100 >> 4 = 1506
    assert hot_freq_calc(1000, 2600, 1600) == 1506


def test_clock_going_back_shifts_arithmetically() -> None:
    # cur - old = -16 as s64; -16 >> 4 = -1 (arithmetic) = 2^64 - 1 as u64.
    # avg = 0: (0 - 0 + 2^64 - 1) >> 4 = 2^60 - 1
    assert hot_freq_calc(100, 84, 0) == 2**60 - 1
    # -1 >> 4 = -1 too: a 1 ns step back is not 0
    assert hot_freq_calc(100, 99, 0) == 2**60 - 1


def test_counts_are_u32() -> None:
    f = freq(nr_reads=U32_MAX, nr_writes=U32_MAX)
    hot_freq_update(f, False, 5)
    hot_freq_update(f, True, 5)
    assert (f.nr_reads, f.nr_writes) == (0, 0)
    assert (f.last_read_time, f.last_write_time) == (5, 5)


# --- hot_temp_calc: hand-computed ----------------------------------------------------


def test_temperature_one_read_small_clock() -> None:
    # nr_reads 1, read at now = 1000, never written, avg_delta_reads 2 (see above):
    #   nrr = (1 << 20) >> 3                         =    131072
    #   nrw = 0
    #   ltr: (1000 - 1000) >> 30 = 0 -> 2^32 - 0 = 2^32; >> 2 = 1073741824
    #   ltw: (1000 - 0) >> 30 = 0    -> 2^32;        >> 2 = 1073741824
    #   avr: (2^64 - 1 - 2) >> 40 = 2^24 - 1 = 16777215; >> 3 = 2097151
    #   avw: (2^64 - 1 - (2^64 - 1)) >> 40 = 0
    #   sum = 131072 + 2 * 1073741824 + 2097151 = 2149711871; bucket 2149711871 >> 24 = 128
    f = freq(nr_reads=1, last_read_time=1000, avg_delta_reads=2)
    p = hot_temp_parts(f, 1000)
    assert (p.nrr, p.nrw, p.ltr, p.ltw, p.avr, p.avw) == (
        131072,
        0,
        1073741824,
        1073741824,
        2097151,
        0,
    )
    assert hot_temp_calc(f, 1000) == 2149711871
    assert hot_temp_bucket(2149711871) == 128


def test_temperature_one_read_2026_never_written() -> None:
    # read once at T = 1793491200000000000, never written, evaluated at T:
    #   nrr = 131072; nrw = 0; ltr = 2^32 >> 2 = 1073741824
    #   ltw: T >> 30 = 1670318841 -> 2^32 - 1670318841 = 2624648455; >> 2 = 656162113
    #   avg_delta_reads = 7005824999999999 (test above):
    #   avr: (18446744073709551615 - 7005824999999999) >> 40 = 16770844; >> 3 = 2096355
    #   sum = 131072 + 1073741824 + 656162113 + 2096355 = 1732131364
    #   bucket = 1732131364 >> 24 = 103 (103 * 2^24 = 1728053248)
    # Near boot (T small) the same record is in bucket 128: the wall clock alone costs
    # a never-written record 25 buckets.
    f = freq()
    hot_freq_update(f, False, T2026)
    assert f.avg_delta_reads == 7_005_824_999_999_999
    assert hot_temp_calc(f, T2026) == 1_732_131_364
    assert hot_temp_bucket(hot_temp_calc(f, T2026)) == 103


def test_read_count_heat_wraps_every_4096() -> None:
    # 4095 << 20 = 4293918720 < 2^32; >> 3 = 536739840.   4096 << 20 = 2^32 -> 0
    assert hot_temp_parts(freq(nr_reads=4095), 0).nrr == 536739840
    assert hot_temp_parts(freq(nr_reads=4096), 0).nrr == 0
    assert hot_temp_parts(freq(nr_writes=4097), 0).nrw == (1 << 20) >> 3


def test_hottest_possible_record_is_bucket_192() -> None:
    # 4095 reads and writes, both just now, both averages 0:
    #   2 * 536739840 + 2 * 2^30 + 2 * ((2^64 - 1) >> 40 >> 3 = 2097151) = 3225157630
    #   3225157630 >> 24 = 192 (192 * 2^24 = 3221225472; 193 * 2^24 = 3238002688)
    f = freq(
        nr_reads=4095,
        nr_writes=4095,
        last_read_time=7,
        last_write_time=7,
        avg_delta_reads=0,
        avg_delta_writes=0,
    )
    assert hot_temp_calc(f, 7) == 3225157630
    assert hot_temp_bucket(3225157630) == 192


def test_read_only_data_never_reaches_the_threshold_in_2026() -> None:
    # the hottest read-only record: 4095 reads, the last just now, average delta 0, never
    # written, at T = 2026-11-01:
    #   nrr 536739840 + ltr 1073741824 + ltw 656162113 (as above) + avr 2097151 + avw 0
    #   = 2268740928; >> 24 = 135 (135 * 2^24 = 2264924160, 136 * 2^24 = 2281701376) < 150
    f = freq(nr_reads=4095, last_read_time=T2026, avg_delta_reads=0)
    assert hot_temp_calc(f, T2026) == 2268740928
    assert hot_temp_bucket(2268740928) == 135


def test_age_boundaries_and_a_stored_time_in_the_future() -> None:
    now = 2**62 + 5
    # age 2^62 ns: >> 30 = 2^32 -> heat 0
    assert hot_temp_parts(freq(last_read_time=5), now).ltr == 0
    # age 2^62 - 1: >> 30 = 2^32 - 1 -> 2^32 - (2^32 - 1) = 1; >> 2 = 0
    assert hot_temp_parts(freq(last_read_time=6), now).ltr == 0
    # age 2^62 - 2^32: >> 30 = 2^32 - 4 -> 4; >> 2 = 1
    assert hot_temp_parts(freq(last_read_time=5 + 2**32), now).ltr == 1
    # stored time 1 ns in the future: (now - last) mod 2^64 = 2^64 - 1 -> huge -> 0
    assert hot_temp_parts(freq(last_read_time=now + 1), now).ltr == 0


def test_obsolete_needs_both_read_and_write_idle() -> None:
    kick = 300 * 10**9
    f = freq(last_read_time=1000, last_write_time=1000)
    assert not hot_is_obsolete(f, 1000 + kick, kick)  # not "more than"
    assert hot_is_obsolete(f, 1001 + kick, kick)
    g = freq(last_read_time=1000 + kick, last_write_time=1000)
    assert not hot_is_obsolete(g, 1001 + kick, kick)


# --- properties against the independent derivation -----------------------------------

u32 = st.integers(0, U32_MAX)
u64 = st.integers(0, U64)
t63 = st.integers(0, 2**63 - 1)


@settings(max_examples=400, deadline=None)
@given(u32, u32, t63, t63, u64, u64, t63)
def test_temperature_matches_independent_derivation(
    nr_r: int, nr_w: int, lr: int, lw: int, ar: int, aw: int, now: int
) -> None:
    f = freq(
        nr_reads=nr_r,
        nr_writes=nr_w,
        last_read_time=lr,
        last_write_time=lw,
        avg_delta_reads=ar,
        avg_delta_writes=aw,
    )
    want = ref_temp(nr_r, nr_w, lr, lw, ar, aw, now)
    assert hot_temp_calc(f, now) == want
    assert hot_temp_parts(f, now).temp == want
    # bounds: never above the hottest record (3225157630, bucket 192)
    assert 0 <= want <= 3225157630
    assert 0 <= hot_temp_bucket(want) <= 192


@settings(max_examples=400, deadline=None)
@given(t63, t63, u64)
def test_freq_calc_matches_independent_derivation(old: int, cur: int, avg: int) -> None:
    assert hot_freq_calc(old, cur, avg) == ref_freq_calc(old, cur, avg)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4094), t63, t63, u64, u64, t63)
def test_monotone_in_access_count_below_the_wrap(
    n: int, lr: int, lw: int, ar: int, aw: int, now: int
) -> None:
    a = freq(nr_reads=n, last_read_time=lr, last_write_time=lw, avg_delta_reads=ar)
    b = freq(nr_reads=n + 1, last_read_time=lr, last_write_time=lw, avg_delta_reads=ar)
    assert hot_temp_calc(b, now) == hot_temp_calc(a, now) + (1 << 17)
    c = freq(nr_writes=n, avg_delta_writes=aw)
    d = freq(nr_writes=n + 1, avg_delta_writes=aw)
    assert hot_temp_calc(d, now) > hot_temp_calc(c, now)
    # and the wrap: 4096 more accesses give the same count heat
    e = freq(nr_reads=n + 4096, last_read_time=lr, last_write_time=lw, avg_delta_reads=ar)
    assert hot_temp_calc(e, now) == hot_temp_calc(a, now)


@settings(max_examples=200, deadline=None)
@given(t63, t63, t63, u32)
def test_monotone_in_recency(x: int, y: int, now: int, n: int) -> None:
    # a more recent access (older <= newer <= now) is never colder
    older, newer = sorted((x % (now + 1), y % (now + 1)))
    a = freq(nr_reads=n, last_read_time=older, last_write_time=older)
    b = freq(nr_reads=n, last_read_time=newer, last_write_time=newer)
    assert hot_temp_calc(b, now) >= hot_temp_calc(a, now)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=40), t63)
def test_update_sequence_matches_reference(gaps: list[int], t0: int) -> None:
    f = freq()
    nr, avg, last, t = 0, U64, 0, t0
    for g in gaps:
        t = (t + g) % 2**63
        hot_freq_update(f, False, t)
        nr = (nr + 1) % M32
        avg = ref_freq_calc(last, t, avg)
        last = t
    assert (f.nr_reads, f.avg_delta_reads, f.last_read_time) == (nr, avg, last)
    assert f.nr_writes == 0 and f.avg_delta_writes == U64
