"""Superblock decoding against ``btrfs inspect-internal dump-super -f`` (btrfs-progs 6.14),
and the CLI's exit statuses for good and bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.blocksource import BytesSource, FileSource
from model.btrfs.csum import btrfs_name_hash
from model.btrfs.reader import BtrfsImage
from model.errors import FormatError
from tests.tools import require_tool, run

FIELDS = {  # dump-super name -> Superblock attribute
    "csum_type": "csum_type",
    "bytenr": "bytenr",
    "generation": "generation",
    "root": "root",
    "sys_array_size": "sys_chunk_array_size",
    "chunk_root_generation": "chunk_root_generation",
    "root_level": "root_level",
    "chunk_root": "chunk_root",
    "chunk_root_level": "chunk_root_level",
    "log_root": "log_root",
    "total_bytes": "total_bytes",
    "bytes_used": "bytes_used",
    "sectorsize": "sectorsize",
    "nodesize": "nodesize",
    "stripesize": "stripesize",
    "num_devices": "num_devices",
    "cache_generation": "cache_generation",
    "uuid_tree_generation": "uuid_tree_generation",
}
HEX_FIELDS = {
    "flags": "flags",
    "compat_flags": "compat_flags",
    "compat_ro_flags": "compat_ro_flags",
    "incompat_flags": "incompat_flags",
}


def dump_super(path: Path, mirror: int) -> dict[str, str]:
    require_tool("btrfs")
    r = run(["btrfs", "inspect-internal", "dump-super", "-f", "-s", str(mirror), str(path)])
    assert r.returncode == 0, r.stderr
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^([a-z_.]+)\t+(\S+)", line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


@pytest.mark.parametrize(
    "variant,mirror",
    [
        ("default", 0),
        ("default", 1),
        ("bg-tree", 0),
        ("csum-sha256", 0),
        ("csum-xxhash", 1),
        ("nodesize-4k", 0),
        ("kernel", 0),
    ],
)
def test_superblock_matches_dump_super(btrfs_image, variant: str, mirror: int) -> None:
    path = btrfs_image(variant)
    ref = dump_super(path, mirror)
    img = BtrfsImage.open(FileSource(path), mirror)
    sb = img.sb
    for name, attr in FIELDS.items():
        assert getattr(sb, attr) == int(ref[name]), name
    for name, attr in HEX_FIELDS.items():
        assert getattr(sb, attr) == int(ref[name], 16), name
    assert str(__import__("uuid").UUID(bytes=sb.fsid)) == ref["fsid"]
    assert sb.dev_item.devid == int(ref["dev_item.devid"])
    assert sb.dev_item.total_bytes == int(ref["dev_item.total_bytes"])
    assert sb.dev_item.bytes_used == int(ref["dev_item.bytes_used"])


def test_name_hash_known_values() -> None:
    # reference page example, and the DIR_ITEM key of "default" in every mkfs root tree
    # (dump-tree prints `(ROOT_TREE_DIR DIR_ITEM 2378154706)`)
    assert btrfs_name_hash(b"hello.txt") == 1096805209
    assert btrfs_name_hash(b"default") == 2378154706


def test_not_btrfs_is_format_error() -> None:
    with pytest.raises(FormatError) as e:
        BtrfsImage.open(BytesSource(bytes(1 << 20)))
    assert "magic" in str(e.value) and "65536" in str(e.value)


def test_truncated_is_format_error() -> None:
    with pytest.raises(FormatError) as e:
        BtrfsImage.open(BytesSource(bytes(4096)))
    assert "superblock" in str(e.value)


def fsoracle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True
    )


def test_cli_dump_exit_statuses(btrfs_image, tmp_path: Path) -> None:
    ok = fsoracle("btrfs", "dump", str(btrfs_image("default")))
    assert ok.returncode == 0, ok.stderr
    assert "EXTENT_TREE" in ok.stdout
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\xff" * (1 << 17))
    bad = fsoracle("btrfs", "dump", str(junk))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "not a readable btrfs image" in bad.stderr
    missing = fsoracle("btrfs", "check", str(tmp_path / "nope.img"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    badopt = fsoracle("btrfs", "dump", "--tree", "nosuchtree", str(btrfs_image("default")))
    assert badopt.returncode == 2 and "unknown tree" in badopt.stderr
