"""Exact placement on the HOST kernel (not 6.1/6.12: the VM suite will run this on those):
a fresh filesystem, one fallocate of 64 blocks (no normalisation: the request fits one
extent, so ext4_alloc_file_blocks sets NO_NORMALIZE), goal = the first block of group 1
(ext4_inode_to_goal_block for a regular file whose inode is in flex-bg 0, delalloc mount).
The block the kernel picks, read back with debugfs, equals what the model of mballoc
predicts from the image as mkfs left it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.ext4 import constants as C
from model.ext4.freespace import ImageGroups
from model.ext4.image import Ext4Image
from model.ext4.mballoc import AllocRequest, Mballoc
from tests.ext4.images import loop_mounted
from tests.tools import require_root, require_tool, run

CASES = [
    # (mkfs args, blocks to fallocate)
    (["-b", "4096"], 64),
    (["-b", "1024"], 32),
    (["-b", "4096", "-O", "^metadata_csum,^uninit_bg"], 16),
]


def _predict(img: Path, blocks: int, kernel: str, rotational: bool) -> int:
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        groups = ImageGroups(im)
        geo = groups.geometry
        goal = geo.group_first_block_no(1 if geo.log_groups_per_flex >= 2 else 0)
        m = Mballoc(groups, kernel, rotational=rotational)
        flags = C.EXT4_MB_HINT_DATA | C.EXT4_MB_STREAM_ALLOC | C.EXT4_MB_HINT_NOPREALLOC
        a = m.alloc(AllocRequest(goal=goal, length=blocks, flags=flags))
        assert a is not None and a.length == blocks
        return a.block


@pytest.mark.parametrize("mkfs,blocks", CASES)
def test_host_kernel_places_where_the_model_says(
    tmp_path: Path, mkfs: list[str], blocks: int
) -> None:
    require_tool("mke2fs")
    require_tool("debugfs")
    require_root("a loop mount")
    img = tmp_path / "p.img"
    with open(img, "wb") as f:
        f.truncate(512 << 20)
    r = run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            *mkfs,
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            str(img),
        ]
    )
    assert r.returncode == 0, r.stderr
    bs = 4096 if "4096" in mkfs else 1024
    with loop_mounted(img) as mnt:
        # ext4_mb_init: s_mb_max_linear_groups is 4 on a rotational device, else 0
        rotational = _rotational(img)
        want61 = _predict(img, blocks, "6.1", rotational)
        want612 = _predict(img, blocks, "6.12", rotational)
        subprocess.run(["fallocate", "-l", str(blocks * bs), str(mnt / "f")], check=True)
        os.sync()
    out = run(["debugfs", "-R", "ex /f", str(img)])
    assert out.returncode == 0, out.stderr
    # debugfs ex: " 0/ 0   1/  1     0 -    63 33024 - 33087     64 Uninit"
    m = re.search(
        r"^\s*\d+/\s*\d+\s+\d+/\s*\d+\s+\d+\s*-\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)", out.stdout, re.M
    )
    assert m, out.stdout
    got = int(m.group(1))
    assert int(m.group(3)) == blocks
    assert want61 == want612 == got, (want61, want612, got, rotational, uname())


def _rotational(img: Path) -> bool:
    r = run(["losetup", "-j", str(img)])
    dev = r.stdout.split(":", 1)[0].strip()
    assert dev.startswith("/dev/loop"), r.stdout
    return Path(f"/sys/block/{Path(dev).name}/queue/rotational").read_text().strip() == "1"


def uname() -> str:
    return os.uname().release
