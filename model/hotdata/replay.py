"""Replay a trace through the tracking code and, optionally, the relocation kthread.

The kernel runs two periodic jobs from mount time: ``hot_update_worker`` every
HOT_UPDATE_INTERVAL (150 s, [2013-VFS]; first run one interval after mount, as
``hot_tree_init`` queues it delayed) and, with relocation, ``hot_relocate_kthread`` every
HOT_RELOC_INTERVAL (120 s, [2013-BTRFS]; its first ``hot_do_relocate`` runs at once, before
the first sleep). Here both are events on the trace's clock; at equal times accesses come
first, then the worker, then the relocation run.

A relocation re-dirties the moved pages; writeback later passes through ``do_writepages``,
which the series hooks, so the move is itself counted as a write of the moved range.
``rewrite_delay_ns`` (None: not modelled) schedules that write after each successful move
(the default writeback expiry is 30 s: ``dirty_expire_centisecs`` = 3000).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from model.hotdata.constants import HOT_RELOC_INTERVAL, HOT_UPDATE_INTERVAL, NSEC_PER_SEC
from model.hotdata.relocate import HotReloc, RelocRun, hot_do_relocate
from model.hotdata.trace import HotEvent, Trace
from model.hotdata.tracking import (
    HotInfo,
    hot_inode_item_delete,
    hot_update_freqs,
    hot_update_worker,
)

_IO, _WORKER, _RELOC = 0, 1, 2


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay. ``nonrot_total`` None: no relocation at all; 0: relocation enabled on
    a filesystem without SSD (the kthread runs and moves nothing)."""

    timers: bool = True
    update_interval_ns: int = HOT_UPDATE_INTERVAL * NSEC_PER_SEC
    reloc_interval_ns: int = HOT_RELOC_INTERVAL * NSEC_PER_SEC
    age_kick_ns: int | None = None  # [2012-VFS] aging (TIME_TO_KICK), None = 2013 (none)
    nonrot_total: int | None = None
    rewrite_delay_ns: int | None = None
    until_ns: int | None = None  # keep the timers running to this time (default: last event)


@dataclass
class ReplayResult:
    root: HotInfo
    reloc: HotReloc | None
    runs: list[RelocRun] = field(default_factory=list)
    worker_runs: int = 0
    now_ns: int = 0
    rewrites: int = 0


def replay_trace(trace: Trace, cfg: ReplayConfig | None = None) -> ReplayResult:
    """Feed every event to ``hot_update_freqs`` with the timers interleaved."""
    cfg = cfg or ReplayConfig()
    root = HotInfo()
    reloc = None if cfg.nonrot_total is None else HotReloc(nonrot_total=cfg.nonrot_total)
    res = ReplayResult(root=root, reloc=reloc)
    sizes = trace.sizes()
    mount = trace.mount_time_ns
    end = trace.end_time_ns if cfg.until_ns is None else max(cfg.until_ns, trace.end_time_ns)
    heap: list[tuple[int, int, int, HotEvent | None]] = []
    seq = 0
    for te in trace.events:
        heap.append((te.time_ns, _IO, seq, te))
        seq += 1
    heapq.heapify(heap)
    if cfg.timers:
        heapq.heappush(heap, (mount + cfg.update_interval_ns, _WORKER, -1, None))
        if reloc is not None:
            heapq.heappush(heap, (mount, _RELOC, -1, None))
    now = mount
    while heap:
        t, kind, _, ev = heapq.heappop(heap)
        if t > end:  # only timers and writebacks of moves can lie past the end
            break
        now = max(now, t)
        if kind == _IO:
            assert ev is not None
            if ev.op == "delete":
                hot_inode_item_delete(root, ev.inode)
            else:
                hot_update_freqs(root, ev.inode, ev.offset, ev.length, ev.write, t)
        elif kind == _WORKER:
            hot_update_worker(root, t, cfg.age_kick_ns)
            res.worker_runs += 1
            heapq.heappush(heap, (t + cfg.update_interval_ns, _WORKER, -1, None))
        else:
            assert reloc is not None
            run = hot_do_relocate(root, reloc, sizes)
            res.runs.append(run)
            if cfg.rewrite_delay_ns is not None:
                for m in run.moves:
                    if m.ret > 0:
                        w = HotEvent(t + cfg.rewrite_delay_ns, "write", m.i_ino, m.start, m.bytes)
                        heapq.heappush(heap, (w.time_ns, _IO, seq, w))
                        seq += 1
                        res.rewrites += 1
            heapq.heappush(heap, (t + cfg.reloc_interval_ns, _RELOC, -1, None))
    res.now_ns = max(now, end)
    return res
