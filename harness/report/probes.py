"""Small experiments the reports need that no ``fsoracle`` command prints yet; each prints
one JSON document on stdout. Run as ``python -m harness.report.probes NAME [options]``.

``writeback-split``
    One file written, then written back by a flusher pass that stops after N folios (a bio
    boundary), then synced; through the async path (6.1/6.12) and the delayed-compression
    path of ``model/btrfs/writeback.py``. Prints each path's file extent items, ordered
    extents added and finished, and the invariant violations (``check_all``).

``ext4-fresh-memory``
    ``mkfs.ext4`` on a sparse image of SIZE (lazy init: a fresh filesystem), read back with
    ``model/ext4/image.py``, then the free-space tree allocator
    (``model/ext4/frsp.py``) at a cache level serves one write: its tree memory
    (``frsp_tree_usage``), trees and nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.argtypes import int_range
from harness.sizes import parse_size


def writeback_path(path: str, kernel: str, size: int, data: str, bio_folios: int) -> dict[str, Any]:
    from model.btrfs import writeback as W
    from model.btrfs.datapattern import pattern_bytes

    m = W.WritebackModel(path, kernel)
    m.write(0, pattern_bytes(data, 0, size))
    # the flusher writes back bio_folios folios (finishing async chunk work between folios,
    # as the worker would), then its pass ends (nr_to_write used up) and its bio goes out
    for _ in range(bio_folios):
        while True:
            names = [n for n, _ in m.enabled()]
            pick = next((n for n in ("compress_chunk", "submit_chunk") if n in names), None)
            if pick is None:
                break
            m.fire(*m.enabled()[names.index(pick)])
        if m.can_flush_step() and m._next_dirty() is not None:
            m.flush_step()
    if m.open_bio is not None:
        m.flush_break()
    m.sync()
    return {
        "extents": [
            {
                "file_offset": i.file_offset,
                "type": i.type,
                "compression": i.compression,
                "ram_bytes": i.ram_bytes,
                "num_bytes": i.num_bytes,
                "disk_num_bytes": i.disk_num_bytes,
            }
            for i in m.items
        ],
        "compressed_extents": sum(1 for i in m.items if i.compression),
        "ordered_added": len(m.ordered_added),
        "ordered_finished": len(m.ordered_finished),
        "compressions": [
            {"start": s, "end": e, "folios_locked": lk} for s, e, lk in m.compressions
        ],
        "violations": [str(v) for v in W.check_all(m)],
        "contents_ok": m.file_contents() == bytes(m.expected),
    }


def probe_writeback_split(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    return {
        "probe": "writeback-split",
        "kernel": args.kernel,
        "size": size,
        "data": args.data,
        "bio_folios": args.bio_folios,
        "paths": {
            p: writeback_path(p, args.kernel, size, args.data, args.bio_folios)
            for p in ("async", "delayed")
        },
    }


def probe_ext4_fresh_memory(args: argparse.Namespace) -> dict[str, Any]:
    from model.blocksource import FileSource
    from model.ext4.constants import FRSP_NODE_SIZE
    from model.ext4.costs import CostModel
    from model.ext4.freespace import ImageGroups
    from model.ext4.frsp import FrspAllocator
    from model.ext4.image import Ext4Image
    from model.ext4.sim import write_file

    size = parse_size(args.size)
    preset = Path(__file__).resolve().parents[1] / "ext4" / "presets" / "ext4_cost_model.yaml"
    import yaml

    cm = CostModel.from_dict(yaml.safe_load(preset.read_text()) or {})
    with tempfile.TemporaryDirectory(prefix="fsoracle-ext4-fresh-") as tmp:
        img = Path(tmp) / "fresh.img"
        with open(img, "wb") as f:
            f.truncate(size)
        mkfs = [
            "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(img),
        ]  # fmt: skip
        subprocess.run(mkfs, check=True, capture_output=True, env=dict(os.environ, LC_ALL="C"))
        version = subprocess.run(
            ["mkfs.ext4", "-V"], capture_output=True, text=True
        ).stderr.splitlines()[0:1]
        src = FileSource(str(img))
        try:
            im = Ext4Image.open(src)
            groups = ImageGroups(im)
            a = FrspAllocator(groups, args.level, mem_limit=0, clock=cm.seconds, hz=cm.hz)
            r = write_file(a, groups.geometry, parse_size(args.write), cm)
            geo = groups.geometry
            out = {
                "probe": "ext4-fresh-memory",
                "mkfs": version[0] if version else "mkfs.ext4",
                "size": size,
                "groups": geo.ngroups,
                "flex_bgs": a.ntrees,
                "level": args.level,
                "write_bytes": parse_size(args.write),
                "memory_bytes": r.memory_bytes,
                "node_bytes": FRSP_NODE_SIZE,
                "nodes": r.memory_bytes // FRSP_NODE_SIZE,
                "trees_cached": r.trees_cached,
                "free_blocks": sum(groups.desc_free(g) for g in range(geo.ngroups)),
            }
        finally:
            src.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.report.probes")
    sub = ap.add_subparsers(dest="probe", required=True)
    w = sub.add_parser("writeback-split")
    w.add_argument("--kernel", default="6.12", choices=["6.1", "6.12"])
    w.add_argument("--size", default="128K")
    w.add_argument("--data", default="text", choices=["zeros", "text", "random"])
    w.add_argument("--bio-folios", type=int_range(1, 1 << 16), default=16)
    w.set_defaults(func=probe_writeback_split)
    e = sub.add_parser("ext4-fresh-memory")
    e.add_argument("--size", default="100G")
    e.add_argument("--level", type=int_range(0, 3), default=1, choices=[0, 1, 2, 3])
    e.add_argument("--write", default="10M")
    e.set_defaults(func=probe_ext4_fresh_memory)
    args = ap.parse_args(argv)
    print(json.dumps(args.func(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
