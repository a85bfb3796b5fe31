"""A writer for the cpio "newc" format the kernel unpacks as an initramfs.

Format: Documentation/driver-api/early-userspace/buffer-format.rst. Each entry is a 110-byte
ASCII header (magic ``070701`` and thirteen 8-digit hex fields), the NUL-terminated name padded
to 4 bytes, then the data padded to 4 bytes; ``TRAILER!!!`` ends the archive. Writing it here
(rather than with ``cpio -o``) lets us add device nodes such as ``/dev/console`` without root
and makes the archive byte-for-byte reproducible (fixed owners and times).
"""

from __future__ import annotations

import stat
from typing import BinaryIO

MTIME = 1_700_000_000  # fixed, so two builds of the same inputs give the same bytes


class CpioWriter:
    """Append entries to a newc archive; directories must be added before their contents."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._names: set[str] = set()

    def _header(self, name: str, mode: int, size: int, nlink: int, rdev: tuple[int, int]) -> None:
        name_b = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            MTIME,
            size,
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(name_b),
            0,  # check
        )
        self._ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(hdr + name_b)
        self._pad(len(hdr) + len(name_b))

    def _pad(self, n: int) -> None:
        if n % 4:
            self._out.write(b"\0" * (4 - n % 4))

    def _claim(self, name: str) -> str:
        name = name.strip("/")
        if not name or name in self._names:
            raise ValueError(f"duplicate or empty cpio entry {name!r}")
        self._names.add(name)
        return name

    def __contains__(self, name: str) -> bool:
        return name.strip("/") in self._names

    def dir(self, name: str, mode: int = 0o755) -> None:
        self._header(self._claim(name), stat.S_IFDIR | mode, 0, 2, (0, 0))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._header(self._claim(name), stat.S_IFREG | mode, len(data), 1, (0, 0))
        self._out.write(data)
        self._pad(len(data))

    def symlink(self, name: str, target: str) -> None:
        data = target.encode()
        self._header(self._claim(name), stat.S_IFLNK | 0o777, len(data), 1, (0, 0))
        self._out.write(data)
        self._pad(len(data))

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._header(self._claim(name), stat.S_IFCHR | mode, 0, 1, (major, minor))

    def close(self) -> None:
        """Write the trailer (the archive's end marker)."""
        self._header("TRAILER!!!", 0, 0, 1, (0, 0))
