"""The crash-consistency model (model/fsstate/crash.py): sync points, rule 1 (fsync'd files
exact) and rule 2 (never garbage), on hand-made logs and hand-made "after the crash" trees.

Every expected verdict follows from the rules as the module states them; the contents are
write_data() streams (SHAKE-128), so which bytes a state holds is arithmetic."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.workload.ontarget import DRIVER
from model.fsstate.crash import (
    BLOCK,
    ZERO,
    HistoryModel,
    block_hash,
    block_hashes,
    check_crash,
    garbage_byte,
)
from model.fsstate.oplog import Op, write_data

FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755
LNK = stat.S_IFLNK | 0o777


def run(model: HistoryModel, lines: list[str], proc: int = 0, inflight: int = 0) -> None:
    """Apply ops given as "name k=v ..." (the last ``inflight`` as in-flight)."""
    for i, line in enumerate(lines):
        name, *kv = line.split()
        args = dict(x.split("=", 1) for x in kv)
        op = Op(proc, len(model.applied), name, args)
        if i >= len(lines) - inflight:
            model.apply_inflight(op)
        else:
            model.apply(op)


def frec(path: str, data: bytes) -> dict[str, object]:
    return {
        "path": path,
        "mode": FILE,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "block_sha": block_hashes(data),
    }


def drec(path: str) -> dict[str, object]:
    return {"path": path, "mode": DIR, "size": 0}


def w(seed: int, n: int) -> bytes:
    return write_data(seed, n)


def findings(model: HistoryModel, walk: list[dict[str, object]], **kw: object) -> list[str]:
    res = check_crash(model, walk, **kw)  # type: ignore[arg-type]
    return [str(f) for f in res.findings]


# ---------------------------------------------------------------- blocks


def test_block_hash_pads_with_zeros() -> None:
    assert block_hash(b"") == hashlib.sha256(bytes(BLOCK)).hexdigest()[:16] == ZERO
    assert block_hash(b"ab") == hashlib.sha256(b"ab" + bytes(BLOCK - 2)).hexdigest()[:16]
    data = w(1, 2 * BLOCK + 5)
    assert block_hashes(data) == [
        block_hash(data[:BLOCK]),
        block_hash(data[BLOCK : 2 * BLOCK]),
        block_hash(data[2 * BLOCK :]),
    ]


def test_driver_walk_blocks_agree_with_the_model(tmp_path: Path) -> None:
    """The guest's driver (stdlib only) and the model compute block hashes independently."""
    d = tmp_path / "t"
    d.mkdir()
    contents = {"a": w(3, 3 * BLOCK + 100), "b": b"", "c": w(4, BLOCK)}
    for name, data in contents.items():
        (d / name).write_bytes(data)
    out = subprocess.run(
        [sys.executable, str(DRIVER), "walk", str(d), "--blocks"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    recs = {r["path"]: r for r in map(json.loads, out.splitlines())}
    for name, data in contents.items():
        assert recs[name]["block_sha"] == block_hashes(data)
        assert recs[name]["sha256"] == hashlib.sha256(data).hexdigest()


def test_garbage_byte() -> None:
    v1, v2 = bytes([1, 2, 3]) + bytes(BLOCK - 3), bytes([9, 9, 9]) + bytes(BLOCK - 3)
    assert garbage_byte(bytes([1, 9, 3]), [v1, v2]) is None  # each byte from some version
    assert garbage_byte(bytes([1, 7, 3]), [v1, v2]) == 1


# ---------------------------------------------------------------- rule 1


def test_fsynced_file_must_be_exact() -> None:
    m = HistoryModel("ext4")
    run(m, ["creat path=f mode=644", "write path=f off=0 len=5000 seed=1", "fsync path=f"])
    data = w(1, 5000)
    res = check_crash(m, [frec("f", data)])
    assert res.ok and res.strict_checked == 1 and res.files_checked == 1
    assert findings(m, []) == ["fsync: f: synced file is missing (p0#2 fsync)"]
    bad = bytearray(data)
    bad[4500] ^= 1
    assert findings(m, [frec("f", bytes(bad))]) == [
        "fsync: f: holds 5000 bytes, the sync point had 5000; first differing block 1 (p0#2 fsync)",
        "garbage: f: block 1 (offset 4096) is no version the file had there since its last"
        " sync point (bytes not read) (p0#1 write)",
    ]
    # older than the sync: the empty file it was before the write
    assert findings(m, [frec("f", b"")])[0].startswith("fsync: f: holds 0 bytes")


def test_changes_after_fsync_lift_rule_1_but_not_older_than_the_sync() -> None:
    m = HistoryModel("btrfs")
    run(
        m,
        [
            "creat path=f mode=644",
            "write path=f off=0 len=8192 seed=1",
            "fsync path=f",
            "write path=f off=0 len=4096 seed=2",
            "write path=f off=4096 len=4096 seed=3",
        ],
    )
    a, b, c = w(1, 8192), w(2, 4096), w(3, 4096)
    # synced state, final state, and block-wise mixes are all allowed
    for data in (a, b + c, b + a[4096:], a[:4096] + c):
        res = check_crash(m, [frec("f", data)])
        assert res.ok and res.strict_checked == 0, data[:4]
    # a block of zeros is older than the sync: garbage
    assert findings(m, [frec("f", a[:4096] + bytes(4096))]) == [
        "garbage: f: block 1 (offset 4096) is no version the file had there since its last"
        " sync point (bytes not read) (p0#4 write)"
    ]


def test_fdatasync_makes_contents_durable_but_no_name() -> None:
    m = HistoryModel("ext4")
    run(m, ["creat path=f mode=644", "write path=f off=0 len=100 seed=1", "fdatasync path=f"])
    res = check_crash(m, [])
    assert res.ok and res.strict_checked == 0  # the file may be missing
    assert findings(m, [frec("f", b"")]) == [
        "garbage: f: size 0: outside the sizes the file had since its last sync point"
        " (100..100) (p0#1 write)"
    ]


def test_rename_after_fsync_voids_the_record() -> None:
    m = HistoryModel("ext4")
    run(m, ["creat path=f mode=644", "fsync path=f", "rename old=f new=g"])
    res = check_crash(m, [])
    assert res.ok and res.strict_checked == 0
    # either name may show the file, never both states' garbage
    assert check_crash(m, [frec("f", b"")]).ok and check_crash(m, [frec("g", b"")]).ok


def test_fsync_horizon_ancestor_renamed_after_the_files_last_change() -> None:
    """fsync commits the namespace only up to the file's own last change: a directory
    renamed after the file last changed need not be durable under its new name."""
    m = HistoryModel("ext4")
    run(
        m,
        [
            "mkdir path=d mode=755",
            "creat path=d/f mode=644",
            "rename old=d new=e",
            "fsync path=e/f",
        ],
    )
    assert check_crash(m, []).strict_checked == 0
    m = HistoryModel("ext4")
    run(
        m,
        [
            "mkdir path=d mode=755",
            "creat path=d/f mode=644",
            "rename old=d new=e",
            "write path=e/f off=0 len=10 seed=5",
            "fsync path=e/f",
        ],
    )
    assert findings(m, []) == ["fsync: e/f: synced file is missing (p0#4 fsync)"]


def test_fsync_through_a_symlink_records_no_path() -> None:
    m = HistoryModel("ext4")
    run(m, ["creat path=f mode=644", "symlink target=f path=l", "fsync path=l"])
    assert check_crash(m, []).strict_checked == 0
    assert m.history(m.root.children["f"]).synced == 2  # type: ignore[arg-type]


def test_sync_covers_the_syncing_process_only() -> None:
    m = HistoryModel("ext4", proc_dirs=True)
    run(m, ["mkdir path=p0 mode=755", "creat path=p0/a mode=644", "sync"], proc=0)
    run(m, ["mkdir path=p1 mode=755", "creat path=p1/b mode=644"], proc=1)
    res = check_crash(m, [drec("p0"), frec("p0/a", b"")])
    assert res.ok and res.strict_checked == 1
    assert findings(m, []) == ["fsync: p0/a: synced file is missing (p0#2 sync)"]


def test_snapshot_syncs_source_and_snapshot() -> None:
    m = HistoryModel("btrfs", root_is_subvol=True)
    run(
        m,
        [
            "subvol_create path=s",
            "creat path=s/a mode=644",
            "write path=s/a off=0 len=10 seed=7",
            "snapshot src=s path=c",
        ],
    )
    res = check_crash(m, [drec("s"), frec("s/a", w(7, 10)), drec("c"), frec("c/a", w(7, 10))])
    assert res.ok and res.strict_checked == 2
    assert sorted(findings(m, [])) == [
        "fsync: c/a: synced file is missing (p0#3 snapshot)",
        "fsync: s/a: synced file is missing (p0#3 snapshot)",
    ]


# ---------------------------------------------------------------- in flight, rule 2


def test_inflight_op_may_show_but_syncs_nothing() -> None:
    m = HistoryModel("ext4")
    run(
        m,
        ["creat path=f mode=644", "write path=f off=0 len=4096 seed=1", "fsync path=f"],
        inflight=1,
    )
    assert check_crash(m, []).ok  # the fsync may not have happened
    m = HistoryModel("ext4")
    run(
        m,
        [
            "creat path=f mode=644",
            "fsync path=f",
            "write path=f off=0 len=4096 seed=1",
        ],
        inflight=1,
    )
    assert check_crash(m, [frec("f", w(1, 4096))]).strict_checked == 0  # content changed
    assert check_crash(m, [frec("f", b"")]).ok


def test_never_synced_file_any_state_zeros_allowed_foreign_data_not() -> None:
    m = HistoryModel("ext4")
    run(m, ["creat path=f mode=644", "write path=f off=0 len=8192 seed=1"])
    a = w(1, 8192)
    for data in (b"", a, bytes(8192), a[:4096] + bytes(4096), bytes(4096) + a[4096:]):
        assert check_crash(m, [frec("f", data)]).ok
    assert findings(m, [frec("f", w(2, 8192))])[0].startswith("garbage: f: block 0")


def test_size_between_smallest_and_largest_allowed() -> None:
    m = HistoryModel("ext4")
    run(
        m,
        [
            "creat path=f mode=644",
            "write path=f off=0 len=10000 seed=1",
            "fsync path=f",
            "write path=f off=3891 len=48090 seed=2",
        ],
    )
    final = bytearray(w(1, 10000))
    final[3891:] = w(2, 48090)
    assert len(final) == 51981
    # 39922: a size the file never had, inside 10000..51981 (an in-memory size mid-write)
    assert check_crash(m, [frec("f", bytes(final[:39922]))]).ok
    assert findings(m, [frec("f", w(1, 9999))]) == [
        "garbage: f: size 9999: outside the sizes the file had since its last sync point"
        " (10000..51981) (p0#3 write)"
    ]


def test_partial_last_block_is_a_prefix_of_a_version() -> None:
    m = HistoryModel("ext4")
    run(
        m,
        [
            "creat path=f mode=644",
            "write path=f off=0 len=8192 seed=1",
            "truncate path=f size=6000",
        ],
    )
    a = w(1, 8192)
    assert check_crash(m, [frec("f", a[:5000])]).ok  # cut inside block 1
    bad = a[:4096] + w(9, 904)
    assert findings(m, [frec("f", bad)])[0].startswith("garbage: f: block 1")


def test_byte_level_judgement_with_the_image_bytes() -> None:
    """A block equal to no version as a whole, each byte from some version: allowed when
    the bytes can be read; a byte from nowhere is named."""
    m = HistoryModel("ext4")
    run(
        m,
        [
            "creat path=f mode=644",
            "write path=f off=0 len=4096 seed=1",
            "write path=f off=0 len=4096 seed=2",
        ],
    )
    a, b = w(1, 4096), w(2, 4096)
    mixed = a[:100] + b[100:]
    rec = frec("f", mixed)
    blocks = {("f", 0): mixed}
    assert check_crash(m, [rec], read_block=lambda p, i: blocks.get((p, i))).ok
    junk = bytearray(mixed)
    junk[200] = next(x for x in range(256) if x not in (a[200], b[200], 0))
    blocks = {("f", 0): bytes(junk)}
    assert findings(m, [frec("f", bytes(junk))], read_block=lambda p, i: blocks.get((p, i))) == [
        f"garbage: f: byte 200 (block 0) is {junk[200]:#04x}, a value it never had there since"
        " the file's last sync point (p0#2 write)"
    ]


def test_stale_tail_is_a_known_btrfs_finding() -> None:
    """The saved reproducer's history (tests/vm/test_data/btrfs-stale-tail-...log): 20 480
    bytes synced, cut to 16 583 and synced, extended to 79 810. Block 4 coming back with
    its old bytes past 16 583 is what 6.1 and 6.12 showed: still a finding, tagged
    btrfs-stale-tail on btrfs only; a byte before the cut, or one the block never held,
    stays unexplained."""
    ops = [
        "creat path=f mode=644",
        "write path=f off=0 len=20480 seed=1",
        "sync",
        "truncate path=f size=16583",
        "sync",
        "truncate path=f size=79810",
    ]
    old = w(1, 20480)
    first = next(i for i in range(16583, 20480) if old[i])  # first old byte that is not 0
    found = bytearray(79810)
    found[:20480] = old  # block 4 whole from before the cut, zeros after it

    def judge(fs: str, data: bytes) -> list[tuple[str, str]]:
        m = HistoryModel(fs)
        run(m, ops)
        blocks = {("f", i): data[i * BLOCK : (i + 1) * BLOCK] for i in range(20)}
        res = check_crash(m, [frec("f", data)], read_block=lambda p, i: blocks.get((p, i)))
        assert len(res.findings) == 1
        assert res.unexplained == [f for f in res.findings if not f.known]
        return [(str(f), f.known) for f in res.findings]

    why = (
        f"garbage: f: byte {first} (block 4) is {old[first]:#04x}, a value it never had there"
        " since the file's last sync point (p0#5 truncate)"
    )
    assert judge("btrfs", bytes(found)) == [
        (why + " [known: btrfs-stale-tail]", "btrfs-stale-tail")
    ]
    assert judge("ext4", bytes(found)) == [(why, "")]
    junk = bytearray(found)  # a byte past the cut that block 4 never held
    junk[20000] = next(x for x in range(1, 256) if x != old[20000])
    assert judge("btrfs", bytes(junk))[0][1] == ""
    before = bytearray(found)  # a changed byte before the cut
    before[16400] = next(x for x in range(1, 256) if x != old[16400])
    assert judge("btrfs", bytes(before))[0][1] == ""


def test_namespace_garbage_and_symlink_targets() -> None:
    m = HistoryModel("ext4")
    run(
        m,
        [
            "mkdir path=d mode=755",
            "symlink target=d path=l",
            "unlink path=l",
            "symlink target=x path=l",
        ],
    )
    ok = [drec("d"), {"path": "l", "mode": LNK, "size": 1, "target": "d"}]
    assert check_crash(m, ok).ok  # the first symlink may come back
    assert findings(m, [{"path": "l", "mode": LNK, "size": 1, "target": "q"}]) == [
        "garbage: l: symlink target 'q' never stored there (p0#3 symlink)"
    ]
    assert findings(m, [frec("d", b"")]) == [
        "garbage: d: a file where the history had dir (p0#0 mkdir)"
    ]
    assert findings(m, [drec("z")]) == ["garbage: z: a dir where the history had nothing"]


def test_renamed_directory_contents_are_known_under_both_names() -> None:
    m = HistoryModel("ext4")
    run(m, ["mkdir path=d mode=755", "creat path=d/f mode=644", "rename old=d new=e"])
    assert check_crash(m, [drec("d"), frec("d/f", b"")]).ok
    assert check_crash(m, [drec("e"), frec("e/f", b"")]).ok


@pytest.mark.parametrize("fs", ["btrfs", "ext4"])
def test_history_model_predicts_what_fsmodel_does(fs: str) -> None:
    """The history bookkeeping changes no result: same results as the plain model."""
    from model.fsstate.namespace import FsModel

    lines = [
        "creat path=a mode=644",
        "write path=a off=100 len=9000 seed=3",
        "rename old=a new=b",
        "unlink path=a",
        "truncate path=b size=50",
        "mkdir path=d mode=700",
        "rmdir path=d",
        "fsync path=b",
    ]
    plain, hist = FsModel(fs), HistoryModel(fs)
    for i, line in enumerate(lines):
        name, *kv = line.split()
        op = Op(0, i, name, dict(x.split("=", 1) for x in kv))
        assert plain.apply(op) == hist.apply(op)
    assert plain.entries() == hist.entries()
