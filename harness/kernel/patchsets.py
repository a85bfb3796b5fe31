"""The series of ``patches/`` as the kernel builder's patch sets (:mod:`vm.kbuild`).

vm/ never reads ``patches/``: :func:`series_patch_sets` reads every series with the series
loader (:mod:`harness.series`) and hands each over as a
:class:`~vm.kbuild.KernelPatchSet`: its diff files in order (the cover letter, which
carries no diff, left out) and its ``config:`` lines. :func:`register_series` makes
``build:`` kernel specs (``build:6.12+skinny-bg-tree``) find them; the CLI and the tests
call it at start.
"""

from __future__ import annotations

from pathlib import Path

from harness.series import Series, all_series
from vm.kbuild import KernelPatchSet, register_patch_sets


def carries_diff(patch: Path) -> bool:
    """A ``git format-patch`` file with a diff in it (a cover letter has none)."""
    text = patch.read_text(errors="replace")
    return text.startswith("diff ") or "\ndiff --git " in text


def patch_set(series: Series) -> KernelPatchSet:
    return KernelPatchSet(
        name=series.name,
        patch_files=tuple(p for p in series.patch_paths if carries_diff(p)),
        config=tuple(series.config),
        status=series.status,
        origin=f"patches/{series.name}",
    )


def series_patch_sets(patches: Path | None = None) -> dict[str, KernelPatchSet]:
    """Every series under ``patches`` (default: :func:`harness.series.patches_dir`), by name."""
    return {s.name: patch_set(s) for s in all_series(patches)}


def register_series() -> None:
    """Let ``build:`` kernel specs name the series of ``patches/`` (read at each lookup)."""
    register_patch_sets(series_patch_sets)
