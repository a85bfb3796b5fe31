"""``fsoracle ext4 ...``: free space of real ext4 images, and the allocator study.

fsoracle ext4 dump IMAGE [--json]
fsoracle ext4 check IMAGE [--json]
fsoracle ext4 alloc-sim --groups N [--flex 16] [--fragmentation F] [--writes 10M,100M]
                        [--allocators buddy,optimize-scan,frsp0,...] [--mem-limit 1G]
                        [--kernel 6.1|6.12] [--seed S] [--json] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from harness import ext4_sim
from harness.errors import UserError
from harness.jsonout import dumps
from model.blocksource import FileSource
from model.errors import FormatError
from model.ext4 import constants as C
from model.ext4.image import Ext4Image, feature_names


def open_image(path: str) -> tuple[FileSource, Ext4Image]:
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    try:
        src = FileSource(path)
    except OSError as e:
        raise UserError(f"{path}: cannot open: {e.strerror}") from None
    try:
        return src, Ext4Image.open(src)
    except FormatError as e:
        src.close()
        raise UserError(f"{path}: not a readable ext4 image: {e}") from None


def dump_data(im: Ext4Image) -> dict[str, Any]:
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


def cmd_dump(args: argparse.Namespace) -> int:
    src, im = open_image(args.image)
    try:
        try:
            data = dump_data(im)
        except FormatError as e:
            raise UserError(f"{args.image}: {e}") from None
    finally:
        src.close()
    if args.json:
        print(dumps(data))
        return 0
    s = data["superblock"]
    w = sys.stdout.write
    w(
        f"blocks {s['blocks_count']}  free {s['free_blocks_count']}  block size "
        f"{s['block_size']}  first data block {s['first_data_block']}\n"
        f"groups {s['groups']} of {s['blocks_per_group']} blocks  descriptor size "
        f"{s['desc_size']}  flex_bg size {s['flex_bg_size']}\n"
        f"features: {' '.join(s['features'])}\n"
    )
    for g in data["groups"]:
        flags = f" [{', '.join(g['flags'])}]" if g["flags"] else ""
        ext = ", ".join(f"{a}-{a + n - 1}" if n > 1 else f"{a}" for a, n in g["free_extents"])
        w(
            f"Group {g['group']}:{flags} {g['free_blocks']} free blocks, "
            f"{len(g['free_extents'])} free extents: {ext}\n"
        )
    t = data["totals"]
    w(
        f"total: {t['free_blocks']} free blocks in {t['free_extents']} extents, largest "
        f"{t['largest_free_extent']}; {t['bitmaps_read']} bitmaps read, "
        f"{t['bitmaps_synthesised']} synthesised (BLOCK_UNINIT)\n"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The superblock, descriptor and block bitmap checks of the 6.12 kernel and e2fsck's
    pass-5 free counts (``model.ext4.check``): 0 clean, 1 findings, 2 unreadable."""
    from model.ext4.check import ext4_check

    if not os.path.exists(args.image):
        raise UserError(f"{args.image}: no such file")
    try:
        src = FileSource(args.image)
    except OSError as e:
        raise UserError(f"{args.image}: cannot open: {e.strerror}") from None
    try:
        res = ext4_check(src)
    except FormatError as e:
        raise UserError(f"{args.image}: not a readable ext4 image: {e}") from None
    finally:
        src.close()
    if args.json:
        doc = {
            "schema": 1,
            "image": args.image,
            "ok": res.ok,
            "groups_checked": res.groups_checked,
            "bitmaps_read": res.bitmaps_read,
            "findings": [f.to_json() for f in res.findings],
            "warnings": [f.to_json() for f in res.warnings],
        }
        sys.stdout.write(dumps(doc) + "\n")
    else:
        for f in res.warnings:
            print(f"warning: {f}")
        for f in res.findings:
            print(f)
        verdict = "no error found" if res.ok else f"{len(res.findings)} error(s) found"
        print(
            f"checked {res.groups_checked} groups ({res.bitmaps_read} block bitmaps read): "
            f"{verdict}"
        )
    return 0 if res.ok else 1


def register(sub: Any) -> None:
    p = sub.add_parser("ext4", help="ext4 free space and allocators")
    fam = p.add_subparsers(dest="ext4_cmd", metavar="SUBCOMMAND")
    fam.required = True
    d = fam.add_parser("dump", help="per group free count and free extents")
    d.add_argument("image")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_dump)
    c = fam.add_parser(
        "check",
        help="the 6.12 kernel's superblock, descriptor and block bitmap checks and "
        "e2fsck's free block counts; exit 1 on a finding",
    )
    c.add_argument("image")
    c.add_argument("--json", action="store_true", help="one JSON document (schema 1)")
    c.set_defaults(func=cmd_check)
    ext4_sim.register(fam)
