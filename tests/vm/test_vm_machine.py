"""The Machine API on real boots: disks, hot-plug, a hung guest, network isolation."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vmtesting import expected_release, require_root

from vm.disks import Disk, Throttle
from vm.errors import AbnormalShutdown, BootError, EmulatorCrash, GuestTimeout, VMError
from vm.machine import Machine, MachineConfig
from vm.net import GUEST_ADDR, HOST_ADDR, PREFIX, create_netns, run_in_netns

MakeImage = Callable[[str, int], Path]
BTRFS_MAGIC_OFFSET = 0x10000 + 0x40  # superblock at 64 KiB, magic at offset 0x40 in it


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_disks_at_boot_and_hot_plugged(
    vm_tools: None, kernel_spec: str, make_image: MakeImage
) -> None:
    va = make_image("va.img", 256)
    nb = make_image("nb.img", 320)
    hv = make_image("hv.img", 192)
    hn = make_image("hn.img", 160)
    nb_before = sha256(nb)
    cfg = MachineConfig(
        kernel=kernel_spec,
        disks=(Disk(va, "virtio", serial="va0"), Disk(nb, "nvme", serial="nb0", snapshot=True)),
        name="disks",
    )
    with Machine(cfg) as m:
        at_boot = {d.serial: d for d in m.disks()}
        assert {s: (d.iface, d.size) for s, d in at_boot.items()} == {
            "va0": ("virtio", 256 * 2**20),
            "nb0": ("nvme", 320 * 2**20),
        }
        assert at_boot["va0"].name.startswith("vd") and at_boot["nb0"].name.startswith("nvme")
        hot_v = m.hot_add_disk(Disk(hv, "virtio", serial="hv1", throttle=Throttle.slow()))
        hot_n = m.hot_add_disk(Disk(hn, "nvme", serial="hn1"))
        assert (hot_v.iface, hot_v.size) == ("virtio", 192 * 2**20)
        assert (hot_n.iface, hot_n.size) == ("nvme", 160 * 2**20)
        blocks = {b.get("qdev"): b for b in m.qmp("query-block")}
        throttled = [b for q, b in blocks.items() if q and "fso2-dev" in q]
        assert throttled and throttled[0]["inserted"]["iops"] == Throttle.slow().iops

        # a btrfs made in the guest on each device mounts, through its by-id link
        for d in m.disks():
            r = m.run(
                f"mkfs.btrfs -q -f {d.by_id} && mkdir -p /mnt/{d.serial} && "
                f"mount {d.by_id} /mnt/{d.serial} && echo hi > /mnt/{d.serial}/f && sync && "
                f"grep -c ' /mnt/{d.serial} btrfs ' /proc/mounts && umount /mnt/{d.serial}"
            )
            assert r.status == 0 and r.out.strip() == "1", (d, r.err)

        m.hot_remove_disk("hv1")
        assert "hv1" not in {d.serial for d in m.disks()}
        # dm-delay (the fixed-latency slow tier) loads and takes a table
        r = m.run(
            f'dmsetup create slow --table "0 2048 delay {at_boot["va0"].dev} 0 20" && '
            "dmsetup table slow && dmsetup remove slow"
        )
        assert r.status == 0 and " delay " in r.out, r.err
        assert m.status() == "running"
        assert m.run("uname -r").out.strip() == expected_release(kernel_spec)

    # the snapshot disk's base image was not written; the others were
    assert sha256(nb) == nb_before
    for img in (va, hn, hv):
        with open(img, "rb") as f:
            f.seek(BTRFS_MAGIC_OFFSET)
            assert f.read(8) == b"_BHRfS_M", img
    assert m.returncode == 0  # powered off cleanly (ACPI power-off ends QEMU with 0)


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_a_hung_guest_is_killed_at_the_timeout(vm_tools: None, kernel_spec: str) -> None:
    with Machine(MachineConfig(kernel=kernel_spec, name="hang")) as m:
        pid = m.pid
        t0 = time.monotonic()
        # halt -f stops the CPUs without powering off: QEMU runs on, the guest never answers
        with pytest.raises(GuestTimeout, match="stopped answering"):
            m.run("halt -f", timeout=5)
        took = time.monotonic() - t0
        assert 5 <= took < 40
        assert not m.running
        assert not Path(f"/proc/{pid}").exists()
        assert m.console_log is not None
        assert "reboot: System halted" in m.console_log.read_text()


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_phases_and_a_power_off_that_hangs(vm_tools: None, kernel_spec: str) -> None:
    m = Machine(MachineConfig(kernel=kernel_spec, name="nopoweroff"))
    m.prepare()
    assert m.pid is None and m.kernel is not None and m.accel is not None
    try:
        m.launch()
        pid = m.pid
        tmp = m._tmp
        assert pid is not None and tmp is not None and tmp.is_dir()
        # launched: QEMU answers QMP while the guest boots; commands wait for wait_ready()
        assert m.qmp("query-status")["status"] == "running"
        with pytest.raises(VMError, match="not running"):
            m.run("true")
        m.wait_ready()
        assert m.boot is not None and m.run("uname -r").out.strip() == expected_release(kernel_spec)
        # block the power-off: the script stop() asks the guest to run now just sleeps
        m.run("printf '#!/bin/sh\\nexec sleep 600\\n' > /usr/sbin/fso-poweroff", check=True)
        assert m.run("cat /usr/sbin/fso-poweroff").out == "#!/bin/sh\nexec sleep 600\n"
        t0 = time.monotonic()
        with pytest.raises(AbnormalShutdown) as ei:
            m.stop(timeout=5)
        took = time.monotonic() - t0
    finally:
        m.kill()  # whatever happened above, nothing is left running (a no-op after stop)
    assert "the guest did not power off within 5 s; QEMU told to quit over QMP" in str(ei.value)
    assert 5 <= took < 40
    assert ei.value.returncode == m.returncode == 0  # QMP quit ends QEMU with status 0
    assert not m.running and not Path(f"/proc/{pid}").exists() and not tmp.exists()
    assert m.phase == "down" and m.faults == []


@contextlib.contextmanager
def decoy_peer(vm_netns: str) -> Iterator[tuple[str, socket.socket]]:
    """A second namespace made here, linked to the VM's namespace by a veth pair, with a TCP
    listener on 10.214.0.2:7777. Yields (its name, the listening socket)."""
    from pyroute2 import IPRoute, netns  # type: ignore[import-untyped]

    name = f"fsotest-decoy-{os.getpid()}"
    create_netns(name)
    try:

        def vm_side() -> None:
            with IPRoute() as ipr:
                ipr.link(
                    "add", ifname="dcy0", kind="veth", peer={"ifname": "dcy1", "net_ns_fd": name}
                )
                i = ipr.link_lookup(ifname="dcy0")[0]
                ipr.addr("add", index=i, address="10.214.0.1", prefixlen=24)
                ipr.link("set", index=i, state="up")

        def decoy_side() -> socket.socket:
            with IPRoute() as ipr:
                i = ipr.link_lookup(ifname="dcy1")[0]
                ipr.addr("add", index=i, address="10.214.0.2", prefixlen=24)
                ipr.link("set", index=i, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                # a route back to the guest, so only the VM namespace's forwarding stands
                # between the guest and the decoy
                ipr.route("add", dst=f"{GUEST_ADDR}/32", gateway="10.214.0.1")
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("10.214.0.2", 7777))
            s.listen(4)
            return s

        run_in_netns(vm_netns, vm_side)
        lsock = run_in_netns(name, decoy_side)
        try:
            yield name, lsock
        finally:
            lsock.close()
    finally:
        netns.remove(name)


def in_netns(name: str, path: str) -> str:
    """A /proc file as seen from inside namespace ``name``."""
    return run_in_netns(name, lambda: Path(path).read_text())


def main_routes(ns_name: str) -> list[str]:
    from pyroute2 import IPRoute

    def dump() -> list[str]:
        with IPRoute() as ipr:
            return sorted(
                f"{r.get('dst') or 'default'}/{r['dst_len']}"
                for r in ipr.route("dump", table=254, family=socket.AF_INET)
            )

    return run_in_netns(ns_name, dump)


def links(ns_name: str) -> list[str]:
    from pyroute2 import IPRoute

    def dump() -> list[str]:
        with IPRoute() as ipr:
            return sorted(str(link.get("ifname")) for link in ipr.get_links())

    return run_in_netns(ns_name, dump)


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_isolation_and_guest_api(vm_tools: None, kernel_spec: str, tmp_path: Path) -> None:
    require_root()
    with Machine(MachineConfig(kernel=kernel_spec, network="netns", name="iso")) as m:
        assert m.netns is not None
        # the guest's routes: its /30 link and nothing else
        routes = m.run("ip -4 route show").out.strip().splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"10.213.0.0/{PREFIX} dev eth0")
        assert "default" not in m.run("ip -4 route show table all").out
        # the host end: no forwarding, no route beyond the link, no other interface
        assert in_netns(m.netns, "/proc/sys/net/ipv4/ip_forward").strip() == "0"
        assert in_netns(m.netns, "/proc/sys/net/ipv4/conf/all/forwarding").strip() == "0"
        assert main_routes(m.netns) == [f"10.213.0.0/{PREFIX}"]
        assert links(m.netns) == ["lo", "tap0"]

        with decoy_peer(m.netns) as (_decoy, lsock):
            # control: the decoy answers from the host end's namespace
            probe = run_in_netns(m.netns, socket.socket)
            probe.settimeout(5)
            probe.connect(("10.214.0.2", 7777))
            conn, _addr = lsock.accept()
            conn.close()
            probe.close()
            # from the guest: no route; and with a route through the host end, forwarding
            # stops it
            r = m.run("timeout 5 nc -w 3 10.214.0.2 7777 < /dev/null; echo rc=$?")
            assert "rc=0" not in r.out
            r = m.run(
                f"ip route add 10.214.0.0/24 via {HOST_ADDR} && "
                "timeout 5 nc -w 3 10.214.0.2 7777 < /dev/null; echo rc=$?"
            )
            assert "rc=0" not in r.out
            lsock.settimeout(1)
            with pytest.raises(socket.timeout):
                lsock.accept()
            assert m.run(f"ping -c 1 -W 2 {HOST_ADDR} >/dev/null; echo rc=$?").out.strip() == "rc=0"

        # files both ways, python3 in the guest, tracefs
        payload = os.urandom(300_000)
        m.put_file(payload, "/tmp/blob", mode=0o600)
        assert m.get_file("/tmp/blob") == payload
        assert m.run("stat -c %a /tmp/blob").out.strip() == "600"
        script = b"import hashlib, json, sys\nprint(json.dumps([sys.version_info[0], "
        script += b"hashlib.sha256(open('/tmp/blob','rb').read()).hexdigest()]))\n"
        m.put_file(script, "/tmp/driver.py")
        r = m.run("python3 /tmp/driver.py", check=True)
        assert r.out.strip() == f'[3, "{hashlib.sha256(payload).hexdigest()}"]'
        assert m.read_trace("tracing_on").strip() in ("0", "1")
        assert "function_graph" in m.read_trace("available_tracers")
        pid = m.pid
        m.crash()
        assert not m.running and not Path(f"/proc/{pid}").exists()
    assert m.faults == []


def _aborting_qemu(tmp_path: Path, tries_to_abort: int) -> Path:
    """A wrapper that execs the real QEMU and, for its first ``tries_to_abort`` runs, sends
    that QEMU SIGABRT one second in (mid-boot: the guest takes about 3 s to answer), as
    TCG's own assertions do; each run is counted in ``runs``."""
    real = shutil.which("qemu-system-x86_64")
    assert real is not None
    runs = tmp_path / "runs"
    runs.write_text("")
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(
        "#!/bin/sh\n"
        "ulimit -c 0\n"
        f"echo run >> {runs}\n"
        f'if [ "$(wc -l < {runs})" -le {tries_to_abort} ]; then\n'
        "  me=$$; (sleep 1; kill -ABRT $me) &\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_a_qemu_that_aborts_during_boot_is_tried_once_more(
    vm_tools: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU dying of SIGABRT mid-boot (no kernel report, no deadline) is the emulator's bug:
    the boot is tried once more and the first try's logs are kept; a second abort is an
    EmulatorCrash (a BootError: one line, exit 2 in the CLI) and leaves no QEMU behind."""
    import vm.machine

    (tmp_path / "once").mkdir()
    once = _aborting_qemu(tmp_path / "once", 1)
    monkeypatch.setattr(vm.machine, "find_qemu", lambda: str(once))
    with Machine(MachineConfig(name="abort-once", accel="tcg", log_dir=tmp_path / "l1")) as m:
        assert m.run("echo up").out.strip() == "up"
    assert (once.parent / "runs").read_text().count("run") == 2
    logs = sorted(p.name for p in (tmp_path / "l1").iterdir())
    assert {"console.log.try1", "qemu.log.try1", "qemu.argv.try1", "console.log"} <= set(logs)
    assert "FSORACLE-READY" not in (tmp_path / "l1" / "console.log.try1").read_text()
    assert m.returncode == 0

    (tmp_path / "always").mkdir()
    always = _aborting_qemu(tmp_path / "always", 99)
    monkeypatch.setattr(vm.machine, "find_qemu", lambda: str(always))
    m2 = Machine(MachineConfig(name="abort-always", accel="tcg", log_dir=tmp_path / "l2"))
    with pytest.raises(EmulatorCrash, match=r"QEMU died of signal 6 during boot") as ei:
        m2.start()
    assert isinstance(ei.value, BootError) and "\n" not in str(ei.value)
    assert (always.parent / "runs").read_text().count("run") == 2
    assert m2.phase == "down" and not m2.running and m2.returncode == -6
    assert (tmp_path / "l2" / "console.log.try1").exists()
