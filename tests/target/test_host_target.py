"""The Target seam on the host: TargetSpec as data, and every operation of the host target
against the real host kernel (loop mounts need root). What is checked comes from the
filesystem (files there or not, bytes, mount table), not from the target's own report."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import time
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.target import DiskSpec, TargetError, TargetSpec, open_target
from harness.workload.hostmount import MkfsSpec, make_image
from tests.tools import require_root, require_tool

HOST = TargetSpec(kind="host")


def test_spec_is_data() -> None:
    spec = TargetSpec(kind="vm", kernel="build:6.12+skinny-bg-tree", device="nvme", mem_mib=2048)
    again = TargetSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and pickle.loads(pickle.dumps(spec)) == spec
    assert spec.to_json()["schema"] == 1
    with pytest.raises(ValueError, match="schema"):
        TargetSpec.from_json({**spec.to_json(), "schema": 2})
    assert spec.with_timeout(10).timeout == spec.timeout  # never lowered
    assert spec.with_timeout(99999).timeout == 99999


@pytest.mark.parametrize(
    ("spec", "rules"),
    [
        (TargetSpec(kind="vm", kernel="debian:6.1"), "6.1"),
        (TargetSpec(kind="vm", kernel="debian:6.12"), "6.12"),
        (TargetSpec(kind="vm", kernel="build:6.12+skinny-bg-tree"), "6.12"),
        (TargetSpec(kind="vm", kernel="path:/boot/vmlinuz"), None),
        (TargetSpec(kind="host"), None),
    ],
)
def test_modelled_rules(spec: TargetSpec, rules: str | None) -> None:
    """A verdict that depends on a modelled kernel version is given only where the kernel
    is one the model knows; the host's is whatever the machine runs."""
    assert spec.rules == rules


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (TargetSpec(kind="cloud"), "--target"),
        (TargetSpec(kind="vm", device="scsi"), "--device"),
        (TargetSpec(kind="vm", kernel="bogus:1"), "--kernel"),
    ],
)
def test_bad_spec_is_one_line(spec: TargetSpec, says: str) -> None:
    with pytest.raises(UserError, match=says):
        spec.validate()


def test_default_kernel_is_the_vm_default() -> None:
    from vm.kernels import DEFAULT_SPEC

    assert TargetSpec().kernel == DEFAULT_SPEC


