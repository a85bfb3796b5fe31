#!/usr/bin/env python3
"""fsoracle's workload driver: one self-contained, standard-library-only file.

It runs wherever a Python 3.9+ interpreter does, the host or a guest (push this one file
and run ``python3 driver.py ...``). It makes the system calls; the model that says what
they should have returned is ``model/fsstate`` on the host, which reads the op log this
driver writes (format: ``model/fsstate/oplog.py``; the two are independent readings of one
format and ``tests/stress/test_oplog.py`` holds them together).

Commands::

    driver.py run -d DIR -n OPS -p PROCS -s SEED [--fs btrfs|ext4|auto] [--log FILE|-]
                  [--max-size BYTES] [--max-len BYTES] [--no-subvol-procs] [--walk FILE]
                  [--op-table FILE] [--plugin FILE]...
        fsstress-style: PROCS processes, process N working in DIR/pN (on btrfs pN is a
        subvolume unless --no-subvol-procs), OPS ops each (like fsstress -n), each
        process's random stream seeded from (SEED, N). Every op is logged after it
        returns, one line per op, written with a single write(2) to an O_APPEND file (or
        stdout), so lines of several processes never tear.
    driver.py fsx FILE -N OPS -S SEED [--max-size BYTES] [--log FILE|-]
        fsx-style: one file, an in-memory copy of what it must hold; every read and the
        size after every op are checked against it, and the whole file at the end. Exit 1
        at the first mismatch, with the offset and the bytes.
    driver.py walk DIR [--out FILE] [--blocks]
        one JSON object per path below DIR (sorted): path mode nlink size ino dev blocks,
        sha256 for files, target for symlinks. --blocks (after a crash): files also get
        the hash of each 4096-byte block, and a read error is recorded, not fatal.
    driver.py replay LOG -d DIR [--log FILE|-] [--plugin FILE]...
        run a log's ops again (in (proc, seq) order, one process) and log the new results.
    driver.py serve --root DIR [--plugin FILE]...
        a long-lived session on stdin/stdout for the differential tests (see SERVE).

The ops are the op registry's (``model/fsstate/ops.py``), which this file cannot import:
``run`` reads them as a table (JSON: each op's arguments and their kinds, filesystems,
weight, effects), the one built in below or ``--op-table FILE``. Op NAME runs as
``Executor.op_NAME``; ``--plugin FILE`` adds handlers (functions ``op_NAME(executor,
args)`` in a Python file).

The generator is fsstress's idea: pick an op by weight, draw each argument from its kind —
names from the process's own view of its directory (updated from each op's result and the
op's effects), sizes from the seeded stream. So a process's op sequence is a function of
the seed, the table and the results its earlier ops got; on a kernel that returns what the
model predicts, of the seed and the table alone.

The process umask is 0, so the ``mode`` logged is the mode created.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import posixpath
import random
import runpy
import stat
import struct
import sys
from urllib.parse import quote, unquote

MAGIC = "# fsoracle-oplog 1"
SAFE = "/._-|,:+"

FALLOC = {"alloc": 0x00, "keep_size": 0x01, "punch_hole": 0x02, "zero_range": 0x10}

# include/uapi/linux/btrfs.h: _IOW(0x94, nr, 4096-byte struct)
_IOC_WRITE = 1


def _iow(nr: int, size: int) -> int:
    return (_IOC_WRITE << 30) | (size << 16) | (0x94 << 8) | nr


BTRFS_IOC_SUBVOL_CREATE = _iow(14, 4096)  # struct btrfs_ioctl_vol_args
BTRFS_IOC_SNAP_DESTROY = _iow(15, 4096)  # struct btrfs_ioctl_vol_args
BTRFS_IOC_SNAP_CREATE_V2 = _iow(23, 4096)  # struct btrfs_ioctl_vol_args_v2
VOL_ARGS = struct.Struct("<q4088s")  # fd, name[BTRFS_PATH_NAME_MAX + 1]
VOL_ARGS_V2 = struct.Struct("<qQQ32s4040s")  # fd, transid, flags, union, name[4040]


# ---- the log format ------------------------------------------------------------------


def write_data(seed: int, n: int) -> bytes:
    """SHAKE-128 over b"fsoracle-write:" + seed (u64 LE), first n bytes."""
    if n <= 0:
        return b""
    h = hashlib.shake_128(b"fsoracle-write:" + (seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
    return h.digest(n)


def format_line(proc, seq, name, args, result=None, extra=None):
    parts = [f"p{proc}", str(seq), name]
    parts += [f"{k}={quote(str(v), safe=SAFE)}" for k, v in args.items()]
    if result is not None:
        parts += ["->", result]
        parts += [f"{k}={quote(str(v), safe=SAFE)}" for k, v in (extra or {}).items()]
    return " ".join(parts)


def parse_line(line):
    """-> (proc, seq, name, args, result, extra); ValueError for a bad line."""
    toks = line.split()
    if len(toks) < 3 or not toks[0].startswith("p") or not toks[2].isidentifier():
        raise ValueError(f"not an op line: {line!r}")
    args, extra, result = {}, {}, None
    cur = args
    i = 3
    while i < len(toks):
        if toks[i] == "->":
            result = toks[i + 1]
            cur = extra
            i += 2
            continue
        k, _, v = toks[i].partition("=")
        cur[k] = unquote(v)
        i += 1
    return int(toks[0][1:]), int(toks[1]), toks[2], args, result, extra


def read_log(path):
    header, ops = {}, []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s:
                continue
            if s.startswith("#"):
                if s != MAGIC:
                    for tok in s[1:].split():
                        k, eq, v = tok.partition("=")
                        if eq:
                            header[k] = unquote(v)
                continue
            ops.append(parse_line(s))
    ops.sort(key=lambda o: (o[0], o[1]))
    return header, ops


class Log:
    """Appends whole lines with one write(2) each (O_APPEND file, or stdout)."""

    def __init__(self, path):
        if path in (None, "-"):
            self.fd = sys.stdout.fileno()
            self.own = False
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.own = True

    def line(self, text):
        data = (text + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def header(self, fields):
        self.line(MAGIC)
        self.line("# " + " ".join(f"{k}={quote(str(v), safe=SAFE)}" for k, v in fields))

    def close(self):
        if self.own:
            os.close(self.fd)


# ---- executing one op ------------------------------------------------------------------

_fallocate_fn = None


def _fallocate(fd, mode, off, length):
    """fallocate(2) through the C library (os has only posix_fallocate, without modes)."""
    global _fallocate_fn
    if _fallocate_fn is None:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "fallocate64", None) or libc.fallocate
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fn.restype = ctypes.c_int
        _fallocate_fn = fn
    if _fallocate_fn(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def falloc_mode(names):
    v = 0
    for n in names.split("|"):
        v |= FALLOC[n]
    return v


# errno names as the kernel spells them where two names share a number (95 is EOPNOTSUPP in
# the kernel, ENOTSUP first in Python's table)
ERRNO_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP", errno.EAGAIN: "EAGAIN", errno.EDEADLK: "EDEADLK"}


def _errname(e):
    return ERRNO_NAMES.get(e.errno) or errno.errorcode.get(e.errno, f"E{e.errno}")


class UnknownOp(ValueError):
    pass


class Executor:
    """Runs ops below ``base`` (an absolute directory); paths in ops are relative to it."""

    def __init__(self, base):
        self.base = base

    def p(self, rel):
        return os.path.join(self.base, rel) if rel not in ("", ".") else self.base

    def parent_fd(self, rel):
        head, _, name = rel.rpartition("/")
        fd = os.open(self.p(head), os.O_RDONLY | os.O_DIRECTORY)
        return fd, name

    def run(self, name, args):
        """-> (result, extra): "0", a count, or an errno name. UnknownOp when this driver
        has no handler ``op_<name>`` (built in, or from a plugin file)."""
        handler = getattr(self, "op_" + name, None)
        if handler is None:
            raise UnknownOp(f"no guest handler for op {name!r} (give one with --plugin FILE)")
        try:
            return handler(args)
        except OSError as e:
            return _errname(e), {}

    def op_creat(self, a):
        fd = os.open(self.p(a["path"]), os.O_CREAT | os.O_EXCL | os.O_WRONLY, int(a["mode"], 8))
        os.close(fd)
        return "0", {}

    def op_mkdir(self, a):
        os.mkdir(self.p(a["path"]), int(a["mode"], 8))
        return "0", {}

    def op_rmdir(self, a):
        os.rmdir(self.p(a["path"]))
        return "0", {}

    def _pwrite(self, path, off, bufs):
        fd = os.open(self.p(path), os.O_WRONLY)
        try:
            want = sum(len(b) for b in bufs)
            total = os.pwritev(fd, bufs, off) if len(bufs) > 1 else os.pwrite(fd, bufs[0], off)
            if 0 < total < want:  # finish a short write plainly
                rest = memoryview(b"".join(bufs))
                while total < want:
                    total += os.pwrite(fd, rest[total:], off + total)
            return str(total), {}
        finally:
            os.close(fd)

    def op_write(self, a):
        return self._pwrite(a["path"], int(a["off"]), [write_data(int(a["seed"]), int(a["len"]))])

    def op_writev(self, a):
        iov = [int(x) for x in a["iov"].split(",") if x]
        data = write_data(int(a["seed"]), sum(iov))
        bufs, at = [], 0
        for n in iov:
            bufs.append(data[at : at + n])
            at += n
        return self._pwrite(a["path"], int(a["off"]), bufs)

    def op_read(self, a):
        fd = os.open(self.p(a["path"]), os.O_RDONLY)
        try:
            off, n = int(a["off"]), int(a["len"])
            chunks, got = [], 0
            while got < n:
                b = os.pread(fd, n - got, off + got)
                if not b:
                    break
                chunks.append(b)
                got += len(b)
            if n == 0:
                os.pread(fd, 0, off)
            data = b"".join(chunks)
            return str(len(data)), {"sha256": hashlib.sha256(data).hexdigest()}
        finally:
            os.close(fd)

    def op_truncate(self, a):
        os.truncate(self.p(a["path"]), int(a["size"]))
        return "0", {}

    def op_fallocate(self, a):
        fd = os.open(self.p(a["path"]), os.O_WRONLY)
        try:
            _fallocate(fd, falloc_mode(a["mode"]), int(a["off"]), int(a["len"]))
        finally:
            os.close(fd)
        return "0", {}

    def op_unlink(self, a):
        os.unlink(self.p(a["path"]))
        return "0", {}

    def op_rename(self, a):
        os.rename(self.p(a["old"]), self.p(a["new"]))
        return "0", {}

    def op_link(self, a):
        os.link(self.p(a["old"]), self.p(a["new"]), follow_symlinks=False)
        return "0", {}

    def op_symlink(self, a):
        os.symlink(a["target"], self.p(a["path"]))
        return "0", {}

    def op_fsync(self, a):
        fd = os.open(self.p(a["path"]), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return "0", {}

    def op_fdatasync(self, a):
        fd = os.open(self.p(a["path"]), os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return "0", {}

    def op_sync(self, a):
        os.sync()
        return "0", {}

    def op_subvol_create(self, a):
        fd, name = self.parent_fd(a["path"])
        try:
            buf = bytearray(VOL_ARGS.pack(0, name.encode()))
            fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, buf, True)
        finally:
            os.close(fd)
        return "0", {}

    def op_snapshot(self, a):
        sfd = os.open(self.p(a["src"]), os.O_RDONLY)
        try:
            fd, name = self.parent_fd(a["path"])
            try:
                buf = bytearray(VOL_ARGS_V2.pack(sfd, 0, 0, b"", name.encode()))
                fcntl.ioctl(fd, BTRFS_IOC_SNAP_CREATE_V2, buf, True)
            finally:
                os.close(fd)
        finally:
            os.close(sfd)
        return "0", {}

    def op_subvol_delete(self, a):
        fd, name = self.parent_fd(a["path"])
        try:
            buf = bytearray(VOL_ARGS.pack(0, name.encode()))
            fcntl.ioctl(fd, BTRFS_IOC_SNAP_DESTROY, buf, True)
        finally:
            os.close(fd)
        return "0", {}


# ---- the op table ----------------------------------------------------------------------
# The op registry (model/fsstate/ops.py) as data: each op's arguments with their kinds,
# the filesystems it applies to, its weight and its effects. The generator below draws
# every op's arguments from their kinds; ``--op-table FILE`` gives another table (the host
# writes it from the registry: ``python -m harness.workload.opstable --out FILE``). The
# block below is that table, written by ``make ops-table``; do not edit it by hand.

# BEGIN OP TABLE
OPS_JSON = """
{
 "version": 1,
 "ops": [
  {
   "name": "creat",
   "weight": 8,
   "fs": ["btrfs", "ext4"],
   "effects": {"makes": "path", "made": "file"},
   "args": [
    {"key": "path", "kind": "new"},
    {"key": "mode", "kind": "mode", "choices": ["644", "600", "755", "640"]}
   ]
  },
  {
   "name": "mkdir",
   "weight": 4,
   "fs": ["btrfs", "ext4"],
   "effects": {"makes": "path", "made": "dir"},
   "args": [
    {"key": "path", "kind": "new"},
    {"key": "mode", "kind": "mode", "choices": ["755", "700", "775"]}
   ]
  },
  {
   "name": "rmdir",
   "weight": 2,
   "fs": ["btrfs", "ext4"],
   "effects": {"removes": ["path"]},
   "args": [{"key": "path", "kind": "dir"}]
  },
  {
   "name": "write",
   "weight": 12,
   "fs": ["btrfs", "ext4"],
   "effects": {"data": "path"},
   "args": [
    {"key": "path", "kind": "file"},
    {"key": "off", "kind": "offset", "of": "path"},
    {"key": "len", "kind": "length"},
    {"key": "seed", "kind": "seed"}
   ]
  },
  {
   "name": "writev",
   "weight": 4,
   "fs": ["btrfs", "ext4"],
   "effects": {"data": "path"},
   "args": [
    {"key": "path", "kind": "file"},
    {"key": "off", "kind": "offset", "of": "path"},
    {"key": "seed", "kind": "seed"},
    {"key": "iov", "kind": "iov"}
   ]
  },
  {
   "name": "read",
   "weight": 10,
   "fs": ["btrfs", "ext4"],
   "effects": {},
   "args": [
    {"key": "path", "kind": "file"},
    {"key": "off", "kind": "offset", "of": "path"},
    {"key": "len", "kind": "length"}
   ]
  },
  {
   "name": "truncate",
   "weight": 4,
   "fs": ["btrfs", "ext4"],
   "effects": {"data": "path"},
   "args": [{"key": "path", "kind": "file"}, {"key": "size", "kind": "size", "of": "path"}]
  },
  {
   "name": "fallocate",
   "weight": 6,
   "fs": ["btrfs", "ext4"],
   "effects": {"data": "path"},
   "args": [
    {"key": "path", "kind": "file"},
    {
     "key": "mode",
     "kind": "falloc",
     "choices": [
      "alloc",
      "keep_size",
      "punch_hole|keep_size",
      "zero_range",
      "zero_range|keep_size",
      "punch_hole"
     ]
    },
    {"key": "off", "kind": "offset", "of": "path"},
    {"key": "len", "kind": "length"}
   ]
  },
  {
   "name": "unlink",
   "weight": 4,
   "fs": ["btrfs", "ext4"],
   "effects": {"removes": ["path"]},
   "args": [{"key": "path", "kind": "nondir"}]
  },
  {
   "name": "rename",
   "weight": 6,
   "fs": ["btrfs", "ext4"],
   "effects": {"makes": "new", "made": "move", "source": "old", "removes": ["old", "new"]},
   "args": [{"key": "old", "kind": "any"}, {"key": "new", "kind": "dest", "of": "old"}]
  },
  {
   "name": "link",
   "weight": 3,
   "fs": ["btrfs", "ext4"],
   "effects": {"makes": "new", "made": "link", "source": "old"},
   "args": [{"key": "old", "kind": "nondir"}, {"key": "new", "kind": "new", "of": "old"}]
  },
  {
   "name": "symlink",
   "weight": 3,
   "fs": ["btrfs", "ext4"],
   "effects": {"makes": "path", "made": "symlink"},
   "args": [{"key": "target", "kind": "target", "of": "path"}, {"key": "path", "kind": "new"}]
  },
  {
   "name": "fsync",
   "weight": 3,
   "fs": ["btrfs", "ext4"],
   "effects": {"sync": "fsync"},
   "args": [{"key": "path", "kind": "file"}]
  },
  {
   "name": "fdatasync",
   "weight": 2,
   "fs": ["btrfs", "ext4"],
   "effects": {"sync": "fdatasync"},
   "args": [{"key": "path", "kind": "file"}]
  },
  {
   "name": "sync",
   "weight": 1,
   "fs": ["btrfs", "ext4"],
   "effects": {"sync": "sync"},
   "args": []
  },
  {
   "name": "subvol_create",
   "weight": 1,
   "fs": ["btrfs"],
   "effects": {"makes": "path", "made": "subvol"},
   "args": [{"key": "path", "kind": "new"}]
  },
  {
   "name": "snapshot",
   "weight": 1,
   "fs": ["btrfs"],
   "effects": {"makes": "path", "made": "snapshot", "source": "src", "sync": "snapshot"},
   "args": [{"key": "src", "kind": "subvol"}, {"key": "path", "kind": "new"}]
  },
  {
   "name": "subvol_delete",
   "weight": 1,
   "fs": ["btrfs"],
   "effects": {"removes": ["path"]},
   "args": [{"key": "path", "kind": "subvol"}]
  }
 ]
}
"""
# END OP TABLE

# the argument kinds this generator draws (model/fsstate/ops.py: KINDS)
KINDS = (
    "file",
    "dir",
    "nondir",
    "any",
    "subvol",
    "new",
    "dest",
    "target",
    "offset",
    "length",
    "size",
    "mode",
    "seed",
    "iov",
    "falloc",
)
# the view's letter for what an op makes, and the prefix of the names it makes
MADE_LETTER = {"file": "f", "dir": "d", "symlink": "l", "subvol": "s", "snapshot": "s"}
MADE_PREFIX = {"file": "f", "dir": "d", "symlink": "l", "subvol": "s", "snapshot": "c", "link": "h"}
FALLOC_MODES = (  # fsx's
    "alloc",
    "keep_size",
    "punch_hole|keep_size",
    "zero_range",
    "zero_range|keep_size",
)


class TableError(ValueError):
    pass


def load_table(path=None):
    """The op table: the JSON file at ``path``, else the one built in (above)."""
    if path:
        with open(path) as f:
            text = f.read()
    else:
        text = OPS_JSON
    try:
        table = json.loads(text)
    except ValueError as e:
        raise TableError(f"op table {path or '(built in)'}: not JSON: {e}") from None
    if not isinstance(table, dict) or not isinstance(table.get("ops"), list):
        raise TableError(f"op table {path or '(built in)'}: no list of ops")
    for op in table["ops"]:
        for a in op.get("args", []):
            if a.get("kind") not in KINDS:
                raise TableError(
                    f"op table: {op.get('name')}.{a.get('key')}: kind {a.get('kind')!r} is"
                    " not one this driver draws"
                )
    return table


def table_digest(table):
    """First 16 hex digits of SHA-256 of the table's canonical JSON (the log header's
    ``optable=``; model/fsstate/ops.py: table_digest)."""
    text = json.dumps(table, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_plugins(paths):
    """Guest handlers for ops this file does not have: each file is Python whose top-level
    functions ``op_NAME(executor, args) -> (result, extra)`` become ``Executor.op_NAME``."""
    for path in paths or ():
        ns = runpy.run_path(path)
        for name, fn in ns.items():
            if name.startswith("op_") and callable(fn):
                setattr(Executor, name, fn)


# ---- the generator ---------------------------------------------------------------------


def proc_seed(seed, proc):
    """The random stream of process ``proc``: a function of (seed, proc) only."""
    return (seed & 0xFFFFFFFF) * 1000003 + proc


class Generator:
    """One process's op stream. ``view`` maps each path it believes exists to a kind:
    f file, d directory, l symlink, s subvolume root, t stub (a snapshot's empty
    directory where the source had a nested subvolume; never used as a parent).

    Each op is drawn by weight from the table's ops for ``fs``, and each of its arguments
    from its kind (:meth:`draw`), those drawn relative to another (``of``) after it."""

    def __init__(
        self,
        proc,
        seed,
        fs,
        max_size=256 << 10,
        max_len=64 << 10,
        subvol_top=True,
        table=None,
    ):
        self.rng = random.Random(proc_seed(seed, proc))
        self.top = f"p{proc}"
        self.fs = fs
        self.max_size = max_size
        self.max_len = max_len
        self.subvols = fs == "btrfs"
        self.subvol_top = self.subvols and subvol_top
        self.view = {}
        self.sizes = {}
        self.n = 0
        table = table if table is not None else load_table()
        self.specs = {op["name"]: op for op in table["ops"]}
        ops = [op for op in table["ops"] if fs in op["fs"] and op["weight"] > 0]
        self.names = [op["name"] for op in ops]
        self.weights = [op["weight"] for op in ops]

    # -- choosing names --

    def fresh(self, prefix):
        self.n += 1
        parent = self.rng.choice(self.of_kind("ds"))
        return f"{parent}/{prefix}{self.n}"

    def of_kind(self, kinds):
        return [p for p, k in self.view.items() if k in kinds]

    def pick(self, kinds, miss=0.05):
        cands = [p for p in self.of_kind(kinds) if p != self.top]
        if not cands or self.rng.random() < miss:
            self.n += 1
            return f"{self.rng.choice(self.of_kind('ds'))}/x{self.n}"
        return self.rng.choice(cands)

    def size_of(self, path):
        return self.sizes.get(path, 0)

    def offset(self, size):
        r = self.rng.random()
        if r < 0.35:
            off = size
        elif r < 0.7:
            off = self.rng.randrange(0, max(size, 1))
        else:
            off = self.rng.randrange(0, self.max_size)
        if self.rng.random() < 0.4:
            off &= ~4095
        return min(off, self.max_size)

    def length(self):
        r = self.rng.random()
        if r < 0.1:
            n = self.rng.randint(0, 16)
        elif r < 0.55:
            n = self.rng.randint(1, 4096)
        else:
            n = self.rng.randint(1, self.max_len)
        if self.rng.random() < 0.3:
            n = max(4096, n & ~4095)
        return n

    def new_size(self, size):
        r = self.rng.random()
        if r < 0.15:
            return 0
        if r < 0.6:
            return self.rng.randrange(0, size + 1)
        return self.rng.randrange(0, self.max_size + 1)

    def subvol_of(self, path):
        """The subvolume root holding ``path``'s inode ("" for the top directory's own)."""
        while path:
            if self.view.get(path) == "s":
                return path
            path = posixpath.dirname(path)
        return ""

    def near(self, path, prefix, same=0.85):
        """A fresh name, usually in the subvolume of ``path``'s parent (renames and links
        across subvolumes fail with EXDEV: some should, most should not)."""
        sv = self.subvol_of(posixpath.dirname(path))
        dirs = [d for d in self.of_kind("ds") if self.subvol_of(d) == sv]
        if dirs and self.rng.random() < same:
            self.n += 1
            return f"{self.rng.choice(dirs)}/{prefix}{self.n}"
        return self.fresh(prefix)

    def dest(self, src):
        """A rename's target: a fresh name near ``src``, or an existing one, mostly in the
        same subvolume."""
        if self.rng.random() < 0.6:
            return self.near(src, self.rng.choice("fdl"))
        sv = self.subvol_of(posixpath.dirname(src))
        same = [p for p in self.of_kind("fldst") if self.subvol_of(posixpath.dirname(p)) == sv]
        return self.rng.choice(same) if same and self.rng.random() < 0.85 else self.pick("fldst")

    def symlink_target(self, path):
        """Targets lead downward from the link's directory (or dangle): a ``..`` target
        could climb out of this process's directory once the link is renamed or
        snapshotted to another depth."""
        d = posixpath.dirname(path)
        below = [p for p in self.view if p.startswith(d + "/") and p != path]
        if below and self.rng.random() < 0.8:
            return posixpath.relpath(self.rng.choice(below), d)
        self.n += 1
        return f"missing{self.n}"

    # -- ops --

    def first(self):
        if self.subvol_top:
            return "subvol_create", {"path": self.top}
        return "mkdir", {"path": self.top, "mode": "755"}

    def next(self):
        name = self.rng.choices(self.names, self.weights)[0]
        spec = self.specs[name]
        got = {}
        # arguments drawn relative to another come after it; otherwise in line order
        for a in sorted(spec["args"], key=lambda a: bool(a.get("of"))):
            got[a["key"]] = str(self.draw(spec, a, got))
        return name, {a["key"]: got[a["key"]] for a in spec["args"]}

    def draw(self, spec, a, got):
        """One argument of kind ``a["kind"]`` (model/fsstate/ops.py: KINDS)."""
        kind, rng = a["kind"], self.rng
        of = got.get(a.get("of", ""), "")
        eff = spec.get("effects", {})
        if kind == "file":
            return self.pick("f" if rng.random() < 0.95 else "fdl")
        if kind == "dir":
            return self.pick("dst")
        if kind == "nondir":
            return self.pick("fl" if rng.random() < 0.95 else "fldst")
        if kind == "any":
            return self.pick("fldst")
        if kind == "subvol":
            if a["key"] in eff.get("removes", ()):
                return self.pick("s" if rng.random() < 0.9 else "dt")
            if self.subvol_top and rng.random() < 0.4:
                return self.top
            return self.pick("s")
        if kind == "new":
            made = eff.get("made", "") if eff.get("makes") == a["key"] else ""
            prefix = MADE_PREFIX.get(made, "n")
            return self.near(of, prefix) if of else self.fresh(prefix)
        if kind == "dest":
            return self.dest(of)
        if kind == "target":
            return self.symlink_target(of)
        if kind == "offset":
            return self.offset(self.size_of(of))
        if kind == "length":
            return self.length()
        if kind == "size":
            return self.new_size(self.size_of(of))
        if kind in ("mode", "falloc"):
            return rng.choice(a["choices"])
        if kind == "seed":
            return rng.getrandbits(32)
        if kind == "iov":
            return ",".join(str(self.length() // 2) for _ in range(rng.randint(1, 4)))
        raise TableError(f"{spec['name']}.{a['key']}: no way to draw kind {kind!r}")

    # -- the view follows results --

    def under(self, path):
        pre = path + "/"
        return [p for p in self.view if p == path or p.startswith(pre)]

    def update(self, name, a, result):
        """Follow op ``name``'s effects (the table's) when it succeeded."""
        if result.startswith("E"):
            return
        spec = self.specs.get(name, {})
        eff = spec.get("effects", {})
        v = self.view
        made = eff.get("made", "")
        if made == "move":
            old, new = a[eff["source"]], a[eff["makes"]]
            if old != new and old in v:
                for p in self.under(new):
                    del v[p]
                for p in self.under(old):
                    q = new + p[len(old) :]
                    v[q] = v.pop(p)
                    if p in self.sizes:
                        self.sizes[q] = self.sizes.pop(p)
        else:
            for k in eff.get("removes", ()):
                for p in self.under(a[k]):
                    del v[p]
            if made == "snapshot":
                self.snapshot_view(a[eff["source"]], a[eff["makes"]])
            elif made == "link":
                old, new = a[eff["source"]], a[eff["makes"]]
                v[new] = v.get(old, "f")
                self.sizes[new] = self.sizes.get(old, 0)
            elif made:
                v[a[eff["makes"]]] = MADE_LETTER[made]
                if made == "file":
                    self.sizes[a[eff["makes"]]] = 0
        if eff.get("data"):
            self.resize(spec, a)

    def snapshot_view(self, src, dst):
        v = self.view
        v[dst] = "s"
        stubs = []
        for p in sorted(self.under(src)):
            if p == src or any(p.startswith(s + "/") for s in stubs):
                continue
            q = dst + p[len(src) :]
            if v[p] in "st":
                stubs.append(p)
                v[q] = "t"
            else:
                v[q] = v[p]
                if p in self.sizes:
                    self.sizes[q] = self.sizes[p]

    def resize(self, spec, a):
        """The size a data op leaves: its SIZE argument, else the end of the range
        [OFFSET, OFFSET + LENGTH or sum(IOV)) unless a FALLOC argument keeps the size."""
        path = a[spec["effects"]["data"]]
        by_kind = {}
        for arg in spec["args"]:
            by_kind.setdefault(arg["kind"], a[arg["key"]])
        if "size" in by_kind:
            self.sizes[path] = int(by_kind["size"])
        elif "offset" in by_kind and "keep_size" not in by_kind.get("falloc", ""):
            n = int(by_kind.get("length", 0))
            n += sum(int(x) for x in by_kind.get("iov", "").split(",") if x)
            self.sizes[path] = max(self.size_of(path), int(by_kind["offset"]) + n)


def run_process(base, proc, seed, fs, nops, log, max_size, max_len, subvol_top, table):
    gen = Generator(proc, seed, fs, max_size, max_len, subvol_top, table)
    ex = Executor(base)
    name, args = gen.first()
    result, extra = ex.run(name, args)
    log.line(format_line(proc, 0, name, args, result, extra))
    if result != "0":
        sys.stderr.write(f"p{proc}: cannot create {gen.top}: {result}\n")
        return 1
    gen.view[gen.top] = "s" if name == "subvol_create" else "d"
    for seq in range(1, nops + 1):
        name, args = gen.next()
        result, extra = ex.run(name, args)
        log.line(format_line(proc, seq, name, args, result, extra))
        gen.update(name, args, result)
    return 0


def detect_fs(path):
    """The filesystem type of the mount holding ``path`` (longest /proc/mounts prefix)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return kind


