"""Which accelerator QEMU uses: KVM when it works, TCG otherwise.

``auto`` probes KVM once per host: a boot of the real kernel and initramfs with
``-accel kvm -cpu host`` and ``fso.probe=1`` (``/init`` prints a marker and powers off at
once), limited to :data:`PROBE_TIMEOUT` seconds. The answer is cached in
``<cache>/accel.json`` under a signature of the host (kernel release, QEMU binary, CPU model),
so later machines decide at once. Nested KVM on the project's build machines opens
``/dev/kvm`` but then either aborts on an MSR or hangs early in boot: the probe catches both.

TCG runs with ``-cpu max`` (QEMU 10's TCG needs it for the 6.12 kernels, see vm-notes);
KVM with ``-cpu host``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vm import progress
from vm.cache import atomic_write_bytes, cache_root
from vm.errors import ToolMissing, VMUserError

PROBE_TIMEOUT = 15.0
ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator to run (``kvm`` or ``tcg``), its ``-cpu`` model and why."""

    accel: str
    cpu: str
    reason: str

    def args(self) -> list[str]:
        return ["-accel", self.accel, "-cpu", self.cpu]


TCG = ("tcg", "max")
KVM = ("kvm", "host")


def kvm_device_usable() -> str | None:
    """None if /dev/kvm opens read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm: {e.strerror}"
    os.close(fd)
    return None


def host_signature(qemu: str) -> str:
    st = os.stat(qemu)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    raw = f"{platform.release()}|{qemu}:{st.st_size}:{st.st_mtime_ns}|{model}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _cache_file() -> Path:
    return cache_root() / "accel.json"


def cached_probe(sig: str) -> dict[str, str] | None:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(sig)
    return entry if isinstance(entry, dict) else None


def store_probe(sig: str, entry: dict[str, str]) -> None:
    try:
        data = json.loads(_cache_file().read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[sig] = entry
    atomic_write_bytes(_cache_file(), (json.dumps(data, indent=1) + "\n").encode())


def probe_kvm(qemu: str, kernel: Path, initrd: Path, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Boot once under KVM; None if the guest reached /init, else what went wrong."""
    argv = [
        qemu,
        "-nodefaults",
        "-no-user-config",
        "-machine",
        "pc",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "512",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 panic=-1 loglevel=1 fso.probe=1",
        "-serial",
        "stdio",
    ]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return f"the guest did not reach /init within {timeout:.0f} s under KVM"
        out.seek(0)
        text = out.read().decode(errors="replace")
    if "FSORACLE-PROBE-OK" in text:
        return None
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return f"QEMU exited with status {proc.returncode} under KVM ({last[0][:120]})"


def choose_accel(requested: str, qemu: str, kernel: Path, initrd: Path) -> AccelChoice:
    """Decide the accelerator for ``requested`` (``auto``, ``kvm`` or ``tcg``)."""
    if requested not in ACCELS:
        raise VMUserError(f"accelerator {requested!r}: use one of {', '.join(ACCELS)}")
    if requested == "tcg":
        return AccelChoice(*TCG, reason="requested")
    why_not = kvm_device_usable()
    if requested == "kvm":
        if why_not:
            raise VMUserError(f"KVM requested but {why_not}: use --accel tcg (or auto)")
        return AccelChoice(*KVM, reason="requested")
    if why_not:
        return AccelChoice(*TCG, reason=f"KVM unavailable ({why_not})")
    sig = host_signature(qemu)
    entry = cached_probe(sig)
    if entry is None:
        with progress.step(
            f"probing KVM once for this host (at most {PROBE_TIMEOUT:.0f} s; "
            f"answer cached in {_cache_file()})"
        ):
            failure = probe_kvm(qemu, kernel, initrd)
        entry = {
            "accel": "tcg" if failure else "kvm",
            "reason": failure or "KVM probe boot succeeded",
            "probed": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        store_probe(sig, entry)
    if entry["accel"] == "kvm":
        return AccelChoice(*KVM, reason=f"auto: {entry['reason']}")
    return AccelChoice(
        *TCG, reason=f"auto: KVM probe failed on {entry['probed']}: {entry['reason']}"
    )


def find_qemu() -> str:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise ToolMissing(
            "qemu-system-x86_64 not found: install QEMU 10 (qemu-system-x86 from "
            "bookworm-backports; harness/install-debian-deps.sh does it)"
        )
    return qemu