def test_commands_files_and_sessions(tmp_path: Path) -> None:
    with open_target(HOST) as t:
        assert t.alive and t.label == f"host kernel {os.uname().release}"
        prog = t.push(
            b"import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n",
            "up.py",
        )
        p = t.start(t.py(prog))
        p.send(b"abc\n")
        assert p.readline(10) == b"ABC\n"
        p.close()
        r = t.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        assert (r.status, r.out, r.err) == (3, "out\n", "err\n")
        with pytest.raises(TargetError, match="exit 3"):
            t.run(["sh", "-c", "exit 3"])
        t.run(f"echo fetched > {t.push(b'', 'f')}")
        t.fetch(str(Path(prog).with_name("f")), tmp_path / "f")
        assert (tmp_path / "f").read_text() == "fetched\n"
        slow = t.start([t.python, "-c", "import time; time.sleep(30)"])
        t0 = time.monotonic()
        with pytest.raises(TargetError, match="no reply"):
            slow.readline(0.5)
        assert time.monotonic() - t0 < 5
        logged = t.start_logged([t.python, "-c", "print('one', flush=True); print('two')"])
        deadline = time.monotonic() + 30
        while not logged.read()[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert logged.read() == (["one", "two"], True)
        work = Path(prog).parent
    assert not work.exists()  # torn down


def _need() -> None:
    require_root("loop mounts")
    require_tool("mke2fs")


def test_mount_and_teardown_on_error(tmp_path: Path) -> None:
    """A disk is mounted where the target says; an exception inside the block still
    unmounts it (the mount table is the witness)."""
    _need()
    img = tmp_path / "fs.img"
    make_image(img, MkfsSpec("ext4", size=64 << 20))
    mnt = ""
    with pytest.raises(RuntimeError), open_target(HOST, [DiskSpec(img, "ext4")]) as t:
        d = t.disks[0]
        assert t.mount(d).status == 0
        mnt = d.mnt
        assert mnt in Path("/proc/mounts").read_text()
        raise RuntimeError("boom")
    assert mnt and mnt not in Path("/proc/mounts").read_text()


def test_readonly_disk_and_per_disk_device(tmp_path: Path) -> None:
    """A read-only disk is mounted ``ro`` (the mount table says so, a write fails and the
    image's bytes stay as they were); a disk's own device must be one a VM has."""
    with pytest.raises(UserError, match="scsi"):
        DiskSpec(tmp_path / "x.img", "ext4", device="scsi")
    _need()
    img = tmp_path / "fs.img"
    make_image(img, MkfsSpec("ext4", size=64 << 20))
    before = img.read_bytes()
    with open_target(HOST, [DiskSpec(img, "ext4", device="nvme", readonly=True)]) as t:
        d = t.disks[0]
        assert t.mount(d).status == 0
        opts = [ln.split()[3] for ln in Path("/proc/mounts").read_text().splitlines()
                if ln.split()[1] == d.mnt]  # fmt: skip
        assert opts and "ro" in opts[0].split(",")
        assert t.run(["touch", f"{d.mnt}/new"], check=False).status != 0
        assert t.runtime().accel == "host"
        t.umount(d)
    assert img.read_bytes() == before


def test_cut_power_keeps_what_returned_before_it(tmp_path: Path) -> None:
    """A writer logs a line after each file it creates (and its data) returned; the cut
    comes after line 20. Mounted again, every file whose line arrived holds its bytes,
    the writer is gone, and the image was replaced by the frozen copy."""
    _need()
    img = tmp_path / "fs.img"
    make_image(img, MkfsSpec("ext4", size=128 << 20))
    script = (
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "for i in range(100000):\n"
        "    with open(f'{d}/f{i}', 'wb') as f:\n"
        "        f.write(bytes([i % 251]) * 5000)\n"
        "    print(i, flush=True)\n"
    )
    with open_target(HOST, [DiskSpec(img, "ext4")]) as t:
        d = t.disks[0]
        t.mount(d)
        prog = t.push(script.encode(), "w.py")
        logged = t.start_logged(t.py(prog, d.mnt))
        deadline = time.monotonic() + 60
        while len(logged.read()[0]) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t.cut_power(d)
        lines, finished = logged.read()
        assert not finished  # a cut is not an exit
        pid = logged.handle.pid  # type: ignore[attr-defined]
        assert not d.mounted and d.mnt not in Path("/proc/mounts").read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with open_target(HOST, [DiskSpec(img, "ext4")]) as t:
        d = t.disks[0]
        assert t.mount(d).status == 0
        for ln in lines:
            i = int(ln)
            assert Path(d.mnt, f"f{i}").read_bytes() == bytes([i % 251]) * 5000
        t.umount(d)
    r = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_host_target_needs_root_for_disks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root (faked: geteuid answers 1000) a host target with disks refuses in one
    line before anything is made; without disks it opens."""
    import harness.target.host as host

    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with (
        pytest.raises(TargetError, match="needs root"),
        open_target(HOST, [DiskSpec(tmp_path / "x.img", "ext4")]),
    ):
        pass
    with open_target(HOST) as t:
        assert t.run(["true"]).status == 0


def test_snapshot_disk_leaves_the_image_alone(tmp_path: Path) -> None:
    """Two snapshot disks of one image: a file written on the first is on neither the
    second nor the image (its bytes hash as before, and a plain mount of it lacks the
    file)."""
    _need()
    img = tmp_path / "fs.img"
    make_image(img, MkfsSpec("ext4", size=64 << 20))
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    disks = [DiskSpec(img, "ext4", snapshot=True), DiskSpec(img, "ext4", snapshot=True)]
    with open_target(HOST, disks) as t:
        a, b = t.disks
        assert a.image != img and b.image != img and a.image != b.image
        assert t.mount(a).status == 0 and t.mount(b).status == 0
        Path(a.mnt, "new").write_bytes(b"x" * 5000)
        t.umount(a)
        assert not Path(b.mnt, "new").exists()
        t.umount(b)
        copies = [a.image, b.image]
    assert not any(p.exists() for p in copies)  # gone with the target
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before
    with open_target(HOST, [DiskSpec(img, "ext4")]) as t:
        d = t.disks[0]
        assert t.mount(d).status == 0
        assert not Path(d.mnt, "new").exists()
