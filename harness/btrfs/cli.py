"""``fsoracle btrfs ...``: dump and check images with the executable spec."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from harness.argtypes import int_range, seed
from harness.errors import UserError
from harness.jsonout import dumps, to_jsonable
from harness.safeio import atomic_output, check_output, sparse_copy
from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.blockgroups import BG_KEY_TYPES, BlockGroup, block_group_from_item
from model.btrfs.csum import CSUM_NAMES
from model.btrfs.reader import BtrfsImage, TreeRoot, TreeStats, tree_name
from model.errors import FormatError
from model.linux import U64

TREE_ALIASES = {
    "root": C.ROOT_TREE_OBJECTID,
    "extent": C.EXTENT_TREE_OBJECTID,
    "chunk": C.CHUNK_TREE_OBJECTID,
    "dev": C.DEV_TREE_OBJECTID,
    "fs": C.FS_TREE_OBJECTID,
    "csum": C.CSUM_TREE_OBJECTID,
    "quota": C.QUOTA_TREE_OBJECTID,
    "uuid": C.UUID_TREE_OBJECTID,
    "free-space": C.FREE_SPACE_TREE_OBJECTID,
    "free_space": C.FREE_SPACE_TREE_OBJECTID,
    "block-group": C.BLOCK_GROUP_TREE_OBJECTID,
    "block_group": C.BLOCK_GROUP_TREE_OBJECTID,
    "bg": C.BLOCK_GROUP_TREE_OBJECTID,
    "data-reloc": C.DATA_RELOC_TREE_OBJECTID,
    "log": C.TREE_LOG_OBJECTID,
}


def parse_tree_arg(s: str) -> int:
    """A tree id: a number, a btrfs-progs name (EXTENT_TREE) or a short alias (extent)."""
    low = s.lower()
    if low in TREE_ALIASES:
        return TREE_ALIASES[low]
    for oid, name in C.TREE_NAMES.items():
        if name.lower() in (low, low + "_tree"):
            return oid
    try:
        v = int(s, 0)
    except ValueError:
        raise UserError(
            f"unknown tree {s!r}: give a number or one of {', '.join(sorted(TREE_ALIASES))}"
        ) from None
    if not 0 <= v <= U64:
        raise UserError(f"tree id {s} is out of range: tree ids are 0 to {U64}")
    return v


def open_image(path: str, mirror: int) -> BtrfsImage:
    """Open an image read-only; a missing or unreadable file is a user error."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    try:
        src = FileSource(path)
    except OSError as e:
        raise UserError(f"{path}: cannot open: {e.strerror}") from None
    try:
        return BtrfsImage.open(src, mirror)
    except FormatError as e:
        raise UserError(f"{path}: not a readable btrfs image: {e}") from None


def flag_names(value: int, names: dict[int, str]) -> list[str]:
    out = [n for bit, n in names.items() if value & bit]
    unknown = value & ~sum(names)
    if unknown:
        out.append(f"0x{unknown:x}")
    return out


BG_TYPE_NAMES = {
    C.BLOCK_GROUP_DATA: "DATA",
    C.BLOCK_GROUP_SYSTEM: "SYSTEM",
    C.BLOCK_GROUP_METADATA: "METADATA",
}
BG_PROFILE_NAMES = {
    C.BLOCK_GROUP_RAID0: "RAID0",
    C.BLOCK_GROUP_RAID1: "RAID1",
    C.BLOCK_GROUP_DUP: "DUP",
    C.BLOCK_GROUP_RAID10: "RAID10",
    C.BLOCK_GROUP_RAID5: "RAID5",
    C.BLOCK_GROUP_RAID6: "RAID6",
    C.BLOCK_GROUP_RAID1C3: "RAID1C3",
    C.BLOCK_GROUP_RAID1C4: "RAID1C4",
}


def bg_flags_str(flags: int) -> str:
    """btrfs-progs' style: DATA|single, METADATA|DUP..."""
    types = [n for b, n in BG_TYPE_NAMES.items() if flags & b]
    profs = [n for b, n in BG_PROFILE_NAMES.items() if flags & b] or ["single"]
    return "|".join(types + profs)


