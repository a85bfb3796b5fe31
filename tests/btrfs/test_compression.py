"""The compression decision (model/btrfs/compression.py) against the kernel source's
arithmetic and rules, and the predict CLI."""

from __future__ import annotations

import json
import struct

import pytest

from harness.cli import main
from model.btrfs import compression as Z
from model.btrfs.compress_predict import WriteOp, predict
from model.btrfs.datapattern import pattern_bytes


def reader(kind: str, size: int) -> Z.ReadFn:
    data = pattern_bytes(kind, 0, size)
    return lambda off, n: (data[off : off + n] + bytes(n))[:n]


def test_ilog2_w_and_entropy_max() -> None:
    # ilog2(2^4) = 4, so entropy_max = 8 * 4 = 32; ilog2(8192^4) = 52 (the source comment)
    assert Z.ilog2_w(2) == 4
    assert Z.ilog2_w(8192) == 52
    assert Z.MAX_SAMPLE_SIZE == 8192


def test_sample_sizes() -> None:
    # 16 bytes every 256: 16 samples per 4 KiB page, 32 pages in 128 KiB
    r = reader("text", 1 << 20)
    assert len(Z.heuristic_collect_sample(r, 0, 4095)) == 16 * 16
    assert len(Z.heuristic_collect_sample(r, 0, 128 * 1024 - 1)) == 8192
    # a longer range is sampled over its first 128 KiB (+1 byte) only
    assert len(Z.heuristic_collect_sample(r, 0, (1 << 20) - 1)) == 8192
    # the sample starts at the range start and keeps its offset within each page
    s = Z.heuristic_collect_sample(r, 100, 8191)
    data = pattern_bytes("text", 0, 8192)
    assert s[:16] == data[100:116] and s[16:32] == data[356:372]


def test_radix_sort_descending_and_its_quirk() -> None:
    a = [3, 40, 0, 17, 2]
    Z.radix_sort(a)
    assert a == [40, 17, 3, 2, 0]
    # max 256: bitlen = ALIGN(ilog2(256) = 8, 8) = 8, so bit 8 is never looked at and
    # 256 sorts as 0 (kernel arithmetic, compression.c radix_sort)
    b = [256, 1, 2]
    Z.radix_sort(b)
    assert b == [2, 1, 256]


def test_heuristic_verdicts() -> None:
    assert Z.btrfs_compress_heuristic_explain(reader("zeros", 1 << 17), 0, (1 << 17) - 1).ret == 1
    text = Z.btrfs_compress_heuristic_explain(reader("text", 1 << 17), 0, (1 << 17) - 1)
    assert text.ret == 2 and text.byte_set is not None and text.byte_set < 64
    rnd = Z.btrfs_compress_heuristic_explain(reader("random", 1 << 17), 0, (1 << 17) - 1)
    # 8192 uniform bytes: 200 buckets of ~32 hold ~78 % < 90 %: core set reaches 200
    assert rnd.ret == 0 and rnd.core_set == 200


def test_shannon_entropy_uniform_sample() -> None:
    # 256 values x 32 each: sum 8192 * (52 - ilog2(32^4)=20) / 8192 = 32 -> 100 %
    bucket = [32] * 256
    assert Z.shannon_entropy(bucket, 8192) == 100


def test_inline_rules() -> None:
    o = Z.MountOptions(Z.BTRFS_COMPRESS_ZSTD)
    assert Z.can_cow_file_range_inline(o, 3000, 0, 3000, 1200)
    assert not Z.can_cow_file_range_inline(o, 3000, 0, 3000, 0)  # 3000 > max_inline 2048
    assert not Z.can_cow_file_range_inline(o, 8192, 0, 4096, 100)  # not the whole file
    assert not Z.can_cow_file_range_inline(o, 100, 4096, 100, 0)  # not offset 0
    assert Z.btrfs_max_inline_data_size(16384) == 16384 - 101 - 25 - 21


