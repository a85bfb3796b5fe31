"""The hot-data study's output: Markdown and PNG for the simulator (``hot sim``) and the
VM bench (``hot bench``), and the text table of ``hot temp``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.hot.config import MiB
from harness.safeio import save_figure, write_atomic
from model.hotdata import constants as C

if TYPE_CHECKING:
    from harness.hot.experiment import BenchResult
    from harness.hot.sim import SimReport


def render_temp(rep: dict[str, Any]) -> str:
    """``fsoracle hot temp``'s table: one line per inode, then one per range of it."""
    now = rep["now_ns"]
    L = [
        f"now {now} ns; {len(rep['inodes'])} inodes; buckets = temp >> {32 - C.MAP_BITS}",
        f"{'inode':>10} {'start':>12} {'reads':>8} {'writes':>8} {'temp':>11} {'bucket':>6}",
    ]
    for ino in rep["inodes"]:
        L.append(
            f"{ino['inode']:>10} {'-':>12} {ino['nr_reads']:>8} {ino['nr_writes']:>8} "
            f"{ino['temp']:>11} {ino['bucket']:>6}"
        )
        for r in ino["ranges"]:
            L.append(
                f"{'':>10} {r['start']:>12} {r['nr_reads']:>8} {r['nr_writes']:>8} "
                f"{r['temp']:>11} {r['bucket']:>6}"
            )
    return "\n".join(L) + "\n"


