"""The console fault scanner against saved real console logs (see test_data/README.md)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vm.console import ConsoleLog, classify, find_faults, message

DATA = Path(__file__).parent / "test_data"


def faults_in(name: str) -> list[tuple[str, str]]:
    lines = (DATA / name).read_text().splitlines()
    return [(f.kind, f.title) for f in find_faults(lines)]


def test_panic_6_12() -> None:
    assert faults_in("debian-6.12-panic.log") == [
        ("panic", "Kernel panic - not syncing: sysrq triggered crash")
    ]


def test_panic_6_1() -> None:
    assert faults_in("debian-6.1-panic.log") == [
        ("panic", "Kernel panic - not syncing: sysrq triggered crash")
    ]


def test_warning_hung_task_and_null_dereference_in_one_log() -> None:
    # triggered in this order by capture.py: WARN_ON at fsofault.c:18, 8 s in D state with
    # hung_task_timeout_secs=3, a NULL write
    got = faults_in("debian-6.12-faults.log")
    assert [k for k, _ in got] == ["warning", "hung_task", "bug"]
    assert got[0][1].startswith("WARNING: CPU: 1 PID: 256 at /tmp/kh/fsofault.c:18 ")
    assert got[1][1] == "INFO: task insmod:259 blocked for more than 3 seconds."
    assert got[2][1] == "BUG: kernel NULL pointer dereference, address: 0000000000000000"


def test_kernel_bug_then_panic() -> None:
    got = faults_in("debian-6.12-bug-panic.log")
    assert got == [
        ("bug", "kernel BUG at /tmp/kh/fsofault.c:23!"),
        ("panic", "Kernel panic - not syncing: sysrq triggered crash"),
    ]


def test_lockdep_constructed() -> None:
    assert faults_in("lockdep-circular-constructed.log") == [
        ("lockdep", "WARNING: possible circular locking dependency detected")
    ]


def test_excerpt_boundaries() -> None:
    lines = (DATA / "debian-6.12-faults.log").read_text().splitlines()
    warn, hung, oops = find_faults(lines)
    # the WARN report runs from its "cut here" rule to its end marker
    assert message(warn.excerpt[0]) == "------------[ cut here ]------------"
    assert message(warn.excerpt[-1]) == "---[ end trace 0000000000000000 ]---"
    # the hung-task report (its trace is KERN_INFO, below the console loglevel) stops
    # before the next report
    assert len(hung.excerpt) == 3
    # the NULL dereference report carries its Oops line and ends at its end marker
    assert any(message(x).startswith("Oops: Oops: 0002 [#1]") for x in oops.excerpt)
    assert message(oops.excerpt[-1]) == "---[ end trace 0000000000000000 ]---"
    lockdep = find_faults((DATA / "lockdep-circular-constructed.log").read_text().splitlines())
    assert message(lockdep[0].excerpt[0]).startswith("=====")
    assert message(lockdep[0].excerpt[-1]).strip() == "</TASK>"


def test_no_faults_in_a_clean_boot() -> None:
    lines = (DATA / "debian-6.12-panic.log").read_text().splitlines()
    clean = lines[: next(i for i, ln in enumerate(lines) if "Kernel panic" in ln)]
    assert len(clean) > 5
    assert find_faults(clean) == []


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[   12.000001] Kernel panic - not syncing: Fatal exception", "panic"),
        ("[    3.5] BUG: unable to handle page fault for address: ffff", "bug"),
        ("[    3.5] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]", "bug"),
        ("[    3.5] general protection fault, probably for non-canonical address", "oops"),
        ("[    3.5] INFO: task kworker/u4:2:45 blocked for more than 120 seconds.", "hung_task"),
        ("[    3.5] WARNING: possible recursive locking detected", "lockdep"),
        ("[    3.5] btrfs: WARNING about nothing", None),
        ("[    3.5] BTRFS warning (device vdb): csum failed", None),
        ("FSORACLE-READY 5.38", None),
    ],
)
def test_classify(line: str, kind: str | None) -> None:
    assert classify(message(line)) == kind


def test_console_log_streams_to_file_and_waits(tmp_path: Path) -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as rf:
        log = ConsoleLog(rf, tmp_path / "console.log")
        with os.fdopen(w, "wb") as wf:
            wf.write(b"[    1.0] hello\n")
            wf.flush()
            assert log.wait_for(lambda s: "hello" in s, timeout=5) == 0

            def later() -> None:
                wf.write(b"[    2.0] Kernel panic - not syncing: test\n")
                wf.flush()

            t = threading.Timer(0.2, later)
            t.start()
            assert log.wait_for(lambda s: "panic" in s, timeout=5, start=1) == 1
            t.join()
        assert log.wait_for(lambda s: False, timeout=5) is None  # EOF
        log.close()
    assert [f.kind for f in log.faults()] == ["panic"]
    assert (tmp_path / "console.log").read_text().splitlines()[0] == "[    1.0] hello"
