"""Frequency records and the temperature function, bit for bit.

Specifies ``hot_freq_calc``, ``hot_freq_update`` and ``hot_temp_calc`` of ``fs/hot_tracking.c``
(2013 "VFS hot tracking", the version the btrfs relocation port builds on; constants in
:mod:`model.hotdata.constants`). Times are nanoseconds of ``current_kernel_time()`` (the coarse
CLOCK_REALTIME: see :mod:`model.hotdata.trace` for why the clock matters).

C integer semantics are kept exactly:

- ``nr_reads``/``nr_writes`` are u32 and wrap; ``(u32)(nr << 20)`` keeps only the low 12 bits
  of the count, so the read-count heat wraps every 4096 accesses.
- ``hot_freq_calc`` subtracts two ``timespec`` values and converts the difference to s64
  nanoseconds *before* shifting right by FREQ_POWER: a negative difference (the clock went
  back) is shifted arithmetically, then stored in a u64. The moving average itself is u64
  arithmetic: ``((avg << 4) - avg + delta) >> 4``, all mod 2^64, so the first access after
  the initial ``avg = 2^64 - 1`` wraps to a small value.
- ``hot_temp_calc`` subtracts the stored time from the current one as u64 (a later stored
  time wraps to a huge age, i.e. no heat) and shifts logically.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.hotdata.constants import (
    AVR_COEFF_POWER,
    AVR_DIVIDER_POWER,
    AVW_COEFF_POWER,
    AVW_DIVIDER_POWER,
    FREQ_POWER,
    LTR_COEFF_POWER,
    LTR_DIVIDER_POWER,
    LTW_COEFF_POWER,
    LTW_DIVIDER_POWER,
    MAP_BITS,
    NRR_COEFF_POWER,
    NRR_MULTIPLIER_POWER,
    NRW_COEFF_POWER,
    NRW_MULTIPLIER_POWER,
)
from model.linux import U32_MAX, U64

_S64_MAX = (1 << 63) - 1


@dataclass
class HotFreqData:
    """``struct hot_freq_data`` ([2013-VFS] include/linux/hot_tracking.h).

    Times are the ns value of the stored ``timespec`` (0 for never: the item is zeroed at
    allocation). ``flags`` is TYPE_INODE or TYPE_RANGE. ``last_temp`` is the temperature
    recorded when the item last changed bucket (``hot_map_update``), not the current one.
    """

    flags: int
    last_read_time: int = 0
    last_write_time: int = 0
    nr_reads: int = 0
    nr_writes: int = 0
    avg_delta_reads: int = U64
    avg_delta_writes: int = U64
    last_temp: int = 0


def hot_shift(counter: int, bits: int, left: bool) -> int:
    """``hot_shift(u64 counter, u32 bits, bool dir)``: a u64 shift (left wraps mod 2^64)."""
    counter &= U64
    if left:
        return (counter << bits) & U64
    return counter >> bits


def _to_s64(v: int) -> int:
    """Wrap an integer into s64 as ``timespec_to_ns`` of a ``timespec_sub`` result would."""
    v &= U64
    return v - (1 << 64) if v > _S64_MAX else v


def hot_freq_calc(old_ns: int, cur_ns: int, avg: int) -> int:
    """``hot_freq_calc(old_atime, cur_time, &avg)``: the new moving average.

    ``new_delta = timespec_to_ns(cur - old) >> FREQ_POWER`` (s64, arithmetic shift, then
    stored in u64); ``avg = ((avg << FREQ_POWER) - avg + new_delta) >> FREQ_POWER`` in u64.
    """
    new_delta = (_to_s64(cur_ns - old_ns) >> FREQ_POWER) & U64
    avg &= U64
    avg = (((avg << FREQ_POWER) & U64) - avg + new_delta) & U64
    return avg >> FREQ_POWER


def hot_freq_update(freq: HotFreqData, write: bool, now_ns: int) -> None:
    """``hot_freq_update(root, ci, write)``: count one access at ``now_ns``."""
    if write:
        freq.nr_writes = (freq.nr_writes + 1) & U32_MAX
        freq.avg_delta_writes = hot_freq_calc(freq.last_write_time, now_ns, freq.avg_delta_writes)
        freq.last_write_time = now_ns
    else:
        freq.nr_reads = (freq.nr_reads + 1) & U32_MAX
        freq.avg_delta_reads = hot_freq_calc(freq.last_read_time, now_ns, freq.avg_delta_reads)
        freq.last_read_time = now_ns


@dataclass(frozen=True)
class TempParts:
    """The six weighted heat terms ``hot_temp_calc`` adds (after the final shifts)."""

    nrr: int
    nrw: int
    ltr: int
    ltw: int
    avr: int
    avw: int

    @property
    def temp(self) -> int:
        """``result = nrr + nrw + (u32)ltr + (u32)ltw + (u32)avr + (u32)avw`` as u32."""
        return (
            self.nrr
            + self.nrw
            + (self.ltr & U32_MAX)
            + (self.ltw & U32_MAX)
            + (self.avr & U32_MAX)
            + (self.avw & U32_MAX)
        ) & U32_MAX


def _age_heat(now_ns: int, last_ns: int, divider_power: int) -> int:
    """``lt?_heat``: ``(cur - last) >> DIVIDER`` in u64; 0 if >= 2^32, else 2^32 - it."""
    age = ((now_ns & U64) - (last_ns & U64)) & U64
    heat = hot_shift(age, divider_power, False)
    if heat >= 1 << 32:
        return 0
    return (1 << 32) - heat


def _avg_heat(avg: int, divider_power: int) -> int:
    """``av?_heat``: ``((u64)-1 - avg) >> DIVIDER``, clamped to (u32)-1."""
    heat = hot_shift(U64 - (avg & U64), divider_power, False)
    if heat >= 1 << 32:
        return U32_MAX
    return heat


def hot_temp_parts(freq: HotFreqData, now_ns: int) -> TempParts:
    """The terms of ``hot_temp_calc`` at ``now_ns``, in the C types and order."""
    nrr = hot_shift(freq.nr_reads & U32_MAX, NRR_MULTIPLIER_POWER, True) & U32_MAX
    nrw = hot_shift(freq.nr_writes & U32_MAX, NRW_MULTIPLIER_POWER, True) & U32_MAX
    ltr = _age_heat(now_ns, freq.last_read_time, LTR_DIVIDER_POWER)
    ltw = _age_heat(now_ns, freq.last_write_time, LTW_DIVIDER_POWER)
    avr = _avg_heat(freq.avg_delta_reads, AVR_DIVIDER_POWER)
    avw = _avg_heat(freq.avg_delta_writes, AVW_DIVIDER_POWER)
    return TempParts(
        nrr=hot_shift(nrr, 3 - NRR_COEFF_POWER, False) & U32_MAX,
        nrw=hot_shift(nrw, 3 - NRW_COEFF_POWER, False) & U32_MAX,
        ltr=hot_shift(ltr, 3 - LTR_COEFF_POWER, False),
        ltw=hot_shift(ltw, 3 - LTW_COEFF_POWER, False),
        avr=hot_shift(avr, 3 - AVR_COEFF_POWER, False),
        avw=hot_shift(avw, 3 - AVW_COEFF_POWER, False),
    )


_NRR_SHIFT = 3 - NRR_COEFF_POWER
_NRW_SHIFT = 3 - NRW_COEFF_POWER
_LTR_SHIFT = 3 - LTR_COEFF_POWER
_LTW_SHIFT = 3 - LTW_COEFF_POWER
_AVR_SHIFT = 3 - AVR_COEFF_POWER
_AVW_SHIFT = 3 - AVW_COEFF_POWER
_2_32 = 1 << 32


def hot_temp_calc(freq: HotFreqData, now_ns: int) -> int:
    """``hot_temp_calc(ci)``: the u32 temperature at ``now_ns``.

    The same arithmetic as :func:`hot_temp_parts`, inlined (the replay calls it for every
    record every 150 s); the tests hold the two together.
    """
    now = now_ns & U64
    nrr = ((freq.nr_reads << NRR_MULTIPLIER_POWER) & U32_MAX) >> _NRR_SHIFT
    nrw = ((freq.nr_writes << NRW_MULTIPLIER_POWER) & U32_MAX) >> _NRW_SHIFT
    ltr = ((now - freq.last_read_time) & U64) >> LTR_DIVIDER_POWER
    ltr = 0 if ltr >= _2_32 else _2_32 - ltr
    ltw = ((now - freq.last_write_time) & U64) >> LTW_DIVIDER_POWER
    ltw = 0 if ltw >= _2_32 else _2_32 - ltw
    avr = (U64 - freq.avg_delta_reads) >> AVR_DIVIDER_POWER
    if avr >= _2_32:
        avr = U32_MAX
    avw = (U64 - freq.avg_delta_writes) >> AVW_DIVIDER_POWER
    if avw >= _2_32:
        avw = U32_MAX
    return (
        nrr
        + nrw
        + ((ltr >> _LTR_SHIFT) & U32_MAX)
        + ((ltw >> _LTW_SHIFT) & U32_MAX)
        + ((avr >> _AVR_SHIFT) & U32_MAX)
        + ((avw >> _AVW_SHIFT) & U32_MAX)
    ) & U32_MAX


def hot_temp_bucket(temp: int) -> int:
    """``(u8)hot_shift((u64)temp, 32 - MAP_BITS, false)``: the heat-map bucket, 0..255."""
    return ((temp & U32_MAX) >> (32 - MAP_BITS)) & 0xFF


def hot_is_obsolete(freq: HotFreqData, now_ns: int, kick_ns: int) -> bool:
    """``hot_is_obsolete`` ([2012-VFS]): both the last read and the last write are more than
    ``kick_ns`` ago (u64 differences, so a never-read item counts its age from time 0)."""
    last_read_ns = ((now_ns & U64) - (freq.last_read_time & U64)) & U64
    last_write_ns = ((now_ns & U64) - (freq.last_write_time & U64)) & U64
    return last_read_ns > kick_ns and last_write_ns > kick_ns
