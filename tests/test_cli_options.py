"""Issue 17: integer and float options are parsed with ranges, never a silent wrap.

The structural test walks every parser of the ``fsoracle`` CLI (and the benchmark scripts'
option lists, read from their source) and fails on a bare ``type=int`` / ``type=float``; the
behavioural ones give the issue's out-of-range values and expect argparse's one-line error
(exit 2) or the command's own.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from harness.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def all_parsers(p: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(p.prog, p)]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                out += all_parsers(sp)
    return out


def test_no_option_is_a_bare_int_or_float() -> None:
    bare = []
    for prog, p in all_parsers(build_parser()):
        for a in p._actions:
            if a.type in (int, float):
                bare.append(f"{prog} {'/'.join(a.option_strings) or a.dest}")
    assert bare == []


def test_benchmark_scripts_use_ranges_too() -> None:
    bare = []
    for f in sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "harness").rglob("*.py")):
        if f.name == "driver.py" or f.name.endswith("_guest.py"):
            continue  # guest programs are stdlib-only (they run in a VM's Python)
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "type"
                and isinstance(node.value, ast.Name)
                and node.value.id in ("int", "float")
            ):
                bare.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


@pytest.mark.parametrize(
    "argv",
    [
        ["btrfs", "dump", "x.img", "--super", "3"],
        ["btrfs", "mkfs", "x.img", "--size", "1G", "--seed", "-1"],
        ["btrfs", "mkfs", "x.img", "--size", "1G", "--global-roots", "0"],
        ["btrfs", "mkfs", "x.img", "--size", "1G", "--files", "99999999999999999999"],
        ["stress", "--procs", "0"],
        ["stress", "--ops", "-5"],
        ["stress", "differential", "--examples", "0"],
        ["etv2", "contention", "--think", "nan"],
        ["etv2", "contention", "--hold", "-1"],
        ["vm", "run", "--cpus", "0", "--", "true"],
        ["vm", "run", "--timeout", "inf", "--", "true"],
    ],
)
def test_out_of_range_is_an_argparse_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "out of range" in err or "not a" in err or "invalid choice" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("tree", ["99999999999999999999999", "-1", str(1 << 64)])
def test_tree_id_does_not_wrap(
    tree: str, capsys: pytest.CaptureFixture[str], btrfs_image: object
) -> None:
    """``--tree 99999999999999999999999`` used to wrap modulo 2^64 and ``-1`` meant 2^64-1."""
    img = btrfs_image("default")  # type: ignore[operator]
    rc = main(["btrfs", "dump", str(img), "--tree", tree])
    err = capsys.readouterr().err
    assert rc == 2 and "out of range" in err and err.count("\n") == 1, err


def test_largest_tree_id_is_accepted(
    capsys: pytest.CaptureFixture[str], btrfs_image: object
) -> None:
    """2^64 - 1 is a valid objectid (the image just has no such tree)."""
    img = btrfs_image("default")  # type: ignore[operator]
    rc = main(["btrfs", "dump", str(img), "--tree", str((1 << 64) - 1)])
    err = capsys.readouterr().err
    assert rc == 2 and "has no tree 18446744073709551615" in err, err