def summarize(img: BtrfsImage) -> tuple[list[TreeStats], list[BlockGroup]]:
    """One pass over every tree: per-tree counts, and the block group items found in the
    extent tree(s) and the block group tree."""
    stats: list[TreeStats] = []
    bgs: list[BlockGroup] = []
    for root in img.trees():
        st = TreeStats(root)
        collect = root.objectid in (C.EXTENT_TREE_OBJECTID, C.BLOCK_GROUP_TREE_OBJECTID)
        for blk in img.walk(root):
            if not blk.is_leaf:
                st.nodes += 1
                continue
            st.leaves += 1
            st.items += blk.nritems
            if not collect:
                continue
            for slot, ih in enumerate(blk.items):
                if ih.key.type in BG_KEY_TYPES:
                    bg = block_group_from_item(img, blk.item(slot), root.objectid, blk.logical)
                    if bg is not None:
                        bgs.append(bg)
        stats.append(st)
    bgs.sort(key=lambda b: (b.start, b.tree))
    return stats, bgs


def super_summary(img: BtrfsImage) -> dict[str, Any]:
    sb = img.sb
    return {
        "mirror": img.mirror,
        "bytenr": sb.bytenr,
        "fsid": sb.fsid.hex(),
        "label": sb.label_str,
        "generation": sb.generation,
        "root": sb.root,
        "root_level": sb.root_level,
        "chunk_root": sb.chunk_root,
        "chunk_root_level": sb.chunk_root_level,
        "log_root": sb.log_root,
        "total_bytes": sb.total_bytes,
        "bytes_used": sb.bytes_used,
        "num_devices": sb.num_devices,
        "sectorsize": sb.sectorsize,
        "nodesize": sb.nodesize,
        "csum_type": sb.csum_type,
        "csum_name": CSUM_NAMES[sb.csum_type],
        "nr_global_roots": sb.nr_global_roots,
        "flags": sb.flags,
        "compat_flags": sb.compat_flags,
        "compat_ro_flags": sb.compat_ro_flags,
        "incompat_flags": sb.incompat_flags,
        "compat_ro": flag_names(sb.compat_ro_flags, dict(C.COMPAT_RO_NAMES)),
        "incompat": flag_names(sb.incompat_flags, C.INCOMPAT_NAMES),
    }


def tree_json(st: TreeStats) -> dict[str, Any]:
    r = st.root
    return {
        "id": r.objectid,
        "name": r.name,
        "offset": r.offset,
        "root": r.bytenr,
        "level": r.level,
        "height": st.height,
        "nodes": st.nodes,
        "leaves": st.leaves,
        "items": st.items,
    }


def bg_json(bg: BlockGroup) -> dict[str, Any]:
    d = to_jsonable(bg)
    d["type"] = bg_flags_str(bg.flags)
    d["tree_name"] = tree_name(bg.tree)
    return dict(d)


def select_trees(img: BtrfsImage, tree: int) -> list[TreeRoot]:
    roots = [r for r in img.trees() if r.objectid == tree]
    if not roots:
        have = ", ".join(f"{r.objectid} ({r.name})" for r in img.trees())
        raise UserError(f"the image has no tree {tree}; it has: {have}")
    return roots


def write_lines(lines: Iterable[str]) -> None:
    """Lines as bytes: names that are not UTF-8 come back out as the bytes they were."""
    out = sys.stdout.buffer
    for line in lines:
        out.write(line.encode("utf-8", "surrogateescape") + b"\n")
    out.flush()


