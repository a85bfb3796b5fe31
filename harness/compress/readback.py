"""What a compression case left in its image, read on the host: the file's EXTENT_DATA items
and INODE_ITEM through :class:`model.btrfs.reader.BtrfsImage` (compressed extents read
from disk, decompressed and checked against the data written) and, for cross-checking,
through ``btrfs inspect-internal dump-tree``. Host and VM runs share it."""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from model.blocksource import FileSource
from model.btrfs import compression as Z
from model.btrfs import constants as C
from model.btrfs.compress_predict import PredictedExtent
from model.btrfs.datapattern import pattern_bytes
from model.btrfs.items import FileExtentItem, InodeItem
from model.btrfs.reader import BtrfsImage

FILE_INO = 257


@dataclass
class HostResult:
    kernel: str
    extents: list[PredictedExtent]
    inode_flags: list[str]
    i_size: int
    dump_tree_extents: list[tuple[int, str, str, int, int, int]] = field(default_factory=list)
    compressed_payload_sizes: dict[int, int] = field(default_factory=dict)
    zstd_byte_exact: dict[int, bool] = field(default_factory=dict)


def read_back(
    img: Path, data: str, zstd_frame: Callable[[bytes, int], bytes] | None = None
) -> HostResult:
    """The file's extent items and inode flags through our reader; compressed extents are
    read from disk, decompressed and compared with what was written (zstd: also whether our
    compressor, or ``zstd_frame(data, level)`` when given, reproduces the on-disk bytes)."""
    im = BtrfsImage.open(FileSource(img))
    fs = im.tree(5)
    assert fs is not None
    exts: list[PredictedExtent] = []
    flags: list[str] = []
    size = 0
    res = HostResult(os.uname().release, exts, flags, 0)
    with open(img, "rb") as raw:
        for _, _, it in im.iter_items(fs):
            if it.key.objectid != FILE_INO:
                continue
            if isinstance(it, InodeItem):
                flags += [n for b, n in C.INODE_FLAG_NAMES if it.flags & b]
                size = it.size
            elif isinstance(it, FileExtentItem):
                inline = it.type == 0
                exts.append(
                    PredictedExtent(
                        it.key.offset,
                        "inline" if inline else "regular",
                        C.COMPRESS_NAMES.get(it.compression, str(it.compression)),
                        it.ram_bytes,
                        it.ram_bytes if inline else it.num_bytes,
                        0 if inline else it.disk_num_bytes,
                        0 if inline else it.offset,
                        it.inline_size if inline else 0,
                    )
                )
                if not inline and it.compression and it.disk_bytenr:
                    phys = im.chunk_map.map_read(it.disk_bytenr, it.disk_num_bytes)[0]
                    raw.seek(phys)
                    payload = raw.read(it.disk_num_bytes)
                    want = pattern_bytes(data, it.key.offset - it.offset, it.ram_bytes)
                    res.compressed_payload_sizes[it.key.offset] = _payload_size(
                        it.compression, payload, want
                    )
                    if it.compression == Z.BTRFS_COMPRESS_ZSTD:
                        plain = want[: min(len(want), size - (it.key.offset - it.offset))]
                        if zstd_frame is not None:
                            mine = zstd_frame(plain, 3)
                        else:
                            mine = zstandard.ZstdCompressor(level=3, write_checksum=False).compress(
                                plain
                            )
                        res.zstd_byte_exact[it.key.offset] = payload[: len(mine)] == mine
    res.i_size = size
    return res


def _payload_size(ctype: int, payload: bytes, want: bytes) -> int:
    """The compressed stream's own length (before the sector padding), after checking it
    decompresses to the data written."""
    if ctype == Z.BTRFS_COMPRESS_ZSTD:
        d = zstandard.ZstdDecompressor().decompressobj()
        out = d.decompress(payload)
        assert want.startswith(out) or out.startswith(want[: len(out)])
        return len(payload) - len(d.unused_data)
    if ctype == Z.BTRFS_COMPRESS_ZLIB:
        z = zlib.decompressobj()
        z.decompress(payload)
        return len(payload) - len(z.unused_data)
    return int.from_bytes(payload[:4], "little")  # lzo: total length header


_EXT_RE = re.compile(r"item \d+ key \((\d+) EXTENT_DATA (\d+)\)")
_INLINE_RE = re.compile(r"inline extent data size (\d+) ram_bytes (\d+) compression \d+ \((\w+)\)")
_DISK_RE = re.compile(r"extent data disk byte \d+ nr (\d+)")
_OFF_RE = re.compile(r"extent data offset (\d+) nr (\d+) ram (\d+)")
_COMP_RE = re.compile(r"extent compression \d+ \((\w+)\)")


def dump_tree_extents(img: Path) -> list[tuple[int, str, str, int, int, int]]:
    """(offset, type, compression, ram_bytes, num_bytes, disk_num_bytes or inline data
    size) per EXTENT_DATA item of the file, parsed from ``btrfs inspect-internal dump-tree
    -t 5`` (print-tree.c ``print_file_extent_item``)."""
    out = subprocess.run(
        ["btrfs", "inspect-internal", "dump-tree", "-t", "5", str(img)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    res = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = _EXT_RE.search(line)
        if not m or int(m.group(1)) != FILE_INO:
            continue
        body = " ".join(lines[i + 1 : i + 5])
        off = int(m.group(2))
        inl = _INLINE_RE.search(body)
        if inl:
            ram = int(inl.group(2))
            res.append((off, "inline", inl.group(3), ram, ram, int(inl.group(1))))
            continue
        d, o, c = _DISK_RE.search(body), _OFF_RE.search(body), _COMP_RE.search(body)
        assert d and o and c, body
        res.append((off, "regular", c.group(1), int(o.group(3)), int(o.group(2)), int(d.group(1))))
    return res
