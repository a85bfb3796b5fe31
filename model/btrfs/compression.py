"""The btrfs compressed-write decision, as Linux 6.1 and 6.12 make it.

Sources (Debian linux-source 6.1.192 and 6.12.117; ``fs/btrfs``):

- ``inode.c``: ``inode_need_compress``, ``compress_file_range``,
  ``can_cow_file_range_inline`` (6.12; folded into ``cow_file_range_inline`` in 6.1),
  ``btrfs_run_delalloc_range``, ``run_delalloc_compressed`` (6.12) /
  ``cow_file_range_async`` (6.1), ``submit_one_async_extent``;
- ``compression.c``: ``btrfs_compress_heuristic`` and its helpers
  (``heuristic_collect_sample``, ``sample_repeated_patterns``, ``byte_set_size``,
  ``radix_sort``, ``byte_core_set_size``, ``shannon_entropy``, ``ilog2_w``);
- ``zstd.c`` / ``zlib.c`` / ``lzo.c``: ``*_compress_folios`` (6.12) / ``*_compress_pages``
  (6.1): how the input is fed, the early -E2BIG exits and the final size check.

The heuristic and the compressors' btrfs wrappers are identical in 6.1 and 6.12 (diffed);
``compress_file_range`` differs (see :func:`compress_file_range`).

Compressed sizes come from the real compressor libraries: ``zstandard`` reproduces the
kernel's zstd output byte for byte (same parameters: ``zstd_get_btrfs_parameters`` is
``ZSTD_getParams(level, len)`` with windowLog capped at 17, content size in the frame
header, no checksum; checked byte-exact against the host kernel's on-disk extents). Python's
``zlib`` (zlib >= 1.2.5.1 re-inserts the last bytes of each input into the hash chains, the
kernel's zlib 1.1-era ``deflate_fast`` does not) and ``python-lzo`` (liblzo2's lzo1x_1 is not
the kernel's ``lzo1x_1_do_compress``) give sizes a few tens of bytes away from the kernel's:
:class:`CompressOutcome` says which.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard

from model.btrfs import constants as C
from model.btrfs.items import FileExtentItem
from model.btrfs.treeblock import btrfs_leaf_data_size
from model.linux import PAGE_SIZE, SZ_4K, U64

# ---- constants (fs/btrfs/compression.h, fs.h, btrfs_tree.h) -------------------------------

KERNELS = ("6.1", "6.12")
# lib/zstd version each kernel carries (include/linux/zstd_lib.h); 6.18 is the host's, whose
# output matched zstandard's bundled 1.5.7 byte for byte. Userspace zstd output differs
# between versions by a few bytes (1.4.8 / 1.5.2 / 1.5.7 all differ on our patterns), so the
# zstd size is exact only when the bundled library is the kernel's version.
KERNEL_ZSTD_VERSION = {"6.1": (1, 4, 10), "6.12": (1, 5, 2), "6.18": (1, 5, 7)}

SZ_128K = 128 * 1024
SZ_512K = 512 * 1024
BTRFS_MAX_COMPRESSED = SZ_128K  # compression.h
BTRFS_MAX_UNCOMPRESSED = SZ_128K  # compression.h
BTRFS_MAX_COMPRESSED_PAGES = BTRFS_MAX_COMPRESSED // PAGE_SIZE
BTRFS_DEFAULT_MAX_INLINE = 2048  # fs.h
ASYNC_CHUNK_SIZE = SZ_512K  # run_delalloc_compressed / cow_file_range_async: SZ_512K

BTRFS_COMPRESS_NONE = 0
BTRFS_COMPRESS_ZLIB = 1
BTRFS_COMPRESS_LZO = 2
BTRFS_COMPRESS_ZSTD = 3
DEFAULT_LEVEL = {BTRFS_COMPRESS_ZLIB: 3, BTRFS_COMPRESS_LZO: 0, BTRFS_COMPRESS_ZSTD: 3}


E2BIG = -7

# heuristic constants (compression.c)
SAMPLING_READ_SIZE = 16
SAMPLING_INTERVAL = 256
BUCKET_SIZE = 256
MAX_SAMPLE_SIZE = BTRFS_MAX_UNCOMPRESSED * SAMPLING_READ_SIZE // SAMPLING_INTERVAL
ENTROPY_LVL_ACEPTABLE = 65
ENTROPY_LVL_HIGH = 80
RADIX_BASE = 4
COUNTERS_SIZE = 1 << RADIX_BASE
BYTE_CORE_SET_LOW = 64
BYTE_CORE_SET_HIGH = 200
BYTE_SET_THRESHOLD = 64

ReadFn = Callable[[int, int], bytes]
CompressFn = Callable[[int, int, bytes, int, str], "CompressOutcome"]
"""Page-cache reader: ``read(offset, length)``; bytes past EOF read as zeros."""


def check_modelled_kernel(kernel: str) -> str:
    """Normalise 'debian:6.12' / '6.12' to '6.1' or '6.12', the kernels this model covers
    (ValueError for another)."""
    k = kernel.split(":", 1)[-1]
    if k not in KERNELS:
        raise ValueError(f"unmodelled kernel {kernel!r}: one of {', '.join(KERNELS)}")
    return k


# ---- mount options -------------------------------------------------------------------------


@dataclass(frozen=True)
class MountOptions:
    """The mount options the compressed-write path reads (super.c ``btrfs_parse_param``)."""

    compress_type: int = BTRFS_COMPRESS_NONE
    compress_level: int = 0
    force_compress: bool = False
    max_inline: int = BTRFS_DEFAULT_MAX_INLINE
    sectorsize: int = SZ_4K
    nodesize: int = 16384

    @property
    def compress(self) -> bool:
        """``btrfs_test_opt(fs_info, COMPRESS)``."""
        return self.compress_type != BTRFS_COMPRESS_NONE

    @property
    def level(self) -> int:
        return self.compress_level or DEFAULT_LEVEL.get(self.compress_type, 0)


def parse_mount_options(text: str) -> MountOptions:
    """``compress[=ALG[:LEVEL]]``, ``compress-force[=...]``, ``max_inline=N``, comma-separated.

    ``compress`` alone means zlib (super.c). Other options are ignored.
    """
    ctype, level, force, max_inline = BTRFS_COMPRESS_NONE, 0, False, BTRFS_DEFAULT_MAX_INLINE
    for opt in filter(None, (o.strip() for o in text.split(","))):
        key, _, val = opt.partition("=")
        if key in ("compress", "compress-force"):
            force = key == "compress-force"
            alg, _, lvl = (val or "zlib").partition(":")
            names = {v: k for k, v in C.COMPRESS_NAMES.items()}
            if alg in ("no", "none"):
                ctype, force = BTRFS_COMPRESS_NONE, False
                continue
            if alg not in names:
                raise ValueError(f"unknown compression {alg!r}")
            ctype = names[alg]
            level = int(lvl) if lvl else 0
        elif key == "max_inline":
            max_inline = int(val)
        elif key in ("compress=no",):
            ctype = BTRFS_COMPRESS_NONE
    return MountOptions(ctype, level, force, max_inline)


def btrfs_max_inline_data_size(nodesize: int) -> int:
    """``BTRFS_MAX_INLINE_DATA_SIZE``: leaf data (nodesize - 101-byte header) minus one
    25-byte item header minus the file extent item's 21-byte head."""
    return btrfs_leaf_data_size(nodesize) - C.BTRFS_ITEM_SIZE - FileExtentItem.INLINE_DATA_START