def _fmt_bytes(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def render_sim(r: SimReport, png: Path | None = None) -> str:
    """The simulator's report as Markdown (``png``: the plot to link)."""
    L: list[str] = []
    L.append(f"## Hot data relocation: simulated random reads (preset `{r.preset}`)\n")
    L.append(
        f"Data set {_fmt_bytes(r.dataset_bytes)}, SSD {_fmt_bytes(r.ssd_capacity)} "
        f"({r.ssd_capacity / r.dataset_bytes:.0%} of it); {r.jobs} synchronous readers of "
        f"{r.io_size // 1024} KiB."
    )
    devs = "; ".join(
        f"{n}: {d['latency_ms']:g} ms per read"
        + (f", limit {d['rate_cap_iops']:g} IOPS" if d["rate_cap_iops"] else ", no limit")
        for n, d in r.devices.items()
    )
    L.append(f"Devices: {devs}. All-SSD vs all-HDD: {r.device_ratio:.1f}x.\n")
    L.append("| placement | on SSD | reads on SSD | predicted IOPS | limited by | speed-up |")
    L.append("|---|---:|---:|---:|---|---:|")
    for sc in r.scenarios:
        L.append(
            f"| {sc.label} | {_fmt_bytes(sc.ssd_bytes)} | {sc.p_ssd:.1%} | "
            f"{sc.throughput.iops:.0f} | {sc.throughput.limiter} | {sc.speedup:.2f}x |"
        )
    L.append(
        f'| seed (2010 RFC): "about 5x ... SSD of about 20%" | ~{r.seed_fraction:.0%} of '
        f"capacity | | | | about {r.seed_speedup:g}x |"
    )
    files = r.scenario("files")
    L.append(
        f"\nPredicted for the VM bench (whole files, model ranking): **{files.speedup:.2f}x** "
        f"beside the seed's about {r.seed_speedup:g}x."
    )
    if r.policy:
        pol = r.policy
        L.append(
            f"\nKernel policy replay: {pol['runs']} relocation runs over "
            f"{pol['elapsed_after_mount_s'] / 3600:.1f} h after mount; {pol['note']}; "
            f"{pol['moved_to_ssd']} ranges moved in, {pol['moved_to_hdd']} out; "
            f"threshold at the end {pol['final_thresh']}. The hottest range of phase 1 is in "
            f"bucket {r.trace['hottest_range_bucket']}; the threshold starts at "
            f"{C.HOT_RELOC_THRESHOLD} and comes down by 1 every "
            f"{C.RELOC_THRESH_UPDATE_PERIOD} runs "
            f"({C.RELOC_THRESH_UPDATE_PERIOD * C.HOT_RELOC_INTERVAL // 60} min) while the SSD is "
            f"at most {C.LOW_WATER_LEVEL} % full."
        )
    t = r.trace
    L.append(
        f"\nPhase 1: {t['reads']} reads over {t['inodes']} inodes / {t['ranges']} ranges; "
        f"phase 2: {t['phase2_reads']} reads. Inodes whose count heat wrapped (>= 4096 "
        f"accesses): {t['inodes_with_count_heat_wrapped']}."
    )
    if png is not None:
        L.append(f"\nPlot: `{png}`")
    return "\n".join(L) + "\n"


def plot_sim(r: SimReport, path: Path) -> Path:
    """Speed-up against SSD size for the three rankings, with the seed's point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    labels = {
        "ideal": "ideal (true Zipf ranking)",
        "ranges": "model ranking, 1 MiB ranges",
        "files": "model ranking, whole files (bench)",
    }
    styles = {"ideal": ("-", "o"), "ranges": ("-", "s"), "files": ("--", "x")}
    for key, pts in r.curve.items():
        ls, mk = styles[key]
        ax.plot(
            [100 * f for f, _ in pts],
            [y for _, y in pts],
            ls=ls,
            marker=mk,
            ms=4,
            label=labels[key],
        )
    if r.policy:
        pol = r.scenario("policy")
        ax.scatter(
            [100 * pol.ssd_bytes / r.dataset_bytes],
            [pol.speedup],
            marker="s",
            color="k",
            label="kernel policy replay (2013 constants)",
            zorder=5,
        )
    ax.scatter(
        [100 * r.seed_fraction],
        [r.seed_speedup],
        marker="*",
        s=160,
        color="tab:red",
        label="seed (2010): about 5x at about 20 %",
        zorder=6,
    )
    ax.axvline(100 * r.ssd_capacity / r.dataset_bytes, color="grey", lw=0.8, ls=":")
    ax.axhline(r.device_ratio, color="grey", lw=0.8, ls="--")
    ax.text(1, r.device_ratio, " all on SSD", va="bottom", fontsize=8, color="grey")
    ax.set_yscale("log")
    ticks = [t for t in (1, 2, 3, 5, 10, 20, 50, 100, 200) if t <= 1.5 * r.device_ratio]
    ax.set_yticks(ticks, [f"{t}x" for t in ticks])
    ax.set_xlabel("SSD capacity, % of the data set")
    ax.set_ylabel("predicted random-read speed-up (x)")
    ax.set_title(f"Hot data relocation, preset {r.preset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path


def render_bench(r: BenchResult, png: Path | None = None) -> str:
    """The bench's report as Markdown (``png``: the figure, linked by name)."""
    L = [
        f"## Hot data relocation on {r.release} ({r.accel}), preset `{r.preset}`\n",
        f"Data set {r.dataset_bytes / MiB:.0f} MiB in {r.files} files on the slow disk; "
        f"SSD share {r.ssd_capacity / MiB:.0f} MiB ({r.ssd_capacity / r.dataset_bytes:.0%}); "
        f"moved {len(r.moved)} files ({r.moved_bytes / MiB:.0f} MiB), ranked by the model from "
        f"the recorded trace ({r.trace_reads} reads, {r.trace_writes} writes; reads "
        f"{'equal to' if r.trace_matches_driver else 'DIFFER from'} the driver's log).\n",
        "| phase | placement | reads | seconds | reads/s |",
        "|---|---|---:|---:|---:|",
    ]
    for p in r.phases:
        L.append(f"| {p.name} | {p.placement} | {p.reads} | {p.seconds:.1f} | {p.iops:.1f} |")
    L += [
        "",
        "| speed-up after/before | value |",
        "|---|---:|",
        f"| measured (phase after / phase before) | **{r.measured_speedup:.2f}x** |",
        f"| model prediction for the recorded trace (`hot sim --trace`, files; "
        f"{r.predicted_iops_before:.0f} -> {r.predicted_iops_after:.0f} reads/s) "
        f"| {r.predicted_speedup:.2f}x |",
        f"| seed (2010): SSD of about {r.seed_fraction:.0%} of capacity | about "
        f"{r.seed_speedup:g}x |",
        "",
        f"Reads served by the moved files: measured {r.measured_p_ssd:.1%}, predicted "
        f"{r.predicted_p_ssd:.1%}. Hottest files by the driver's own phase-1 counts: "
        f"{', '.join(r.hottest_by_driver[:8])}"
        f"{' (all moved)' if set(r.hottest_by_driver) <= set(r.moved) else ' (NOT all moved)'}.",
        f"Wall time: boot {r.seconds.get('boot', 0):.0f} s, set-up {r.seconds.get('setup', 0):.0f}"
        f" s, total {r.seconds.get('total', 0):.0f} s.",
    ]
    if png is not None:
        L.append(f"\n![hot bench]({png.name})")
    return "\n".join(L) + "\n"


def plot_bench(r: BenchResult, path: Path) -> Path:
    """Measured and predicted reads/s before and after, and the speed-ups beside the seed's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4), dpi=110)
    ph = [p for p in r.phases if p.name in ("before", "after")]
    a1.bar([p.name for p in ph], [p.iops for p in ph], color=["tab:gray", "tab:green"])
    a1.bar(
        ["model before", "model after"],
        [r.predicted_iops_before, r.predicted_iops_after],
        color=["tab:gray", "tab:green"],
        alpha=0.4,
        hatch="//",
    )
    a1.set_ylabel("4 KiB O_DIRECT reads/s")
    a1.set_title("throughput (measured, model)")
    a2.bar(
        ["measured", "model (files)", "seed 2010"],
        [r.measured_speedup, r.predicted_speedup, r.seed_speedup],
        color=["tab:green", "tab:blue", "tab:red"],
    )
    a2.set_ylabel("speed-up after / before")
    a2.set_title(f"SSD = {r.ssd_capacity / r.dataset_bytes:.0%} of the data")
    fig.suptitle(f"hot data relocation, {r.release} ({r.accel}), {r.preset}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_bench_report(r: BenchResult, out: Path) -> Path:
    """``hot-bench.png`` and ``report.md`` in ``out``; the report's path."""
    png = plot_bench(r, out / "hot-bench.png")
    write_atomic(out / "report.md", render_bench(r, png))
    return out / "report.md"
