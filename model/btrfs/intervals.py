"""Half-open byte intervals ``(start, end)`` as sorted lists: the checker's stand-in for
btrfs-progs' ``extent_io_tree`` (``set_extent_dirty`` merges adjacent and overlapping
ranges, ``find_first_extent_bit`` walks them in order).

Everything works on intervals, never on per-sector objects, so a 128 GiB block group
costs as much as its number of extents.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

Interval = tuple[int, int]


def merge_intervals(ivs: Iterable[Interval]) -> list[Interval]:
    """Sorted, with overlapping and touching intervals joined (``set_extent_dirty``)."""
    out: list[Interval] = []
    for s, e in sorted(ivs):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def clip_intervals(ivs: list[Interval], start: int, end: int) -> list[Interval]:
    """The parts of sorted disjoint ``ivs`` inside ``[start, end)``."""
    i = bisect.bisect_right(ivs, (start, start)) - 1
    i = max(i, 0)
    out: list[Interval] = []
    for s, e in ivs[i:]:
        if s >= end:
            break
        s2, e2 = max(s, start), min(e, end)
        if s2 < e2:
            out.append((s2, e2))
    return out


def complement_intervals(ivs: list[Interval], start: int, end: int) -> list[Interval]:
    """The gaps of sorted disjoint ``ivs`` within ``[start, end)``."""
    out: list[Interval] = []
    cur = start
    for s, e in clip_intervals(ivs, start, end):
        if s > cur:
            out.append((cur, s))
        cur = max(cur, e)
    if cur < end:
        out.append((cur, end))
    return out


def subtract_intervals(ivs: list[Interval], holes: list[Interval]) -> list[Interval]:
    """Sorted disjoint ``ivs`` with the sorted disjoint ``holes`` cut out; pieces that
    a hole splits stay separate (as ``check_cache_range`` splits around a super stripe)."""
    out: list[Interval] = []
    j = 0
    for s, e in ivs:
        cur = s
        while j < len(holes) and holes[j][1] <= cur:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] < e:
            hs, he = holes[k]
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def symmetric_difference(a: list[Interval], b: list[Interval]) -> list[tuple[int, int, bool]]:
    """Byte ranges covered by exactly one of two sorted disjoint interval lists, as
    ``(start, end, in_a)``; neighbouring ranges of the same side are joined."""
    events: list[tuple[int, int]] = []
    for s, e in a:
        events += [(s, 1), (e, -1)]
    for s, e in b:
        events += [(s, 2), (e, -2)]
    events.sort()
    out: list[tuple[int, int, bool]] = []
    in_a = in_b = False
    prev = 0
    i = 0
    while i < len(events):
        pos = events[i][0]
        if in_a != in_b and pos > prev:
            if out and out[-1][1] == prev and out[-1][2] == in_a:
                out[-1] = (out[-1][0], pos, in_a)
            else:
                out.append((prev, pos, in_a))
        while i < len(events) and events[i][0] == pos:
            kind = events[i][1]
            if abs(kind) == 1:
                in_a = kind > 0
            else:
                in_b = kind > 0
            i += 1
        prev = pos
    return out
