"""Safe reading and writing of the paths a user names.

Writing (:func:`atomic_output`, :func:`write_atomic`): a command writes only a regular
file it was given. The target may not be a block or character device, a directory, a FIFO,
a socket, a symbolic link, or one of the command's own inputs (compared by device and
inode, so a hard link or another name for the input is caught too). The bytes go to a
temporary made in the target's directory with ``O_EXCL|O_NOFOLLOW`` (``mkstemp``), named
``.NAME.fsoracle-XXXXXXXX`` so that one left behind by SIGKILL is recognisable; it is
fsynced and renamed over the target only when the write succeeded, and removed on every
other way out (an error, ^C, SIGTERM: :func:`harness.cli.main` turns SIGTERM and SIGHUP
into :class:`SystemExit`, so ``finally`` runs). An existing target is untouched unless the
write succeeded, and replaced only with ``force``.

Reading (:func:`open_input`): a regular file or a block device, opened ``O_RDONLY`` and
``O_NONBLOCK`` (so that a FIFO cannot block the open), anything else refused in one line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError

TMP_MARK = "fsoracle-"


def kind_of(mode: int) -> str:
    """A file type in words, for messages."""
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def tmp_prefix(path: str | os.PathLike[str]) -> str:
    """The prefix of the temporary for ``path`` (``.NAME.fsoracle-``)."""
    return f".{os.path.basename(os.fspath(path))}.{TMP_MARK}"


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_output(
    path: str | os.PathLike[str],
    *,
    force: bool,
    inputs: Iterable[str | os.PathLike[str]] = (),
    what: str = "output",
) -> str:
    """Refuse a target that is not a (new or, with ``force``, existing) regular file; return
    its directory. Raises :class:`UserError` with one line saying what and what to do."""
    p = os.fspath(path)
    if not p:
        raise UserError(f"the {what} path is empty: name a file")
    if p.endswith(os.sep) or os.path.basename(p) in ("", ".", ".."):
        raise UserError(f"{p}: the {what} must name a file, not a directory")
    parent = os.path.dirname(os.path.abspath(p))
    try:
        pst = os.stat(parent)
    except FileNotFoundError:
        raise UserError(f"{p}: directory {parent} does not exist: create it first") from None
    except OSError as e:
        raise UserError(f"{p}: cannot use directory {parent}: {e.strerror}") from None
    if not stat.S_ISDIR(pst.st_mode):
        raise UserError(f"{p}: {parent} is not a directory")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return parent
    except OSError as e:
        raise UserError(f"{p}: cannot use it as the {what}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(
            f"{p} is {kind_of(st.st_mode)}: fsoracle writes only regular files; name a file"
        )
    me = (st.st_dev, st.st_ino)
    for i in inputs:
        if _identity(i) == me:
            raise UserError(
                f"{p} is the input {os.fspath(i)}: name a different {what}, the input is kept"
            )
    if not force:
        raise UserError(f"{p} exists: pass --force to replace it")
    return parent


@dataclass
class AtomicFile:
    """The open temporary (``fd``, at ``tmp``) that becomes ``path`` on success."""

    path: str
    tmp: str
    fd: int


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    what: str = "output",
    mode: int = 0o644,
) -> Iterator[AtomicFile]:
    """Write ``path`` through a temporary in its directory; see the module docstring.

    The body writes through ``AtomicFile.fd`` (or ``AtomicFile.tmp``, a name only this
    process created). On a normal exit of the body the temporary is fsynced and renamed
    into place; on any exception (``KeyboardInterrupt`` and ``SystemExit`` included) it is
    removed and the exception propagates.
    """
    inputs = list(inputs)
    p = os.fspath(path)
    parent = check_output(p, force=force, inputs=inputs, what=what)
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=tmp_prefix(p))
    except OSError as e:
        raise UserError(f"{p}: cannot create a file in {parent}: {e.strerror}") from None
    done = False
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, mode & ~umask)
        yield AtomicFile(p, tmp, fd)
        os.fsync(fd)
        # the target may have changed while we wrote: check again just before the rename
        check_output(p, force=force, inputs=inputs, what=what)
        os.replace(tmp, p)
        done = True
        with contextlib.suppress(OSError):
            dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as e:
        raise UserError(f"{p}: cannot write it: {e.strerror or e}") from None
    finally:
        os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    force: bool = True,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Write a whole (small) file safely; results files are replaced by default."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_output(path, force=force, inputs=inputs) as out:
        view = memoryview(raw)
        while view:
            n = os.write(out.fd, view)
            view = view[n:]


def output_dir(path: str | os.PathLike[str]) -> Path:
    """A results directory the user named: made if missing; refused if something that is
    not a directory is there."""
    p = Path(path)
    if not os.fspath(path):
        raise UserError("the output directory path is empty: name a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        st = os.lstat(p)
        raise UserError(
            f"{p} is {kind_of(st.st_mode)}, not a directory: name a directory for the results"
        ) from None
    except NotADirectoryError:
        raise UserError(f"{p}: a part of this path is not a directory") from None
    except OSError as e:
        raise UserError(f"{p}: cannot make the directory: {e.strerror}") from None
    return p


def open_input(path: str | os.PathLike[str], what: str = "image", *, block_ok: bool = True) -> int:
    """Open an input read-only: a regular file or (``block_ok``) a block device; returns
    the fd.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; the type is then checked on the
    open file (no race between a check and the open)."""
    p = os.fspath(path)
    if not p:
        raise UserError(f"the {what} path is empty: name a file")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except OSError as e:
        with contextlib.suppress(OSError):
            mode = os.stat(p).st_mode  # a socket cannot be opened (ENXIO): say why
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise UserError(
                    f"{p} is {kind_of(mode)}: give an {what} as a regular file"
                ) from None
        raise UserError(f"{p}: cannot open: {e.strerror}") from None
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or (block_ok and stat.S_ISBLK(st.st_mode))):
        os.close(fd)
        alt = " or a block device" if block_ok else ""
        raise UserError(f"{p} is {kind_of(st.st_mode)}: give an {what} as a regular file{alt}")
    os.set_blocking(fd, True)
    return fd


def sparse_copy(src_fd: int, dst_fd: int, size: int, chunk: int = 8 << 20) -> None:
    """Copy ``size`` bytes from ``src_fd`` to ``dst_fd`` (an empty file), keeping holes:
    the data ranges are found with ``SEEK_DATA``/``SEEK_HOLE`` where the source supports
    them (``copy_file_range`` then lets the filesystem share or copy them); otherwise
    (a block device) chunks of zeros are skipped. The destination ends at ``size``."""
    os.ftruncate(dst_fd, size)
    try:
        ranges = list(_data_ranges(src_fd, size))
    except OSError:
        ranges = [(0, size)]
        zero_skip = True
    else:
        zero_skip = False
    for start, end in ranges:
        off = start
        while off < end:
            n = min(chunk, end - off)
            if zero_skip:
                buf = os.pread(src_fd, n, off)
                if not buf:
                    raise OSError(f"the input ends at {off}, before its size {size}")
                if buf.count(0) != len(buf):
                    _pwrite_all(dst_fd, buf, off)
                off += len(buf)
                continue
            try:
                done = os.copy_file_range(src_fd, dst_fd, n, off, off)
            except OSError:
                buf = os.pread(src_fd, n, off)
                _pwrite_all(dst_fd, buf, off)
                done = len(buf)
            if done <= 0:
                raise OSError(f"the input ends at {off}, before its size {size}")
            off += done


def _pwrite_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view = view[n:]
        off += n


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here to the end
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        off = end


def read_text_input(path: str | os.PathLike[str], what: str = "input", limit: int = 1 << 30) -> str:
    """A text file the user named, as UTF-8: a regular file only (a FIFO, device or
    directory is refused in one line, never read), at most ``limit`` bytes."""
    p = os.fspath(path)
    fd = open_input(p, what, block_ok=False)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise UserError(f"{p}: {size} bytes is more than an {what} can be ({limit})")
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
            size -= len(b)
            if size < -limit:  # the file grew while we read it
                raise UserError(f"{p}: keeps growing while read")
    except OSError as e:
        raise UserError(f"{p}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{p}: not an {what}: byte {e.start} (0x{raw[e.start]:02x}) is not UTF-8"
        ) from None


def save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``fig.savefig`` through :func:`write_atomic` (the format from the suffix)."""
    buf = io.BytesIO()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **kwargs)
    write_atomic(path, buf.getvalue())
