"""Capture real console logs with kernel fault reports, for tests/vm/test_console.py.

    python tests/vm/test_data/capture/capture.py FSOFAULT_KO OUTDIR [--kernel SPEC]

FSOFAULT_KO is fsofault.c built against the kernel's headers (Debian's linux-headers-<release>
package, unpacked with dpkg-deb -x; `make -C <headers> M=<dir> modules`). Two boots:
``faults.log`` (a WARN_ON, a hung task, a NULL-pointer oops, in that order) and
``bug-panic.log`` (a BUG() and then the sysrq panic). Not run by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path

from vm.errors import GuestFault
from vm.machine import Machine, MachineConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ko", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--kernel", default="debian:6.12")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    tag = a.kernel.replace(":", "-")

    cfg = MachineConfig(kernel=a.kernel, accel="tcg", fail_on_fault=False, name="capture")
    with Machine(cfg) as m:
        m.put_file(a.ko, "/tmp/fsofault.ko")
        m.run("insmod /tmp/fsofault.ko what=warn && rmmod fsofault", check=True)
        m.run("echo 3 > /proc/sys/kernel/hung_task_timeout_secs", check=True)
        m.run("insmod /tmp/fsofault.ko what=hang && rmmod fsofault", check=True, timeout=60)
        m.run("insmod /tmp/fsofault.ko what=oops", timeout=60)
        m.run("sleep 1; dmesg | tail -3")
    assert m.console_log is not None
    shutil.copy(m.console_log, a.out / f"{tag}-faults.log")

    with Machine(cfg) as m:
        m.put_file(a.ko, "/tmp/fsofault.ko")
        m.run("insmod /tmp/fsofault.ko what=bug", timeout=60)
        with contextlib.suppress(GuestFault):
            m.run("sleep 1; echo c > /proc/sysrq-trigger", timeout=60)
    assert m.console_log is not None
    shutil.copy(m.console_log, a.out / f"{tag}-bug-panic.log")


if __name__ == "__main__":
    main()
