"""Guest runs for the kernel-build tests (issue 7): an image written by ``fsoracle btrfs
mkfs``, a guest that mounts it, runs the stress issue's workload driver and then a
block-group churn (writes, deletes, ``balance``: block groups created and removed, which is
what the SKINNY_BG_TREE patches change), and the host's checks afterwards.

The stress half is the stress issue's own (``harness/workload/driver.py`` in the guest,
:func:`harness.workload.stress.analyse_run`, :func:`~harness.workload.hostmount.outside_view`,
the checkers); ``fsoracle stress --target vm`` has no churn step, hence this runner. Crash
runs are the stress family's (:func:`harness.workload.crash.run_crashes`).
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.workload.hostmount import outside_view, run_checkers
from harness.workload.ontarget import DRIVER, RUN_DIR
from harness.workload.stress import (
    StressReport,
    analyse_run,
    compare_outside_view,
    count_inodes,
    read_walk,
)
from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.reader import BtrfsImage
from model.fsstate.oplog import parse_log
from vm import Disk, Machine, MachineConfig

SERIAL = "fs0"
DEV = f"/dev/disk/by-id/virtio-{SERIAL}"
MNT = "/mnt/fs"
ROOT = Path(__file__).resolve().parents[2]


def mkfs(image: Path, layout: str, size: str = "2G", *extra: str) -> str:
    """``fsoracle btrfs mkfs IMAGE --size SIZE --layout LAYOUT`` (the real command line)."""
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "btrfs",
        "mkfs",
        str(image),
        "--size",
        size,
        "--layout",
        layout,
        "--force",
        *extra,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return " ".join(cmd[3:])


def machine(spec: str, image: Path, name: str, log_dir: Path, timeout: float = 1800) -> Machine:
    return Machine(
        MachineConfig(
            kernel=spec,
            disks=(Disk(image, "virtio", serial=SERIAL),),
            mem=1536,
            cpus=2,
            timeout=timeout,
            boot_timeout=300,
            name=name,
            log_dir=log_dir,
        )
    )


def block_groups(image: Path) -> dict[int, tuple[int, int]]:
    """start -> (key type, key offset) of every block group item in the block group tree."""
    with FileSource(str(image)) as src:
        img = BtrfsImage.open(src)
        root = img.block_group_root
        assert root is not None
        return {
            blk.items[slot].key.objectid: (blk.items[slot].key.type, blk.items[slot].key.offset)
            for blk, slot, _ in img.iter_items(root)
            if blk.items[slot].key.type in (C.BLOCK_GROUP_ITEM_KEY, C.SKINNY_BLOCK_GROUP_ITEM_KEY)
        }


def used_from_extents(image: Path) -> dict[int, int]:
    """Bytes of extent items (EXTENT_ITEM: key offset; METADATA_ITEM: nodesize) in each
    block group, block groups from the chunk map: what a block group's used must be."""
    with FileSource(str(image)) as src:
        img = BtrfsImage.open(src)
        chunks = sorted((c.key.offset, c.length) for c in img.chunk_map)
        starts = [s for s, _ in chunks]
        used = {s: 0 for s in starts}
        ext = img.tree(C.EXTENT_TREE_OBJECTID)
        assert ext is not None
        for blk, slot, _ in img.iter_items(ext):
            k = blk.items[slot].key
            if k.type == C.EXTENT_ITEM_KEY:
                n = k.offset
            elif k.type == C.METADATA_ITEM_KEY:
                n = img.sb.nodesize
            else:
                continue
            i = bisect.bisect_right(starts, k.objectid) - 1
            assert i >= 0 and k.objectid + n <= starts[i] + chunks[i][1], k
            used[starts[i]] += n
        return used


def skinny_mismatches(image: Path) -> list[str]:
    """Skinny items whose key offset is not the used bytes summed from the extents (empty:
    all equal); every item must be skinny and every chunk must have one."""
    items = block_groups(image)
    used = used_from_extents(image)
    out = []
    for start, (typ, off) in sorted(items.items()):
        if typ != C.SKINNY_BLOCK_GROUP_ITEM_KEY:
            out.append(f"block group {start}: key type {typ}, not skinny")
        elif off != used.get(start):
            out.append(f"block group {start}: item says used {off}, extents sum {used.get(start)}")
    for start in used.keys() - items.keys():
        out.append(f"chunk {start} has no block group item")
    return out


def our_check(image: Path) -> list[str]:
    with FileSource(str(image)) as src:
        res = btrfs_check(BtrfsImage.open(src), verify_data_csums=True)
    return [str(f) for f in res.findings]


@dataclass
class GuestRun:
    """What one guest workload gave: the stress report (model, checkers, outside view), the
    block groups before and after, the guest's kernel log, feature files."""

    spec: str
    release: str = ""
    report: StressReport | None = None
    dmesg: str = ""
    features: dict[str, str] = field(default_factory=dict)
    bgs_before: dict[int, tuple[int, int]] = field(default_factory=dict)
    bgs_after: dict[int, tuple[int, int]] = field(default_factory=dict)
    walk: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    console: Path | None = None
    log_path: Path | None = None


