"""Temperatures of a trace (``fsoracle hot temp``): every inode and range record the model
keeps after replaying it, with ``hot_temp_calc`` at a chosen time and the heat-map bucket
histograms."""

from __future__ import annotations

from typing import Any

from model.hotdata import constants as C
from model.hotdata.freq import HotFreqData, hot_temp_bucket, hot_temp_parts
from model.hotdata.tracking import HotCommItem, HotInfo


def _record(freq: HotFreqData, item: HotCommItem, now: int) -> dict[str, Any]:
    parts = hot_temp_parts(freq, now)
    return {
        "nr_reads": freq.nr_reads,
        "nr_writes": freq.nr_writes,
        "last_read_time": freq.last_read_time,
        "last_write_time": freq.last_write_time,
        "avg_delta_reads": freq.avg_delta_reads,
        "avg_delta_writes": freq.avg_delta_writes,
        "last_temp": freq.last_temp,
        "temp": parts.temp,
        "bucket": hot_temp_bucket(parts.temp),
        "heat": {
            "nrr": parts.nrr,
            "nrw": parts.nrw,
            "ltr": parts.ltr,
            "ltw": parts.ltw,
            "avr": parts.avr,
            "avw": parts.avw,
        },
        "in_map": item.in_list,
        "map_bucket": hot_temp_bucket(freq.last_temp) if item.in_list else None,
    }


def temp_report(root: HotInfo, now: int) -> dict[str, Any]:
    """Every record with its temperature at ``now`` and the bucket histograms."""
    inodes = []
    hist: dict[str, dict[int, int]] = {"inode": {}, "range": {}}
    for he in root.iter_inodes():
        rec = {"inode": he.i_ino, **_record(he.freq, he, now), "ranges": []}
        hist["inode"][rec["bucket"]] = hist["inode"].get(rec["bucket"], 0) + 1
        for hr in he.iter_ranges():
            rr = {"start": hr.start, "len": hr.len, **_record(hr.freq, hr, now)}
            hist["range"][rr["bucket"]] = hist["range"].get(rr["bucket"], 0) + 1
            rec["ranges"].append(rr)
        inodes.append(rec)
    return {
        "now_ns": now,
        "range_bits": C.RANGE_BITS,
        "map_bits": C.MAP_BITS,
        "inodes": inodes,
        "buckets": {k: dict(sorted(v.items())) for k, v in hist.items()},
    }
