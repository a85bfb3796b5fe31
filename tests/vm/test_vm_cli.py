"""``fsoracle vm run`` on real boots: output, exit status, a panicking guest."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from vmtesting import FSORACLE, expected_release

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.vm
@pytest.mark.smoke
@pytest.mark.timeout(600)
def test_vm_run_prints_the_kernel_release(vm_tools: None, fsoracle: Cli, kernel_spec: str) -> None:
    p = fsoracle("vm", "run", "--kernel", kernel_spec, "--", "uname", "-r")
    assert p.returncode == 0, p.stderr
    assert p.stdout == expected_release(kernel_spec) + "\n"
    # progress went to stderr and says which accelerator ran
    assert re.search(r"booting \S+ \((TCG|KVM): ", p.stderr), p.stderr


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_vm_run_exits_with_the_command_status(
    vm_tools: None, fsoracle: Cli, kernel_spec: str, tmp_path: Path
) -> None:
    p = fsoracle(
        "vm", "run", "--kernel", kernel_spec, "--log-dir", str(tmp_path), "--",
        "sh", "-c", "echo to-out; echo to-err >&2; exit 7",
    )  # fmt: skip
    assert p.returncode == 7, p.stderr
    assert p.stdout == "to-out\n"
    assert "to-err\n" in p.stderr
    assert (tmp_path / "console.log").read_text().count("FSORACLE-READY") == 1


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_vm_run_reports_a_guest_panic(
    vm_tools: None, fsoracle: Cli, kernel_spec: str, tmp_path: Path
) -> None:
    # user-mode networking here (the other tests run the netns mode as root)
    p = fsoracle(
        "vm", "run", "--kernel", kernel_spec, "--network", "user",
        "--log-dir", str(tmp_path), "--", "sh", "-c", "echo c > /proc/sysrq-trigger",
    )  # fmt: skip
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr
    # the excerpt, then exactly one closing line
    assert any("Kernel panic - not syncing: sysrq triggered crash" in ln for ln in err[:-1])
    assert err[-1].startswith("fsoracle: guest kernel panic: Kernel panic - not syncing: ")
    assert str(tmp_path / "console.log") in err[-1]
    assert "sysrq triggered crash" in (tmp_path / "console.log").read_text()
    assert "network user" in p.stderr


@pytest.mark.vm
@pytest.mark.timeout(120)
def test_vm_run_rejects_bad_input_in_one_line(vm_tools: None, fsoracle: Cli) -> None:
    for args, words in (
        (["--kernel", "debian:5.10"], "unknown Debian kernel"),
        (["--kernel", "path:/nonexistent/bzImage"], "not found"),
        (["--disk", "/nonexistent.img:nvme"], "disk image /nonexistent.img not found"),
        (["--mem", "lots"], "memory size"),
    ):
        p = fsoracle("vm", "run", *args, "--", "true")
        assert p.returncode == 2, (args, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("fsoracle: ") and words in last, (args, p.stderr)
        assert "Traceback" not in p.stderr


@pytest.mark.vm
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_qemu(vm_tools: None, fsoracle: Cli, sig: int) -> None:
    # a CLI run interrupted mid-command (^C is SIGINT) leaves no QEMU and no namespace
    proc = subprocess.Popen(
        [sys.executable, "-c", FSORACLE, "vm", "run", "--timeout", "300", "--",
         "sh", "-c", "echo started; sleep 200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_default,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        qemu = [
            p.parent.name
            for p in Path("/proc").glob("[0-9]*/stat")
            if _ppid(p) == proc.pid and "qemu-system" in _comm(p)
        ]
        assert len(qemu) == 1
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(30)
        assert time.monotonic() - t0 < 15
        assert rc in (130, 128 + signal.SIGTERM), proc.stderr.read() if proc.stderr else ""
        assert not Path(f"/proc/{qemu[0]}").exists()
        assert not list(Path("/run/netns").glob(f"fsoracle-{proc.pid}-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _sigint_default() -> None:
    # what a terminal's foreground job gets. Under `make vm-test &` from a script the shell
    # starts everything with SIGINT ignored, Python then keeps ignoring it (as a background
    # program should), and ^C would not be what this test sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stat_fields(p: Path) -> tuple[str, int]:
    try:
        text = p.read_text()
    except OSError:
        return "", -1
    return text[text.index("(") + 1 : text.rindex(")")], int(
        text[text.rindex(")") + 2 :].split()[1]
    )


def _ppid(p: Path) -> int:
    return _stat_fields(p)[1]


def _comm(p: Path) -> str:
    return _stat_fields(p)[0]
