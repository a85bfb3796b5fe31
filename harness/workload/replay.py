"""Replaying a saved op log: against the model alone, or again through a kernel.

``fsoracle stress replay LOG`` is the one-line reproduction every differential failure is
saved with (``--target vm --kernel SPEC`` when it was found in a guest). The log's header
says which filesystem it ran on (``fs=``), whether its root was a fresh btrfs subvolume
(``root=subvol``) and whether processes own ``pN`` directories (``mode=stress``). Faults
planted in the model are not in the log: they are given again with ``--fault`` (the saved
command line carries them).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.safeio import output_dir, read_text_input, write_atomic
from harness.target import DiskSpec, Target, TargetSpec, open_target
from harness.workload.hostmount import (
    CheckerResult,
    MkfsSpec,
    kernel_fault_verdict,
    make_image,
    run_checkers,
)
from harness.workload.ontarget import RUN_DIR, make_subvol_root, mounted, run_driver, scratch
from harness.workload.stress import SCHEMA, read_walk
from model.fsstate.compare import CompareResult, check_log
from model.fsstate.faults import Faults
from model.fsstate.oplog import LogError, OpLog, parse_log


@dataclass
class ReplayOutcome:
    where: str
    fs: str
    ops: int
    result: CompareResult
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

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "where": self.where,
            "fs": self.fs,
            "ops": self.ops,
            "differences": [d.to_json() for d in self.result.differences],
            "checkers": [c.to_json() for c in self.checkers],
            "seconds": self.seconds,
            "ok": self.ok,
        }


def load_log(path: Path) -> OpLog:
    text = read_text_input(path, "op log")
    try:
        return parse_log(text)
    except LogError as e:
        raise UserError(f"{path}: not an op log: {e}") from None


def replay(
    log_path: Path,
    *,
    target: TargetSpec | None = None,
    fs: str | None = None,
    faults: Faults | None = None,
    walk_path: Path | None = None,
    spec: MkfsSpec | None = None,
    out: Path | None = None,
) -> ReplayOutcome:
    """``target`` None checks the log's recorded results (and ``walk_path``'s tree) against
    the model; a :class:`TargetSpec` runs the ops again on a fresh image there (the host's
    kernel or a guest: the same code) and compares what they return now."""
    t0 = time.monotonic()
    log = load_log(log_path)
    fs = fs or log.header.get("fs")
    if fs not in ("btrfs", "ext4"):
        raise UserError(f"{log_path}: no fs= in the header: give --fs btrfs|ext4")
    subvol_root = log.header.get("root") == "subvol"
    proc_dirs = log.header.get("mode", "stress") in ("stress", "fsx")
    if target is None:
        if walk_path is None and log_path.with_suffix(".walk.jsonl").exists():
            walk_path = log_path.with_suffix(".walk.jsonl")  # saved beside the log
        walk = read_walk(walk_path) if walk_path else None
        res = check_log(
            fs, log.ops, walk, root_is_subvol=subvol_root, faults=faults, proc_dirs=proc_dirs
        )
        return ReplayOutcome("the model only", fs, len(log.ops), res, [], time.monotonic() - t0)
    if subvol_root and fs != "btrfs":
        raise UserError(f"{log_path}: root=subvol needs btrfs")
    spec = spec or MkfsSpec(fs=fs)
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="fsoracle-replay-")
        out = Path(tmp.name)
    try:
        disk = prepare_replay(out, spec)
        with open_target(target, [disk], name="replay") as t:
            outcome = replay_on(t, 0, log_path, log, spec, faults=faults, out=out, t0=t0)
        return outcome
    finally:
        if tmp is not None:
            tmp.cleanup()


def prepare_replay(out: Path, spec: MkfsSpec) -> DiskSpec:
    """The replay's directory and its fresh image (``out/fs.img``)."""
    output_dir(out)
    image = out / "fs.img"
    make_image(image, spec)
    for p in (out / "replay.log", out / "replay.walk.jsonl"):
        if p.exists():
            p.unlink()
    return DiskSpec(image, spec.fs)


def replay_on(
    t: Target,
    disk: int,
    log_path: Path,
    log: OpLog,
    spec: MkfsSpec,
    *,
    faults: Faults | None,
    out: Path,
    t0: float | None = None,
) -> ReplayOutcome:
    """The log's ops again on disk ``disk`` of an open target (its fresh image made by
    :func:`prepare_replay` in ``out``), in a fresh subvolume when the log ran in one; then
    the model checks the new results and tree, and the checkers the image."""
    t0 = time.monotonic() if t0 is None else t0
    fs = spec.fs
    subvol_root = log.header.get("root") == "subvol"
    proc_dirs = log.header.get("mode", "stress") in ("stress", "fsx")
    d = t.disks[disk]
    new_log, walk_out = out / "replay.log", out / "replay.walk.jsonl"
    with mounted(t, d):
        if subvol_root:
            make_subvol_root(t, d)
        run = f"{d.mnt}/{RUN_DIR}"
        log_in = t.push(log_path.read_bytes(), f"in-{disk}.log")
        log_out, walk_t = scratch(t, f"replay-{disk}.log"), scratch(t, f"replay-{disk}.walk")
        run_driver(t, "replay", log_in, "-d", run, "--log", log_out)
        run_driver(t, "walk", run, "--out", walk_t)
        t.fetch(log_out, new_log)
        t.fetch(walk_t, walk_out)
    replayed = parse_log(new_log.read_text())
    res = check_log(
        fs,
        replayed.ops,
        read_walk(walk_out),
        root_is_subvol=subvol_root,
        faults=faults,
        proc_dirs=proc_dirs,
    )
    checks = [*run_checkers(d.image, fs), kernel_fault_verdict(t.faults())]
    d.image.unlink()
    outcome = ReplayOutcome(
        f"{t.label}, {spec.label()}", fs, len(replayed.ops), res, checks, time.monotonic() - t0
    )
    write_atomic(out / "replay.json", json.dumps(outcome.to_json(), indent=1) + "\n")
    return outcome
