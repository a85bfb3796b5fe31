"""``fsoracle bench mount`` through a real kernel (issue 5), preset ``small``: 96 GiB of
4 MiB extents, 4 KiB nodes, all three layouts on virtio and NVMe, two cold mounts each, one
boot (about a minute under TCG).

The kernel is the independent side: the blocks its validator sees inside
``btrfs_read_block_groups`` must be exactly the model's prediction in every sample. The
block group tree's count is also checked by arithmetic: 49-byte items (25-byte item header
+ 24-byte item) in 3995-byte leaves under one root node, which open_ctree reads before.
The skinny layout carries incompat bit 24 (``patches/skinny-bg-tree/series.yaml``), which a
stock kernel refuses with its "unknown incompat features (0x1000000)" line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.mount.config import make_config
from harness.mount.experiment import run_mount_bench
from harness.mount.verdict import acceptance

pytestmark = pytest.mark.vm


def test_mount_bench_small(vm_tools: None, kernel_spec: str, tmp_path: Path) -> None:
    cfg = make_config("small", kernel=kernel_spec)
    out = tmp_path / "mount"
    result = run_mount_bench(cfg, out).to_json()
    assert json.loads((out / "result.json").read_text())["samples"] == result["samples"]
    assert (out / "report.md").stat().st_size > 0 and (out / "mount.png").stat().st_size > 0
    samples = result["samples"]
    stock = kernel_spec.startswith("debian:")
    for layout in cfg.layouts:
        image = result["images"][layout]
        predicted = image["predicted_reads_inside"]
        assert len(predicted) == image["prediction"]["first_read_inside"]
        for dev in cfg.devices:
            cell = [s for s in samples if s["layout"] == layout and s["device"] == dev]
            if layout == "skinny-bg-tree" and stock:
                assert [s["status"] for s in cell] == ["skipped"], cell
                assert "unknown incompat features (0x1000000)" in cell[0]["reason"]
                continue
            assert len(cell) == cfg.repeat
            for s in cell:
                assert s["status"] == "ok", (s["status"], s["reason"])
                assert s["reads"]["inside"] == predicted, (layout, dev, s["rep"])
                assert image["root"] in s["reads"]["before"]
                assert s["block_io"]["read_ios"] > 0
    bg = result["images"]["bg-tree"]["prediction"]
    assert bg["tree_nodes"] == 1
    assert bg["first_read_inside"] == math.ceil(bg["block_groups"] * 49 / 3995)
    acc = acceptance(result)
    assert acc["reads_match"] and acc["failed"] == 0
    assert acc["bg_tree_faster"] == dict.fromkeys(cfg.devices, True)
