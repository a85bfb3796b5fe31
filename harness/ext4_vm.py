"""The ext4 allocator in the guest: ext4 images fragmented by a real kernel, and single allocations
whose block the model must predict. One boot per kernel runs everything.

- Parity (:data:`PARITY_VARIANTS`): each variant is ``mke2fs``'d here, attached as a virtio
  disk, fragmented in the guest by the seeded workload of :mod:`harness.ext4_guest` and
  unmounted; afterwards ``dumpe2fs`` and our reader must agree on every group.
- Placement (:data:`PLACE_CASES`): a fresh filesystem per case (a pristine sparse copy is
  kept), attached as virtio (rotational in the guest) or NVMe (non-rotational); the guest
  makes one ``fallocate`` of a new file on a mount without bitmap prefetch, with one vCPU;
  the host reads the extent back with ``debugfs -R "ex /f"`` and asks the model
  (:func:`predict_placement`, on the pristine copy, with the guest's ``rotational`` and the
  inode's group) where the kernel of that version puts it.

Timing: with the default tables, about 35 s per kernel here (boot included).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from model.blocksource import FileSource
from model.ext4.freespace import ImageGroups
from model.ext4.image import Ext4Image
from model.ext4.mballoc import Allocation, Mballoc
from model.ext4.request import ext4_alloc_file_blocks
from vm.disks import Disk
from vm.machine import Machine, MachineConfig

GUEST_DIR = "/tmp/fso-ext4"
NO_LAZY = ("-E", "lazy_itable_init=0,lazy_journal_init=0")


@dataclass(frozen=True)
class ParityVariant:
    """An image the guest fragments (dumpe2fs and our reader compare it afterwards), then
    mounts again for one more allocation of ``blocks`` blocks (placement on a fragmented
    filesystem, predicted from the image as the fragmenting left it)."""

    name: str
    mib: int
    mkfs: tuple[str, ...]
    blocksize: int
    blocks: int
    iface: str
    fill: float = 0.45
    rounds: int = 3
    seed: int = 9


@dataclass(frozen=True)
class PlaceCase:
    """One fallocate of ``blocks`` blocks on a fresh filesystem."""

    name: str
    mib: int
    mkfs: tuple[str, ...]
    blocksize: int
    blocks: int
    iface: str  # virtio: rotational in the guest; nvme: not


# Every feature on and off, both block sizes: 64bit (64-byte descriptors) or not, flex_bg or
# not, metadata_csum / gdt_csum (uninit groups) / no checksum (no uninit groups).
PARITY_VARIANTS: tuple[ParityVariant, ...] = (
    # 4 KiB defaults (64bit, flex_bg 16, metadata_csum, uninit groups); all 4 KiB variants
    # have 16 MiB groups (-g 4096), so 8 groups in 128 MiB
    ParityVariant("p-4k-default", 128, ("-b", "4096", "-g", "4096"), 4096, 48, "virtio", fill=0.35),
    ParityVariant("p-1k-default", 96, ("-b", "1024"), 1024, 64, "nvme", fill=0.35),
    ParityVariant(
        "p-4k-32bit-noflex",
        128,
        ("-b", "4096", "-g", "4096", "-O", "^64bit,^flex_bg"),
        4096,
        100,
        "virtio",
    ),
    ParityVariant(
        "p-1k-gdtcsum",
        64,
        ("-b", "1024", "-O", "^metadata_csum,uninit_bg"),
        1024,
        16,
        "nvme",
        fill=0.35,
    ),
    ParityVariant(
        "p-4k-nocsum",
        128,
        ("-b", "4096", "-g", "4096", "-O", "^metadata_csum,^uninit_bg"),
        4096,
        24,
        "nvme",
    ),
    ParityVariant(
        "p-1k-32bit-noflex-nocsum",
        48,
        ("-b", "1024", "-O", "^64bit,^flex_bg,^metadata_csum,^uninit_bg"),
        1024,
        32,
        "virtio",
    ),
)

# Over 16 blocks the request is a stream allocation (scan from s_mb_last_group = 0); up to 16
# a locality-group one (scan from the inode's goal group). 1 KiB blocks, 256 MiB: 32 groups,
# so mb_optimize_scan is on.
PLACE_CASES: tuple[PlaceCase, ...] = (
    PlaceCase("x-4k-64-rot", 512, ("-b", "4096"), 4096, 64, "virtio"),
    PlaceCase("x-4k-64-ssd", 512, ("-b", "4096"), 4096, 64, "nvme"),
    PlaceCase("x-4k-16-rot", 512, ("-b", "4096"), 4096, 16, "virtio"),
    PlaceCase("x-1k-32-rot", 256, ("-b", "1024"), 1024, 32, "virtio"),
    PlaceCase("x-1k-32-ssd", 256, ("-b", "1024"), 1024, 32, "nvme"),
    PlaceCase("x-1k-16-rot", 256, ("-b", "1024"), 1024, 16, "virtio"),
    PlaceCase("x-1k-16-ssd", 256, ("-b", "1024"), 1024, 16, "nvme"),
    PlaceCase("x-4k-noflex-32-rot", 256, ("-b", "4096", "-O", "^flex_bg"), 4096, 32, "virtio"),
    PlaceCase(
        "x-4k-nocsum-64-rot",
        256,
        ("-b", "4096", "-O", "^metadata_csum,^uninit_bg"),
        4096,
        64,
        "virtio",
    ),
)


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


def sparse_copy(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


def kernel_version(release: str) -> str:
    """``6.12.117+deb12-cloud-amd64`` → ``6.12``: the model version for a booted kernel."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"release {release!r}")
    v = f"{m.group(1)}.{m.group(2)}"
    if v not in ("6.1", "6.12"):
        raise ValueError(f"release {release!r}: the model knows 6.1 and 6.12")
    return v


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
    m: Machine, jobs: list[dict[str, object]], results: dict[str, JobResult], deadline: float
) -> None:
    r = m.run(
        ["python3", f"{GUEST_DIR}/ext4_guest.py"],
        input=json.dumps(jobs).encode(),
        timeout=max(deadline - time.monotonic(), 10),
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


def run_ext4_vm(
    kernel_spec: str,
    workdir: Path,
    variants: tuple[ParityVariant, ...] = PARITY_VARIANTS,
    cases: tuple[PlaceCase, ...] = PLACE_CASES,
    timeout: float = 240.0,
) -> Ext4VmRun:
    """Boot ``kernel_spec`` once (one vCPU) and run every variant and case; images stay in
    ``workdir``. Phase 1: the placement cases on fresh filesystems and the fragmenting
    workloads; between the phases the fragmented images are copied (the guest has unmounted
    them); phase 2: one allocation on each fragmented image."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    disks: list[Disk] = []
    results: dict[str, JobResult] = {}
    serials: dict[str, str] = {}
    for i, c in enumerate(cases):
        img = workdir / f"{c.name}.img"
        before = workdir / f"{c.name}.before.img"
        mke2fs(img, c.mib, c.mkfs)
        sparse_copy(img, before)
        serials[c.name] = f"x{i:02d}"
        disks.append(Disk(img, c.iface, serial=serials[c.name]))  # type: ignore[arg-type]
        results[c.name] = JobResult(c.name, "place", "missing", "", 0.0, img, before, c.blocks)
    for i, v in enumerate(variants):
        img = workdir / f"{v.name}.img"
        mke2fs(img, v.mib, v.mkfs)
        serials[v.name] = f"p{i:02d}"
        disks.append(Disk(img, v.iface, serial=serials[v.name]))  # type: ignore[arg-type]
        frag = workdir / f"{v.name}.frag.img"
        results[v.name] = JobResult(v.name, "fragment", "missing", "", 0.0, frag)
        pname = f"{v.name}+place"
        results[pname] = JobResult(pname, "place", "missing", "", 0.0, img, frag, v.blocks)
    setup = time.monotonic() - t0
    cfg = MachineConfig(
        kernel=kernel_spec,
        disks=tuple(disks),
        cpus=1,
        timeout=timeout,
        name="ext4",
        log_dir=workdir / "vm",
    )
    deadline = t0 + timeout - 20
    with Machine(cfg) as m:
        assert m.boot is not None
        boot = m.boot.seconds_to_ready
        release = m.boot.release
        dev = {name: m.disk(serial).dev for name, serial in serials.items()}
        m.run(["mkdir", "-p", GUEST_DIR], check=True)
        m.put_file(
            resources.files("harness").joinpath("ext4_guest.py").read_bytes(),
            f"{GUEST_DIR}/ext4_guest.py",
        )
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
        _guest_jobs(m, phase1, results, deadline)
        phase2 = []
        for v in variants:
            if results[v.name].status == "ok":
                sparse_copy(workdir / f"{v.name}.img", results[v.name].image)
                phase2.append(_place_job(f"{v.name}+place", dev[v.name], v.blocks, v.blocksize))
        if phase2:
            _guest_jobs(m, phase2, results, deadline)
        phase3 = []
        for v in variants:
            if results[f"{v.name}+place"].status == "ok":
                img, before = workdir / f"{v.name}.img", workdir / f"{v.name}.before3.img"
                sparse_copy(img, before)
                results[f"{v.name}+place"].image = before  # the state +place left
                name = f"{v.name}+big"
                blocks = big_request(before)
                results[name] = JobResult(
                    name, "place", "missing", "", 0.0, img, before, blocks, file="g"
                )
                phase3.append(_place_job(name, dev[v.name], blocks, v.blocksize, file="g"))
        if phase3:
            _guest_jobs(m, phase3, results, deadline)
        guest = time.monotonic() - g0
        m.check_faults()
        s0 = time.monotonic()
    stop = time.monotonic() - s0
    return Ext4VmRun(kernel_spec, release, setup, boot, guest, stop, time.monotonic() - t0, results)


# ------------------------------------------------------------------ host side
_EX_RE = re.compile(
    r"^\s*(\d+)/\s*(\d+)\s+\d+/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)",
    re.M,
)


def debugfs_extents(img: Path, path: str = "/f") -> list[tuple[int, int, int]]:
    """``debugfs -R "ex PATH"``: (logical, physical, length) of each leaf extent.

    Line format: ``level/max entry/max lstart - lend pstart - pend length [Uninit]``, e.g.
    `` 0/ 0   1/  1     0 -    63 33024 - 33087     64 Uninit``; leaves are the lines whose
    level is the tree's depth.
    """
    r = subprocess.run(
        ["debugfs", "-R", f"ex {path}", str(img)], capture_output=True, text=True, check=True
    )
    return [(int(m[3]), int(m[5]), int(m[7])) for m in _EX_RE.finditer(r.stdout) if m[1] == m[2]]


def inode_group(img: Path, ino: int) -> int:
    with FileSource(img) as src:
        return (ino - 1) // Ext4Image.open(src).sb.inodes_per_group


def predict_placement(
    before: Path, blocks: int, ino_group: int, kernel: str, rotational: bool
) -> tuple[list[Allocation], list[tuple[int, int, int]]]:
    """Where ``kernel``'s mballoc puts ``fallocate`` of ``blocks`` blocks of a new file whose
    inode is in ``ino_group``, on the filesystem in ``before`` just mounted: the
    allocations and the file's extents (logical, physical, length)."""
    with FileSource(before) as src:
        groups = ImageGroups(Ext4Image.open(src))
        m = Mballoc(groups, kernel, rotational=rotational)
        return ext4_alloc_file_blocks(m, blocks, ino_group)


def free_extents(img: Path) -> dict[int, list[tuple[int, int]]]:
    """Our reader's free extents per group (absolute block, length)."""
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        return {g: list(im.group_free_extents(g)) for g in range(im.groups_count)}


def big_request(img: Path) -> int:
    """A request no free extent of ``img`` holds: one and a half times the longest (so
    mballoc's best-found and its later criteria decide, and the file gets more than one
    extent), below a group's size."""
    with FileSource(img) as src:
        im = Ext4Image.open(src)
        longest = max(
            (n for g in range(im.groups_count) for _, n in im.group_free_extents(g)), default=1
        )
        return min(longest + longest // 2 + 1, im.sb.blocks_per_group - 1)
