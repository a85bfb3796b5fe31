"""The ext4 study's output: the alloc-sim table beside the seed's numbers (Markdown), its
plot_allocators (PNG), and the text form of ``fsoracle ext4 dump`` and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.ext4.seed import WRITES, alloc_seed_table
from harness.safeio import save_figure

if TYPE_CHECKING:
    from model.ext4.check import Ext4CheckResult


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 60:
        return f"{int(s // 60)}m{s % 60:04.1f}s"
    return f"{s:.2f}s"


def table_markdown(data: dict[str, Any]) -> str:
    """The alloc-sim document as Markdown: per write, our rows beside the seed's; then the
    orderings."""
    seeds = alloc_seed_table()
    lines = []
    spec = data["spec"]
    lines.append(
        f"{spec['groups']} groups ({spec['flex_bgs']} flex-bgs), "
        f"{spec['mean_free_extents_per_group']:.0f} free extents per group on average, "
        f"{spec['free_fraction']:.0%} free; kernel {spec['kernel']} for the buddy rows.\n"
    )
    for wi, wname in enumerate(("First", "Second")):
        lines.append(f"**{wname} write**\n")
        lines.append(
            "| allocator | RAM ours | RAM seed | trees cached ours | seed | bitmaps read "
            "| groups with buddies | allocations | modelled time | seed time |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in data["rows"]:
            if wi >= len(r["writes"]):
                continue
            w = r["writes"][wi]
            seed = seeds.get(r["allocator"], {}).get(WRITES[wi], {})
            lines.append(
                f"| {r['allocator']} | {_fmt_bytes(w['memory_bytes'])} | {seed.get('ram') or '-'} "
                f"| {w['trees_cached'] if w['trees_cached'] is not None else '-'} "
                f"| {seed.get('trees') or '-'} | {w['bitmaps_read']} | {w['groups_initialised']} "
                f"| {w['allocations']} | {_fmt_s(w['modelled_seconds'])} "
                f"| {_fmt_s(seed.get('seconds'))} |"
            )
        lines.append("")
    lines.append("| seed claim | ours | seed |")
    lines.append("|---|---|---|")
    for o in data["orderings"]:
        lines.append(
            f"| {o['claim']} | {'holds' if o['ours'] else 'does not hold'} | "
            f"{'holds' if o['seed'] else 'does not hold'} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot_allocators(data: dict[str, Any], path: Path) -> None:
    """Time per write (ours and the seed's, log scale) and memory after the last write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = alloc_seed_table()
    names = [r["allocator"] for r in data["rows"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for wi, ax in enumerate(axes[:2]):
        ours = [
            r["writes"][wi]["modelled_seconds"] if wi < len(r["writes"]) else 0
            for r in data["rows"]
        ]
        seed = [seeds.get(n, {}).get(WRITES[wi], {}).get("seconds") or 0 for n in names]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [max(v, 1e-3) for v in ours], 0.4, label="model")
        have = [i for i in x if seed[i]]
        ax.bar([i + 0.2 for i in have], [seed[i] for i in have], 0.4, label="seed")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, rotation=30)
        ax.set_ylabel("seconds")
        ax.set_title(WRITES[wi] + " write: time")
        ax.legend()
    ax = axes[2]
    mem = [r["writes"][-1]["memory_bytes"] / (1 << 20) for r in data["rows"]]
    ax.bar(names, [max(m, 1e-3) for m in mem])
    ax.set_yscale("log")
    ax.set_ylabel("MiB held after the last write")
    ax.set_title("memory")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def dump_text(data: dict[str, Any]) -> str:
    """``fsoracle ext4 dump`` without ``--json``: the superblock, each group's free count
    and free extents, the totals."""
    s = data["superblock"]
    out = [
        f"blocks {s['blocks_count']}  free {s['free_blocks_count']}  block size "
        f"{s['block_size']}  first data block {s['first_data_block']}\n"
        f"groups {s['groups']} of {s['blocks_per_group']} blocks  descriptor size "
        f"{s['desc_size']}  flex_bg size {s['flex_bg_size']}\n"
        f"features: {' '.join(s['features'])}\n"
    ]
    for g in data["groups"]:
        flags = f" [{', '.join(g['flags'])}]" if g["flags"] else ""
        ext = ", ".join(f"{a}-{a + n - 1}" if n > 1 else f"{a}" for a, n in g["free_extents"])
        out.append(
            f"Group {g['group']}:{flags} {g['free_blocks']} free blocks, "
            f"{len(g['free_extents'])} free extents: {ext}\n"
        )
    t = data["totals"]
    out.append(
        f"total: {t['free_blocks']} free blocks in {t['free_extents']} extents, largest "
        f"{t['largest_free_extent']}; {t['bitmaps_read']} bitmaps read, "
        f"{t['bitmaps_synthesised']} synthesised (BLOCK_UNINIT)\n"
    )
    return "".join(out)


def check_text(res: Ext4CheckResult) -> str:
    """``fsoracle ext4 check`` without ``--json``: warnings, findings, the verdict."""
    lines = [f"warning: {f}" for f in res.warnings] + [str(f) for f in res.findings]
    verdict = "no error found" if res.ok else f"{len(res.findings)} error(s) found"
    lines.append(
        f"checked {res.groups_checked} groups ({res.bitmaps_read} block bitmaps read): {verdict}"
    )
    return "\n".join(lines) + "\n"
