"""The statistical free-space generator and the scalable representation against the exact
per-block model at ~1 K groups.

Exact model: every group's 4 KiB block bitmap written out and read back bit by bit, trees in
sorted containers, every group visited one by one. Statistical model: runs generated on
demand, trees as arrays, cheap group rejections passed over in bulk. Stated bounds: the
same decisions (every extent handed out, the criterion that found it) and the same cost
counters, exactly; the generator's mean extents per group and free fraction within 5 % of
what was asked.
"""

from __future__ import annotations

import numpy as np
import pytest

from model.ext4.costs import CostModel
from model.ext4.fragment import FragSpec, GeneratedGroups, MaterialisedGroups
from model.ext4.frsp import FrspAllocator
from model.ext4.mballoc import Mballoc
from model.ext4.sim import write_file

SPEC = FragSpec(ngroups=1024, fragmentation=0.015, free_fraction=0.5, seed=3)
CM = CostModel()


@pytest.fixture(scope="module")
def sources() -> tuple[MaterialisedGroups, GeneratedGroups]:
    return MaterialisedGroups(SPEC), GeneratedGroups(SPEC)


def _make(name: str, src, exact: bool):  # type: ignore[no-untyped-def]
    if name.startswith("frsp"):
        lvl = int(name[4])
        limit = 64 << 20 if name.endswith("lim") else 0
        return FrspAllocator(src, lvl, mem_limit=limit, clock=CM.seconds, array_trees=not exact)
    kernel, opt = name.split("-")
    return Mballoc(src, kernel, optimize_scan=opt == "opt", rotational=True, fast_skip=not exact)


NAMES = [
    "6.1-lin",
    "6.1-opt",
    "6.12-lin",
    "6.12-opt",
    "frsp0",
    "frsp1",
    "frsp2",
    "frsp3",
    "frsp3lim",
]


@pytest.mark.parametrize("name", NAMES)
def test_same_decisions_and_costs(sources, name: str) -> None:  # type: ignore[no-untyped-def]
    exact_src, stat_src = sources
    out = []
    for src, exact in ((exact_src, True), (stat_src, False)):
        a = _make(name, src, exact)
        rows = []
        for nbytes in (10 << 20, 100 << 20):
            r = write_file(a, SPEC.geometry, nbytes, CM)
            rows.append(
                (
                    r.extents,
                    r.criteria,
                    r.costs.as_dict(),
                    r.memory_bytes,
                    r.trees_cached,
                    r.groups_initialised,
                )
            )
        out.append(rows)
    assert out[0] == out[1]


def test_generator_statistics(sources) -> None:  # type: ignore[no-untyped-def]
    exact_src, stat_src = sources
    n_ext = []
    free = []
    avail = []
    for g in range(SPEC.ngroups):
        s, n = exact_src.read_bitmap(g)
        n_ext.append(len(s))
        free.append(sum(n))
        avail.append(SPEC.blocks_per_group - SPEC.meta_prefix(g))
        assert sum(n) == stat_src.desc_free(g)
        # runs are maximal: separated by at least one used block, after the metadata
        assert all(b > a + m for a, m, b in zip(s, n, s[1:], strict=False))
        assert not s or s[0] >= SPEC.meta_prefix(g)
    assert abs(np.mean(n_ext) / SPEC.mean_extents - 1) < 0.05
    assert abs(np.sum(free) / np.sum(avail) / SPEC.free_fraction - 1) < 0.05


FULL = FragSpec(ngroups=640, fragmentation=0.015, free_fraction=0.1, seed=5)


@pytest.mark.parametrize("name", ["6.1-lin", "6.1-opt", "6.12-lin", "6.12-opt", "frsp0"])
def test_same_decisions_on_a_fuller_disk(name: str) -> None:
    """10 % free: short extents, many allocations per write, prefetch points passed over."""
    out = []
    for src, exact in ((MaterialisedGroups(FULL), True), (GeneratedGroups(FULL), False)):
        a = _make(name, src, exact)
        rows = []
        for nbytes in (4 << 20, 16 << 20):
            r = write_file(a, FULL.geometry, nbytes, CM)
            rows.append((r.extents, r.criteria, r.costs.as_dict(), r.memory_bytes))
        out.append(rows)
    assert out[0] == out[1]
