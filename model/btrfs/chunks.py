"""The chunk map: logical → physical (``fs/btrfs/volumes.c``: ``btrfs_get_chunk_map``,
``btrfs_map_block`` for reads, ``btrfs_chunk_item_size``).

Only what one image file can hold is mapped: stripes on device ``devid`` (the image's own,
from the superblock's dev_item). SINGLE, DUP, RAID1/1C3/1C4 (every stripe a full copy),
RAID0 and RAID10 are mapped; RAID5/6 reads are refused with a FormatError.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from model.btrfs import constants as C
from model.btrfs.items import ChunkItem
from model.errors import FormatError


@dataclass
class ChunkMap:
    """Chunks by logical start, non-overlapping."""

    devid: int
    chunks: dict[int, ChunkItem] = field(default_factory=dict)
    _starts: list[int] = field(default_factory=list)

    def add(self, chunk: ChunkItem, where: int = 0) -> None:
        start = chunk.key.offset
        if start in self.chunks:
            if self.chunks[start] == chunk:
                return
            # the chunk tree's copy supersedes the sys_chunk_array bootstrap copy
            self.chunks[start] = chunk
            return
        i = bisect.bisect_left(self._starts, start)
        if i > 0:
            prev = self.chunks[self._starts[i - 1]]
            if prev.key.offset + prev.length > start:
                raise FormatError(
                    f"chunk at logical {start}",
                    where,
                    f"overlaps the chunk [{prev.key.offset}, {prev.key.offset + prev.length})",
                )
        if i < len(self._starts) and start + chunk.length > self._starts[i]:
            raise FormatError(
                f"chunk at logical {start}",
                where,
                f"overlaps the chunk at {self._starts[i]}",
            )
        self._starts.insert(i, start)
        self.chunks[start] = chunk

    def lookup(self, logical: int) -> ChunkItem | None:
        """``btrfs_get_chunk_map()``: the chunk containing ``logical``."""
        i = bisect.bisect_right(self._starts, logical) - 1
        if i < 0:
            return None
        c = self.chunks[self._starts[i]]
        return c if logical < c.key.offset + c.length else None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self.chunks[s] for s in self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def map_read(self, logical: int, length: int) -> list[int]:
        """Physical offsets of every copy of [logical, logical+length) on this device.

        The range must not cross a stripe boundary (tree blocks never do)."""
        c = self.lookup(logical)
        if c is None:
            raise FormatError("chunk map", 0, "no chunk maps this address", logical)
        off = logical - c.key.offset
        if off + length > c.length:
            raise FormatError("chunk map", 0, f"range of {length} runs past its chunk", logical)
        profile = c.type & C.BLOCK_GROUP_PROFILE_MASK
        if profile & (C.BLOCK_GROUP_RAID5 | C.BLOCK_GROUP_RAID6):
            raise FormatError("chunk map", 0, "RAID5/6 chunks are not mapped", logical)
        if profile & (C.BLOCK_GROUP_RAID0 | C.BLOCK_GROUP_RAID10):
            slen = c.stripe_len
            if slen <= 0:
                raise FormatError("chunk map", 0, f"stripe_len {slen}", logical)
            stripe_nr, in_stripe = divmod(off, slen)
            if in_stripe + length > slen:
                raise FormatError("chunk map", 0, "range crosses a stripe boundary", logical)
            if profile & C.BLOCK_GROUP_RAID0:
                idxs = [stripe_nr % c.num_stripes]
                row = stripe_nr // c.num_stripes
            else:
                sub = max(c.sub_stripes, 1)
                factor = max(c.num_stripes // sub, 1)
                first = (stripe_nr % factor) * sub
                idxs = list(range(first, min(first + sub, c.num_stripes)))
                row = stripe_nr // factor
            cands = [(c.stripes[i], row * slen + in_stripe) for i in idxs]
        else:
            cands = [(s, off) for s in c.stripes]
        out = [s.offset + o for s, o in cands if s.devid == self.devid]
        if not out:
            raise FormatError(
                "chunk map",
                0,
                f"no copy on device {self.devid} (stripes on {[s.devid for s in c.stripes]})",
                logical,
            )
        return out
