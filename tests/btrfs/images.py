"""Real btrfs images made at test time by mkfs.btrfs (btrfs-progs 6.14) and by the host
kernel through a loop mount. These are the differential tests' inputs: every expected
value about them comes from btrfs-progs, never from fsoracle.

``VARIANTS`` names each image; :func:`make_image` builds one into a path.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SIZE = 1 << 30  # 1 GiB sparse

# name -> mkfs.btrfs options (after -f -q)
MKFS_VARIANTS: dict[str, list[str]] = {
    "default": [],
    "nodesize-4k": ["-n", "4096"],
    "nodesize-64k": ["-n", "65536"],
    "bg-tree": ["-O", "block-group-tree"],
    "holes": ["-O", "^no-holes"],
    "csum-crc32c": ["--csum", "crc32c"],
    "csum-xxhash": ["--csum", "xxhash"],
    "csum-sha256": ["--csum", "sha256"],
    "csum-blake2": ["--csum", "blake2"],
    "meta-dup": ["-m", "dup"],
    "meta-single": ["-m", "single"],
    "mixed-bg": ["-O", "mixed-bg", "-n", "4096"],
}
# images with content: a --rootdir tree, and files written by the host kernel
CONTENT_VARIANTS = ["rootdir", "rootdir-4k", "kernel", "kernel-bg-tree"]
VARIANTS = list(MKFS_VARIANTS) + CONTENT_VARIANTS


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


def populate_tree(root: Path, seed: int = 1) -> None:
    """A directory tree of files of varied sizes: empty, inline-sized, sector-unaligned,
    multi-megabyte, sparse; subdirectories, symlinks, a hard link, an xattr."""
    rng = random.Random(seed)
    sizes = [
        0,
        1,
        100,
        2047,
        2048,
        3000,
        4095,
        4096,
        4097,
        12288,
        65536,
        131072 + 5,
        1 << 20,
        (3 << 20) + 17,
        8 << 20,
    ]
    for d in range(3):
        sub = root / f"dir{d}" / "nested"
        sub.mkdir(parents=True)
    for i, size in enumerate(sizes):
        target = root / f"dir{i % 3}" / f"file{i}.bin"
        # compressible and incompressible halves
        data = bytes(rng.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1)
        target.write_bytes(data[:size])
    for i in range(40):
        (root / "dir0" / "nested" / f"small{i}").write_text(f"small file {i}\n" * (i + 1))
    sparse = root / "dir1" / "sparse.img"
    with open(sparse, "wb") as f:
        f.seek(5 << 20)
        f.write(b"tail")
    os.symlink("../dir0/file0.bin", root / "dir1" / "link")
    os.link(root / "dir2" / "file2.bin", root / "dir2" / "hardlink")
    with contextlib.suppress(OSError):
        os.setxattr(root / "dir0" / "file3.bin", "user.fsoracle", b"value")


@contextlib.contextmanager
def loop_mounted(img: Path, opts: str = "") -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="fsoracle-mnt-"))
    cmd = ["mount", "-o", "loop" + ("," + opts if opts else ""), str(img), str(mnt)]
    _run(cmd)
    try:
        yield mnt
    finally:
        _run(["umount", str(mnt)])
        mnt.rmdir()


def write_through_kernel(mnt: Path) -> None:
    """Files written by the host kernel: plain, compressed (zstd), reflinked (shared
    extents: several refs), a snapshot (shared tree blocks), deleted files, preallocation,
    many small files for a multi-level fs tree."""
    (mnt / "tree").mkdir()
    populate_tree(mnt / "tree", seed=2)
    for i in range(600):
        (mnt / "tree" / f"many-{i:04d}").write_bytes(os.urandom(64) * (i % 7 + 1))
    big = mnt / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 6)
    _run(["cp", "--reflink=always", str(big), str(mnt / "big.reflink")])
    _run(["fallocate", "-l", "16M", str(mnt / "prealloc")])
    _run(["btrfs", "property", "set", str(mnt / "tree"), "compression", "zstd"])
    (mnt / "tree" / "compressed.txt").write_text("compress me please\n" * 20000)
    _run(["btrfs", "subvolume", "create", str(mnt / "subvol")])
    (mnt / "subvol" / "inside").write_bytes(b"x" * 10000)
    _run(["btrfs", "subvolume", "snapshot", str(mnt), str(mnt / "snap")])
    for i in range(0, 600, 3):
        (mnt / "tree" / f"many-{i:04d}").unlink()
    (mnt / "after-snapshot").write_bytes(b"y" * 50000)
    os.sync()


def make_image(name: str, path: Path, size: int = SIZE) -> Path:
    """Build the image ``name`` at ``path``."""
    with open(path, "wb") as f:
        f.truncate(size)
    if name in MKFS_VARIANTS:
        _run(["mkfs.btrfs", "-f", "-q", *MKFS_VARIANTS[name], str(path)])
    elif name in ("rootdir", "rootdir-4k"):
        src = Path(tempfile.mkdtemp(prefix="fsoracle-rootdir-"))
        populate_tree(src)
        extra = ["-n", "4096"] if name == "rootdir-4k" else []
        _run(["mkfs.btrfs", "-f", "-q", *extra, "--rootdir", str(src), str(path)])
        _run(["rm", "-rf", str(src)])
    elif name in ("kernel", "kernel-bg-tree"):
        extra = ["-O", "block-group-tree"] if name == "kernel-bg-tree" else []
        _run(["mkfs.btrfs", "-f", "-q", "-n", "4096", *extra, str(path)])
        with loop_mounted(path) as mnt:
            write_through_kernel(mnt)
    else:
        raise KeyError(name)
    return path
