#!/usr/bin/env python3
"""Guest side of the compression VM cases: one standard-library-only file run in the guest.

Pushed beside a verbatim copy of ``model/btrfs/datapattern.py`` (the same module the model
and the host runner use, so every byte written is the one predicted), it reads a JSON list
of cases on stdin and, for each, on the case's own (already made) filesystem:

1. existing file (``existing_size`` > 0): mount, write the pattern over [0, size), fsync,
   unmount (as a previous mount would have left it);
2. mount ``-o OPTS``; make a tracefs instance ``instances/<name>`` with the ordered-extent
   events (``btrfs_ordered_extent_add``, ``_remove``, ``_split``) filtered to the file's
   inode, and turn it on;
3. the ops (``write`` = pwrite of the pattern, ``sync`` = fsync, ``truncate`` = fsync then
   ftruncate), then unmount (the final writeback), then turn the instance off.

Periodic and age-based writeback are pushed an hour away for the whole run
(``dirty_writeback_centisecs`` and ``dirty_expire_centisecs`` 360000; see ``VM_KNOBS`` for
why not 0), so only fsync and unmount write the file back; the trace shows it (the
flusher's ``writeback_single_inode_start`` for the file appears only after the
``fsoracle: umount`` marker).
One JSON line per case goes to stdout: name, status, error. The host reads each
instance's ``trace`` afterwards.

Usage: ``python3 compress_guest.py < cases.json`` (cases: name, dev, mnt, mount_opts,
ops [[kind, offset, length]...], data, existing_size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datapattern import pattern_bytes  # shipped beside this file

TRACING = "/sys/kernel/tracing"
EVENTS = (
    "btrfs/btrfs_ordered_extent_add",
    "btrfs/btrfs_ordered_extent_remove",
    "btrfs/btrfs_ordered_extent_split",
    "writeback/writeback_single_inode_start",
)
FILE_INO = 257
# Not 0: with dirty_writeback_centisecs 0, the first dirtying of an inode wakes the flusher
# at once (fs-writeback.c wb_wakeup_delayed: timeout = interval * 10 ms), and the flusher's
# wb_check_background_flush finds a fresh filesystem's bdi over its share of the background
# threshold (page-writeback.c domain_over_bg_thresh: wb_bg_thresh is ~0 for a bdi with no
# writeout history), so it writes the file back between the case's writes. An hour
# instead: the flusher runs only for fsync's and unmount's writeback.
VM_KNOBS = {"dirty_writeback_centisecs": "360000", "dirty_expire_centisecs": "360000"}


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _sh(*argv: str) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {p.returncode} {p.stderr.strip()}")


def trace_instance(name: str) -> str:
    """A fresh tracefs instance with the ordered-extent events of inode 257 and the
    flusher's ``writeback_single_inode_start`` for it enabled, tracing off; returns its
    directory."""
    d = f"{TRACING}/instances/{name}"
    if not os.path.isdir(d):
        os.mkdir(d)
    _write(f"{d}/tracing_on", "0")
    _write(f"{d}/buffer_size_kb", "256")
    for ev in EVENTS:
        e = f"{d}/events/{ev}"
        _write(f"{e}/filter", f"ino == {FILE_INO}")
        _write(f"{e}/enable", "1")
    _write(f"{d}/trace", "")
    return d


def run_case(c: dict) -> None:
    dev, mnt, opts, data = c["dev"], c["mnt"], c["mount_opts"], c["data"]
    os.makedirs(mnt, exist_ok=True)
    path = os.path.join(mnt, "f")
    if c["existing_size"]:
        _sh("mount", "-o", opts, dev, mnt)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        os.pwrite(fd, pattern_bytes(data, 0, c["existing_size"]), 0)
        os.fsync(fd)
        os.close(fd)
        _sh("umount", mnt)
    inst = trace_instance(c["name"])
    _sh("mount", "-o", opts, dev, mnt)
    _write(f"{inst}/tracing_on", "1")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for kind, off, length in c["ops"]:
            if kind == "write":
                os.pwrite(fd, pattern_bytes(data, off, length), off)
            elif kind == "sync":
                os.fsync(fd)
            elif kind == "truncate":
                os.fsync(fd)
                os.ftruncate(fd, off)
            else:
                raise ValueError(f"op {kind!r}")
    finally:
        os.close(fd)
    _write(f"{inst}/trace_marker", "fsoracle: umount")
    _sh("umount", mnt)
    _write(f"{inst}/tracing_on", "0")


def main() -> int:
    cases = json.load(sys.stdin)
    saved = {}
    for k, v in VM_KNOBS.items():
        p = f"/proc/sys/vm/{k}"
        with open(p) as f:
            saved[k] = f.read()
        _write(p, v)
    try:
        for c in cases:
            t0 = time.monotonic()
            try:
                run_case(c)
                out = {"name": c["name"], "status": "ok"}
            except Exception as e:  # reported per case; the host fails that case
                out = {"name": c["name"], "status": "error", "error": repr(e)}
                subprocess.run(["umount", c["mnt"]], capture_output=True)
            out["seconds"] = round(time.monotonic() - t0, 2)
            print(json.dumps(out), flush=True)
    finally:
        for k, v in saved.items():
            _write(f"/proc/sys/vm/{k}", v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
