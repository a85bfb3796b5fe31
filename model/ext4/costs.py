"""What an allocation costs (counted by the allocators) and the device/CPU cost model that
turns counts into modelled seconds (``harness/ext4/presets/ext4_cost_model.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class AllocCosts:
    bitmaps_read: int = 0  # synchronous block bitmap reads (I/O)
    bitmaps_prefetched: int = 0  # bitmap reads issued in batches (prefetch, tree load)
    read_batches: int = 0  # batches of reads issued together
    bitmaps_synthesised: int = 0  # BLOCK_UNINIT bitmaps built in memory (no I/O)
    buddies_built: int = 0  # ext4_mb_generate_buddy calls
    trees_built: int = 0  # free-space trees loaded (ext4_mb_frsp_load)
    tree_nodes_inserted: int = 0  # nodes created while building trees
    bitmaps_scanned: int = 0  # bitmaps turned into tree nodes
    groups_considered: int = 0  # good_group checks / list entries considered
    groups_scanned: int = 0  # groups whose buddy was scanned (ac_groups_scanned)
    trees_scanned: int = 0  # free-space trees processed
    extents_measured: int = 0  # ac_found
    nodes_visited: int = 0  # tree nodes visited (length-tree walk)
    meta_visited: int = 0  # meta-tree nodes visited
    evictions: int = 0  # free-space trees evicted (LRU)

    def add(self, other: AllocCosts) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> AllocCosts:
        return dataclasses.replace(self)

    def minus(self, other: AllocCosts) -> AllocCosts:
        out = AllocCosts()
        for f in dataclasses.fields(self):
            setattr(out, f.name, getattr(self, f.name) - getattr(other, f.name))
        return out

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CostModel:
    read_latency_s: float = 0.008
    queued_read_s: float = 0.0005
    rotational: bool = True
    buddy_generate_s: float = 40e-6
    group_check_s: float = 0.2e-6
    extent_measure_s: float = 0.5e-6
    node_insert_s: float = 0.4e-6
    node_visit_s: float = 0.1e-6
    meta_visit_s: float = 0.1e-6
    bitmap_scan_s: float = 10e-6
    hz: int = 250

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostModel:
        dev = d.get("device", {})
        cpu = d.get("cpu", {})
        k = d.get("kernel", {})
        return cls(
            read_latency_s=float(dev.get("read_latency_s", cls.read_latency_s)),
            queued_read_s=float(dev.get("queued_read_s", cls.queued_read_s)),
            rotational=bool(dev.get("rotational", cls.rotational)),
            buddy_generate_s=float(cpu.get("buddy_generate_s", cls.buddy_generate_s)),
            group_check_s=float(cpu.get("group_check_s", cls.group_check_s)),
            extent_measure_s=float(cpu.get("extent_measure_s", cls.extent_measure_s)),
            node_insert_s=float(cpu.get("node_insert_s", cls.node_insert_s)),
            node_visit_s=float(cpu.get("node_visit_s", cls.node_visit_s)),
            meta_visit_s=float(cpu.get("meta_visit_s", cls.meta_visit_s)),
            bitmap_scan_s=float(cpu.get("bitmap_scan_s", cls.bitmap_scan_s)),
            hz=int(k.get("HZ", cls.hz)),
        )

    def io_seconds(self, c: AllocCosts) -> float:
        queued = max(0, c.bitmaps_prefetched - c.read_batches)
        return (
            c.bitmaps_read * self.read_latency_s
            + c.read_batches * self.read_latency_s
            + queued * self.queued_read_s
        )

    def cpu_seconds(self, c: AllocCosts) -> float:
        return (
            c.buddies_built * self.buddy_generate_s
            + c.groups_considered * self.group_check_s
            + c.extents_measured * self.extent_measure_s
            + c.tree_nodes_inserted * self.node_insert_s
            + c.nodes_visited * self.node_visit_s
            + c.meta_visited * self.meta_visit_s
            + c.bitmaps_scanned * self.bitmap_scan_s
        )

    def seconds(self, c: AllocCosts) -> float:
        return self.io_seconds(c) + self.cpu_seconds(c)
