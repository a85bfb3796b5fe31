"""Crash consistency: what a tree may hold after a power cut, given the op log up to the cut.

:class:`HistoryModel` replays a log like :class:`~model.fsstate.namespace.FsModel` and also
keeps, for every regular file it ever held, the history a crash check needs: each 4 KiB
block's contents over time, the sizes it had, and its last *sync point* (the last op after
which its contents were durable); and for every path, every node that was ever named
there. :func:`check_crash` judges the tree found after the crash and the log replay (the
driver's ``walk --blocks`` records) by two rules.

What each op does is read from the op registry (:mod:`model.fsstate.ops`,
:class:`~model.fsstate.ops.Effects`): the names it makes, removes or moves, the file whose
data it changes, what it makes durable (``sync``: fsync, fdatasync, sync, snapshot); the
rules below are stated for the registry's ops of each effect.

**Sync points.** An op that returned 0 after which a file's contents are durable:

- ``fsync`` and ``fdatasync`` of a path leading to the file (``btrfs_sync_file``,
  ``fs/btrfs/file.c``; ``ext4_sync_file``, ``fs/ext4/fsync.c``: data written and waited
  on, and the journal committed up to the inode's ``i_sync_tid`` / ``i_datasync_tid``);
- ``sync`` (``ksys_sync``: every file; the model counts the files of the syncing
  process's own directory ``pN`` only, since the log does not order one process's ops
  against another's);
- on btrfs, ``snapshot``: ``btrfs_mksnapshot`` flushes the source subvolume's delalloc,
  waits for its ordered extents, and ``create_snapshot`` commits the transaction
  (``fs/btrfs/ioctl.c``): the source subvolume's files and the new snapshot's are durable.

An op that may have been running at the cut (its log line never came: the *in-flight*
op, :meth:`HistoryModel.apply_inflight`) is never a sync point, but its changes count as
possible.

**Rule 1, fsync'd files are exact.** A *strict record* is kept for the path an ``fsync``
reached the file through (when no component of the op's path is a symlink), and for every
file path in the scope of a ``sync`` or a ``snapshot``: these ops make the names durable
too (btrfs logs the inode with its new ancestors through the opened dentry,
``btrfs_log_inode_parent`` in ``fs/btrfs/tree-log.c``; ext4 commits the running
transaction, which holds every earlier namespace change). ``fdatasync`` makes no strict
record: it need not make a name durable (ext4 commits only up to ``i_datasync_tid``, which
a rename does not advance). A record stays valid while no later op, the in-flight ones
included, removes, replaces or moves a directory entry on its path (``rename`` from or
onto it, ``unlink``, ``rmdir``, ``subvol_delete`` of it or of an ancestor) and no later op
changes the file's contents or size. For every valid record the path must exist after the
crash as a regular file holding exactly the model's bytes at the sync point.

**Rule 2, never garbage.** Every path found after the crash must have named a node of the
same type at some time (an entry renamed or unlinked since may reappear; nothing appears
that never was); a symlink's target must be one that path's symlink had. A regular file
must be explained by some file that was ever named there, judged against that file's
*allowed states*: the state at its last sync point and every state a later op left (every
state it ever had if it was never synced; a state's bytes past its end read as zeros):

- **contents, byte by byte**: each byte of the file as found equals the byte at that
  offset in some allowed state. Writeback persists a file page by page and a transaction
  may hold some of a file's new blocks and not others, so the file as a whole may be a mix
  of states that never existed at once; what it must never hold is a byte the file never
  had at that offset since its last sync point (another file's data, freed blocks, an
  unwritten disk, or data older than the sync). Checked per 4 KiB block by hash (a block
  equal to one allowed state's block), and byte by byte, reading the block from the
  image, for a block that equals none;
- **size**: between the smallest and the largest size among the allowed states. Not only
  those sizes: the on-disk size can take the in-memory size of a moment in the middle of a
  write (ext4's ``i_disksize`` follows ``i_size`` as writeback maps pages, and
  ``ext4_zero_range`` raises it to the range's end), and both are seen after crashes.

**Known kernel behaviour.** A rule-2 finding that matches a behaviour of the stock kernels
we have documented and reproduced is tagged with its name (:data:`KNOWN`) instead of being
dropped: it is still a finding (``CrashResult.ok`` is False), but
``CrashResult.unexplained`` leaves it out, so a test can hold a run to "nothing new". One
so far, on btrfs only:

- ``btrfs-stale-tail``: every byte of a block that no allowed state explains lies past a
  size the file was cut to inside that block (``s <= offset < the block's end``, ``s`` not
  block-aligned), and equals the byte that offset held in a version of the block from
  before that cut. The old bytes past an old end of file come back after the file was
  extended: on an expanding truncate (``btrfs_cont_expand`` -> ``btrfs_truncate_block``)
  the tail of the old last block is zeroed in the page cache only, and a transaction
  commit can make the larger i_size durable before that page is written (reproducer:
  ``tests/vm/test_data/btrfs-stale-tail-after-expanding-truncate.log``; seen on 6.1 and
  6.12).

Pure and deterministic: no I/O; block hashes are the first 16 hex digits of SHA-256 of the
block zero-padded to 4096 bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model.fsstate import ops as op_registry
from model.fsstate.namespace import (
    Dir,
    Expected,
    File,
    FsModel,
    Node,
    OpError,
    Symlink,
    Unmodeled,
)
from model.fsstate.oplog import Op
from model.fsstate.tree import FsSemantics
from model.stat import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG

BLOCK = 4096


def block_hash(data: bytes) -> str:
    """The hash of one block as found: zero-padded to :data:`BLOCK` bytes."""
    if len(data) < BLOCK:
        data = data + bytes(BLOCK - len(data))
    return hashlib.sha256(data).hexdigest()[:16]


ZERO = block_hash(b"")
ZERO_BLOCK = bytes(BLOCK)


def block_hashes(data: bytes | bytearray) -> list[str]:
    """Hashes of ``data``'s blocks (the last one zero-padded): what ``walk --blocks``
    records for a file."""
    return [block_hash(bytes(data[i : i + BLOCK])) for i in range(0, len(data), BLOCK)]


@dataclass
class FileHistory:
    """One regular file's history: ``blocks[b]`` lists (op index, hash, bytes) each time
    block ``b`` changed (before the first entry it read as zeros), ``sizes`` (op index,
    size) each time the size changed, ``synced`` the op index of its last sync point (-1:
    never), ``version`` the number of content or size changes."""

    created: int
    blocks: dict[int, list[tuple[int, str, bytes]]] = field(default_factory=dict)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    synced: int = -1
    version: int = 0

    def set_block(self, op: int, b: int, data: bytes) -> bool:
        data = data.ljust(BLOCK, b"\0")
        h = block_hash(data)
        hist = self.blocks.setdefault(b, [])
        last = hist[-1][1] if hist else ZERO
        if h == last:
            return False
        hist.append((op, h, data))
        return True

    def allowed_versions(self, b: int) -> list[bytes]:
        """Block ``b``'s contents (4096 bytes, zero-extended) at the last sync point and
        after every later change."""
        at_sync = ZERO_BLOCK
        later: list[bytes] = []
        for op, _h, data in self.blocks.get(b, []):
            if op <= self.synced:
                at_sync = data
            else:
                later.append(data)
        return [at_sync, *later]

    def allowed_hashes(self, b: int, length: int = BLOCK) -> set[str]:
        """Hashes block ``b`` may have when the file as found holds ``length`` bytes of
        it (the last block may be cut short by the size)."""
        if length >= BLOCK:
            at_sync = ZERO
            later: set[str] = set()
            for op, h, _data in self.blocks.get(b, []):
                if op <= self.synced:
                    at_sync = h
                else:
                    later.add(h)
            return {at_sync} | later
        return {block_hash(v[:length]) for v in self.allowed_versions(b)}

    def last_change(self) -> int:
        """The op index of the last change of contents or size."""
        ops = [op for hist in self.blocks.values() for op, _h, _d in hist]
        return max([*ops, *(op for op, _s in self.sizes)])

    def allowed_sizes(self) -> set[int]:
        at_sync = 0
        later: set[int] = set()
        for op, size in self.sizes:
            if op <= self.synced:
                at_sync = size
            else:
                later.add(size)
        return {at_sync} | later

    def size_allowed(self, size: int) -> bool:
        sizes = self.allowed_sizes()
        return min(sizes) <= size <= max(sizes)


@dataclass
class StrictRecord:
    """A path through which a file was synced (rule 1). ``chain`` holds the directory
    entries from the root to the file as (id of the directory node, name); ``horizon`` is
    the last op whose namespace changes the sync point made durable: for ``sync`` and
    ``snapshot`` the op itself; for ``fsync`` the file's own last change (ext4 commits the
    journal only up to the transaction that last changed the inode, ``i_sync_tid``; btrfs
    logs the inode and its new ancestors, not a rename of an older ancestor)."""

    path: str
    op: int
    node: File
    version: int
    chain: tuple[tuple[int, str], ...]
    horizon: int


class HistoryModel(FsModel):
    """:class:`FsModel` plus the history rule 1 and rule 2 need (module docstring).

    ``proc_dirs``: the log is a stress run whose process N owns ``pN`` (the scope of its
    ``sync`` ops); otherwise ``sync`` covers the whole tree.

    :meth:`apply_inflight` applies an op that may or may not have run before the cut (its
    log line never came): its changes join the history (they may show), but it is no
    sync point (it may not have finished)."""

    def __init__(
        self,
        fs: str | FsSemantics,
        *,
        root_is_subvol: bool = False,
        proc_dirs: bool = False,
    ) -> None:
        super().__init__(fs, root_is_subvol=root_is_subvol)
        self.proc_dirs = proc_dirs
        self.hist: dict[int, FileHistory] = {}  # id(File) -> its history
        self.names: dict[str, list[Node]] = {}  # path -> nodes ever named there
        self.strict: dict[str, StrictRecord] = {}
        # (id(Dir), name) -> op index of the last time that entry was removed, replaced or
        # moved away
        self.entry_changed: dict[tuple[int, str], int] = {}
        # (id(Dir), name) -> op index of the last time that entry was made (created, or
        # the target of a rename or link)
        self.entry_set: dict[tuple[int, str], int] = {}
        self._keep: list[Node] = [self.root]  # ids stay unique while the model lives
        self._inflight = False

    # ---- history bookkeeping --------------------------------------------------------

    def history(self, f: File) -> FileHistory:
        h = self.hist.get(id(f))
        if h is None:
            h = FileHistory(created=self._cur, sizes=[(self._cur, 0)])
            self.hist[id(f)] = h
            self._keep.append(f)
        return h

    def _name(self, path: str, node: Node) -> None:
        nodes = self.names.setdefault(path, [])
        if not any(n is node for n in nodes):
            nodes.append(node)
            self._keep.append(node)

    def _name_subtree(self, path: str, node: Node) -> None:
        """Record ``path`` and every path below it as naming their nodes now."""
        stack = [(path, node)]
        while stack:
            p, n = stack.pop()
            self._name(p, n)
            if isinstance(n, File):
                self.history(n)
            if isinstance(n, Dir):
                stack += [(f"{p}/{c}", child) for c, child in n.children.items()]

    def path_of(self, d: Dir) -> str | None:
        """The canonical path of directory ``d`` ("" for the root), or None if it is no
        longer reachable."""
        parts: list[str] = []
        cur = d
        while cur.parent is not None:
            up = cur.parent
            name = next((k for k, v in up.children.items() if v is cur), None)
            if name is None:
                return None
            parts.append(name)
            cur = up
        if cur is not self.root:
            return None
        return "/".join(reversed(parts))

    def _canon(self, parent: Dir, name: str) -> str | None:
        base = self.path_of(parent)
        if base is None:
            return None
        return f"{base}/{name}" if base else name

    def _entry(self, path: str) -> tuple[Dir, str] | None:
        try:
            return self.filename_parentat(path)
        except (OpError, Unmodeled):
            return None

    def _chain(self, path: str) -> tuple[tuple[int, str], ...] | None:
        """The directory entries from the root to ``path`` when every component is a plain
        name of a directory (no symlink, no ``..``), else None."""
        comps = [c for c in path.split("/") if c not in ("", ".")]
        if not comps or ".." in comps:
            return None
        chain: list[tuple[int, str]] = []
        cur: Node = self.root
        for i, c in enumerate(comps):
            if not isinstance(cur, Dir) or c not in cur.children:
                return None
            chain.append((id(cur), c))
            cur = cur.children[c]
            if isinstance(cur, Symlink) or (i < len(comps) - 1 and not isinstance(cur, Dir)):
                return None
        return tuple(chain)

    def _mark_synced(
        self,
        f: File,
        path: str | None,
        chain: tuple[tuple[int, str], ...] | None,
        horizon: int | None = None,
    ) -> None:
        """``f`` is durable now; with ``path`` and ``chain``, so is that name of it, with
        the namespace up to op ``horizon`` (default: now)."""
        if self._inflight:
            return
        h = self.history(f)
        h.synced = self._cur
        if path is not None and chain is not None:
            hz = self._cur if horizon is None else horizon
            self.strict[path] = StrictRecord(path, self._cur, f, h.version, chain, hz)

    def _sync_tree(self, top: Dir, top_path: str, same_subvol: bool = False) -> None:
        """Every file below ``top`` (reached without leaving ``top``'s subvolume when
        ``same_subvol``) is synced now, through each of its paths."""
        base = self._chain(top_path) if top_path else ()
        stack: list[tuple[Dir, str, tuple[tuple[int, str], ...] | None]] = [(top, top_path, base)]
        while stack:
            d, p, chain = stack.pop()
            for name, child in d.children.items():
                cp = f"{p}/{name}" if p else name
                cc = None if chain is None else (*chain, (id(d), name))
                if isinstance(child, File):
                    if not same_subvol or child.subvol is top.subvol:
                        self._mark_synced(child, cp, cc)
                elif isinstance(child, Dir):
                    if same_subvol and child.subvol is not top.subvol:
                        continue
                    stack.append((child, cp, cc))

    # ---- applying ops ---------------------------------------------------------------

    def apply(self, op: Op) -> Expected:
        """:meth:`FsModel.apply`, then the history: what the op's registry effects
        (:class:`~model.fsstate.ops.Effects`) say it changed, named or made durable."""
        spec = op_registry.lookup(op.name)
        if spec is None:
            return super().apply(op)  # refuses it
        eff = spec.effects
        target: File | None = None
        old_len = 0
        if eff.data:
            node = self.node_at_follow(op.args.get(eff.data, ""))
            if isinstance(node, File):
                target, old_len = node, len(node.data)
        removed = [e for e in (self._entry(op.args.get(k, "")) for k in eff.removes) if e]
        made = self._entry(op.args.get(eff.makes, "")) if eff.makes else None
        exp = super().apply(op)
        if exp.result.startswith("E"):
            return exp
        cur = self._cur
        for d, name in removed:
            self.entry_changed[(id(d), name)] = cur
            self._keep.append(d)
        if made is not None:
            self.entry_set[(id(made[0]), made[1])] = cur
            self._keep.append(made[0])
        if target is not None:
            self._content_changed(op, spec, target, old_len)
        if eff.made == "snapshot":
            self._snapshot_done(op, spec)
        elif eff.makes:
            self._named(op.args[eff.makes])
        if eff.sync in ("fsync", "fdatasync"):
            where = op.args[spec.path_keys()[0]]
            node = self.node_at_follow(where)
            if isinstance(node, File):
                direct = eff.sync == "fsync" and self.node_at(where) is node
                chain = self._chain(where) if direct else None
                path = "/".join(n for _d, n in chain) if chain else None
                horizon = max(node.last_op, self.entry_set.get(chain[-1], -1) if chain else -1)
                self._mark_synced(node, path, chain, horizon)
        elif eff.sync == "sync":
            scope: Node | None = self.root
            path = ""
            if self.proc_dirs:
                path = f"p{op.proc}"
                scope = self.root.children.get(path)
            if isinstance(scope, Dir):
                self._sync_tree(scope, path)
        return exp

    def apply_inflight(self, op: Op) -> Expected:
        """Apply ``op`` as one that may have run, wholly or in part, before the cut."""
        self._inflight = True
        try:
            return self.apply(op)
        finally:
            self._inflight = False

    def node_at_follow(self, path: str) -> Node | None:
        try:
            return self.resolve(path, True)
        except (OpError, Unmodeled):
            return None

    def _named(self, path: str) -> None:
        e = self._entry(path)
        if e is None:
            return
        parent, name = e
        node = parent.children.get(name)
        canon = self._canon(parent, name)
        if node is not None and canon is not None:
            self._name_subtree(canon, node)

    def _content_changed(self, op: Op, spec: op_registry.OpSpec, f: File, old_len: int) -> None:
        h = self.history(f)
        new_len = len(f.data)
        lo, hi = min(old_len, new_len), max(old_len, new_len)
        offs = spec.keys_of(op_registry.OFFSET)
        if offs:  # [offset, offset + length) was written, allocated or zeroed
            off = op.int_arg(offs[0])
            n = sum(op.int_arg(k) for k in spec.keys_of(op_registry.LENGTH))
            for k in spec.keys_of(op_registry.IOV):
                n += sum(int(x) for x in op.arg(k).split(",") if x)
            lo, hi = min(lo, off), max(hi, off + n)
        changed = False
        for b in range(lo // BLOCK, (hi + BLOCK - 1) // BLOCK):
            changed |= h.set_block(self._cur, b, bytes(f.data[b * BLOCK : (b + 1) * BLOCK]))
        if new_len != old_len:
            h.sizes.append((self._cur, new_len))
            changed = True
        if changed:
            h.version += 1

    def _snapshot_done(self, op: Op, spec: op_registry.OpSpec) -> None:
        e = self._entry(op.args[spec.effects.makes])
        src = self.node_at_follow(op.args[spec.effects.source])
        if e is None or not isinstance(src, Dir):
            return
        parent, name = e
        snap = parent.children.get(name)
        canon = self._canon(parent, name)
        if not isinstance(snap, Dir) or canon is None:
            return
        # the snapshot's files start with the source's contents, durable now
        stack: list[Dir] = [snap]
        while stack:
            d = stack.pop()
            for child in d.children.values():
                if isinstance(child, File) and id(child) not in self.hist:
                    h = self.history(child)
                    for b in range(0, (len(child.data) + BLOCK - 1) // BLOCK):
                        h.set_block(self._cur, b, bytes(child.data[b * BLOCK : (b + 1) * BLOCK]))
                    if child.data:
                        h.sizes.append((self._cur, len(child.data)))
                elif isinstance(child, Dir):
                    stack.append(child)
        self._name_subtree(canon, snap)
        self._sync_tree(snap, canon, same_subvol=True)
        src_path = self.path_of(src)
        if src_path is not None:
            self._sync_tree(src, src_path, same_subvol=True)

    # ---- judging --------------------------------------------------------------------

    def strict_valid(self, rec: StrictRecord) -> bool:
        """Rule 1 applies: every entry on the path was made by the record's horizon and
        none changed after the record; nor did the contents."""
        if self.history(rec.node).version != rec.version:
            return False
        return all(
            self.entry_changed.get(e, -1) <= rec.op and self.entry_set.get(e, -1) <= rec.horizon
            for e in rec.chain
        )


# documented kernel behaviours a finding can match (module docstring): name -> (filesystem,
# one line for reports)
KNOWN = {
    "btrfs-stale-tail": (
        "btrfs",
        "old bytes past an old end of file came back after an extension (the zeroed tail"
        " was a dirty page when the larger i_size was committed)",
    ),
}


@dataclass(frozen=True)
class CrashFinding:
    """A violation: ``rule`` is ``fsync`` (rule 1) or ``garbage`` (rule 2); ``op`` names
    the op the expectation comes from (the sync point, or the last op that named the path);
    ``known`` the :data:`KNOWN` kernel behaviour it matches, or ""."""

    rule: str
    path: str
    message: str
    op: str = ""
    known: str = ""

    def __str__(self) -> str:
        by = f" ({self.op})" if self.op else ""
        tag = f" [known: {self.known}]" if self.known else ""
        return f"{self.rule}: {self.path}: {self.message}{by}{tag}"

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "path": self.path,
            "message": self.message,
            "op": self.op,
            "known": self.known,
        }


@dataclass
class CrashResult:
    findings: list[CrashFinding] = field(default_factory=list)
    strict_checked: int = 0  # paths rule 1 held to exact contents
    files_checked: int = 0  # files judged by rule 2
    paths: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def unexplained(self) -> list[CrashFinding]:
        """The findings that match no :data:`KNOWN` kernel behaviour."""
        return [f for f in self.findings if not f.known]


def _type_of(mode: int) -> str:
    return {S_IFREG: "file", S_IFDIR: "dir", S_IFLNK: "symlink"}.get(mode & S_IFMT, "other")


def _node_type(n: Node) -> str:
    return "file" if isinstance(n, File) else "dir" if isinstance(n, Dir) else "symlink"


def check_crash(
    model: HistoryModel,
    walk: list[dict[str, Any]],
    *,
    skip_prefixes: tuple[str, ...] = (),
    read_block: Callable[[str, int], bytes | None] | None = None,
) -> CrashResult:
    """Judge the tree found after a crash (walk records with ``block_sha``: the hashes of
    :func:`block_hashes`; ``error``: the errno name if reading the file failed) against
    the history ``model`` replayed, by rule 1 and rule 2 (module docstring). Paths under
    ``skip_prefixes`` (processes the model could not follow) are not judged.

    ``read_block(path, b)``, when given, returns the bytes of block ``b`` of the file as
    found (or None): a block whose hash matches no allowed version is then judged byte by
    byte (each byte must be that offset's byte in an allowed version); without it, such a
    block is a finding."""

    def skipped(path: str) -> bool:
        return any(p == "" or path == p or path.startswith(p + "/") for p in skip_prefixes)

    res = CrashResult(paths=len(walk))
    found = {str(r["path"]): r for r in walk}
    for path, rec in sorted(model.strict.items()):
        if skipped(path) or not model.strict_valid(rec):
            continue
        res.strict_checked += 1
        want = bytes(rec.node.data)
        ref = model.op_ref(rec.op)
        r = found.get(path)
        if r is None:
            res.findings.append(CrashFinding("fsync", path, "synced file is missing", ref))
        elif _type_of(int(r["mode"])) != "file":
            res.findings.append(
                CrashFinding("fsync", path, f"synced file is a {_type_of(int(r['mode']))}", ref)
            )
        elif "error" in r:
            res.findings.append(CrashFinding("fsync", path, f"read fails: {r['error']}", ref))
        elif int(r["size"]) != len(want) or r.get("sha256") != hashlib.sha256(want).hexdigest():
            bad = first_bad_block(want, list(r.get("block_sha", [])))
            res.findings.append(
                CrashFinding(
                    "fsync",
                    path,
                    f"holds {r['size']} bytes, the sync point had {len(want)}"
                    + (f"; first differing block {bad}" if bad is not None else ""),
                    ref,
                )
            )
    for path, r in sorted(found.items()):
        if skipped(path):
            continue
        typ = _type_of(int(r["mode"]))
        cands = [n for n in model.names.get(path, []) if _node_type(n) == typ]
        if not cands:
            was = sorted({_node_type(n) for n in model.names.get(path, [])})
            res.findings.append(
                CrashFinding(
                    "garbage",
                    path,
                    f"a {typ} where the history had " + (" or ".join(was) if was else "nothing"),
                    _named_by(model, path),
                )
            )
            continue
        if typ == "symlink":
            targets = {n.target for n in cands if isinstance(n, Symlink)}
            if r.get("target") not in targets:
                res.findings.append(
                    CrashFinding(
                        "garbage",
                        path,
                        f"symlink target {r.get('target')!r} never stored there",
                        _named_by(model, path),
                    )
                )
        elif typ == "file":
            res.files_checked += 1

            def reader(b: int, path: str = path) -> bytes | None:
                return read_block(path, b) if read_block is not None else None

            files = [n for n in cands if isinstance(n, File)]
            why = [explain_file(model.history(n), r, reader, model.sem.name) for n in files]
            if all(w is not None for w in why):
                last = model.history(files[0]).last_change()
                expl = [w for w in why if w is not None]
                msg, tag = ([w for w in expl if w[1]] or expl)[0]
                res.findings.append(
                    CrashFinding("garbage", path, msg, model.op_ref(last), known=tag)
                )
    return res


def _named_by(model: HistoryModel, path: str) -> str:
    """The last op that named ``path`` or an ancestor, or "" if none did."""
    ref = model.blame(path, "exists")
    return "" if ref == "(setup)" else ref


def first_bad_block(want: bytes, got: list[str]) -> int | None:
    exp = block_hashes(want)
    for i in range(max(len(exp), len(got))):
        if (exp[i] if i < len(exp) else None) != (got[i] if i < len(got) else None):
            return i
    return None


def explain_file(
    h: FileHistory,
    r: dict[str, Any],
    read_block: Callable[[int], bytes | None] = lambda b: None,
    fs: str = "",
) -> tuple[str, str] | None:
    """None if the file found (walk record ``r``) is allowed by rule 2 for history ``h``,
    else (why not, the :data:`KNOWN` behaviour of filesystem ``fs`` it matches or ""). A
    block whose hash matches no allowed version is read with ``read_block`` and judged
    byte by byte."""
    stale_known = KNOWN["btrfs-stale-tail"][0] == fs
    if "error" in r:
        return f"read fails: {r['error']}", ""
    size = int(r["size"])
    if not h.size_allowed(size):
        allowed = sorted(h.allowed_sizes())
        return (
            f"size {size}: outside the sizes the file had since its last sync point"
            f" ({allowed[0]}..{allowed[-1]})"
        ), ""
    blocks = list(r.get("block_sha", []))
    if len(blocks) != (size + BLOCK - 1) // BLOCK:
        return f"{len(blocks)} block hashes for size {size}", ""
    stale: tuple[str, str] | None = None
    for b, bh in enumerate(blocks):
        length = min(BLOCK, size - b * BLOCK)
        if bh in h.allowed_hashes(b, length):
            continue
        data = read_block(b)
        if data is None:
            return (
                f"block {b} (offset {b * BLOCK}) is no version the file had there"
                " since its last sync point (bytes not read)"
            ), ""
        versions = h.allowed_versions(b)
        bad = garbage_byte(data[:length], versions)
        if bad is not None:
            why = (
                f"byte {b * BLOCK + bad} (block {b}) is {data[bad]:#04x}, a value it never"
                " had there since the file's last sync point"
            )
            if not (stale_known and stale_tail(h, b, data[:length], versions)):
                return why, ""
            stale = stale or (why, "btrfs-stale-tail")
    return stale


def stale_tail(h: FileHistory, b: int, data: bytes, allowed: list[bytes]) -> bool:
    """True if every byte of block ``b`` as found (``data``) that no ``allowed`` version
    (:meth:`FileHistory.allowed_versions`) explains lies past a size the file was cut to
    inside block ``b`` and equals that offset's byte in a version of the block from before
    that cut (``btrfs-stale-tail``, module docstring)."""
    cuts = [(op, size - b * BLOCK) for op, size in h.sizes if 0 < size - b * BLOCK < BLOCK]
    for i, byte in enumerate(data):
        if any(v[i] == byte for v in allowed):
            continue
        if not any(
            cut <= i and any(vop < op and v[i] == byte for vop, _h, v in h.blocks.get(b, []))
            for op, cut in cuts
        ):
            return False
    return True


def garbage_byte(data: bytes, versions: list[bytes]) -> int | None:
    """The first offset of ``data`` whose byte is that offset's byte in none of
    ``versions``, or None."""
    for i, byte in enumerate(data):
        if all(v[i] != byte for v in versions):
            return i
    return None
