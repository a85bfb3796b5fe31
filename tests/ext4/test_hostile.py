"""Hostile images: each malformed superblock or descriptor field ends ``fsoracle ext4 dump``
(and ``check``) with one line naming the image and exit status 2, quickly and in little
memory; e2fsprogs refuses the same images (the verdict's source); the message is the
6.12 kernel's (``__ext4_fill_super`` and the functions it calls)."""

from __future__ import annotations

import re
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from harness.cli import main as cli_main
from model.blocksource import BytesSource, FileSource
from model.errors import FormatError
from model.ext4 import constants as C
from model.ext4.image import Ext4Image, ext4_group_desc_init, parse_ext4_superblock
from tests.ext4.ext4fuzz import ext4_fields, fix_ext4_csums
from tests.tools import require_tool, run


def field(buf: bytes | bytearray, name: str) -> tuple[int, str]:
    for off, ch, n in ext4_fields(buf):
        if n == name:
            return off, ch
    raise KeyError(name)


def get(buf: bytes | bytearray, name: str) -> int:
    off, ch = field(buf, name)
    return int(struct.unpack_from("<" + ch, buf, off)[0])


def put(buf: bytearray, name: str, value: int) -> None:
    off, ch = field(buf, name)
    struct.pack_into("<" + ch, buf, off, value)


def one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], path: Path) -> str:
    t = time.monotonic()
    rc = cli_main(argv)
    assert time.monotonic() - t < 5
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err, err
    return err


def e2fsck_refuses(path: Path) -> None:
    require_tool("e2fsck")
    r = run(["e2fsck", "-fn", str(path)], timeout=60)
    assert r.returncode != 0, r.stdout


