"""The fuzzer helpers (tests/ext4/ext4fuzz.py): field offsets as the headers and debugfs
place them, bitmap locations as dumpe2fs prints them, checksums e2fsck accepts."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from tests.ext4.ext4fuzz import ext4_bitmap_blocks, ext4_fields, fix_ext4_csums
from tests.ext4.test_hostile import field, get, put
from tests.tools import require_tool, run

# the offset comments of struct ext4_super_block (fs/ext4/ext4.h; e2fsprogs' ext2_fs.h has
# the same layout), plus s_checksum in the last four bytes of the 1024
HEADER_OFFSETS = {
    "s_inodes_count": 0x00,
    "s_free_inodes_count": 0x10,
    "s_blocks_per_group": 0x20,
    "s_wtime": 0x30,
    "s_lastcheck": 0x40,
    "s_def_resuid": 0x50,
    "s_feature_incompat": 0x60,
    "s_algorithm_usage_bitmap": 0xC8,
    "s_journal_inum": 0xE0,
    "s_default_mount_opts": 0x100,
    "s_blocks_count_hi": 0x150,
    "s_checksum": 0x3FC,
}

# superblock fields debugfs's set_super_value takes as plain numbers and that do not move
# anything debugfs rewrites on close: debugfs name -> (our name, value)
SSV = {
    "free_inodes_count": ("s_free_inodes_count", 0x01020304),
    "r_blocks_count_lo": ("s_r_blocks_count_lo", 0x05060708),
    "mnt_count": ("s_mnt_count", 0x090A),
    "max_mnt_count": ("s_max_mnt_count", 0x0B0C),
    "checkinterval": ("s_checkinterval", 0x0D0E0F10),
    "def_resuid": ("s_def_resuid", 0x1112),
    "def_resgid": ("s_def_resgid", 0x1314),
    "prealloc_blocks": ("s_prealloc_blocks", 0x15),
    "prealloc_dir_blocks": ("s_prealloc_dir_blocks", 0x16),
    "journal_dev": ("s_journal_dev", 0x1718191A),
    "jnl_blocks[5]": ("s_jnl_blocks[5]", 0x1B1C1D1E),
    "raid_stride": ("s_raid_stride", 0x1F20),
    "mmp_interval": ("s_mmp_update_interval", 0x2122),
    "mmp_block": ("s_mmp_block", 0x232425262728292A),
    "raid_stripe_width": ("s_raid_stripe_width", 0x2B2C2D2E),
    "kbytes_written": ("s_kbytes_written", 0x2F30313233343536),
    "snapshot_r_blocks_count": ("s_snapshot_r_blocks_count", 0x3738393A3B3C3D3E),
    "error_count": ("s_error_count", 0x3F404142),
    "first_error_block": ("s_first_error_block", 0x434445464748494A),
    "last_error_line": ("s_last_error_line", 0x4B4C4D4E),
    "usr_quota_inum": ("s_usr_quota_inum", 0x4F505152),
    "backup_bgs[1]": ("s_backup_bgs[1]", 0x53545556),
    "encrypt_algos[2]": ("s_encrypt_algos[2]", 0x57),
    "lpf_ino": ("s_lpf_ino", 0x58595A5B),
    "orphan_file_inum": ("s_orphan_file_inum", 0x5C5D5E5F),
}
SET_BG = {
    "free_inodes_count_lo": ("bg_free_inodes_count_lo", 0x6162),
    "used_dirs_count_hi": ("bg_used_dirs_count_hi", 0x6364),
    "itable_unused_hi": ("bg_itable_unused_hi", 0x6566),
    "exclude_bitmap_lo": ("bg_exclude_bitmap_lo", 0x6768696A),
    "exclude_bitmap_hi": ("bg_exclude_bitmap_hi", 0x6B6C6D6E),
    "inode_bitmap_csum_hi": ("bg_inode_bitmap_csum_hi", 0x6F70),
}


def test_superblock_offsets_as_the_header_says(small_ext4) -> None:  # type: ignore[no-untyped-def]
    fields = {name: (off, ch) for off, ch, name in ext4_fields(small_ext4("1k"))}
    for name, off in HEADER_OFFSETS.items():
        assert fields[name][0] == 1024 + off, name
    assert fields["s_inodes_count"] == (1024, "I")
    assert fields["s_magic"] == (1024 + 0x38, "H")
    # 2 groups of 64-byte descriptors in block 2 (1 KiB blocks: superblock in block 1)
    assert fields["bg[0].bg_block_bitmap_lo"] == (2048, "I")
    assert fields["bg[1].bg_checksum"] == (2048 + 64 + 0x1E, "H")
    assert fields["bg[1].bg_block_bitmap_csum_hi"] == (2048 + 64 + 0x38, "H")
    assert "bg[2].bg_flags" not in fields
    # 32-byte descriptors have no _hi halves
    small = {name for _, _, name in ext4_fields(small_ext4("4k-32bit-nocsum"))}
    assert "bg[0].bg_checksum" in small and "bg[0].bg_block_bitmap_hi" not in small


def test_offsets_agree_with_debugfs(small_ext4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """debugfs set_super_value / set_bg write each value where ext4_fields says the field is,
    with the width it says."""
    require_tool("debugfs")
    img = tmp_path / "d.img"
    img.write_bytes(small_ext4("1k"))
    script = tmp_path / "cmds"
    lines = [f"ssv {k} {v}" for k, (_, v) in SSV.items()]
    lines += [f"set_bg 1 {k} {v}" for k, (_, v) in SET_BG.items()]
    script.write_text("\n".join(lines) + "\n")
    r = run(["debugfs", "-w", "-f", str(script), str(img)])
    assert r.returncode == 0 and "Invalid" not in r.stderr and "invalid" not in r.stderr, r.stderr
    buf = img.read_bytes()
    for name, value in SSV.values():
        assert get(buf, name) == value, name
    for name, value in SET_BG.values():
        assert get(buf, f"bg[1].{name}") == value, name


def test_bitmap_blocks_as_dumpe2fs_prints_them(small_ext4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    require_tool("dumpe2fs")
    for name, bs in (("1k-gdtcsum-noflex", 1024), ("4k-g4096", 4096), ("1k-metabg", 1024)):
        buf = small_ext4(name)
        img = tmp_path / f"{name}.img"
        img.write_bytes(buf)
        text = run(["dumpe2fs", str(img)]).stdout
        blocks = [int(b) for b in re.findall(r"^\s+Block bitmap at (\d+)", text, re.M)]
        assert blocks
        assert ext4_bitmap_blocks(buf) == [(b * bs, bs) for b in dict.fromkeys(blocks)]


def _e2fsck(img: Path, buf: bytes | bytearray) -> tuple[int, str]:
    img.write_bytes(buf)
    r = run(["e2fsck", "-fn", str(img)], timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_fix_csums_satisfies_e2fsck(small_ext4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An edited descriptor: e2fsck reports its checksum (crc32c and crc16); after
    fix_ext4_csums, no checksum complaint is left (only the count we changed). An edited
    superblock (metadata_csum): e2fsck rejects its checksum; after the fix, e2fsck is clean.
    A flipped bitmap bit: after fix_ext4_csums(bitmaps=True) no bitmap checksum complaint."""
    require_tool("e2fsck")
    img = tmp_path / "e.img"
    for name in ("1k", "1k-gdtcsum-noflex"):
        buf = bytearray(small_ext4(name))
        put(buf, "bg[1].bg_free_blocks_count_lo", get(buf, "bg[1].bg_free_blocks_count_lo") - 1)
        rc, text = _e2fsck(img, buf)
        assert "Group descriptor 1 checksum is" in text, text
        fix_ext4_csums(buf)
        rc, text = _e2fsck(img, buf)
        assert "checksum" not in text.lower(), text
        assert "Free blocks count wrong for group #1" in text

    buf = bytearray(small_ext4("1k"))
    put(buf, "s_mnt_count", get(buf, "s_mnt_count") + 1)
    rc, text = _e2fsck(img, buf)
    assert "Superblock checksum does not match" in text, text
    fix_ext4_csums(buf)
    rc, text = _e2fsck(img, buf)
    assert rc == 0, text

    buf = bytearray(small_ext4("1k"))
    off, _ = ext4_bitmap_blocks(buf)[0]
    buf[off + 100] ^= 1
    rc, text = _e2fsck(img, buf)
    assert "block bitmap does not match checksum" in text, text
    fix_ext4_csums(buf, bitmaps=True)
    rc, text = _e2fsck(img, buf)
    assert "does not match checksum" not in text and "Block bitmap differences" in text, text


def test_fields_of_a_broken_superblock() -> None:
    """Garbage still gets the superblock's fields (no descriptors) and no bitmaps."""
    buf = bytearray(8192)
    fields = ext4_fields(buf)
    assert len(fields) == len([f for f in fields if not f[2].startswith("bg[")]) > 100
    assert ext4_bitmap_blocks(buf) == []
    fix_ext4_csums(buf)  # no metadata_csum: nothing to do, nothing raised
    assert buf == bytearray(8192)
    assert struct.calcsize("<" + field(buf, "s_kbytes_written")[1]) == 8
