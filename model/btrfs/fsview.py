"""The namespace and file contents as the image holds them: what the kernel would show after
a mount, read from the fs trees with our reader.

:func:`read_namespace` starts at a directory of the top-level subvolume and follows
DIR_INDEX items the way ``btrfs_real_readdir`` lists them and ``btrfs_lookup_dentry``
resolves them (``fs/btrfs/inode.c``): an entry whose location is an INODE_ITEM key is an
inode of the same tree; one whose location is a ROOT_ITEM key is a subvolume, entered at
its root directory (inode 256) when the root tree holds the matching ROOT_REF
(``fixup_tree_root_location``: parent tree, directory and name must match), and otherwise
shown as the empty stub directory ``new_simple_dir`` makes (inode 2, mode 0755, nlink 1).

Each path yields a record with the keys the guest driver's ``walk`` writes (``path mode
nlink size ino dev``, ``sha256`` for files, ``target`` for symlinks), ``dev`` being the
subvolume's tree id, so the two views compare with :func:`model.fsstate.tree.entries_from_walk`.

File contents are rebuilt from EXTENT_DATA items like ``btrfs_get_extent`` +
``btrfs_do_readpage``: inline data, regular extents read through the chunk map
(``offset`` into the extent, ``num_bytes`` of file), preallocated extents and holes read
as zeros, and ranges with no item as holes (the NO_HOLES feature); the content ends at
``i_size``. Compressed and encrypted extents are not decoded (reported as findings).
:func:`check_file_extents` states the structural rules checked on the way (sorted,
non-overlapping items; an inline extent only at offset 0; ``nbytes`` equal to the bytes
the items account for; without NO_HOLES, items covering ``[0, i_size)`` contiguously).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from model.btrfs import constants as C
from model.btrfs.items import (
    DirItem,
    FileExtentItem,
    InodeItem,
    Key,
    RootRef,
)
from model.btrfs.reader import BtrfsImage
from model.errors import FormatError
from model.stat import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG


@dataclass
class TreeIndex:
    """One fs tree's items by inode: the INODE_ITEM, DIR_INDEX entries, EXTENT_DATA items
    with their raw bytes (inline data)."""

    tree: int
    inodes: dict[int, InodeItem] = field(default_factory=dict)
    dir_index: dict[int, list[tuple[int, DirItem]]] = field(default_factory=dict)
    extents: dict[int, list[tuple[FileExtentItem, bytes]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewFinding:
    """Something wrong with one path's items (``what`` names the rule)."""

    path: str
    tree: int
    ino: int
    what: str
    message: str

    def __str__(self) -> str:
        return f"{self.path} (tree {self.tree} inode {self.ino}): {self.what}: {self.message}"


@dataclass
class NamespaceView:
    records: list[dict[str, Any]] = field(default_factory=list)
    findings: list[ViewFinding] = field(default_factory=list)
    trees: int = 0
    inodes: int = 0


def index_tree(img: BtrfsImage, tree: int) -> TreeIndex:
    root = img.tree(tree)
    if root is None:
        raise FormatError(f"tree {tree}", 0, "no ROOT_ITEM for this subvolume")
    idx = TreeIndex(tree)
    for blk, slot, item in img.iter_items(root):
        k = item.key
        if k.type == C.INODE_ITEM_KEY and isinstance(item, InodeItem):
            idx.inodes[k.objectid] = item
        elif k.type == C.DIR_INDEX_KEY and isinstance(item, DirItem):
            idx.dir_index.setdefault(k.objectid, []).append((k.offset, item))
        elif k.type == C.EXTENT_DATA_KEY and isinstance(item, FileExtentItem):
            idx.extents.setdefault(k.objectid, []).append((item, blk.item_data(slot)))
    return idx


