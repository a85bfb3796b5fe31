"""The ext4 allocator on a target's kernel: ext4 images fragmented by a real kernel, and
single allocations whose block the model must predict. One target (one boot of a VM) runs
everything.

- Parity (:data:`~harness.ext4.config.PARITY_VARIANTS`): each variant is ``mke2fs``'d here,
  attached as a disk, fragmented on the target by the seeded workload of
  :mod:`harness.ext4.guest` and unmounted; afterwards ``dumpe2fs`` and our reader must agree
  on every group.
- Placement (:data:`~harness.ext4.config.PLACE_CASES`): a fresh filesystem per case (a
  pristine sparse copy is kept), attached as virtio (rotational in a guest) or NVMe
  (non-rotational); the target makes one ``fallocate`` of a new file on a mount without
  bitmap prefetch, with one CPU; the host reads the extent back with ``debugfs -R "ex /f"``
  and asks the model (:func:`~harness.ext4.placement.predict_placement`, on the pristine
  copy, with the target's ``rotational`` and the inode's group) where the kernel of that
  version puts it.

Each disk keeps its own interface (``DiskSpec.device``), so the run needs a VM target: the
host's loop devices have one kind. Timing: with the default tables, about 35 s per kernel
here (boot included).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from harness.ext4.config import PARITY_VARIANTS, PLACE_CASES, ParityVariant, PlaceCase
from harness.ext4.placement import big_request
from harness.target import DiskSpec, Target, TargetError, TargetSpec, open_target

NO_LAZY = ("-E", "lazy_itable_init=0,lazy_journal_init=0")


@dataclass
class JobResult:
    """One guest job. Fragment jobs: ``image`` is the fragmented image as the guest left it
    (a sparse copy taken between the phases). Placement jobs: ``image`` is the image after
    the allocation, ``before`` the state it was made on (mke2fs's, or the fragmented copy);
    ``blocks`` the request."""

    name: str
    kind: str
    status: str
    error: str
    seconds: float
    image: Path
    before: Path | None = None
    blocks: int = 0
    file: str = "f"  # placement: the new file, in the root directory
    guest: dict[str, object] = field(default_factory=dict)


@dataclass
class Ext4VmRun:
    kernel_spec: str
    release: str
    setup_seconds: float  # images made on the host
    boot_seconds: float
    guest_seconds: float  # both phases of guest jobs (copies between them included)
    stop_seconds: float  # power-off
    total_seconds: float
    results: dict[str, JobResult]


def mke2fs(path: Path, mib: int, args: tuple[str, ...]) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", *args, *NO_LAZY, str(path)],
        check=True,
        capture_output=True,
    )


def _cp_sparse(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


def _place_job(
    name: str, dev: str, blocks: int, blocksize: int, file: str = "f"
) -> dict[str, object]:
    return {
        "name": name,
        "file": file,
        "kind": "place",
        "dev": dev,
        "blocks": blocks,
        "blocksize": blocksize,
        "mount_opts": "no_prefetch_block_bitmaps",
    }


def _guest_jobs(
    t: Target,
    prog: str,
    jobs: list[dict[str, object]],
    results: dict[str, JobResult],
    deadline: float,
    phase: int,
) -> None:
    """Run ``jobs`` in one guest program (``python3 ext4_guest.py < jobs.json``)."""
    path = t.push(json.dumps(jobs).encode(), f"ext4-jobs-{phase}.json")
    r = t.run(
        f"{shlex.join(t.py(prog))} < {shlex.quote(path)}",
        timeout=max(deadline - time.monotonic(), 10),
        check=False,
    )
    for ln in r.out.splitlines():
        if not ln.startswith("{"):
            continue
        d = json.loads(ln)
        res = results[d["name"]]
        res.status = d["status"]
        res.error = d.get("error", "")
        res.seconds = d.get("seconds", 0.0)
        res.guest = d
    for j in jobs:
        res = results[str(j["name"])]
        if res.status == "missing":
            res.error = f"guest exit {r.status}: {r.err[-2000:]}"


def run_ext4(
    spec: TargetSpec,
    workdir: Path,
    variants: tuple[ParityVariant, ...] = PARITY_VARIANTS,
    cases: tuple[PlaceCase, ...] = PLACE_CASES,
) -> Ext4VmRun:
    """Bring up the target ``spec`` once and run every variant and case; images stay in
    ``workdir``. Phase 1: the placement cases on fresh filesystems and the fragmenting
    workloads; between the phases the fragmented images are copied (the guest has unmounted
    them); phase 2: one allocation on each fragmented image; phase 3: a request longer
    than any free extent on each. A kernel fault report is a :class:`TargetError`."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    disks: list[DiskSpec] = []
    results: dict[str, JobResult] = {}
    index: dict[str, int] = {}  # case or variant -> its disk
    for c in cases:
        img = workdir / f"{c.name}.img"
        before = workdir / f"{c.name}.before.img"
        mke2fs(img, c.mib, c.mkfs)
        _cp_sparse(img, before)
        index[c.name] = len(disks)
        disks.append(DiskSpec(img, "ext4", device=c.iface))
        results[c.name] = JobResult(c.name, "place", "missing", "", 0.0, img, before, c.blocks)
    for v in variants:
        img = workdir / f"{v.name}.img"
        mke2fs(img, v.mib, v.mkfs)
        index[v.name] = len(disks)
        disks.append(DiskSpec(img, "ext4", device=v.iface))
        frag = workdir / f"{v.name}.frag.img"
        results[v.name] = JobResult(v.name, "fragment", "missing", "", 0.0, frag)
        pname = f"{v.name}+place"
        results[pname] = JobResult(pname, "place", "missing", "", 0.0, img, frag, v.blocks)
    setup = time.monotonic() - t0
    deadline = t0 + spec.timeout - 20
    with open_target(spec, disks, name="ext4") as t:
        boot = t.seconds.get("boot", 0.0)
        release = t.release
        dev = {name: t.disks[i].dev for name, i in index.items()}
        guest = resources.files("harness.ext4").joinpath("guest.py").read_bytes()
        prog = t.push(guest, "ext4_guest.py")
        g0 = time.monotonic()
        phase1 = [_place_job(c.name, dev[c.name], c.blocks, c.blocksize) for c in cases]
        phase1 += [
            {
                "name": v.name,
                "kind": "fragment",
                "dev": dev[v.name],
                "seed": v.seed,
                "fill": v.fill,
                "rounds": v.rounds,
                "blocksize": v.blocksize,
            }
            for v in variants
        ]
        _guest_jobs(t, prog, phase1, results, deadline, 1)
        phase2 = []
        for v in variants:
            if results[v.name].status == "ok":
                _cp_sparse(workdir / f"{v.name}.img", results[v.name].image)
                phase2.append(_place_job(f"{v.name}+place", dev[v.name], v.blocks, v.blocksize))
        if phase2:
            _guest_jobs(t, prog, phase2, results, deadline, 2)
        phase3 = []
        for v in variants:
            if results[f"{v.name}+place"].status == "ok":
                img, before = workdir / f"{v.name}.img", workdir / f"{v.name}.before3.img"
                _cp_sparse(img, before)
                results[f"{v.name}+place"].image = before  # the state +place left
                name = f"{v.name}+big"
                blocks = big_request(before)
                results[name] = JobResult(
                    name, "place", "missing", "", 0.0, img, before, blocks, file="g"
                )
                phase3.append(_place_job(name, dev[v.name], blocks, v.blocksize, file="g"))
        if phase3:
            _guest_jobs(t, prog, phase3, results, deadline, 3)
        guest_s = time.monotonic() - g0
        faults = t.faults()
        if faults:
            raise TargetError(f"kernel fault reports on {t.label}: {'; '.join(faults)}")
        s0 = time.monotonic()
    stop = time.monotonic() - s0
    return Ext4VmRun(
        spec.kernel, release, setup, boot, guest_s, stop, time.monotonic() - t0, results
    )


def run_ext4_vm(
    kernel_spec: str,
    workdir: Path,
    variants: tuple[ParityVariant, ...] = PARITY_VARIANTS,
    cases: tuple[PlaceCase, ...] = PLACE_CASES,
    timeout: float = 240.0,
) -> Ext4VmRun:
    """:func:`run_ext4` on a VM booting ``kernel_spec`` with one vCPU and 1 GiB (its
    console and QEMU logs in ``workdir/vm``)."""
    spec = TargetSpec(
        kind="vm",
        kernel=kernel_spec,
        cpus=1,
        mem_mib=1024,
        timeout=timeout,
        log_dir=str(workdir / "vm"),
    )
    return run_ext4(spec, workdir, variants, cases)
