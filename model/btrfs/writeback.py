"""Compressed buffered writeback as a state machine: the async path and the delayed path.

Two ways to write back compressible delalloc ranges, over the same state (folios, the
delalloc bits, extent maps, ordered extents, data/metadata reservations, disk extents and
the file extent items they end in):

- ``"async"``: the path in 6.1 (``cow_file_range_async``) and 6.12
  (``run_delalloc_compressed``), fs/btrfs/inode.c. The delalloc range is cut into 512 KiB
  async chunks; a worker compresses each (``compress_file_range``, <= 128 KiB pieces) while
  the chunk's folios stay **locked**; chunks are submitted in queue order
  (``submit_compressed_extents`` -> ``submit_one_async_extent``: reserve the extent, create
  the extent map and the ordered extent, unlock, start writeback, submit); pieces that do
  not compress go to plain COW (``submit_uncompressed_range``).
- ``"delayed"``: the 2026 series "btrfs: delay compression to bbio submission time" (Qu
  Wenruo; seed ``btrfs-delayed-compression-review-2026.txt``). At delalloc time each
  <= 128 KiB piece gets a delayed extent map and a delayed (parent) ordered extent with no
  disk extent; the folios are unlocked at once and go into a delayed bio like any folio;
  when the bio is submitted a worker compresses it, reserves the extent and adds a child
  ordered extent (or, on fallback, uncompressed children); the parent finishes when all its
  bytes are accounted for (children done, or folios invalidated before they reached a
  bio), then finishes its children and releases the reservation of blocks without a child.

Events are methods; :meth:`WritebackModel.enabled` lists the ones that can fire now and a
test (or :func:`run_eager`) picks the order. Folio size == sector size == 4 KiB (no large
folios, as in 6.1 and 6.12). Reservations are counted in bytes of data (``bytes_may_use``
until an extent is reserved, then ``bytes_reserved`` until its ordered extent finishes) and
in one metadata unit per sector (standing for the per-extent and csum metadata reservation
of ``btrfs_delalloc_reserve_metadata``).

The invariants the series' reviewers argue about are functions at the end of the module
(``check_*``); ``patches/delayed-compression/NOTES.md`` maps each to its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from model.btrfs import compression as Z
from model.btrfs import constants as C

SECTOR = 4096


@dataclass
class WritebackFault:
    """Planted bugs for the property tests to catch.

    ``forget_release_no_child``: the delayed path's parent completion does not release the
    data and metadata reservation of sectors that never got a child ordered extent (the
    "reserved space leakage in ranges without a real OE" fixed between the PoC and v1).
    """

    forget_release_no_child: bool = False


@dataclass
class Folio:
    data: bytearray
    dirty: bool = False
    delalloc: bool = False  # EXTENT_DELALLOC not yet run by btrfs_run_delalloc_range
    locked: bool = False
    writeback: bool = False
    ordered: bool = False  # folio Ordered (Private2): an ordered extent covers it


@dataclass
class DiskExtent:
    """A reserved/allocated data extent: ``payload`` is the uncompressed data written."""

    ext_id: int
    ram_bytes: int
    disk_num_bytes: int
    compression: int
    payload: bytes = b""
    raw_size: int = 0
    exact: bool = True  # raw_size is the kernel's compressor output, byte for byte


@dataclass
class OrderedExtent:
    """``struct btrfs_ordered_extent``, plus the series' parent/child links."""

    oe_id: int
    file_offset: int
    num_bytes: int
    disk: DiskExtent | None  # None: a delayed (parent) ordered extent
    bytes_left: int
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    truncated_len: int | None = None
    done: bool = False  # child: its I/O finished, waiting for the parent
    no_child: set[int] = field(default_factory=set)  # parent: sectors invalidated, no child

    @property
    def end(self) -> int:
        return self.file_offset + self.num_bytes

    @property
    def delayed(self) -> bool:
        return self.disk is None


@dataclass
class FileExtent:
    """A file extent item (key offset ``file_offset``) as the model inserts it."""

    file_offset: int
    num_bytes: int
    type: int
    compression: int
    ram_bytes: int
    disk_num_bytes: int
    offset: int = 0
    ext_id: int | None = None
    inline_data: bytes = b""
    inline_size: int = 0
    exact: bool = True

    @property
    def end(self) -> int:
        return self.file_offset + self.num_bytes


@dataclass
class Bio:
    bio_id: int
    start: int
    end: int  # exclusive
    oe_id: int
    delayed: bool = False