def cmd_run(a):
    os.umask(0)
    try:
        table = load_table(a.op_table)
        load_plugins(a.plugin)
    except (OSError, TableError) as e:
        sys.stderr.write(f"driver.py run: {e}\n")
        return 2
    base = os.path.abspath(a.dir)
    os.makedirs(base, exist_ok=True)
    fs = detect_fs(base) if a.fs == "auto" else a.fs
    missing = [
        op["name"]
        for op in table["ops"]
        if fs in op["fs"] and op["weight"] > 0 and not hasattr(Executor, "op_" + op["name"])
    ]
    if missing:
        sys.stderr.write(
            f"driver.py run: no guest handler for {', '.join(missing)} (give one with"
            " --plugin FILE)\n"
        )
        return 2
    log = Log(a.log)
    log.header(
        [
            ("mode", "stress"),
            ("fs", fs),
            ("seed", a.seed),
            ("procs", a.procs),
            ("ops", a.ops),
            ("max_size", a.max_size),
            ("max_len", a.max_len),
            ("optable", table_digest(table)),
        ]
    )
    pids = []
    for proc in range(a.procs):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_process(
                    base,
                    proc,
                    a.seed,
                    fs,
                    a.ops,
                    log,
                    a.max_size,
                    a.max_len,
                    not a.no_subvol_procs,
                    table,
                )
            except BaseException as e:  # report, never hang the parent
                sys.stderr.write(f"p{proc}: {e!r}\n")
            finally:
                os._exit(code)
        pids.append(pid)
    status = 0
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(st) != 0:
            status = 1
    log.close()
    if a.walk:
        with open(a.walk, "w") as f:
            for rec in walk(base):
                f.write(json.dumps(rec, sort_keys=True) + "\n")
    return status


