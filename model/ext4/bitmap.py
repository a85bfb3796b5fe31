"""Block bitmaps as free runs.

Bit ``i`` of a block bitmap is byte ``i >> 3``, bit ``i & 7`` (``ext4_test_bit`` is the
little-endian ``test_bit_le``); 1 = in use. A free run is a maximal range of 0 bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Runs = list[tuple[int, int]]


def free_run_arrays(
    bitmap: bytes, nbits: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Starts and lengths of the free runs among the first ``nbits`` bits."""
    raw = np.frombuffer(bitmap, dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:nbits].astype(np.int8)
    padded = np.concatenate(([1], bits, [1])).astype(np.int8)
    d = np.diff(padded)
    starts = np.flatnonzero(d == -1).astype(np.int64)
    ends = np.flatnonzero(d == 1).astype(np.int64)
    return starts, ends - starts


def free_runs(bitmap: bytes, nbits: int) -> Runs:
    """``mb_find_next_zero_bit``/``mb_find_next_bit`` walk (as ``ext4_mb_generate_buddy``
    does) as a list of (start, length)."""
    s, n = free_run_arrays(bitmap, nbits)
    return list(zip(s.tolist(), n.tolist(), strict=True))


def runs_to_bitmap(runs: Runs, nbits: int, size: int) -> bytes:
    """A ``size``-byte bitmap with every bit set except the free runs (bits past ``nbits``
    set too, as ``ext4_mark_bitmap_end`` leaves them)."""
    bits = np.ones(size * 8, dtype=np.uint8)
    for start, length in runs:
        if start < 0 or length <= 0 or start + length > nbits:
            raise ValueError(f"run {start}+{length} outside 0..{nbits}")
        bits[start : start + length] = 0
    return np.packbits(bits, bitorder="little").tobytes()