CHURN = f"""set -e
mkdir -p {MNT}/churn
for i in 1 2 3 4 5 6 7 8 9 10; do
    dd if=/dev/zero of={MNT}/churn/f$i bs=1M count=48 conv=fsync 2>/dev/null
done
btrfs filesystem sync {MNT}
rm {MNT}/churn/f1 {MNT}/churn/f3 {MNT}/churn/f5 {MNT}/churn/f7 {MNT}/churn/f9
btrfs filesystem sync {MNT}
btrfs balance start -dusage=70 {MNT}
rm -r {MNT}/churn
btrfs filesystem sync {MNT}
btrfs balance start -dusage=0 {MNT}
btrfs filesystem sync {MNT}
"""


def stress_run(
    spec: str,
    image: Path,
    out: Path,
    *,
    seed: int,
    ops: int,
    procs: int,
    churn: bool = True,
    checkers: bool = True,
) -> GuestRun:
    """Mount ``image`` in a guest on ``spec``; run the driver (``procs`` x ``ops``, seed);
    then (``churn``) fill, delete and balance ~480 MiB to create and remove data block
    groups; unmount cleanly; analyse on the host: the model against the kernel's op results
    and tree, our checker (and btrfs check unless the image is skinny, which btrfs-progs
    cannot open), the image read back without the kernel against the kernel's walk."""
    out.mkdir(parents=True, exist_ok=True)
    run = GuestRun(spec, bgs_before=block_groups(image))
    log_path, walk_path = out / "ops.log", out / "walk.jsonl"
    run.log_path = log_path
    t0 = time.monotonic()
    with machine(spec, image, "kbuild-stress", out / "vm") as m:
        run.seconds["boot"] = time.monotonic() - t0
        assert m.kernel is not None
        run.release = m.kernel.release
        run.console = m.console_log
        m.run(f"mkdir -p {MNT} && mount {DEV} {MNT}", check=True)
        feats = m.run(
            "cd /sys/fs/btrfs/features && for f in *; do echo $f; done; "
            "echo --; ls /sys/fs/btrfs/*/features/",
            check=True,
        ).out
        glob_f, _, fs_f = feats.partition("--")
        run.features = {"global": glob_f, "mounted": fs_f}
        m.put_file(DRIVER, "/tmp/driver.py")
        t1 = time.monotonic()
        m.run(
            f"python3 /tmp/driver.py run -d {MNT}/{RUN_DIR} -n {ops} -p {procs} -s {seed} "
            f"--fs btrfs --log /tmp/ops.log --walk /tmp/walk.jsonl",
            check=True,
            timeout=1200,
        )
        run.seconds["workload"] = time.monotonic() - t1
        m.get_file("/tmp/ops.log", log_path)
        m.get_file("/tmp/walk.jsonl", walk_path)
        if churn:
            t1 = time.monotonic()
            m.run(CHURN, check=True, timeout=900)
            run.seconds["churn"] = time.monotonic() - t1
        m.run(f"umount {MNT}", check=True)
        run.dmesg = m.run("dmesg", check=True).out
        # lockdep turns itself off after its first report (or when its tables fill up)
        run.features["debug_locks"] = m.run(
            "grep debug_locks /proc/lockdep_stats 2>/dev/null || echo none"
        ).out.strip()
    run.seconds["guest"] = time.monotonic() - t0
    run.bgs_after = block_groups(image)
    rep = StressReport(spec, f"btrfs image {image.name}", seed, ops, procs)
    log = parse_log(log_path.read_text())
    run.walk = read_walk(walk_path)
    rep.ops_logged = len(log.ops)
    rep.paths = len(run.walk)
    rep.walk_inodes = count_inodes(run.walk)
    rep.model = analyse_run("btrfs", log, run.walk)
    if checkers:
        rep.checkers = run_checkers(image, "btrfs")
    view = outside_view(image, "btrfs", RUN_DIR)
    rep.view_tool = view.tool
    rep.view_findings = view.findings
    rep.view_inodes = count_inodes(view.records)
    rep.view_differences = compare_outside_view(run.walk, view, "btrfs")
    run.report = rep
    rep.seconds.update(run.seconds)
    (out / "report.txt").write_text("\n".join(rep.lines(limit=200)) + "\n")
    (out / "dmesg.txt").write_text(run.dmesg)
    summary = {
        "spec": spec,
        "release": run.release,
        "features": {k: v.split() for k, v in run.features.items()},
        "block_groups_before": {str(k): list(v) for k, v in sorted(run.bgs_before.items())},
        "block_groups_after": {str(k): list(v) for k, v in sorted(run.bgs_after.items())},
        "seconds": {k: round(v, 1) for k, v in run.seconds.items()},
        "ok": rep.ok,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return run


def mount_attempt(spec: str, image: Path, out: Path) -> tuple[int, str]:
    """Try to mount ``image`` read-write in a guest; (mount's exit status, the kernel log)."""
    with machine(spec, image, "kbuild-mount", out, timeout=600) as m:
        r = m.run(f"mkdir -p {MNT} && mount {DEV} {MNT}; s=$?; umount {MNT} 2>/dev/null; exit $s")
        dmesg = m.run("dmesg", check=True).out
    (out / "dmesg.txt").write_text(dmesg)
    return r.status, dmesg