def cmd_dump(args: argparse.Namespace) -> int:
    img = open_image(args.image, args.super)
    out = sys.stdout
    if args.tree is not None:
        if args.tree == "all":
            roots = img.trees()
        else:
            roots = select_trees(img, parse_tree_arg(args.tree))
        if args.json:
            items = []
            for root in roots:
                for blk, slot, item in img.iter_items(root):
                    d = to_jsonable(item)
                    d["key"] = to_jsonable(blk.items[slot].key)
                    d["kind"] = type(item).__name__
                    d["leaf"] = blk.logical
                    d["slot"] = slot
                    d["tree"] = root.objectid
                    items.append(d)
            doc = {"superblock": super_summary(img), "items": items}
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")
            return 0
        from model.btrfs.printtree import dump_tree, print_all

        if args.tree == "all":  # `btrfs inspect-internal dump-tree IMAGE`
            write_lines(print_all(img))
        else:  # `btrfs inspect-internal dump-tree -t ID IMAGE`
            write_lines(dump_tree(img, roots[0].objectid))
        return 0
    stats, bgs = summarize(img)
    if args.json:
        doc = {
            "superblock": super_summary(img),
            "trees": [tree_json(s) for s in stats],
            "block_groups": [bg_json(b) for b in bgs],
            "findings": [f.to_json() for f in img.findings],
        }
        out.write(dumps(doc, pretty=True) + "\n")
        return 0
    s = super_summary(img)
    out.write(
        f"superblock (mirror {s['mirror']} at {s['bytenr']}): generation {s['generation']},"
        f" nodesize {s['nodesize']}, sectorsize {s['sectorsize']}, csum {s['csum_name']},"
        f" total_bytes {s['total_bytes']}, bytes_used {s['bytes_used']},"
        f" devices {s['num_devices']}\n"
    )
    out.write(f"compat_ro: {'|'.join(s['compat_ro']) or '-'}\n")
    out.write(f"incompat:  {'|'.join(s['incompat']) or '-'}\n\n")
    out.write("| tree | name | root | height | nodes | leaves | items |\n")
    out.write("|---:|---|---:|---:|---:|---:|---:|\n")
    for st in stats:
        t = tree_json(st)
        tid = f"{t['id']}" + (f":{t['offset']}" if t["offset"] else "")
        out.write(
            f"| {tid} | {t['name']} | {t['root']} | {t['height']} | {t['nodes']} |"
            f" {t['leaves']} | {t['items']} |\n"
        )
    out.write(f"\n{len(bgs)} block groups\n\n")
    out.write("| start | length | type | used | global_root_id | item in |\n")
    out.write("|---:|---:|---|---:|---:|---|\n")
    for bg in bgs:
        out.write(
            f"| {bg.start} | {bg.length} | {bg_flags_str(bg.flags)} | {bg.used} |"
            f" {bg.global_root_id} | {tree_name(bg.tree)} ({bg.key_type}) |\n"
        )
    for f in img.findings:
        out.write(f"warning: {f}\n")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from model.btrfs.check import btrfs_check

    img = open_image(args.image, args.super)
    try:
        res = btrfs_check(img, verify_data_csums=args.check_data_csum)
    except FormatError as e:  # a walk that cannot go on (the findings say what else)
        raise UserError(f"{args.image}: cannot check: {e}") from None
    if args.json:
        sys.stdout.write(
            dumps(
                {
                    "image": args.image,
                    "ok": res.ok,
                    "blocks_checked": res.blocks_checked,
                    "findings": [f.to_json() for f in res.findings],
                    "warnings": [f.to_json() for f in res.warnings],
                }
            )
            + "\n"
        )
    else:
        for f in res.warnings:
            print(f"warning: {f}")
        for f in res.findings:
            print(f)
        verdict = "no error found" if res.ok else f"{len(res.findings)} error(s) found"
        print(f"checked {res.blocks_checked} tree blocks: {verdict}")
    return 0 if res.ok else 1


def what_if(img: BtrfsImage, layout: str, name: str = "the image") -> Any:
    """The prediction for the same image re-laid out in ``layout``
    (:func:`model.btrfs.mount.predict_relayout`); ``name`` (the image's path) goes into the
    error message."""
    from model.btrfs.mkfs import MkfsError
    from model.btrfs.mount import predict_relayout

    try:
        return predict_relayout(img, layout)
    except MkfsError as e:
        raise UserError(f"{name}: cannot lay this image out as {layout}: {e}") from None


def print_cost(cost: Any, what: str) -> None:
    print(
        f"btrfs_read_block_groups on {what}: layout {cost.layout}, tree"
        f" {tree_name(cost.tree)} ({cost.tree_nodes} nodes + {cost.tree_leaves} leaves),"
        f" {cost.block_groups} block groups"
    )
    print(
        f"  blocks visited: {cost.visited} ({cost.visited_nodes} nodes +"
        f" {cost.visited_leaves} leaves) in {cost.searches} searches and"
        f" {cost.next_leaf_calls} next-leaf steps"
    )
    print(
        f"  first read inside btrfs_read_block_groups: {cost.first_read_inside}"
        f" (the root node was read earlier by open_ctree)"
    )


