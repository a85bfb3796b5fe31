"""The superblock rule tables (:mod:`model.btrfs.superblock`), one edit per rule.

Each case edits the primary superblock of a copy of a mkfs.btrfs image (checksum
recomputed) so that exactly the rule under test is broken, and asserts that we report that
rule: a FormatError for the rules flagged fatal, else a finding (``super``, exit 1) or a
warning (``super-warning``) from ``btrfs_check``. The expected line comes from one of two
places, named per case:

* ``progs``: btrfs check prints the same check's line; the expected text is taken from its
  stderr on the same edited image (``ERROR: <line>`` / ``WARNING: <line>``);
* ``kernel-format``: only the kernel prints it; the expected text is the kernel's printk
  format for that check, filled in here with the values of the edit. This checks that our
  message is the kernel's format string filled in; it is not an observed kernel message.

Every rule of the tables has a case (a new row needs one).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.reader import BtrfsImage
from model.btrfs.superblock import (
    OPEN_CTREE_CSUM_RULES,
    OPEN_CTREE_ROOT_RULES,
    PROGS_CHECK_SUPER_RULES,
    VALIDATE_SUPER_RULES,
    FsDevices,
    btrfs_validate_super,
    device_list_add,
    parse_superblock,
    printk,
)
from model.errors import FormatError
from tests.btrfs.images import make_image
from tests.btrfs.imgedit import SbValue, edit_super, sb_get, sparse_copy
from tests.tools import require_tool, run

SIZE = 256 << 20
OTHER = uuid.UUID(int=0x1234).bytes


@dataclass(frozen=True)
class RuleCase:
    """``edit(sb) -> fields``: the superblock edit; ``source``: where the expected line
    comes from (``progs`` or ``kernel-format``); ``fmt_args(sb)``: the values filling the
    kernel's format (``kernel-format`` only); ``fmt``: that format, copied from the kernel
    source for this comparison only."""

    rule: str
    base: str
    edit: Callable[[bytes], dict[str, SbValue]]
    source: str
    fmt: str = ""
    fmt_args: Callable[[bytes], tuple[int | bytes, ...]] = lambda sb: ()
    recompute: bool = True


def v(sb: bytes, name: str) -> int:
    x = sb_get(sb, name)
    assert isinstance(x, int)
    return x


CASES = [
    RuleCase(
        "csum-type",
        "default",
        lambda sb: {"csum_type": 7},
        "kernel-format",
        "unsupported checksum algorithm: %u",
        lambda sb: (7,),
        recompute=False,
    ),
    RuleCase(
        "csum", "default", lambda sb: {"generation": v(sb, "generation")}, "progs", recompute=False
    ),
    RuleCase("magic", "default", lambda sb: {"magic": 0}, "kernel-format", "no valid FS found"),
    RuleCase(
        "flags",
        "default",
        lambda sb: {"flags": v(sb, "flags") | 1 << 3},
        "kernel-format",
        "unrecognized or unsupported super flag 0x%llx",
        lambda sb: (8,),
    ),
    RuleCase("root-level", "default", lambda sb: {"root_level": 8}, "progs"),
    RuleCase("chunk-root-level", "default", lambda sb: {"chunk_root_level": 8}, "progs"),
    RuleCase("log-root-level", "default", lambda sb: {"log_root_level": 8}, "progs"),
    RuleCase(
        "sectorsize",
        "default",
        lambda sb: {"sectorsize": 2048},
        "kernel-format",
        "invalid sectorsize %llu",
        lambda sb: (2048,),
    ),
    RuleCase(
        "sectorsize-page-size",
        "default",
        lambda sb: {"sectorsize": 8192},
        "kernel-format",
        "sectorsize %llu not yet supported for page size %lu",
        lambda sb: (8192, 4096),
    ),
    RuleCase(
        "nodesize",
        "default",
        lambda sb: {"nodesize": 12288, "leafsize": 12288},
        "kernel-format",
        "invalid nodesize %llu",
        lambda sb: (12288,),
    ),
    RuleCase(
        "leafsize",
        "default",
        lambda sb: {"leafsize": 0},
        "kernel-format",
        "invalid leafsize %u, should be %llu",
        lambda sb: (0, v(sb, "nodesize")),
    ),
    RuleCase("root-unaligned", "default", lambda sb: {"root": v(sb, "root") + 1}, "progs"),
    RuleCase(
        "chunk-root-unaligned",
        "default",
        lambda sb: {"chunk_root": v(sb, "chunk_root") + 1},
        "progs",
    ),
    RuleCase("log-root-unaligned", "default", lambda sb: {"log_root": 4097}, "progs"),
    RuleCase(
        "dev-item-fsid",
        "default",
        lambda sb: {"dev_item.fsid": OTHER},
        "kernel-format",
        "dev_item UUID does not match metadata fsid: %pU != %pU",
        lambda sb: (bytes(sb[32:48]), OTHER),
    ),
    RuleCase(
        "block-group-tree-features",
        "bg-tree",
        lambda sb: {"incompat_flags": v(sb, "incompat_flags") & ~C.INCOMPAT_NO_HOLES},
        "kernel-format",
        "block-group-tree feature requires free-space-tree and no-holes",
    ),
    RuleCase(
        "bytes-used",
        "default",
        lambda sb: {"bytes_used": 6 * v(sb, "nodesize") - 1},
        "kernel-format",
        "bytes_used is too small %llu",
        lambda sb: (6 * v(sb, "nodesize") - 1,),
    ),
    RuleCase("stripesize", "default", lambda sb: {"stripesize": 3}, "progs"),
    RuleCase("num-devices-suspicious", "default", lambda sb: {"num_devices": 1 << 40}, "progs"),
    RuleCase("num-devices-zero", "default", lambda sb: {"num_devices": 0}, "progs"),
    RuleCase(
        "super-offset",
        "default",
        lambda sb: {"bytenr": C.SUPER_INFO_OFFSET + 4096},
        "kernel-format",
        "super offset mismatch %llu != %llu",
        lambda sb: (C.SUPER_INFO_OFFSET + 4096, C.SUPER_INFO_OFFSET),
    ),
    RuleCase("sys-array-too-big", "default", lambda sb: {"sys_array_size": 2049}, "progs"),
    RuleCase("sys-array-too-small", "default", lambda sb: {"sys_array_size": 50}, "progs"),
    RuleCase(
        "generation-chunk-root",
        "default",
        lambda sb: {"chunk_root_generation": v(sb, "generation") + 1},
        "kernel-format",
        "suspicious: generation < chunk_root_generation: %llu < %llu",
        lambda sb: (v(sb, "generation"), v(sb, "generation") + 1),
    ),
    RuleCase(
        "generation-cache",
        "default",
        lambda sb: {"cache_generation": v(sb, "generation") + 1},
        "kernel-format",
        "suspicious: generation < cache_generation: %llu < %llu",
        lambda sb: (v(sb, "generation"), v(sb, "generation") + 1),
    ),
    RuleCase(
        "root-bytenr-zero",
        "default",
        lambda sb: {"root": 0},
        "kernel-format",
        "invalid superblock tree root bytenr",
    ),
    RuleCase("progs-total-bytes-zero", "default", lambda sb: {"total_bytes": 0}, "progs"),
    RuleCase("progs-stripesize", "default", lambda sb: {"stripesize": 1}, "progs"),
]
# compared with fs_devices that differ from the superblock (not reachable with one image)
FS_DEVICES_RULES = {"fsid", "metadata-uuid"}
ALL_RULES = (
    VALIDATE_SUPER_RULES + OPEN_CTREE_CSUM_RULES + OPEN_CTREE_ROOT_RULES + PROGS_CHECK_SUPER_RULES
)


def test_every_rule_has_a_case() -> None:
    names = [r.name for r in ALL_RULES]
    assert len(names) == len(set(names))
    assert {c.rule for c in CASES} | FS_DEVICES_RULES == set(names)


@pytest.fixture(scope="module")
def base_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("mkfs.btrfs")
    d = tmp_path_factory.mktemp("rules")
    return {n: make_image(n, d / f"{n}.img", size=SIZE) for n in ("default", "bg-tree")}


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


@pytest.mark.parametrize("case", CASES, ids=[c.rule for c in CASES])
def test_rule(case: RuleCase, base_images: dict[str, Path], tmp_path: Path) -> None:
    rule = next(r for r in ALL_RULES if r.name == case.rule)
    p = sparse_copy(base_images[case.base], tmp_path / "e.img")
    with open(p, "rb") as f:
        f.seek(C.SUPER_INFO_OFFSET)
        sb = f.read(C.SUPER_INFO_SIZE)
    if case.rule == "csum":  # a flipped byte, the checksum left as it was
        with open(p, "r+b") as f:
            f.seek(C.SUPER_INFO_OFFSET + 299)  # the label
            f.write(b"X")
    else:
        edit_super(p, case.edit(sb), case.recompute)
    if case.source == "progs":
        require_tool("btrfs")
        r = run(["btrfs", "check", "--readonly", str(p)], timeout=10)
        prefix = "WARNING" if rule.severity == "warning" else "ERROR"
        lines = [norm(x[len(prefix) + 2 :]) for x in r.stderr.splitlines() if x.startswith(prefix)]
        assert lines, r.stderr
    else:
        lines = [norm(printk(case.fmt, case.fmt_args(sb)))]
    try:
        with FileSource(p) as src:
            res = btrfs_check(BtrfsImage.open(src))
    except FormatError as e:
        assert rule.fatal, f"{rule.name} is not fatal but the image did not open: {e}"
        assert e.message.endswith(f" [{rule.name}]")
        ours = norm(e.message[: -len(f" [{rule.name}]")])
    else:
        assert not rule.fatal, f"{rule.name} is fatal but the image opened"
        pool = res.warnings if rule.severity == "warning" else res.findings
        hits = [f for f in pool if f.what.endswith(f" {rule.name}")]
        assert len(hits) == 1, [str(f) for f in res.findings + res.warnings]
        assert hits[0].code == ("super" if rule.severity == "error" else "super-warning")
        ours = norm(hits[0].message)
        if rule.severity == "error":
            assert not res.ok
    assert ours in lines, f"{ours!r} not in {lines!r}"


def test_fs_devices_rules(btrfs_image: Callable[[str], Path]) -> None:
    """The fsid and metadata_uuid rules compare the superblock with the fs_devices the scan
    registered: equal for a device scanned alone (:func:`device_list_add`), so checked here
    with other fs_devices. The expected lines are the kernel's formats filled in with the
    two UUIDs (not observed messages); a temp_fsid skips the fsid rule, as the kernel's
    ``!fs_devices->temp_fsid`` does."""
    with FileSource(btrfs_image("default")) as src:
        sb = parse_superblock(src.read(C.SUPER_INFO_OFFSET, C.SUPER_INFO_SIZE))
    assert btrfs_validate_super(sb, 0) == []
    assert device_list_add(sb) == FsDevices(sb.fsid, sb.fsid)
    got = {x.rule.name: x.message for x in btrfs_validate_super(sb, 0, FsDevices(OTHER, OTHER))}
    u, o = str(uuid.UUID(bytes=sb.fsid)), str(uuid.UUID(bytes=OTHER))
    assert got == {
        "fsid": f"superblock fsid doesn't match fsid of fs_devices: {u} != {o}",
        "metadata-uuid": "superblock metadata_uuid doesn't match metadata uuid of fs_devices:"
        f" {u} != {o}",
        "dev-item-fsid": f"dev_item UUID does not match metadata fsid: {o} != {u}",
    }
    temp = btrfs_validate_super(sb, 0, FsDevices(OTHER, sb.fsid, temp_fsid=True))
    assert temp == []


def test_printk() -> None:
    """The conversions the formats use, against C printf semantics (arithmetic)."""
    assert printk("%d >= %d", (8, 8)) == "8 >= 8"
    assert printk("0x%llx", (0x1000000008,)) == "0x1000000008"
    assert printk("%u < %zu, %lu", (50, 97, 4096)) == "50 < 97, 4096"
    u = uuid.UUID("5a154e14-84fb-468c-896f-20539bf88b33")
    assert printk("%pU", (u.bytes,)) == "5a154e14-84fb-468c-896f-20539bf88b33"
    with pytest.raises(AssertionError):
        printk("%d", (1, 2))


def test_mirror_minus_one_skips_the_offset_rule(btrfs_image: Callable[[str], Path]) -> None:
    """``btrfs_validate_write_super`` passes mirror -1: no offset check (the mirror-1 copy
    read as mirror 0 breaks it, read as -1 does not)."""
    with FileSource(btrfs_image("default")) as src:
        sb = parse_superblock(src.read(C.btrfs_sb_offset(1), C.SUPER_INFO_SIZE))
    names = [x.rule.name for x in btrfs_validate_super(sb, 0)]
    assert names == ["super-offset"]
    assert btrfs_validate_super(sb, -1) == []
    assert btrfs_validate_super(sb, 1) == []
