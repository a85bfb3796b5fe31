#!/usr/bin/env python3
"""``make bench``: every benchmark and seed reproduction with its default preset.

Budget: 30 minutes on 2 cores. Each entry is run as its own process; the summary at the end
says which ran, how long each took, and where its results are.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, argv after the interpreter)
BENCHES: list[tuple[str, list[str]]] = [
    ("btrfs dump vs dump-tree (128 GiB image)", [str(HERE / "btrfs_dump.py")]),
    ("btrfs mkfs vs host kernel (1 TiB, 4 KiB nodes)", [str(HERE / "mkfs.py")]),
    ("ext4 allocators at the free-space tree RFC's scale", [str(HERE / "ext4_alloc_sim.py")]),
    (
        "btrfs mount timing in a VM, 256 GiB, three layouts (fsoracle bench mount)",
        ["-m", "harness.cli", "bench", "mount", "--preset", "default"],
    ),
    ("differential examples per VM-minute (TCG, 10 ops each)", [str(HERE / "differential.py")]),
    (
        "hot data relocation in a VM, 1 GiB, SSD = 20 % (fsoracle hot bench)",
        ["-m", "harness.cli", "hot", "bench", "--preset", "hot_bench"],
    ),
]


def main() -> int:
    rows = []
    failed = 0
    for name, argv in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, *argv])
        rows.append((name, rc, time.monotonic() - t0))
        failed += rc != 0
    print("\n| benchmark | status | wall s |\n|---|---|---:|")
    for name, rc, dt in rows:
        print(f"| {name} | {'ok' if rc == 0 else f'FAILED ({rc})'} | {dt:.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
