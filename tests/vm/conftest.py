"""Fixtures for tests that boot kernels.

- ``kernel_spec``: every test that takes it runs once per kernel in ``$FSORACLE_VM_KERNELS``
  (comma-separated; default ``debian:6.12``). ``make vm-test`` sets both stock kernels.
- ``require_tools(...)`` / ``require_root()``: a missing prerequisite skips the test, or fails
  it when ``FSORACLE_REQUIRE_TOOLS=1`` (CI), so nothing is skipped for ever unnoticed.
- ``fsoracle``: runs the real command line in a subprocess and returns the completed process.
- ``make_image``: a sparse raw image of a given size under the test's tmp dir.

At the end of a run with VM tests, a per-kernel summary table is printed.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from vmtesting import FSORACLE, VM_TOOLS, kernels, require_tools


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_spec" in metafunc.fixturenames:
        ks = kernels()
        metafunc.parametrize("kernel_spec", ks, ids=[k.replace(":", "-") for k in ks])


@pytest.fixture
def vm_tools() -> None:
    """Everything a boot needs on the host."""
    require_tools(*VM_TOOLS)


@pytest.fixture
def fsoracle() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", FSORACLE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[[str, int], Path]:
    def make(name: str, mib: int) -> Path:
        p = tmp_path / name
        with open(p, "wb") as f:
            f.truncate(mib * 2**20)
        return p

    return make


# ---------------------------------------------------------------- summary per kernel

_results: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_durations: dict[str, float] = defaultdict(float)
_vm_items: dict[str, str] = {}  # nodeid -> kernel spec ("-" when not parametrized)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for it in items:
        if it.get_closest_marker("vm"):
            callspec = getattr(it, "callspec", None)
            params = callspec.params if callspec is not None else {}
            _vm_items[it.nodeid] = str(params.get("kernel_spec", "-"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _vm_items:
        return
    kernel = _vm_items[report.nodeid]
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _results[kernel][report.outcome] += 1
    _durations[kernel] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _results:
        return
    tr = terminalreporter
    tr.write_sep("=", "VM tests per kernel")
    tr.write_line(f"{'kernel':<14} {'passed':>6} {'failed':>6} {'skipped':>7} {'seconds':>8}")
    for kernel in sorted(_results):
        r = _results[kernel]
        tr.write_line(
            f"{kernel:<14} {r['passed']:>6} {r['failed']:>6} {r['skipped']:>7} "
            f"{_durations[kernel]:>8.1f}"
        )
