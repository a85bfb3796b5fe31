"""The mount bench's Markdown report and plot, from a result's JSON form (``result.json``),
so that a saved result can be rendered again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.mount.verdict import acceptance, cells, measured, median, timing
from harness.safeio import save_figure


def render_report(result: dict[str, Any]) -> str:
    c = result["config"]
    seed = result["seed"]
    L: list[str] = []
    add = L.append
    add("# Mount timing: `btrfs_read_block_groups` traced, beside the model\n")
    add(
        f"Kernel `{result['kernel']['spec']}` ({result['kernel']['release']}), "
        f"{result['accelerator']['name'].upper()} ({_short(result['accelerator']['reason'])}), "
        f"{result['qemu']}; preset `{c['preset']}`: {c['size'] >> 30} GiB of "
        f"{c['extent_size'] >> 20} MiB preallocated extents on a {c['device_size'] >> 30} GiB "
        f"device, nodesize {c['nodesize']}, {c['repeat']} cold read-only mounts per layout and "
        f"device, one boot. Started {result['started']}, {result['wall_seconds']:.0f} s wall "
        f"(images {result['phase_seconds']['images']:.0f} s, VM "
        f"{result['phase_seconds']['vm']:.0f} s).\n"
    )
    acc = acceptance(result)
    add("## Tree blocks read, per window (measured in every sample vs the model)\n")
    add(
        f"Reads counted by a kprobe on `{result['probe']['function']}` "
        f"(`{result['probe']['fetch']}`), attributed by time to before / inside / after "
        "`btrfs_read_block_groups`. *Predicted* is `fsoracle btrfs predict-mount`'s "
        '"first read inside"; *same blocks* compares the addresses, not only the count; '
        "*root before*: the searched tree's root node was read before the window, as the "
        "model assumes.\n"
    )
    add(
        "| layout | device | samples | before | inside (measured) | inside (predicted) | "
        "after | same blocks | same order | root before |"
    )
    add("|---|---|---:|---:|---:|---:|---:|---|---|---|")
    for lay, dev in cells(result):
        ss = [s for s in result["samples"] if s["layout"] == lay and s["device"] == dev]
        ok = [s for s in ss if s["status"] in ("ok", "mismatch")]
        pred = result["images"][lay]["prediction"]["first_read_inside"]
        if not ok:
            st = ss[0]["status"] if ss else "not run"
            add(f"| {lay} | {dev} | 0 | | {st} | {pred} | | | | |")
            continue

        def span(key: str, ok: list[dict[str, Any]] = ok) -> str:
            v = sorted({len(s["reads"][key]) for s in ok})
            return str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"

        def yes(key: str, ok: list[dict[str, Any]] = ok) -> str:
            n = sum(1 for s in ok if s[key])
            return "yes" if n == len(ok) else f"{n}/{len(ok)}"

        add(
            f"| {lay} | {dev} | {len(ok)} | {span('before')} | {span('inside')} | {pred} | "
            f"{span('after')} | {yes('same_blocks')} | {yes('same_order')} | "
            f"{yes('root_read_before')} |"
        )
    verdict = "holds" if acc["reads_match"] else "DOES NOT HOLD"
    add(f"\nMeasured == predicted inside the window, every sample: **{verdict}**.\n")
    add(what_is_read(result))
    add("## Times (median, min-max over the samples)\n")
    add(
        "| layout | device | `btrfs_read_block_groups` ms | `open_ctree` ms | mount ms | "
        "block-layer reads (mount) |"
    )
    add("|---|---|---:|---:|---:|---:|")
    for lay, dev in cells(result):
        ok = [
            s
            for s in measured(result)
            if s["layout"] == lay and s["device"] == dev and s["block_io"].get("read_ios")
        ]

        def fmt(key: str, lay: str = lay, dev: str = dev) -> str:
            v = timing(result, lay, dev, key)
            return f"{median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-"

        ios = sorted(s["block_io"]["read_ios"] for s in ok)
        io = f"{median(ios):.0f}" if ios else "-"
        add(
            f"| {lay} | {dev} | {fmt('read_block_groups_us')} | {fmt('open_ctree_us')} | "
            f"{fmt('mount_us')} | {io} |"
        )
    add("\n## Ratios beside the seed\n")
    sm = seed["read_block_groups_ms"]
    so = seed["open_ctree_ms"]
    add(
        "The seed (2019 RFC, 1 TiB used, 4 KiB nodes, virtio-blk over a sparse file on NVMe) "
        "measured "
        f"`btrfs_read_block_groups` {sm['before_ms']} → {sm['after_ms']} ms "
        f"(×{sm['before_ms'] / sm['after_ms']:.1f}) and `open_ctree` {so['before_ms']} → "
        f"{so['after_ms']} ms (×{so['before_ms'] / so['after_ms']:.1f}), extent tree → its "
        "block group tree.\n"
    )
    add(
        "| device | layouts | `btrfs_read_block_groups` ms | ratio | seed ratio | "
        "`open_ctree` ratio | seed |"
    )
    add("|---|---|---:|---:|---:|---:|---:|")
    for dev in c["devices"]:
        et = median(timing(result, "extent-tree", dev, "read_block_groups_us"))
        eo = median(timing(result, "extent-tree", dev, "open_ctree_us"))
        for lay in ("bg-tree", "skinny-bg-tree"):
            v = timing(result, lay, dev, "read_block_groups_us")
            if not v or math.isnan(et):
                continue
            o = median(timing(result, lay, dev, "open_ctree_us"))
            add(
                f"| {dev} | extent-tree → {lay} | {et:.1f} → {median(v):.1f} | "
                f"×{et / median(v):.1f} | ×{sm['before_ms'] / sm['after_ms']:.1f} | "
                f"×{eo / o:.1f} | ×{so['before_ms'] / so['after_ms']:.1f} |"
            )
    faster = ", ".join(f"{d}: {'yes' if f else 'NO'}" for d, f in acc["bg_tree_faster"].items())
    add(
        "\nMedian `btrfs_read_block_groups` of the block group tree below the extent "
        f"tree's: {faster}.\n"
    )
    add("## Blocks beside the seed's table\n")
    add(
        "The seed counts every block the search touches, the root included; the kernel reads "
        "the root before the window (*root before* above), so measured = inside + 1.\n"
    )
    add("| layout | seed (nodes + leaves) | model: visited | measured: inside + root |")
    add("|---|---:|---:|---:|")
    for lay in c["layouts"]:
        sb = seed["blocks"][lay]
        p = result["images"][lay]["prediction"]
        ok = [s for s in measured(result) if s["layout"] == lay]
        meas = sorted({len(s["reads"]["inside"]) + int(bool(s["root_read_before"])) for s in ok})
        mtxt = "/".join(str(x) for x in meas) if meas else "skipped"
        add(
            f"| {lay} | {sb['total']} ({sb['nodes']} + {sb['leaves']}) | {p['visited']} "
            f"({p['visited_nodes']} + {p['visited_leaves']}) | {mtxt} |"
        )
    if c["size"] != 1 << 40:
        add(
            f"\n(This run has {c['size'] >> 30} GiB, the seed 1 TiB: block counts scale with the "
            "number of block groups.)"
        )
    skipped = [s for s in result["samples"] if s["status"] == "skipped"]
    failed = [s for s in result["samples"] if s["status"] == "failed"]
    if skipped:
        add("\n## Skipped (the kernel refused the layout)\n")
        for s in skipped:
            add(f"- {s['layout']} on {s['device']}: `{s['reason']}`")
    if failed:
        add("\n## Failed\n")
        for s in failed:
            add(f"- {s['layout']} on {s['device']} #{s['rep'] + 1}: {s['reason']}")
    add("\nRaw samples: `result.json`; traces: `traces/`; plot_mount_times: `mount.png`.\n")
    return "\n".join(L) + "\n"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def what_is_read(result: dict[str, Any]) -> str:
    """Per layout, the trees each window reads (first sample), from the block headers."""
    rows = ["| layout | window | blocks by tree (first sample) |", "|---|---|---|"]
    for lay in result["config"]["layouts"]:
        ok = [s for s in measured(result) if s["layout"] == lay]
        if not ok:
            continue
        blocks = result["images"][lay]["blocks"]
        for win in ("before", "inside", "after"):
            count: dict[str, int] = {}
            for a in ok[0]["reads"][win]:
                t = blocks.get(str(a), {}).get("tree") or "?"
                count[t] = count.get(t, 0) + 1
            txt = ", ".join(f"{t} {n}" for t, n in sorted(count.items())) or "none"
            rows.append(f"| {lay} | {win} | {txt} |")
    return "\n".join(rows) + "\n"


def plot_mount_times(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["config"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = {"extent-tree": "#c0504d", "bg-tree": "#4f81bd", "skinny-bg-tree": "#9bbb59"}
    seed = result["seed"]
    for ax, key, title, seed_ms in (
        (axes[0], "read_block_groups_us", "btrfs_read_block_groups", seed["read_block_groups_ms"]),
        (axes[1], "open_ctree_us", "open_ctree", seed["open_ctree_ms"]),
    ):
        n = len(c["layouts"])
        width = 0.8 / max(n, 1)
        for j, dev in enumerate(c["devices"]):
            for i, lay in enumerate(c["layouts"]):
                v = timing(result, lay, dev, key)
                x = j + (i - (n - 1) / 2) * width
                if not v:
                    ax.text(
                        x, 0.02, "skipped", rotation=90, ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform(),
                    )  # fmt: skip
                    continue
                ax.bar(x, median(v), width * 0.9, color=colors[lay], label=lay if j == 0 else None)
                ax.plot([x] * len(v), v, "k.", markersize=3)
        # the seed's two published times (extent tree, skinny block group tree), hatched
        xs = len(c["devices"])
        for i, (lay, ms) in enumerate(
            (("extent-tree", seed_ms["before_ms"]), ("skinny-bg-tree", seed_ms["after_ms"]))
        ):
            x = xs + (i - 0.5) * width
            label = f"seed: {lay}" if ax is axes[0] else None
            ax.bar(x, ms, width * 0.9, color=colors[lay], hatch="//", alpha=0.6, label=label)
        ax.set_xticks(range(xs + 1), [*c["devices"], "seed (2019,\nvirtio)"])
        ax.set_yscale("log")
        ax.set_ylabel("ms (bar: median; dots: samples)")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{result['kernel']['release']}, {result['accelerator']['name'].upper()}: "
        f"{c['size'] >> 30} GiB of {c['extent_size'] >> 20} MiB extents, nodesize "
        f"{c['nodesize']}, {c['repeat']} cold mounts each"
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
