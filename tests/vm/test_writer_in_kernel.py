"""Images written by the model, used by a real kernel (issue 4).

The stock kernel mounts ``fsoracle btrfs mkfs`` images in the extent-tree and bg-tree
layouts read-write, writes and deletes files (including enough data to allocate a new
block group and free extents the writer placed), unmounts, and afterwards both
``btrfs check`` (original and lowmem) and ours still pass. One boot serves both images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vmtesting import require_tools

from model.blocksource import FileSink, FileSource
from model.btrfs.check import btrfs_check
from model.btrfs.mkfs import MkfsConfig, make_btrfs
from model.btrfs.reader import BtrfsImage
from tests.tools import run
from vm.disks import Disk
from vm.machine import Machine, MachineConfig

G = 1 << 30
LAYOUTS = ("extent-tree", "bg-tree")

GUEST_WORK = """
set -e
mkdir -p /mnt/t
mount -o rw {dev} /mnt/t
test -f /mnt/t/d000/f000000
# write: new files of several sizes, one large enough to need a new data block group
mkdir /mnt/t/new
for i in $(seq 1 50); do head -c $((i * 7919)) /dev/urandom > /mnt/t/new/s$i; done
dd if=/dev/urandom of=/mnt/t/new/big bs=1M count=600 status=none
# delete: files the writer created (their preallocated extents are freed)
rm -f /mnt/t/d000/f00000[0-9]
rm -f /mnt/t/new/s1*
sync
btrfs filesystem sync /mnt/t
ls /mnt/t/new | wc -l
umount /mnt/t
"""


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_stock_kernel_uses_writer_images(vm_tools: None, kernel_spec: str, tmp_path: Path) -> None:
    require_tools("btrfs")
    images = {}
    for layout in LAYOUTS:
        cfg = MkfsConfig(size=4 * G, nodesize=16384, fill=1 * G, layout=layout, files=300)
        path = tmp_path / f"{layout}.img"
        with FileSink(path, cfg.size) as sink:
            make_btrfs(cfg, sink)
        images[layout] = path
    disks = tuple(Disk(p, "virtio", serial=f"w-{layout}") for layout, p in images.items())
    with Machine(MachineConfig(kernel=kernel_spec, disks=disks, name="writer")) as m:
        for layout in LAYOUTS:
            d = m.disk(f"w-{layout}")
            r = m.run(GUEST_WORK.format(dev=d.dev), timeout=600)
            assert r.status == 0, (layout, r.out, r.err)
            # 50 small files, minus s1 and s10..s19 (11), plus big
            assert r.out.strip().splitlines()[-1] == str(50 - 11 + 1)
        m.check_faults()
    for layout, path in images.items():
        for mode in ([], ["--mode=lowmem"]):
            r = run(["btrfs", "check", *mode, str(path)])
            assert r.returncode == 0, (layout, mode, r.stdout[-2000:], r.stderr[-2000:])
        res = btrfs_check(BtrfsImage.open(FileSource(path)))
        assert res.ok, (layout, [str(f) for f in res.findings[:5]])
