"""The batch CLI fuzzer's worker side: mutated images through ``harness.cli.main(argv)``,
in-process, in a few worker processes.

A worker copies the clean images once into its own directory; for each mutant it writes the
mutant's byte patches (and truncation) into its copy, runs the mutant's commands through
``main(argv)`` with stdout/stderr captured, an alarm per command and the worker's address
space limited (``RLIMIT_AS``), checks that the image's bytes did not change, then restores
the copy. No subprocess per image: the cost per image is the commands themselves.

The outcome of one command is its exit status (0, 1, 2: the only ones allowed) or one of the
failures: ``traceback`` (an exception escaped ``main``, or stderr holds a traceback),
``hang`` (the alarm fired), ``memory`` (MemoryError under the limit), ``multi-line`` (an
exit-2 error of more than one line), ``unnamed`` (an exit-2 error that does not name the
image), ``changed`` (the input was written).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import resource
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ALARM_S = 20  # per command; a clean small image takes well under a second
AS_LIMIT = 3 << 30  # bytes of address space per worker (the images are mmapped)
FAILURES = ("traceback", "hang", "memory", "multi-line", "unnamed", "changed")


@dataclass(frozen=True)
class Mutant:
    """One mutated image: ``patches`` (offset, bytes) written over the clean image
    ``image``, then ``truncate`` (a new length) if set; ``commands`` are argv lists where
    ``{img}`` is the image and ``{out}`` a path the command may write."""

    ident: int
    fs: str
    image: str
    family: str
    patches: tuple[tuple[int, bytes], ...]
    truncate: int | None
    commands: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass
class Outcome:
    ident: int
    fs: str
    family: str
    command: str  # "btrfs check", "ext4 dump --json"...
    status: int | str
    detail: str = ""
    stdout_tail: str = ""
    seconds: float = 0.0


@dataclass
class _Worker:
    workdir: Path
    clean: dict[str, Path]
    copies: dict[str, Path] = field(default_factory=dict)
    clean_hashes: dict[str, str] = field(default_factory=dict)


_W: _Worker | None = None


class _Alarm(BaseException):
    """Raised by SIGALRM; a BaseException so that ``except Exception`` cannot swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    out = []
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, min(end, size)))
        off = end
    return out


def content_hash(path: Path) -> str:
    """sha256 of the size and of every non-zero 64 KiB-aligned block with its offset: holes
    and written zeros hash alike, so the hash depends on the bytes only, not on which
    ranges happen to be allocated (a restore that writes back zeros over a former hole
    leaves the same hash). Only the data ranges are read."""
    blk = 64 << 10
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "little"))
        done = -blk  # the last block hashed
        for start, end in data_ranges(fd, size):
            off = max(start - start % blk, done + blk)
            while off < end:
                b = os.pread(fd, blk, off)
                if b.count(0) != len(b):
                    h.update(off.to_bytes(8, "little"))
                    h.update(b)
                done = off
                off += blk
    finally:
        os.close(fd)
    return h.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    from harness.safeio import sparse_copy

    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        sparse_copy(sfd, dfd, os.fstat(sfd).st_size)
    finally:
        os.close(sfd)
        os.close(dfd)


def init_worker(workdir: str, clean: dict[str, str]) -> None:
    global _W
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    signal.signal(signal.SIGALRM, _on_alarm)
    wd = Path(workdir) / f"w{os.getpid()}"
    wd.mkdir()
    w = _Worker(wd, {k: Path(v) for k, v in clean.items()})
    for name, src in w.clean.items():
        w.copies[name] = wd / f"{name}.img"
        _copy(src, w.copies[name])
        w.clean_hashes[name] = content_hash(src)
    import harness.cli

    harness.cli._parser()  # build once, outside any alarm
    _W = w


def run_main(argv: list[str]) -> tuple[int | str, str, str]:
    """``harness.cli.main(argv)`` with captured output: (status, stderr, stdout tail)."""
    from harness.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    status: int | str
    detail = ""
    signal.alarm(ALARM_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    except SystemExit as e:  # argparse
        status = e.code if isinstance(e.code, int) else 2
    except _Alarm:
        status = "hang"
    except MemoryError:
        status = "memory"
        detail = traceback.format_exc(limit=-6)
    except BaseException:
        status = "traceback"
        detail = traceback.format_exc(limit=-6)
    finally:
        signal.alarm(0)
    out.flush()
    err.flush()
    e_text = err.buffer.getvalue().decode("utf-8", "replace")  # type: ignore[attr-defined]
    o_text = out.buffer.getvalue().decode("utf-8", "replace")  # type: ignore[attr-defined]
    if status not in FAILURES:
        if "Traceback (most recent call last)" in e_text:
            status, detail = "traceback", e_text
        elif status == 2 and e_text.count("\n") != 1:
            status, detail = "multi-line", e_text
        else:
            detail = e_text.strip().splitlines()[-1] if e_text.strip() else ""
    return status, detail, o_text[-300:]


def run_mutant(m: Mutant) -> list[Outcome]:
    assert _W is not None
    path = _W.copies[m.image]
    fd = os.open(path, os.O_RDWR)
    saved: list[tuple[int, bytes]] = []
    try:
        for off, data in m.patches:
            saved.append((off, os.pread(fd, len(data), off)))
            os.pwrite(fd, data, off)
        if m.truncate is not None:
            os.ftruncate(fd, m.truncate)
    finally:
        os.close(fd)
    outs: list[Outcome] = []
    try:
        before = _stamp(path)
        for cmd in m.commands:
            out = _W.workdir / "out.img"
            argv = [a.format(img=path, out=out) for a in cmd]
            name = " ".join(a for a in cmd if not a.startswith("{"))
            t0 = time.perf_counter()
            status, detail, tail = run_main(argv)
            dt = time.perf_counter() - t0
            if status not in FAILURES and _stamp(path) != before:
                status, detail = "changed", "the input image was written (mtime, ctime or size)"
            elif status == 2 and str(path) not in detail:
                status = "unnamed"  # a one-line error must say which image it is about
            outs.append(Outcome(m.ident, m.fs, m.family, name, status, detail, tail, dt))
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            for left in _W.workdir.iterdir():  # a temporary left by a failed write
                if left.name.startswith(".out.img."):
                    outs.append(
                        Outcome(m.ident, m.fs, m.family, name, "changed", f"left {left.name}")
                    )
                    left.unlink()
    finally:
        if m.truncate is not None:
            _copy(_W.clean[m.image], path)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                for off, data in reversed(saved):
                    os.pwrite(fd, data, off)
            finally:
                os.close(fd)
    return outs


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """What any write to the file changes (a write, an mmap store, a truncate): mtime,
    ctime, size; and the inode (a rename over it)."""
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def run_batch(batch: list[Mutant]) -> list[Outcome]:
    """The mutants one after the other; then every image copy used is compared, by content,
    with its clean image (the restore undid exactly the patches: nothing else wrote)."""
    assert _W is not None
    out: list[Outcome] = []
    for m in batch:
        out += run_mutant(m)
    for name in sorted({m.image for m in batch}):
        if content_hash(_W.copies[name]) != _W.clean_hashes[name]:
            out.append(Outcome(-1, "", "", f"restore of {name}", "changed", "bytes differ"))
            _copy(_W.clean[name], _W.copies[name])
    return out


def cleanup(workdir: str) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
