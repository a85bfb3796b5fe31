"""Real ext4 images made at test time: ``mke2fs`` variants, some fragmented through the host
kernel (loop mount) with a seeded workload. ``dumpe2fs`` is the oracle for their free space.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.tools import run


@dataclass(frozen=True)
class Variant:
    size: str
    mkfs: list[str]  # extra mke2fs arguments
    fragment: bool = False  # fill and punch through the host kernel


VARIANTS: dict[str, Variant] = {
    # 4 KiB blocks, ext4 defaults (64bit, flex_bg 16, metadata_csum, uninit groups)
    "4k-default": Variant("512M", ["-b", "4096"]),
    # 1 KiB blocks: first_data_block 1, 8192 blocks per group
    "1k-default": Variant("96M", ["-b", "1024"]),
    # no 64bit: 32-byte descriptors; no flex_bg: bitmaps in their own groups
    "4k-32bit-noflex": Variant("256M", ["-b", "4096", "-O", "^64bit,^flex_bg"]),
    # gdt_csum instead of metadata_csum (uninit groups still honoured)
    "1k-gdtcsum": Variant("64M", ["-b", "1024", "-O", "^metadata_csum,uninit_bg"]),
    # no checksum feature: BLOCK_UNINIT never set, every bitmap read from disk
    "4k-nocsum": Variant("256M", ["-b", "4096", "-O", "^metadata_csum,^uninit_bg"]),
    # meta_bg descriptors
    "1k-metabg": Variant("64M", ["-b", "1024", "-O", "meta_bg,^resize_inode"]),
    # flex_bg of 4 groups, small groups (-g) so there are many
    "4k-flex4-g8192": Variant("256M", ["-b", "4096", "-G", "4", "-g", "8192"]),
    # fragmented through the host kernel
    "4k-frag": Variant("256M", ["-b", "4096"], fragment=True),
    "1k-frag": Variant("64M", ["-b", "1024", "-O", "^64bit"], fragment=True),
    "4k-frag-nocsum-noflex": Variant(
        "192M", ["-b", "4096", "-O", "^metadata_csum,^uninit_bg,^flex_bg"], fragment=True
    ),
}

FAST = ["4k-default", "1k-default", "4k-32bit-noflex", "1k-gdtcsum", "1k-metabg", "4k-frag"]


def _run(cmd: list[str]) -> None:
    r = run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


@contextlib.contextmanager
def loop_mounted(img: Path) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="fsoracle-ext4-"))
    _run(["mount", "-o", "loop", str(img), str(mnt)])
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        os.rmdir(mnt)


def fragment_through_kernel(mnt: Path, seed: int = 7) -> None:
    """Seeded workload: fill most of the filesystem with files of random sizes, then delete
    every other one and punch holes in some of the rest, so free space is scattered."""
    rng = random.Random(seed)
    st = os.statvfs(mnt)
    budget = int(st.f_bavail * st.f_frsize * 0.8)
    files: list[Path] = []
    i = 0
    while budget > 0:
        size = rng.choice([4096, 12288, 65536, 200_000, 1_000_000])
        p = mnt / f"f{i:05d}"
        with open(p, "wb") as f:
            f.write(rng.randbytes(64) * (size // 64))
        files.append(p)
        budget -= size
        i += 1
    os.sync()
    for j, p in enumerate(files):
        if j % 2 == 0:
            p.unlink()
        elif j % 5 == 1 and p.stat().st_size >= 65536:
            # punch a hole in the middle
            fd = os.open(p, os.O_RDWR)
            try:
                subprocess.run(
                    ["fallocate", "-p", "-o", "16384", "-l", "16384", str(p)], check=True
                )
            finally:
                os.close(fd)
    os.sync()


def make_image(name: str, path: Path) -> Path:
    v = VARIANTS[name]
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(_size(v.size))
    _run(["mke2fs", "-q", "-F", "-t", "ext4", *v.mkfs, str(path)])
    if v.fragment:
        with loop_mounted(path) as mnt:
            fragment_through_kernel(mnt)
    return path


def _size(s: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG])", s)
    assert m
    return int(m.group(1)) << {"K": 10, "M": 20, "G": 30}[m.group(2)]


@dataclass
class DumpGroup:
    group: int
    first: int
    last: int
    free_count: int
    free_extents: list[tuple[int, int]]  # (start, length), absolute
    flags: list[str]


def parse_dumpe2fs(text: str) -> list[DumpGroup]:
    """Per group: block range, flags, the "N free blocks" count and the "Free blocks:"
    list (a-b ranges and single blocks)."""
    groups: list[DumpGroup] = []
    cur: DumpGroup | None = None
    for line in text.splitlines():
        m = re.match(r"Group (\d+): \(Blocks (\d+)-(\d+)\)(?:.*\[(.*)\])?", line)
        if m:
            flags = [f.strip() for f in (m.group(4) or "").split(",") if f.strip()]
            cur = DumpGroup(int(m.group(1)), int(m.group(2)), int(m.group(3)), -1, [], flags)
            groups.append(cur)
            continue
        if cur is None:
            continue
        m = re.match(r"\s+(\d+) free (?:blocks|clusters),", line)
        if m:
            cur.free_count = int(m.group(1))
            continue
        m = re.match(r"\s+Free blocks: ?(.*)$", line)
        if m:
            body = m.group(1).strip()
            for part in filter(None, (p.strip() for p in body.split(","))):
                if "-" in part:
                    a, b = part.split("-")
                    cur.free_extents.append((int(a), int(b) - int(a) + 1))
                else:
                    cur.free_extents.append((int(part), 1))
    return groups
