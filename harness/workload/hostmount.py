"""Filesystems on the HOST kernel: images, loop mounts, and the checkers run after unmount.

Runs on the host kernel need no VM; everything here is labelled ``host kernel <uname -r>``
in reports. The same images and checkers serve the VM half: it makes the image here, boots
a guest on it, and checks it here after the guest is gone.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError, need_tool
from harness.workload.view import OutsideView
from model.btrfs.mkfs import KERNEL_LAYOUTS

# layouts only our writer makes (mkfs.btrfs has no SKINNY_BG_TREE) and only our checker
# reads (btrfs-progs 6.14 refuses the unknown incompat bit 24)
WRITER_ONLY = ("skinny-bg-tree",)
MAKERS = ("mkfs", "writer")


@dataclass(frozen=True)
class MkfsSpec:
    """How to make the filesystem: ``fs`` btrfs/ext4; for btrfs, ``maker`` mkfs
    (``mkfs.btrfs``) or writer (``fsoracle btrfs mkfs``) and the block group ``layout``."""

    fs: str = "btrfs"
    maker: str = "mkfs"
    layout: str = "extent-tree"
    size: int = 2 << 30

    def label(self) -> str:
        if self.fs == "ext4":
            return "ext4 (mke2fs)"
        tool = "mkfs.btrfs" if self.maker == "mkfs" else "fsoracle btrfs mkfs"
        return f"btrfs {self.layout} ({tool})"

    def validate(self) -> None:
        if self.fs not in ("btrfs", "ext4"):
            raise UserError(f"--fs {self.fs!r}: btrfs or ext4")
        if self.fs == "btrfs":
            if self.layout not in KERNEL_LAYOUTS:
                raise UserError(f"--layout {self.layout!r}: one of {', '.join(KERNEL_LAYOUTS)}")
            if self.maker not in MAKERS:
                raise UserError(f"--mkfs {self.maker!r}: one of {', '.join(MAKERS)}")
            if self.layout in WRITER_ONLY and self.maker != "writer":
                raise UserError(
                    f"--layout {self.layout}: only our writer makes it (add --mkfs writer);"
                    " mount it with a kernel carrying the series, e.g."
                    " --kernel build:6.12+skinny-bg-tree"
                )


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TZ="UTC", LC_ALL="C")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)


def make_image(path: Path, spec: MkfsSpec) -> str:
    """Create ``path`` (sparse, ``spec.size``) holding an empty filesystem; returns the
    command that made it."""
    spec.validate()
    if path.exists():
        path.unlink()
    if spec.fs == "btrfs" and spec.maker == "writer":
        from model.blocksource import FileSink
        from model.btrfs.mkfs import MkfsConfig, make_btrfs

        cfg = MkfsConfig(size=spec.size, layout=spec.layout)
        cfg.validate()
        with FileSink(str(path), cfg.size) as sink:
            make_btrfs(cfg, sink)
        return f"fsoracle btrfs mkfs {path} --size {spec.size} --layout {spec.layout}"
    with open(path, "wb") as f:
        f.truncate(spec.size)
    if spec.fs == "btrfs":
        cmd = [need_tool("mkfs.btrfs"), "-q", "-f"]
        if spec.layout == "bg-tree":
            cmd += ["-O", "block-group-tree"]
    else:
        cmd = [need_tool("mke2fs"), "-q", "-F", "-t", "ext4"]
    cmd.append(str(path))
    r = _run(cmd)
    if r.returncode != 0:
        raise UserError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return " ".join(cmd)


@contextmanager
def loop_mount(image: Path, mnt: Path, options: str = "") -> Iterator[Path]:
    """Mount ``image`` on ``mnt`` through a loop device; unmount on exit (retrying while
    busy)."""
    if os.geteuid() != 0:
        raise UserError("a loop mount needs root")
    mnt.mkdir(parents=True, exist_ok=True)
    opts = "loop" + (f",{options}" if options else "")
    r = _run(["mount", "-o", opts, str(image), str(mnt)])
    if r.returncode != 0:
        raise UserError(f"mount {image} failed: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        umount(mnt)


def umount(mnt: Path) -> None:
    for _ in range(50):
        r = _run(["umount", str(mnt)])
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise UserError(f"umount {mnt} failed: {r.stderr.strip()}")


@dataclass
class CheckerResult:
    """One checker's verdict on the unmounted image."""

    name: str
    ok: bool
    summary: str
    output: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "summary": self.summary, "seconds": self.seconds}


