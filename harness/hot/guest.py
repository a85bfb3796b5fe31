#!/usr/bin/env python3
"""Guest side of the hot-data tracking VM runs (``fsoracle hot trace`` and ``fsoracle hot bench``).

Standard library only: pushed into the guest and run as ``python3 hot_guest.py ACTION``
with a JSON object on stdin; it prints one JSON line with what it did. Actions:

- ``probes``: define the kprobe events (``spec["probes"]``, lines for ``kprobe_events``) in
  a tracefs instance ``fsohot`` with a big buffer and the ``mono`` clock, tracing off.
- ``mkfs``: make btrfs on each device (``-U`` a fixed fsid), optionally behind a dm-delay
  target (``dmsetup create`` with delay 0, raised later by ``delay``), and mount.
- ``trace_on`` / ``trace_off``: the instance's ``tracing_on``; ``trace_on`` also answers
  the CLOCK_REALTIME - CLOCK_MONOTONIC offset (the trace's ``time_offset_ns``).
- ``create``: write the data set (each file written once with one ``pwrite`` and fsynced),
  answering each file's inode number and size (``os.stat``).
- ``delay``: reload the dm-delay table with the given read/write delay (ms).
- ``read``: the reads of a plan file (``NAME OFFSET`` per line), ``io_size`` bytes each with
  O_DIRECT into page-aligned buffers, ``jobs`` threads taking the next plan entry in turn;
  either every entry once (``count``) or until ``seconds`` pass (wrapping around the plan).
  Files are opened where ``locations`` says they live now. With ``log`` the driver writes
  its own record of each read (``NAME INODE OFFSET LENGTH``): the independent side the
  recorded kernel trace is checked against.
- ``mixed``: a small read/write workload at known offsets (buffered writes + fsync, then
  O_DIRECT reads), logging what it did the same way (``W``/``R`` lines).
- ``move``: copy files to the fast filesystem (O_DIRECT reads of 1 MiB, fsync), then
  unlink them from the slow one.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import threading
import time

TRACING = "/sys/kernel/tracing"
INSTANCE = f"{TRACING}/instances/fsohot"


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _sh(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {p.returncode} {p.stderr.strip()}")
    return p.stdout


def act_probes(spec: dict) -> dict:
    if not os.path.isdir(INSTANCE):
        os.mkdir(INSTANCE)
    _write(f"{INSTANCE}/tracing_on", "0")
    _write(f"{INSTANCE}/buffer_size_kb", str(spec.get("buffer_kb", 16384)))
    _write(f"{INSTANCE}/trace_clock", "mono")
    for line in spec["probes"]:
        fd = os.open(f"{TRACING}/kprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (line + "\n").encode())
        except OSError as e:
            with open(f"{TRACING}/error_log") as f:
                log = f.read()[-600:]
            raise RuntimeError(f"probe {line!r} refused ({e.strerror}): {log}") from None
        finally:
            os.close(fd)
    group = spec.get("group", "fsohot")
    _write(f"{INSTANCE}/events/{group}/enable", "1")
    _write(f"{INSTANCE}/trace", "")
    return {"instance": INSTANCE}


def _offset_ns() -> int:
    a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    r = time.clock_gettime_ns(time.CLOCK_REALTIME)
    b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return r - (a + b) // 2


def act_trace_on(spec: dict) -> dict:
    _write(f"{INSTANCE}/tracing_on", "1")
    return {"time_offset_ns": _offset_ns(), "mono_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC)}


def act_trace_off(spec: dict) -> dict:
    _write(f"{INSTANCE}/tracing_on", "0")
    with open(f"{INSTANCE}/per_cpu/cpu0/stats") as f:
        stats0 = f.read()
    overrun = 0
    cpu = 0
    while os.path.isdir(f"{INSTANCE}/per_cpu/cpu{cpu}"):
        with open(f"{INSTANCE}/per_cpu/cpu{cpu}/stats") as f:
            for line in f:
                if line.startswith("overrun:"):
                    overrun += int(line.split()[1])
        cpu += 1
    return {"overrun": overrun, "stats_cpu0": stats0}


def _sb_dev(mnt: str) -> int:
    """The kernel's internal dev_t (``MAJOR << 20 | MINOR``, include/linux/kdev_t.h) of the
    superblock mounted at ``mnt``: what the probes fetch from ``inode->i_sb->s_dev``. Taken
    from /proc/self/mountinfo (field 3 is the superblock's ``s_dev``): btrfs's stat reports
    the subvolume's anonymous device instead (btrfs_getattr)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == mnt:
                major, minor = parts[2].split(":")
                found = (int(major) << 20) | int(minor)
    return found


def act_mkfs(spec: dict) -> dict:
    out = {}
    for fs in spec["filesystems"]:
        dev = fs["dev"]
        if fs.get("dm_delay"):
            sectors = int(_sh("blockdev", "--getsz", dev).split()[0])
            name = fs["dm_delay"]
            _sh(
                "dmsetup", "create", name, "--noudevsync", "--table", f"0 {sectors} delay {dev} 0 0"
            )
            _sh("dmsetup", "mknodes", name)
            dev = f"/dev/mapper/{name}"
            fs["sectors"] = sectors
        _sh("mkfs.btrfs", "-q", "-f", "-U", fs["fsid"], dev)
        os.makedirs(fs["mnt"], exist_ok=True)
        _sh("mount", dev, fs["mnt"])
        out[fs["mnt"]] = {"dev": dev, "s_dev": _sb_dev(fs["mnt"])}
    return {"mounts": out}


def act_delay(spec: dict) -> dict:
    name, lower, ms = spec["name"], spec["lower"], int(spec["ms"])
    sectors = int(_sh("blockdev", "--getsz", lower).split()[0])
    table = f"0 {sectors} delay {lower} 0 {ms} {lower} 0 {ms}"
    _sh("dmsetup", "suspend", name)
    _sh("dmsetup", "reload", name, "--table", table)
    _sh("dmsetup", "resume", name)
    return {"table": _sh("dmsetup", "table", name).strip()}


def act_create(spec: dict) -> dict:
    mnt, size = spec["mnt"], int(spec["size"])
    files = []
    buf = bytearray(size)
    for name in spec["names"]:
        stamp = name.encode().ljust(16, b"\0")
        for off in range(0, size, 4096):
            buf[off : off + 16] = stamp
        path = os.path.join(mnt, name)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, buf, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        st = os.stat(path)
        files.append({"name": name, "inode": st.st_ino, "size": st.st_size, "path": path})
    _write("/proc/sys/vm/drop_caches", "3")
    return {"files": files}


def _raise_nofile(n: int) -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(max(n, soft), hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def act_read(spec: dict) -> dict:
    with open(spec["plan"]) as f:
        plan = [(ln.split()[0], int(ln.split()[1])) for ln in f if ln.strip()]
    loc: dict[str, str] = spec["locations"]  # name -> directory
    io = int(spec["io_size"])
    jobs = int(spec["jobs"])
    count = spec.get("count")
    seconds = spec.get("seconds")
    _raise_nofile(len(loc) + 64)
    fds: dict[str, int] = {}
    inodes: dict[str, int] = {}
    for name in sorted({n for n, _ in plan}):
        fd = os.open(os.path.join(loc[name], name), os.O_RDONLY | os.O_DIRECT)
        fds[name] = fd
        inodes[name] = os.fstat(fd).st_ino
    lock = threading.Lock()
    nxt = [0]
    done: list[list[tuple[str, int]]] = [[] for _ in range(jobs)]
    errors: list[str] = []
    t_start = time.monotonic()
    deadline = t_start + float(seconds) if seconds is not None else None
    limit = int(count) if count is not None else None

    def reader(j: int) -> None:
        buf = mmap.mmap(-1, io)
        mine = done[j]
        try:
            while True:
                with lock:
                    i = nxt[0]
                    if limit is not None and i >= limit:
                        return
                    nxt[0] = i + 1
                if deadline is not None and time.monotonic() >= deadline:
                    return
                name, off = plan[i % len(plan)]
                n = os.preadv(fds[name], [buf], off)
                if n != io:
                    errors.append(f"{name}@{off}: read {n} bytes")
                    return
                mine.append((name, off))
        except OSError as e:
            errors.append(repr(e))
        finally:
            buf.close()

    threads = [threading.Thread(target=reader, args=(j,)) for j in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    for fd in fds.values():
        os.close(fd)
    if errors:
        raise RuntimeError("; ".join(errors[:5]))
    total = sum(len(d) for d in done)
    per_file: dict[str, int] = {}
    for d in done:
        for name, _ in d:
            per_file[name] = per_file.get(name, 0) + 1
    if spec.get("log"):
        with open(spec["log"], "w") as f:
            for d in done:
                for name, off in d:
                    f.write(f"R {name} {inodes[name]} {off} {io}\n")
    return {
        "reads": total,
        "seconds": elapsed,
        "iops": total / elapsed if elapsed > 0 else 0.0,
        "per_file": per_file,
        "inodes": inodes,
    }


def act_mixed(spec: dict) -> dict:
    """``ops``: ``["W", name, offset, length]`` (pwrite then fsync) or ``["R", name,
    offset, length]`` (O_DIRECT pread), in order, on files under ``mnt``."""
    mnt = spec["mnt"]
    log = []
    for kind, name, off, length in spec["ops"]:
        path = os.path.join(mnt, name)
        if kind == "W":
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                os.pwrite(fd, bytes([0x5A]) * length, off)
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            buf = mmap.mmap(-1, length)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            try:
                n = os.preadv(fd, [buf], off)
            finally:
                os.close(fd)
                buf.close()
            if n != length:
                raise RuntimeError(f"{name}@{off}: read {n} of {length}")
        log.append(f"{kind} {name} {os.stat(path).st_ino} {off} {length}\n")
    with open(spec["log"], "w") as f:
        f.writelines(log)
    files = []
    for name in sorted({op[1] for op in spec["ops"]}):
        st = os.stat(os.path.join(mnt, name))
        files.append({"name": name, "inode": st.st_ino, "size": st.st_size, "path": name})
    return {"ops": len(log), "files": files}


def act_move(spec: dict) -> dict:
    src, dst = spec["src"], spec["dst"]
    chunk = 1 << 20
    buf = mmap.mmap(-1, chunk)
    moved = 0
    t0 = time.monotonic()
    try:
        for name in spec["names"]:
            sfd = os.open(os.path.join(src, name), os.O_RDONLY | os.O_DIRECT)
            dfd = os.open(os.path.join(dst, name), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                off = 0
                while True:
                    n = os.preadv(sfd, [buf], off)
                    if n <= 0:
                        break
                    os.pwrite(dfd, buf[:n], off)
                    off += n
                os.fsync(dfd)
                moved += off
            finally:
                os.close(sfd)
                os.close(dfd)
            os.unlink(os.path.join(src, name))
    finally:
        buf.close()
    os.sync()
    _write("/proc/sys/vm/drop_caches", "3")
    return {"moved_bytes": moved, "files": len(spec["names"]), "seconds": time.monotonic() - t0}


ACTIONS = {
    "probes": act_probes,
    "mkfs": act_mkfs,
    "trace_on": act_trace_on,
    "trace_off": act_trace_off,
    "create": act_create,
    "delay": act_delay,
    "read": act_read,
    "mixed": act_mixed,
    "move": act_move,
}


def main() -> int:
    action = sys.argv[1]
    spec = json.load(sys.stdin)
    out = ACTIONS[action](spec)
    print(json.dumps({"action": action, "status": "ok", **out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
