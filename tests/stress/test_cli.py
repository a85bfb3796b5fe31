"""``fsoracle stress``: the command family's surface and its user errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import build_parser, main


def test_stress_is_registered() -> None:
    text = build_parser().format_help()
    assert "stress" in text


OUT = "OUT"  # replaced by a directory that must not be created


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["stress", "--target", "vm", "--device", "scsi", "--out", OUT], "--device"),
        (["stress", "--target", "vm", "--kernel", "bogus:1", "--out", OUT], "--kernel"),
        (["stress", "--target", "vm", "--crash-at", "soon", "--out", OUT], "--crash-at"),
        (["stress", "--target", "vm", "--crash-at", "0", "--out", OUT], "from 1"),
        (["stress", "--target", "mars", "--out", OUT], "--target"),
        (["stress", "fsx", "--target", "vm", "--kernel", "bogus:1", "--out", OUT], "--kernel"),
        (["stress", "differential", "--target", "vm", "--device", "ide"], "--device"),
    ],
)
def test_target_user_errors_before_any_boot(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "o"
    assert main([str(out) if a == OUT else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not out.exists()  # nothing made, nothing booted


def test_replay_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stress", "replay", str(tmp_path / "missing.log")]) == 2
    bad = tmp_path / "bad.log"
    bad.write_text("p0 0 frobnicate -> 0\n")
    assert main(["stress", "replay", str(bad), "--target", "model"]) == 2
    good = tmp_path / "good.log"
    good.write_text("# fsoracle-oplog 1\n# fs=ext4\np0 0 creat path=a mode=644 -> 0\n")
    assert main(["stress", "replay", str(good), "--target", "model", "--fault", "nope"]) == 2
    assert main(["stress", "replay", str(good), "--target", "vm", "--device", "scsi"]) == 2
    nofs = tmp_path / "nofs.log"
    nofs.write_text("p0 0 sync -> 0\n")
    assert main(["stress", "replay", str(nofs), "--target", "model"]) == 2
    errs = capsys.readouterr().err.splitlines()
    assert len(errs) == 5 and all(e.startswith("fsoracle: ") for e in errs)


def test_replay_model_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "# fsoracle-oplog 1\n# fs=btrfs mode=differential root=subvol\n"
        "p0 0 creat path=a mode=644 -> 0\n"
        "p0 1 creat path=a mode=644 -> 0\n"
    )
    assert main(["stress", "replay", str(log), "--target", "model"]) == 1
    out = capsys.readouterr().out
    assert "p0#1 creat: expected EEXIST, got 0 [a]" in out


def test_bad_fs_options_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stress", "--layout", "skinny", "--ops", "1"]) == 2
    assert main(["stress", "--mkfs", "nope", "--ops", "1"]) == 2
    assert "layout" in capsys.readouterr().err
