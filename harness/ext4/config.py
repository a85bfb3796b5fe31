"""What the ext4 study runs: the allocator simulation's settings and its device and CPU cost
model (YAML preset ``presets/ext4_cost_model.yaml``), and the images and single allocations
the guest run makes (:data:`PARITY_VARIANTS`, :data:`PLACE_CASES`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import UserError
from model.ext4.costs import CostModel

PRESET = Path(__file__).resolve().parent / "presets" / "ext4_cost_model.yaml"

# the largest --groups: the generator keeps a few arrays per group (~70 bytes each; 4 M
# groups ~ 280 MiB before any allocator), 8.5 times the seed's 491 520 groups
MAX_GROUPS = 1 << 22


def load_cost_model(path: str | None) -> CostModel:
    """The cost model in the YAML file ``path``, or the committed preset."""
    p = Path(path) if path else PRESET
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise UserError(f"{p}: cannot read the cost model: {e.strerror}") from None
    return CostModel.from_dict(data or {})


@dataclass(frozen=True)
class AllocSimConfig:
    """``fsoracle ext4 alloc-sim``: a generated filesystem of ``groups`` groups (``flex``
    per flex-bg), files of ``writes`` bytes (comma-separated sizes) written in turn through
    each of ``allocators``; ``mem_limit`` adds a level-3 row with that limit; ``kernel``
    is the mballoc version of the buddy rows; ``exact``: per-block bitmaps instead of the
    statistical generator."""

    groups: int
    flex: int = 16
    fragmentation: float = 0.0151
    free_fraction: float = 0.5
    writes: str = "10M,100M"
    allocators: str = "buddy,optimize-scan,frsp0,frsp1,frsp2,frsp3"
    mem_limit: str | None = None
    kernel: str = "6.12"
    cost_model: str | None = None
    seed: int = 1
    exact: bool = False


# ------------------------------------------------------------------ the guest run


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
