"""ext4 image fixtures: built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import require_root, require_tool

_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def ext4_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ext4-images")


@pytest.fixture(scope="session")
def ext4_image(ext4_image_dir: Path):  # type: ignore[no-untyped-def]
    """``ext4_image(name) -> Path`` (read-only: copy before changing it)."""
    from tests.ext4.images import VARIANTS, make_image

    def get(name: str) -> Path:
        require_tool("mke2fs")
        require_tool("dumpe2fs")
        if VARIANTS[name].fragment:
            require_root("a loop mount")
        if name not in _built:
            _built[name] = make_image(name, ext4_image_dir / f"{name}.img")
        return _built[name]

    return get


# small mke2fs images for the checker and the hostile-input tests (each under 100 ms to make)
SMALL: dict[str, tuple[str, list[str]]] = {
    # 1 KiB blocks, ext4 defaults: 64bit, flex_bg, metadata_csum; 2 groups
    "1k": ("16M", ["-b", "1024"]),
    # 4 KiB blocks, 4096 blocks per group: 4 groups, padding at the end of every bitmap
    "4k-g4096": ("64M", ["-b", "4096", "-g", "4096"]),
    # gdt_csum (crc16), no flex_bg: bitmaps and tables in their own groups; 4 groups
    "1k-gdtcsum-noflex": ("32M", ["-b", "1024", "-O", "^metadata_csum,uninit_bg,^flex_bg"]),
    # metadata_csum without flex_bg; 4 groups
    "1k-csum-noflex": ("32M", ["-b", "1024", "-O", "^flex_bg"]),
    # 32-byte descriptors, no checksums at all; one group
    "4k-32bit-nocsum": ("64M", ["-b", "4096", "-O", "^64bit,^metadata_csum,^uninit_bg"]),
    # meta_bg descriptors
    "1k-metabg": ("32M", ["-b", "1024", "-O", "meta_bg,^resize_inode"]),
}
_small: dict[str, Path] = {}


@pytest.fixture(scope="session")
def small_ext4(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``small_ext4(name) -> bytes`` of a fresh small mke2fs image (see ``SMALL``)."""
    from tests.tools import run

    d = tmp_path_factory.mktemp("ext4-small")

    def get(name: str) -> bytes:
        require_tool("mke2fs")
        if name not in _small:
            size, opts = SMALL[name]
            p = d / f"{name}.img"
            with open(p, "wb") as f:
                f.truncate(int(size[:-1]) << 20)
            r = run(["mke2fs", "-q", "-F", "-t", "ext4", *opts, str(p)])
            assert r.returncode == 0, r.stderr
            _small[name] = p
        return _small[name].read_bytes()

    return get
