"""Unit tests of vm/ pieces that need no boot (a fake only where a boot would be slow)."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from vmtesting import require_tools

from vm import accel, kernels
from vm.cache import atomic_dir
from vm.console import ConsoleLog
from vm.cpio import CpioWriter
from vm.disks import Disk, Throttle, drive_args, parse_guest_disks
from vm.errors import AbnormalShutdown, GuestGone, KernelSpecError, VMError, VMUserError
from vm.kernels import bzimage_release, register_resolver, resolve_kernel
from vm.machine import Machine, MachineConfig, _live, parse_mem
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


# ---------------------------------------------------------------- Machine's way out
# The stand-in for QEMU is a real process (sh): its stdout is the console, and a fake SSH
# session's "power-off" (or a fake QMP "quit") closes its stdin, which ends it with status 0,
# as ACPI power-off ends QEMU. No kernel boots here; test_vm_machine.py covers a real one.


class _FakeChannel:
    def __init__(self, ssh: _FakeSSH) -> None:
        self.ssh = ssh

    def exec_command(self, cmd: str) -> None:
        self.ssh.commands.append(cmd)
        if self.ssh.obey:
            self.ssh.end_qemu()


class _FakeSSH:
    """Just what Machine's power-off uses of SSHSession: ``active``, ``transport.
    open_session``, ``close``."""

    def __init__(self, proc: subprocess.Popen[bytes], obey: bool) -> None:
        self.proc = proc
        self.obey = obey
        self.commands: list[str] = []
        self.active = True
        self.transport = self

    def open_session(self, timeout: float) -> _FakeChannel:
        return _FakeChannel(self)

    def end_qemu(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def close(self) -> None:
        self.active = False


class _FakeQMP:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.commands: list[str] = []

    def cmd(self, name: str) -> dict[str, object]:
        self.commands.append(name)
        if name == "quit":
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        return {}

    def close(self) -> None:
        pass


def fake_machine(
    tmp_path: Path,
    script: str = "read x; exit 0",
    *,
    ssh: str | None = None,
    qmp: bool = False,
    timeout: float | None = None,
) -> Machine:
    """A launched Machine whose QEMU is ``sh -c script``; ``ssh``: None (not ready yet),
    ``obey`` (the guest powers off when asked) or ``ignore``; ``qmp``: a QMP that quits."""
    m = Machine(MachineConfig(log_dir=tmp_path, name="fake", timeout=timeout))
    proc = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    m._proc = proc
    m.log_dir = tmp_path
    m.console = ConsoleLog(proc.stdout, tmp_path / "console.log")
    m._tmp = tmp_path / "vm-tmp"
    m._tmp.mkdir()
    m._phase = "launched"
    if ssh is not None:
        m._ssh = _FakeSSH(proc, obey=ssh == "obey")  # type: ignore[assignment]
        m._phase = "ready"
    if qmp:
        m._qmp = _FakeQMP(proc)  # type: ignore[assignment]
    return m


def gone(pid: int | None) -> bool:
    return pid is not None and not Path(f"/proc/{pid}").exists()


def test_stop_after_a_clean_power_off_is_silent(tmp_path: Path) -> None:
    m = fake_machine(tmp_path, ssh="obey", qmp=True)
    ssh, qmp, pid = m._ssh, m._qmp, m.pid
    m.stop(timeout=10)
    assert isinstance(ssh, _FakeSSH) and ssh.commands == ["fso-poweroff >/dev/null 2>&1 &"]
    assert isinstance(qmp, _FakeQMP) and qmp.commands == []  # no quit needed
    assert (m.returncode, m.phase, m.running) == (0, "down", False)
    assert gone(pid) and not (tmp_path / "vm-tmp").exists()
    m.stop()  # a second stop is a no-op
    m.kill()  # and so is a kill after it


def test_a_power_off_that_hangs_is_killed_and_raises(tmp_path: Path) -> None:
    m = fake_machine(tmp_path, "exec sleep 60", ssh="ignore")
    pid = m.pid
    t0 = time.monotonic()
    with pytest.raises(AbnormalShutdown) as ei:
        m.stop(timeout=0.5)
    assert 0.5 <= time.monotonic() - t0 < 10
    e = ei.value
    assert "the guest did not power off within 0.5 s; QEMU killed" in str(e)
    assert "\n" not in str(e) and isinstance(e, VMUserError)  # one line, exit status 2
    assert e.returncode == -signal.SIGKILL == m.returncode
    assert e.console_log == tmp_path / "console.log"
    assert gone(pid) and m.phase == "down" and not (tmp_path / "vm-tmp").exists()
    m.stop()  # reported once


def test_a_power_off_that_hangs_is_ended_over_qmp_first(tmp_path: Path) -> None:
    m = fake_machine(tmp_path, ssh="ignore", qmp=True)
    qmp = m._qmp
    with pytest.raises(AbnormalShutdown, match=r"within 0\.3 s; QEMU told to quit over QMP"):
        m.stop(timeout=0.3)
    assert isinstance(qmp, _FakeQMP) and qmp.commands == ["quit"]
    assert m.returncode == 0


def test_stop_before_the_guest_is_ready_raises(tmp_path: Path) -> None:
    # launched, no SSH yet: nobody to ask; kill() is the way to end such a machine
    m = fake_machine(tmp_path, "exec sleep 60")
    with pytest.raises(AbnormalShutdown, match="could not be asked to power off"):
        m.stop()
    assert m.returncode == -signal.SIGKILL


def test_qemu_exiting_with_an_error_raises(tmp_path: Path) -> None:
    (tmp_path / "qemu.log").write_text("qemu-system-x86_64: Failed to get write lock\n")
    m = fake_machine(tmp_path, "exit 3", ssh="obey")
    assert m._proc is not None and m._proc.wait(10) == 3
    with pytest.raises(AbnormalShutdown) as ei:
        m.stop()
    assert ei.value.returncode == 3
    assert "QEMU exited with status 3 (qemu-system-x86_64: Failed to get write lock)" in str(
        ei.value
    )


def test_the_machines_timeout_reported_by_stop(tmp_path: Path) -> None:
    m = fake_machine(tmp_path, "exec sleep 60", ssh="obey", timeout=7)
    m._on_deadline()  # what the watchdog thread does at the deadline
    with pytest.raises(AbnormalShutdown, match=r"the machine's timeout \(7 s\) ran out"):
        m.stop()


@pytest.mark.parametrize(
    ("how", "status"),
    [("kill", -signal.SIGKILL), ("crash-kill", -signal.SIGKILL), ("crash-quit", 0)],
)
def test_an_end_the_caller_asked_for_is_silent(tmp_path: Path, how: str, status: int) -> None:
    # the guest ignores power-off requests: a stop() would raise; kill and crash do not
    m = fake_machine(tmp_path, ssh="ignore", qmp=True)
    pid = m.pid
    _live.add(m)
    if how == "kill":
        m.kill()  # alone: nothing else is needed to release the machine
    else:
        m.crash("kill" if how == "crash-kill" else "quit")
    assert m.returncode == status
    assert gone(pid) and m.phase == "down" and m not in _live
    assert not (tmp_path / "vm-tmp").exists() and m._ssh is None and m._qmp is None
    m.stop()
    m.__exit__(None, None, None)  # the with block's exit after it: silent too
    assert m.console_log is not None and m.faults == []


def test_an_error_reported_by_the_machine_is_not_reported_again(tmp_path: Path) -> None:
    m = fake_machine(tmp_path, "exit 1", ssh="obey")
    with pytest.raises(GuestGone, match=r"QEMU exited \(status 1\) during 'true'"):
        m._lost("true")  # what run() does when the SSH channel dies under a command
    m.stop()
    assert m.returncode == 1


def test_with_block_keeps_the_error_in_flight(tmp_path: Path) -> None:
    m = fake_machine(tmp_path, "exec sleep 60")  # no SSH: cannot be asked to power off
    err = RuntimeError("workload failed")
    assert m.__exit__(RuntimeError, err, None) is None  # not raised over the error
    assert any("abnormal shutdown: the guest could not be asked" in n for n in err.__notes__)
    assert m.returncode == -signal.SIGKILL


def test_wait_for_qemu_to_end_by_itself(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    m = fake_machine(tmp_path / "a", "sleep 0.2; exit 0", ssh="obey")
    m.wait(timeout=10)
    assert m._ssh is None and m.returncode == 0
    h = fake_machine(tmp_path / "b", "exec sleep 60")
    with pytest.raises(AbnormalShutdown, match=r"QEMU did not end by itself within 0\.2 s"):
        h.wait(timeout=0.2)


def test_phases_in_order_and_nothing_started_before_launch(tmp_path: Path) -> None:
    m = Machine(MachineConfig(disks=(Disk(tmp_path / "missing.img"),), log_dir=tmp_path))
    with pytest.raises(VMUserError, match=r"disk image .*missing.img not found"):
        m.prepare()  # before any kernel is resolved (no download for a typo)
    assert (m.phase, m.pid, m.kernel) == ("new", None, None)
    with pytest.raises(VMError, match="needs a launched machine"):
        m.wait_ready()
    m.stop()  # nothing launched: nothing to do
    m.kill()
    assert m.phase == "new"
    (tmp_path / "d").mkdir()
    d = fake_machine(tmp_path / "d")
    d.kill()
    with pytest.raises(VMError, match="has been stopped"):
        d.launch()
    with pytest.raises(VMError, match="has been stopped"):
        d.start()
