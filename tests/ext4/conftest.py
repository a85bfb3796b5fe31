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
