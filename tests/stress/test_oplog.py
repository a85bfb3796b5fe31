"""The op log format: the guest driver writes it, the model reads it; two independent
readings of one format, held together here. Expected values come from the format's
definition (module docstring of model/fsstate/oplog.py), FIPS 202 via hashlib, and the
uapi header's ioctl definitions."""

from __future__ import annotations

import ast
import errno
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from harness.workload import driver as drv
from model.fsstate import oplog
from model.fsstate.oplog import LogError, Op, format_op, parse_log, parse_op, write_data

ODD = ["a b", "x=y", "100%", "ünï", "new\nline", "tab\tx", "->", "p0", ""]


@pytest.mark.parametrize("value", ODD)
def test_driver_line_reads_back_in_the_model(value: str) -> None:
    line = drv.format_line(3, 17, "symlink", {"target": value, "path": "d/l"}, "0", {})
    op = parse_op(line)
    assert (op.proc, op.seq, op.name, op.result) == (3, 17, "symlink", "0")
    assert op.args == {"target": value, "path": "d/l"}


@pytest.mark.parametrize("value", ODD)
def test_model_line_reads_back_in_the_driver(value: str) -> None:
    op = Op(1, 2, "read", {"path": value, "off": "5", "len": "7"}, "7", {"sha256": "ab"})
    proc, seq, name, args, result, extra = drv.parse_line(format_op(op))
    assert (proc, seq, name, args, result, extra) == (1, 2, "read", op.args, "7", op.extra)


def test_a_line_has_no_spaces_inside_values() -> None:
    line = format_op(Op(0, 0, "creat", {"path": "a b=c", "mode": "644"}, "EEXIST"))
    assert line == "p0 0 creat path=a%20b%3Dc mode=644 -> EEXIST"


def test_both_sides_know_the_same_ops() -> None:
    """The driver's built-in op table is the registry's (``make ops-table`` writes it), it
    draws every kind the registry declares, and it has a handler for every op."""
    from model.fsstate import ops

    assert drv.load_table() == ops.guest_table()
    assert {op["name"]: tuple(a["key"] for a in op["args"]) for op in drv.load_table()["ops"]} == (
        dict(oplog.OP_ARGS)
    )
    assert set(drv.KINDS) == set(ops.KINDS)
    assert all(hasattr(drv.Executor, f"op_{name}") for name in ops.REGISTRY)
    assert drv.FALLOC == oplog.FALLOC_FLAGS
    assert drv.table_digest(drv.load_table()) == ops.table_digest(ops.guest_table())


@pytest.mark.parametrize(("seed", "n"), [(0, 0), (0, 1), (7, 4096), (2**40 + 3, 70000)])
def test_write_data_is_shake128_of_the_seed(seed: int, n: int) -> None:
    want = hashlib.shake_128(b"fsoracle-write:" + seed.to_bytes(8, "little")).digest(n)
    assert write_data(seed, n) == want == drv.write_data(seed, n)


def test_write_data_is_prefix_stable() -> None:
    assert write_data(5, 100)[:37] == write_data(5, 37)
    assert write_data(5, 100) != write_data(6, 100)


def test_falloc_mode_names_are_the_uapi_bits() -> None:
    # include/uapi/linux/falloc.h: KEEP_SIZE 0x01, PUNCH_HOLE 0x02, ZERO_RANGE 0x10
    assert oplog.falloc_mode("punch_hole|keep_size") == 0x03
    assert oplog.falloc_mode("zero_range") == 0x10
    assert drv.falloc_mode("zero_range|keep_size") == 0x11


def test_ioctl_numbers_match_the_uapi_header() -> None:
    # _IOW(0x94, nr, struct of 4096 bytes) = (1 << 30) | (4096 << 16) | (0x94 << 8) | nr
    assert drv.BTRFS_IOC_SUBVOL_CREATE == 0x5000940E
    assert drv.BTRFS_IOC_SNAP_DESTROY == 0x5000940F
    assert drv.BTRFS_IOC_SNAP_CREATE_V2 == 0x50009417
    # struct btrfs_ioctl_vol_args: __s64 fd + char name[4088];
    # struct btrfs_ioctl_vol_args_v2: fd, transid, flags, union of 4 u64, name[4040]
    assert drv.VOL_ARGS.size == 8 + 4088 == 4096
    assert drv.VOL_ARGS_V2.size == 8 * 3 + 32 + 4040 == 4096


def test_errno_95_is_spelled_as_the_kernel_spells_it() -> None:
    assert oplog.errno_name(errno.EOPNOTSUPP) == "EOPNOTSUPP"
    assert drv._errname(OSError(errno.EOPNOTSUPP, "x")) == "EOPNOTSUPP"
    assert oplog.errno_name(errno.ENOENT) == "ENOENT"


def test_parse_log_sorts_by_process_then_sequence() -> None:
    text = "\n".join(
        [
            "# fsoracle-oplog 1",
            "# fs=btrfs seed=4",
            "p1 0 mkdir path=p1 mode=755 -> 0",
            "p0 1 sync -> 0",
            "p0 0 mkdir path=p0 mode=755 -> 0",
        ]
    )
    log = parse_log(text)
    assert log.header == {"fs": "btrfs", "seed": "4"}
    assert [(o.proc, o.seq) for o in log.ops] == [(0, 0), (0, 1), (1, 0)]


@pytest.mark.parametrize(
    "bad",
    [
        "q0 0 sync -> 0",
        "p0 x sync -> 0",
        "p0 0 frobnicate path=a -> 0",
        "p0 0 write path=a off=0 -> 0",
        "p0 0 sync ->",
        "p0 0 rmdir path",
        "p0 0 sync -> 0\np0 0 sync -> 0",
    ],
)
def test_bad_logs_are_log_errors(bad: str) -> None:
    with pytest.raises(LogError):
        parse_log(bad)


def test_the_driver_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(drv.__file__).read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            mods.add((node.module or "").split(".")[0])
    assert mods - {"__future__"} <= set(sys.stdlib_module_names)


def test_the_driver_runs_as_one_file_outside_the_project(tmp_path: Path) -> None:
    copy = tmp_path / "driver.py"
    copy.write_text(Path(drv.__file__).read_text())
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"abc")
    (tree / "l").symlink_to("d/f")
    r = subprocess.run(
        [sys.executable, "-I", str(copy), "walk", str(tree)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    recs = [ln for ln in r.stdout.splitlines()]
    assert [__import__("json").loads(x)["path"] for x in recs] == ["d", "d/f", "l"]
    assert hashlib.sha256(b"abc").hexdigest() in r.stdout
    assert '"target": "d/f"' in r.stdout
