"""Per-inode and per-range records, the heat map and its periodic update.

Specifies ``fs/hot_tracking.c`` of the 2013 "VFS hot tracking" series ([2013-VFS], the
version with ``hot_comm_item`` that the btrfs relocation port uses):

- ``hot_update_freqs(inode, start, len, rw)``: one access updates the inode's record and the
  record of every 1 MiB range ``start >> 20 .. (start + len + 2^20 - 1) >> 20`` (exclusive).
- ``hot_map_update``: a record moves to heat-map bucket ``temp >> 24`` only when that bucket
  differs from the bucket of its ``last_temp``; only then is ``last_temp`` refreshed. A new
  record has ``last_temp = 0`` (bucket 0), so a record whose temperature stays in bucket 0
  is never put on the map at all.
- ``hot_update_worker`` (every HOT_UPDATE_INTERVAL = 150 s): inodes in inode-number order,
  each followed by its ranges in offset order, then every bucket list sorted by
  ``last_temp``, hottest first (``list_sort`` is a stable merge sort).

Two ways of forgetting, from other versions of the series (the 2013 file above has none):

- aging ([2012-VFS]): ``hot_is_obsolete`` ranges (no read and no write for TIME_TO_KICK =
  300 s) are dropped during the update (``hot_range_update``); the reference page's "items
  idle for 300 s aged out". The 2013 header still defines HOT_AGE_INTERVAL 300.
- ``hot_item_evict`` (the later shrinker version): under memory pressure, whole inodes (with
  their ranges) are freed from the coldest inode bucket upwards until enough items are gone.

Locks, reference counts and RCU have no observable effect in a single-threaded replay and
are not modelled; ``HOT_DELETING`` is (an unlinked item leaves the trees and the map).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

from model.hotdata.constants import (
    MAP_SIZE,
    MAX_TYPES,
    RANGE_BITS,
    STORAGE_UNKNOWN,
    TYPE_INODE,
    TYPE_RANGE,
)
from model.hotdata.freq import (
    HotFreqData,
    hot_freq_update,
    hot_is_obsolete,
    hot_temp_bucket,
    hot_temp_calc,
)
from model.linux import U32_MAX


@dataclass(eq=False)
class HotCommItem:
    """``struct hot_comm_item``: the frequency record plus its heat-map membership."""

    freq: HotFreqData
    in_list: bool = False  # HOT_IN_LIST
    deleting: bool = False  # HOT_DELETING


@dataclass(eq=False)
class HotRangeItem(HotCommItem):
    """``struct hot_range_item``: one 1 MiB range of an inode."""

    i_ino: int = 0
    start: int = 0  # offset in bytes (index << RANGE_BITS)
    len: int = 1 << RANGE_BITS
    storage_type: int = STORAGE_UNKNOWN  # [2013-BTRFS] set by hot_relocate_extent

    @property
    def index(self) -> int:
        return self.start >> RANGE_BITS


@dataclass(eq=False)
class HotInodeItem(HotCommItem):
    """``struct hot_inode_item``: an inode and its tree of ranges (keyed by range index)."""

    i_ino: int = 0
    ranges: dict[int, HotRangeItem] = field(default_factory=dict)

    def iter_ranges(self) -> Iterator[HotRangeItem]:
        """``rb_first``/``rb_next`` over ``hot_range_tree``: ascending offset."""
        for idx in sorted(self.ranges):
            yield self.ranges[idx]


class HotInfo:
    """``struct hot_info``: the inode tree and ``hot_map[MAX_TYPES][MAP_SIZE]``.

    Each bucket list is an insertion-ordered dict used as a linked list (tail append, O(1)
    unlink).
    """

    def __init__(self) -> None:
        self.inodes: dict[int, HotInodeItem] = {}
        self.hot_map: list[list[dict[HotCommItem, None]]] = [
            [{} for _ in range(MAP_SIZE)] for _ in range(MAX_TYPES)
        ]

    def iter_inodes(self) -> Iterator[HotInodeItem]:
        """``rb_first``/``rb_next`` over ``hot_inode_tree``: ascending inode number."""
        for ino in sorted(self.inodes):
            yield self.inodes[ino]

    def iter_ranges(self) -> Iterator[HotRangeItem]:
        for he in self.iter_inodes():
            yield from he.iter_ranges()

    def bucket(self, type_: int, idx: int) -> list[HotCommItem]:
        """The items of ``hot_map[type_][idx]`` in list order."""
        return list(self.hot_map[type_][idx])

    def hot_cnt(self) -> int:
        """Number of records (``root->hot_cnt`` of the shrinker version)."""
        return sum(1 + len(he.ranges) for he in self.inodes.values())


def hot_inode_item_lookup(root: HotInfo, ino: int, alloc: bool) -> HotInodeItem | None:
    """``hot_inode_item_lookup(root, ino, alloc)``: find, or create when ``alloc``.

    A new item is zeroed with both average deltas at ``(u64)-1`` (``hot_comm_item_init``);
    it is *not* put on the heat map (only ``hot_map_update`` does that).
    """
    he = root.inodes.get(ino)
    if he is not None:
        return None if he.deleting else he
    if not alloc:
        return None
    he = HotInodeItem(freq=HotFreqData(flags=TYPE_INODE), i_ino=ino)
    root.inodes[ino] = he
    return he


def hot_range_item_lookup(he: HotInodeItem, index: int, alloc: bool) -> HotRangeItem | None:
    """``hot_range_item_lookup(he, start, alloc)`` with ``start`` a range index."""
    hr = he.ranges.get(index)
    if hr is not None:
        return None if hr.deleting else hr
    if not alloc:
        return None
    hr = HotRangeItem(freq=HotFreqData(flags=TYPE_RANGE), i_ino=he.i_ino, start=index << RANGE_BITS)
    he.ranges[index] = hr
    return hr


def hot_update_freqs(
    root: HotInfo, ino: int, start: int, length: int, write: bool, now_ns: int
) -> None:
    """``hot_update_freqs(inode, start, len, rw)`` for a regular file, at ``now_ns``.

    ``len == 0`` does nothing (not even allocate the inode record). The ranges touched are
    ``cur = start >> RANGE_BITS`` up to ``end = (start + len + 2^RANGE_BITS - 1) >>
    RANGE_BITS`` exclusive (loff_t arithmetic: the caller keeps ``start + len`` < 2^63).
    """
    if length == 0:
        return
    he = hot_inode_item_lookup(root, ino, True)
    if he is None:
        return
    hot_freq_update(he.freq, write, now_ns)
    range_size = 1 << RANGE_BITS
    end = (start + length + range_size - 1) >> RANGE_BITS
    for cur in range(start >> RANGE_BITS, end):
        hr = hot_range_item_lookup(he, cur, True)
        if hr is None:  # a deleting range: the kernel WARNs and stops
            return
        hot_freq_update(hr.freq, write, now_ns)


def _map_type(ci: HotCommItem) -> int:
    return ci.freq.flags


def _list_del(root: HotInfo, ci: HotCommItem) -> None:
    """Unlink from whichever bucket list holds it (``list_del_rcu`` + clear HOT_IN_LIST)."""
    lists = root.hot_map[_map_type(ci)]
    for b in (hot_temp_bucket(ci.freq.last_temp), *range(MAP_SIZE)):
        if ci in lists[b]:
            del lists[b][ci]
            break
    ci.in_list = False


def hot_map_update(root: HotInfo, ci: HotCommItem, now_ns: int) -> bool:
    """``hot_map_update(root, ci)``: re-bucket on a bucket change; True if being deleted."""
    temp = hot_temp_calc(ci.freq, now_ns)
    cur_temp = hot_temp_bucket(temp)
    prev_temp = hot_temp_bucket(ci.freq.last_temp)
    if cur_temp != prev_temp:
        if ci.in_list:
            _list_del(root, ci)
        if ci.deleting:
            return True
        ci.in_list = True
        root.hot_map[_map_type(ci)][cur_temp][ci] = None
        ci.freq.last_temp = temp
    return False


def hot_comm_item_unlink(root: HotInfo, ci: HotCommItem) -> None:
    """``hot_comm_item_unlink``: mark deleting, leave the map and the tree (an inode takes
    its ranges with it, as ``hot_inode_item_free`` frees the range tree)."""
    if ci.deleting:
        return
    ci.deleting = True
    if ci.in_list:
        _list_del(root, ci)
    if isinstance(ci, HotRangeItem):
        he = root.inodes.get(ci.i_ino)
        if he is not None and he.ranges.get(ci.index) is ci:
            del he.ranges[ci.index]
    elif isinstance(ci, HotInodeItem):
        for hr in list(ci.iter_ranges()):
            hot_comm_item_unlink(root, hr)
        if root.inodes.get(ci.i_ino) is ci:
            del root.inodes[ci.i_ino]


def hot_inode_item_delete(root: HotInfo, ino: int) -> None:
    """``hot_inode_item_delete(inode)``: the file was deleted."""
    he = hot_inode_item_lookup(root, ino, False)
    if he is not None:
        hot_comm_item_unlink(root, he)


def hot_range_update(
    he: HotInodeItem, root: HotInfo, now_ns: int, kick_ns: int | None = None
) -> None:
    """``hot_range_update(he, root)``: re-bucket every range of ``he`` in offset order.

    With ``kick_ns`` (the [2012-VFS] aging), a range that ``hot_is_obsolete`` is dropped
    after its update, as the 2012 code puts its last reference.
    """
    for hr in list(he.iter_ranges()):
        if hr.deleting:
            continue
        if hot_map_update(root, hr, now_ns):
            continue
        if kick_ns is not None and hot_is_obsolete(hr.freq, now_ns, kick_ns):
            hot_comm_item_unlink(root, hr)


def hot_temp_cmp(a: HotCommItem, b: HotCommItem) -> int:
    """``hot_temp_cmp``: ``int diff = a.last_temp - b.last_temp`` (u32 difference read as
    int), hotter first."""
    diff = (a.freq.last_temp - b.freq.last_temp) & U32_MAX
    if diff >= 1 << 31:
        diff -= 1 << 32
    if diff > 0:
        return -1
    if diff < 0:
        return 1
    return 0


def hot_update_worker(root: HotInfo, now_ns: int, kick_ns: int | None = None) -> None:
    """``hot_update_worker``: re-bucket all records, then sort every bucket list.

    ``kick_ns`` enables the [2012-VFS] aging of ranges (None: the 2013 code, no aging).
    """
    for he in list(root.iter_inodes()):
        if he.deleting or hot_map_update(root, he, now_ns):
            continue
        hot_range_update(he, root, now_ns, kick_ns)
    key = functools.cmp_to_key(hot_temp_cmp)
    for type_lists in root.hot_map:
        for i, lst in enumerate(type_lists):
            if len(lst) > 1:
                type_lists[i] = dict.fromkeys(sorted(lst, key=key))


def hot_item_evict(root: HotInfo, work: int) -> int:
    """``hot_item_evict(root, work, hot_cnt_get)`` (the shrinker version): free whole inodes
    from the coldest inode bucket upwards, in list order, until ``work`` records (an inode
    and its ranges count one each) are gone. Returns the number freed. (The kernel skips
    items someone else holds a reference to; a replay holds none.)"""
    budget = work
    freed = 0
    for i in range(MAP_SIZE):
        for ci in list(root.hot_map[TYPE_INODE][i]):
            delta = 1 + len(ci.ranges) if isinstance(ci, HotInodeItem) else 1
            hot_comm_item_unlink(root, ci)
            budget -= delta
            freed += delta
            if budget <= 0:
                return freed
    return freed
