"""``fsoracle ext4 check`` against ``e2fsck -fn``: the same verdict (clean / not clean) on
fresh mke2fs images and on mutated ones; the expected verdict is e2fsck's exit status, and
where our message is e2fsck's pass-5 text, the very line e2fsck printed.

The checksum algorithms are pinned by mke2fs itself (recomputing every checksum of a fresh
image changes no byte) and by the published check values of CRC-16/ARC and CRC-32C."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli import main as cli_main
from model.ext4.csum import crc16, ext4_chksum
from tests.ext4.conftest import SMALL
from tests.ext4.ext4fuzz import ext4_bitmap_blocks, fix_ext4_csums
from tests.ext4.test_hostile import field, get, put
from tests.tools import require_tool, run


def e2fsck(img: Path) -> tuple[int, str]:
    require_tool("e2fsck")
    r = run(["e2fsck", "-fn", str(img)], timeout=60)
    return r.returncode, r.stdout + r.stderr


def ours(img: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli_main(["ext4", "check", str(img)])
    return rc, capsys.readouterr().out


def test_crc_check_values() -> None:
    # CRC-16/ARC of "123456789" is 0xBB3D; CRC-16/MODBUS (init 0xFFFF) 0x4B37; CRC-32C
    # is 0xE3069283 (standard: init and final inversion around the kernel's raw update)
    assert crc16(0, b"123456789") == 0xBB3D
    assert crc16(0xFFFF, b"123456789") == 0x4B37
    assert ext4_chksum(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xE3069283


@pytest.mark.parametrize("name", sorted(SMALL))
def test_clean_images_agree(small_ext4, tmp_path: Path, capsys, name: str) -> None:  # type: ignore[no-untyped-def]
    buf = small_ext4(name)
    again = bytearray(buf)
    fix_ext4_csums(again, bitmaps=True)
    assert again == buf  # our checksums are mke2fs's
    img = tmp_path / f"{name}.img"
    img.write_bytes(buf)
    rc, text = e2fsck(img)
    assert rc == 0, text
    rc, out = ours(img, capsys)
    assert rc == 0, out
    assert out.splitlines()[-1].endswith("no error found")
    assert cli_main(["ext4", "check", str(img), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == 1 and doc["ok"] is True and doc["findings"] == []
    r = run(["dumpe2fs", str(img)])
    assert doc["groups_checked"] == len(re.findall(r"^Group \d+:", r.stdout, re.M)) > 0


def _desc_free(buf: bytearray, g: int, delta: int) -> None:
    name = f"bg[{g}].bg_free_blocks_count_lo"
    put(buf, name, get(buf, name) + delta)


def _flip(name: str, bit: int) -> Callable[[bytearray], None]:
    def f(buf: bytearray) -> None:
        buf[field(buf, name)[0]] ^= 1 << bit

    return f


def _then_fix(f: Callable[[bytearray], None], bitmaps: bool = False) -> Callable[[bytearray], None]:
    def g(buf: bytearray) -> None:
        f(buf)
        fix_ext4_csums(buf, bitmaps=bitmaps)

    return g


def _bitmap_bit(g: int) -> Callable[[bytearray], None]:
    """Flip a bit in the middle of the first bitmap bytes (clusters-per-group / 16) of the
    g-th block bitmap on disk."""

    def f(buf: bytearray) -> None:
        off, _ = ext4_bitmap_blocks(buf)[g]
        buf[off + get(buf, "s_clusters_per_group") // 16] ^= 0x10

    return f


def _move(part: str, g: int, to: Callable[[bytearray], int]) -> Callable[[bytearray], None]:
    def f(buf: bytearray) -> None:
        put(buf, f"bg[{g}].bg_{part}_lo", to(buf))
        fix_ext4_csums(buf)

    return f


def _past_end(buf: bytearray) -> int:
    return get(buf, "s_blocks_count_lo") + 10


def _two_groups_on(part: str, g: int) -> Callable[[bytearray], int]:
    return lambda buf: get(buf, f"bg[{g}].bg_{part}_lo") + 2 * get(buf, "s_blocks_per_group")


def _clear_own_bitmap_bit(buf: bytearray) -> None:
    """Group 0's block bitmap says its own block is free; the counts and checksums agree."""
    bb = get(buf, "bg[0].bg_block_bitmap_lo")
    rel = bb - get(buf, "s_first_data_block")
    bs = 1024 << get(buf, "s_log_block_size")
    buf[bb * bs + rel // 8] &= ~(1 << (rel % 8)) & 0xFF
    _desc_free(buf, 0, 1)
    put(buf, "s_free_blocks_count_lo", get(buf, "s_free_blocks_count_lo") + 1)
    fix_ext4_csums(buf, bitmaps=True)


# (image, mutation, a code our check must report); every one: e2fsck -fn exits non-zero
MUTATIONS: dict[str, tuple[str, Callable[[bytearray], None], str]] = {
    "free-count-csum-fixed": (
        "1k",
        _then_fix(lambda b: _desc_free(b, 1, -7)),
        "group-free-count",
    ),
    "free-count-crc16-fixed": (
        "1k-gdtcsum-noflex",
        _then_fix(lambda b: _desc_free(b, 1, -7)),
        "group-free-count",
    ),
    "free-count-nocsum": ("4k-32bit-nocsum", lambda b: _desc_free(b, 0, 3), "group-free-count"),
    "desc-byte-flipped-csum-fixed": (
        "4k-g4096",
        _then_fix(_flip("bg[0].bg_free_blocks_count_lo", 2)),
        "group-free-count",
    ),
    "desc-byte-flipped-crc32c": ("1k", _flip("bg[0].bg_used_dirs_count_lo", 0), "desc-csum"),
    "desc-byte-flipped-crc16": (
        "1k-gdtcsum-noflex",
        _flip("bg[0].bg_used_dirs_count_lo", 0),
        "desc-csum",
    ),
    "bb-into-another-group-noflex": (
        "1k-gdtcsum-noflex",
        _move("block_bitmap", 1, _two_groups_on("block_bitmap", 1)),
        "bb-not-in-group",
    ),
    "bb-past-end-flex": ("1k", _move("block_bitmap", 1, _past_end), "bb-not-in-group"),
    "ib-on-superblock": ("4k-g4096", _move("inode_bitmap", 1, lambda b: 0), "ib-overlaps-sb"),
    "bb-on-gdt": ("1k-metabg", _move("block_bitmap", 1, lambda b: 2), "bb-overlaps-gdt"),
    "it-past-end": (
        "1k-csum-noflex",
        _move("inode_table", 1, lambda b: get(b, "s_blocks_count_lo") - 3),
        "it-not-in-group",
    ),
    "bitmap-bit-crc32c": ("1k", _bitmap_bit(0), "bbitmap-csum"),
    "bitmap-bit-csum-fixed": ("1k", _then_fix(_bitmap_bit(0), bitmaps=True), "group-free-count"),
    "bitmap-bit-crc16": ("1k-gdtcsum-noflex", _bitmap_bit(0), "group-free-count"),
    "bitmap-padding": (
        "4k-g4096",
        _then_fix(lambda b: b.__setitem__(ext4_bitmap_blocks(b)[0][0] + 2047, 0), bitmaps=True),
        "bbitmap-padding",
    ),
    "bitmap-own-block-free": ("1k-csum-noflex", _clear_own_bitmap_bit, "bbitmap-invalid"),
    "superblock-csum": ("1k", _flip("s_mnt_count", 0), "sb-csum"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutations_agree(small_ext4, tmp_path: Path, capsys, case: str) -> None:  # type: ignore[no-untyped-def]
    name, mutate, code = MUTATIONS[case]
    buf = bytearray(small_ext4(name))
    mutate(buf)
    img = tmp_path / "m.img"
    img.write_bytes(buf)
    e_rc, e_text = e2fsck(img)
    assert e_rc != 0, e_text
    rc, out = ours(img, capsys)
    assert rc == 1, out
    assert f"[{code}]" in out, out
    assert "error(s) found" in out.splitlines()[-1]
    # our pass-5 lines are e2fsck's, word for word
    for line in out.splitlines():
        if "(e2fsck pass 5)" in line and line.startswith("[group-free-count]"):
            msg = line.split(": ", 1)[1].rsplit(" (e2fsck pass 5)", 1)[0]
            assert msg in e_text, (msg, e_text)
    assert cli_main(["ext4", "check", str(img), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == 1 and doc["ok"] is False
    assert code in {f["code"] for f in doc["findings"]}


def test_superblock_total_is_a_warning(small_ext4, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """e2fsck -fn prints "Free blocks count wrong (X, counted=Y)." for the superblock's total
    but exits 0 (PR_NO_OK): we print the same line as a warning and exit 0."""
    buf = bytearray(small_ext4("1k"))
    put(buf, "s_free_blocks_count_lo", get(buf, "s_free_blocks_count_lo") - 3)
    fix_ext4_csums(buf)
    img = tmp_path / "total.img"
    img.write_bytes(buf)
    e_rc, e_text = e2fsck(img)
    assert e_rc == 0, e_text
    rc, out = ours(img, capsys)
    assert rc == 0, out
    (line,) = [x for x in out.splitlines() if x.startswith("warning: [free-count]")]
    msg = line.split(": ", 2)[2].rsplit(" (e2fsck pass 5)", 1)[0]
    assert msg.startswith("Free blocks count wrong (") and msg in e_text


def test_unreadable_is_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    img = tmp_path / "zero.img"
    img.write_bytes(bytes(1 << 16))
    assert cli_main(["ext4", "check", str(img)]) == 2
    assert "bad magic" in capsys.readouterr().err
    assert cli_main(["ext4", "check", str(tmp_path / "missing.img")]) == 2


def test_descriptor_offsets_match_dumpe2fs(small_ext4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The checksums we verify sit where dumpe2fs reads them: "Group N: ... csum 0xXXXX"."""
    require_tool("dumpe2fs")
    for name in ("1k-metabg", "4k-32bit-nocsum", "1k-gdtcsum-noflex"):
        buf = small_ext4(name)
        img = tmp_path / f"{name}.img"
        img.write_bytes(buf)
        r = run(["dumpe2fs", str(img)])
        pat = r"^Group (\d+): .* csum (0x[0-9a-f]+)"
        seen = {int(g): int(c, 16) for g, c in re.findall(pat, r.stdout, re.M)}
        assert seen or name == "4k-32bit-nocsum"
        for g, c in seen.items():
            off, _ = field(buf, f"bg[{g}].bg_checksum")
            assert struct.unpack_from("<H", buf, off)[0] == c
