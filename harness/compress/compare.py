"""A case's prediction against what the kernel left: the file's extent items, inode flags
and sizes (:func:`compare_case`) and its ordered extents against the trace
(:func:`compare_ordered`)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.compress.config import Case, parse_ops
from harness.compress.experiment import TraceEvent
from harness.compress.kernel_zstd import compress_fn_for
from harness.compress.readback import HostResult
from model.btrfs import compression as Z
from model.btrfs.compress_predict import (
    PredictedOrdered,
    Prediction,
    predict,
    predict_ordered_extents,
    run_ops,
)
from model.linux import SZ_4K


@dataclass
class CaseComparison:
    """A case's prediction against what the kernel left, field by field."""

    name: str
    kernel: str
    predicted: Prediction
    got: HostResult
    layout_equal: bool  # offset, type, compression, ram_bytes, num_bytes, extent offset
    flags_equal: bool
    size_equal: bool  # i_size
    dump_tree_equal: bool  # our reader == btrfs-progs
    disk_exact: list[tuple[int, int, int]]  # (offset, predicted, real) equal
    disk_off: list[tuple[int, int, int]]  # (offset, predicted, real) not equal
    payload_bytes: list[tuple[int, int, int]]  # (offset, model stream bytes, kernel's)

    @property
    def ok(self) -> bool:
        """Everything the acceptance asks: layout and flags equal; every compressed size
        predicted exactly where the model says it is exact, else within one sector."""
        exact_ok = all(
            p == r
            for (off, p, r) in self.disk_off
            if next(e for e in self.predicted.extents if e.offset == off).exact
        )
        return (
            self.layout_equal
            and self.flags_equal
            and self.size_equal
            and self.dump_tree_equal
            and exact_ok
            and all(abs(p - r) <= SZ_4K for _, p, r in self.disk_off)
        )


def layout(exts: list) -> list[tuple[int, str, str, int, int, int]]:  # type: ignore[type-arg]
    return [
        (e.offset, e.type, e.compression, e.ram_bytes, e.num_bytes, e.extent_offset) for e in exts
    ]


def compare_case(kernel: str, case: Case, got: HostResult) -> CaseComparison:
    """The prediction for ``kernel`` (6.1 / 6.12) against the kernel's result; zstd sizes
    come from the kernel's zstd version when installed (:mod:`harness.compress.kernel_zstd`: exact),
    else from the bundled one (within a sector); zlib and lzo from userspace (estimates)."""
    pred = predict(
        kernel,
        case.mount_opts,
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    exact, off, payload = [], [], []
    for p, h in zip(pred.extents, got.extents, strict=False):
        if p.offset != h.offset or p.type != h.type:
            continue
        pv, hv = (
            (p.inline_size, h.inline_size)
            if p.type == "inline"
            else (p.disk_num_bytes, h.disk_num_bytes)
        )
        (exact if pv == hv else off).append((p.offset, pv, hv))
    m = _model_raw_sizes(kernel, case)
    for off_, real in sorted(got.compressed_payload_sizes.items()):
        if off_ in m:
            payload.append((off_, m[off_], real))
    dt = [
        (
            e.offset,
            e.type,
            e.compression,
            e.ram_bytes,
            e.num_bytes,
            e.disk_num_bytes if e.type == "regular" else e.inline_size,
        )
        for e in got.extents
    ]
    return CaseComparison(
        case.name,
        kernel,
        pred,
        got,
        layout(pred.extents) == layout(got.extents),
        pred.inode_flags == got.inode_flags,
        pred.i_size == got.i_size,
        dt == got.dump_tree_extents,
        exact,
        off,
        payload,
    )


def _model_raw_sizes(kernel: str, case: Case) -> dict[int, int]:
    """The model's compressed stream length (before sector alignment) per extent offset."""
    w = run_ops(
        kernel,
        Z.parse_mount_options(case.mount_opts),
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    out = {}
    for it in w.items:
        if it.ext_id is not None and it.offset == 0:
            out[it.file_offset] = w.disk[it.ext_id].raw_size
    return out


@dataclass
class OrderedComparison:
    name: str
    predicted: list[PredictedOrdered]
    trace: list[TraceEvent]

    def _kernel(self, event: str) -> list[tuple[int, int]]:
        return [(e.file_offset, e.length) for e in self.trace if e.event == event]

    def _model(self, event: str) -> list[tuple[int, int]]:
        return [(p.file_offset, p.num_bytes) for p in self.predicted if p.event == event]

    @property
    def added(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(model, kernel) ordered extents added: (file_offset, num_bytes) in order."""
        return self._model("add"), self._kernel("add")

    @property
    def finished(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self._model("finish"), self._kernel("remove")

    @property
    def compression(self) -> tuple[list[int], list[int]]:
        """Compression type per added ordered extent, in (file_offset) order."""
        m = sorted((p.file_offset, p.compression) for p in self.predicted if p.event == "add")
        k = sorted((e.file_offset, e.compress_type) for e in self.trace if e.event == "add")
        return [c for _, c in m], [c for _, c in k]

    @property
    def splits(self) -> int:
        return sum(1 for e in self.trace if e.event == "split")

    @property
    def ok(self) -> bool:
        (ma, ka), (mf, kf) = self.added, self.finished
        mc, kc = self.compression
        return sorted(ma) == sorted(ka) and sorted(mf) == sorted(kf) and mc == kc


def compare_ordered(kernel: str, case: Case, trace: list[TraceEvent]) -> OrderedComparison:
    pred = predict_ordered_extents(
        kernel,
        case.mount_opts,
        parse_ops(case.ops),
        case.data,
        case.existing_size,
        compress_fn=compress_fn_for(kernel),
    )
    return OrderedComparison(case.name, pred, trace)
