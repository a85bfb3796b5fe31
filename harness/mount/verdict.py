"""Verdicts on a mount bench result (its JSON form, as ``result.json`` holds it): every
measured sample read exactly the predicted blocks, and the block group tree is faster."""

from __future__ import annotations

import statistics
from typing import Any


def measured(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples that mounted and were judged (``ok`` or ``mismatch``)."""
    return [s for s in result["samples"] if s["status"] in ("ok", "mismatch")]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cells(result: dict[str, Any]) -> list[tuple[str, str]]:
    c = result["config"]
    return [(lay, dev) for lay in c["layouts"] for dev in c["devices"]]


def timing(result: dict[str, Any], layout: str, dev: str, key: str) -> list[float]:
    """The measured samples' ``key`` (microseconds) in milliseconds, for one cell."""
    return [
        s[key] / 1000
        for s in measured(result)
        if s["layout"] == layout and s["device"] == dev and s[key] is not None
    ]


def acceptance(result: dict[str, Any]) -> dict[str, Any]:
    """Every measured sample equals the prediction; bg-tree faster than extent-tree."""
    samples = measured(result)
    all_match = bool(samples) and all(s["status"] == "ok" for s in samples)
    faster = {}
    for dev in result["config"]["devices"]:
        et = timing(result, "extent-tree", dev, "read_block_groups_us")
        bg = timing(result, "bg-tree", dev, "read_block_groups_us")
        if et and bg:
            faster[dev] = median(bg) < median(et)
    failed = [s for s in result["samples"] if s["status"] == "failed"]
    return {"reads_match": all_match, "bg_tree_faster": faster, "failed": len(failed)}
