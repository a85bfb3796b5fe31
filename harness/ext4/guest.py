#!/usr/bin/env python3
"""Guest side of the ext4 allocator study: one standard-library-only file run on the target.

It reads a JSON list of jobs on stdin, each on its own (already made) ext4 filesystem whose
device (``dev``: a path or a link to one, e.g. ``/dev/disk/by-id/...``) it names, and
prints one JSON line per job (name, status, error, and what it measured):

- ``fragment``: mount, run the seeded workload below, unmount. The workload creates files of
  random sizes until a fill target, then for several rounds deletes some, extends some
  (appends, so a file's new blocks go wherever free space is by then), truncates some
  and creates new ones, with ``sync`` between phases so each round's delayed
  allocations are made against the free space the previous round left. Same seed, same
  sequence of system calls.
- ``place``: the exact-placement case. Records the disk's ``queue/rotational``, mounts with
  ``no_prefetch_block_bitmaps`` (no lazyinit thread reading bitmaps and building buddies
  behind the allocation's back: the in-memory state at the allocation is the mount's),
  turns ``mb_stats`` on, creates ``/<file>`` (default ``f``) in the root directory and
  ``posix_fallocate``s ``blocks`` blocks of it (one mballoc request when a free extent
  holds them, else one per piece), then reads ``mb_stats`` (criteria hit, groups and
  extents scanned, buddies generated) and ``mb_max_linear_groups``, and unmounts. The
  host reads the extents back with ``debugfs``.

Usage: ``python3 guest.py < jobs.json`` (pushed to the target as ``ext4_guest.py``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from typing import Any


def _sh(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def rotational(dev: str) -> int:
    return int(_read(f"/sys/block/{os.path.basename(dev)}/queue/rotational").strip())


# ------------------------------------------------------------------ fragmenting workload
CHUNK = bytes(range(256)) * 4096  # 1 MiB of data, content irrelevant


def _append(path: str, nbytes: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while nbytes > 0:
            n = os.write(fd, CHUNK[: min(nbytes, len(CHUNK))])
            nbytes -= n
    finally:
        os.close(fd)


def _used(mnt: str) -> float:
    st = os.statvfs(mnt)
    return 1.0 - st.f_bavail / st.f_blocks


def fragment(mnt: str, seed: int, fill: float, rounds: int, bs: int) -> dict[str, int]:
    """Create, extend, truncate and delete files with ``random.Random(seed)``."""
    rng = random.Random(seed)
    sizes = [bs, 3 * bs, 8 * bs, 17 * bs, 64 * bs, 200 * bs, 700 * bs]
    files: list[str] = []
    ops = {"create": 0, "extend": 0, "delete": 0, "truncate": 0}
    n = 0

    def create() -> None:
        nonlocal n
        p = os.path.join(mnt, f"f{n:05d}")
        n += 1
        _append(p, rng.choice(sizes) + rng.randrange(bs))
        files.append(p)
        ops["create"] += 1

    while _used(mnt) < fill:
        create()
        if n % 64 == 0:
            os.sync()
    os.sync()
    for _ in range(rounds):
        rng.shuffle(files)
        k = len(files) // 3
        for p in files[:k]:
            os.unlink(p)
            ops["delete"] += 1
        files = files[k:]
        os.sync()
        for p in files[: len(files) // 4]:
            _append(p, rng.choice(sizes[:5]))
            ops["extend"] += 1
        for p in files[len(files) // 4 : len(files) // 3]:
            size = os.path.getsize(p)
            if size >= 8 * bs:
                os.truncate(p, rng.randrange(1, size // bs - 2) * bs)
                ops["truncate"] += 1
        os.sync()
        while _used(mnt) < fill:
            create()
        os.sync()
    ops["files"] = len(files)
    return ops


# ------------------------------------------------------------------ placement
def mb_stats_hits(text: str) -> dict[str, int]:
    """``/proc/fs/ext4/<dev>/mb_stats``: the hits of each criteria section."""
    out: dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if s.endswith("_stats:"):
            section = s[: -len("_stats:")]
        elif s.startswith("hits:") and section:
            out[section] = int(s.split()[1])
    return out


def place(job: dict[str, Any], dev: str, mnt: str) -> dict[str, Any]:
    name = os.path.basename(dev)
    res: dict[str, Any] = {"rotational": rotational(dev)}
    _sh("mount", "-t", "ext4", "-o", job.get("mount_opts", "no_prefetch_block_bitmaps"), dev, mnt)
    try:
        _write(f"/sys/fs/ext4/{name}/mb_stats", "1")
        res["mb_max_linear_groups"] = int(_read(f"/sys/fs/ext4/{name}/mb_max_linear_groups"))
        res["mounts"] = [ln for ln in _read("/proc/mounts").splitlines() if ln.startswith(dev)]
        path = os.path.join(mnt, job.get("file", "f"))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.posix_fallocate(fd, 0, job["blocks"] * job["blocksize"])
            os.fsync(fd)
        finally:
            os.close(fd)
        res["ino"] = os.stat(path).st_ino
        stats = _read(f"/proc/fs/ext4/{name}/mb_stats")
        res["mb_stats"] = stats
        res["hits"] = mb_stats_hits(stats)
    finally:
        _sh("umount", mnt)
    return res


def main() -> int:
    jobs = json.load(sys.stdin)
    for job in jobs:
        t0 = time.monotonic()
        out: dict[str, Any] = {"name": job["name"], "status": "ok", "error": ""}
        mnt = f"/mnt/{job['name']}"
        try:
            os.makedirs(mnt, exist_ok=True)
            dev = os.path.realpath(job["dev"])  # /dev/vda: the name sysfs and /proc use
            if job["kind"] == "fragment":
                out["rotational"] = rotational(dev)
                _sh("mount", "-t", "ext4", dev, mnt)
                try:
                    out["ops"] = fragment(
                        mnt, job["seed"], job["fill"], job["rounds"], job["blocksize"]
                    )
                finally:
                    _sh("umount", mnt)
            elif job["kind"] == "place":
                out.update(place(job, dev, mnt))
            else:
                raise ValueError(f"unknown job kind {job['kind']!r}")
        except Exception as e:  # reported per job; the host fails the test that needs it
            out["status"] = "error"
            out["error"] = f"{type(e).__name__}: {e}"
            subprocess.run(["umount", mnt], capture_output=True)
        out["seconds"] = round(time.monotonic() - t0, 3)
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