# (field, value, the kernel's message); the superblock checksum is made right again after
# the edit, so e2fsck's refusal is about the field
SB_CASES = [
    ("s_inode_size", 0, "unsupported inode size: 0"),
    ("s_inode_size", 192, "unsupported inode size: 192"),
    ("s_inodes_per_group", 0xFFFFFFFF, "invalid inodes per group: 4294967295"),
    ("s_inodes_per_group", 0, "invalid inodes per group: 0"),
    ("s_inodes_per_group", 8 * 1024 + 8, "invalid inodes per group: 8200"),
    ("s_blocks_per_group", 0, "Can't find ext4 filesystem"),
    ("s_blocks_per_group", 8 * 1024 + 8, "#blocks per group too big: 8200"),
    ("s_clusters_per_group", 8184, "blocks per group (8192) and clusters per group (8184)"),
    ("s_log_block_size", 0xFFFFFFFF, "Invalid log block size: 4294967295"),
    ("s_log_block_size", 7, "Invalid log block size: 7"),
    ("s_log_cluster_size", 30, "Invalid log cluster size: 30"),
    ("s_log_cluster_size", 1, "fragment/cluster size (2048) != block size (1024)"),
    ("s_first_data_block", 16384, "first data block 16384 is beyond end of filesystem"),
    ("s_first_data_block", 0, "first data block is 0 with a 1k block and cluster size"),
    ("s_desc_size", 48, "unsupported descriptor size 48"),
    ("s_desc_size", 2048, "unsupported descriptor size 2048"),
    ("s_desc_size", 32, "unsupported descriptor size 32"),
    ("s_first_ino", 5, "invalid first ino: 5"),
    ("s_inodes_count", 4096 + 8, "inodes count not valid: 4104 vs 4096"),
    ("s_reserved_gdt_blocks", 300, "Number of reserved GDT blocks insanely large: 300"),
    ("s_blocks_count_lo", (64 << 30) // 1024, "exceeds size of device (16384 blocks)"),
]


@pytest.mark.parametrize(("name", "value", "message"), SB_CASES)
def test_bad_superblock_field(  # type: ignore[no-untyped-def]
    small_ext4, tmp_path: Path, capsys, name: str, value: int, message: str
) -> None:
    buf = bytearray(small_ext4("1k"))  # 16 MiB, 1 KiB blocks, 64bit, 2 groups of 8192
    put(buf, name, value)
    fix_ext4_csums(buf)
    img = tmp_path / "bad.img"
    img.write_bytes(buf)
    with FileSource(img) as src, pytest.raises(FormatError, match=re.escape(message)):
        Ext4Image.open(src)
    for cmd in ("dump", "check"):
        err = one_line_exit_2(capsys, ["ext4", cmd, str(img)], img)
        assert message in err
    e2fsck_refuses(img)


def test_claimed_size_costs_no_memory(small_ext4, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A 16 MiB image whose superblock claims 64 GiB, and one claiming 2^40 blocks through
    s_blocks_count_hi: refused at once, without memory following the claim."""
    for lo, hi in (((64 << 30) // 1024, 0), (0, 1 << 8)):
        buf = bytearray(small_ext4("1k"))
        put(buf, "s_blocks_count_lo", lo)
        put(buf, "s_blocks_count_hi", hi)
        fix_ext4_csums(buf)
        img = tmp_path / "claim.img"
        img.write_bytes(buf)
        tracemalloc.start()
        try:
            with FileSource(img) as src, pytest.raises(FormatError, match="exceeds size of device"):
                Ext4Image.open(src)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20
        one_line_exit_2(capsys, ["ext4", "dump", str(img)], img)
        e2fsck_refuses(img)


def test_memory_does_not_follow_group_count(small_ext4) -> None:  # type: ignore[no-untyped-def]
    """Opening an image reads no descriptor into memory (they are decoded per access)."""
    buf = small_ext4("4k-g4096")
    tracemalloc.start()
    try:
        im = Ext4Image.open(BytesSource(buf))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10
    assert len(im.descs) == 4 and im.descs[3].group == 3 and im.descs[-1].group == 3


def test_bitmap_block_past_the_end(small_ext4, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    buf = bytearray(small_ext4("1k"))
    put(buf, "bg[0].bg_block_bitmap_lo", 16384 + 5)
    fix_ext4_csums(buf)
    img = tmp_path / "bb.img"
    img.write_bytes(buf)
    err = one_line_exit_2(capsys, ["ext4", "dump", str(img)], img)
    assert "Invalid block bitmap block 16389 in block_group 0" in err
    # the checker names it (ext4_check_descriptors) and goes on: a finding, exit 1
    assert cli_main(["ext4", "check", str(img)]) == 1
    assert "Block bitmap for group 0 not in group (block 16389)!" in capsys.readouterr().out
    e2fsck_refuses(img)


def test_descriptor_table_past_the_end(small_ext4, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    buf = small_ext4("1k")
    raw = buf[C.SUPERBLOCK_OFFSET : C.SUPERBLOCK_OFFSET + C.SUPERBLOCK_SIZE]
    sb = parse_ext4_superblock(raw)  # no device size: the descriptor check is the one that fails
    with pytest.raises(FormatError, match="can't read group descriptor 0"):
        ext4_group_desc_init(BytesSource(buf[:2048]), sb)
    # a truncated file: the block count check comes first, as in the kernel
    img = tmp_path / "short.img"
    img.write_bytes(buf[:2048])
    err = one_line_exit_2(capsys, ["ext4", "dump", str(img)], img)
    assert "exceeds size of device (2 blocks)" in err
    e2fsck_refuses(img)


def test_first_meta_bg_too_large(small_ext4, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    buf = bytearray(small_ext4("1k-metabg"))
    put(buf, "s_first_meta_bg", 1000)
    fix_ext4_csums(buf)
    img = tmp_path / "metabg.img"
    img.write_bytes(buf)
    err = one_line_exit_2(capsys, ["ext4", "dump", str(img)], img)
    assert "first meta block group too large: 1000 (group descriptor block count 1)" in err
    e2fsck_refuses(img)


def test_log_groups_per_flex_absurd(small_ext4, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """s_log_groups_per_flex 200: ext4_fill_flex_info ignores it (no flex groups); e2fsprogs
    refuses the superblock. Either way nothing may hang or blow up: dump ends quickly and
    check warns (a warning, not a finding: the kernel mounts it)."""
    buf = bytearray(small_ext4("1k"))
    put(buf, "s_log_groups_per_flex", 200)
    fix_ext4_csums(buf)
    img = tmp_path / "flex.img"
    img.write_bytes(buf)
    t = time.monotonic()
    assert cli_main(["ext4", "dump", str(img)]) == 0
    assert "flex_bg size 0" in capsys.readouterr().out
    assert cli_main(["ext4", "check", str(img)]) == 0
    out = capsys.readouterr().out
    assert "warning: [flex-size]" in out and "no error found" in out
    assert time.monotonic() - t < 5
    e2fsck_refuses(img)


def test_bigalloc_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    require_tool("mke2fs")
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    r = run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "bigalloc", "-C", "16384", str(img)])
    assert r.returncode == 0, r.stderr
    for cmd in ("dump", "check"):
        err = one_line_exit_2(capsys, ["ext4", cmd, str(img)], img)
        assert "bigalloc (cluster size 16384 bytes) is not supported" in err
