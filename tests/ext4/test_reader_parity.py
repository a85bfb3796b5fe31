"""Reader parity with dumpe2fs: per-group free counts and free extents, on images made by
mke2fs (and fragmented through the host kernel), plus bigalloc refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main as cli_main
from model.blocksource import FileSource
from model.errors import FormatError
from model.ext4.image import Ext4Image
from tests.ext4.images import FAST, VARIANTS, parse_dumpe2fs
from tests.tools import require_tool, run

SLOW = [n for n in VARIANTS if n not in FAST]


def _dumpe2fs(img: Path) -> str:
    r = run(["dumpe2fs", str(img)])
    assert r.returncode == 0, r.stderr
    return r.stdout


def _check(img: Path) -> None:
    groups = parse_dumpe2fs(_dumpe2fs(img))
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        assert im.groups_count == len(groups)
        for dg in groups:
            d = im.descs[dg.group]
            assert d.free_blocks_count == dg.free_count, f"group {dg.group} count"
            ours = im.group_free_extents(dg.group)
            assert ours == dg.free_extents, f"group {dg.group} extents"
            assert sum(n for _, n in ours) == dg.free_count, f"group {dg.group} bitmap sum"
        assert im.bitmaps_read + im.bitmaps_synthesised == len(groups)


@pytest.mark.parametrize("name", FAST)
def test_parity(ext4_image, name: str) -> None:  # type: ignore[no-untyped-def]
    _check(ext4_image(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_parity_slow(ext4_image, name: str) -> None:  # type: ignore[no-untyped-def]
    _check(ext4_image(name))


def test_uninit_groups_synthesised(ext4_image) -> None:  # type: ignore[no-untyped-def]
    """A fresh 4k image has BLOCK_UNINIT groups: we synthesise their bitmaps (no read) and
    still agree with dumpe2fs (checked above); here: both kinds occur."""
    img = ext4_image("4k-default")
    flags = [g.flags for g in parse_dumpe2fs(_dumpe2fs(img))]
    assert any("BLOCK_UNINIT" in f for f in flags)
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        for g in range(im.groups_count):
            im.ext4_read_block_bitmap(g)
            if im.descs[g].block_uninit:
                assert im.ext4_free_clusters_after_init(g) == im.descs[g].free_blocks_count
        n_uninit = sum(d.block_uninit for d in im.descs)
        assert im.bitmaps_synthesised == n_uninit > 0


def test_bigalloc_refused(tmp_path: Path) -> None:
    require_tool("mke2fs")
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    r = run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "bigalloc", "-C", "65536", str(img)])
    assert r.returncode == 0, r.stderr
    with FileSource(img) as src, pytest.raises(FormatError, match="bigalloc"):
        Ext4Image.open(src)
    rc = cli_main(["ext4", "dump", str(img)])
    assert rc == 2


def test_not_ext4(tmp_path: Path) -> None:
    img = tmp_path / "zero.img"
    img.write_bytes(bytes(1 << 16))
    with FileSource(img) as src, pytest.raises(FormatError, match="magic"):
        Ext4Image.open(src)


def test_dump_json_matches_dumpe2fs(ext4_image, capsys) -> None:  # type: ignore[no-untyped-def]
    img = ext4_image("1k-default")
    groups = parse_dumpe2fs(_dumpe2fs(img))
    assert cli_main(["ext4", "dump", str(img), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["free_blocks"] for g in out["groups"]] == [g.free_count for g in groups]
    assert [[list(e) for e in g["free_extents"]] for g in out["groups"]] == [
        [list(e) for e in g.free_extents] for g in groups
    ]
    assert out["totals"]["free_blocks"] == sum(g.free_count for g in groups)


def test_dump_text(ext4_image, capsys) -> None:  # type: ignore[no-untyped-def]
    img = ext4_image("4k-default")
    assert cli_main(["ext4", "dump", str(img)]) == 0
    text = capsys.readouterr().out
    assert "Group 0:" in text and "free extents" in text


def test_truncated_image(ext4_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src_img = ext4_image("1k-default")
    img = tmp_path / "trunc.img"
    shutil.copyfile(src_img, img)
    with open(img, "r+b") as f:
        f.truncate(3 << 20)
    with FileSource(img) as src, pytest.raises(FormatError):
        Ext4Image.open(src)
