"""The op registry: every operation a workload runs, described once.

An entry (:class:`OpSpec`) holds everything the rest of the project needs to know about an
op, as data:

- its **name** and its **arguments** in the order a log line carries them (:class:`Arg`),
  each with a *kind* (:data:`KINDS`): what the value is (a path that exists, a new name, a
  byte offset in a file, permission bits...), so every generator can draw it — the guest
  driver's seeded generator (``harness/workload/driver.py``, which gets this registry as
  JSON: :func:`guest_table`) and the hypothesis state machine of the differential test
  (``harness/workload/differential.py``);
- the **filesystems** it applies to (the subvolume ops: btrfs) and its **weight** in the
  seeded generator (0: never drawn);
- its **model semantics**: the :class:`~model.fsstate.namespace.FsModel` method (by name,
  ``op_<name>`` by default) or a function ``(model, op) -> result``;
- its **effects** (:class:`Effects`): which names it makes, removes or moves, whose data it
  changes, what it makes durable. The crash rules (:mod:`model.fsstate.crash`) and the
  generators' views of the tree read these, never op names;
- the **system calls** the driver makes for it (documentation: :attr:`OpSpec.calls`).

The log format (:mod:`model.fsstate.oplog`) reads the argument keys from here, the model
dispatches through here, and the guest driver handles op ``NAME`` with its
``Executor.op_NAME`` (or one given to it as a plugin file). Adding an op is an entry here
and a guest handler. A test may add one for its own duration (:func:`registered`).

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# ---- argument kinds ------------------------------------------------------------------
# paths, relative to the run's root
FILE = "file"  # an existing regular file (sometimes something else: a miss)
DIR = "dir"  # an existing directory
NONDIR = "nondir"  # an existing file or symlink
ANY = "any"  # any existing path
SUBVOL = "subvol"  # an existing subvolume root (btrfs); "." (the root) when not removed
NEW = "new"  # a new name in an existing directory (near ``of``'s when given)
DEST = "dest"  # a new or an existing name, near ``of``'s (a rename's target)
TARGET = "target"  # a symlink body, relative to the directory holding ``of``
# numbers and words
OFFSET = "offset"  # a byte offset in the file named by ``of``
LENGTH = "length"  # a byte count
SIZE = "size"  # a new size for the file named by ``of``
MODE = "mode"  # permission bits, octal, one of ``choices``
SEED = "seed"  # a write_data seed
IOV = "iov"  # comma-separated byte counts
FALLOC = "falloc"  # fallocate mode names joined by ``|``, one of ``choices``

KINDS: dict[str, str] = {
    FILE: "the path of an existing regular file",
    DIR: "the path of an existing directory",
    NONDIR: "the path of an existing file or symlink",
    ANY: "the path of anything that exists",
    SUBVOL: "the path of an existing subvolume root (the root itself unless removed)",
    NEW: "a new name in an existing directory",
    DEST: "a new or existing name (a rename's target)",
    TARGET: "a symlink body, relative to the link's directory",
    OFFSET: "a byte offset in the file named by `of`",
    LENGTH: "a byte count",
    SIZE: "a file size for the file named by `of`",
    MODE: "permission bits, octal, one of `choices`",
    SEED: "the seed of write_data",
    IOV: "comma-separated byte counts",
    FALLOC: "fallocate mode names joined by |, one of `choices`",
}
PATH_KINDS = (FILE, DIR, NONDIR, ANY, SUBVOL, NEW, DEST)

# what an op makes at its ``makes`` argument (Effects.made)
MADE = ("file", "dir", "symlink", "subvol", "snapshot", "link", "move")
# what an op makes durable (Effects.sync)
SYNCS = ("fsync", "fdatasync", "sync", "snapshot")


@dataclass(frozen=True)
class Arg:
    """One argument: its key in a log line, its kind (:data:`KINDS`), the argument it is
    drawn relative to (``of``: an offset in that file, a name near that one), and the
    values it takes when the kind is a choice."""

    key: str
    kind: str
    of: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Effects:
    """What an op does to the namespace and the data when it succeeds.

    - ``makes``: the argument naming the entry it makes; ``made``: what it makes there
      (:data:`MADE`: a new ``file``/``dir``/``symlink``/``subvol``; a ``snapshot`` of
      ``source``; a ``link`` to ``source``'s inode; a ``move`` of ``source``);
    - ``source``: the argument naming what a snapshot, link or move starts from;
    - ``removes``: the arguments naming entries it removes or replaces;
    - ``data``: the argument naming the file whose contents or size it changes (the range
      is ``[offset, offset + length)`` from its OFFSET and LENGTH or IOV arguments, and the
      size its SIZE argument);
    - ``sync``: what it makes durable (:data:`SYNCS`): ``fsync`` (the file and the name
      it was reached by), ``fdatasync`` (the file's data), ``sync`` (everything),
      ``snapshot`` (the source subvolume and the snapshot: btrfs flushes and commits).
    """

    makes: str = ""
    made: str = ""
    source: str = ""
    removes: tuple[str, ...] = ()
    data: str = ""
    sync: str = ""


# (model: namespace.FsModel, op: oplog.Op) -> the op's result. Typed loosely: the registry
# is what namespace and oplog read, so it names neither (no import cycle, not even for
# type checking).
Semantics = Callable[[Any, Any], str]


@dataclass(frozen=True)
class OpSpec:
    """One op (module docstring). ``model`` is the name of the :class:`FsModel` method
    that gives its semantics (default ``op_<name>``) or a function ``(model, op) ->
    result`` that raises :class:`~model.fsstate.namespace.OpError` for a failure."""

    name: str
    args: tuple[Arg, ...]
    calls: str
    weight: int = 1
    fs: tuple[str, ...] = ("btrfs", "ext4")
    effects: Effects = field(default_factory=Effects)
    model: str | Semantics = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The argument keys, in log-line order."""
        return tuple(a.key for a in self.args)

    def arg(self, key: str) -> Arg:
        for a in self.args:
            if a.key == key:
                return a
        raise KeyError(f"{self.name} has no argument {key!r}")

    def keys_of(self, *kinds: str) -> tuple[str, ...]:
        """The keys of the arguments of these kinds, in order."""
        return tuple(a.key for a in self.args if a.kind in kinds)

    def path_keys(self) -> tuple[str, ...]:
        """The arguments naming paths below the root, the one it makes first."""
        keys = self.keys_of(*PATH_KINDS)
        first = self.effects.makes
        return (first, *(k for k in keys if k != first)) if first in keys else keys

    def applies_to(self, fs: str) -> bool:
        return fs in self.fs

    def method(self) -> str:
        """The FsModel method name when the semantics is one."""
        return self.model if isinstance(self.model, str) and self.model else f"op_{self.name}"

    def guest(self) -> dict[str, Any]:
        """This entry as the guest driver reads it (JSON-able; no semantics)."""
        eff = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(self.effects).items()
            if v not in ("", ())
        }
        args = []
        for a in self.args:
            d: dict[str, Any] = {"key": a.key, "kind": a.kind}
            if a.of:
                d["of"] = a.of
            if a.choices:
                d["choices"] = list(a.choices)
            args.append(d)
        return {
            "name": self.name,
            "weight": self.weight,
            "fs": list(self.fs),
            "effects": eff,
            "args": args,
        }


class RegistryError(ValueError):
    """An entry that contradicts itself or the registry (the message says how)."""


def validate(spec: OpSpec) -> None:
    """Refuse an entry whose kinds, references or effects do not hold together."""
    if not spec.name.isidentifier():
        raise RegistryError(f"op name {spec.name!r} is not an identifier")
    keys = spec.keys
    if len(set(keys)) != len(keys):
        raise RegistryError(f"{spec.name}: an argument key appears twice")
    for a in spec.args:
        if a.kind not in KINDS:
            raise RegistryError(f"{spec.name}.{a.key}: unknown kind {a.kind!r}")
        if a.of and a.of not in keys:
            raise RegistryError(f"{spec.name}.{a.key}: of={a.of!r} is no argument")
        if a.kind in (MODE, FALLOC) and not a.choices:
            raise RegistryError(f"{spec.name}.{a.key}: a {a.kind} argument needs choices")
        if a.kind in (OFFSET, SIZE, DEST, TARGET) and not a.of:
            raise RegistryError(f"{spec.name}.{a.key}: a {a.kind} argument needs of=")
    e = spec.effects
    named = [e.makes, e.source, e.data, *e.removes]
    for k in named:
        if k and k not in keys:
            raise RegistryError(f"{spec.name}: effects name {k!r}, which is no argument")
    if bool(e.makes) != bool(e.made) or (e.made and e.made not in MADE):
        raise RegistryError(f"{spec.name}: effects need makes= and made= (one of {MADE})")
    if (e.made in ("snapshot", "link", "move")) != bool(e.source):
        raise RegistryError(f"{spec.name}: a {e.made or 'plain'} op names source= iff it copies")
    if e.sync and e.sync not in SYNCS:
        raise RegistryError(f"{spec.name}: sync={e.sync!r} is not one of {SYNCS}")
    if spec.weight < 0:
        raise RegistryError(f"{spec.name}: negative weight")


REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    validate(spec)
    if spec.name in REGISTRY:
        raise RegistryError(f"op {spec.name!r} is registered already")
    REGISTRY[spec.name] = spec
    return spec


@contextmanager
def registered(*specs: OpSpec) -> Iterator[None]:
    """Add ops for the duration of a ``with`` block (tests)."""
    for s in specs:
        register(s)
    try:
        yield
    finally:
        for s in specs:
            REGISTRY.pop(s.name, None)


def lookup(name: str) -> OpSpec | None:
    return REGISTRY.get(name)


def ops_for(fs: str) -> list[OpSpec]:
    """The ops that apply to ``fs``, in registry order."""
    return [s for s in REGISTRY.values() if s.applies_to(fs)]


def guest_table() -> dict[str, Any]:
    """The registry as the guest driver reads it (``driver.py run --ops FILE``): every
    entry's arguments, kinds, filesystems, weight and effects."""
    return {"version": 1, "ops": [s.guest() for s in REGISTRY.values()]}


def table_digest(table: dict[str, Any]) -> str:
    """A short name for a guest table (the ``optable=`` header of a seeded run's log):
    the first 16 hex digits of SHA-256 of its canonical JSON."""
    text = json.dumps(table, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- the ops -------------------------------------------------------------------------

FILE_MODES = ("644", "600", "755", "640")
DIR_MODES = ("755", "700", "775")
# the last one fails (EOPNOTSUPP: punch hole needs keep size)
FALLOC_MODES = (
    "alloc",
    "keep_size",
    "punch_hole|keep_size",
    "zero_range",
    "zero_range|keep_size",
    "punch_hole",
)
BTRFS_ONLY = ("btrfs",)  # OpSpec.fs of the ops only btrfs has

for _spec in (
    OpSpec(
        "creat",
        (Arg("path", NEW), Arg("mode", MODE, choices=FILE_MODES)),
        "open(O_CREAT|O_EXCL|O_WRONLY, mode); close",
        weight=8,
        effects=Effects(makes="path", made="file"),
    ),
    OpSpec(
        "mkdir",
        (Arg("path", NEW), Arg("mode", MODE, choices=DIR_MODES)),
        "mkdir(mode)",
        weight=4,
        effects=Effects(makes="path", made="dir"),
    ),
    OpSpec(
        "rmdir",
        (Arg("path", DIR),),
        "rmdir",
        weight=2,
        effects=Effects(removes=("path",)),
    ),
    OpSpec(
        "write",
        (
            Arg("path", FILE),
            Arg("off", OFFSET, of="path"),
            Arg("len", LENGTH),
            Arg("seed", SEED),
        ),
        "open(O_WRONLY); pwrite(write_data(seed, len))",
        weight=12,
        effects=Effects(data="path"),
    ),
    OpSpec(
        "writev",
        (Arg("path", FILE), Arg("off", OFFSET, of="path"), Arg("seed", SEED), Arg("iov", IOV)),
        "open(O_WRONLY); pwritev of write_data(seed, sum(iov)) split into the iov lengths",
        weight=4,
        effects=Effects(data="path"),
    ),
    OpSpec(
        "read",
        (Arg("path", FILE), Arg("off", OFFSET, of="path"), Arg("len", LENGTH)),
        "open(O_RDONLY); pread -> count sha256=",
        weight=10,
    ),
    OpSpec(
        "truncate",
        (Arg("path", FILE), Arg("size", SIZE, of="path")),
        "truncate(path, size)",
        weight=4,
        effects=Effects(data="path"),
    ),
    OpSpec(
        "fallocate",
        (
            Arg("path", FILE),
            Arg("mode", FALLOC, choices=FALLOC_MODES),
            Arg("off", OFFSET, of="path"),
            Arg("len", LENGTH),
        ),
        "open(O_WRONLY); fallocate(mode names joined by |: alloc, keep_size, punch_hole,"
        " zero_range)",
        weight=6,
        effects=Effects(data="path"),
    ),
    OpSpec(
        "unlink",
        (Arg("path", NONDIR),),
        "unlink",
        weight=4,
        effects=Effects(removes=("path",)),
    ),
    OpSpec(
        "rename",
        (Arg("old", ANY), Arg("new", DEST, of="old")),
        "rename",
        weight=6,
        effects=Effects(makes="new", made="move", source="old", removes=("old", "new")),
    ),
    OpSpec(
        "link",
        (Arg("old", NONDIR), Arg("new", NEW, of="old")),
        "link (no AT_SYMLINK_FOLLOW)",
        weight=3,
        effects=Effects(makes="new", made="link", source="old"),
    ),
    OpSpec(
        "symlink",
        (Arg("target", TARGET, of="path"), Arg("path", NEW)),
        "symlink(target, path)",
        weight=3,
        effects=Effects(makes="path", made="symlink"),
    ),
    OpSpec(
        "fsync",
        (Arg("path", FILE),),
        "open(O_RDONLY); fsync",
        weight=3,
        effects=Effects(sync="fsync"),
    ),
    OpSpec(
        "fdatasync",
        (Arg("path", FILE),),
        "open(O_RDONLY); fdatasync",
        weight=2,
        effects=Effects(sync="fdatasync"),
    ),
    OpSpec("sync", (), "sync", weight=1, effects=Effects(sync="sync")),
    OpSpec(
        "subvol_create",
        (Arg("path", NEW),),
        "open(parent, O_DIRECTORY); ioctl(BTRFS_IOC_SUBVOL_CREATE, name)",
        weight=1,
        fs=BTRFS_ONLY,
        effects=Effects(makes="path", made="subvol"),
    ),
    OpSpec(
        "snapshot",
        (Arg("src", SUBVOL), Arg("path", NEW)),
        "open(src, O_RDONLY); open(parent, O_DIRECTORY); ioctl(BTRFS_IOC_SNAP_CREATE_V2)",
        weight=1,
        fs=BTRFS_ONLY,
        effects=Effects(makes="path", made="snapshot", source="src", sync="snapshot"),
    ),
    OpSpec(
        "subvol_delete",
        (Arg("path", SUBVOL),),
        "open(parent, O_DIRECTORY); ioctl(BTRFS_IOC_SNAP_DESTROY, name)",
        weight=1,
        fs=BTRFS_ONLY,
        effects=Effects(removes=("path",)),
    ),
):
    register(_spec)