# ---- the heuristic (compression.c) ---------------------------------------------------------


def ilog2(n: int) -> int:
    """Kernel ``ilog2`` for n > 0: index of the highest set bit."""
    return n.bit_length() - 1


def ilog2_w(n: int) -> int:
    """``ilog2_w``: ilog2(n^4) in u64 (n <= 8192 so n^4 <= 2^52)."""
    return ilog2((n * n * n * n) & U64)


def heuristic_collect_sample(read: ReadFn, start: int, end: int) -> bytes:
    """``heuristic_collect_sample``: 16 bytes every 256 from the first 128 KiB of
    [start, end] (end inclusive), page by page; ``start > end - 16`` is u64 arithmetic."""
    if end - start > BTRFS_MAX_UNCOMPRESSED:
        end = start + BTRFS_MAX_UNCOMPRESSED
    index = start // PAGE_SIZE
    index_end = end // PAGE_SIZE
    if end % PAGE_SIZE:
        index_end += 1
    out = bytearray()
    limit = (end - SAMPLING_READ_SIZE) & U64
    while index < index_end:
        page = read(index * PAGE_SIZE, PAGE_SIZE)
        i = start % PAGE_SIZE
        while i < PAGE_SIZE - SAMPLING_READ_SIZE:
            if start > limit:
                break
            out += page[i : i + SAMPLING_READ_SIZE]
            i += SAMPLING_INTERVAL
            start += SAMPLING_INTERVAL
        index += 1
    return bytes(out)


