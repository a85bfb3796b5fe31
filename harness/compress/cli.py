"""``fsoracle compress predict``: the file extent items a kernel's compressed writeback
leaves after a sequence of writes and syncs (model: model/btrfs/compress_predict.py)."""

from __future__ import annotations

import argparse
import sys

from harness.compress.config import MAX_FILE, parse_ops
from harness.compress.render import render_prediction
from harness.errors import UserError
from harness.jsonout import dumps, to_jsonable
from harness.sizes import parse_size
from model.btrfs import compression as Z
from model.btrfs.compress_predict import predict
from model.btrfs.datapattern import PATTERN_KINDS


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        kernel = Z.check_modelled_kernel(args.kernel)
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
    out = dumps(to_jsonable(p), pretty=True) if args.json else render_prediction(p)
    sys.stdout.write(out + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fam = sub.add_parser("compress", help="compressed writeback: predict extent layouts")
    fsub = fam.add_subparsers(dest="command", metavar="SUBCOMMAND")
    fsub.required = True
    p = fsub.add_parser("predict", help="file extent items and inode flags after the ops")
    p.add_argument("--kernel", required=True, help="debian:6.1 or debian:6.12")
    p.add_argument("--mount-opts", default="compress=zstd")
    p.add_argument("--ops", required=True, help='e.g. "write 0 4K; write 8K 120K; sync"')
    p.add_argument("--data", choices=PATTERN_KINDS, default="zeros")
    p.add_argument("--existing-size", default=None, help="file exists with SIZE bytes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
