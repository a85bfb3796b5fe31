"""``btrfs check``'s free space tree checks, as a streaming checker over the free space
tree's items in key order.

Sources: btrfs-progs ``check/clear-cache.c`` (``check_space_cache``,
``verify_space_cache``, ``check_cache_range``, ``check_free_space_tree``),
``kernel-shared/free-space-tree.c`` (``load_free_space_tree``,
``load_free_space_extents``, ``load_free_space_bitmaps``), ``common/repair.c``
(``btrfs_mark_used_blocks``: the used space is every EXTENT_ITEM and METADATA_ITEM of the
extent tree), and the kernel's ``fs/btrfs/block-group.c`` (``btrfs_rmap_block``,
``exclude_super_stripes``).

What is tolerated, exactly as btrfs check does:

* a FREE_SPACE_INFO run whose key is not a block group's (mkfs leaves such stale runs for
  its temporary chunks at 1 MiB and 5 MiB) is never loaded: ``check_space_cache`` looks
  up runs by block group, and ``check_free_space_tree`` only asks that each INFO key be
  followed, ``key.offset`` bytes on, by the next INFO key, and that some block group
  contains or follows its start (``btrfs_lookup_first_block_group``);
* superblock mirror stripes are neither free nor used: both the recorded free space and
  the expected complement have them cut out before comparing;
* free extents are compared as a set: the recorded ones are merged (``btrfs_add_free_space``
  merges neighbours) before comparing, and only ``load_free_space_extents`` flags
  unmerged neighbours (bitmap runs that cross bitmap items count once).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from model.btrfs import constants as C
from model.btrfs.findings import BtrfsFinding
from model.btrfs.intervals import (
    Interval,
    complement_intervals,
    merge_intervals,
    subtract_intervals,
    symmetric_difference,
)
from model.btrfs.items import ChunkItem, Key


@dataclass(frozen=True, slots=True)
class BgRange:
    """What the free space checks need of a block group."""

    start: int
    length: int
    flags: int

    @property
    def end(self) -> int:
        return self.start + self.length


def calc_data_stripes(chunk_type: int, num_stripes: int) -> int:
    """``calc_data_stripes()`` (``fs/btrfs/volumes.c``): (num_stripes - nparity) / ncopies
    from ``btrfs_raid_array``."""
    p = chunk_type & C.BLOCK_GROUP_PROFILE_MASK
    ncopies, nparity = 1, 0
    if p & (C.BLOCK_GROUP_RAID1 | C.BLOCK_GROUP_DUP | C.BLOCK_GROUP_RAID10):
        ncopies = 2
    elif p & C.BLOCK_GROUP_RAID1C3:
        ncopies = 3
    elif p & C.BLOCK_GROUP_RAID1C4:
        ncopies = 4
    elif p & C.BLOCK_GROUP_RAID5:
        nparity = 1
    elif p & C.BLOCK_GROUP_RAID6:
        nparity = 2
    return max((num_stripes - nparity) // ncopies, 1)


def btrfs_calc_stripe_length(chunk: ChunkItem) -> int:
    """``btrfs_calc_stripe_length()``: bytes of the chunk on each stripe (the length of
    each of its dev extents)."""
    return chunk.length // calc_data_stripes(chunk.type, chunk.num_stripes)


def btrfs_rmap_block(chunk: ChunkItem, physical: int) -> tuple[list[int], int]:
    """``btrfs_rmap_block()`` (``fs/btrfs/block-group.c``): the logical addresses inside
    ``chunk`` that map to ``physical`` on any of its stripes, and the I/O stripe size
    (BTRFS_STRIPE_LEN; a full stripe for RAID5/6)."""
    data_stripe_length = btrfs_calc_stripe_length(chunk)
    io_stripe_size = C.BTRFS_STRIPE_LEN
    if chunk.type & (C.BLOCK_GROUP_RAID5 | C.BLOCK_GROUP_RAID6):
        nparity = 1 if chunk.type & C.BLOCK_GROUP_RAID5 else 2
        io_stripe_size = C.BTRFS_STRIPE_LEN * (chunk.num_stripes - nparity)
    out: list[int] = []
    for i, stripe in enumerate(chunk.stripes):
        if not stripe.offset <= physical < stripe.offset + data_stripe_length:
            continue
        stripe_nr, offset = divmod(physical - stripe.offset, C.BTRFS_STRIPE_LEN)
        if chunk.type & (C.BLOCK_GROUP_RAID0 | C.BLOCK_GROUP_RAID10):
            stripe_nr = (stripe_nr * chunk.num_stripes + i) // max(chunk.sub_stripes, 1)
        bytenr = chunk.key.offset + stripe_nr * io_stripe_size + offset
        if bytenr not in out:
            out.append(bytenr)
    return out, io_stripe_size


def exclude_super_stripes(bg: BgRange, chunk: ChunkItem | None) -> list[Interval]:
    """``exclude_super_stripes()``: the ranges of the block group that hold superblock
    copies (and the bytes below 64 KiB when the block group starts there)."""
    out: list[Interval] = []
    if bg.start < C.SUPER_INFO_OFFSET:  # BTRFS_SUPER_INFO_OFFSET
        out.append((bg.start, C.SUPER_INFO_OFFSET))
    if chunk is None:
        return out
    for mirror in range(C.SUPER_MIRROR_MAX):
        logicals, stripe_len = btrfs_rmap_block(chunk, C.btrfs_sb_offset(mirror))
        for lg in logicals:
            length = min(stripe_len, bg.end - lg)
            if length > 0:
                out.append((lg, lg + length))
    return merge_intervals(out)


def bitmap_runs(data: bytes, nbits: int) -> list[tuple[int, int]]:
    """Runs of set bits ``[first, end)`` among the first ``nbits`` bits of a free space
    bitmap (bit i is bit i % 8 of byte i // 8, ``extent_buffer_test_bit``)."""
    bits = int.from_bytes(data, "little") & ((1 << nbits) - 1)
    out: list[tuple[int, int]] = []
    base = 0
    while bits:
        low = (bits & -bits).bit_length() - 1
        bits >>= low
        base += low
        ones = (bits ^ (bits + 1)).bit_length() - 1  # trailing one bits
        out.append((base, base + ones))
        bits >>= ones
        base += ones
    return out


@dataclass
class _Run:
    """The items after one FREE_SPACE_INFO, up to the next."""

    info_key: Key
    extent_count: int
    flags: int
    leaf: int
    # (key, bitmap bytes or None)
    items: list[tuple[Key, bytes | None]] = field(default_factory=list)


@dataclass
class FreeSpaceTreeChecker:
    """Feed it the free space tree's items in key order (:meth:`feed`), then call
    :meth:`finish`. ``used`` is the merged used space (``btrfs_mark_used_blocks``),
    ``bgs`` the block groups sorted by start, ``chunks`` the chunk items by start."""

    sectorsize: int
    bgs: Sequence[BgRange]
    chunks: dict[int, ChunkItem]
    used: list[Interval]
    report: Callable[[BtrfsFinding], None]
    tree: int = C.FREE_SPACE_TREE_OBJECTID
    _by_key: dict[tuple[int, int], BgRange] = field(default_factory=dict)
    _starts: list[int] = field(default_factory=list)
    _loaded: set[int] = field(default_factory=set)
    _run: _Run | None = None
    # check_free_space_tree(): the next key the INFO chain must land on
    _chain_target: int = 0
    _chain_broken: bool = False
    _chain_pending: bool = True

    def __post_init__(self) -> None:
        self._by_key = {(b.start, b.length): b for b in self.bgs}
        self._starts = [b.start for b in self.bgs]

    # ---- helpers -----------------------------------------------------------------------

    def _lookup_first_block_group(self, bytenr: int) -> BgRange | None:
        """``btrfs_lookup_first_block_group()`` (progs): the block group containing
        ``bytenr``, else the first one starting after it."""
        i = bisect.bisect_right(self._starts, bytenr) - 1
        if i >= 0 and bytenr < self.bgs[i].end:
            return self.bgs[i]
        return self.bgs[i + 1] if i + 1 < len(self.bgs) else None

    def _finding(self, code: str, what: str, msg: str, bytenr: int | None) -> None:
        self.report(BtrfsFinding(code, what, msg, bytenr, self.tree))

    # ---- streaming ---------------------------------------------------------------------

    def feed(self, leaf: int, key: Key, data: bytes) -> None:
        """One item of the free space tree, in key order."""
        self._check_free_space_tree_step(key)
        if key.type == C.FREE_SPACE_INFO_KEY:
            self._close_run()
            if len(data) != 8:
                self._finding(
                    "fst-item",
                    f"free space info {key}",
                    f"item size {len(data)}, expected 8",
                    key.objectid,
                )
                return
            count = int.from_bytes(data[0:4], "little")
            flags = int.from_bytes(data[4:8], "little")
            self._run = _Run(key, count, flags, leaf)
            return
        if self._run is None:
            # before the first INFO: check_free_space_tree reports it
            return
        self._run.items.append((key, bytes(data) if key.type == C.FREE_SPACE_BITMAP_KEY else None))

    def _check_free_space_tree_step(self, key: Key) -> None:
        """``check_free_space_tree()``: from key (0, 0, 0), the first item at or after the
        target must be a FREE_SPACE_INFO whose start some block group contains or
        follows; the next target is its start plus its length."""
        if self._chain_broken or key.objectid < self._chain_target:
            return
        self._chain_pending = False
        if key.type != C.FREE_SPACE_INFO_KEY:
            self._finding(
                "fst-chain",
                f"free space key {key}",
                f"failed to find a space info key at {self._chain_target}",
                key.objectid,
            )
            self._chain_broken = True
            return
        if self._lookup_first_block_group(key.objectid) is None:
            self._finding(
                "fst-chain",
                f"free space info {key}",
                "space info key for a block group that doesn't exist",
                key.objectid,
            )
            self._chain_broken = True
            return
        self._chain_target = key.objectid + key.offset
        self._chain_pending = True

    def _close_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        bg = self._by_key.get((run.info_key.objectid, run.info_key.offset))
        if bg is None:
            return  # a stale run: no block group loads it (tolerated)
        self._loaded.add(bg.start)
        free = self.load_free_space_tree(bg, run)
        self.verify_space_cache(bg, run, free)

    def finish(self) -> None:
        """End of the tree: check the last run and the block groups that have none."""
        self._close_run()
        for bg in self.bgs:
            if bg.start not in self._loaded:
                self._finding(
                    "fst-missing",
                    f"block group {bg.start}",
                    f"no free space info ({bg.start} {C.FREE_SPACE_INFO_KEY} {bg.length})"
                    " for the block group: could not load free space tree",
                    bg.start,
                )

    # ---- per block group ---------------------------------------------------------------

    def load_free_space_tree(self, bg: BgRange, run: _Run) -> list[Interval]:
        """``load_free_space_tree()``: the free intervals the run records (extents or
        bitmaps, by the INFO flags), reporting what the loader reports."""
        if run.flags & C.FREE_SPACE_USING_BITMAPS:
            return self.load_free_space_bitmaps(bg, run)
        return self.load_free_space_extents(bg, run)

    def load_free_space_extents(self, bg: BgRange, run: _Run) -> list[Interval]:
        """``load_free_space_extents()``: extents inside the block group, not overlapping
        or touching the previous one; their number equals the INFO's extent_count."""
        out: list[Interval] = []
        prev: Key | None = None
        count = 0
        for key, _ in run.items:
            what = f"block group {bg.start} free space key {key}"
            if key.type != C.FREE_SPACE_EXTENT_KEY:
                self._finding("fst-item", what, f"unexpected key of type {key.type}", bg.start)
                break
            if key.objectid >= bg.end or key.objectid + key.offset > bg.end:
                self._finding(
                    "fst-range",
                    what,
                    f"free space extent [{key.objectid}, {key.objectid + key.offset}) "
                    f"beyond the end of block group [{bg.start}, {bg.end})",
                    bg.start,
                )
                break
            if key.objectid < bg.start:
                self._finding(
                    "fst-range",
                    what,
                    f"free space extent starts before block group [{bg.start}, {bg.end})",
                    bg.start,
                )
            if prev is not None:
                prev_end = prev.objectid + prev.offset
                if key.objectid < prev_end:
                    self._finding(
                        "fst-overlap",
                        what,
                        f"free space extent overlaps the previous one {prev}",
                        bg.start,
                    )
                elif key.objectid == prev_end:
                    self._finding(
                        "fst-unmerged",
                        what,
                        f"free space extent is unmerged with the previous one {prev}",
                        bg.start,
                    )
            out.append((key.objectid, key.objectid + key.offset))
            count += 1
            prev = key
        self._check_extent_count(bg, run, count)
        return out

    def load_free_space_bitmaps(self, bg: BgRange, run: _Run) -> list[Interval]:
        """``load_free_space_bitmaps()``: bitmap items inside the block group; runs of set
        bits continue across consecutive bitmaps; a run still open after the last bitmap
        ends at the end of the block group; the number of runs equals extent_count."""
        out: list[Interval] = []
        ss = self.sectorsize
        open_start: int | None = None
        count = 0
        for key, data in run.items:
            what = f"block group {bg.start} free space key {key}"
            if key.type != C.FREE_SPACE_BITMAP_KEY or data is None:
                self._finding("fst-item", what, f"unexpected key of type {key.type}", bg.start)
                break
            if key.objectid >= bg.end or key.objectid + key.offset > bg.end:
                self._finding(
                    "fst-range",
                    what,
                    f"free space bitmap [{key.objectid}, {key.objectid + key.offset}) "
                    f"beyond the end of block group [{bg.start}, {bg.end})",
                    bg.start,
                )
                break
            nbits = key.offset // ss
            if len(data) * 8 < nbits:
                self._finding(
                    "fst-item",
                    what,
                    f"bitmap of {len(data)} bytes cannot hold {nbits} bits",
                    bg.start,
                )
            runs = bitmap_runs(data, nbits)
            first_set = bool(runs) and runs[0][0] == 0
            if open_start is not None and not first_set:
                out.append((open_start, key.objectid))  # closes at the first clear bit
                count += 1
                open_start = None
            for i, (b0, b1) in enumerate(runs):
                if not (i == 0 and first_set and open_start is not None):
                    open_start = key.objectid + b0 * ss
                if b1 < nbits:
                    assert open_start is not None
                    out.append((open_start, key.objectid + b1 * ss))
                    count += 1
                    open_start = None
        if open_start is not None:
            out.append((open_start, bg.end))
            count += 1
        self._check_extent_count(bg, run, count)
        return out

    def _check_extent_count(self, bg: BgRange, run: _Run, count: int) -> None:
        if count != run.extent_count:
            self._finding(
                "fst-extent-count",
                f"block group {bg.start} free space info {run.info_key}",
                f"free space info records {run.extent_count} extents, counted {count}",
                bg.start,
            )

    def verify_space_cache(self, bg: BgRange, run: _Run, free: list[Interval]) -> None:
        """``verify_space_cache()`` + ``check_cache_range()``: outside the superblock
        stripes, the free space equals exactly the block group minus its used extents."""
        sb = exclude_super_stripes(bg, self.chunks.get(bg.start))
        recorded = subtract_intervals(merge_intervals(free), sb)
        expected = subtract_intervals(complement_intervals(self.used, bg.start, bg.end), sb)
        if recorded == expected:
            return
        diff = symmetric_difference(recorded, expected)
        keys = [k for k, _ in run.items]
        parts = []
        for s, e, in_recorded in diff[:8]:
            near = [str(k) for k in keys if k.objectid < e and k.objectid + k.offset > s][:3]
            if not in_recorded and not near:
                # the recorded extent next to an unrecorded free range names the edit
                near = [str(k) for k in keys if k.objectid + k.offset == s or k.objectid == e]
            state = "recorded free but used by extents" if in_recorded else "free but not recorded"
            parts.append(f"[{s}, {e}) {state}" + (f" (keys {', '.join(near)})" if near else ""))
        more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
        self._finding(
            "fst-mismatch",
            f"block group {bg.start}",
            "free space tree does not match the extent tree: " + "; ".join(parts) + more,
            bg.start,
        )