def cmd_predict_mount(args: argparse.Namespace) -> int:
    from model.btrfs.mount import predict_mount

    img = open_image(args.image, args.super)
    try:
        costs = [predict_mount(img)]
        for layout in args.what_if or []:
            costs.append(what_if(img, layout, args.image))
    except FormatError as e:
        raise UserError(f"{args.image}: cannot predict the mount: {e}") from None
    if args.json:
        sys.stdout.write(dumps({"image": args.image, "predictions": costs}, pretty=True) + "\n")
        return 0
    print_cost(costs[0], args.image)
    for c in costs[1:]:
        print_cost(c, f"{args.image} re-laid out (--what-if)")
    return 0


def cmd_seed_table(args: argparse.Namespace) -> int:
    from harness.mount.seedtable import seed_table

    return seed_table(args)


def cmd_mkfs(args: argparse.Namespace) -> int:
    import time

    from harness.sizes import parse_size
    from model.blocksource import FileSink
    from model.btrfs.csum import CSUM_NAMES
    from model.btrfs.mkfs import MkfsConfig, MkfsError, make_btrfs

    csum = {v: k for k, v in CSUM_NAMES.items()} | {"xxhash": 1, "blake2b": 3, "blake2": 3}
    if args.csum not in csum:
        raise UserError(f"unknown --csum {args.csum!r}: use crc32c, xxhash, sha256 or blake2")
    cfg = MkfsConfig(
        size=parse_size(args.size),
        nodesize=parse_size(args.nodesize),
        sectorsize=parse_size(args.sectorsize),
        csum_type=csum[args.csum],
        layout=args.layout,
        fill=parse_size(args.fill),
        extent_size=parse_size(args.extent_size),
        files=args.files,
        seed=args.seed,
        global_roots=args.global_roots,
    )
    try:
        cfg.validate()
    except MkfsError as e:
        raise UserError(str(e)) from None
    t0 = time.monotonic()
    with atomic_output(args.image, force=args.force, what="image") as out:
        try:
            with FileSink(out.fd, cfg.size) as sink:
                res = make_btrfs(cfg, sink)
        except MkfsError as e:
            raise UserError(str(e)) from None
        except OSError as e:
            raise UserError(
                f"{args.image}: cannot write a {cfg.size}-byte image there: {e.strerror}"
            ) from None
    dt = time.monotonic() - t0
    print(
        f"{args.image}: {cfg.layout}, {cfg.size} bytes, nodesize {cfg.nodesize},"
        f" {len(res.chunks)} block groups, {cfg.n_files} files, {cfg.n_extents} extents,"
        f" {res.tree_block_count} tree blocks, bytes_used {res.bytes_used} ({dt:.1f} s)"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from model.blocksource import FileSink, open_image_fd
    from model.btrfs.convert import spec_from_image
    from model.btrfs.mkfs import MkfsError, write_filesystem

    check_output(args.out, force=args.force, inputs=[args.image])  # before the work
    img = open_image(args.image, 0)
    if not args.force_inconsistent:  # the checker first: convert only a consistent image
        from model.btrfs.check import btrfs_check

        try:
            res = btrfs_check(img)
        except FormatError as e:
            raise UserError(f"{args.image}: cannot check it before converting: {e}") from None
        if not res.ok:
            raise UserError(
                f"{args.image}: inconsistent, {len(res.findings)} error(s), first: "
                f"{res.findings[0]}; run `fsoracle btrfs check {args.image}` (or convert "
                "anyway with --force-inconsistent)"
            )
    try:
        spec = spec_from_image(img, args.layout)
    except (MkfsError, FormatError) as e:
        raise UserError(f"{args.image}: cannot convert: {e}") from None
    # data stays where it is: copy the image (sparse), then rewrite its metadata
    with atomic_output(args.out, force=args.force, inputs=[args.image], what="output") as out:
        try:
            src_fd = open_image_fd(args.image)
        except OSError as e:
            raise UserError(f"{args.image}: cannot open: {e.strerror}") from None
        try:
            sparse_copy(src_fd, out.fd, img.source.size)
        except OSError as e:
            raise UserError(f"cannot copy {args.image} to {args.out}: {e.strerror or e}") from None
        finally:
            os.close(src_fd)
        try:
            with FileSink(out.fd, spec.size, existing=True) as sink:
                res = write_filesystem(spec, sink)
        except MkfsError as e:
            raise UserError(f"{args.image}: cannot convert: {e}") from None
    print(
        f"{args.out}: {args.image} rewritten as {args.layout}: {len(res.chunks)} block groups,"
        f" {res.tree_block_count} tree blocks (the input is unchanged)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("btrfs", help="read, check and write btrfs images with the model")
    bsub = p.add_subparsers(dest="btrfs_cmd", metavar="SUBCOMMAND")
    bsub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("image", help="image file or block device (opened read-only)")
        sp.add_argument(
            "--super",
            type=int_range(0, 2),
            default=0,
            choices=[0, 1, 2],
            metavar="N",
            help="use superblock mirror N (0 = primary at 64 KiB, 1 at 64 MiB, 2 at 256 GiB)",
        )
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    d = bsub.add_parser(
        "dump",
        help="superblock, features, per-tree counts and block groups; --tree: every item",
    )
    common(d)
    d.add_argument(
        "--tree",
        metavar="ID|NAME",
        help="print every item of this tree, or of every tree with 'all'"
        " (text in dump-tree's format, or --json)",
    )
    d.set_defaults(func=cmd_dump)

    c = bsub.add_parser("check", help="check consistency like `btrfs check` (exit 1 if not)")
    common(c)
    c.add_argument(
        "--check-data-csum",
        action="store_true",
        help="also verify every checksummed data sector (like btrfs check --check-data-csum)",
    )
    c.set_defaults(func=cmd_check)

    mk = bsub.add_parser("mkfs", help="write a complete filesystem image with the model")
    mk.add_argument("image")
    mk.add_argument("--size", required=True, help="device size, e.g. 1G, 128G, 1T")
    mk.add_argument("--nodesize", default="16K")
    mk.add_argument("--sectorsize", default="4K")
    mk.add_argument("--csum", default="crc32c", help="crc32c, xxhash, sha256 or blake2")
    mk.add_argument(
        "--layout",
        default="extent-tree",
        choices=["extent-tree", "bg-tree", "skinny-bg-tree", "extent-tree-v2"],
    )
    mk.add_argument(
        "--global-roots",
        type=int_range(1, 1024),
        default=1,
        help="extent-tree-v2: number of extent, csum and free space roots",
    )
    mk.add_argument("--fill", default="0", help="bytes of preallocated file extents")
    mk.add_argument("--extent-size", default="4M")
    mk.add_argument(
        "--files",
        type=int_range(0, 1 << 40),
        default=None,
        help="number of files (default: one per extent)",
    )
    mk.add_argument("--seed", type=seed, default=0)
    mk.add_argument("--force", action="store_true", help="overwrite an existing image")
    mk.set_defaults(func=cmd_mkfs)

    cv = bsub.add_parser(
        "convert", help="write a copy of an image with its block groups in another layout"
    )
    cv.add_argument("image", help="input image (read-only)")
    cv.add_argument("out", help="output image")
    cv.add_argument("--layout", required=True, choices=["extent-tree", "bg-tree", "skinny-bg-tree"])
    cv.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    cv.add_argument(
        "--force-inconsistent",
        action="store_true",
        help="convert even if `fsoracle btrfs check` finds errors in IMAGE (default: refuse)",
    )
    cv.set_defaults(func=cmd_convert)

    pm = bsub.add_parser(
        "predict-mount",
        help="tree blocks btrfs_read_block_groups reads at mount, from the kernel's search",
    )
    common(pm)
    pm.add_argument(
        "--what-if",
        action="append",
        metavar="LAYOUT",
        choices=["extent-tree", "bg-tree", "skinny-bg-tree"],
        help="also predict for the same block groups in this layout (repeatable)",
    )
    pm.set_defaults(func=cmd_predict_mount)

    st = bsub.add_parser(
        "seed-table",
        help="the 2019 SKINNY_BG_TREE RFC's block-count table beside our prediction",
    )
    st.add_argument("--size", default="1126G", help="device size (the seed used 1 TiB)")
    st.add_argument("--fill", default="1T")
    st.add_argument("--nodesize", default="4K")
    st.add_argument("--extent-size", default="4M")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_seed_table)
