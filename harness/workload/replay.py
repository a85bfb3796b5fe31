"""Replaying a saved op log: against the model alone, or again through a kernel.

``fsoracle stress replay LOG`` is the one-line reproduction every differential failure is
saved with (``--target vm --kernel SPEC`` when it was found in a guest). The log's header
says which filesystem it ran on (``fs=``), whether its root was a fresh btrfs subvolume
(``root=subvol``) and whether processes own ``pN`` directories (``mode=stress``). Faults
planted in the model are not in the log: they are given again with ``--fault`` (the saved
command line carries them).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, read_text_input
from harness.workload import driver as drv
from harness.workload.hostmount import (
    CheckerResult,
    FsSpec,
    host_kernel,
    loop_mount,
    make_image,
    run_checkers,
)
from harness.workload.stress import DRIVER, RUN_DIR, guest_python, read_walk
from model.fsstate.compare import CheckResult, check_log
from model.fsstate.faults import Faults
from model.fsstate.oplog import LogError, OpLog, parse_log


@dataclass
class ReplayOutcome:
    where: str
    fs: str
    ops: int
    result: CheckResult
    checkers: list[CheckerResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result.ok and all(c.ok for c in self.checkers)

    def lines(self, limit: int = 50) -> list[str]:
        out = [
            f"replay on {self.where} ({self.fs}): {self.ops} ops,"
            f" {len(self.result.differences)} difference(s) with the model"
        ]
        out += [f"  {d}" for d in self.result.differences[:limit]]
        for c in self.checkers:
            out.append(f"{c.name}: {'clean' if c.ok else 'FAILED'} ({c.summary})")
        out.append(f"verdict: {'OK' if self.ok else 'DIFFERENCES'} ({self.seconds:.1f} s)")
        return out


def load_log(path: Path) -> OpLog:
    text = read_text_input(path, "op log")
    try:
        return parse_log(text)
    except LogError as e:
        raise UserError(f"{path}: not an op log: {e}") from None


def replay(
    log_path: Path,
    *,
    target: str = "host-mount",
    fs: str | None = None,
    faults: Faults | None = None,
    walk_path: Path | None = None,
    spec: FsSpec | None = None,
    out: Path | None = None,
    vm: Any = None,
) -> ReplayOutcome:
    """``target`` ``model`` checks the log's recorded results (and ``walk_path``'s tree)
    against the model; ``host-mount`` runs the ops again on a fresh loop-mounted image of
    the host kernel and compares what it returns now."""
    t0 = time.monotonic()
    log = load_log(log_path)
    fs = fs or log.header.get("fs")
    if fs not in ("btrfs", "ext4"):
        raise UserError(f"{log_path}: no fs= in the header: give --fs btrfs|ext4")
    subvol_root = log.header.get("root") == "subvol"
    proc_dirs = log.header.get("mode", "stress") in ("stress", "fsx")
    if target == "model":
        if walk_path is None and log_path.with_suffix(".walk.jsonl").exists():
            walk_path = log_path.with_suffix(".walk.jsonl")  # saved beside the log
        walk = read_walk(walk_path) if walk_path else None
        res = check_log(
            fs, log.ops, walk, root_is_subvol=subvol_root, faults=faults, proc_dirs=proc_dirs
        )
        return ReplayOutcome("the model only", fs, len(log.ops), res, [], time.monotonic() - t0)
    if target == "vm":
        from harness.workload.vmstress import VmTarget, replay_in_vm

        return replay_in_vm(  # type: ignore[no-any-return]
            log_path,
            vm or VmTarget(),
            spec or FsSpec(fs=fs),
            subvol_root=subvol_root,
            faults=faults,
            proc_dirs=proc_dirs,
            out=out,
        )
    if target != "host-mount":
        raise UserError(f"--target {target!r}: model, host-mount or vm")
    spec = spec or FsSpec(fs=fs)
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="fsoracle-replay-")
        out = Path(tmp.name)
    try:
        output_dir(out)
        image, mnt = out / "fs.img", out / "mnt"
        make_image(image, spec)
        new_log, walk_out = out / "replay.log", out / "replay.walk.jsonl"
        for p in (new_log, walk_out):
            if p.exists():
                p.unlink()
        with loop_mount(image, mnt):
            run = mnt / RUN_DIR
            if subvol_root:
                if fs != "btrfs":
                    raise UserError("root=subvol needs btrfs")
                old = os.umask(0)  # as the driver runs: the root gets mode 0777
                try:
                    drv.Executor(str(mnt)).op_subvol_create({"path": RUN_DIR})
                finally:
                    os.umask(old)
            py = guest_python()
            for argv in (
                [py, str(DRIVER), "replay", str(log_path), "-d", str(run), "--log", str(new_log)],
                [py, str(DRIVER), "walk", str(run), "--out", str(walk_out)],
            ):
                r = subprocess.run(argv, capture_output=True, text=True)
                if r.returncode != 0:
                    raise UserError(f"{' '.join(argv)} failed: {r.stderr.strip()[-400:]}")
        replayed = parse_log(new_log.read_text())
        res = check_log(
            fs,
            replayed.ops,
            read_walk(walk_out),
            root_is_subvol=subvol_root,
            faults=faults,
            proc_dirs=proc_dirs,
        )
        checks = run_checkers(image, fs)
        image.unlink()
        return ReplayOutcome(
            f"{host_kernel()}, {spec.label()}",
            fs,
            len(replayed.ops),
            res,
            checks,
            time.monotonic() - t0,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