def root_refs(img: BtrfsImage) -> dict[tuple[int, int], RootRef]:
    """(parent tree, child tree) -> ROOT_REF, from the root tree."""
    out: dict[tuple[int, int], RootRef] = {}
    root = img.tree(C.ROOT_TREE_OBJECTID)
    assert root is not None
    for _blk, _slot, item in img.iter_items(root):
        if item.key.type == C.ROOT_REF_KEY and isinstance(item, RootRef):
            out[(item.key.objectid, item.key.offset)] = item
    return out


def read_data(img: BtrfsImage, logical: int, length: int) -> bytes:
    """``length`` bytes of data at ``logical`` (first copy)."""
    out = bytearray()
    pos = logical
    end = logical + length
    while pos < end:
        chunk = img.chunk_map.lookup(pos)
        if chunk is None:
            raise FormatError("chunk map", 0, "no chunk maps this data address", pos)
        n = min(end, chunk.key.offset + chunk.length) - pos
        if chunk.type & (C.BLOCK_GROUP_RAID0 | C.BLOCK_GROUP_RAID10):
            n = min(n, chunk.stripe_len - (pos - chunk.key.offset) % chunk.stripe_len)
        phys = img.chunk_map.map_read(pos, n)[0]
        out += img.source.read(phys, n, "file data")
        pos += n
    return bytes(out)


def check_file_extents(
    img: BtrfsImage, path: str, tree: int, ino: int, inode: InodeItem, items: list[Any]
) -> tuple[bytes | None, list[ViewFinding]]:
    """The file's logical content (None if it cannot be rebuilt) and what is wrong with its
    EXTENT_DATA items."""
    findings: list[ViewFinding] = []

    def bad(what: str, msg: str) -> None:
        findings.append(ViewFinding(path, tree, ino, what, msg))

    size = inode.size
    data = bytearray(size)
    readable = True
    prev_end = 0
    accounted = 0
    no_holes = bool(img.sb.incompat_flags & C.INCOMPAT_NO_HOLES)
    for fe, raw in sorted(items, key=lambda t: t[0].key.offset):
        start = fe.key.offset
        if start < prev_end:
            bad("overlap", f"extent at {start} starts before the previous one ends ({prev_end})")
        if not no_holes and start > prev_end and prev_end < size:
            bad("gap", f"no item covers [{prev_end}, {start}) and NO_HOLES is off")
        if fe.compression or fe.encryption or fe.other_encoding:
            bad("encoded", f"extent at {start} is compressed/encoded: content not rebuilt")
            readable = False
        if fe.type == C.FILE_EXTENT_INLINE:
            if start != 0:
                bad("inline", f"inline extent at offset {start}, not 0")
            body = raw[FileExtentItem.INLINE_DATA_START :]
            length = fe.ram_bytes
            accounted += length
            if readable and not fe.compression:
                piece = body[: min(length, max(0, size - start))]
                data[start : start + len(piece)] = piece
            prev_end = max(prev_end, start + length)
            continue
        length = fe.num_bytes
        if fe.disk_bytenr != 0:
            accounted += length
        if fe.type == C.FILE_EXTENT_REG and fe.disk_bytenr != 0 and readable and start < size:
            n = min(length, size - start)
            try:
                data[start : start + n] = read_data(img, fe.disk_bytenr + fe.offset, n)
            except FormatError as e:
                bad("unreadable", str(e))
                readable = False
        prev_end = max(prev_end, start + length)
    if not no_holes and prev_end < size:
        bad("gap", f"no item covers [{prev_end}, {size}) and NO_HOLES is off")
    if accounted != inode.nbytes:
        bad(
            "nbytes",
            f"inode nbytes {inode.nbytes}, items account for {accounted}",
        )
    return (bytes(data) if readable else None), findings


def _dir_entries(idx: TreeIndex, ino: int) -> Iterator[tuple[bytes, Key, int]]:
    for _index, item in sorted(idx.dir_index.get(ino, []), key=lambda t: t[0]):
        for e in item.entries:
            yield e.name, e.location, e.type


