"""ext4 images on the host, read by the model: free space per group (``fsoracle ext4
dump``) and the kernel's and e2fsck's consistency checks (``fsoracle ext4 check``)."""

from __future__ import annotations

import os
from typing import Any

from harness.errors import UserError
from model.blocksource import FileSource
from model.errors import FormatError
from model.ext4 import constants as C
from model.ext4.check import Ext4CheckResult, ext4_check
from model.ext4.image import Ext4Image, feature_names


def _open_source(path: str) -> FileSource:
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    try:
        return FileSource(path)
    except OSError as e:
        raise UserError(f"{path}: cannot open: {e.strerror}") from None


def _dump_data(im: Ext4Image) -> dict[str, Any]:
    sb = im.sb
    groups = []
    total_free = 0
    total_extents = 0
    largest = 0
    for d in im.descs:
        ext = im.group_free_extents(d.group)
        total_free += d.free_blocks_count
        total_extents += len(ext)
        largest = max([largest, *(n for _, n in ext)])
        groups.append(
            {
                "group": d.group,
                "flags": [n for bit, n in C.BG_FLAG_NAMES.items() if d.flags & bit],
                "block_bitmap": d.block_bitmap,
                "free_blocks": d.free_blocks_count,
                "bitmap_free_blocks": sum(n for _, n in ext),
                "free_extents": ext,
            }
        )
    return {
        "superblock": {
            "blocks_count": sb.blocks_count,
            "free_blocks_count": sb.free_blocks_count,
            "block_size": sb.blocksize,
            "first_data_block": sb.first_data_block,
            "blocks_per_group": sb.blocks_per_group,
            "groups": sb.groups_count,
            "desc_size": sb.desc_size,
            "flex_bg_size": 1 << sb.log_groups_per_flex_effective
            if sb.log_groups_per_flex_effective
            else 0,
            "features": feature_names(sb.feature_compat, C.COMPAT_NAMES)
            + feature_names(sb.feature_incompat, C.INCOMPAT_NAMES)
            + feature_names(sb.feature_ro_compat, C.RO_COMPAT_NAMES),
        },
        "groups": groups,
        "totals": {
            "free_blocks": total_free,
            "free_extents": total_extents,
            "largest_free_extent": largest,
            "bitmaps_read": im.bitmaps_read,
            "bitmaps_synthesised": im.bitmaps_synthesised,
        },
    }


def dump_image(path: str) -> dict[str, Any]:
    """The superblock, each group's flags, free count and free extents, and the totals of
    the image at ``path``; a missing, unreadable or damaged image is a :class:`UserError`."""
    src = _open_source(path)
    try:
        try:
            im = Ext4Image.open(src)
        except FormatError as e:
            raise UserError(f"{path}: not a readable ext4 image: {e}") from None
        try:
            return _dump_data(im)
        except FormatError as e:
            raise UserError(f"{path}: {e}") from None
    finally:
        src.close()


def check_image(path: str) -> Ext4CheckResult:
    """The superblock, descriptor and block bitmap checks of the 6.12 kernel and e2fsck's
    pass-5 free counts (``model.ext4.check``) on the image at ``path``."""
    src = _open_source(path)
    try:
        return ext4_check(src)
    except FormatError as e:
        raise UserError(f"{path}: not a readable ext4 image: {e}") from None
    finally:
        src.close()


def check_json(path: str, res: Ext4CheckResult) -> dict[str, Any]:
    """``fsoracle ext4 check --json``'s document (schema 1)."""
    return {
        "schema": 1,
        "image": path,
        "ok": res.ok,
        "groups_checked": res.groups_checked,
        "bitmaps_read": res.bitmaps_read,
        "findings": [f.to_json() for f in res.findings],
        "warnings": [f.to_json() for f in res.warnings],
    }
