"""The model's only door to storage: a block source to read from and a sink to write to.

A source is a bytes buffer, a read-only mmap of a file, or a plain file; a sink is a
writable file (sparse: zero ranges are never written) or a bytearray.  Reading past the end
raises :class:`FormatError`, so a truncated image is a format error and not an IndexError.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import BinaryIO, Protocol

from model.errors import FormatError


class BlockSource(Protocol):
    """Random-access reads of an image."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int, what: str = "data") -> bytes: ...


class BytesSource:
    """An image held in memory."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(data).toreadonly()

    @property
    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int, what: str = "data") -> bytes:
        if offset < 0 or length < 0 or offset + length > len(self._data):
            raise FormatError(
                what, offset, f"needs {length} bytes but the image ends at {len(self._data)}"
            )
        return bytes(self._data[offset : offset + length])


def open_image_fd(path: str | os.PathLike[str]) -> int:
    """Open ``path`` read-only if it is a regular file or a block device.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; the type is checked on the open
    file. Anything else raises ``OSError(EINVAL)`` saying what it is."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        _refuse_kind(os.stat(path).st_mode)  # a socket cannot be opened (ENXIO): say why
        raise
    try:
        _refuse_kind(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


def _refuse_kind(mode: int) -> None:
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "not a regular file"
    )
    raise OSError(errno.EINVAL, f"it is {kind}, not an image file or a block device")


class FileSource:
    """A read-only view of an image file or block device (mmap where possible).

    The file is opened ``O_RDONLY``: reading an image can never modify it. Only a regular
    file or a block device is accepted (:func:`open_image_fd`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh: BinaryIO = os.fdopen(open_image_fd(self.path), "rb")
        self._fh.seek(0, os.SEEK_END)
        self._size = self._fh.tell()
        self._map: mmap.mmap | None = None
        if self._size > 0:
            try:
                self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self._map = None

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int, what: str = "data") -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise FormatError(
                what, offset, f"needs {length} bytes but the image ends at {self._size}"
            )
        if self._map is not None:
            return self._map[offset : offset + length]
        self._fh.seek(offset)
        return self._fh.read(length)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._fh.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockSink(Protocol):
    """Random-access writes of an image."""

    def write(self, offset: int, data: bytes) -> None: ...


class FileSink:
    """A sparse image file: only the bytes written are allocated. ``existing=True`` writes
    into a file that is already there (keeping its other bytes) instead of starting empty.

    ``path`` may be an open file descriptor (an ``O_EXCL`` temporary the caller made): the
    sink writes through it and leaves closing it to the caller."""

    def __init__(
        self, path: str | os.PathLike[str] | int, size: int, *, existing: bool = False
    ) -> None:
        self._owned = not isinstance(path, int)
        if isinstance(path, int):
            self.path = f"fd {path}"
            self._fd = path
        else:
            self.path = os.fspath(path)
            flags = os.O_RDWR | (0 if existing else os.O_CREAT | os.O_TRUNC)
            self._fd = os.open(self.path, flags, 0o644)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:  # pwrite may write less than asked
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def close(self) -> None:
        if self._owned:
            os.close(self._fd)

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink:
    """Discards what is written (for layouts computed only to be measured)."""

    def write(self, offset: int, data: bytes) -> None:
        return None
