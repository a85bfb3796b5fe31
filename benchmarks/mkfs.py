#!/usr/bin/env python3
"""Benchmark: ``fsoracle btrfs mkfs`` against populating the same content through the host
kernel (mkfs.btrfs + loop mount + mkdir + ``fallocate``), in the same run.

Default: the seed's configuration, 1 TiB of 4 MiB preallocated extents on 4 KiB nodes
(262 144 files in directories of 1000). Both images are sparse and are deleted afterwards.

    python benchmarks/mkfs.py [--size 1126G] [--fill 1T] [--nodesize 4K] [--extent-size 4M]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.sizes import parse_size


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kernel_populate(path: Path, size: int, nodesize: int, files: int, fsize: int) -> float:
    t0 = time.monotonic()
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.btrfs", "-q", "-f", "-n", str(nodesize), str(path)], check=True)
    mnt = Path(tempfile.mkdtemp(prefix="fsoracle-bench-"))
    subprocess.run(["mount", "-o", "loop", str(path), str(mnt)], check=True)
    try:
        for i in range(files):
            d = mnt / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir()
            fd = os.open(d / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                os.posix_fallocate(fd, 0, fsize)
            finally:
                os.close(fd)
            if (i + 1) % 25000 == 0:
                progress(f"  kernel: {i + 1}/{files} files ({time.monotonic() - t0:.0f} s)")
        os.sync()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1126G")
    ap.add_argument("--fill", default="1T")
    ap.add_argument("--nodesize", default="4K")
    ap.add_argument("--extent-size", default="4M")
    ap.add_argument("--out", default="results")
    ap.add_argument("--dir", default=None, help="where to put the sparse images")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("mkfs benchmark: needs root for the loop mount", file=sys.stderr)
        return 2
    size, fill = parse_size(args.size), parse_size(args.fill)
    ns, esize = parse_size(args.nodesize), parse_size(args.extent_size)
    files = fill // esize
    work = Path(args.dir or tempfile.mkdtemp(prefix="fsoracle-mkfs-bench-"))
    ours, theirs = work / "ours.img", work / "kernel.img"
    fsoracle = str(Path(sys.executable).parent / "fsoracle")
    try:
        progress(f"fsoracle btrfs mkfs: {fill >> 30} GiB of {esize >> 20} MiB extents...")
        t0 = time.monotonic()
        subprocess.run(
            [
                fsoracle,
                "btrfs",
                "mkfs",
                str(ours),
                "--size",
                str(size),
                "--fill",
                str(fill),
                "--nodesize",
                str(ns),
                "--extent-size",
                str(esize),
                "--force",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        t_ours = time.monotonic() - t0
        progress(f"  {t_ours:.1f} s; now through the host kernel...")
        t_kernel = kernel_populate(theirs, size, ns, files, esize)
        shapes = {}
        for name, img in (("fsoracle", ours), ("kernel", theirs)):
            doc = json.loads(
                subprocess.run(
                    [fsoracle, "btrfs", "dump", "--json", str(img)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            shapes[name] = {t["name"]: (t["nodes"], t["leaves"], t["items"]) for t in doc["trees"]}
    finally:
        for p in (ours, theirs):
            p.unlink(missing_ok=True)
        if not args.dir:
            work.rmdir()
    ratio = t_kernel / t_ours
    print(f"\n{fill >> 30} GiB in {files} files of {esize >> 20} MiB, nodesize {ns}\n")
    print("| writer | wall s |\n|---|---:|")
    print(f"| fsoracle btrfs mkfs | {t_ours:.1f} |")
    print(f"| host kernel (mkfs.btrfs + loop mount + fallocate) | {t_kernel:.1f} |")
    print(f"\nspeed-up: {ratio:.1f}x (target >= 20x, fsoracle <= 30 s)\n")
    print("| tree | fsoracle nodes/leaves/items | kernel nodes/leaves/items |")
    print("|---|---|---|")
    for t in ("EXTENT_TREE", "FS_TREE", "FREE_SPACE_TREE"):
        a, b = shapes["fsoracle"].get(t), shapes["kernel"].get(t)
        print(f"| {t} | {a} | {b} |")
    out = Path(args.out) / f"bench-mkfs-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(
        json.dumps(
            {
                "size": size,
                "fill": fill,
                "nodesize": ns,
                "extent_size": esize,
                "fsoracle_s": t_ours,
                "kernel_s": t_kernel,
                "speedup": ratio,
                "shapes": shapes,
            },
            indent=2,
        )
    )
    print(f"\nresults in {out}/result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