# ---- walking a tree ------------------------------------------------------------------


def hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


BLOCK = 4096


def hash_blocks(path):
    """(sha256 of the whole file, [hash of each 4096-byte block]): a block's hash is the
    first 16 hex digits of SHA-256 of the block zero-padded to 4096 bytes (the crash
    check's unit, model/fsstate/crash.py)."""
    whole = hashlib.sha256()
    blocks = []
    with open(path, "rb") as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                break
            whole.update(b)
            blocks.append(hashlib.sha256(b.ljust(BLOCK, b"\0")).hexdigest()[:16])
    return whole.hexdigest(), blocks


def walk(root, blocks=False):
    """Records for every path below ``root``, sorted, without following symlinks. With
    ``blocks`` (after a crash), files also get ``block_sha`` (see :func:`hash_blocks`) and a
    file that cannot be read gets ``error`` (the errno name) instead of hashes."""
    out = []

    def rec(d, prefix):
        for name in sorted(os.listdir(d)):
            full = os.path.join(d, name)
            st = os.lstat(full)
            path = prefix + name
            r = {
                "path": path,
                "mode": st.st_mode,
                "nlink": st.st_nlink,
                "size": st.st_size,
                "ino": st.st_ino,
                "dev": st.st_dev,
                "blocks": st.st_blocks,
            }
            if stat.S_ISREG(st.st_mode) and blocks:
                try:
                    r["sha256"], r["block_sha"] = hash_blocks(full)
                except OSError as e:
                    r["error"] = _errname(e)
            elif stat.S_ISREG(st.st_mode):
                r["sha256"] = hash_file(full)
            elif stat.S_ISLNK(st.st_mode):
                r["target"] = os.readlink(full)
            out.append(r)
            if stat.S_ISDIR(st.st_mode):
                rec(full, path + "/")

    rec(root, "")
    return out


