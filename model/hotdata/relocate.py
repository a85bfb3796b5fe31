"""The btrfs hot relocation policy: which ranges move to and from the SSD, run by run.

Specifies ``fs/btrfs/hot_relocate.c`` of the 2013 port ([2013-BTRFS]; the 2010
``hotdata_relocate.c`` of the seed is not public, its limits are unknown):

- ``hot_calc_nonrot_ratio``: percent of the non-rotating devices' bytes used by
  DATA_NONROT block groups (integer division); 101 (THRESH_MAX_VALUE + 1) with no SSD.
- ``hot_update_threshold(update)``: unless ``update`` or the ratio is >= HIGH_WATER_LEVEL
  (75), nothing changes. Otherwise a ratio above 100 parks the threshold at 256 (nothing
  qualifies); >= 75 raises it by 10; <= 50 lowers it by 1; the result is clamped to
  [0, 256].
- ``hot_do_relocate`` (one kthread run, every HOT_RELOC_INTERVAL = 120 s): the threshold is
  updated with ``update`` only on every 15th run; ranges in buckets 255 down to the threshold
  that are not on the SSD are queued (``hot_search_extent``); if none, the run ends. With the
  SSD below 75 % up to 250 queued ranges move to it; at or above 75 %, cold ranges (buckets
  0 up to the threshold, not on the HDD) are queued and moved back first, and at most as
  many hot ranges move in as cold ones moved out. Every 30 hot moves the threshold is
  updated again and the run stops if the SSD reached 75 %.

Exact quirks kept (each has a test):

- ``hot_queue_extent`` checks its 250 limit after each item of a bucket, so each further
  non-empty bucket can add one more item to the queue; the hot pass never moves more than
  250 (its loop stops at ``count_to_cold``), but the cold pass moves everything it queued.
- a range never relocated has ``storage_type = -1``, which is "not ROT" too: under pressure
  the cold pass queues ranges that already live on the HDD and rewrites them there (each
  counts as a cold move and allows one hot move).
- ``hot_update_threshold(1)`` every 30 moves also *lowers* the threshold when the SSD is at
  most half full.

Simplifications (said where they matter): a range is moved whole or not at all (the kernel
reserves space per 256 KiB cluster and may stop half-way on ENOSPC); files have no holes or
inline extents (``hot_can_relocate`` would skip those pages); a move is refused when it
would fill the SSD completely, which keeps the kernel's ``BUG_ON(bytes_used >=
total_bytes)`` unreachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from errno import ENOENT, ENOSPC

from model.hotdata.constants import (
    HEAT_MAX_VALUE,
    HIGH_WATER_LEVEL,
    HOT_RELOC_MAX_ITEMS,
    HOT_RELOC_THRESHOLD,
    LOW_WATER_LEVEL,
    PAGE_CACHE_SHIFT,
    RELOC_RECHECK_MOVES,
    RELOC_THRESH_UPDATE_PERIOD,
    THRESH_DOWN_SPEED,
    THRESH_MAX_VALUE,
    THRESH_UP_SPEED,
    TYPE_NONROT,
    TYPE_RANGE,
    TYPE_ROT,
)
from model.hotdata.tracking import HotInfo, HotRangeItem
from model.linux import U32_MAX


@dataclass(frozen=True)
class RelocMove:
    """One ``hot_relocate_extent`` call: ``ret`` > 0 is the number of pages rewritten."""

    i_ino: int
    start: int
    target: int  # TYPE_ROT or TYPE_NONROT
    ret: int
    bytes: int  # bytes rewritten (0 unless ret > 0)
    was_on_ssd: bool


@dataclass
class RelocRun:
    """What one ``hot_do_relocate`` did."""

    run: int
    ratio: int
    thresh: int  # the threshold the run searched with
    thresh_after: int
    queued_hot: int = 0
    queued_cold: int = 0
    moves: list[RelocMove] = field(default_factory=list)
    end: str = "done"  # done / nothing-hot / enospc / high-water / cold-limit

    @property
    def moved_to_ssd(self) -> int:
        return sum(1 for m in self.moves if m.target == TYPE_NONROT and m.ret > 0)

    @property
    def moved_to_hdd(self) -> int:
        return sum(1 for m in self.moves if m.target == TYPE_ROT and m.ret > 0)


@dataclass
class HotReloc:
    """``struct hot_reloc`` plus the space the ratio is computed from.

    ``nonrot_total`` is the bytes of non-rotating devices (0: no SSD); ``on_ssd`` maps
    ``(ino, range index)`` to the bytes of that range living in DATA_NONROT block groups
    (their sum is the space_info ``bytes_used``). ``run`` is the function-static counter of
    ``hot_do_relocate`` (starts at 1 and is incremented before use).
    """

    nonrot_total: int
    thresh: int = HOT_RELOC_THRESHOLD
    run: int = 1
    on_ssd: dict[tuple[int, int], int] = field(default_factory=dict)
    nonrot_used: int = 0


def hot_calc_nonrot_ratio(reloc: HotReloc) -> int:
    """``hot_calc_nonrot_ratio``: ``bytes_used * 100 / total_bytes``; 101 with no SSD."""
    if reloc.nonrot_total == 0:
        return THRESH_MAX_VALUE + 1
    return (reloc.nonrot_used * 100) // reloc.nonrot_total


def hot_update_threshold(reloc: HotReloc, update: bool) -> int:
    """``hot_update_threshold(hot_reloc, update)``: returns the ratio."""
    thresh = reloc.thresh
    ratio = hot_calc_nonrot_ratio(reloc)
    if not update and ratio < HIGH_WATER_LEVEL:
        return ratio
    if ratio > THRESH_MAX_VALUE:
        thresh = HEAT_MAX_VALUE + 1
    else:
        if ratio >= HIGH_WATER_LEVEL:
            thresh += THRESH_UP_SPEED
        elif ratio <= LOW_WATER_LEVEL:
            thresh -= THRESH_DOWN_SPEED
        if thresh > HEAT_MAX_VALUE:
            thresh = HEAT_MAX_VALUE + 1
        elif thresh < 0:
            thresh = 0
    reloc.thresh = thresh
    return ratio


RelocQueues = list[dict[HotRangeItem, None]]


def hot_queue_extent(
    bucket: list[HotRangeItem], relocq: RelocQueues, counter: int, storage_type: int
) -> int:
    """``hot_queue_extent``: queue the bucket's ranges not already of ``storage_type``;
    returns the new counter. The limit is checked after every item, queued or not."""
    for hr in bucket:
        if hr.deleting:
            continue
        if hr.storage_type != storage_type:
            for q in relocq:  # list_del_init(&ci->reloc_list): leave any other queue
                q.pop(hr, None)
            relocq[storage_type][hr] = None
            counter += 1
        if counter >= HOT_RELOC_MAX_ITEMS:
            break
    return counter


def _range_bucket(root: HotInfo, i: int) -> list[HotRangeItem]:
    return [ci for ci in root.hot_map[TYPE_RANGE][i] if isinstance(ci, HotRangeItem)]


def hot_search_extent(root: HotInfo, relocq: RelocQueues, thresh: int, storage_type: int) -> int:
    """``hot_search_extent``: buckets HEAT_MAX_VALUE down to ``thresh``; returns the count."""
    counter = 0
    for i in range(HEAT_MAX_VALUE, thresh - 1, -1):
        if root.hot_map[TYPE_RANGE][i]:
            counter = hot_queue_extent(_range_bucket(root, i), relocq, counter, storage_type)
    return counter


def hot_relocate_extent(
    hr: HotRangeItem, reloc: HotReloc, storage_type: int, isize: int | None
) -> tuple[int, int]:
    """``hot_relocate_extent``: rewrite the range's pages on ``storage_type``.

    Returns ``(ret, bytes)``: ret is the number of pages (> 0), 0 for an empty file or a
    range past EOF, ``-ENOENT`` for an inode that is gone, ``-ENOSPC`` when the SSD cannot
    take the whole range. On success ``storage_type`` is recorded on the range.
    """
    if isize is None:
        return -ENOENT, 0
    if isize == 0:
        return 0, 0
    last = min(isize - 1, hr.start + hr.len - 1) >> PAGE_CACHE_SHIFT
    first = hr.start >> PAGE_CACHE_SHIFT
    if first > last:
        return 0, 0
    pages = last - first + 1
    nbytes = pages << PAGE_CACHE_SHIFT
    key = (hr.i_ino, hr.index)
    on_ssd = reloc.on_ssd.get(key, 0)
    if storage_type == TYPE_NONROT:
        if reloc.nonrot_used - on_ssd + nbytes >= reloc.nonrot_total:
            return -ENOSPC, 0
        reloc.nonrot_used += nbytes - on_ssd
        reloc.on_ssd[key] = nbytes
    else:
        reloc.nonrot_used -= on_ssd
        reloc.on_ssd.pop(key, None)
    hr.storage_type = storage_type
    return pages, nbytes


def _move(
    run: RelocRun, hr: HotRangeItem, reloc: HotReloc, target: int, sizes: Mapping[int, int]
) -> int:
    was = (hr.i_ino, hr.index) in reloc.on_ssd
    ret, nbytes = hot_relocate_extent(hr, reloc, target, sizes.get(hr.i_ino))
    run.moves.append(RelocMove(hr.i_ino, hr.start, target, ret, nbytes, was))
    return ret


def hot_do_relocate(root: HotInfo, reloc: HotReloc, sizes: Mapping[int, int]) -> RelocRun:
    """``hot_do_relocate``: one run of the relocation kthread over the current heat map.

    ``sizes`` gives each inode's i_size (an inode missing from it is gone: -ENOENT).
    """
    reloc.run = (reloc.run + 1) & U32_MAX
    ratio = hot_update_threshold(reloc, reloc.run % RELOC_THRESH_UPDATE_PERIOD == 0)
    thresh = reloc.thresh
    run = RelocRun(run=reloc.run, ratio=ratio, thresh=thresh, thresh_after=thresh)
    relocq: RelocQueues = [{}, {}]
    count_to_hot = hot_search_extent(root, relocq, thresh, TYPE_NONROT)
    run.queued_hot = count_to_hot
    if count_to_hot == 0:
        run.end = "nothing-hot"
        return run
    count_to_cold = HOT_RELOC_MAX_ITEMS
    if ratio >= HIGH_WATER_LEVEL:
        count = 0
        count_to_cold = 0
        while count < thresh and count_to_cold < count_to_hot:
            if root.hot_map[TYPE_RANGE][count]:
                count_to_cold = hot_queue_extent(
                    _range_bucket(root, count), relocq, count_to_cold, TYPE_ROT
                )
            count += 1
        run.queued_cold = count_to_cold
        count_to_cold = 0
        for hr in list(relocq[TYPE_ROT]):
            ret = _move(run, hr, reloc, TYPE_ROT, sizes)
            if ret == -ENOSPC:
                run.end = "enospc"
                run.thresh_after = reloc.thresh
                return run
            if ret > 0:
                count_to_cold += 1
    count_to_hot = 0
    for hr in list(relocq[TYPE_NONROT]):
        if count_to_hot >= count_to_cold:
            run.end = "cold-limit"
            break
        ret = _move(run, hr, reloc, TYPE_NONROT, sizes)
        if ret == -ENOSPC:
            run.end = "enospc"
            break
        if ret > 0:
            count_to_hot += 1
        if count_to_hot != 0 and count_to_hot % RELOC_RECHECK_MOVES == 0:
            ratio = hot_update_threshold(reloc, True)
            if ratio >= HIGH_WATER_LEVEL:
                run.end = "high-water"
                break
    run.thresh_after = reloc.thresh
    return run
