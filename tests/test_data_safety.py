"""Issue 17: the commands that write never replace what the user did not ask to replace, and
the readers open only regular files and block devices.

Each test's input is the reproducer from the issue: a character device made with mknod, a
directory, a FIFO, the command's own input under another name, a symlink planted at the
temporary's old name, a missing directory, an empty name, a size the host filesystem cannot
hold, and SIGINT/SIGTERM to a running 1 TiB mkfs. What is checked comes from the file
system itself (stat, the bytes of the files, the directory listing), not from our output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.safeio import TMP_MARK, atomic_output, sparse_copy, write_atomic
from tests.tools import require_root, require_tool

FSORACLE = [sys.executable, "-m", "harness.cli"]


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> None:
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("fsoracle: "), err
    assert "Traceback" not in err


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if TMP_MARK in n or n.endswith(".tmp"))


@pytest.fixture(scope="module")
def small_btrfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("mkfs.btrfs")
    d = tmp_path_factory.mktemp("safety")
    img = d / "in.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True)
    return img


# ---- targets that are not regular files -------------------------------------------------


def test_mkfs_refuses_a_character_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's /dev/null case, on a node of our own: mknod c 1 3 in a temporary dir."""
    require_root("mknod")
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = os.lstat(node)
    rc, _, err = cli(["btrfs", "mkfs", str(node), "--size", "1G", "--force"], capsys)
    one_line_error(rc, err)
    assert "character device" in err
    after = os.lstat(node)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert leftovers(tmp_path) == []