def kernel_fault_verdict(faults: list[str]) -> CheckerResult:
    """The kernel's fault reports during the work (panic, oops, BUG, KASAN, lockdep, hung
    task, WARNING) as one more verdict beside the checkers."""
    n = len(faults)
    return CheckerResult(
        "kernel fault reports", n == 0, "none" if n == 0 else f"{n}: {faults[0]}", "\n".join(faults)
    )


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def run_checkers(image: Path, fs: str) -> list[CheckerResult]:
    """btrfs: ``fsoracle btrfs check --check-data-csum`` (in process), ``btrfs check
    --readonly`` in both modes (not on a SKINNY_BG_TREE image: btrfs-progs cannot open it;
    ours then checks every skinny item's used bytes against the extents). ext4:
    ``e2fsck -fn``."""
    out: list[CheckerResult] = []
    if fs == "btrfs":
        from model.blocksource import FileSource
        from model.btrfs import constants as C
        from model.btrfs.check import btrfs_check
        from model.btrfs.reader import BtrfsImage

        t0 = time.monotonic()
        src = FileSource(str(image))
        try:
            img = BtrfsImage.open(src)
            skinny = bool(img.sb.incompat_flags & C.INCOMPAT_SKINNY_BG_TREE)
            res = btrfs_check(img, verify_data_csums=True)
        finally:
            src.close()
        text = "\n".join(str(f) for f in res.findings)
        verdict = "no error found" if res.ok else f"{len(res.findings)} error(s)"
        out.append(
            CheckerResult(
                "fsoracle btrfs check --check-data-csum",
                res.ok,
                f"checked {res.blocks_checked} tree blocks: {verdict}",
                text,
                time.monotonic() - t0,
            )
        )
        for mode in () if skinny else ("original", "lowmem"):
            t0 = time.monotonic()
            cmd = [need_tool("btrfs"), "check", "--readonly", f"--mode={mode}", str(image)]
            r = _run(cmd)
            text = r.stdout + r.stderr
            out.append(
                CheckerResult(
                    f"btrfs check --mode={mode}",
                    r.returncode == 0,
                    f"exit {r.returncode}: {_last_lines(text, 1)}",
                    text,
                    time.monotonic() - t0,
                )
            )
    else:
        t0 = time.monotonic()
        r = _run([need_tool("e2fsck"), "-fn", str(image)])
        text = r.stderr + r.stdout  # the version banner first, the summary last
        out.append(
            CheckerResult(
                "e2fsck -fn",
                r.returncode == 0,
                f"exit {r.returncode}: {_last_lines(text, 1)}",
                text,
                time.monotonic() - t0,
            )
        )
    return out


def outside_view(image: Path, fs: str, start: str) -> OutsideView:
    t0 = time.monotonic()
    if fs == "btrfs":
        from model.blocksource import FileSource
        from model.btrfs.fsview import read_namespace
        from model.btrfs.reader import BtrfsImage

        src = FileSource(str(image))
        try:
            img = BtrfsImage.open(src, run_tree_checker=False)
            v = read_namespace(img, start)
        finally:
            src.close()
        view = OutsideView(
            f"fsoracle reader ({v.trees} fs trees)",
            v.records,
            [str(f) for f in v.findings],
            v.inodes,
        )
    else:
        from harness.workload.ext4view import debugfs_view

        view = debugfs_view(image, start)
    view.seconds = time.monotonic() - t0
    return view