def read_namespace(img: BtrfsImage, start: str = "") -> NamespaceView:
    """Records for every path below ``start`` (a ``/``-separated path from the top-level
    subvolume's root directory; ``""`` for the root itself)."""
    view = NamespaceView()
    refs = root_refs(img)
    indexes: dict[int, TreeIndex] = {}

    def index(tree: int) -> TreeIndex:
        if tree not in indexes:
            indexes[tree] = index_tree(img, tree)
            view.trees += 1
        return indexes[tree]

    def lookup(tree: int, dir_ino: int, name: bytes) -> tuple[int, int]:
        """(tree, ino) of ``name`` in directory ``dir_ino`` (entering subvolumes)."""
        for n, loc, _t in _dir_entries(index(tree), dir_ino):
            if n != name:
                continue
            if loc.type == C.ROOT_ITEM_KEY:
                ref = refs.get((tree, loc.objectid))
                if ref is None or ref.dirid != dir_ino or ref.name != name:
                    return tree, C.EMPTY_SUBVOL_DIR_OBJECTID
                return loc.objectid, C.FIRST_FREE_OBJECTID
            return tree, loc.objectid
        raise FormatError("namespace", 0, f"no entry {name!r} in tree {tree} dir {dir_ino}")

    tree, ino = C.FS_TREE_OBJECTID, C.FIRST_FREE_OBJECTID
    for comp in [c for c in start.split("/") if c]:
        tree, ino = lookup(tree, ino, comp.encode())

    seen: set[tuple[int, int]] = set()

    def rec(tree: int, dir_ino: int, prefix: str) -> None:
        idx = index(tree)
        for name, loc, _ftype in _dir_entries(idx, dir_ino):
            path = prefix + name.decode("utf-8", "surrogateescape")
            if loc.type == C.ROOT_ITEM_KEY:
                ref = refs.get((tree, loc.objectid))
                if ref is None or ref.dirid != dir_ino or ref.name != name:
                    view.records.append(
                        {
                            "path": path,
                            "mode": C.STUB_MODE,
                            "nlink": 1,
                            "size": 0,
                            "ino": C.EMPTY_SUBVOL_DIR_OBJECTID,
                            "dev": tree,
                        }
                    )
                    continue
                record_inode(loc.objectid, C.FIRST_FREE_OBJECTID, path)
                rec(loc.objectid, C.FIRST_FREE_OBJECTID, path + "/")
                continue
            record_inode(tree, loc.objectid, path)
            inode = idx.inodes.get(loc.objectid)
            if inode is not None and inode.mode & S_IFMT == S_IFDIR:
                rec(tree, loc.objectid, path + "/")

    def record_inode(tree: int, ino: int, path: str) -> None:
        idx = index(tree)
        inode = idx.inodes.get(ino)
        if inode is None:
            view.findings.append(ViewFinding(path, tree, ino, "inode", "no INODE_ITEM"))
            return
        if (tree, ino) not in seen:
            seen.add((tree, ino))
            view.inodes += 1
        r: dict[str, Any] = {
            "path": path,
            "mode": inode.mode,
            "nlink": inode.nlink,
            "size": inode.size,
            "ino": ino,
            "dev": tree,
        }
        fmt = inode.mode & S_IFMT
        items = idx.extents.get(ino, [])
        if fmt == S_IFREG:
            content, found = check_file_extents(img, path, tree, ino, inode, items)
            view.findings += found
            if content is not None:
                r["sha256"] = hashlib.sha256(content).hexdigest()
        elif fmt == S_IFLNK:
            inline = [raw for fe, raw in items if fe.type == C.FILE_EXTENT_INLINE]
            if len(items) != 1 or not inline:
                view.findings.append(
                    ViewFinding(path, tree, ino, "symlink", "target is not one inline extent")
                )
            else:
                body = inline[0][FileExtentItem.INLINE_DATA_START :]
                r["target"] = body.decode("utf-8", "surrogateescape")
        view.records.append(r)

    rec(tree, ino, "")
    view.records.sort(key=lambda r: str(r["path"]))
    return view
