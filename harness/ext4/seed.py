"""The seed's published table (the free-space tree RFC's first and second write on its 60T
disk), read from the series' ``series.yaml`` through :func:`harness.series.load_series`:
each row's RAM as printed, trees cached, time in seconds and throughput as printed, keyed
by our allocator names; and the orderings the table shows."""

from __future__ import annotations

import functools
from typing import Any

from harness.series import Claim, load_series, patches_dir

SERIES = "ext4-free-space-tree"
WRITES = ("first", "second")
# our allocator name -> the suffix of the seed's claim ids (``first-write-frsp3-1g``)
ROWS = {
    "buddy": "buddy",
    "frsp0": "frsp0",
    "frsp1": "frsp1",
    "frsp2": "frsp2",
    "frsp3": "frsp3",
    "frsp3@1G": "frsp3-1g",
}
# the seed's RAM as binary units (its 1G-limit row holds 1023 MB under a 1 GiB limit)
_RAM_UNITS = {"ram_mb": 1 << 20, "ram_gb": 1 << 30}
_PERF_KEYS = ("throughput_kb_s", "throughput_mb_s")


def _row(c: Claim) -> dict[str, Any]:
    ram = next((k for k in _RAM_UNITS if k in c.seed), None)
    perf = next(k for k in _PERF_KEYS if k in c.seed)
    return {
        "ram": c.seed_text.get(ram) if ram else None,
        "ram_bytes": c.seed[ram] * _RAM_UNITS[ram] if ram else None,
        "trees": c.seed.get("trees_cached"),
        "seconds": c.seed["time_s"],
        "perf": c.seed_text[perf],
    }


@functools.cache
def alloc_seed_table() -> dict[str, dict[str, dict[str, Any]]]:
    """``{allocator: {"first" | "second": {ram, ram_bytes, trees, seconds, perf}}}``: the
    seed's rows (``ram`` and ``perf`` as printed, ``None`` where the seed prints ``-``)."""
    claims = {c.id: c for c in load_series(patches_dir() / SERIES).claims}
    return {
        name: {w: _row(claims[f"{w}-write-{suffix}"]) for w in WRITES}
        for name, suffix in ROWS.items()
    }


def seed_orderings() -> dict[str, bool]:
    """Whether each ordering :func:`harness.ext4.sim.orderings` checks holds in the seed's
    own table (all of its rows)."""
    t = alloc_seed_table()
    levels = ("frsp0", "frsp1", "frsp2", "frsp3")

    def get(n: str, w: str, k: str) -> float:
        return float(t[n][w][k])

    out = {
        "level 0 fastest on the first write (among the tree levels)": all(
            get("frsp0", "first", "seconds") <= get(n, "first", "seconds") for n in levels
        ),
        "level 0 leanest on the first write": all(
            get("frsp0", "first", "ram_bytes") <= get(n, "first", "ram_bytes") for n in levels
        ),
        "level 3 holds the most memory": all(
            get("frsp3", "second", "ram_bytes") >= get(n, "second", "ram_bytes") for n in levels
        ),
    }
    for w in WRITES:
        out[f"buddy slowest on the {w} write"] = all(
            get("buddy", w, "seconds") >= get(n, w, "seconds") for n in t if n != "buddy"
        )
    return out
