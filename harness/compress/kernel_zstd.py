"""zstd frames as each stock kernel's ``lib/zstd`` writes them.

The model's bundled ``zstandard`` is zstd 1.5.7 (the host kernel's version); 6.12 carries
zstd 1.5.2 and 6.1 zstd 1.4.10, and on text the frames differ by tens to hundreds of
bytes between these versions. Older python-zstandard releases bundle the older libraries:
0.19.0 is zstd 1.5.2 and 0.15.2 is zstd 1.4.8. Installed side by side (``make deps``:
``pip install --no-deps --target .venv/kernel-zstd/<version>``) they cannot share one
interpreter with the current release, so each runs in a child process that compresses
what it is sent.

Checked on the VM case table (tests/vm/test_compress_vm.py): 0.19.0's frames equal
6.12's on-disk zstd extents byte for byte, and 0.15.2's (zstd 1.4.8) equal 6.1's (1.4.10:
the compressor did not change between the two for these inputs). Frames from these
libraries are therefore marked exact for their kernel.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

from model.btrfs import compression as Z

KERNEL_ZSTANDARD = {"6.12": ("1.5.2", "0.19.0"), "6.1": ("1.4.8", "0.15.2")}
"""kernel -> (zstd version bundled, python-zstandard release bundling it)."""

_SERVER = r"""
import struct, sys, zstandard
inp, out = sys.stdin.buffer, sys.stdout.buffer
out.write(struct.pack("<III", *zstandard.ZSTD_VERSION)); out.flush()
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    level, n = struct.unpack("<II", head)
    data = inp.read(n)
    frame = zstandard.ZstdCompressor(
        level=level, write_content_size=True, write_checksum=False
    ).compress(data)
    out.write(struct.pack("<I", len(frame)) + frame); out.flush()
"""


def target_dir(kernel: str) -> Path:
    """Where ``make deps`` installs the python-zstandard release for ``kernel``."""
    version, _release = KERNEL_ZSTANDARD[Z.check_modelled_kernel(kernel)]
    return Path(sys.prefix) / "kernel-zstd" / version


def available(kernel: str) -> bool:
    return (target_dir(kernel) / "zstandard").is_dir()


class KernelZstd:
    """A child process compressing with ``kernel``'s zstd version (see the module)."""

    def __init__(self, kernel: str) -> None:
        self.kernel = Z.check_modelled_kernel(kernel)
        path = target_dir(self.kernel)
        if not available(self.kernel):
            raise FileNotFoundError(
                f"no zstd {KERNEL_ZSTANDARD[self.kernel][0]} for {self.kernel} under {path}: "
                "`make deps` installs it"
            )
        env = {**os.environ, "PYTHONPATH": str(path), "PYTHONNOUSERSITE": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._lock = threading.Lock()
        self.version = struct.unpack("<III", self._read(12))
        want = tuple(int(x) for x in KERNEL_ZSTANDARD[self.kernel][0].split("."))
        if self.version != want:
            self.close()
            raise RuntimeError(f"{path} holds zstd {self.version}, not {want}")

    def _read(self, n: int) -> bytes:
        assert self._proc.stdout is not None
        buf = self._proc.stdout.read(n)
        if len(buf) != n:
            raise RuntimeError("the zstd child process ended")
        return buf

    def frame(self, data: bytes, level: int) -> bytes:
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(struct.pack("<II", level, len(data)) + data)
            self._proc.stdin.flush()
            (n,) = struct.unpack("<I", self._read(4))
            return self._read(n)

    def compress_fn(self) -> Z.CompressFn:
        """A ``compress_fn`` for the model: zstd through this version (exact), the other
        algorithms through the model's own compressors."""

        def fn(ctype: int, level: int, data: bytes, nr: int, kernel: str) -> Z.CompressOutcome:
            if ctype != Z.BTRFS_COMPRESS_ZSTD:
                return Z.btrfs_compress_folios(ctype, level, data, nr, kernel)
            return Z.zstd_outcome(len(self.frame(data, level)), len(data), nr, True)

        return fn

    def close(self) -> None:
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> KernelZstd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_cache: dict[str, KernelZstd] = {}


def compress_fn_for(kernel: str) -> Z.CompressFn | None:
    """The kernel-version compressor if installed (one child process per kernel, kept for
    the session), else None (the model then uses its bundled zstd, sizes not exact)."""
    k = Z.check_modelled_kernel(kernel)
    if not available(k):
        return None
    if k not in _cache:
        _cache[k] = KernelZstd(k)
    return _cache[k].compress_fn()
