"""What is compared between the model's tree and a real one, and each filesystem's rules.

The compared fields (:data:`FIELDS`), for every path below the run's root (the root itself
is not compared: other processes and the harness own it):

=========  ======================================================================
field      meaning
=========  ======================================================================
path       ``/``-separated, relative to the root; a path present on one side only
           is a difference of field ``exists``
type       ``file``, ``dir`` or ``symlink`` (nothing else is ever created)
mode       permission bits, ``st_mode & 0o7777``
size       ``st_size``: files, the content length; symlinks, the target's length;
           directories, filesystem-specific (below)
nlink      ``st_nlink``: files and symlinks, their hard-link count; directories,
           filesystem-specific (below)
sha256     files: SHA-256 of the logical content (``read()`` of the whole file:
           holes and unwritten extents read as zeros)
target     symlinks: the stored target, byte for byte
links      files and symlinks: the other paths naming the same inode
           (same ``(st_dev, st_ino)``), sorted
subvol     btrfs only: ``subvol`` for a subvolume or snapshot root
           (``st_ino`` 256, BTRFS_FIRST_FREE_OBJECTID), ``stub`` for the empty
           directory a snapshot shows where the source held a nested subvolume
           (``st_ino`` 2, BTRFS_EMPTY_SUBVOL_DIR_OBJECTID), else empty
=========  ======================================================================

Not compared: timestamps, uid/gid (always 0 here), ``st_blocks`` and allocation (these
differ legitimately: preallocation, inline extents, delayed allocation), inode numbers
(except through ``links`` and ``subvol``).

Per filesystem (:data:`SEMANTICS`):

- **btrfs**: every directory reports ``st_nlink`` 1 (``btrfs_new_inode`` sets nlink 1 for
  directories and ``btrfs_link``/``btrfs_mkdir`` never raise it; subvolume roots and the
  stub inode made by ``new_simple_dir`` too). A directory's ``st_size`` is twice the sum of
  its entries' name lengths (``btrfs_add_link``/``btrfs_unlink_inode`` add and subtract
  ``name_len * 2``, one for the DIR_ITEM and one for the DIR_INDEX; subvolume entries
  likewise in ``create_subvol``/``create_pending_snapshot``); a stub's is 0.
  Subvolume roots are created with mode ``0777 & ~umask`` (``btrfs_new_subvol_inode``; the
  driver runs with umask 0), stubs with ``S_IRUGO | S_IWUSR | S_IXUGO`` = 0755.
- **ext4**: a directory's ``st_nlink`` is 2 plus its number of subdirectories (``.`` and
  the parent's entry, plus each child's ``..``; ``ext4_inc_count``; the 65000-link
  fallback to 1 is never reached here). A directory's ``st_size`` is the directory's
  allocated blocks (it grows by whole blocks and does not shrink on unlink): not compared.
  No subvolumes: the btrfs ioctls fail with ENOTTY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.btrfs.constants import EMPTY_SUBVOL_DIR_OBJECTID, FIRST_FREE_OBJECTID
from model.stat import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG

FIELDS = ("type", "mode", "size", "nlink", "sha256", "target", "links", "subvol")


@dataclass(frozen=True)
class FsSemantics:
    """One filesystem's rules for the compared fields and its limits."""

    name: str
    subvolumes: bool  # the btrfs subvolume ioctls work
    dir_nlink_counts_subdirs: bool  # ext4: 2 + subdirs; btrfs: always 1
    dir_size_is_names: bool  # btrfs: 2 * sum(name lengths); ext4: not compared
    link_max: int  # BTRFS_LINK_MAX 65535 (fs/btrfs/ctree.h), EXT4_LINK_MAX 65000


BTRFS = FsSemantics("btrfs", True, False, True, 65535)
EXT4 = FsSemantics("ext4", False, True, False, 65000)
SEMANTICS = {"btrfs": BTRFS, "ext4": EXT4}


def semantics(name: str) -> FsSemantics:
    try:
        return SEMANTICS[name]
    except KeyError:
        raise ValueError(f"no semantics for filesystem {name!r}: one of btrfs, ext4") from None


@dataclass(frozen=True)
class Entry:
    """One path's compared fields. ``None`` means "not compared" for this fs and type."""

    path: str
    type: str
    mode: int
    size: int | None
    nlink: int
    sha256: str | None = None
    target: str | None = None
    links: tuple[str, ...] = ()
    subvol: str | None = None

    def get(self, name: str) -> object:
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "type": self.type, "mode": f"{self.mode:o}"}
        for k in FIELDS[2:]:
            v = getattr(self, k)
            if v is not None and v != ():
                d[k] = list(v) if isinstance(v, tuple) else v
        return d


def type_of_mode(mode: int) -> str:
    fmt = mode & S_IFMT
    if fmt == S_IFREG:
        return "file"
    if fmt == S_IFDIR:
        return "dir"
    if fmt == S_IFLNK:
        return "symlink"
    return f"other:{fmt:o}"


def entries_from_walk(records: list[dict[str, Any]], sem: FsSemantics) -> dict[str, Entry]:
    """The compared fields of a real tree, from the driver's ``walk`` records (one dict per
    path: ``path mode nlink size ino dev`` and ``sha256`` for files, ``target`` for
    symlinks), applying ``sem``'s rules the same way :meth:`FsModel.entries` does."""
    groups: dict[tuple[int, int], list[str]] = {}
    for r in records:
        if type_of_mode(int(r["mode"])) != "dir":
            groups.setdefault((int(r["dev"]), int(r["ino"])), []).append(str(r["path"]))
    out: dict[str, Entry] = {}
    for r in records:
        path = str(r["path"])
        mode = int(r["mode"])
        typ = type_of_mode(mode)
        size: int | None = int(r["size"])
        subvol: str | None = None
        links: tuple[str, ...] = ()
        if typ == "dir":
            if not sem.dir_size_is_names:
                size = None
            if sem.subvolumes:
                ino = int(r["ino"])
                subvol = (
                    "subvol"
                    if ino == FIRST_FREE_OBJECTID
                    else "stub"
                    if ino == EMPTY_SUBVOL_DIR_OBJECTID
                    else ""
                )
        else:
            same = groups[(int(r["dev"]), int(r["ino"]))]
            links = tuple(sorted(p for p in same if p != path))
        out[path] = Entry(
            path=path,
            type=typ,
            mode=mode & 0o7777,
            size=size,
            nlink=int(r["nlink"]),
            sha256=str(r["sha256"]) if typ == "file" and "sha256" in r else None,
            target=str(r["target"]) if typ == "symlink" and "target" in r else None,
            links=links,
            subvol=subvol,
        )
    return out
