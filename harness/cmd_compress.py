"""``fsoracle compress predict``: the file extent items a kernel's compressed writeback
leaves after a sequence of writes and syncs (model: model/btrfs/compress_predict.py)."""

from __future__ import annotations

import argparse
import sys

from harness.errors import UserError
from harness.jsonout import dumps, to_jsonable
from harness.sizes import parse_size
from model.btrfs import compression as Z
from model.btrfs.compress_predict import Op, Prediction, predict
from model.btrfs.datapattern import KINDS

# The model holds the file's bytes in memory (to compress them as the kernel would): the
# file the ops make, and the existing file, stay within this size.
MAX_FILE = 1 << 30


def parse_ops(text: str) -> list[Op]:
    """``write OFF LEN; sync; truncate SIZE`` (sizes take K/M/G suffixes)."""
    ops: list[Op] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        words = part.split()
        try:
            if words[0] == "write" and len(words) == 3:
                ops.append(Op("write", parse_size(words[1]), parse_size(words[2])))
            elif words[0] == "sync" and len(words) == 1:
                ops.append(Op("sync"))
            elif words[0] == "truncate" and len(words) == 2:
                ops.append(Op("truncate", parse_size(words[1])))
            else:
                raise ValueError
        except (ValueError, IndexError):
            raise UserError(f"bad op {part!r}: write OFF LEN | sync | truncate SIZE") from None
        op = ops[-1]
        if op.kind == "write" and op.length <= 0:
            raise UserError(f"bad op {part!r}: empty write")
        if op.offset + op.length > MAX_FILE:
            raise UserError(
                f"bad op {part!r}: the file would pass {MAX_FILE} bytes, which the model holds"
                " in memory; use smaller offsets (compression works per 128 KiB extent)"
            )
    return ops


def render(p: Prediction) -> str:
    lines = [
        f"kernel {p.kernel}  mount -o {p.mount_opts}  data {p.data}  i_size {p.i_size}",
        f"inode flags: {' '.join(p.inode_flags) or '(none)'}",
        f"{'offset':>10} {'type':8} {'compr':6} {'ram_bytes':>10} {'num_bytes':>10} "
        f"{'disk_num':>10} {'ext_off':>8}",
    ]
    for e in p.extents:
        disk = f"inline:{e.inline_size}" if e.type == "inline" else str(e.disk_num_bytes)
        mark = "" if e.exact else "  ~ (size estimated)"
        lines.append(
            f"{e.offset:>10} {e.type:8} {e.compression:6} {e.ram_bytes:>10} {e.num_bytes:>10} "
            f"{disk:>10} {e.extent_offset:>8}{mark}"
        )
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        kernel = Z.check_kernel(args.kernel)
        Z.parse_mount_options(args.mount_opts)
    except ValueError as e:
        raise UserError(str(e)) from None
    ops = parse_ops(args.ops)
    try:
        existing = parse_size(args.existing_size) if args.existing_size else 0
    except ValueError:
        raise UserError(f"bad --existing-size {args.existing_size!r}") from None
    if existing > MAX_FILE:
        raise UserError(f"--existing-size {existing} is above the {MAX_FILE} bytes the model holds")
    try:
        p = predict(kernel, args.mount_opts, ops, args.data, existing)
    except ModuleNotFoundError as e:
        raise UserError(str(e)) from None
    sys.stdout.write((dumps(to_jsonable(p), pretty=True) if args.json else render(p)) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fam = sub.add_parser("compress", help="compressed writeback: predict extent layouts")
    fsub = fam.add_subparsers(dest="command", metavar="SUBCOMMAND")
    fsub.required = True
    p = fsub.add_parser("predict", help="file extent items and inode flags after the ops")
    p.add_argument("--kernel", required=True, help="debian:6.1 or debian:6.12")
    p.add_argument("--mount-opts", default="compress=zstd")
    p.add_argument("--ops", required=True, help='e.g. "write 0 4K; write 8K 120K; sync"')
    p.add_argument("--data", choices=KINDS, default="zeros")
    p.add_argument("--existing-size", default=None, help="file exists with SIZE bytes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
