"""Block group items per leaf, as a kernel lays them out (the seed's "~680").

One target: ``mkfs.btrfs -O block-group-tree`` on a sparse image (host), the target mounts
it and ``fallocate``s most of it, which makes the kernel create one 1 GiB data block group
per GiB (no data is written, so the image stays a few MiB); after the unmount the host's
``btrfs inspect-internal dump-tree -t block-group`` lists the leaves the kernel wrote
(``leaf B items N free space F``). Appending keys in order, the kernel splits a full leaf in
two halves, so no leaf is left full; each leaf's capacity is read off its own numbers
instead: bytes per item = (nodesize - header - F) / N, capacity = N + F // bytes per item.
Every leaf must give the same two numbers, which is the check that nothing else shares the
leaves.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError, need_tool
from harness.etv2 import guest
from harness.etv2.config import vm_target
from harness.target import DiskSpec, TargetError, TargetSpec, open_target

# `struct btrfs_header` is 101 bytes (include/uapi/linux/btrfs_tree.h, 6.12)
HEADER_SIZE = 101
LEAF_LINE = re.compile(
    r"^leaf (\d+) items (\d+) free space (\d+) generation \d+ owner (\S+)$", re.MULTILINE
)


@dataclass
class LeafCapacity:
    kernel: str
    release: str
    nodesize: int
    block_groups: int
    leaves: list[tuple[int, int]] = field(default_factory=list)  # (items, free space)
    bytes_per_item: int = 0
    capacity: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "release": self.release,
            "nodesize": self.nodesize,
            "block_groups": self.block_groups,
            "leaves": [{"items": n, "free_space": f} for n, f in self.leaves],
            "bytes_per_item": self.bytes_per_item,
            "capacity": self.capacity,
        }


def leaves_of(dump: str) -> list[tuple[int, int]]:
    """(items, free space) of every leaf in a ``dump-tree`` listing."""
    return [(int(m.group(2)), int(m.group(3))) for m in LEAF_LINE.finditer(dump)]


def capacity_of(leaves: list[tuple[int, int]], nodesize: int) -> tuple[int, int]:
    """(bytes per item, capacity) shared by every leaf; UserError when the leaves disagree."""
    per = {(nodesize - HEADER_SIZE - f) / n for n, f in leaves if n}
    if len(per) != 1:
        raise UserError(f"the leaves do not share one item size: {sorted(per)}")
    (bpi,) = per
    if bpi != int(bpi):
        raise UserError(f"bytes per item is not whole: {bpi}")
    caps = {n + f // int(bpi) for n, f in leaves}
    if len(caps) != 1:
        raise UserError(f"the leaves do not share one capacity: {sorted(caps)}")
    return int(bpi), caps.pop()


def measure_leaf_capacity(
    target: TargetSpec | str,
    *,
    nodesize: int = 16384,
    block_groups: int = 400,
    workdir: Path | None = None,
) -> LeafCapacity:
    """The measurement on ``target`` (a :class:`TargetSpec`, or a kernel spec for a VM)."""
    spec = vm_target(target)
    mkfs, btrfs = need_tool("mkfs.btrfs"), need_tool("btrfs")
    with tempfile.TemporaryDirectory(prefix="fsoracle-leafcap-", dir=workdir) as tmp:
        img = Path(tmp) / "bg-tree.img"
        with open(img, "wb") as f:
            f.truncate((block_groups + 20) << 30)
        r = subprocess.run(
            [mkfs, "-q", "-f", "-n", str(nodesize), "-O", "block-group-tree", str(img)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise UserError(f"mkfs.btrfs failed: {r.stderr.strip()}")
        with open_target(spec, [DiskSpec(img, "btrfs")], name="leafcap") as t:
            d = t.disks[0]
            print(f"   fallocate {block_groups} GiB in the guest ({spec.kernel})", file=sys.stderr)
            g = t.mount(d)
            if g.status == 0:
                g = t.run(guest.fallocate_argv(d.mnt, block_groups), timeout=900, check=False)
            if g.status != 0:
                raise UserError(f"the guest's fallocate failed: {g.err.strip()[-500:]}")
            t.umount(d)
            faults = t.faults()
            if faults:
                raise TargetError(f"the kernel reported faults: {'; '.join(faults)}")
            release = t.release
        d_ = subprocess.run(
            [btrfs, "inspect-internal", "dump-tree", "-t", "block-group", str(img)],
            capture_output=True,
            text=True,
        )
        if d_.returncode != 0:
            raise UserError(f"dump-tree failed: {d_.stderr.strip()}")
    leaves = leaves_of(d_.stdout)
    if not leaves:
        raise UserError("dump-tree listed no leaf of the block group tree")
    bpi, cap = capacity_of(leaves, nodesize)
    return LeafCapacity(spec.kernel, release, nodesize, sum(n for n, _ in leaves), leaves, bpi, cap)
