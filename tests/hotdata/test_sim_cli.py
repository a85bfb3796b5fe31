"""The simulator on a small preset against closed forms, and the ``fsoracle hot`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.hot.config import load_preset, setup_from_preset
from harness.hot.render import plot_sim, render_sim
from harness.hot.sim import SimReport, file_name, files_to_move, phase1_trace, read_plan, run_sim
from model.hotdata.constants import HOT_RELOC_THRESHOLD

TINY = {
    "name": "tiny",
    "workload": {
        "files": 64,
        "file_size_mib": 1,
        "io_size": 4096,
        "zipf_exponent": 0.99,
        "zipf_unit_mib": 1,
        "rank_seed": 5,
        "jobs": 4,
        "setup_writes": True,
        "trace_reads": 3000,
        "trace_seed": 1,
        "measure_seed": 2,
        "sim_measure_reads": 6000,
    },
    "devices": {
        "ssd": {"name": "nvme", "latency_ms": 0.25, "iops_cap": None, "bps_cap_mib": None},
        "hdd": {"name": "hdd", "latency_ms": 8.0, "iops_cap": 150, "bps_cap_mib": 100},
    },
    "host": {"cpus": 2, "cpu_ms_per_io": 0.25},
    "tiering": {"ssd_capacity_fraction": 0.2, "curve_fractions": [0.0, 0.2, 1.0]},
    "policy": {"start_realtime": "2026-11-01T00:00:00Z", "horizon_hours": 2, "rewrite_delay_s": 30},
    "seed_claim": {"speedup": 5.0, "ssd_fraction": 0.2},
}


@pytest.fixture(scope="module")
def report() -> SimReport:
    return run_sim(setup_from_preset(TINY))


def test_before_is_the_hdd_limit_and_all_ssd_the_device_ratio(report: SimReport) -> None:
    hdd = report.scenario("hdd")
    assert hdd.throughput.iops == 150 and hdd.speedup == 1.0
    # all on the SSD: min(4 / 0.5 ms, 2 / 0.25 ms) = 8000
    assert report.scenario("ssd").speedup == pytest.approx(8000 / 150)
    assert report.device_ratio == pytest.approx(8000 / 150)


def test_ideal_is_the_closed_form_cache_argument(report: SimReport) -> None:
    # 20 % of 64 MiB = 12.8 MiB -> the 12 hottest of 64 units;
    # F = H(12, 0.99) / H(64, 0.99); the HDD limit binds (150 / (1 - F) < 4 jobs /
    # (0.25 ms + F * 0.25 ms + (1 - F) * 8 ms)), so the speed-up is 1 / (1 - F)
    f = sum(k**-0.99 for k in range(1, 13)) / sum(k**-0.99 for k in range(1, 65))
    ideal = report.scenario("ideal")
    assert ideal.p_ssd == pytest.approx(f)
    assert ideal.speedup == pytest.approx(1 / (1 - f))
    assert ideal.throughput.limiter == "hdd limit"
    assert ideal.ssd_bytes == 12 * 2**20


def test_model_ranking_comes_close_to_ideal(report: SimReport) -> None:
    ideal = report.scenario("ideal").p_ssd
    for key in ("ranges", "files"):
        sc = report.scenario(key)
        assert sc.ssd_bytes <= report.ssd_capacity
        assert sc.p_ssd == pytest.approx(ideal, abs=0.08)


def test_kernel_policy_moves_nothing_in_two_hours(report: SimReport) -> None:
    # every range was written at setup (ltw ~ 2^30) and the read ones have ltr ~ 2^30:
    # 128 buckets, plus 1 bucket per 128 reads. With 3000 reads over 64 ranges the hottest
    # gets a few hundred reads: bucket ~130, below the threshold 150, which comes down by
    # 1 per 15 runs (30 min): 2 h lower it by 4 at most.
    assert report.trace["hottest_range_bucket"] < HOT_RELOC_THRESHOLD - 4
    pol = report.policy
    assert pol["moved_to_ssd"] == 0 and pol["p_ssd"] == 0.0
    assert pol["final_thresh"] >= HOT_RELOC_THRESHOLD - 4
    assert report.scenario("policy").speedup == 1.0


def test_markdown_and_plot(report: SimReport, tmp_path: Path) -> None:
    png = plot_sim(report, tmp_path / "x.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = render_sim(report, png)
    assert "about 5x" in md and "| placement |" in md


def test_committed_preset_loads() -> None:
    s = setup_from_preset(load_preset("hot_bench"))
    assert s.ssd_capacity == int(0.2 * s.workload.dataset_bytes)
    assert s.workload.s == 0.99 and s.jobs == 4


# --- the CLI ------------------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_hot_temp_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tr = tmp_path / "t.jsonl"
    tr.write_text('{"time_ns": 1000, "op": "read", "inode": 257, "offset": 0, "length": 4096}\n')
    rc, out, _ = run(["hot", "temp", "--trace", str(tr), "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    (ino,) = d["inodes"]
    (rng,) = ino["ranges"]
    # one read at 1000 ns, looked at 1000 ns: 2149711871, bucket 128 (test_freq)
    for rec in (ino, rng):
        assert rec["temp"] == 2149711871 and rec["bucket"] == 128
        assert rec["avg_delta_reads"] == 2 and rec["avg_delta_writes"] == 2**64 - 1
    assert d["buckets"] == {"inode": {"128": 1}, "range": {"128": 1}}
    rc, out, _ = run(["hot", "temp", "--trace", str(tr)], capsys)
    assert rc == 0 and "2149711871" in out


def test_hot_temp_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["hot", "temp", "--trace", str(tmp_path / "none")], capsys)
    assert rc == 2 and "no such file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time_ns": 1, "op": "read", "inode": 1, "offset": 0}\n')
    rc, _, err = run(["hot", "temp", "--trace", str(bad)], capsys)
    assert rc == 2 and "hot trace" in err and err.count("\n") == 1


def test_synth_then_temp_and_sim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY))
    trace = tmp_path / "trace.jsonl"
    rc, _, _ = run(["hot", "synth", "--preset", str(preset), "--out", str(trace)], capsys)
    assert rc == 0
    lines = trace.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "fsoracle-hot-trace"
    assert sum('"op":"read"' in ln for ln in lines) == 3000
    rc, out, _ = run(["hot", "temp", "--trace", str(trace), "--json"], capsys)
    assert rc == 0 and len(json.loads(out)["inodes"]) == 64
    rc, out, _ = run(
        [
            "hot",
            "sim",
            "--preset",
            str(preset),
            "--trace",
            str(trace),
            "--out",
            str(tmp_path),
            "--no-policy",
        ],
        capsys,
    )
    assert rc == 0 and "about 5x" in out
    assert (tmp_path / "hot-sim-tiny.png").exists()
    rc, _, err = run(["hot", "sim", "--preset", "no-such-preset"], capsys)
    assert rc == 2 and "not found" in err


def test_bench_helpers() -> None:
    s = setup_from_preset(TINY)
    plan = read_plan(s, "trace")
    assert len(plan) == 3000 and plan[0][0].startswith("f000")
    assert all(off % 4096 == 0 and off < 2**20 for _, off in plan)
    assert read_plan(s, "measure", 10) == read_plan(s, "measure")[:10]
    trace = phase1_trace(s)
    moved = files_to_move(s, trace)
    # 1 MiB files into 12.8 MiB: 12 files, the most-read first
    assert len(moved) == 12
    reads = {}
    for ev in trace.events:
        if ev.op == "read":
            reads[ev.inode] = reads.get(ev.inode, 0) + 1
    counts = [reads.get(i, 0) for i in moved]
    assert counts == sorted(counts, reverse=True)
    assert min(counts) >= max(c for i, c in reads.items() if i not in moved)
    assert file_name(s, 257) == "f00000"