def test_async_chunks() -> None:
    # DIV_ROUND_UP(end - start, SZ_512K) chunks of 512 KiB, end inclusive
    assert Z.async_chunks(0, (1 << 20) - 1) == [(0, 524287), (524288, 1048575)]
    assert Z.async_chunks(0, 524287) == [(0, 524287)]
    assert len(Z.async_chunks(0, 640 * 1024 - 1)) == 2


def test_lzo_framing() -> None:
    # segment headers never straddle a sector: 4 + 4 + 4082 = 4090 leaves 6 bytes, no pad;
    # 4 + 4 + 4086 = 4094 leaves 2 < 4: padded to 4096
    assert len(Z.lzo_pack_sizes([4082])) == 4090
    assert len(Z.lzo_pack_sizes([4086])) == 4096
    assert struct.unpack("<I", Z.lzo_pack_sizes([4086])[:4])[0] == 4096


def test_zstd_failure_rule() -> None:
    # random data does not shrink: zstd_compress_folios returns -E2BIG (tot_out >= tot_in)
    out = Z.zstd_compress_folios(pattern_bytes("random", 0, 65536), 3, 16)
    assert out.ret == Z.E2BIG
    out = Z.zstd_compress_folios(bytes(65536), 3, 16)
    assert out.ret == 0 and out.total_in == 65536


def _flags(kernel: str, mount: str, ops: str, data: str, existing: int = 0) -> list[str]:
    from harness.compress.config import parse_ops

    return predict(kernel, mount, parse_ops(ops), data, existing).inode_flags


def test_seed_case_differs_between_61_and_612() -> None:
    """inode.c compress_file_range: a new file's [0,4K) cannot be inlined (i_size 128K) and
    one block never saves a sector. 6.1 runs the profitability check and marks the inode
    NOCOMPRESS, so [8K,128K) is written plain; 6.12 has the "single block at offset 0"
    fallback (no flag) and compresses [8K,128K)."""
    ops = "write 0 4K; write 8K 120K; sync; write 256K 128K"
    p61 = predict(
        "6.1", "compress=zstd", [WriteOp("write", 0, 4096), WriteOp("write", 8192, 122880)]
    )
    p612 = predict(
        "6.12", "compress=zstd", [WriteOp("write", 0, 4096), WriteOp("write", 8192, 122880)]
    )
    assert p61.inode_flags == ["NOCOMPRESS"]
    assert [e.compression for e in p61.extents] == ["none", "none"]
    assert p612.inode_flags == []
    assert [e.compression for e in p612.extents] == ["none", "zstd"]
    # on an existing 1 MiB file the 4K write is "one block inside the file": no attempt, no flag
    assert _flags("6.1", "compress=zstd", ops, "text", 1 << 20) == []
    # compress-force never sets the flag
    assert _flags("6.1", "compress-force=zstd", ops, "text") == []


def test_extent_limits() -> None:
    p = predict("6.12", "compress=zstd", [WriteOp("write", 0, 640 * 1024)], "text")
    assert [e.ram_bytes for e in p.extents] == [131072] * 5
    assert all(e.compression == "zstd" and e.disk_num_bytes % 4096 == 0 for e in p.extents)
    # the compressed size must save at least one sector (compressed + blocksize <= input)
    assert all(e.disk_num_bytes + 4096 <= e.ram_bytes for e in p.extents)


def test_cli_predict_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "compress",
            "predict",
            "--kernel",
            "debian:6.12",
            "--mount-opts",
            "compress=zstd",
            "--ops",
            "write 0 4K; write 8K 120K; sync; write 256K 128K",
            "--data",
            "zeros",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [(e["offset"], e["compression"]) for e in out["extents"]] == [
        (0, "none"),
        (8192, "zstd"),
        (262144, "zstd"),
    ]
    assert out["extents"][1]["disk_num_bytes"] == 4096  # 120 KiB of zeros: 22 bytes -> 1 sector


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "predict", "--kernel", "debian:5.10", "--ops", "sync"]) == 2
    assert main(["compress", "predict", "--kernel", "6.1", "--ops", "write 0"]) == 2
    assert "bad op" in capsys.readouterr().err
