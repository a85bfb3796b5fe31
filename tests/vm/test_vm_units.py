"""Unit tests of vm/ pieces that need no boot (a fake only where a boot would be slow)."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from vmtesting import require_tools

from vm import accel, kernels
from vm.cache import atomic_dir
from vm.cpio import CpioWriter
from vm.disks import Disk, Throttle, drive_args, parse_guest_disks
from vm.errors import KernelSpecError, VMUserError
from vm.kernels import bzimage_release, register_resolver, resolve_kernel
from vm.machine import parse_mem
from vm.ssh import command_line


def test_disk_spec_parsing() -> None:
    assert Disk.parse("/x/a.img") == Disk(Path("/x/a.img"), "virtio")
    assert Disk.parse("/x/a.img:nvme").iface == "nvme"
    assert Disk.parse("/x/a:b.img:virtio").path == Path("/x/a:b.img")
    assert Disk.parse("/x/a:b.img").path == Path("/x/a:b.img")
    with pytest.raises(ValueError, match="serial"):
        Disk(Path("a"), serial="x" * 21)
    with pytest.raises(ValueError, match="interface"):
        Disk(Path("a"), iface="scsi")  # type: ignore[arg-type]


def test_drive_args_use_odirect_and_throttle() -> None:
    d = Disk(Path("/i,mg"), "virtio", serial="s1", throttle=Throttle(iops=100, bps=2**20))
    drive, dev = drive_args(d, "fso0", str(d.path))[1::2]
    opts = drive.split(",")
    assert "cache=none" in opts and "throttling.iops-total=100" in opts
    assert "throttling.bps-total=1048576" in opts
    assert "file=/i,,mg" in drive  # QEMU doubles commas in option values
    assert dev == "virtio-blk-pci,drive=fso0,id=fso0-dev,serial=s1"
    n = Disk(Path("/img"), "nvme")
    assert drive_args(n, "fso1", "/ov.qcow2")[3] == "nvme,drive=fso1,id=fso1-dev,serial=fso1"
    assert "format=qcow2" in drive_args(n, "fso1", "/ov.qcow2")[1]


def test_guest_disk_listing() -> None:
    got = parse_guest_disks("vda virtio s0 268435456\nnvme0n1 nvme n1 335544320\ngarbage\n")
    assert [(d.name, d.serial, d.size) for d in got] == [
        ("vda", "s0", 256 * 2**20),
        ("nvme0n1", "n1", 320 * 2**20),
    ]
    assert got[1].by_id == "/dev/disk/by-id/nvme-n1"


def test_mem_sizes() -> None:
    assert parse_mem("1024") == 1024
    assert parse_mem("2G") == 2048
    assert parse_mem("1536M") == 1536
    assert parse_mem("1GiB") == 1024
    with pytest.raises(VMUserError):
        parse_mem("lots")


def test_command_lines() -> None:
    assert command_line("echo $HOME; exit 3") == "echo $HOME; exit 3"
    assert command_line(["sh", "-c", "exit 7"]) == "sh -c 'exit 7'"


def test_throttle_qmp_has_all_six_limits() -> None:
    args = Throttle.slow().qmp_args()
    assert set(args) == {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}
    assert args["iops"] == 150


def test_cpio_archive_reads_back_with_gnu_cpio(tmp_path: Path) -> None:
    require_tools("cpio")
    arc = tmp_path / "a.cpio"
    with open(arc, "wb") as f:
        w = CpioWriter(f)
        w.dir("etc")
        w.file("etc/hello", b"hi\n", 0o600)
        w.file("init", b"#!/bin/sh\n", 0o755)
        w.symlink("bin", "usr/bin")
        w.chardev("dev/console", 5, 1)
        with pytest.raises(ValueError):
            w.file("init", b"")
        w.close()
    listing = (
        subprocess.run(["cpio", "-itv", "--quiet"], input=arc.read_bytes(), capture_output=True)
        .stdout.decode()
        .splitlines()
    )
    by_name = {ln.split()[-1] if "->" not in ln else ln.split()[-3]: ln for ln in listing}
    assert by_name["etc/hello"].startswith("-rw-------")
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["bin"].startswith("lrwxrwxrwx") and by_name["bin"].endswith("-> usr/bin")
    assert by_name["dev/console"].startswith("crw-------")
    assert "5,   1" in by_name["dev/console"] or "5, 1" in by_name["dev/console"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=arc.read_bytes(), cwd=out, check=True)
    assert (out / "etc/hello").read_bytes() == b"hi\n"


def test_bzimage_release_from_boot_protocol_header(tmp_path: Path) -> None:
    # boot protocol: "HdrS" at 0x202, kernel_version pointer at 0x20E (relative to 0x200)
    img = bytearray(0x1000)
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x20E, 0x300)
    img[0x500 : 0x500 + 40] = b"6.99.1-test (me@host) #1 SMP\0".ljust(40, b"\0")
    p = tmp_path / "bzImage"
    p.write_bytes(bytes(img))
    assert bzimage_release(p) == "6.99.1-test"
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"\x7fELF" + bytes(0x400))
    with pytest.raises(KernelSpecError, match="bzImage"):
        bzimage_release(bad)


def test_kernel_specs_errors_and_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the fake build: resolver below must not outlive this test
    monkeypatch.setattr(kernels, "_RESOLVERS", dict(kernels._RESOLVERS))
    with pytest.raises(KernelSpecError, match="unknown kernel spec"):
        resolve_kernel("nope:1")
    with pytest.raises(KernelSpecError, match="unknown Debian kernel"):
        resolve_kernel("debian:5.10")
    with pytest.raises(KernelSpecError, match="not found"):
        resolve_kernel(f"path:{tmp_path}/missing")
    seen: list[str] = []

    def fake(rest: str) -> object:
        seen.append(rest)
        raise KernelSpecError("fake")

    register_resolver("build", fake)  # type: ignore[arg-type]
    with pytest.raises(KernelSpecError, match="fake"):
        resolve_kernel("build:series-x")
    assert seen == ["series-x"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_accel_auto_probes_once_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the probe is a real boot (slow): fake it here; test_machine covers the real path
    monkeypatch.setenv("FSORACLE_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: None)
    calls: list[int] = []

    def probe(qemu: str, kernel: Path, initrd: Path, timeout: float = 0) -> str | None:
        calls.append(1)
        return "the guest did not reach /init within 15 s under KVM"

    monkeypatch.setattr(accel, "probe_kvm", probe)
    qemu = "/bin/sh"  # any file: only its stat signature is used
    a = accel.choose_accel("auto", qemu, Path("k"), Path("i"))
    b = accel.choose_accel("auto", qemu, Path("k"), Path("i"))
    assert (a.accel, a.cpu, b.accel) == ("tcg", "max", "tcg")
    assert calls == [1]
    assert "did not reach /init" in b.reason
    assert json.loads((tmp_path / "accel.json").read_text())
    assert accel.choose_accel("tcg", qemu, Path("k"), Path("i")).reason == "requested"
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: "/dev/kvm: No such file")
    with pytest.raises(VMUserError, match="KVM requested"):
        accel.choose_accel("kvm", qemu, Path("k"), Path("i"))
    with pytest.raises(VMUserError):
        accel.choose_accel("hvf", qemu, Path("k"), Path("i"))
