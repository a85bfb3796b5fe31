#!/usr/bin/env python3
"""Benchmark: ``fsoracle btrfs dump --json`` against ``btrfs inspect-internal dump-tree``.

The image is a 128 GiB filesystem populated through the host kernel (loop mount) with tens
of thousands of preallocated (``fallocate``) files, so it is sparse on disk but has the
metadata of a full filesystem. It is cached under ``$FSORACLE_CACHE/images`` by its
parameters. Both tools read the whole image in the same run; the median over
``--repeat`` runs of each is printed, with the ratio.

    python benchmarks/btrfs_dump.py [--size 128G] [--files 30000] [--file-size 4M]
                                    [--nodesize 16384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.argtypes import int_range
from harness.sizes import parse_size
from vm.cache import cache_dir


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_image(path: Path, size: int, files: int, file_size: int, nodesize: int) -> None:
    """mkfs.btrfs, loop mount, fallocate ``files`` files of ``file_size`` bytes."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.btrfs", "-q", "-f", "-n", str(nodesize), str(tmp)], check=True)
    mnt = Path(tempfile.mkdtemp(prefix="fsoracle-bench-"))
    subprocess.run(["mount", "-o", "loop", str(tmp), str(mnt)], check=True)
    try:
        t0 = time.monotonic()
        per_dir = 1000
        for i in range(files):
            d = mnt / f"d{i // per_dir:03d}"
            if i % per_dir == 0:
                d.mkdir()
            fd = os.open(d / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                os.posix_fallocate(fd, 0, file_size)
            finally:
                os.close(fd)
            if (i + 1) % 5000 == 0 or i + 1 == files:
                progress(f"  populated {i + 1}/{files} files ({time.monotonic() - t0:.0f} s)")
        os.sync()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()
    tmp.rename(path)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="128G")
    ap.add_argument("--files", type=int_range(0, 1 << 32), default=30000)
    ap.add_argument("--file-size", default="4M")
    ap.add_argument("--nodesize", type=int_range(4096, 65536), default=16384)
    ap.add_argument("--repeat", type=int_range(1, 1000), default=3)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("btrfs_dump: needs root for the loop mount that populates the image", file=sys.stderr)
        return 2
    size, fsize = parse_size(args.size), parse_size(args.file_size)
    if args.files * fsize > size * 0.95:
        print("btrfs_dump: the files do not fit the image; lower --files", file=sys.stderr)
        return 2
    name = f"dump-{size >> 30}G-{args.files}x{fsize >> 20}M-n{args.nodesize}.img"
    img = cache_dir("images") / name
    if not img.exists():
        progress(f"building {img.name} (mkfs.btrfs + loop mount + fallocate)...")
        build_image(img, size, args.files, fsize, args.nodesize)
    fsoracle = str(Path(sys.executable).parent / "fsoracle")
    runs: dict[str, list[float]] = {"fsoracle": [], "fsoracle-all-items": [], "dump-tree": []}
    for r in range(args.repeat):
        runs["dump-tree"].append(timed(["btrfs", "inspect-internal", "dump-tree", str(img)]))
        runs["fsoracle"].append(timed([fsoracle, "btrfs", "dump", "--json", str(img)]))
        runs["fsoracle-all-items"].append(
            timed([fsoracle, "btrfs", "dump", "--json", "--tree", "all", str(img)])
        )
        progress(
            f"  run {r + 1}/{args.repeat}: dump-tree {runs['dump-tree'][-1]:.2f} s,"
            f" fsoracle {runs['fsoracle'][-1]:.2f} s,"
            f" fsoracle --tree all {runs['fsoracle-all-items'][-1]:.2f} s"
        )
    summary = json.loads(
        subprocess.run(
            [fsoracle, "btrfs", "dump", "--json", str(img)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    items = sum(t["items"] for t in summary["trees"])
    blocks = sum(t["nodes"] + t["leaves"] for t in summary["trees"])
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["fsoracle"] / med["dump-tree"]
    ratio_all = med["fsoracle-all-items"] / med["dump-tree"]
    print(
        f"\nimage: {img.name}: {blocks} tree blocks, {items} items, "
        f"{len(summary['block_groups'])} block groups\n"
    )
    print("| tool | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for k, v in runs.items():
        print(f"| {k} | {med[k]:.2f} | {min(v):.2f} | {max(v):.2f} |")
    print(f"\nfsoracle dump --json / dump-tree time ratio: {ratio:.2f}")
    print(f"fsoracle dump --json --tree all (every item decoded) / dump-tree: {ratio_all:.2f}")
    out = Path(args.out) / f"bench-dump-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(
        json.dumps(
            {
                "image": name,
                "blocks": blocks,
                "items": items,
                "runs": runs,
                "median": med,
                "ratio": ratio,
                "ratio_all_items": ratio_all,
            },
            indent=2,
        )
    )
    print(f"results in {out}/result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
