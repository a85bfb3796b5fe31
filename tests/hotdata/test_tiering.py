"""The two-tier throughput model against closed forms, placements, and the Zipf workload."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.hotdata.constants import RANGE_SIZE
from model.hotdata.tiering import (
    DeviceModel,
    TierModel,
    device_ratio,
    fill_files,
    fill_ranges,
    predict_throughput,
    ssd_share_files,
    ssd_share_ranges,
)
from model.hotdata.trace import HotEvent
from model.hotdata.workload import (
    ZipfWorkload,
    synth_trace,
    zipf_rank_to_unit,
    zipf_reads,
    zipf_top_fraction,
    zipf_unit_probabilities,
)

MiB = RANGE_SIZE
SSD = DeviceModel("nvme", latency_s=0.25e-3)
HDD = DeviceModel("hdd", latency_s=8e-3, iops_cap=150, bps_cap=100 * MiB)
BENCH = TierModel(ssd=SSD, hdd=HDD, jobs=4, io_size=4096, cpu_s_per_io=0.25e-3, cpus=2)


def test_all_hdd_is_the_hdd_iops_limit() -> None:
    # 4 jobs / (0.25 ms + 8 ms) = 484.8/s > 150: the throttle binds
    t = predict_throughput(BENCH, 0.0)
    assert t.iops == 150 and t.limiter == "hdd limit"


def test_all_hdd_one_job_is_latency_bound() -> None:
    m = TierModel(ssd=SSD, hdd=HDD, jobs=1, io_size=4096, cpu_s_per_io=0.25e-3, cpus=2)
    # 1 / (0.25 ms + 8 ms) = 121.2/s < 150
    t = predict_throughput(m, 0.0)
    assert t.iops == pytest.approx(1 / 8.25e-3) and t.limiter == "jobs/latency"


def test_bps_limit() -> None:
    # 100 MiB/s of 4 KiB reads = 25600/s; of 1 MiB reads = 100/s < 150 IOPS
    assert HDD.rate_cap(4096) == 150
    assert HDD.rate_cap(MiB) == 100
    assert DeviceModel("x", 1e-3).rate_cap(4096) == math.inf


def test_all_ssd_and_the_device_ratio() -> None:
    # all on the SSD: min(4 / (0.25 + 0.25 ms) = 8000, 2 CPUs / 0.25 ms = 8000) = 8000
    assert predict_throughput(BENCH, 1.0).iops == pytest.approx(8000)
    assert device_ratio(BENCH) == pytest.approx(8000 / 150)
    # and the ratio tends to it as p -> 1
    almost = predict_throughput(BENCH, 1 - 1e-9).iops / predict_throughput(BENCH, 0).iops
    assert almost == pytest.approx(device_ratio(BENCH), rel=1e-6)


def test_cache_argument_while_the_hdd_limit_binds() -> None:
    # p = 0.8: HDD limit 150 / 0.2 = 750; jobs: 4 / (0.25 + 0.8 * 0.25 + 0.2 * 8 ms)
    # = 4 / 2.05 ms = 1951; CPU 8000 -> 750 = 5 x 150: speed-up 1 / (1 - p) = 5
    t = predict_throughput(BENCH, 0.8)
    assert t.iops == pytest.approx(750) and t.limiter == "hdd limit"
    assert t.iops / predict_throughput(BENCH, 0).iops == pytest.approx(5.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_monotone_in_ssd_share(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert predict_throughput(BENCH, hi).iops >= predict_throughput(BENCH, lo).iops - 1e-9


def test_fill_is_first_fit_in_rank_order() -> None:
    sizes = {1: 3 * MiB, 2: MiB // 2, 3: MiB}
    # ranges: (1,0) (1,1) (1,2) 1 MiB each, (2,0) 0.5 MiB, (3,0) 1 MiB; capacity 2.5 MiB
    ranked = [(1, 0), (3, 0), (1, 1), (2, 0), (1, 2)]
    assert fill_ranges(ranked, sizes, 2 * MiB + MiB // 2) == {(1, 0), (3, 0), (2, 0)}
    # files: 1 (3 MiB) does not fit 2.5 MiB, 3 and 2 do
    assert fill_files([1, 3, 2], sizes, 2 * MiB + MiB // 2) == {3, 2}


def test_ssd_share() -> None:
    reads = [
        HotEvent(0, "read", 1, 0, 4096),
        HotEvent(0, "read", 1, MiB - 4096, 8192),  # spans ranges 0 and 1
        HotEvent(0, "read", 2, 0, 4096),
        HotEvent(0, "write", 1, 0, 4096),  # not a read
        HotEvent(0, "read", 1, 0, 0),  # empty
    ]
    assert ssd_share_ranges(reads, {(1, 0)}) == pytest.approx(1 / 3)
    assert ssd_share_ranges(reads, {(1, 0), (1, 1)}) == pytest.approx(2 / 3)
    assert ssd_share_files(reads, {1}) == pytest.approx(2 / 3)
    assert ssd_share_files([], {1}) == 0.0


def test_zipf_top_fraction_by_hand() -> None:
    # n = 4, s = 1, k = 2: (1 + 1/2) / (1 + 1/2 + 1/3 + 1/4) = (3/2) / (25/12) = 18/25
    assert zipf_top_fraction(4, 1.0, 2) == pytest.approx(18 / 25)
    # s = 0 is uniform: k / n
    assert zipf_top_fraction(10, 0.0, 3) == pytest.approx(0.3)
    assert zipf_top_fraction(10, 0.99, 10) == pytest.approx(1.0)
    assert zipf_top_fraction(10, 0.99, 0) == 0.0


def test_sampled_reads_follow_the_closed_form() -> None:
    w = ZipfWorkload(files=50, file_size=2 * MiB, s=0.99, seed=7)
    reads = zipf_reads(w, seed=3, count=40000)
    order = zipf_rank_to_unit(w)
    top = {w.unit_location(u) for u in order[:20]}
    hits = sum(1 for ino, off in reads if (ino, off - off % MiB) in top)
    # 40000 draws: the standard error of the share is < 0.0025
    assert hits / len(reads) == pytest.approx(zipf_top_fraction(100, 0.99, 20), abs=0.012)
    probs = zipf_unit_probabilities(w)
    assert sum(probs) == pytest.approx(1.0)
    assert max(probs) == pytest.approx(1 / sum(k**-0.99 for k in range(1, 101)))


def test_workload_is_deterministic_and_aligned() -> None:
    w = ZipfWorkload(files=8, file_size=4 * MiB, io_size=4096, seed=1)
    a = zipf_reads(w, 5, 500)
    assert a == zipf_reads(w, 5, 500)
    assert a != zipf_reads(w, 6, 500)
    assert all(257 <= ino < 265 and off % 4096 == 0 and off < 4 * MiB for ino, off in a)
    # the popularity order does not depend on the read seed
    assert zipf_rank_to_unit(w) == zipf_rank_to_unit(
        ZipfWorkload(files=8, file_size=4 * MiB, seed=1)
    )


def test_synth_trace_shape() -> None:
    w = ZipfWorkload(files=3, file_size=MiB)
    t = synth_trace(w, start_ns=10**18, reads=10, read_rate=100.0, seed=1)
    writes = [e for e in t.events if e.op == "write"]
    reads = [e for e in t.events if e.op == "read"]
    assert [(e.inode, e.offset, e.length) for e in writes] == [
        (257, 0, MiB),
        (258, 0, MiB),
        (259, 0, MiB),
    ]
    # reads start 60 s after mount, 10 ms apart
    assert reads[0].time_ns == 10**18 + 60 * 10**9
    assert reads[1].time_ns - reads[0].time_ns == 10**7
    assert t.mount_time_ns == 10**18 and t.sizes() == {257: MiB, 258: MiB, 259: MiB}
    with pytest.raises(ValueError):
        ZipfWorkload(files=1, file_size=MiB + 1)
