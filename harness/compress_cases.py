"""The compression case table: the writes each case makes and the outcome the model
predicts for them (host and VM runs share it)."""

from __future__ import annotations

from dataclasses import dataclass

SEED_OPS = "write 0 4K; write 8K 120K; sync; write 256K 128K"


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
