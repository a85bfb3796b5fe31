"""Lock contention on the global roots: N writer threads, M sets of global roots.

A discrete-event simulation (SimPy) of the extent-tree-v2 post's claim that spreading the
extent, csum and free space trees over M global roots cuts lock contention for
multi-threaded writers. The model is deliberately small and its assumptions are stated:

* Each writer thread repeats: think (exponential, mean ``think``), then modify the three
  global roots of the block group it writes into — extent tree, then csum tree, then free
  space tree — holding each root's lock for an exponential time of mean ``hold``. One lock
  per root stands for the root node's lock that every modifying search takes first
  (``btrfs_search_slot`` with ``cow=1`` write-locks the root; contention on the global
  roots is contention there).
* The block group a thread writes into: ``placement="spread"`` — each operation picks one
  of the block groups uniformly; ``placement="per-thread"`` — each thread keeps to its own
  block group (thread i uses block group i modulo the count), as the allocator's
  per-thread clustering tends to. A block group's global root id follows
  ``calculate_global_root_id`` (start in GiB modulo M).
* A lock request that cannot be granted at once is a wait; the result is the fraction of
  requests that waited and the mean wait.

With one root and exponential times, a single lock is an M/M/1-like queue with finite
callers; the tests check the simulation against closed forms in the light-load limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import simpy

from model.btrfs.globalroots import calculate_global_root_id

ROOT_KINDS = ("extent", "csum", "free-space")


@dataclass(frozen=True)
class ContentionConfig:
    threads: int
    global_roots: int
    block_groups: int = 64
    block_group_size: int = 1 << 30
    ops_per_thread: int = 2000
    think: float = 10.0  # mean think time between operations (arbitrary units)
    hold: float = 1.0  # mean lock hold time per root
    placement: str = "spread"  # or "per-thread"
    seed: int = 0


@dataclass(frozen=True)
class ContentionResult:
    config: ContentionConfig
    requests: int
    waits: int
    total_wait: float
    elapsed: float

    @property
    def wait_fraction(self) -> float:
        return self.waits / self.requests if self.requests else 0.0

    @property
    def mean_wait(self) -> float:
        return self.total_wait / self.requests if self.requests else 0.0


def simulate_contention(cfg: ContentionConfig) -> ContentionResult:
    """Run the simulation (deterministic for a seed)."""
    if cfg.threads < 1 or cfg.global_roots < 1 or cfg.block_groups < 1:
        raise ValueError("threads, global roots and block groups must be >= 1")
    if cfg.placement not in ("spread", "per-thread"):
        raise ValueError(f"placement {cfg.placement!r} is not spread or per-thread")
    rng = random.Random(cfg.seed)
    env = simpy.Environment()
    total = cfg.block_groups * cfg.block_group_size
    gid = [
        calculate_global_root_id(total, i * cfg.block_group_size, cfg.global_roots)
        for i in range(cfg.block_groups)
    ]
    locks = {
        (kind, g): simpy.Resource(env, capacity=1)
        for kind in ROOT_KINDS
        for g in range(cfg.global_roots)
    }
    stats = {"requests": 0, "waits": 0, "wait": 0.0}

    def writer(i: int) -> simpy.events.ProcessGenerator:
        for _ in range(cfg.ops_per_thread):
            yield env.timeout(rng.expovariate(1.0 / cfg.think))
            bg = (
                rng.randrange(cfg.block_groups)
                if cfg.placement == "spread"
                else (i % cfg.block_groups)
            )
            for kind in ROOT_KINDS:
                lock = locks[(kind, gid[bg])]
                t0 = env.now
                waited = lock.count >= lock.capacity
                with lock.request() as req:
                    yield req
                    stats["requests"] += 1
                    stats["waits"] += int(waited)
                    stats["wait"] += env.now - t0
                    yield env.timeout(rng.expovariate(1.0 / cfg.hold))

    for i in range(cfg.threads):
        env.process(writer(i))
    env.run()
    return ContentionResult(
        cfg, int(stats["requests"]), int(stats["waits"]), float(stats["wait"]), float(env.now)
    )