def cmd_walk(a):
    recs = walk(os.path.abspath(a.dir), blocks=a.blocks)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


# ---- fsx -----------------------------------------------------------------------------


class FsxMismatch(Exception):
    pass


def cmd_fsx(a):
    os.umask(0)
    path = os.path.abspath(a.file)
    base, fname = os.path.split(path)
    rng = random.Random(proc_seed(a.seed, 0))
    log = Log(a.log)
    log.header([("mode", "fsx"), ("seed", a.seed), ("ops", a.ops), ("max_size", a.max_size)])
    if os.path.lexists(path):
        os.unlink(path)
    ex = Executor(base)
    good = bytearray()
    seq = 0

    def do(name, args):
        nonlocal seq
        result, extra = ex.run(name, args)
        log.line(format_line(0, seq, name, args, result, extra))
        seq += 1
        return result, extra

    do("creat", {"path": fname, "mode": "644"})
    try:
        for _ in range(a.ops):
            size = len(good)
            r = rng.random()
            off = rng.randrange(0, a.max_size)
            n = rng.randint(1, 65536)
            if r < 0.3:
                seed = rng.getrandbits(32)
                res, _ = do("write", {"path": fname, "off": off, "len": n, "seed": seed})
                if res.startswith("E"):
                    raise FsxMismatch(f"write failed: {res}")
                if len(good) < off + n:
                    good.extend(bytes(off + n - len(good)))
                good[off : off + n] = write_data(seed, n)
            elif r < 0.6:
                off = rng.randrange(0, size + 1) if size else 0
                res, extra = do("read", {"path": fname, "off": off, "len": n})
                want = bytes(good[off : off + n])
                if res != str(len(want)) or extra.get("sha256") != hashlib.sha256(want).hexdigest():
                    fd = os.open(path, os.O_RDONLY)
                    got = os.pread(fd, n, off)
                    os.close(fd)
                    raise FsxMismatch(_first_diff(off, want, got))
            elif r < 0.75:
                new = rng.randrange(0, a.max_size + 1)
                do("truncate", {"path": fname, "size": new})
                if new < len(good):
                    del good[new:]
                else:
                    good.extend(bytes(new - len(good)))
            elif r < 0.92:
                mode = rng.choice(FALLOC_MODES)
                res, _ = do("fallocate", {"path": fname, "mode": mode, "off": off, "len": n})
                if res.startswith("E"):
                    raise FsxMismatch(f"fallocate {mode} failed: {res}")
                end = off + n
                if "punch_hole" in mode or "zero_range" in mode:
                    lo, hi = min(off, len(good)), min(end, len(good))
                    good[lo:hi] = bytes(hi - lo)
                if "keep_size" not in mode and end > len(good):
                    good.extend(bytes(end - len(good)))
            else:
                do(rng.choice(("fsync", "fdatasync")), {"path": fname})
            st = os.stat(path)
            if st.st_size != len(good):
                raise FsxMismatch(f"size {st.st_size}, expected {len(good)}")
        with open(path, "rb") as f:
            whole = f.read()
        if whole != bytes(good):
            raise FsxMismatch("final check: " + _first_diff(0, bytes(good), whole))
    except FsxMismatch as e:
        sys.stderr.write(f"fsx: after op {seq - 1}: {e}\n")
        log.close()
        return 1
    log.close()
    return 0