def test_convert_refuses_a_block_device(
    tmp_path: Path, small_btrfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A block device node (loop0's numbers; nothing is opened through it)."""
    require_root("mknod")
    node = tmp_path / "disk"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    rc, _, err = cli(
        ["btrfs", "convert", str(small_btrfs), str(node), "--layout", "bg-tree", "--force"],
        capsys,
    )
    one_line_error(rc, err)
    assert "block device" in err
    assert stat.S_ISBLK(os.lstat(node).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
def test_mkfs_refuses_other_targets(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "t"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to(victim)
    rc, _, err = cli(["btrfs", "mkfs", str(target), "--size", "1G", "--force"], capsys)
    one_line_error(rc, err)
    assert {"directory": "a directory", "fifo": "a FIFO", "symlink": "a symbolic link"}[kind] in err
    assert victim.read_bytes() == b"keep me"
    assert os.path.lexists(target)
    if kind == "symlink":
        assert os.readlink(target) == str(victim)
    assert leftovers(tmp_path) == []


def test_convert_refuses_its_own_input_by_inode(
    tmp_path: Path, small_btrfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`convert IMG IMG --force`, and the same through a hard link (another name)."""
    img = tmp_path / "a.img"
    shutil.copyfile(small_btrfs, img)
    link = tmp_path / "b.img"
    os.link(img, link)
    h = digest(img)
    for out in (img, link):
        rc, _, err = cli(
            ["btrfs", "convert", str(img), str(out), "--layout", "bg-tree", "--force"], capsys
        )
        one_line_error(rc, err)
        assert "is the input" in err
    assert digest(img) == h
    assert leftovers(tmp_path) == []


def test_existing_target_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x.img"
    target.write_bytes(b"old")
    rc, _, err = cli(["btrfs", "mkfs", str(target), "--size", "256M"], capsys)
    one_line_error(rc, err)
    assert "--force" in err and target.read_bytes() == b"old"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["btrfs", "mkfs", "", "--size", "1G"], "empty"),
        (["btrfs", "mkfs", "{d}/no/such/dir/x.img", "--size", "1G"], "does not exist"),
        (["btrfs", "mkfs", "{d}/x.img", "--size", "99999P"], "largest file size"),
        (["btrfs", "mkfs", "{d}/", "--size", "1G", "--force"], "not a directory"),
    ],
)
def test_bad_targets_and_sizes_are_one_line(
    tmp_path: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(d=tmp_path) for a in argv]
    rc, _, err = cli(argv, capsys)
    one_line_error(rc, err)
    assert words in err or words.replace("not a", "must name a file, not a") in err
    assert leftovers(tmp_path) == []


def test_size_the_host_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--size 1P: the host filesystem refuses a file that large (EFBIG); that is one line
    and no temporary is left (the limit is the host's: tmp_path's filesystem must refuse
    1 PiB, which ext4 and tmpfs with 4 KiB pages do; checked first with a plain truncate)."""
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        try:
            f.truncate(1 << 50)
        except OSError:
            pass
        else:
            pytest.fail(f"{tmp_path}'s filesystem holds a 1 PiB file: pick another size")
    probe.unlink()
    rc, _, err = cli(["btrfs", "mkfs", str(tmp_path / "x.img"), "--size", "1P"], capsys)
    one_line_error(rc, err)
    assert "File too large" in err
    assert os.listdir(tmp_path) == []


# ---- the temporary ------------------------------------------------------------------------


def test_old_tmp_names_are_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A symlink planted at the old `TARGET.tmp` name, pointing at a victim, and a plain file
    at `OUT.tmp`: neither is followed, truncated or removed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "x.img.tmp").symlink_to(victim)
    (tmp_path / "y.img.tmp").write_bytes(b"someone's file")
    rc, _, err = cli(["btrfs", "mkfs", str(tmp_path / "x.img"), "--size", "256M"], capsys)
    assert rc == 0, err
    rc, _, err = cli(["btrfs", "mkfs", str(tmp_path / "y.img"), "--size", "256M"], capsys)
    assert rc == 0, err
    assert victim.read_bytes() == b"precious"
    assert os.readlink(tmp_path / "x.img.tmp") == str(victim)
    assert (tmp_path / "y.img.tmp").read_bytes() == b"someone's file"
    assert (tmp_path / "x.img").stat().st_size == 256 << 20
    assert [n for n in os.listdir(tmp_path) if TMP_MARK in n] == []


def test_temporary_is_exclusive_and_removed_on_error(tmp_path: Path) -> None:
    """The temporary is a new file (O_EXCL) in the target's directory with a recognisable
    name; on an exception it is removed and the existing target keeps its bytes."""
    target = tmp_path / "t.bin"
    target.write_bytes(b"before")
    seen: list[str] = []
    with pytest.raises(RuntimeError), atomic_output(target, force=True) as out:
        seen.append(out.tmp)
        assert os.path.dirname(out.tmp) == str(tmp_path)
        assert os.path.basename(out.tmp).startswith(f".t.bin.{TMP_MARK}")
        st = os.lstat(out.tmp)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_nlink == 1
        os.write(out.fd, b"half-written")
        raise RuntimeError("boom")
    assert not os.path.lexists(seen[0])
    assert target.read_bytes() == b"before"
    write_atomic(target, b"after")
    assert target.read_bytes() == b"after"
    assert sorted(os.listdir(tmp_path)) == ["t.bin"]


def test_sparse_copy_keeps_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.truncate(64 << 20)
        f.seek(10 << 20)
        f.write(b"x" * 8192)
        f.seek((64 << 20) - 3)
        f.write(b"end")
    dst = tmp_path / "dst"
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        sparse_copy(sfd, dfd, 64 << 20)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert digest(src) == digest(dst)
    assert os.stat(dst).st_blocks * 512 < 4 << 20  # holes stayed holes


# ---- signals ------------------------------------------------------------------------------


def _start_mkfs(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FSORACLE, "btrfs", "mkfs", str(tmp_path / "big.img"), "--size", "1T", "--fill", "1000G"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        # a terminal's foreground job: SIGINT at its default even under a backgrounded make
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_a_1tib_mkfs_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    """A 1 TiB mkfs with 1000 GiB of file extents takes ~20 s here; interrupted once its
    temporary exists, it exits (130 for ^C, 143 for SIGTERM) and leaves no file at all in
    the directory."""
    p = _start_mkfs(tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not any(TMP_MARK in n for n in os.listdir(tmp_path)):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "no temporary appeared"
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the write
        assert p.poll() is None, "mkfs finished before the signal: make it bigger"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []


# ---- readers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["btrfs", "dump", "{p}"],
        ["btrfs", "check", "{p}"],
        ["btrfs", "predict-mount", "{p}"],
        ["btrfs", "convert", "{p}", "{d}/out.img", "--layout", "bg-tree"],
        ["ext4", "dump", "{p}"],
        ["stress", "replay", "{p}"],
        ["hot", "temp", "--trace", "{p}"],
    ],
)
@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_readers_refuse_what_is_not_a_file(
    tmp_path: Path, argv: list[str], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO used to block the open forever; now every reader says what it is, at once."""
    import socket

    p = tmp_path / "in"
    sock = None
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(p))
    try:
        t0 = time.monotonic()
        rc, _, err = cli([a.format(p=p, d=tmp_path) for a in argv], capsys)
        assert time.monotonic() - t0 < 10
    finally:
        if sock is not None:
            sock.close()
    one_line_error(rc, err)
    assert {"fifo": "FIFO", "directory": "directory", "socket": "socket"}[kind] in err
    assert not os.path.exists(tmp_path / "out.img")


def test_op_log_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "bad.log"
    log.write_bytes(b"# fsoracle op log\n\xff\xfe write\n")
    rc, _, err = cli(["stress", "replay", str(log)], capsys)
    one_line_error(rc, err)
    assert "not UTF-8" in err and "0xff" in err


@pytest.mark.parametrize(
    "ops", ["write 0 99999999999T", "write 1P 4K", "write 0 4K; truncate 99999999P"]
)
def test_compress_predict_bounds_the_file(ops: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The model holds the file in memory: a file past 1 GiB is refused before it is built
    (the first used to raise OverflowError, the second MemoryError)."""
    rc, _, err = cli(["compress", "predict", "--kernel", "debian:6.12", "--ops", ops], capsys)
    one_line_error(rc, err)
