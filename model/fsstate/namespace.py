"""A model of a directory tree's namespace and contents that replays an op log.

:class:`FsModel` applies ops (:mod:`model.fsstate.oplog`) one at a time and says what each
should return — ``0``, a byte count, or the errno name — and keeps the tree each leaves,
so :meth:`FsModel.entries` gives the expected value of every compared field
(:mod:`model.fsstate.tree`). Each check is the kernel's, in the kernel's order, so the
errno is the one Linux returns when several apply; the methods are named after the
functions they follow (``fs/namei.c``, ``fs/open.c`` of Linux 6.12; ``fs/btrfs/inode.c``,
``fs/btrfs/ioctl.c``, ``fs/btrfs/transaction.c``; ``fs/ext4/namei.c``).

Scope: the caller is root (no permission errors), umask 0, one mount (no EXDEV from the
VFS), names are single path components without ``/``. Symlinks are followed like
``link_path_walk`` does, up to 40 (MAXSYMLINKS, ``include/linux/namei.h``), relative to the
directory holding the link. Anything outside the scope (an absolute symlink target, a
``..`` climbing above the model's root) raises :class:`Unmodeled` rather than guessing.

On btrfs the model tracks subvolumes: each inode belongs to one (its tree); a subvolume
root is a directory of kind ``subvol``; a snapshot copies the source subvolume's tree as it
is when the snapshot is taken, with every nested subvolume shown as an empty *stub*
directory (kind ``stub``: ``btrfs_lookup_dentry`` finds no ROOT_REF from the snapshot to the
nested subvolume and makes a ``new_simple_dir``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from model.btrfs.constants import STUB_MODE
from model.fsstate import ops as op_registry
from model.fsstate.faults import Faults
from model.fsstate.oplog import FALLOC_FLAGS, LogError, Op, falloc_mode, write_data
from model.fsstate.tree import (
    Entry,
    FsSemantics,
    semantics,
)
from model.stat import S_IFDIR, S_IFLNK, S_IFREG

MAXSYMLINKS = 40
NAMESPACE_FIELDS = ("exists", "type", "subvol", "links")

FALLOC_FL_KEEP_SIZE = FALLOC_FLAGS["keep_size"]
FALLOC_FL_PUNCH_HOLE = FALLOC_FLAGS["punch_hole"]
FALLOC_FL_ZERO_RANGE = FALLOC_FLAGS["zero_range"]
FALLOC_FL_MODE_MASK = 0x7E  # PUNCH_HOLE | COLLAPSE | ZERO | INSERT | UNSHARE (6.12 falloc.h)


class OpError(Exception):
    """The op fails with this errno name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.errno = name


class Unmodeled(Exception):
    """The op is outside what the model covers (the message says what)."""


class Subvol:
    """One btrfs subvolume (or the model root's tree). Identity only."""

    __slots__ = ("id",)

    def __init__(self, sid: int) -> None:
        self.id = sid


@dataclass(eq=False)
class Node:
    mode: int
    subvol: Subvol
    last_op: int = -1  # index into FsModel.applied of the last op that changed this inode


@dataclass(eq=False)
class File(Node):
    data: bytearray = field(default_factory=bytearray)
    nlink: int = 1


@dataclass(eq=False)
class Symlink(Node):
    target: str = ""
    nlink: int = 1


@dataclass(eq=False)
class Dir(Node):
    children: dict[str, Node] = field(default_factory=dict)
    parent: Dir | None = None
    kind: str = "dir"  # dir | subvol | stub


@dataclass(frozen=True)
class Expected:
    """What an op should return: ``result`` as the log writes it, and result fields."""

    result: str
    extra: dict[str, str] = field(default_factory=dict)


