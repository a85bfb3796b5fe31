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
    driver.py replay LOG -d DIR [--log FILE|-]
        run a log's ops again (in (proc, seq) order, one process) and log the new results.
    driver.py serve --root DIR
        a long-lived session on stdin/stdout for the differential tests (see SERVE).

The generator is fsstress's idea: pick an op by weight, pick its names from the process's
own view of its directory (updated from each op's result), pick sizes from the seeded
stream. So a process's op sequence is a function of the seed and of the results its
earlier ops got; on a kernel that returns what the model predicts, of the seed alone.

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
import stat
import struct
import sys
from urllib.parse import quote, unquote

MAGIC = "# fsoracle-oplog 1"
SAFE = "/._-|,:+"

OP_ARGS = {
    "creat": ("path", "mode"),
    "mkdir": ("path", "mode"),
    "rmdir": ("path",),
    "write": ("path", "off", "len", "seed"),
    "writev": ("path", "off", "seed", "iov"),
    "read": ("path", "off", "len"),
    "truncate": ("path", "size"),
    "fallocate": ("path", "mode", "off", "len"),
    "unlink": ("path",),
    "rename": ("old", "new"),
    "link": ("old", "new"),
    "symlink": ("target", "path"),
    "fsync": ("path",),
    "fdatasync": ("path",),
    "sync": (),
    "subvol_create": ("path",),
    "snapshot": ("src", "path"),
    "subvol_delete": ("path",),
}

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
    if len(toks) < 3 or not toks[0].startswith("p") or toks[2] not in OP_ARGS:
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
        """-> (result, extra): "0", a count, or an errno name."""
        try:
            return getattr(self, "op_" + name)(args)
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


# ---- the generator ---------------------------------------------------------------------

WEIGHTS = [
    ("creat", 8),
    ("mkdir", 4),
    ("rmdir", 2),
    ("write", 12),
    ("writev", 4),
    ("read", 10),
    ("truncate", 4),
    ("fallocate", 6),
    ("unlink", 4),
    ("rename", 6),
    ("link", 3),
    ("symlink", 3),
    ("fsync", 3),
    ("fdatasync", 2),
    ("sync", 1),
    ("subvol_create", 1),
    ("snapshot", 1),
    ("subvol_delete", 1),
]
SUBVOL_OPS = ("subvol_create", "snapshot", "subvol_delete")
FILE_MODES = ("644", "600", "755", "640")
DIR_MODES = ("755", "700", "775")
FALLOC_MODES = (
    "alloc",
    "keep_size",
    "punch_hole|keep_size",
    "zero_range",
    "zero_range|keep_size",
)


def proc_seed(seed, proc):
    """The random stream of process ``proc``: a function of (seed, proc) only."""
    return (seed & 0xFFFFFFFF) * 1000003 + proc


class Generator:
    """One process's op stream. ``view`` maps each path it believes exists to a kind:
    f file, d directory, l symlink, s subvolume root, t stub (a snapshot's empty
    directory where the source had a nested subvolume; never used as a parent)."""

    def __init__(self, proc, seed, fs, max_size=256 << 10, max_len=64 << 10, subvol_top=True):
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
        ops = [(n, w) for n, w in WEIGHTS if self.subvols or n not in SUBVOL_OPS]
        self.names = [n for n, _ in ops]
        self.weights = [w for _, w in ops]

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

    # -- ops --

    def first(self):
        if self.subvol_top:
            return "subvol_create", {"path": self.top}
        return "mkdir", {"path": self.top, "mode": "755"}

    def next(self):
        name = self.rng.choices(self.names, self.weights)[0]
        return name, getattr(self, "gen_" + name)()

    def gen_creat(self):
        return {"path": self.fresh("f"), "mode": self.rng.choice(FILE_MODES)}

    def gen_mkdir(self):
        return {"path": self.fresh("d"), "mode": self.rng.choice(DIR_MODES)}

    def gen_rmdir(self):
        return {"path": self.pick("dst")}

    def gen_write(self):
        path = self.pick("f" if self.rng.random() < 0.95 else "fdl")
        off = self.offset(self.size_of(path))
        return {
            "path": path,
            "off": str(off),
            "len": str(self.length()),
            "seed": str(self.rng.getrandbits(32)),
        }

    def gen_writev(self):
        path = self.pick("f")
        off = self.offset(self.size_of(path))
        iov = [str(self.length() // 2) for _ in range(self.rng.randint(1, 4))]
        seed = str(self.rng.getrandbits(32))
        return {"path": path, "off": str(off), "seed": seed, "iov": ",".join(iov)}

    def gen_read(self):
        path = self.pick("f" if self.rng.random() < 0.9 else "fdl")
        size = self.size_of(path)
        off = self.rng.randrange(0, size + 4096)
        return {"path": path, "off": str(off), "len": str(self.rng.randint(0, self.max_len))}

    def gen_truncate(self):
        path = self.pick("f")
        size = self.size_of(path)
        r = self.rng.random()
        if r < 0.15:
            new = 0
        elif r < 0.6:
            new = self.rng.randrange(0, size + 1)
        else:
            new = self.rng.randrange(0, self.max_size + 1)
        return {"path": path, "size": str(new)}

    def gen_fallocate(self):
        path = self.pick("f")
        mode = self.rng.choice(FALLOC_MODES) if self.rng.random() < 0.98 else "punch_hole"
        n = self.length() if self.rng.random() < 0.98 else 0
        off = self.offset(self.size_of(path))
        return {"path": path, "mode": mode, "off": str(off), "len": str(n)}

    def gen_unlink(self):
        return {"path": self.pick("fl" if self.rng.random() < 0.95 else "fldst")}

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

    def gen_rename(self):
        src = self.pick("fldst")
        if self.rng.random() < 0.6:
            dst = self.near(src, self.rng.choice("fdl"))
        else:
            sv = self.subvol_of(posixpath.dirname(src))
            same = [p for p in self.of_kind("fldst") if self.subvol_of(posixpath.dirname(p)) == sv]
            dst = self.rng.choice(same) if same and self.rng.random() < 0.85 else self.pick("fldst")
        return {"old": src, "new": dst}

    def gen_link(self):
        old = self.pick("fl" if self.rng.random() < 0.95 else "d")
        return {"old": old, "new": self.near(old, "h")}

    def gen_symlink(self):
        """Targets lead downward from the link's directory (or dangle): a ``..`` target
        could climb out of this process's directory once the link is renamed or
        snapshotted to another depth."""
        path = self.fresh("l")
        d = posixpath.dirname(path)
        below = [p for p in self.view if p.startswith(d + "/") and p != path]
        if below and self.rng.random() < 0.8:
            target = posixpath.relpath(self.rng.choice(below), d)
        else:
            self.n += 1
            target = f"missing{self.n}"
        return {"target": target, "path": path}

    def gen_fsync(self):
        return {"path": self.pick("f" if self.rng.random() < 0.8 else "fdls")}

    def gen_fdatasync(self):
        return self.gen_fsync()

    def gen_sync(self):
        return {}

    def gen_subvol_create(self):
        return {"path": self.fresh("s")}

    def gen_snapshot(self):
        src = self.top if self.subvol_top and self.rng.random() < 0.4 else self.pick("s", 0.05)
        return {"src": src, "path": self.fresh("c")}

    def gen_subvol_delete(self):
        return {"path": self.pick("s" if self.rng.random() < 0.9 else "dt")}

    # -- the view follows results --

    def under(self, path):
        pre = path + "/"
        return [p for p in self.view if p == path or p.startswith(pre)]

    def update(self, name, a, result):
        if result.startswith("E"):
            return
        v = self.view
        if name == "creat":
            v[a["path"]] = "f"
            self.sizes[a["path"]] = 0
        elif name == "mkdir":
            v[a["path"]] = "d"
        elif name == "symlink":
            v[a["path"]] = "l"
        elif name == "subvol_create":
            v[a["path"]] = "s"
        elif name == "link":
            v[a["new"]] = v.get(a["old"], "f")
            self.sizes[a["new"]] = self.sizes.get(a["old"], 0)
        elif name in ("unlink", "rmdir", "subvol_delete"):
            for p in self.under(a["path"]):
                del v[p]
        elif name == "rename" and a["old"] != a["new"] and a["old"] in v:
            for p in self.under(a["new"]):
                del v[p]
            for p in self.under(a["old"]):
                q = a["new"] + p[len(a["old"]) :]
                v[q] = v.pop(p)
                if p in self.sizes:
                    self.sizes[q] = self.sizes.pop(p)
        elif name == "snapshot":
            src, dst = a["src"], a["path"]
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
        elif name in ("write", "writev"):
            n = int(result)
            self.sizes[a["path"]] = max(self.size_of(a["path"]), int(a["off"]) + n)
        elif name == "truncate":
            self.sizes[a["path"]] = int(a["size"])
        elif name == "fallocate" and "keep_size" not in a["mode"]:
            end = int(a["off"]) + int(a["len"])
            self.sizes[a["path"]] = max(self.size_of(a["path"]), end)


def run_process(base, proc, seed, fs, nops, log, max_size, max_len, subvol_top):
    gen = Generator(proc, seed, fs, max_size, max_len, subvol_top)
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
    base = os.path.abspath(a.dir)
    os.makedirs(base, exist_ok=True)
    fs = detect_fs(base) if a.fs == "auto" else a.fs
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
    header, ops = read_log(a.log_in)
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
  walk                     -> one JSON record per line, then "end"
  rmroot NAME              remove ROOT/NAME (subvolumes by ioctl) -> "ok" / "err ENAME"
  quit                     exit 0
"""


def cmd_serve(a):
    os.umask(0)
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
    return 0


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
    s = sub.add_parser("serve", help="line protocol session", description=SERVE)
    s.add_argument("--root", required=True)
    a = ap.parse_args(argv)
    return {"run": cmd_run, "fsx": cmd_fsx, "walk": cmd_walk, "replay": cmd_replay}.get(
        a.cmd, cmd_serve
    )(a)


if __name__ == "__main__":
    sys.exit(main())
