"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from harness.kernel.patchsets import register_series
from tests.tools import require_root, require_tool

register_series()  # build: kernel specs name the series of patches/, as under the CLI

# CI must be reproducible: every hypothesis test is derandomized (same examples each run,
# no example database). `HYPOTHESIS_PROFILE=explore` searches with fresh randomness.
settings.register_profile("fsoracle", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fsoracle"))


@pytest.fixture(scope="session")
def btrfs_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("btrfs-images")


_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def btrfs_image(btrfs_image_dir: Path):  # type: ignore[no-untyped-def]
    """``btrfs_image(name)`` -> path of a real image (built once per session; treat it as
    read-only: copy it before corrupting)."""
    from tests.btrfs.images import make_image

    def get(name: str) -> Path:
        require_tool("mkfs.btrfs")
        if name.startswith("kernel"):
            require_root("a loop mount")
        if name not in _built:
            _built[name] = make_image(name, btrfs_image_dir / f"{name}.img")
        return _built[name]

    return get
