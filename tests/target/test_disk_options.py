"""Per-disk options of the Target seam: a disk's own interface (``DiskSpec.device``) and
throttling (``Target.set_throttle``), on the host. The VM side is measured in
``tests/vm/test_hot_vm.py``: the bench's slow disk is a throttled virtio disk beside an
NVMe one, and the reads the guest counts get faster once hot files move to the NVMe."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import UserError
from harness.target import Attached, DiskSpec, TargetError, TargetSpec, open_target


def test_a_disk_interface_is_checked_when_named(tmp_path: Path) -> None:
    assert DiskSpec(tmp_path / "a.img", "btrfs").device is None
    assert DiskSpec(tmp_path / "a.img", "btrfs", "nvme").device == "nvme"
    with pytest.raises(UserError, match="'scsi': one of virtio, nvme"):
        DiskSpec(tmp_path / "a.img", "btrfs", "scsi")


def test_the_host_cannot_throttle(tmp_path: Path) -> None:
    d = Attached(0, DiskSpec(tmp_path / "a.img", "ext4"), "/dev/null", str(tmp_path / "m"))
    with open_target(TargetSpec(kind="host")) as t:
        assert t.runtime().accel == "host"
        with pytest.raises(TargetError, match="cannot throttle disk 0"):
            t.set_throttle(d, iops=150)