def _first_diff(off, want, got):
    for i in range(min(len(want), len(got))):
        if want[i] != got[i]:
            return f"first bad byte at offset {off + i}: expected {want[i]:02x}, got {got[i]:02x}"
    return f"length {len(got)}, expected {len(want)} (from offset {off})"


# ---- replay and serve ----------------------------------------------------------------


def cmd_replay(a):
    os.umask(0)
    try:
        load_plugins(a.plugin)
    except OSError as e:
        sys.stderr.write(f"driver.py replay: plugin: {e}\n")
        return 2
    header, ops = read_log(a.log_in)
    unknown = sorted({name for _p, _s, name, *_ in ops if not hasattr(Executor, "op_" + name)})
    if unknown:
        sys.stderr.write(
            f"driver.py replay: no guest handler for {', '.join(unknown)} (give one with"
            " --plugin FILE)\n"
        )
        return 2
    base = os.path.abspath(a.dir)
    os.makedirs(base, exist_ok=True)
    ex = Executor(base)
    log = Log(a.log)
    fields = [(k, v) for k, v in header.items()] + [("replayed", "1")]
    log.header(fields)
    for proc, seq, name, args, _result, _extra in ops:
        result, extra = ex.run(name, args)
        log.line(format_line(proc, seq, name, args, result, extra))
    log.close()
    return 0


