"""Predict the file extent items and inode flags a kernel leaves after writes and syncs.

The async-path state machine (:mod:`model.btrfs.writeback`) runs the ops with the eager
schedule (:func:`model.btrfs.writeback.eager_choice`): each async chunk is compressed and
submitted before the flusher reaches the next delalloc range, and I/O completes at the end
of each sync. The final unmount is a sync. An existing file (``existing_size``) is written
with the same data kind and synced first, as a previous mount would have left it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.btrfs import compression as Z
from model.btrfs import writeback as W
from model.btrfs.datapattern import pattern_bytes


@dataclass(frozen=True)
class Op:
    """``write OFF LEN``, ``sync`` or ``truncate SIZE``."""

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


def run_ops(
    kernel: str,
    opts: Z.MountOptions,
    ops: list[Op],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
    path: str = "async",
) -> W.WritebackModel:
    """Run ``ops`` on the model; returns it after the final (unmount) sync."""
    m = W.WritebackModel(path, kernel, opts, size_kernel=size_kernel)
    if existing_size:
        m.write(0, pattern_bytes(data, 0, existing_size))
        m.sync()
    m.ops_start = len(m.ordered_log)
    for op in ops:
        if op.kind == "write":
            m.write(op.offset, pattern_bytes(data, op.offset, op.length))
        elif op.kind == "sync":
            m.sync()
        elif op.kind == "truncate":
            m.sync()
            m.truncate(op.offset)
        else:
            raise ValueError(f"unknown op {op.kind!r}")
    m.sync()
    return m


def predict(
    kernel: str,
    mount_opts: str,
    ops: list[Op],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
) -> Prediction:
    kernel = Z.check_kernel(kernel)
    opts = Z.parse_mount_options(mount_opts)
    m = run_ops(kernel, opts, ops, data, existing_size, size_kernel)
    exts = [
        PredictedExtent(
            it.file_offset,
            "inline" if it.type == W.FILE_EXTENT_INLINE else "regular",
            Z.COMPRESS_NAMES[it.compression],
            it.ram_bytes,
            it.num_bytes,
            it.disk_num_bytes,
            it.offset,
            it.inline_size,
            it.exact,
        )
        for it in m.items
    ]
    flags = [n for bit, n in Z.INODE_FLAG_NAMES.items() if m.inode.flags & bit]
    notes = [
        "schedule: each async chunk is compressed before the flusher reaches the next "
        "delalloc range (6.1 reads a NOCOMPRESS flag set by an earlier chunk)",
    ]
    if any(not e.exact for e in exts):
        notes.append("compressed sizes marked exact=false are within a few bytes, not exact")
    return Prediction(kernel, mount_opts, data, exts, flags, m.inode.i_size, notes)


def predict_ordered_extents(
    kernel: str,
    mount_opts: str,
    ops: list[Op],
    data: str = "zeros",
    existing_size: int = 0,
    size_kernel: str | None = None,
) -> list[PredictedOrdered]:
    """The ordered extents the async path adds and finishes during ``ops`` and the final
    unmount (the existing file's own writeback, on an earlier mount, is left out), in the
    order of the eager schedule."""
    kernel = Z.check_kernel(kernel)
    m = run_ops(kernel, Z.parse_mount_options(mount_opts), ops, data, existing_size, size_kernel)
    return [PredictedOrdered(*ev) for ev in m.ordered_log[m.ops_start :]]