@dataclass
class AsyncChunkState:
    start: int
    end: int  # inclusive
    result: Z.ChunkResult | None = None


@dataclass
class Violation:
    invariant: str
    message: str


class WritebackModel:
    """One file on one filesystem, written back through the async or the delayed path."""

    META_UNIT = 1

    def __init__(
        self,
        path: str = "async",
        kernel: str = "6.12",
        opts: Z.MountOptions | None = None,
        fault: WritebackFault | None = None,
        size_kernel: str | None = None,
        compress_fn: Z.CompressFn | None = None,
    ) -> None:
        if path not in ("async", "delayed"):
            raise ValueError(f"path {path!r}")
        self.path = path
        self.kernel = Z.check_modelled_kernel(kernel)
        self.size_kernel = size_kernel or self.kernel
        self.opts = opts or Z.MountOptions(Z.BTRFS_COMPRESS_ZSTD)
        self.fault = fault or WritebackFault()
        self.compress_fn = compress_fn
        self.inode = Z.InodeState()
        self.folios: dict[int, Folio] = {}
        self.expected = bytearray()
        self.data_may_use = 0
        self.data_reserved = 0
        self.meta_reserved = 0
        self.oes: dict[int, OrderedExtent] = {}
        self.items: list[FileExtent] = []
        self.disk: dict[int, DiskExtent] = {}
        self.chunks: list[AsyncChunkState] = []
        self.bios: dict[int, Bio] = {}
        self.delayed_queue: list[Bio] = []
        self.open_bio: Bio | None = None
        self.cursor = 0
        self.violations: list[Violation] = []
        self.log: list[str] = []
        self.ordered_added: list[tuple[int, int]] = []
        self.ordered_finished: list[tuple[int, int]] = []
        # (event "add" | "finish", file_offset, num_bytes, disk_num_bytes, compression) in
        # the order the kernel's btrfs_ordered_extent_add / _remove tracepoints would fire
        self.ordered_log: list[tuple[str, int, int, int, int]] = []
        self.ops_start = 0  # index into ordered_log where the case's own ops begin
        self.compressions: list[tuple[int, int, bool]] = []  # (start, end, folios locked?)
        self._next = 1

    # ---- helpers --------------------------------------------------------------------

    def _id(self) -> int:
        self._next += 1
        return self._next

    def read(self, offset: int, length: int) -> bytes:
        """The page cache as the compressor sees it (zeros past EOF / absent folios)."""
        out = bytearray()
        while length > 0:
            idx, off = divmod(offset, SECTOR)
            n = min(length, SECTOR - off)
            f = self.folios.get(idx)
            out += f.data[off : off + n] if f else bytes(n)
            offset += n
            length -= n
        return bytes(out)

    def _oe_at(self, pos: int) -> OrderedExtent | None:
        """The innermost unfinished ordered extent covering ``pos`` (child before parent)."""
        found = None
        for oe in self.oes.values():
            if (
                oe.file_offset <= pos < oe.end
                and not oe.done
                and (found is None or oe.parent is not None)
            ):
                found = oe
        return found

    def _parent_oe_at(self, pos: int) -> OrderedExtent | None:
        for oe in self.oes.values():
            if oe.parent is None and oe.file_offset <= pos < oe.end:
                return oe
        return None

    def _range_idx(self, start: int, end: int) -> range:
        return range(start // SECTOR, -(-end // SECTOR))

    # ---- user events ----------------------------------------------------------------

    def can_write(self, offset: int, length: int) -> bool:
        """Buffered writes wait for locked folios, folios under writeback (stable pages) and
        ordered extents in the range (``lock_and_cleanup_extent_if_need``)."""
        lo, hi = offset // SECTOR * SECTOR, -(-(offset + length) // SECTOR) * SECTOR
        old = self.inode.i_size
        if offset > old and old % SECTOR:
            lo = min(lo, old // SECTOR * SECTOR)  # btrfs_cont_expand touches the EOF block
        for i in self._range_idx(lo, hi):
            f = self.folios.get(i)
            if f and (f.locked or f.writeback):
                return False
        return not any(oe.file_offset < hi and lo < oe.end for oe in self.oes.values())

    def write(self, offset: int, data: bytes) -> None:
        """``btrfs_buffered_write``: copy into the page cache, set delalloc, reserve data
        (``btrfs_check_data_free_space``) and metadata for sectors not already delalloc."""
        assert data and self.can_write(offset, len(data)), "write not enabled"
        end = offset + len(data)
        old = self.inode.i_size
        if offset > old and old % SECTOR and (old // SECTOR) in self.folios:
            # btrfs_cont_expand -> btrfs_truncate_block(oldsize): the block holding the old
            # EOF is zeroed past it and dirtied again.
            f = self.folios[old // SECTOR]
            if not f.delalloc:
                self.data_may_use += SECTOR
                self.meta_reserved += self.META_UNIT
                f.delalloc = True
            f.dirty = True
        if end > len(self.expected):
            self.expected += bytes(end - len(self.expected))
        self.expected[offset:end] = data
        pos = offset
        while pos < end:
            idx, off = divmod(pos, SECTOR)
            n = min(end - pos, SECTOR - off)
            f = self.folios.setdefault(idx, Folio(bytearray(SECTOR)))
            f.data[off : off + n] = data[pos - offset : pos - offset + n]
            if not f.delalloc and not f.ordered:
                self.data_may_use += SECTOR
                self.meta_reserved += self.META_UNIT
                f.delalloc = True
            f.dirty = True
            pos += n
        self.inode.i_size = max(self.inode.i_size, end)
        self.log.append(f"write {offset} {len(data)}")

    def can_truncate(self, size: int) -> bool:
        """Enabled when no folio past the new size is locked or under writeback, and no
        unfinished ordered extent reaching past it has already done I/O there (the kernel
        would wait for those in ``btrfs_wait_ordered_range``; the model does not)."""
        first = -(-size // SECTOR)
        if size >= self.inode.i_size or any(
            f.locked or f.writeback for i, f in self.folios.items() if i >= first
        ):
            return False
        for oe in self.oes.values():
            for i in self._range_idx(max(oe.file_offset, first * SECTOR), oe.end):
                f = self.folios.get(i)
                if oe.end > first * SECTOR and (f is None or not (f.dirty and f.ordered)):
                    return False
        return True

    def truncate(self, size: int) -> None:
        """Shrink the file: ``truncate_pagecache`` -> ``btrfs_invalidate_folio`` for every
        folio wholly past the new size (not locked, not under writeback), then
        ``btrfs_truncate_inode_items`` for the items already in the tree.

        A delalloc folio drops its delalloc bit and reservation (EXTENT_CLEAR_DATA_RESV,
        EXTENT_DO_ACCOUNTING); an Ordered folio never gets its I/O: its ordered extent is
        marked truncated and its pending bytes drop (a delayed parent records a sector that
        will have no child)."""
        assert self.can_truncate(size), "truncate not enabled"
        first = -(-size // SECTOR)
        for idx in sorted(i for i in self.folios if i >= first):
            f = self.folios.pop(idx)
            pos = idx * SECTOR
            if f.delalloc:
                self.data_may_use -= SECTOR
                self.meta_reserved -= self.META_UNIT
            elif f.ordered:
                oe = self._oe_at(pos)
                assert oe is not None, f"Ordered folio {pos} without an ordered extent"
                if oe.delayed:
                    oe.no_child.add(pos)
                else:
                    oe.truncated_len = min(
                        oe.truncated_len if oe.truncated_len is not None else oe.num_bytes,
                        pos - oe.file_offset,
                    )
                self._dec_pending(oe, SECTOR)
        if size % SECTOR and (size // SECTOR) in self.folios:
            f = self.folios[size // SECTOR]
            f.data[size % SECTOR :] = bytes(SECTOR - size % SECTOR)
        del self.expected[size:]
        self.inode.i_size = size
        self.inode.disk_i_size = min(self.inode.disk_i_size, size)
        keep: list[FileExtent] = []
        for it in self.items:
            if it.file_offset >= size and it.type != C.FILE_EXTENT_INLINE:
                continue
            if it.type == C.FILE_EXTENT_REG and it.end > size:
                it.num_bytes = -(-(size - it.file_offset) // SECTOR) * SECTOR
            if it.type == C.FILE_EXTENT_INLINE and it.ram_bytes > size:
                it.ram_bytes = size
                it.num_bytes = size
                it.inline_data = it.inline_data[:size]
            keep.append(it)
        self.items = keep
        self.log.append(f"truncate {size}")

    # ---- the flusher (extent_writepage / writepage_delalloc) ------------------------

    def _next_dirty(self) -> int | None:
        cands = [i for i, f in self.folios.items() if f.dirty and i >= self.cursor]
        return min(cands) if cands else None

    def can_flush_step(self) -> bool:
        idx = self._next_dirty()
        if idx is None:
            return any(f.dirty for f in self.folios.values()) or self.open_bio is not None
        return not self.folios[idx].locked

    def flush_step(self) -> None:
        """Write back the next dirty folio from the cursor (``extent_writepage``): run its
        delalloc range if it has one, then add it to the flusher's bio. At the end of a
        pass, submit the open bio and start the next pass from file offset 0."""
        idx = self._next_dirty()
        if idx is None:
            self._submit_open_bio()
            self.cursor = 0
            return
        f = self.folios[idx]
        assert not f.locked
        f.locked = True
        self.cursor = idx + 1
        if f.delalloc:
            handled = self._run_delalloc_range(idx)
            if handled:
                return
        if f.dirty:
            assert f.ordered, f"dirty folio {idx * SECTOR} with neither delalloc nor OE"
            self._add_to_bio(idx)
        else:
            f.locked = False

    def flush_break(self) -> None:
        """The writeback pass stops here (``nr_to_write`` used up): the open bio is
        submitted and the next pass starts again from offset 0."""
        self._submit_open_bio()
        self.cursor = 0

    def _run_delalloc_range(self, idx: int) -> bool:
        """``btrfs_run_delalloc_range`` for the delalloc range starting at folio ``idx``
        (``find_lock_delalloc_range``: from the locked folio, contiguous, <= 128 MiB).
        Returns True when the folio was taken over (async path, inline)."""
        start = idx * SECTOR
        last = idx
        while (
            last + 1 in self.folios
            and self.folios[last + 1].delalloc
            and (last + 2 - idx) * SECTOR <= C.BTRFS_MAX_EXTENT_SIZE
        ):
            last += 1
        end = (last + 1) * SECTOR - 1
        for i in range(idx, last + 1):
            self.folios[i].locked = True
            self.folios[i].delalloc = False
        need = Z.btrfs_inode_can_compress(self.inode) and Z.inode_need_compress(
            self.opts, self.inode, self.read, start, end
        )
        self.log.append(f"delalloc [{start},{end + 1}) compress={need}")
        if need and self.path == "async":
            for cs, ce in Z.async_chunks(start, end):
                self.chunks.append(AsyncChunkState(cs, ce))
            return True
        if need and self.path == "delayed":
            if start == 0 and end < SECTOR:
                # A one-sector range at offset 0 may become an inline extent: the model
                # keeps the synchronous decision there (compress_file_range + inline).
                res = Z.compress_file_range(
                    self.kernel,
                    self.opts,
                    self.inode,
                    self.read,
                    start,
                    end,
                    self.compress_fn,
                    self.size_kernel,
                )
                self._apply_chunk_result(res, start, end, unlock_current=False)
                return res.inline is not None
            pos = start
            while pos <= end:
                n = min(Z.BTRFS_MAX_UNCOMPRESSED, end + 1 - pos)
                oe = OrderedExtent(self._id(), pos, n, None, n)
                self.oes[oe.oe_id] = oe
                self.ordered_added.append((pos, n))
                self._log_ordered("add", oe)
                pos += n
            for i in range(idx, last + 1):
                self.folios[i].ordered = True
                if i != idx:
                    self.folios[i].locked = False
            return False
        return self._cow_file_range(start, end, locked_idx=idx) is None

    # ---- plain COW (cow_file_range) ---------------------------------------------------

    def _inline(self, size: int, compressed_size: int, ctype: int, exact: bool) -> None:
        """``__cow_file_range_inline``: the item goes in now; the sector's data reservation
        is freed (``btrfs_qgroup_free_data``) and metadata released with the delalloc
        accounting; the folio is cleaned without I/O."""
        self._drop_range(0, SECTOR)
        self.items.append(
            FileExtent(
                0,
                size,
                C.FILE_EXTENT_INLINE,
                ctype,
                size,
                0,
                inline_data=self.read(0, size),
                inline_size=compressed_size or size,
                exact=exact,
            )
        )
        self.items.sort(key=lambda it: it.file_offset)
        self.data_may_use -= SECTOR
        self.meta_reserved -= self.META_UNIT
        f = self.folios[0]
        f.dirty = f.locked = f.delalloc = False
        self.log.append(f"inline size={size} data_len={compressed_size or size}")

    def _cow_file_range(
        self, start: int, end: int, locked_idx: int | None
    ) -> list[OrderedExtent] | None:
        """``cow_file_range`` [start, end]: an inline extent if ``can_cow_file_range_inline``,
        else extents of at most C.BTRFS_MAX_EXTENT_SIZE, each with an extent map and a regular
        ordered extent; folios get Ordered and are unlocked except ``locked_idx``."""
        size = min(self.inode.i_size, end + 1)
        if Z.can_cow_file_range_inline(self.opts, self.inode.i_size, start, size, 0):
            self._inline(size, 0, 0, True)
            return None
        pos = start
        made = []
        while pos <= end:
            n = min(C.BTRFS_MAX_EXTENT_SIZE, end + 1 - pos)
            made.append(self._new_ordered(pos, n, n, Z.BTRFS_COMPRESS_NONE, 0))
            pos += n
        for i in self._range_idx(start, end + 1):
            f = self.folios[i]
            f.ordered = True
            f.delalloc = False
            if i != locked_idx:
                f.locked = False
        return made

    def _new_ordered(
        self,
        pos: int,
        n: int,
        disk_bytes: int,
        ctype: int,
        raw: int,
        parent: OrderedExtent | None = None,
        exact: bool = True,
    ) -> OrderedExtent:
        """``btrfs_reserve_extent`` + ``btrfs_create_io_em`` + ``btrfs_alloc_ordered_extent``:
        bytes_may_use -> bytes_reserved (``btrfs_add_reserved_bytes(ram, num)``)."""
        ext = DiskExtent(self._id(), n, disk_bytes, ctype, self.read(pos, n), raw, exact)
        self.disk[ext.ext_id] = ext
        self.data_may_use -= n
        self.data_reserved += disk_bytes
        oe = OrderedExtent(self._id(), pos, n, ext, n, parent=parent.oe_id if parent else None)
        self.oes[oe.oe_id] = oe
        if parent is not None:
            parent.children.append(oe.oe_id)
        self.ordered_added.append((pos, n))
        self._log_ordered("add", oe)
        return oe

    def _log_ordered(self, event: str, oe: OrderedExtent) -> None:
        d = oe.disk
        self.ordered_log.append(
            (
                event,
                oe.file_offset,
                oe.num_bytes,
                d.disk_num_bytes if d else 0,
                d.compression if d else 0,
            )
        )

    # ---- bios -------------------------------------------------------------------------

    def _set_writeback(self, i: int) -> None:
        f = self.folios[i]
        f.dirty = False
        f.writeback = True
        f.locked = False
        pos = i * SECTOR
        if self._oe_at(pos) is None:
            self.violations.append(
                Violation("writeback-has-ordered", f"folio {pos} reached writeback without OE")
            )

    def _add_to_bio(self, idx: int) -> None:
        """``submit_extent_folio``: the folio joins the flusher's bio; the bio is submitted
        when the next folio is not contiguous or belongs to another ordered extent, and at
        the end of the ordered extent."""
        pos = idx * SECTOR
        oe = self._parent_oe_at(pos) if self.path == "delayed" else None
        if oe is None or not oe.delayed:
            oe = self._oe_at(pos)
        assert oe is not None
        b = self.open_bio
        if b is not None and (b.end != pos or b.oe_id != oe.oe_id):
            self._submit_open_bio()
            b = None
        if b is None:
            b = Bio(self._id(), pos, pos, oe.oe_id, delayed=oe.delayed)
            self.open_bio = b
        b.end = pos + SECTOR
        self._set_writeback(idx)
        if b.end >= oe.end:
            self._submit_open_bio()

    def _submit_open_bio(self) -> None:
        b = self.open_bio
        self.open_bio = None
        if b is None:
            return
        if b.delayed:
            self.delayed_queue.append(b)
        else:
            self.bios[b.bio_id] = b

    def complete_bio(self, bio_id: int) -> None:
        """The bio's I/O ends: folios leave writeback, the ordered extent's pending bytes
        drop (``btrfs_finish_ordered_extent``) and a completed ordered extent finishes."""
        b = self.bios.pop(bio_id)
        for i in self._range_idx(b.start, b.end):
            if i in self.folios:
                self.folios[i].writeback = False
                self.folios[i].ordered = False
        oe = self.oes[b.oe_id]
        self._dec_pending(oe, b.end - b.start)

    # ---- the async path: compress_file_range / submit_one_async_extent ------------------

    def compress_chunk(self, k: int) -> None:
        """A ``delalloc_workers`` thread runs ``compress_file_range`` for chunk ``k`` (any
        order: the compression half of the ordered work runs in parallel). The chunk's folios
        are locked all along."""
        ch = self.chunks[k]
        assert ch.result is None
        locked = all(
            self.folios[i].locked for i in self._range_idx(ch.start, ch.end + 1) if i in self.folios
        )
        self.compressions.append((ch.start, ch.end + 1, locked))
        ch.result = Z.compress_file_range(
            self.kernel,
            self.opts,
            self.inode,
            self.read,
            ch.start,
            ch.end,
            self.compress_fn,
            self.size_kernel,
        )

    def can_submit_chunk(self) -> bool:
        return bool(self.chunks) and self.chunks[0].result is not None

    def submit_chunk(self) -> None:
        """The ordered half: the oldest chunk's async extents are submitted in order."""
        ch = self.chunks.pop(0)
        assert ch.result is not None
        self._apply_chunk_result(ch.result, ch.start, ch.end, unlock_current=True)

    def _apply_chunk_result(
        self, res: Z.ChunkResult, start: int, end: int, unlock_current: bool
    ) -> None:
        if res.inline is not None:
            inl = res.inline
            self._inline(inl.size, inl.compressed_size, inl.compress_type, inl.exact)
            for i in self._range_idx(start, end + 1):
                f = self.folios.get(i)
                if f:
                    f.locked = False
            return
        for ae in res.extents:
            if ae.compress_type == Z.BTRFS_COMPRESS_NONE:
                self._submit_uncompressed_range(ae.start, ae.start + ae.ram_size - 1)
                continue
            oe = self._new_ordered(
                ae.start,
                ae.ram_size,
                ae.compressed_size,
                ae.compress_type,
                ae.raw_size,
                exact=ae.exact,
            )
            assert oe.disk is not None
            oe.disk.payload = self.read(ae.start, ae.ram_size)
            self._write_whole_oe(oe)

    def _submit_uncompressed_range(self, start: int, end: int) -> None:
        """``submit_uncompressed_range``: ``cow_file_range`` then
        ``extent_write_locked_range`` over the still-locked folios."""
        for oe in self._cow_file_range(start, end, locked_idx=None) or []:
            self._write_whole_oe(oe)

    def _write_whole_oe(self, oe: OrderedExtent) -> None:
        for i in self._range_idx(oe.file_offset, oe.end):
            self.folios[i].ordered = True
            self.folios[i].delalloc = False
            self._set_writeback(i)
        b = Bio(self._id(), oe.file_offset, oe.end, oe.oe_id)
        self.bios[b.bio_id] = b

    # ---- the delayed path: compression at bio submission --------------------------------

    def delayed_work(self, k: int) -> None:
        """The worker takes delayed bio ``k``: compress the bio's range (folios are under
        writeback, **not locked**), reserve the extent and add a child ordered extent, or
        fall back to an uncompressed child; then submit the real bio."""
        b = self.delayed_queue.pop(k)
        parent = self.oes[b.oe_id]
        locked = any(self.folios[i].locked for i in self._range_idx(b.start, b.end))
        self.compressions.append((b.start, b.end, locked))
        if locked:
            self.violations.append(
                Violation("no-lock-during-compression", f"[{b.start},{b.end}) locked")
            )
        end = b.end - 1
        ctype = self.inode.prop_compress or self.opts.compress_type
        child = None
        actual_end = min(self.inode.i_size, b.end)
        if Z.inode_need_compress(self.opts, self.inode, self.read, b.start, end) and (
            actual_end - b.start > self.opts.sectorsize
            or (b.start == 0 and b.end >= self.inode.disk_i_size)
        ):
            fn = self.compress_fn or Z.btrfs_compress_folios
            out = fn(
                ctype,
                self.opts.level,
                self.read(b.start, actual_end - b.start),
                len(self._range_idx(b.start, b.end)),
                self.size_kernel,
            )
            bs = self.opts.sectorsize
            aligned = -(-out.total_out // bs) * bs
            total_in = -(-out.total_in // bs) * bs
            one_block_at_0 = self.kernel == "6.12" and b.start == 0 and end <= bs
            if out.ret == 0 and aligned + bs <= total_in:
                child = self._new_ordered(
                    b.start, total_in, aligned, ctype, out.total_out, parent, out.exact
                )
            elif one_block_at_0 and out.ret == 0:
                pass
            elif not self.opts.force_compress and not self.inode.prop_compress:
                self.inode.flags |= C.BTRFS_INODE_NOCOMPRESS
        if child is None:
            child = self._new_ordered(
                b.start, b.end - b.start, b.end - b.start, Z.BTRFS_COMPRESS_NONE, 0, parent
            )
        real = Bio(self._id(), b.start, b.end, child.oe_id)
        self.bios[real.bio_id] = real

    def _dec_pending(self, oe: OrderedExtent, n: int) -> None:
        oe.bytes_left -= n
        assert oe.bytes_left >= 0, "ordered extent over-completed"
        if oe.bytes_left > 0:
            return
        if oe.parent is not None:
            oe.done = True
            parent = self.oes[oe.parent]
            self._dec_pending(parent, oe.num_bytes)
            return
        self._finish_ordered(oe)

    def _finish_ordered(self, oe: OrderedExtent) -> None:
        """``btrfs_finish_one_ordered``: insert the file extent item(s), turn the reserved
        bytes into used ones, release the metadata; a delayed parent finishes its children
        first and releases what its child-less sectors reserved."""
        del self.oes[oe.oe_id]
        self.ordered_finished.append((oe.file_offset, oe.num_bytes))
        self._log_ordered("finish", oe)
        if oe.delayed:
            for cid in oe.children:
                child = self.oes.pop(cid)
                self.ordered_finished.append((child.file_offset, child.num_bytes))
                self._log_ordered("finish", child)
                self._insert_for(child)
            if not self.fault.forget_release_no_child:
                self.data_may_use -= SECTOR * len(oe.no_child)
                self.meta_reserved -= self.META_UNIT * len(oe.no_child)
            for pos in oe.no_child:
                f = self.folios.get(pos // SECTOR)
                if f:
                    f.ordered = False
            for i in self._range_idx(oe.file_offset, oe.end):
                if i in self.folios:
                    self.folios[i].ordered = False
            return
        self._insert_for(oe)

    def _insert_for(self, oe: OrderedExtent) -> None:
        ext = oe.disk
        assert ext is not None
        n = oe.num_bytes if oe.truncated_len is None else oe.truncated_len
        self.data_reserved -= ext.disk_num_bytes
        self.meta_reserved -= self.META_UNIT * (oe.num_bytes // SECTOR)
        for i in self._range_idx(oe.file_offset, oe.end):
            if i in self.folios:
                self.folios[i].ordered = False
        if n == 0:
            del self.disk[ext.ext_id]
            return
        self._drop_range(oe.file_offset, oe.file_offset + n)
        self.items.append(
            FileExtent(
                oe.file_offset,
                n,
                C.FILE_EXTENT_REG,
                ext.compression,
                ext.ram_bytes,
                ext.disk_num_bytes,
                0,
                ext.ext_id,
                exact=ext.compression == 0 or ext.raw_size == 0 or ext.exact,
            )
        )
        self.items.sort(key=lambda it: it.file_offset)
        self.inode.disk_i_size = max(
            self.inode.disk_i_size, min(self.inode.i_size, oe.file_offset + n)
        )

    def _drop_range(self, start: int, end: int) -> None:
        """``btrfs_drop_extents``: items overlapping [start, end) are cut around it (the
        kept parts of a regular extent keep pointing into it with an adjusted offset)."""
        out: list[FileExtent] = []
        for it in self.items:
            it_end = it.file_offset + (SECTOR if it.type == C.FILE_EXTENT_INLINE else it.num_bytes)
            if it_end <= start or it.file_offset >= end:
                out.append(it)
                continue
            if it.type == C.FILE_EXTENT_INLINE:
                continue
            if it.file_offset < start:
                left = FileExtent(**{**it.__dict__})
                left.num_bytes = start - it.file_offset
                out.append(left)
            if it.end > end:
                right = FileExtent(**{**it.__dict__})
                right.offset = it.offset + (end - it.file_offset)
                right.file_offset = end
                right.num_bytes = it.end - end
                out.append(right)
        self.items = out

    # ---- scheduling -----------------------------------------------------------------

    def enabled(self) -> list[tuple[str, int]]:
        """Events that can fire now (besides writes and truncates): (name, argument)."""
        ev: list[tuple[str, int]] = []
        if self.can_flush_step():
            ev.append(("flush_step", 0))
        if self.open_bio is not None:
            ev.append(("flush_break", 0))
        for k, ch in enumerate(self.chunks):
            if ch.result is None:
                ev.append(("compress_chunk", k))
        if self.can_submit_chunk():
            ev.append(("submit_chunk", 0))
        for k in range(len(self.delayed_queue)):
            ev.append(("delayed_work", k))
        for bid in sorted(self.bios):
            ev.append(("complete_bio", bid))
        return ev

    def fire(self, name: str, arg: int) -> None:
        if name == "flush_step":
            self.flush_step()
        elif name == "flush_break":
            self.flush_break()
        elif name == "compress_chunk":
            self.compress_chunk(arg)
        elif name == "submit_chunk":
            self.submit_chunk()
        elif name == "delayed_work":
            self.delayed_work(arg)
        elif name == "complete_bio":
            self.complete_bio(arg)
        else:
            raise ValueError(name)

    def quiescent(self) -> bool:
        return not self.enabled() and not any(f.dirty for f in self.folios.values())

    def sync(self, choose: Callable[[list[tuple[str, int]]], int] | None = None) -> None:
        """Write back everything and wait (``btrfs_sync_file`` / unmount): fire enabled
        events, chosen by ``choose`` (index into :meth:`enabled`) or eagerly, until
        nothing is dirty, queued, in flight or pending."""
        self.cursor = 0
        for _ in range(1_000_000):
            ev = self.enabled()
            if not ev:
                break
            k = choose(ev) if choose else eager_choice(ev)
            self.fire(*ev[k])
        assert not self.enabled(), "sync did not converge"

    # ---- reading the result -----------------------------------------------------------

    def file_contents(self) -> bytes:
        """The file as read back from its extent items (holes read as zeros)."""
        out = bytearray(self.inode.i_size)
        for it in self.items:
            if it.type == C.FILE_EXTENT_INLINE:
                data = it.inline_data
            else:
                assert it.ext_id is not None
                data = self.disk[it.ext_id].payload[it.offset : it.offset + it.num_bytes]
            lo = it.file_offset
            hi = min(lo + len(data), len(out))
            out[lo:hi] = data[: hi - lo]
        return bytes(out)


def eager_choice(ev: list[tuple[str, int]]) -> int:
    """The predictable schedule: compress and submit each async chunk as soon as it is
    queued, run delayed bios at once, let the flusher go on, complete bios last. (So a
    NOCOMPRESS flag set by one chunk is seen by the next delalloc decision, and disk_i_size
    moves only when the I/O of a sync completes.)"""
    order = ("compress_chunk", "submit_chunk", "delayed_work", "flush_step", "complete_bio")
    for name in order:
        for k, (n, _) in enumerate(ev):
            if n == name:
                return k
    return 0


# ---- invariants ------------------------------------------------------------------------


def check_writeback_has_ordered(m: WritebackModel) -> list[Violation]:
    """Every block that reached writeback had an ordered extent (checked when each folio
    was set writeback, and now for every folio under writeback)."""
    out = [v for v in m.violations if v.invariant == "writeback-has-ordered"]
    for i, f in m.folios.items():
        if f.writeback and m._oe_at(i * SECTOR) is None:
            out.append(Violation("writeback-has-ordered", f"folio {i * SECTOR} now"))
    return out


def check_reservations_released(m: WritebackModel) -> list[Violation]:
    """Once quiescent, reserved data (may_use and reserved) and metadata are back to zero."""
    out = []
    for name in ("data_may_use", "data_reserved", "meta_reserved"):
        v = getattr(m, name)
        if v != 0:
            out.append(Violation("reservations-released", f"{name} = {v} after sync"))
    return out


def check_no_ordered_leak(m: WritebackModel) -> list[Violation]:
    """Once quiescent, no ordered extent (parent or child) is left."""
    return [
        Violation("no-ordered-leak", f"OE [{o.file_offset},{o.end}) left") for o in m.oes.values()
    ]


def check_no_lock_during_compression(m: WritebackModel) -> list[Violation]:
    """Delayed path: no folio of a range is locked while the range is compressed. (The
    async path holds them locked by design; :attr:`WritebackModel.compressions` shows it.)"""
    return [v for v in m.violations if v.invariant == "no-lock-during-compression"]


def check_contents(m: WritebackModel) -> list[Violation]:
    """The file read back through its extent items equals what was written."""
    got, want = m.file_contents(), bytes(m.expected)
    if got == want:
        return []
    first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), None)
    return [Violation("contents", f"differs at {first} (sizes {len(got)} {len(want)})")]


def check_all(m: WritebackModel) -> list[Violation]:
    """All invariants; the quiescent ones only when the model is quiescent."""
    out = check_writeback_has_ordered(m) + check_no_lock_during_compression(m)
    if m.quiescent():
        out += check_reservations_released(m) + check_no_ordered_leak(m) + check_contents(m)
    return out
