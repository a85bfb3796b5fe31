"""Kernel specs and the guest root, on the real Debian packages (fetched once, cached)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from vmtesting import expected_release, require_tools

from vm.guestroot import build_guest_root, module_plan
from vm.kernels import boot_image, bzimage_release, resolve_kernel
from vm.machine import Machine, MachineConfig


@pytest.mark.vm
@pytest.mark.timeout(300)
def test_debian_kernel_and_its_guest_root(vm_tools: None, kernel_spec: str) -> None:
    k = resolve_kernel(kernel_spec)
    release = expected_release(kernel_spec)
    assert k.release == release == bzimage_release(k.vmlinuz)
    assert k.modules_dir is not None and (k.modules_dir / "modules.dep").is_file()
    assert k.config_value("BTRFS_FS") == "m"
    # the PVH image is the same kernel, uncompressed: its version string is inside
    img = boot_image(k)
    assert img.name == "vmlinux" and release.encode() in img.read_bytes()

    # btrfs's declared dependencies (modinfo, independent of modprobe's plan) load first
    plan = module_plan(k)
    btrfs = next(i for i, p in enumerate(plan) if p.split("/")[-1].startswith("btrfs.ko"))
    deps = subprocess.run(
        ["modinfo", "-F", "depends", str(k.modules_dir / plan[btrfs])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    names = [Path(p).name.split(".ko")[0].replace("-", "_") for p in plan[:btrfs]]
    for dep in filter(None, deps.split(",")):
        assert dep.replace("-", "_") in names, (dep, names)

    require_tools("cpio")
    root = build_guest_root(k)
    data = root.initramfs.read_bytes()
    names_in = set(
        subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True)
        .stdout.decode()
        .splitlines()
    )
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=data, capture_output=True
    ).stdout.decode()
    for must in (
        "init",
        "usr/bin/busybox",
        "usr/sbin/dropbear",
        "usr/sbin/mkfs.btrfs",
        "usr/sbin/mke2fs",
        "usr/sbin/dmsetup",
        "usr/bin/python3",
        "usr/lib/python3.11/os.pyc",
        f"usr/lib/modules/{release}/kernel/fs/btrfs/btrfs.ko",  # lib -> usr/lib, as the host
        f"usr/lib/modules/{release}/modules.dep",
        "lib",
        "etc/dropbear/dropbear_ed25519_host_key",
    ):
        assert must in names_in, must
    console = next(ln for ln in listing.splitlines() if ln.endswith(" dev/console"))
    assert console.startswith("crw")
    assert root.host_key.startswith("ssh-ed25519 ")
    assert root.size < 64 * 2**20


@pytest.mark.vm
@pytest.mark.timeout(300)
def test_path_spec_boots_a_users_kernel(vm_tools: None) -> None:
    # a "user's build": the Debian 6.12 files, named by path
    deb = resolve_kernel("debian:6.12")
    assert deb.modules_dir is not None
    spec = f"path:{deb.vmlinuz},{deb.modules_dir.parents[2]}"  # INSTALL_MOD_PATH layout
    k = resolve_kernel(spec)
    assert (k.release, k.modules_dir) == (deb.release, deb.modules_dir)
    with Machine(MachineConfig(kernel=spec, name="path")) as m:
        assert m.run("uname -r").out.strip() == deb.release
        assert "btrfs" in m.run("cat /proc/filesystems").out