class FsModel:
    """The expected state of the tree below one root directory.

    ``fs`` picks the semantics (``btrfs``/``ext4``); ``root_is_subvol`` says the root is a
    subvolume root (a snapshot source; on btrfs every example of the differential test
    runs in a fresh subvolume); ``faults`` plants bugs (:class:`Faults`)."""

    def __init__(
        self,
        fs: str | FsSemantics,
        *,
        root_is_subvol: bool = False,
        faults: Faults | None = None,
    ) -> None:
        self.sem = semantics(fs) if isinstance(fs, str) else fs
        self.faults = faults or Faults()
        self._next_subvol = 1
        self.root = Dir(
            mode=S_IFDIR | (0o777 if root_is_subvol else 0o755),
            subvol=Subvol(0),
            kind="subvol" if root_is_subvol else "dir",
        )
        self.applied: list[Op] = []
        # path -> index of the last op that created, removed or renamed something there
        self.path_ops: dict[str, int] = {}
        self._cur = -1
        self._extra: dict[str, str] = {}

    # ---- the log --------------------------------------------------------------------

    def apply(self, op: Op) -> Expected:
        """Apply one op (its semantics: the registry's, :mod:`model.fsstate.ops`) and
        return what it should have returned. A failing op changes nothing. Raises
        :class:`Unmodeled` for ops outside the model's scope and :class:`LogError` for a
        malformed op."""
        spec = op_registry.lookup(op.name)
        if spec is None:
            raise LogError(f"{op.ref}: the model has no op {op.name!r}")
        semantics: Callable[[FsModel, Op], str] | None
        if callable(spec.model):
            semantics = spec.model
        else:
            method = getattr(type(self), spec.method(), None)
            semantics = method if callable(method) else None
        if semantics is None:
            raise LogError(f"{op.ref}: the model has no method {spec.method()}")
        self.applied.append(op)
        self._cur = len(self.applied) - 1
        self._extra = {}
        for k in spec.path_keys():  # the last op that named each path
            if k in op.args:
                self._touch_path(op.args[k])
        try:
            res = semantics(self, op)
        except OpError as e:
            return Expected(e.errno)
        return Expected(res, self._extra)

    def changed(self, node: Node) -> None:
        """Op semantics given as a function (:mod:`model.fsstate.ops`) call this for an
        inode the current op changed (what :meth:`blame` names)."""
        node.last_op = self._cur

    def _touch_path(self, path: str) -> None:
        self.path_ops[_norm(path)] = self._cur

    def op_ref(self, index: int) -> str:
        return self.applied[index].ref if 0 <= index < len(self.applied) else "(setup)"

    # ---- path walk (fs/namei.c) -----------------------------------------------------

    def link_path_walk(self, start: Dir, path: str, follow_last: bool, budget: list[int]) -> Node:
        """Resolve ``path`` from ``start`` like ``path_lookupat``: every component but the
        last must be a directory (a symlink is followed there), the last is followed when
        ``follow_last``. ENOENT for a missing name, ENOTDIR for a non-directory in the
        middle, ELOOP after MAXSYMLINKS links."""
        if path == "":
            raise OpError("ENOENT")  # an empty symlink body (or path)
        if path.startswith("/"):
            raise Unmodeled(f"absolute path {path!r}")
        comps = [c for c in path.split("/") if c not in ("", ".")]
        cur: Node = start
        for i, c in enumerate(comps):
            if not isinstance(cur, Dir):
                raise OpError("ENOTDIR")
            if c == "..":
                if cur.parent is None:
                    raise Unmodeled(f"{path!r} climbs above the model's root")
                cur = cur.parent
                continue
            child = cur.children.get(c)
            if child is None:
                raise OpError("ENOENT")
            last = i == len(comps) - 1
            if isinstance(child, Symlink) and (follow_last or not last):
                budget[0] -= 1
                if budget[0] < 0:
                    raise OpError("ELOOP")
                child = self.link_path_walk(cur, child.target, True, budget)
            cur = child
        return cur

    def resolve(self, path: str, follow: bool = True) -> Node:
        return self.link_path_walk(self.root, path, follow, [MAXSYMLINKS])

    def filename_parentat(self, path: str) -> tuple[Dir, str]:
        """The parent directory and last name of ``path`` (``filename_parentat``)."""
        if path.endswith("/") or path in ("", ".", ".."):
            raise Unmodeled(f"path {path!r} has no last component the model handles")
        head, _, name = path.rpartition("/")
        if name in (".", ".."):
            raise Unmodeled(f"path {path!r} ends in {name}")
        parent = self.link_path_walk(self.root, head, True, [MAXSYMLINKS]) if head else self.root
        if not isinstance(parent, Dir):
            raise OpError("ENOTDIR")
        return parent, name

    def open_for_write(self, path: str) -> File:
        """``open(path, O_WRONLY)``: follows the last symlink; EISDIR on a directory
        (``may_open``)."""
        node = self.resolve(path, True)
        if isinstance(node, Dir):
            raise OpError("EISDIR")
        assert isinstance(node, File)
        return node

    @staticmethod
    def is_ancestor(a: Dir, b: Dir) -> Dir | None:
        """If ``a`` is a proper ancestor of ``b``, the child of ``a`` on the way to ``b``
        (``lock_two_directories``' trap), else None."""
        cur: Dir | None = b
        while cur is not None and cur.parent is not None:
            if cur.parent is a:
                return cur
            cur = cur.parent
        return None

    # ---- creation -------------------------------------------------------------------

    def _new_in(self, parent: Dir, name: str, node: Node, path: str) -> None:
        parent.children[name] = node
        node.last_op = self._cur
        parent.last_op = self._cur
        self._touch_path(path)

    def op_creat(self, op: Op) -> str:
        """``open(O_CREAT|O_EXCL|O_WRONLY)``: EEXIST for any existing name (a dangling
        symlink too: O_EXCL does not follow); EACCES in a stub, which has no ``create``
        (``lookup_open``)."""
        parent, name = self.filename_parentat(op.arg("path"))
        if name in parent.children:
            raise OpError("EEXIST")
        if parent.kind == "stub":
            raise OpError("EACCES")
        f = File(mode=S_IFREG | (op.int_arg("mode") & 0o7777), subvol=parent.subvol)
        self._new_in(parent, name, f, op.arg("path"))
        return "0"

    def op_mkdir(self, op: Op) -> str:
        """``do_mkdirat`` -> ``filename_create`` (EEXIST) -> ``vfs_mkdir`` (EPERM without
        ``i_op->mkdir``: a stub)."""
        parent, name = self.filename_parentat(op.arg("path"))
        if name in parent.children:
            raise OpError("EEXIST")
        if parent.kind == "stub":
            raise OpError("EPERM")
        d = Dir(mode=S_IFDIR | (op.int_arg("mode") & 0o1777), subvol=parent.subvol, parent=parent)
        self._new_in(parent, name, d, op.arg("path"))
        return "0"

    def op_symlink(self, op: Op) -> str:
        """``do_symlinkat``: an empty target is ENOENT (``getname``), then
        ``filename_create`` (EEXIST), ``vfs_symlink`` (EPERM in a stub)."""
        target = op.arg("target")
        if target == "":
            raise OpError("ENOENT")
        parent, name = self.filename_parentat(op.arg("path"))
        if name in parent.children:
            raise OpError("EEXIST")
        if parent.kind == "stub":
            raise OpError("EPERM")
        s = Symlink(mode=S_IFLNK | 0o777, subvol=parent.subvol, target=target)
        self._new_in(parent, name, s, op.arg("path"))
        return "0"

    def op_link(self, op: Op) -> str:
        """``do_linkat``: the old path (not following its last symlink), then
        ``filename_create`` for the new one (EEXIST), then ``vfs_link``: EPERM without
        ``i_op->link`` (a stub parent) or for a directory, EMLINK; then ``btrfs_link``:
        EXDEV across subvolumes, EMLINK at BTRFS_LINK_MAX (``ext4_link``: EXT4_LINK_MAX)."""
        src = self.resolve(op.arg("old"), False)
        parent, name = self.filename_parentat(op.arg("new"))
        if name in parent.children:
            raise OpError("EEXIST")
        if parent.kind == "stub" or isinstance(src, Dir):
            raise OpError("EPERM")
        assert isinstance(src, File | Symlink)
        if self.sem.subvolumes and parent.subvol is not src.subvol:
            raise OpError("EXDEV")
        if src.nlink >= self.sem.link_max:
            raise OpError("EMLINK")
        src.nlink += 1
        self._new_in(parent, name, src, op.arg("new"))
        return "0"

    # ---- removal --------------------------------------------------------------------

    def _drop(self, node: Node) -> None:
        if isinstance(node, File | Symlink):
            node.nlink -= 1
            node.last_op = self._cur

    def op_unlink(self, op: Op) -> str:
        """``do_unlinkat`` -> ``vfs_unlink`` -> ``may_delete(isdir=false)``: EISDIR for a
        directory (subvolume roots and stubs included)."""
        parent, name = self.filename_parentat(op.arg("path"))
        node = parent.children.get(name)
        if node is None:
            raise OpError("ENOENT")
        if isinstance(node, Dir):
            raise OpError("EISDIR")
        del parent.children[name]
        parent.last_op = self._cur
        self._drop(node)
        self._touch_path(op.arg("path"))
        return "0"

    def op_rmdir(self, op: Op) -> str:
        """``do_rmdir`` -> ``may_delete(isdir=true)`` (ENOTDIR) -> ``btrfs_rmdir``:
        ENOTEMPTY while the directory has entries (``i_size > BTRFS_EMPTY_DIR_SIZE``); an
        empty subvolume root is deleted as a subvolume (``btrfs_delete_subvolume``), a
        stub's entry is removed (``btrfs_unlink_subvol``). ext4: ``ext4_rmdir``,
        ENOTEMPTY unless ``ext4_empty_dir``."""
        parent, name = self.filename_parentat(op.arg("path"))
        node = parent.children.get(name)
        if node is None:
            raise OpError("ENOENT")
        if not isinstance(node, Dir):
            raise OpError("ENOTDIR")
        if node.children:
            raise OpError("ENOTEMPTY")
        del parent.children[name]
        parent.last_op = self._cur
        self._touch_path(op.arg("path"))
        return "0"

    # ---- rename ---------------------------------------------------------------------

    def op_rename(self, op: Op) -> str:
        """``do_renameat2`` (flags 0) -> ``vfs_rename`` -> ``btrfs_rename`` /
        ``ext4_rename``, checks in that order."""
        old_dir, old_name = self.filename_parentat(op.arg("old"))
        new_dir, new_name = self.filename_parentat(op.arg("new"))
        src = old_dir.children.get(old_name)
        if src is None:
            raise OpError("ENOENT")
        tgt = new_dir.children.get(new_name)
        # lock_rename(new_dir, old_dir): the trap is the child of one parent that is an
        # ancestor of (or is) the other
        if old_dir is not new_dir:
            trap = self.is_ancestor(old_dir, new_dir)
            if trap is not None and src is trap:
                raise OpError("EINVAL")  # source should not be ancestor of target
            trap = self.is_ancestor(new_dir, old_dir)
            if trap is not None and tgt is trap:
                raise OpError("ENOTEMPTY")  # target should not be an ancestor of source
        if src is tgt:
            return "0"  # vfs_rename: source == target
        is_dir = isinstance(src, Dir)
        if tgt is not None:  # may_delete(new_dir, new_dentry, is_dir)
            if is_dir and not isinstance(tgt, Dir):
                raise OpError("ENOTDIR")
            if not is_dir and isinstance(tgt, Dir):
                raise OpError("EISDIR")
        if self.sem.subvolumes:
            self.btrfs_rename_checks(old_dir, new_dir, src, tgt)
        elif is_dir and isinstance(tgt, Dir) and tgt.children:
            raise OpError("ENOTEMPTY")  # ext4_rename: !ext4_empty_dir(new.inode)
        if tgt is not None and self.faults.rename_no_replace:
            return "0"  # planted bug: the target is not replaced
        del old_dir.children[old_name]
        if tgt is not None:
            self._drop(tgt)
        new_dir.children[new_name] = src
        if isinstance(src, Dir):
            src.parent = new_dir
        old_dir.last_op = new_dir.last_op = self._cur
        self._touch_path(op.arg("old"))
        self._touch_path(op.arg("new"))
        return "0"

    def btrfs_rename_checks(self, old_dir: Dir, new_dir: Dir, src: Node, tgt: Node | None) -> None:
        """``btrfs_rename``'s own refusals: EPERM into a stub; EXDEV for anything but a
        subvolume root between different subvolumes (``root != dest``: the trees of the
        two parent directories); ENOTEMPTY to move a stub or to replace a subvolume root;
        ENOTEMPTY to replace a non-empty directory."""
        if new_dir.kind == "stub":
            raise OpError("EPERM")
        src_is_subvol_root = isinstance(src, Dir) and src.kind == "subvol"
        if not src_is_subvol_root and old_dir.subvol is not new_dir.subvol:
            raise OpError("EXDEV")
        if (isinstance(src, Dir) and src.kind == "stub") or (
            isinstance(tgt, Dir) and tgt.kind == "subvol"
        ):
            raise OpError("ENOTEMPTY")
        if isinstance(src, Dir) and isinstance(tgt, Dir) and tgt.children:
            raise OpError("ENOTEMPTY")

    # ---- data -----------------------------------------------------------------------

    def _store(self, f: File, off: int, data: bytes) -> None:
        if not data:
            return
        end = off + len(data)
        if len(f.data) < end:
            f.data.extend(bytes(end - len(f.data)))
        f.data[off:end] = data
        f.last_op = self._cur

    def op_write(self, op: Op) -> str:
        f = self.open_for_write(op.arg("path"))
        n = op.int_arg("len")
        self._store(f, op.int_arg("off"), write_data(op.int_arg("seed"), n))
        return str(n)

    def op_writev(self, op: Op) -> str:
        f = self.open_for_write(op.arg("path"))
        iov = [int(x) for x in op.arg("iov").split(",") if x]
        n = sum(iov)
        self._store(f, op.int_arg("off"), write_data(op.int_arg("seed"), n))
        return str(n)

    def op_read(self, op: Op) -> str:
        """``open(O_RDONLY)`` then ``pread``: EISDIR from ``generic_read_dir`` for a
        directory (the open succeeds)."""
        node = self.resolve(op.arg("path"), True)
        if isinstance(node, Dir):
            raise OpError("EISDIR")
        assert isinstance(node, File)
        off, n = op.int_arg("off"), op.int_arg("len")
        got = bytes(node.data[off : off + n]) if off < len(node.data) else b""
        self._extra = {"sha256": hashlib.sha256(got).hexdigest()}
        return str(len(got))

    def op_truncate(self, op: Op) -> str:
        """``do_sys_truncate`` -> ``vfs_truncate``: EISDIR for a directory."""
        node = self.resolve(op.arg("path"), True)
        if isinstance(node, Dir):
            raise OpError("EISDIR")
        assert isinstance(node, File)
        size = op.int_arg("size")
        if size < 0:
            raise OpError("EINVAL")
        if self.faults.truncate_extra_byte and size < len(node.data):
            size += 1
        if size < len(node.data):
            del node.data[size:]
        else:
            node.data.extend(bytes(size - len(node.data)))
        node.last_op = self._cur
        return "0"

    def op_fallocate(self, op: Op) -> str:
        """``open(O_WRONLY)`` then ``vfs_fallocate``: EINVAL for ``off < 0 || len <= 0``;
        EOPNOTSUPP for an unknown mode, PUNCH_HOLE without KEEP_SIZE, or two modes. The
        content: allocate and keep-size change nothing but the size (allocate extends it
        to ``off + len``); punch hole zeroes ``[off, off+len)`` within the size; zero
        range zeroes it and extends the size unless KEEP_SIZE."""
        f = self.open_for_write(op.arg("path"))
        mode = falloc_mode(op.arg("mode"))
        off, n = op.int_arg("off"), op.int_arg("len")
        if off < 0 or n <= 0:
            raise OpError("EINVAL")
        if mode & ~(FALLOC_FL_MODE_MASK | FALLOC_FL_KEEP_SIZE):
            raise OpError("EOPNOTSUPP")
        kind = mode & FALLOC_FL_MODE_MASK
        if kind not in (0, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE):
            raise OpError("EOPNOTSUPP")
        if kind == FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise OpError("EOPNOTSUPP")
        size = len(f.data)
        end = off + n
        if kind in (FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE):
            lo, hi = min(off, size), min(end, size)
            if hi > lo:
                f.data[lo:hi] = bytes(hi - lo)
        if not mode & FALLOC_FL_KEEP_SIZE and end > size:
            f.data.extend(bytes(end - size))
        f.last_op = self._cur
        return "0"

    def op_fsync(self, op: Op) -> str:
        self.resolve(op.arg("path"), True)
        return "0"

    def op_fdatasync(self, op: Op) -> str:
        return self.op_fsync(op)

    def op_sync(self, op: Op) -> str:
        return "0"

    # ---- btrfs subvolumes (fs/btrfs/ioctl.c, transaction.c) ------------------------

    def _ioctl_parent(self, path: str) -> tuple[Dir, str]:
        """The driver opens the parent with O_DIRECTORY and issues the ioctl there: ENOTTY
        where no ioctl exists (ext4's ``ext4_ioctl`` default; a stub's
        ``simple_dir_operations``)."""
        parent, name = self.filename_parentat(path)
        return parent, name

    def op_subvol_create(self, op: Op) -> str:
        """``__btrfs_ioctl_snap_create`` (``.``/``..`` are EEXIST) -> ``btrfs_mksubvol``
        -> ``btrfs_may_create`` (EEXIST) -> ``create_subvol``."""
        parent, name = self._ioctl_parent(op.arg("path"))
        if not self.sem.subvolumes or parent.kind == "stub":
            raise OpError("ENOTTY")
        if name in (".", "..") or name in parent.children:
            raise OpError("EEXIST")
        sv = Subvol(self._next_subvol)
        self._next_subvol += 1
        d = Dir(mode=S_IFDIR | 0o777, subvol=sv, parent=parent, kind="subvol")
        self._new_in(parent, name, d, op.arg("path"))
        return "0"

    def op_snapshot(self, op: Op) -> str:
        """``open(src)``, ``open(parent)``, then ``__btrfs_ioctl_snap_create``: EINVAL
        unless the source is a subvolume root (``btrfs_ino != BTRFS_FIRST_FREE_OBJECTID``),
        checked before ``btrfs_mksubvol``'s EEXIST; then ``create_pending_snapshot``,
        which copies the source root (``btrfs_copy_root``) before inserting the new
        entry, so a snapshot into its own source does not contain itself."""
        src = self.resolve(op.arg("src"), True)
        parent, name = self._ioctl_parent(op.arg("path"))
        if not self.sem.subvolumes or parent.kind == "stub":
            raise OpError("ENOTTY")
        if name in (".", ".."):
            raise OpError("EEXIST")
        if not (isinstance(src, Dir) and src.kind == "subvol"):
            raise OpError("EINVAL")
        if name in parent.children:
            raise OpError("EEXIST")
        sv = Subvol(self._next_subvol)
        self._next_subvol += 1
        snap = self.create_snapshot(src, sv, parent)
        self._new_in(parent, name, snap, op.arg("path"))
        return "0"

    def create_snapshot(self, src: Dir, sv: Subvol, parent: Dir) -> Dir:
        """The snapshot's tree: the source subvolume's inodes (hard links stay shared, so
        link counts carry over), nested subvolume roots and stubs become stubs."""
        memo: dict[int, Node] = {}

        def copy(node: Node, up: Dir) -> Node:
            if isinstance(node, Dir):
                if node is not src and node.kind in ("subvol", "stub"):
                    return Dir(mode=STUB_MODE, subvol=sv, parent=up, kind="stub")
                d = Dir(
                    mode=node.mode,
                    subvol=sv,
                    parent=up,
                    kind="subvol" if node is src else "dir",
                )
                for n, c in node.children.items():
                    d.children[n] = copy(c, d)
                d.last_op = self._cur
                return d
            if id(node) in memo:
                return memo[id(node)]
            new: Node
            if isinstance(node, File):
                new = File(mode=node.mode, subvol=sv, data=bytearray(node.data), nlink=node.nlink)
            else:
                assert isinstance(node, Symlink)
                new = Symlink(mode=node.mode, subvol=sv, target=node.target, nlink=node.nlink)
            new.last_op = self._cur
            memo[id(node)] = new
            return new

        out = copy(src, parent)
        assert isinstance(out, Dir)
        return out

    def op_subvol_delete(self, op: Op) -> str:
        """``btrfs_ioctl_snap_destroy``: ``..``/``.`` EINVAL; ENOENT; ``btrfs_may_delete``
        (ENOTDIR for a non-directory); EINVAL unless a subvolume root;
        ``may_destroy_subvol``: ENOTEMPTY while a subvolume's entry lives in it (a
        ROOT_REF from it)."""
        parent, name = self._ioctl_parent(op.arg("path"))
        if not self.sem.subvolumes or parent.kind == "stub":
            raise OpError("ENOTTY")
        if name in (".", ".."):
            raise OpError("EINVAL")
        node = parent.children.get(name)
        if node is None:
            raise OpError("ENOENT")
        if not isinstance(node, Dir):
            raise OpError("ENOTDIR")
        if node.kind != "subvol":
            raise OpError("EINVAL")
        if self._has_nested_subvol(node):
            raise OpError("ENOTEMPTY")
        del parent.children[name]
        parent.last_op = self._cur
        self._touch_path(op.arg("path"))
        return "0"

    @staticmethod
    def _has_nested_subvol(root: Dir) -> bool:
        stack = [root]
        while stack:
            d = stack.pop()
            for c in d.children.values():
                if isinstance(c, Dir):
                    if c.kind == "subvol":
                        return True
                    stack.append(c)
        return False

    # ---- the expected tree ----------------------------------------------------------

    def walk(self) -> list[tuple[str, Node]]:
        """(path, node) for every path below the root, in sorted path order."""
        out: list[tuple[str, Node]] = []

        def rec(d: Dir, prefix: str) -> None:
            for name in sorted(d.children):
                node = d.children[name]
                path = prefix + name
                out.append((path, node))
                if isinstance(node, Dir):
                    rec(node, path + "/")

        rec(self.root, "")
        return out

    def entries(self) -> dict[str, Entry]:
        """The expected compared fields of every path (:mod:`model.fsstate.tree`)."""
        walked = self.walk()
        names: dict[int, list[str]] = {}
        for path, node in walked:
            if not isinstance(node, Dir):
                names.setdefault(id(node), []).append(path)
        out: dict[str, Entry] = {}
        for path, node in walked:
            if isinstance(node, Dir):
                size: int | None = None
                if self.sem.dir_size_is_names:
                    size = 2 * sum(len(n.encode()) for n in node.children)
                nlink = 1
                if self.sem.dir_nlink_counts_subdirs:
                    nlink = 2 + sum(isinstance(c, Dir) for c in node.children.values())
                out[path] = Entry(
                    path,
                    "dir",
                    node.mode & 0o7777,
                    size,
                    nlink,
                    subvol=(
                        ("" if node.kind == "dir" else node.kind) if self.sem.subvolumes else None
                    ),
                )
            elif isinstance(node, File):
                out[path] = Entry(
                    path,
                    "file",
                    node.mode & 0o7777,
                    len(node.data),
                    node.nlink,
                    sha256=hashlib.sha256(node.data).hexdigest(),
                    links=tuple(sorted(p for p in names[id(node)] if p != path)),
                )
            else:
                assert isinstance(node, Symlink)
                out[path] = Entry(
                    path,
                    "symlink",
                    0o777,
                    len(node.target.encode()),
                    node.nlink,
                    target=node.target,
                    links=tuple(sorted(p for p in names[id(node)] if p != path)),
                )
        return out

    def node_at(self, path: str) -> Node | None:
        try:
            return self.resolve(path, False)
        except (OpError, Unmodeled):
            return None

    def blame(self, path: str, field_name: str) -> str:
        """The op most likely to have caused a difference at ``path`` in ``field_name``:
        for content, size and link count the last op that changed the inode; for the
        namespace (and when the model has no inode there) the latest op that named this
        path or one of its ancestors, whatever it returned."""
        node = self.node_at(path)
        if node is not None and node.last_op >= 0 and field_name not in NAMESPACE_FIELDS:
            return self.op_ref(node.last_op)
        best = -1
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            best = max(best, self.path_ops.get("/".join(parts[:i]), -1))
        return self.op_ref(best)


def _norm(path: str) -> str:
    return "/".join(c for c in path.split("/") if c not in ("", "."))
