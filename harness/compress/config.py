"""What a compression run is given: the case table (the writes each case makes; host and
VM runs share it) and the op grammar a case's ops, and ``fsoracle compress predict
--ops``, are written in."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError
from harness.sizes import parse_size
from model.btrfs.compress_predict import WriteOp

SEED_OPS = "write 0 4K; write 8K 120K; sync; write 256K 128K"

# The model holds the file's bytes in memory (to compress them as the kernel would): the
# file the ops make, and the existing file, stay within this size.
MAX_FILE = 1 << 30


@dataclass(frozen=True)
class Case:
    name: str
    mount_opts: str
    ops: str
    data: str
    existing_size: int = 0


CASES = [
    Case("seed-new-text", "compress=zstd", SEED_OPS, "text"),
    Case("seed-new-zeros", "compress=zstd", SEED_OPS, "zeros"),
    Case("seed-existing-text", "compress=zstd", SEED_OPS, "text", 1 << 20),
    Case("seed-existing-zeros", "compress=zstd", SEED_OPS, "zeros", 1 << 20),
    Case("force-seed-text", "compress-force=zstd", SEED_OPS, "text"),
    Case("force-random", "compress-force=zstd", "write 0 256K", "random"),
    Case("incompressible", "compress=zstd", "write 0 1M; sync; write 1M 128K", "random"),
    Case("inline-compressed", "compress=zstd", "write 0 3000", "text"),
    Case("inline-plain", "compress=zstd", "write 0 1000", "random"),
    Case("one-block-then-more", "compress=zstd", "write 0 4K; sync; write 4K 128K", "text"),
    Case(
        "one-block-no-inline",
        "compress=zstd,max_inline=0",
        "write 0 4K; sync; write 4K 128K",
        "text",
    ),
    Case("text-640K", "compress=zstd", "write 0 640K", "text"),
    Case("zlib-text", "compress=zlib", "write 0 256K", "text"),
    Case("lzo-text", "compress=lzo", "write 0 256K", "text"),
]


def parse_ops(text: str) -> list[WriteOp]:
    """``write OFF LEN; sync; truncate SIZE`` (sizes take K/M/G suffixes)."""
    ops: list[WriteOp] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        words = part.split()
        try:
            if words[0] == "write" and len(words) == 3:
                ops.append(WriteOp("write", parse_size(words[1]), parse_size(words[2])))
            elif words[0] == "sync" and len(words) == 1:
                ops.append(WriteOp("sync"))
            elif words[0] == "truncate" and len(words) == 2:
                ops.append(WriteOp("truncate", parse_size(words[1])))
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
