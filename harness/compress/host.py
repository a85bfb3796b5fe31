"""Run a compression case through the host kernel on a loop mount and read the result back.

Each case: mkfs.btrfs a sparse image, give it to a host target
(:class:`harness.target.host.HostTarget`, which loop-mounts it ``-o loop,OPTS``), (for an
existing file: write and fsync it, unmount, mount again), run the ops in this process on
the target's mount point (``write`` = pwrite of the deterministic pattern, ``sync`` = fsync
of the file, ``truncate`` = fsync then ftruncate), unmount, then read the file's items back
(:mod:`harness.compress.readback`: our reader and ``dump-tree``). Needs root and
btrfs-progs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.compress.readback import HostResult, dump_tree_extents, read_back
from harness.target import Attached, DiskSpec, Target, TargetError, TargetSpec, open_target
from model.btrfs.compress_predict import WriteOp
from model.btrfs.datapattern import pattern_bytes

IMAGE_BYTES = 512 << 20


@contextlib.contextmanager
def no_background_writeback() -> Iterator[None]:
    """Keep the flusher threads from writing back between the case's ops: the extent
    layout depends on which dirty ranges are written back together, and a flusher
    writeback landing between two writes splits them. The interval is an hour, not 0:
    with 0, fs-writeback.c ``wb_wakeup_delayed`` wakes the flusher the moment the file is
    first dirtied, and a fresh filesystem's bdi is over its (near-zero) share of the
    background threshold, so it writes the file back at once (seen in the VM's trace; see
    harness/compress/guest.py). The vm sysctls are restored afterwards; only explicit
    fsync/unmount writes back meanwhile."""
    knobs = {"dirty_writeback_centisecs": "360000", "dirty_expire_centisecs": "360000"}
    saved = {}
    for k, v in knobs.items():
        p = Path("/proc/sys/vm") / k
        saved[k] = p.read_text()
        p.write_text(v)
    try:
        yield
    finally:
        for k, v in saved.items():
            (Path("/proc/sys/vm") / k).write_text(v)


def _mount(t: Target, d: Attached, opts: str) -> None:
    r = t.mount(d, opts)
    if r.status:
        raise TargetError(f"mount -o {opts} {d.image}: {r.err.strip()}")


def run_host_case(
    mount_opts: str,
    ops: list[WriteOp],
    data: str,
    existing_size: int = 0,
    workdir: Path | None = None,
) -> HostResult:
    tmp = Path(tempfile.mkdtemp(prefix="fsoracle-compress-", dir=workdir))
    img = tmp / "img"
    try:
        with open(img, "wb") as f:
            f.truncate(IMAGE_BYTES)
        subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
        with open_target(TargetSpec(kind="host"), [DiskSpec(img, "btrfs")]) as t:
            d = t.disks[0]
            path = Path(d.mnt) / "f"
            if existing_size:
                _mount(t, d, mount_opts)
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
                os.pwrite(fd, pattern_bytes(data, 0, existing_size), 0)
                os.fsync(fd)
                os.close(fd)
                t.umount(d)
            _mount(t, d, mount_opts)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                with no_background_writeback():
                    for op in ops:
                        if op.kind == "write":
                            os.pwrite(fd, pattern_bytes(data, op.offset, op.length), op.offset)
                        elif op.kind == "sync":
                            os.fsync(fd)
                        elif op.kind == "truncate":
                            os.fsync(fd)
                            os.ftruncate(fd, op.offset)
            finally:
                os.close(fd)
            t.umount(d)
        res = read_back(img, data)
        res.dump_tree_extents = dump_tree_extents(img)
        return res
    finally:
        img.unlink(missing_ok=True)
        tmp.rmdir()