def rmtree(path):
    """Remove a tree, deleting btrfs subvolumes with the ioctl (rmdir would refuse a
    non-empty one)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    if st.st_ino == 256 and os.path.dirname(path) != path:
        parent, name = os.path.split(path)
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            buf = bytearray(VOL_ARGS.pack(0, name.encode()))
            fcntl.ioctl(fd, BTRFS_IOC_SNAP_DESTROY, buf, True)
            return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
        finally:
            os.close(fd)
    for name in os.listdir(path):
        rmtree(os.path.join(path, name))
    if st.st_ino == 256:
        rmtree(path)  # now without nested subvolumes
    else:
        os.rmdir(path)


SERVE = """serve protocol (one command per line on stdin; replies on stdout):
  mkroot NAME subvol|dir   make ROOT/NAME (a fresh subvolume or directory), work there
                           -> "ok" or "err ENAME"
  op LINE                  run one op line (no result) -> the log line with its result
                           ("err EINVAL ..." for a bad line or an op without a handler);
                           several may be sent before their replies are read
  walk                     -> one JSON record per line, then "end"
  rmroot NAME              remove ROOT/NAME (subvolumes by ioctl) -> "ok" / "err ENAME"
  quit                     exit 0
"""


def cmd_serve(a):
    os.umask(0)
    load_plugins(a.plugin)
    root = os.path.abspath(a.root)
    ex = Executor(root)
    out = sys.stdout

    def reply(s):
        out.write(s + "\n")
        out.flush()

    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        try:
            if cmd == "op":
                proc, seq, name, args, _r, _e = parse_line(rest)
                result, extra = ex.run(name, args)
                reply(format_line(proc, seq, name, args, result, extra))
            elif cmd == "mkroot":
                name, _, kind = rest.partition(" ")
                path = os.path.join(root, name)
                if kind == "subvol":
                    Executor(root).op_subvol_create({"path": name})
                else:
                    os.mkdir(path, 0o755)
                ex = Executor(path)
                reply("ok")
            elif cmd == "walk":
                for r in walk(ex.base):
                    out.write(json.dumps(r, sort_keys=True) + "\n")
                reply("end")
            elif cmd == "rmroot":
                rmtree(os.path.join(root, rest))
                ex = Executor(root)
                reply("ok")
            elif cmd == "quit":
                return 0
            else:
                reply(f"err EINVAL unknown command {cmd!r}")
        except OSError as e:
            reply(f"err {_errname(e)}")
        except ValueError as e:  # a bad op line, an op without a handler
            reply(f"err EINVAL {e}")
    return 0


PLUGIN_HELP = "Python file whose functions op_NAME(executor, args) handle more ops"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="driver.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="fsstress-style seeded workload")
    r.add_argument("-d", "--dir", required=True)
    r.add_argument("-n", "--ops", type=int, default=1000, help="ops per process")
    r.add_argument("-p", "--procs", type=int, default=1)
    r.add_argument("-s", "--seed", type=int, default=1)
    r.add_argument("--fs", choices=("btrfs", "ext4", "auto"), default="auto")
    r.add_argument("--log", default="-")
    r.add_argument("--walk", help="write the final tree's walk records here")
    r.add_argument("--max-size", type=int, default=256 << 10)
    r.add_argument("--max-len", type=int, default=64 << 10)
    r.add_argument("--no-subvol-procs", action="store_true")
    r.add_argument(
        "--op-table",
        metavar="FILE",
        help="the op table (JSON, from model/fsstate/ops.py); default: the one built in",
    )
    r.add_argument("--plugin", action="append", metavar="FILE", help=PLUGIN_HELP)
    f = sub.add_parser("fsx", help="fsx-style single-file checks")
    f.add_argument("file")
    f.add_argument("-N", "--ops", type=int, default=1000)
    f.add_argument("-S", "--seed", type=int, default=1)
    f.add_argument("--max-size", type=int, default=256 << 10)
    f.add_argument("--log", default="-")
    w = sub.add_parser("walk", help="JSON records of a tree")
    w.add_argument("dir")
    w.add_argument("--out")
    w.add_argument("--blocks", action="store_true", help="per-block hashes, read errors kept")
    p = sub.add_parser("replay", help="run a log's ops again")
    p.add_argument("log_in", metavar="LOG")
    p.add_argument("-d", "--dir", required=True)
    p.add_argument("--log", default="-")
    p.add_argument("--plugin", action="append", metavar="FILE", help=PLUGIN_HELP)
    s = sub.add_parser("serve", help="line protocol session", description=SERVE)
    s.add_argument("--root", required=True)
    s.add_argument("--plugin", action="append", metavar="FILE", help=PLUGIN_HELP)
    a = ap.parse_args(argv)
    return {"run": cmd_run, "fsx": cmd_fsx, "walk": cmd_walk, "replay": cmd_replay}.get(
        a.cmd, cmd_serve
    )(a)


if __name__ == "__main__":
    sys.exit(main())
