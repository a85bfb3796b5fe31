"""The host side of the ext4 guest run: what the kernel did, read back from the images
(``debugfs`` extents, our reader's free extents), and where the mballoc model of a kernel
version says the same allocation goes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from model.blocksource import FileSource
from model.ext4.freespace import ImageGroups
from model.ext4.image import Ext4Image
from model.ext4.mballoc import Allocation, Mballoc
from model.ext4.request import ext4_alloc_file_blocks


def kernel_version(release: str) -> str:
    """``6.12.117+deb12-cloud-amd64`` → ``6.12``: the model version for a booted kernel."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"release {release!r}")
    v = f"{m.group(1)}.{m.group(2)}"
    if v not in ("6.1", "6.12"):
        raise ValueError(f"release {release!r}: the model knows 6.1 and 6.12")
    return v


_EX_RE = re.compile(
    r"^\s*(\d+)/\s*(\d+)\s+\d+/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)",
    re.M,
)


def debugfs_extents(img: Path, path: str = "/f") -> list[tuple[int, int, int]]:
    """``debugfs -R "ex PATH"``: (logical, physical, length) of each leaf extent.

    Line format: ``level/max entry/max lstart - lend pstart - pend length [Uninit]``, e.g.
    `` 0/ 0   1/  1     0 -    63 33024 - 33087     64 Uninit``; leaves are the lines whose
    level is the tree's depth.
    """
    r = subprocess.run(
        ["debugfs", "-R", f"ex {path}", str(img)], capture_output=True, text=True, check=True
    )
    return [(int(m[3]), int(m[5]), int(m[7])) for m in _EX_RE.finditer(r.stdout) if m[1] == m[2]]


def inode_group(img: Path, ino: int) -> int:
    with FileSource(img) as src:
        return (ino - 1) // Ext4Image.open(src).sb.inodes_per_group


def predict_placement(
    before: Path, blocks: int, ino_group: int, kernel: str, rotational: bool
) -> tuple[list[Allocation], list[tuple[int, int, int]]]:
    """Where ``kernel``'s mballoc puts ``fallocate`` of ``blocks`` blocks of a new file whose
    inode is in ``ino_group``, on the filesystem in ``before`` just mounted: the
    allocations and the file's extents (logical, physical, length)."""
    with FileSource(before) as src:
        groups = ImageGroups(Ext4Image.open(src))
        m = Mballoc(groups, kernel, rotational=rotational)
        return ext4_alloc_file_blocks(m, blocks, ino_group)


def free_extents(img: Path) -> dict[int, list[tuple[int, int]]]:
    """Our reader's free extents per group (absolute block, length)."""
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        return {g: list(im.group_free_extents(g)) for g in range(im.groups_count)}


def big_request(img: Path) -> int:
    """A request no free extent of ``img`` holds: one and a half times the longest (so
    mballoc's best-found and its later criteria decide, and the file gets more than one
    extent), below a group's size."""
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        longest = max(
            (n for g in range(im.groups_count) for _, n in im.group_free_extents(g)), default=1
        )
        return min(longest + longest // 2 + 1, im.sb.blocks_per_group - 1)