def sample_repeated_patterns(sample: bytes) -> bool:
    """``sample_repeated_patterns``: the first half of the sample equals the second."""
    half = len(sample) // 2
    return sample[:half] == sample[half : 2 * half]


def byte_set_size(bucket: list[int]) -> int:
    """``byte_set_size``: distinct byte values, stopping once past BYTE_SET_THRESHOLD."""
    size = sum(1 for i in range(BYTE_SET_THRESHOLD) if bucket[i] > 0)
    for i in range(BYTE_SET_THRESHOLD, BUCKET_SIZE):
        if bucket[i] > 0:
            size += 1
            if size > BYTE_SET_THRESHOLD:
                return size
    return size


def _get4bits(num: int, shift: int) -> int:
    return (COUNTERS_SIZE - 1) - ((num >> shift) % COUNTERS_SIZE)


def radix_sort(array: list[int]) -> None:
    """``radix_sort``: in-place LSD radix sort, descending, 4-bit digits, two passes per
    round, over ``ALIGN(ilog2(max), 8)`` bits. Reproduced exactly, including its quirk: when
    ilog2(max) is a multiple of 8 (max 1, or 256..511) the top bit is never sorted on."""
    num = len(array)
    max_num = max(array)
    bitlen = -(-ilog2(max_num) // (RADIX_BASE * 2)) * (RADIX_BASE * 2) if max_num else 0
    buf = [0] * num
    shift = 0
    while shift < bitlen:
        for src, dst in ((array, buf), (buf, array)):
            counters = [0] * COUNTERS_SIZE
            for v in src:
                counters[_get4bits(v, shift)] += 1
            for i in range(1, COUNTERS_SIZE):
                counters[i] += counters[i - 1]
            for i in range(num - 1, -1, -1):
                addr = _get4bits(src[i], shift)
                counters[addr] -= 1
                dst[counters[addr]] = src[i]
            shift += RADIX_BASE


def byte_core_set_size(bucket: list[int], sample_size: int) -> int:
    """``byte_core_set_size``: how many of the (radix-sorted) buckets hold 90 % of the
    sample. Sorts ``bucket`` in place, as the kernel does (shannon_entropy runs after it)."""
    threshold = sample_size * 90 // 100
    radix_sort(bucket)
    coreset = sum(bucket[:BYTE_CORE_SET_LOW])
    if coreset > threshold:
        return BYTE_CORE_SET_LOW
    i = BYTE_CORE_SET_LOW
    while i < BYTE_CORE_SET_HIGH and bucket[i] > 0:
        coreset += bucket[i]
        if coreset > threshold:
            break
        i += 1
    return i


def shannon_entropy(bucket: list[int], sample_size: int) -> int:
    """``shannon_entropy``: percentage of 8 bits/byte, with ilog2(n^4) in place of log2,
    over buckets up to the first empty one (the buckets are sorted by then)."""
    entropy_max = 8 * ilog2_w(2)
    sz_base = ilog2_w(sample_size)
    total = 0
    for count in bucket:
        if count == 0:
            break
        total += count * (sz_base - ilog2_w(count))
    total = (total & 0xFFFFFFFF) // sample_size
    return total * 100 // entropy_max


@dataclass(frozen=True)
class HeuristicResult:
    """What ``btrfs_compress_heuristic`` returned (0 = do not compress) and why."""

    ret: int
    reason: str
    sample_size: int
    byte_set: int | None = None
    core_set: int | None = None
    entropy: int | None = None


def btrfs_compress_heuristic_explain(read: ReadFn, start: int, end: int) -> HeuristicResult:
    """``btrfs_compress_heuristic`` with the intermediate values (end inclusive)."""
    sample = heuristic_collect_sample(read, start, end)
    n = len(sample)
    if sample_repeated_patterns(sample):
        return HeuristicResult(1, "repeated pattern", n)
    bucket = [0] * BUCKET_SIZE
    for b in sample:
        bucket[b] += 1
    bset = byte_set_size(bucket)
    if bset < BYTE_SET_THRESHOLD:
        return HeuristicResult(2, "byte set < 64", n, bset)
    core = byte_core_set_size(bucket, n)
    if core <= BYTE_CORE_SET_LOW:
        return HeuristicResult(3, "core set <= 64", n, bset, core)
    if core >= BYTE_CORE_SET_HIGH:
        return HeuristicResult(0, "core set >= 200", n, bset, core)
    ent = shannon_entropy(bucket, n)
    if ent <= ENTROPY_LVL_ACEPTABLE:
        return HeuristicResult(4, "entropy <= 65", n, bset, core, ent)
    if ent < ENTROPY_LVL_HIGH:
        return HeuristicResult(5, "entropy < 80", n, bset, core, ent)
    return HeuristicResult(0, "entropy >= 80", n, bset, core, ent)


def btrfs_compress_heuristic(read: ReadFn, start: int, end: int) -> int:
    """``btrfs_compress_heuristic``: non-zero if [start, end] (inclusive) should be compressed."""
    return btrfs_compress_heuristic_explain(read, start, end).ret


# ---- inode_need_compress (inode.c) ----------------------------------------------------------


@dataclass
class InodeState:
    """The in-memory inode fields the compressed-write path reads and writes."""

    flags: int = 0
    prop_compress: int = 0
    defrag_compress: int = 0
    i_size: int = 0
    disk_i_size: int = 0


def btrfs_inode_can_compress(inode: InodeState) -> bool:
    """``btrfs_inode_can_compress``: not NODATACOW, not NODATASUM."""
    return not inode.flags & (C.BTRFS_INODE_NODATACOW | C.BTRFS_INODE_NODATASUM)


def inode_need_compress(
    opts: MountOptions, inode: InodeState, read: ReadFn, start: int, end: int
) -> bool:
    """``inode_need_compress`` (same in 6.1 and 6.12): force -> yes; defrag -> yes;
    NOCOMPRESS -> no; compress option / COMPRESS flag / property -> the heuristic.
    (The subpage alignment rule does not apply: sectorsize == PAGE_SIZE here.)"""
    if not btrfs_inode_can_compress(inode):
        return False
    if opts.force_compress:
        return True
    if inode.defrag_compress:
        return True
    if inode.flags & C.BTRFS_INODE_NOCOMPRESS:
        return False
    if opts.compress or inode.flags & C.BTRFS_INODE_COMPRESS or inode.prop_compress:
        return btrfs_compress_heuristic(read, start, end) != 0
    return False


# ---- the compressors (zstd.c, zlib.c, lzo.c) -------------------------------------------------


@dataclass(frozen=True)
class CompressOutcome:
    """``btrfs_compress_folios``' result: ret 0 or -E2BIG; total_in consumed; total_out the
    compressed byte count; ``exact`` when total_out is the kernel's byte for byte."""

    ret: int
    total_in: int
    total_out: int
    exact: bool


def zstd_compress_folios(
    data: bytes, level: int, nr_dest_pages: int, kernel: str = "6.18"
) -> CompressOutcome:
    """``zstd_compress_folios``: one zstd frame of ``data`` (<= 128 KiB) with
    ``zstd_get_btrfs_parameters(level, len)`` and the pledged size. -E2BIG when the output
    reaches the destination pages (``max_out``) or is not smaller than the input."""
    out = zstandard.ZstdCompressor(
        level=level, write_content_size=True, write_checksum=False
    ).compress(data)
    exact = tuple(zstandard.ZSTD_VERSION) == KERNEL_ZSTD_VERSION.get(kernel)
    return zstd_outcome(len(out), len(data), nr_dest_pages, exact)


def zstd_outcome(frame_len: int, data_len: int, nr_dest_pages: int, exact: bool) -> CompressOutcome:
    """``zstd_compress_folios``' verdict on a frame of ``frame_len`` bytes for ``data_len``
    bytes of input (the frame itself may come from another zstd build, e.g. the kernel's
    version: harness/compress/kernel_zstd.py)."""
    max_out = nr_dest_pages * PAGE_SIZE
    if frame_len >= max_out or frame_len >= data_len:
        return CompressOutcome(E2BIG, data_len, frame_len, exact)
    return CompressOutcome(0, data_len, frame_len, exact)


def zlib_compress_folios(data: bytes, level: int, nr_dest_pages: int) -> CompressOutcome:
    """``zlib_compress_folios``: deflate (windowBits 15, memLevel 8) fed one page at a time,
    each with Z_SYNC_FLUSH, then Z_FINISH; -E2BIG if after 8 KiB of input the output is
    larger than the input, if the output needs more than ``nr_dest_pages`` pages, or if the
    output is not smaller than the input. Sizes from userspace zlib: not exact (see module)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 8)
    total_in = total_out = 0
    max_out = nr_dest_pages * PAGE_SIZE
    for off in range(0, len(data), PAGE_SIZE):
        chunk = data[off : off + PAGE_SIZE]
        total_out += len(c.compress(chunk)) + len(c.flush(zlib.Z_SYNC_FLUSH))
        total_in += len(chunk)
        if total_in > 8192 and total_in < total_out:
            return CompressOutcome(E2BIG, total_in, total_out, False)
        if total_out > max_out:
            return CompressOutcome(E2BIG, total_in, total_out, False)
    total_out += len(c.flush(zlib.Z_FINISH))
    if total_out > max_out or total_out >= total_in:
        return CompressOutcome(E2BIG, total_in, total_out, False)
    return CompressOutcome(0, total_in, total_out, False)


LZO_LEN = 4


def _lzo1x_1(data: bytes) -> int:
    """Size of lzo1x_1 output for one sector (liblzo2 via python-lzo; an estimate of the
    kernel's ``lzo1x_1_compress``). Without python-lzo there is no estimate: a guessed
    bound would silently predict the wrong extents, so it is an error."""
    try:
        import lzo  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ModuleNotFoundError(
            "lzo compressed sizes need python-lzo: `make deps` installs it"
        ) from None
    return len(lzo.compress(data, 1, False))


def lzo_compress_folios(
    data: bytes, nr_dest_pages: int, sectorsize: int = SZ_4K
) -> CompressOutcome:
    """``lzo_compress_folios``: a 4-byte total header, then per sector a 4-byte segment
    header and its lzo1x_1 output; a segment header never straddles a sector (the tail is
    zero-padded when fewer than 4 bytes remain). -E2BIG past ``nr_dest_pages`` or when,
    after two sectors, the output exceeds the input."""
    cur_out = LZO_LEN
    max_out = nr_dest_pages * PAGE_SIZE
    cur_in = 0
    while cur_in < len(data):
        seg = _lzo1x_1(data[cur_in : cur_in + sectorsize])
        if cur_out + LZO_LEN + seg > max_out:
            return CompressOutcome(E2BIG, cur_in, cur_out, False)
        cur_out += LZO_LEN + seg
        left = -cur_out % sectorsize
        if 0 < left < LZO_LEN:
            cur_out += left
        cur_in += min(sectorsize, len(data) - cur_in)
        if cur_in > sectorsize * 2 and cur_in < cur_out:
            return CompressOutcome(E2BIG, cur_in, cur_out, False)
    return CompressOutcome(0, cur_in, cur_out, False)


def btrfs_compress_folios(
    compress_type: int, level: int, data: bytes, nr_dest_pages: int, kernel: str = "6.12"
) -> CompressOutcome:
    """``btrfs_compress_folios`` (6.12) / ``btrfs_compress_pages`` (6.1)."""
    if compress_type == BTRFS_COMPRESS_ZSTD:
        return zstd_compress_folios(data, level, nr_dest_pages, kernel)
    if compress_type == BTRFS_COMPRESS_ZLIB:
        return zlib_compress_folios(data, level, nr_dest_pages)
    if compress_type == BTRFS_COMPRESS_LZO:
        return lzo_compress_folios(data, nr_dest_pages)
    raise ValueError(f"compression type {compress_type}")


def lzo_pack_sizes(sizes: list[int]) -> bytes:  # helper for tests of the lzo framing
    """The lzo framing around segment payload sizes (payload bytes zero), for tests."""
    out = bytearray(LZO_LEN)
    for s in sizes:
        out += struct.pack("<I", s) + bytes(s)
        left = -len(out) % SZ_4K
        if 0 < left < LZO_LEN:
            out += bytes(left)
    out[0:4] = struct.pack("<I", len(out))
    return bytes(out)


# ---- inline extents ------------------------------------------------------------------------


def can_cow_file_range_inline(
    opts: MountOptions, i_size: int, offset: int, size: int, compressed_size: int
) -> bool:
    """``can_cow_file_range_inline`` (6.12) == the checks at the top of 6.1's
    ``cow_file_range_inline`` plus its callers' ``start == 0`` test: offset 0; size <= one
    sector; the (compressed) data <= BTRFS_MAX_INLINE_DATA_SIZE and <= max_inline; and the
    range reaches i_size (the whole file)."""
    data_len = compressed_size or size
    if offset != 0:
        return False
    if size > opts.sectorsize:
        return False
    if data_len > btrfs_max_inline_data_size(opts.nodesize):
        return False
    if data_len > opts.max_inline:
        return False
    return size >= i_size


# ---- compress_file_range (inode.c) ----------------------------------------------------------


@dataclass(frozen=True)
class AsyncExtent:
    """``struct async_extent``: [start, start+ram_size) compressed to ``compressed_size``
    (sector-aligned; ``raw_size`` before alignment), or ``compress_type`` NONE for a range
    handed to plain COW (``submit_uncompressed_range``)."""

    start: int
    ram_size: int
    compressed_size: int = 0
    compress_type: int = BTRFS_COMPRESS_NONE
    raw_size: int = 0
    exact: bool = True


@dataclass(frozen=True)
class InlineResult:
    """An inline extent made by ``cow_file_range_inline``: ram_bytes = size, data_len =
    compressed size (or size when uncompressed)."""

    size: int
    compressed_size: int
    compress_type: int
    exact: bool = True


@dataclass
class ChunkResult:
    """What ``compress_file_range`` produced for one async chunk."""

    extents: list[AsyncExtent] = field(default_factory=list)
    inline: InlineResult | None = None
    set_nocompress: bool = False
    notes: list[str] = field(default_factory=list)


def _try_inline(
    opts: MountOptions,
    inode: InodeState,
    start: int,
    end: int,
    compressed_size: int,
    ctype: int,
    exact: bool,
) -> InlineResult | None:
    size = min(inode.i_size, end + 1)
    if not can_cow_file_range_inline(opts, inode.i_size, start, size, compressed_size):
        return None
    return InlineResult(size, compressed_size or size, ctype if compressed_size else 0, exact)


def compress_file_range(
    kernel: str,
    opts: MountOptions,
    inode: InodeState,
    read: ReadFn,
    start: int,
    end: int,
    compress_fn: CompressFn | None = None,
    size_kernel: str | None = None,
) -> ChunkResult:
    """``compress_file_range`` for the async chunk [start, end] (end inclusive).

    Mutates ``inode.flags`` (NOCOMPRESS) the way the kernel does. ``size_kernel`` names the
    kernel whose compressor output sizes are wanted (default ``kernel``; "6.18" for the
    host). The 6.1 / 6.12 differences:

    - 6.1 tries an inline extent whenever ``start == 0`` (uncompressed if compression was not
      done or failed), before the profitability check; 6.12 tries it only after a successful
      compression (a failed compression goes straight to ``mark_incompressible``).
    - 6.12 (backported "single block at offset 0"): if ``start == 0 && end <= blocksize`` and
      no inline extent was made, fall back to plain COW *without* marking the inode
      NOCOMPRESS. 6.1 runs the profitability check, which one block can never pass, and
      marks the inode NOCOMPRESS (the seed's [0,4K)+[8K,128K) case on a new file).
    - Both mark NOCOMPRESS (unless compress-force or a compression property) when the
      compressor fails or the result saves less than one sector; the rest of the chunk
      from that piece on then goes to plain COW as one range.
    """
    kernel = check_modelled_kernel(kernel)
    bs = opts.sectorsize
    res = ChunkResult()
    actual_end = min(inode.i_size, end + 1)
    ctype = inode.defrag_compress or inode.prop_compress or opts.compress_type

    def mark_incompressible() -> None:
        if not opts.force_compress and not inode.prop_compress:
            inode.flags |= C.BTRFS_INODE_NOCOMPRESS
            res.set_nocompress = True

    def bail(from_: int) -> ChunkResult:
        res.extents.append(AsyncExtent(from_, end - from_ + 1))
        return res

    while True:
        nr_pages = min(end // PAGE_SIZE - start // PAGE_SIZE + 1, BTRFS_MAX_COMPRESSED_PAGES)
        if actual_end <= start:
            return bail(start)
        total_compressed = actual_end - start
        if total_compressed <= bs and (start > 0 or end + 1 < inode.disk_i_size):
            res.notes.append(f"[{start},{end + 1}): one block inside the file, not compressed")
            return bail(start)
        total_compressed = min(total_compressed, BTRFS_MAX_UNCOMPRESSED)
        if not inode_need_compress(opts, inode, read, start, end):
            res.notes.append(f"[{start},{end + 1}): inode_need_compress says no")
            if kernel == "6.1" and start == 0:
                inl = _try_inline(opts, inode, start, end, 0, 0, True)
                if inl is not None:
                    res.inline = inl
                    return res
            return bail(start)
        level = opts.level if ctype == opts.compress_type else DEFAULT_LEVEL.get(ctype, 0)
        fn = compress_fn or btrfs_compress_folios
        out = fn(ctype, level, read(start, total_compressed), nr_pages, size_kernel or kernel)
        if kernel == "6.12":
            if out.ret:
                res.notes.append(f"[{start},{end + 1}): compressor failed (E2BIG)")
                mark_incompressible()
                return bail(start)
            if out.total_in < actual_end:
                inl = _try_inline(opts, inode, start, end, 0, 0, True)
            else:
                inl = _try_inline(opts, inode, start, end, out.total_out, ctype, out.exact)
            if inl is not None:
                res.inline = inl
                return res
            if start == 0 and end <= bs:
                res.notes.append("single block at offset 0 not inlined: plain COW, no flag")
                return bail(start)
        else:  # 6.1
            if start == 0:
                if out.ret or out.total_in < actual_end:
                    inl = _try_inline(opts, inode, start, end, 0, 0, True)
                else:
                    inl = _try_inline(opts, inode, start, end, out.total_out, ctype, out.exact)
                if inl is not None:
                    res.inline = inl
                    return res
            if out.ret:
                res.notes.append(f"[{start},{end + 1}): compressor failed (E2BIG)")
                mark_incompressible()
                return bail(start)
        aligned = -(-out.total_out // bs) * bs
        total_in = -(-out.total_in // bs) * bs
        if aligned + bs > total_in:
            res.notes.append(
                f"[{start},{start + total_in}): {out.total_out} bytes compressed does not "
                f"save a sector"
            )
            mark_incompressible()
            return bail(start)
        res.extents.append(AsyncExtent(start, total_in, aligned, ctype, out.total_out, out.exact))
        if start + total_in < end:
            start += total_in
            continue
        return res


def async_chunks(start: int, end: int) -> list[tuple[int, int]]:
    """``run_delalloc_compressed`` (6.12) / ``cow_file_range_async`` (6.1): the delalloc
    range [start, end] cut into 512 KiB chunks, ``DIV_ROUND_UP(end - start, SZ_512K)`` of
    them (end inclusive, so a range of exactly 512 KiB is one chunk)."""
    num = max(1, -(-(end - start) // ASYNC_CHUNK_SIZE))
    out = []
    for _ in range(num):
        cur_end = min(end, start + ASYNC_CHUNK_SIZE - 1)
        out.append((start, cur_end))
        start = cur_end + 1
    return out
