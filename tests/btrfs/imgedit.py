"""Editing real images in place for corruption tests: find an item with the reader, change
bytes of its tree block (every copy), recompute the block's checksum.

The expected outcome of an edit never comes from here: it comes from the kernel source or
from btrfs-progs run on the edited image.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.csum import CSUM_SIZES, csum_block
from model.btrfs.items import Key
from model.btrfs.reader import BtrfsImage
from model.btrfs.treeblock import TreeBlock


def data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the allocated (non-hole) regions of a sparse file."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


def sparse_copy(src: Path, dst: Path) -> Path:
    """Copy an image keeping its holes (a 1 GiB image holds a few MiB of data)."""
    size = src.stat().st_size
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.truncate(size)
        for start, end in data_regions(fi.fileno(), size):
            fi.seek(start)
            fo.seek(start)
            left = end - start
            while left:
                chunk = fi.read(min(left, 1 << 20))
                fo.write(chunk)
                left -= len(chunk)
    return dst


def load_sparse(path: Path) -> bytearray:
    """The whole image in memory; holes stay untouched (calloc'd) pages."""
    size = path.stat().st_size
    buf = bytearray(size)
    with open(path, "rb") as f:
        mv = memoryview(buf)
        for start, end in data_regions(f.fileno(), size):
            f.seek(start)
            f.readinto(mv[start:end])
    return buf


def open_image(path: Path, errors: list[Exception] | None = None) -> BtrfsImage:
    """Open with the reader, collecting FormatErrors below the tree roots in ``errors``."""
    on_error = errors.append if errors is not None else None
    return BtrfsImage.open(FileSource(path), on_error=on_error)


def find_slot(
    img: BtrfsImage, tree: int, pred: Callable[[TreeBlock, int, Key], bool]
) -> tuple[TreeBlock, int]:
    """The first (leaf, slot) of tree ``tree`` whose key satisfies ``pred``."""
    root = img.tree(tree)
    assert root is not None, f"no tree {tree}"
    for blk in img.walk(root):
        if not blk.is_leaf:
            continue
        for slot, ih in enumerate(blk.items):
            if pred(blk, slot, ih.key):
                return blk, slot
    raise LookupError(f"no matching item in tree {tree}")


def find_node(img: BtrfsImage, tree: int) -> TreeBlock:
    root = img.tree(tree)
    assert root is not None
    for blk in img.walk(root):
        if not blk.is_leaf:
            return blk
    raise LookupError(f"tree {tree} has no node")


def rewrite_block(
    path: Path, img: BtrfsImage, logical: int, mutate: Callable[[bytearray], None]
) -> bytes:
    """Apply ``mutate`` to the tree block at ``logical``, recompute its checksum, and write
    it to every copy in the image file. Returns the new block."""
    nodesize = img.sb.nodesize
    copies = img.chunk_map.map_read(logical, nodesize)
    with open(path, "r+b") as f:
        f.seek(copies[0])
        raw = bytearray(f.read(nodesize))
        mutate(raw)
        raw[: C.BTRFS_CSUM_SIZE] = csum_block(img.sb.csum_type, bytes(raw))
        for phys in copies:
            f.seek(phys)
            f.write(raw)
    return bytes(raw)


# offsets inside a leaf
def item_hdr(slot: int) -> int:
    """Offset of ``struct btrfs_item`` number ``slot`` in a leaf."""
    return C.BTRFS_HEADER_SIZE + C.BTRFS_ITEM_SIZE * slot


def item_body(blk: TreeBlock, slot: int) -> int:
    """Offset of an item's body in its leaf."""
    return C.BTRFS_HEADER_SIZE + blk.items[slot].offset


def key_ptr(slot: int) -> int:
    """Offset of ``struct btrfs_key_ptr`` number ``slot`` in a node."""
    return C.BTRFS_HEADER_SIZE + C.BTRFS_KEY_PTR_SIZE * slot


def put(raw: bytearray, off: int, fmt: str, value: int) -> None:
    struct.pack_into("<" + fmt, raw, off, value)


def get(raw: bytes | bytearray, off: int, fmt: str) -> int:
    v: int = struct.unpack_from("<" + fmt, raw, off)[0]
    return v


def build_leaf(template: bytes, items: list[tuple[Key, bytes]]) -> bytearray:
    """A leaf with ``template``'s header (nritems replaced) and ``items`` packed from the
    end of the block as the format lays them out (checksum not set)."""
    nodesize = len(template)
    raw = bytearray(nodesize)
    raw[: C.BTRFS_HEADER_SIZE] = template[: C.BTRFS_HEADER_SIZE]
    put(raw, 96, "I", len(items))
    end = nodesize - C.BTRFS_HEADER_SIZE
    for slot, (key, body) in enumerate(items):
        off = end - len(body)
        h = item_hdr(slot)
        raw[h : h + 17] = key.pack()
        put(raw, h + 17, "I", off)
        put(raw, h + 21, "I", len(body))
        raw[C.BTRFS_HEADER_SIZE + off : C.BTRFS_HEADER_SIZE + end] = body
        end = off
    return raw


# the superblock's fields: offset and struct format (struct btrfs_super_block,
# include/uapi/linux/btrfs_tree.h; test_check_parity.py checks them against dump-super)

SB_FIELDS: dict[str, tuple[int, str]] = {
    "fsid": (32, "16s"),
    "bytenr": (48, "Q"),
    "flags": (56, "Q"),
    "magic": (64, "Q"),
    "generation": (72, "Q"),
    "root": (80, "Q"),
    "chunk_root": (88, "Q"),
    "log_root": (96, "Q"),
    "total_bytes": (112, "Q"),
    "bytes_used": (120, "Q"),
    "root_dir": (128, "Q"),
    "num_devices": (136, "Q"),
    "sectorsize": (144, "I"),
    "nodesize": (148, "I"),
    "leafsize": (152, "I"),
    "stripesize": (156, "I"),
    "sys_array_size": (160, "I"),
    "chunk_root_generation": (164, "Q"),
    "compat_flags": (172, "Q"),
    "compat_ro_flags": (180, "Q"),
    "incompat_flags": (188, "Q"),
    "csum_type": (196, "H"),
    "root_level": (198, "B"),
    "chunk_root_level": (199, "B"),
    "log_root_level": (200, "B"),
    "dev_item.total_bytes": (201 + 8, "Q"),
    "dev_item.fsid": (201 + 82, "16s"),
    "label": (299, "16s"),
    "cache_generation": (555, "Q"),
    "uuid_tree_generation": (563, "Q"),
    "metadata_uuid": (571, "16s"),
    "nr_global_roots": (587, "Q"),
}

SbValue = int | bytes


def sb_get(raw: bytes | bytearray, name: str) -> SbValue:
    off, fmt = SB_FIELDS[name]
    v: SbValue = struct.unpack_from("<" + fmt, raw, off)[0]
    return v


def sb_put(raw: bytearray, name: str, value: SbValue) -> None:
    off, fmt = SB_FIELDS[name]
    struct.pack_into("<" + fmt, raw, off, value)


def edit_super(path: Path, changes: dict[str, SbValue], recompute: bool = True) -> None:
    """Change fields of the primary superblock, checksum recomputed with the (new) csum
    type when it is one we know."""
    with open(path, "r+b") as f:
        f.seek(C.SUPER_INFO_OFFSET)
        raw = bytearray(f.read(C.SUPER_INFO_SIZE))
        for name, v in changes.items():
            sb_put(raw, name, v)
        ctype = int(sb_get(raw, "csum_type"))
        if recompute and ctype in CSUM_SIZES:
            raw[: C.BTRFS_CSUM_SIZE] = csum_block(ctype, bytes(raw))
        f.seek(C.SUPER_INFO_OFFSET)
        f.write(raw)
