"""ext4's outside view: the tree below a directory as ``debugfs`` (e2fsprogs) reads it from
the unmounted image, in the record shape of the driver's walk.

Three batched ``debugfs -f`` passes: ``ls -p <ino>`` per directory, level by level
(``/ino/mode/uid/gid/name/size/`` lines); ``stat <ino>`` per inode (``Links:``, ``Size:``,
``Fast link dest:``, the ``EXTENTS:`` list); ``dump <ino> FILE`` per regular file (and
slow symlink), hashed here. Findings: an inode whose ``stat`` disagrees with its ``ls``
entry, and an initialized extent (not ``[u]``) mapping a block wholly past ``i_size``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import need_tool
from harness.workload.view import OutsideView
from model.stat import S_IFDIR, S_IFLNK, S_IFMT, S_IFREG


def debugfs_batch(image: Path, commands: list[str]) -> dict[str, str]:
    """Run ``commands`` in one ``debugfs -f`` and split its output per command (debugfs
    echoes each as ``debugfs: CMD``)."""
    if not commands:
        return {}
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", delete=False) as f:
        f.write("\n".join(commands) + "\n")
        script = f.name
    try:
        r = subprocess.run(
            [need_tool("debugfs"), "-f", script, str(image)],
            capture_output=True,
            text=True,
            env=dict(os.environ, LC_ALL="C", TZ="UTC"),
        )
    finally:
        os.unlink(script)
    out: dict[str, str] = {}
    cur: str | None = None
    buf: list[str] = []
    for line in r.stdout.splitlines():
        if line.startswith("debugfs: "):
            if cur is not None:
                out[cur] = "\n".join(buf)
            cur, buf = line[len("debugfs: ") :], []
        else:
            buf.append(line)
    if cur is not None:
        out[cur] = "\n".join(buf)
    return out


LS_LINE = re.compile(r"^/(\d+)/(\d+)/(\d+)/(\d+)/(.*)/(\d*)/$")
EXTENT = re.compile(r"\((\d+)(?:-(\d+))?\)(\[u\])?:")


def parse_ls_p(text: str) -> list[tuple[int, int, str]]:
    """(ino, mode, name) of each entry, without ``.`` and ``..``."""
    out = []
    for line in text.splitlines():
        m = LS_LINE.match(line.strip())
        if m and m.group(5) not in (".", ".."):
            out.append((int(m.group(1)), int(m.group(2), 8), m.group(5)))
    return out


def parse_stat(text: str) -> dict[str, Any]:
    st: dict[str, Any] = {}
    m = re.search(r"Mode:\s+(\d+)", text)
    if m:
        st["perm"] = int(m.group(1), 8)
    m = re.search(r"\bSize:\s+(\d+)", text)
    if m:
        st["size"] = int(m.group(1))
    m = re.search(r"Links:\s+(\d+)", text)
    if m:
        st["nlink"] = int(m.group(1))
    m = re.search(r'Fast link dest: "(.*)"', text)
    if m:
        st["fast_target"] = m.group(1)
    ext = text.split("EXTENTS:", 1)
    st["extents"] = (
        [(int(a), int(b) if b else int(a), bool(u)) for a, b, u in EXTENT.findall(ext[1])]
        if len(ext) == 2
        else []
    )
    return st


def debugfs_view(image: Path, start: str, block_size: int = 4096) -> OutsideView:
    view = OutsideView("debugfs")
    entries: list[tuple[str, int, int]] = []  # (path, ino, mode)
    level: list[tuple[str, str]] = [("<2>" if not start else f"/{start}", "")]
    while level:
        cmds = [f"ls -p {spec}" for spec, _ in level]
        outs = debugfs_batch(image, cmds)
        nxt: list[tuple[str, str]] = []
        for (_spec, prefix), cmd in zip(level, cmds, strict=True):
            for ino, mode, name in parse_ls_p(outs.get(cmd, "")):
                path = prefix + name
                entries.append((path, ino, mode))
                if mode & S_IFMT == S_IFDIR:
                    nxt.append((f"<{ino}>", path + "/"))
        level = nxt
    inodes = sorted({ino for _, ino, _ in entries})
    view.inodes = len(inodes)
    stat_out = debugfs_batch(image, [f"stat <{i}>" for i in inodes])
    stats = {i: parse_stat(stat_out.get(f"stat <{i}>", "")) for i in inodes}
    modes = {ino: mode for _, ino, mode in entries}
    with tempfile.TemporaryDirectory(prefix="fsoracle-debugfs-") as tmp:
        dump_for = [
            i
            for i in inodes
            if modes[i] & S_IFMT == S_IFREG
            or (modes[i] & S_IFMT == S_IFLNK and "fast_target" not in stats[i])
        ]
        debugfs_batch(image, [f"dump <{i}> {tmp}/{i}" for i in dump_for])
        hashes: dict[int, str] = {}
        targets: dict[int, str] = {}
        for i in dump_for:
            p = Path(tmp) / str(i)
            if not p.exists():
                view.findings.append(f"inode {i}: debugfs dump produced nothing")
                continue
            data = p.read_bytes()
            if modes[i] & S_IFMT == S_IFREG:
                hashes[i] = hashlib.sha256(data).hexdigest()
            else:
                targets[i] = data.decode("utf-8", "surrogateescape")
    for path, ino, mode in entries:
        st = stats[ino]
        r: dict[str, Any] = {
            "path": path,
            "mode": mode,
            "nlink": st.get("nlink", -1),
            "size": st.get("size", -1),
            "ino": ino,
            "dev": 0,
        }
        if "perm" in st and st["perm"] != mode & 0o7777:
            view.findings.append(f"{path}: stat mode {st['perm']:o}, ls mode {mode & 0o7777:o}")
        fmt = mode & S_IFMT
        if fmt == S_IFREG:
            if ino in hashes:
                r["sha256"] = hashes[ino]
            last = (int(r["size"]) + block_size - 1) // block_size
            for a, b, unwritten in st["extents"]:
                if not unwritten and a >= last and int(r["size"]) >= 0:
                    view.findings.append(
                        f"{path}: initialized extent ({a}-{b}) past i_size {r['size']}"
                    )
        elif fmt == S_IFLNK:
            tgt = st.get("fast_target", targets.get(ino))
            if tgt is not None:
                r["target"] = tgt
        view.records.append(r)
    view.records.sort(key=lambda r: str(r["path"]))
    return view
