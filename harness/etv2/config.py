"""What each part of the extent-tree-v2 study is asked (sizes in bytes)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.target import TargetSpec


@dataclass(frozen=True)
class LeafCapacityConfig:
    """Block group items per leaf of ``nodesize`` bytes; a measurement fallocates
    ``block_groups`` GiB so that the kernel makes that many data block groups."""

    nodesize: int = 16384
    block_groups: int = 400


@dataclass(frozen=True)
class CowCostConfig:
    """A filesystem of ``size`` bytes with ``fill`` bytes of files (4 MiB extents) and
    ``nodesize``-byte tree blocks, whose adjacent data block groups are updated in pairs."""

    size: int = 128 << 30
    fill: int = 120 << 30
    nodesize: int = 4096


@dataclass(frozen=True)
class ContentionSweep:
    """``threads`` writers against each count of global roots in ``global_roots``
    (:class:`model.btrfs.contention.ContentionConfig` for the other fields)."""

    threads: int = 16
    global_roots: tuple[int, ...] = (1, 2, 4, 8, 16)
    ops: int = 2000
    think: float = 10.0
    hold: float = 1.0
    placement: str = "spread"
    seed: int = 0


def vm_target(target: TargetSpec | str) -> TargetSpec:
    """``target``, or a VM booting the kernel spec ``target`` names (``debian:6.12``)."""
    return target if isinstance(target, TargetSpec) else TargetSpec(kind="vm", kernel=target)
