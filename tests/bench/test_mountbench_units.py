"""``fsoracle bench mount`` without a guest: presets, the per-sample shell output, the
verdicts and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.errors import UserError
from harness.mount.config import default_device_size, load_presets, make_config
from harness.mount.guest import UNSUPPORTED, parse_script_output
from harness.mount.render import plot_mount_times, render_report
from harness.mount.verdict import acceptance

G = 1 << 30


def test_presets_are_data() -> None:
    p = load_presets()
    assert {"default", "seed", "small"} <= set(p)
    seed = make_config("seed")
    # the RFC: "Nodesize: 4K", "Extent data size: 4M", "Fs size used: 1T"
    assert (seed.size, seed.nodesize, seed.extent_size) == (1 << 40, 4096, 4 << 20)
    assert seed.device_size == 1126 * G  # as `fsoracle btrfs seed-table`
    assert seed.layouts == ("extent-tree", "bg-tree", "skinny-bg-tree")
    assert seed.devices == ("virtio", "nvme")


def test_overrides_and_device_size() -> None:
    cfg = make_config(
        "default",
        kernel="build:6.12+skinny-bg-tree",
        overrides={"size": "100G", "layouts": "bg-tree", "devices": "nvme", "repeat": 1},
    )
    assert cfg.kernel == "build:6.12+skinny-bg-tree"
    assert cfg.layouts == ("bg-tree",) and cfg.devices == ("nvme",) and cfg.repeat == 1
    assert cfg.size == 100 * G and cfg.device_size == 110 * G  # 10 % more, whole GiB
    assert default_device_size(256 * G) == 282 * G  # ceil(281.6)
    assert make_config("default", overrides={"size": None}).size == 256 * G


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"layouts": "extent-tree,btree"}, "btree"),
        ({"devices": "scsi"}, "scsi"),
        ({"repeat": 0}, "repeat"),
        ({"size": "lots"}, "bad size"),
        ({"size": "1G", "device_size": "128M"}, "256 MiB"),
    ],
)
def test_bad_options_are_user_errors(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match):
        make_config("default", overrides=overrides)
    with pytest.raises(UserError, match="no preset"):
        make_config("huge")


def test_script_output() -> None:
    out = (
        "rc=0\n"
        "stat0=       1        0        8        1        0 0 0 0 0 0 1 0 0 0 0 0 0\n"
        "stat1=      57        2      438      146        0 0 0 0 0 124 146 0 0 0 0 0 0\n"
        "--dmesg--\n[   56.8] BTRFS info (device vda): first mount\n\n"
        "--stderr--\n"
    )
    rc, io, dmesg, err = parse_script_output(out)
    # /sys/block/DEV/stat: reads completed, reads merged, sectors read, ms reading
    assert rc == 0
    assert io == {"read_ios": 56, "read_merges": 2, "read_sectors": 430, "read_ticks_ms": 145}
    assert dmesg == ["[   56.8] BTRFS info (device vda): first mount"] and err == ""


def test_refusals_the_bench_skips() -> None:
    # fs/btrfs/disk-io.c, 6.1 line 3336 and 6.12 line 3089
    assert UNSUPPORTED.search(
        "BTRFS error (device vdc): cannot mount because of unknown incompat features (0x1000000)"
    )
    assert not UNSUPPORTED.search("BTRFS error (device vda): open_ctree failed: -5")


def sample(layout: str, dev: str, rep: int, rbg: float, inside: int, status: str = "ok"):  # type: ignore[no-untyped-def]
    return {
        "layout": layout,
        "device": dev,
        "guest_dev": "vda",
        "rep": rep,
        "status": status,
        "reason": None,
        "read_block_groups_us": rbg,
        "open_ctree_us": rbg + 100_000,
        "mount_us": rbg + 150_000,
        "reads": {"before": [1, 2], "inside": list(range(10, 10 + inside)), "after": [3]},
        "block_io": {"read_ios": inside + 10},
        "predicted_inside": inside,
        "measured_inside": inside,
        "same_blocks": status == "ok",
        "same_order": status == "ok",
        "root_read_before": True,
        "dmesg": [],
        "trace_file": None,
        "unparsed_lines": 0,
    }


def fake_result(extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    samples = [
        sample("extent-tree", "virtio", 0, 800_000, 3),
        sample("extent-tree", "virtio", 1, 900_000, 3),
        sample("bg-tree", "virtio", 0, 60_000, 1),
        sample("bg-tree", "virtio", 1, 70_000, 1),
        {**sample("skinny-bg-tree", "virtio", 0, 0, 0), "status": "skipped"}
        | {"reason": "BTRFS error (device vdc): cannot mount because of unknown incompat "
           "features (0x1000000)", "read_block_groups_us": None, "open_ctree_us": None},
        *(extra or []),
    ]  # fmt: skip
    pred = {
        "visited": 4,
        "visited_nodes": 1,
        "visited_leaves": 3,
        "first_read_inside": 3,
    }
    return {
        "config": {
            "preset": "test",
            "layouts": ["extent-tree", "bg-tree", "skinny-bg-tree"],
            "devices": ["virtio"],
            "size": 32 * G,
            "device_size": 36 * G,
            "nodesize": 4096,
            "extent_size": 4 << 20,
            "repeat": 2,
        },
        "kernel": {"spec": "debian:6.12", "release": "6.12.117"},
        "accelerator": {"name": "tcg", "reason": "no KVM"},
        "qemu": "QEMU 10",
        "started": "now",
        "wall_seconds": 60,
        "phase_seconds": {"images": 2, "vm": 58},
        "probe": {"function": "btrfs_validate_extent_buffer", "fetch": "bytenr=eb->start"},
        "seed": {
            "blocks": {
                "extent-tree": {"nodes": 55, "leaves": 1025, "total": 1080},
                "bg-tree": {"nodes": 1, "leaves": 13, "total": 14},
                "skinny-bg-tree": {"nodes": 1, "leaves": 7, "total": 8},
            },
            "read_block_groups_ms": {"before_ms": 805.85, "after_ms": 63.40},
            "open_ctree_ms": {"before_ms": 911.89, "after_ms": 143.11},
        },
        "images": {
            lay: {"prediction": pred | {"first_read_inside": n}, "blocks": {}}
            for lay, n in (("extent-tree", 3), ("bg-tree", 1), ("skinny-bg-tree", 0))
        },
        "samples": samples,
    }


def test_report_states_verdicts_ratio_and_skips(tmp_path: Path) -> None:
    r = fake_result()
    acc = acceptance(r)
    assert acc == {"reads_match": True, "bg_tree_faster": {"virtio": True}, "failed": 0}
    md = render_report(r)
    assert "every sample: **holds**" in md
    # medians 850 ms and 65 ms: 850 / 65 = 13.1; the seed's 805.85 / 63.40 = 12.7
    assert "| virtio | extent-tree → bg-tree | 850.0 → 65.0 | ×13.1 | ×12.7 |" in md
    assert "skinny-bg-tree on virtio: `BTRFS error (device vdc): cannot mount" in md
    assert "| extent-tree | virtio | 2 | 2 | 3 | 3 | 1 | yes | yes | yes |" in md
    plot_mount_times(r, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_a_mismatch_or_failure_is_not_acceptance() -> None:
    bad = sample("extent-tree", "virtio", 2, 850_000, 4, status="mismatch")
    acc = acceptance(fake_result([bad]))
    assert not acc["reads_match"]
    assert "DOES NOT HOLD" in render_report(fake_result([bad]))
    failed = {**sample("bg-tree", "virtio", 2, 0, 0), "status": "failed", "reason": "trace: x"}
    assert acceptance(fake_result([failed]))["failed"] == 1
