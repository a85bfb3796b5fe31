"""Predict the file extent items and inode flags a kernel leaves after writes and syncs.

The async-path state machine (:mod:`model.btrfs.writeback`) runs the ops with the eager
schedule (:func:`model.btrfs.writeback.eager_choice`): each async chunk is compressed and
submitted before the flusher reaches the next delalloc range, and I/O completes at the end
of each sync. The final unmount is a sync. An existing file (``existing_size``) is written
with the same data kind and synced first, as a previous mount would have left it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from model.btrfs import compression as Z
from model.btrfs import constants as C
from model.btrfs import writeback as W
from model.btrfs.datapattern import pattern_bytes


@dataclass(frozen=True)
class WriteOp:
    """One step of a compressed buffered-write case: ``write OFF LEN``, ``sync`` or
    ``truncate SIZE``."""

    kind: str
    offset: int = 0
    length: int = 0


@dataclass(frozen=True)
class PredictedExtent:
    """One EXTENT_DATA item: (offset, type, compression, ram_bytes, num_bytes,
    disk_num_bytes, extent offset); inline items give their stored data length as
    ``inline_size``; ``exact`` is False when the compressed size is an estimate."""

    offset: int
    type: str
    compression: str
    ram_bytes: int
    num_bytes: int
    disk_num_bytes: int
    extent_offset: int = 0
    inline_size: int = 0
    exact: bool = True


@dataclass(frozen=True)
class PredictedOrdered:
    """An ordered extent added (``btrfs_alloc_ordered_extent`` / 6.1
    ``btrfs_add_ordered_extent``: tracepoint ``btrfs_ordered_extent_add``) or finished
    (``btrfs_finish_one_ordered`` -> ``btrfs_remove_ordered_extent``: tracepoint
    ``btrfs_ordered_extent_remove``); ``compression`` is the BTRFS_COMPRESS_* number."""

    event: str  # "add" | "finish"
    file_offset: int
    num_bytes: int
    disk_num_bytes: int
    compression: int


@dataclass
class Prediction:
    kernel: str
    mount_opts: str
    data: str
    extents: list[PredictedExtent]
    inode_flags: list[str]
    i_size: int
    notes: list[str] = field(default_factory=list)


Chooser = Callable[[W.WritebackModel, list[tuple[str, int]]], int]
"""Picks the index of the next event among ``WritebackModel.enabled()``."""


def run_ops(
    kernel: str,
    opts: Z.MountOptions,
    ops: list[WriteOp],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
    path: str = "async",
    choose: Chooser | None = None,
    compress_fn: Z.CompressFn | None = None,
) -> W.WritebackModel:
    """Run ``ops`` on the model; returns it after the final (unmount) sync. ``choose``
    picks the next event in every sync (default: :func:`model.btrfs.writeback.eager_choice`);
    ``compress_fn`` replaces the bundled compressors (e.g. the kernel's zstd version)."""
    m = W.WritebackModel(path, kernel, opts, size_kernel=size_kernel, compress_fn=compress_fn)

    def sync() -> None:
        m.sync((lambda ev: choose(m, ev)) if choose else None)

    if existing_size:
        m.write(0, pattern_bytes(data, 0, existing_size))
        sync()
    m.ops_start = len(m.ordered_log)
    for op in ops:
        if op.kind == "write":
            m.write(op.offset, pattern_bytes(data, op.offset, op.length))
        elif op.kind == "sync":
            sync()
        elif op.kind == "truncate":
            sync()
            m.truncate(op.offset)
        else:
            raise ValueError(f"unknown op {op.kind!r}")
    sync()
    return m


def _prediction(
    kernel: str, mount_opts: str, data: str, m: W.WritebackModel, notes: list[str]
) -> Prediction:
    exts = [
        PredictedExtent(
            it.file_offset,
            "inline" if it.type == C.FILE_EXTENT_INLINE else "regular",
            C.COMPRESS_NAMES[it.compression],
            it.ram_bytes,
            it.num_bytes,
            it.disk_num_bytes,
            it.offset,
            it.inline_size,
            it.exact,
        )
        for it in m.items
    ]
    flags = [n for bit, n in C.INODE_FLAG_NAMES if m.inode.flags & bit]
    if any(not e.exact for e in exts):
        notes = [*notes, "compressed sizes marked exact=false are within a few bytes, not exact"]
    return Prediction(kernel, mount_opts, data, exts, flags, m.inode.i_size, notes)


def predict(
    kernel: str,
    mount_opts: str,
    ops: list[WriteOp],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
    compress_fn: Z.CompressFn | None = None,
) -> Prediction:
    kernel = Z.check_modelled_kernel(kernel)
    opts = Z.parse_mount_options(mount_opts)
    m = run_ops(kernel, opts, ops, data, existing_size, size_kernel, compress_fn=compress_fn)
    notes = [
        "schedule: each async chunk is compressed before the flusher reaches the next "
        "delalloc range (6.1 reads a NOCOMPRESS flag set by an earlier chunk)",
    ]
    return _prediction(kernel, mount_opts, data, m, notes)


def predict_ordered_extents(
    kernel: str,
    mount_opts: str,
    ops: list[WriteOp],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
    compress_fn: Z.CompressFn | None = None,
) -> list[PredictedOrdered]:
    """The ordered extents the async path adds and finishes during ``ops`` and the final
    unmount (the existing file's own writeback, on an earlier mount, is left out), in the
    order of the eager schedule."""
    kernel = Z.check_modelled_kernel(kernel)
    opts = Z.parse_mount_options(mount_opts)
    m = run_ops(kernel, opts, ops, data, existing_size, size_kernel, compress_fn=compress_fn)
    return [PredictedOrdered(*ev) for ev in m.ordered_log[m.ops_start :]]


# ---- the outcomes other schedules give -------------------------------------------------


@dataclass
class Outcome:
    """One distinct result (extent layout and inode flags) over the enumerated schedules;
    ``schedules`` names each schedule that gives it (the order in which the flusher ran
    delalloc ranges and the workers compressed async chunks); ``eager`` when the eager
    schedule (:func:`predict`) is among them."""

    prediction: Prediction
    ordered: list[PredictedOrdered]
    schedules: list[str]
    eager: bool


def _branch_options(m: W.WritebackModel, ev: list[tuple[str, int]]) -> list[int]:
    """Indices of ``ev`` that make different compression decisions possible, eager first:
    each pending ``compress_chunk`` (the workers may take queued chunks in any order, or run
    two at once: ``compress_file_range`` reads the NOCOMPRESS flag when it starts and sets it
    at the end, which the model's atomic step covers by ordering the chunk that sets it
    after the one that reads it) and the flusher's step when that step starts a delalloc
    range (``btrfs_run_delalloc_range`` reads NOCOMPRESS too). Flusher steps over folios
    already handled, bio submission and I/O completion decide nothing and are not
    branched on."""
    comp = [k for k, (n, _) in enumerate(ev) if n == "compress_chunk"]
    if not comp:
        return []
    flush = [k for k, (n, _) in enumerate(ev) if n == "flush_step"]
    if flush:
        idx = m._next_dirty()
        if idx is None or not m.folios[idx].delalloc:
            return [flush[0]]  # no decision: step on without branching
        return comp + flush
    return comp


class _Replay:
    """One schedule: follows ``prefix`` at the first branch points, then the eager option;
    records the choices made, how many options each point had, and what was chosen."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.taken: list[int] = []
        self.widths: list[int] = []
        self.story: list[str] = []

    def choose(self, m: W.WritebackModel, ev: list[tuple[str, int]]) -> int:
        opts = _branch_options(m, ev)
        if not opts:
            return W.eager_choice(ev)
        if len(opts) == 1:
            return opts[0]
        n = len(self.taken)
        i = self.prefix[n] if n < len(self.prefix) else 0
        self.taken.append(i)
        self.widths.append(len(opts))
        name, arg = ev[opts[i]]
        if name == "compress_chunk":
            ch = m.chunks[arg]
            self.story.append(f"compress [{ch.start // 1024}K,{(ch.end + 1) // 1024}K)")
        else:
            idx = m._next_dirty() or 0
            self.story.append(f"flusher at {idx * W.SECTOR // 1024}K")
        return opts[i]


def enumerate_outcomes(
    kernel: str,
    mount_opts: str,
    ops: list[WriteOp],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
    limit: int = 512,
    compress_fn: Z.CompressFn | None = None,
) -> list[Outcome]:
    """Every distinct result over the schedules of the async path that differ in when the
    compression workers run relative to each other and to the flusher's delalloc
    decisions (:func:`_branch_options`), found by replaying the ops once per schedule
    (depth-first over the choices). The first outcome is the eager one. Raises
    ``RuntimeError`` past ``limit`` schedules."""
    kernel = Z.check_modelled_kernel(kernel)
    opts = Z.parse_mount_options(mount_opts)
    outcomes: dict[tuple[object, ...], Outcome] = {}
    prefix: list[int] = []
    runs = 0
    while True:
        runs += 1
        if runs > limit:
            raise RuntimeError(f"more than {limit} schedules")
        rp = _Replay(prefix)
        m = run_ops(
            kernel,
            opts,
            ops,
            data,
            existing_size,
            size_kernel,
            choose=rp.choose,
            compress_fn=compress_fn,
        )
        p = _prediction(kernel, mount_opts, data, m, [])
        key = (
            tuple(
                (e.offset, e.type, e.compression, e.ram_bytes, e.num_bytes, e.extent_offset)
                for e in p.extents
            ),
            tuple(p.inode_flags),
        )
        taken, widths = rp.taken, rp.widths
        eager = not any(taken)
        name = "eager" if eager else "; ".join(rp.story)
        if key not in outcomes:
            outcomes[key] = Outcome(
                p, [PredictedOrdered(*e) for e in m.ordered_log[m.ops_start :]], [], False
            )
        outcomes[key].schedules.append(name)
        outcomes[key].eager |= eager
        # next schedule: bump the deepest choice that has an untried option
        j = len(taken) - 1
        while j >= 0 and taken[j] + 1 >= widths[j]:
            j -= 1
        if j < 0:
            return list(outcomes.values())
        prefix = [*taken[:j], taken[j] + 1]
