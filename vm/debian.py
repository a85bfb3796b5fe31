"""Debian kernel packages: the pinned package names, ``apt-get download``, and the unpacked,
``depmod``-indexed kernels under ``<cache>/kernels/debian/<package>/`` (the ``debian:`` kernel
spec of :mod:`vm.kernels`; :mod:`vm.kbuild` fetches ``linux-source`` the same way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vm import progress
from vm.cache import atomic_dir, cache_dir
from vm.errors import KernelSpecError, ToolMissing
from vm.kimage import Kernel

# Debian packages pinned by exact name. 6.12.117 is the version of bookworm's
# linux-source-6.12, so a patched build of that source can be compared with the stock one.
DEBIAN_KERNELS: dict[str, str] = {
    "6.12": "linux-image-6.12.117+deb12-cloud-amd64",
    "6.1": "linux-image-6.1.0-56-cloud-amd64",
}


def apt_download(package: str, dest: Path) -> Path:
    """``apt-get download PACKAGE`` (``pkg=version`` pins a version) into ``dest``; the .deb."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ToolMissing("apt-get/dpkg-deb not found: debian: kernel specs need a Debian host")
    cmd = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # apt's _apt sandbox user cannot write into our private temporary directory
        cmd += ["-o", "APT::Sandbox::User=root"]
    for attempt in (1, 2):
        proc = subprocess.run(
            [*cmd, package], cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if proc.returncode == 0:
            break
        if attempt == 1 and os.geteuid() == 0 and "Unable to locate" in proc.stdout:
            # a fresh machine may never have fetched the package lists
            progress.note("apt does not know the package yet: running apt-get update")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            continue
        last = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
        raise KernelSpecError(
            f"apt-get download {package} failed ({last[0]}): run `apt-get update` "
            "(as root) and check the package name"
        )
    name = package.split("=", 1)[0]  # "pkg=version" pins a version
    debs = sorted(dest.glob(f"{name}_*.deb"))
    if not debs:
        raise KernelSpecError(f"apt-get download {package} produced no .deb in {dest}")
    return debs[0]


def fetch_debian_kernel(package: str, spec: str) -> Kernel:
    """Fetch (once) and unpack a Debian kernel image package; return the cached kernel."""
    final = cache_dir("kernels", "debian") / package
    if not (final / "kernel.json").is_file():
        if shutil.which("depmod") is None:
            raise ToolMissing("depmod not found: install kmod")
        with progress.step(f"fetching kernel package {package}"), atomic_dir(final) as tmp:
            with tempfile.TemporaryDirectory(dir=tmp.parent) as dl:
                deb = apt_download(package, Path(dl))
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
                version = subprocess.run(
                    ["dpkg-deb", "-f", str(deb), "Version"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            images = sorted((tmp / "boot").glob("vmlinuz-*"))
            if len(images) != 1:
                raise KernelSpecError(f"{package} holds {len(images)} vmlinuz files, expected 1")
            release = images[0].name.removeprefix("vmlinuz-")
            # the running user may lack read permission on vmlinuz (Debian ships it 0600)
            images[0].chmod(0o644)
            subprocess.run(["depmod", "-b", str(tmp), release], check=True)
            meta = {"package": package, "version": version, "release": release}
            (tmp / "kernel.json").write_text(json.dumps(meta, indent=1) + "\n")
    meta = json.loads((final / "kernel.json").read_text())
    release = meta["release"]
    return Kernel(
        spec=spec,
        release=release,
        vmlinuz=final / "boot" / f"vmlinuz-{release}",
        modules_dir=final / "lib" / "modules" / release,
        config=final / "boot" / f"config-{release}",
    )
