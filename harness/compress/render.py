"""Markdown for the compression study: a prediction as a table of extent items
(``fsoracle compress predict``) and a run's cases beside the model's verdicts."""

from __future__ import annotations

from harness.compress.compare import compare_case, compare_ordered
from harness.compress.experiment import VmRun
from model.btrfs import compression as Z
from model.btrfs.compress_predict import PredictedExtent, Prediction


def render_prediction(p: Prediction) -> str:
    lines = [
        f"kernel {p.kernel}  mount -o {p.mount_opts}  data {p.data}  i_size {p.i_size}",
        f"inode flags: {' '.join(p.inode_flags) or '(none)'}",
        f"{'offset':>10} {'type':8} {'compr':6} {'ram_bytes':>10} {'num_bytes':>10} "
        f"{'disk_num':>10} {'ext_off':>8}",
    ]
    for e in p.extents:
        disk = f"inline:{e.inline_size}" if e.type == "inline" else str(e.disk_num_bytes)
        mark = "" if e.exact else "  ~ (size estimated)"
        lines.append(
            f"{e.offset:>10} {e.type:8} {e.compression:6} {e.ram_bytes:>10} {e.num_bytes:>10} "
            f"{disk:>10} {e.extent_offset:>8}{mark}"
        )
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def render_run(run: VmRun) -> str:
    """A markdown table: one row per case, the kernel's extents beside the verdicts."""
    kernel = Z.check_modelled_kernel(run.kernel_spec)
    lines = [
        f"{run.release} ({run.cpus} vCPU, +{run.extra_opts}): boot {run.boot_seconds:.1f} s, "
        f"cases {run.guest_seconds:.1f} s, total {run.total_seconds:.1f} s",
        "",
        "| case | kernel's extents (offset type compression ram/num disk) | flags | layout+flags "
        "| disk_num_bytes | ordered extents add/remove |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in run.results.items():
        if res.result is None:
            lines.append(f"| {name} | {res.status}: {res.error} | | | | |")
            continue
        cmp = compare_case(kernel, res.case, res.result)
        oc = compare_ordered(kernel, res.case, res.trace)
        exts = "; ".join(_ext_text(e) for e in res.result.extents)
        if cmp.disk_off:
            disk = "off: " + ", ".join(f"@{o // 1024}K {p}≠{r}" for o, p, r in cmp.disk_off)
        else:
            disk = "exact"
        _, ka = oc.added
        _, kf = oc.finished
        lines.append(
            f"| {name} | {exts} | {' '.join(res.result.inode_flags) or '-'} | "
            f"{'equal' if cmp.layout_equal and cmp.flags_equal else 'DIFFERS'} | {disk} | "
            f"{len(ka)}/{len(kf)} {'equal' if oc.ok else 'DIFFERS'} |"
        )
    return "\n".join(lines)


def _ext_text(e: PredictedExtent) -> str:
    k = 1024
    if e.type == "inline":
        return f"{e.offset // k}K inline {e.compression} {e.ram_bytes} ({e.inline_size} B)"
    size = (
        f"{e.ram_bytes // k}K"
        if e.num_bytes == e.ram_bytes
        else f"{e.ram_bytes // k}K/{e.num_bytes // k}K"
    )
    return f"{e.offset // k}K {e.compression} {size} {e.disk_num_bytes // k}K"
