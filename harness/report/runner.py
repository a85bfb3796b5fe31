"""Find or run a series' experiments; every result is a JSON file the report names.

Results given with ``--from DIR`` are looked up as ``DIR/SERIES/results/ID.json``,
``DIR/results/ID.json`` and ``DIR/ID.json`` (a previous report's output directory, or a
flat directory of JSON files). An experiment not found there runs when its cost allows
(``fast`` always, ``slow`` with ``--run-slow``, ``vm`` with ``--run-vm``), writing
``RESULTS/ID.json`` (its JSON), ``RESULTS/ID.log`` (its stderr) and ``RESULTS/ID.meta.json``
(command, commit, start time, wall time, exit status) under the report's results directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.safeio import output_dir, write_atomic
from harness.series import ROOT, Experiment

REUSED = "reused"
RAN = "ran"
FAILED = "failed"
SKIPPED = "not run"
CANNOT = "cannot run"


@dataclass
class ExperimentOutcome:
    experiment: Experiment
    status: str
    reason: str = ""
    path: Path | None = None
    data: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.data is not None


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def cli_missing(words: list[str]) -> str | None:
    """The leading ``fsoracle`` words this checkout's CLI lacks (e.g. ``"bench"`` or
    ``"hot bench"``), or None when the command exists."""
    import argparse

    from harness.cli import build_parser

    parser = build_parser()
    seen: list[str] = []
    for w in words:
        if w.startswith("-"):
            return None
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return None
        seen.append(w)
        if w not in subs[0].choices:
            return " ".join(seen)
        parser = subs[0].choices[w]
    return None


def fill(word: str, subst: dict[str, str]) -> str:
    """``{dir}``, ``{tmp}`` and ``{kernel}`` replaced; other braces are left alone."""
    for k, v in subst.items():
        word = word.replace("{" + k + "}", v)
    return word


def _argv(step: list[str], subst: dict[str, str]) -> list[str]:
    out = [fill(w, subst) for w in step]
    if out[0] == "fsoracle":
        return [sys.executable, "-m", "harness.cli", *out[1:]]
    if out[0] == "python":
        return [sys.executable, *out[1:]]
    return out


def _load_json(path: Path) -> tuple[Any, str]:
    try:
        return json.loads(path.read_text()), ""
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror}"
    except json.JSONDecodeError as e:
        return None, f"{path} is not JSON ({e.msg} at line {e.lineno})"


class Runner:
    def __init__(
        self,
        series: str,
        results_dir: Path,
        from_dirs: list[Path] | None = None,
        *,
        run: bool = True,
        run_slow: bool = False,
        run_vm: bool = False,
        kernel: str = "debian:6.12",
        log: Any = None,
    ) -> None:
        self.series = series
        self.results_dir = results_dir
        self.from_dirs = from_dirs or []
        self.run = run
        self.run_slow = run_slow
        self.run_vm = run_vm
        self.kernel = kernel
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.cache: dict[str, ExperimentOutcome] = {}

    def candidates(self, exp: Experiment) -> list[Path]:
        out = []
        for d in self.from_dirs:
            out += [
                d / self.series / "results" / f"{exp.id}.json",
                d / "results" / f"{exp.id}.json",
                d / f"{exp.id}.json",
            ]
        return out

    def get(self, exp: Experiment) -> ExperimentOutcome:
        if exp.id not in self.cache:
            self.cache[exp.id] = self._get(exp)
        return self.cache[exp.id]

    def _get(self, exp: Experiment) -> ExperimentOutcome:
        for p in self.candidates(exp):
            if p.exists():
                data, err = _load_json(p)
                meta_p = p.with_name(p.stem + ".meta.json")
                meta = _load_json(meta_p)[0] if meta_p.exists() else {}
                if data is None:
                    return ExperimentOutcome(exp, FAILED, err, p)
                return ExperimentOutcome(exp, REUSED, "", p, data, meta or {})
        blocked = self.blocked(exp)
        if blocked:
            return ExperimentOutcome(exp, CANNOT, blocked)
        gate = self.gate(exp)
        if gate:
            return ExperimentOutcome(exp, SKIPPED, gate)
        return self.execute(exp)

    def needs_text(self, exp: Experiment) -> str:
        secs = f", about {_duration(exp.seconds)} here" if exp.seconds else ""
        return f"needs `{self.display_command(exp)}`{secs}"

    def display_command(self, exp: Experiment) -> str:
        return exp.command_line(self.kernel)

    def gate(self, exp: Experiment) -> str:
        """Why the experiment is not run now ('' when it runs)."""
        where = ""
        if self.from_dirs:
            where = " (not in " + ", ".join(str(d) for d in self.from_dirs) + ")"
        if not self.run:
            return f"{self.needs_text(exp)}{where}; --no-run"
        if exp.cost == "slow" and not self.run_slow:
            return f"{self.needs_text(exp)}{where}; run with --run-slow"
        if exp.cost == "vm" and not self.run_vm:
            return f"{self.needs_text(exp)} (boots a VM){where}; run with --run-vm"
        return ""

    def blocked(self, exp: Experiment) -> str:
        """What this machine or checkout lacks to run it at all ('' if nothing)."""
        for step in exp.steps:
            if step[0] == "fsoracle" and len(step) > 1:
                missing = cli_missing(step[1:])
                if missing:
                    return f"`fsoracle {missing}` is not in this checkout; {self.needs_text(exp)}"
        for need in exp.needs:
            if need == "root":
                if os.geteuid() != 0:
                    return f"needs root; {self.needs_text(exp)}"
            elif shutil.which(need) is None:
                return f"needs {need} (not installed); {self.needs_text(exp)}"
        return ""

    def execute(self, exp: Experiment) -> ExperimentOutcome:
        output_dir(self.results_dir)
        out_json = self.results_dir / f"{exp.id}.json"
        log_path = self.results_dir / f"{exp.id}.log"
        exp_dir = self.results_dir / exp.id
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        t0 = time.monotonic()
        self.log(f"report {self.series}: running {exp.id}: {self.display_command(exp)}")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (
            os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else ""
        )
        timeout = max(900.0, 20 * exp.seconds)
        status, reason, rc = RAN, "", 0
        argvs: list[list[str]] = []
        with tempfile.TemporaryDirectory(prefix=f"fsoracle-report-{exp.id}-") as tmp:
            subst = {"dir": str(exp_dir), "tmp": tmp, "kernel": self.kernel}
            if any("{dir}" in w for s in exp.steps for w in s) or (
                exp.output and "{dir}" in exp.output
            ):
                exp_dir.mkdir(parents=True, exist_ok=True)
            with log_path.open("w") as log:
                try:
                    if exp.pytest:
                        junit = Path(tmp) / "junit.xml"
                        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                        argv += ["--junitxml", str(junit), *exp.pytest]
                        argvs.append(argv)
                        r = subprocess.run(
                            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            timeout=timeout,
                        )  # fmt: skip
                        rc = r.returncode
                        if not junit.exists():
                            status, reason = FAILED, f"pytest wrote no report (exit {rc})"
                        else:
                            write_atomic(
                                out_json,
                                json.dumps(pytest_json(junit, exp.pytest, rc), indent=1) + "\n",
                            )
                    else:
                        for i, step in enumerate(exp.steps):
                            argv = _argv(step, subst)
                            argvs.append(argv)
                            last = i == len(exp.steps) - 1 and not exp.output
                            with out_json.open("w") if last else open(os.devnull, "w") as so:
                                r = subprocess.run(
                                    argv, cwd=ROOT, env=env, stdout=so, stderr=log,
                                    timeout=timeout,
                                )  # fmt: skip
                            rc = r.returncode
                            if rc != 0 and not (last or exp.output):
                                status = FAILED
                                reason = f"step {i + 1} exited {rc} (see {log_path})"
                                break
                        if status == RAN and exp.output:
                            src = Path(fill(exp.output, subst))
                            if src.exists():
                                if src.resolve() != out_json.resolve():
                                    shutil.copyfile(src, out_json)
                            else:
                                status, reason = FAILED, f"{exp.output} was not written"
                except subprocess.TimeoutExpired:
                    status, reason = FAILED, f"timed out after {timeout:.0f} s"
                except OSError as e:
                    status, reason = FAILED, f"cannot run: {e}"
        wall = time.monotonic() - t0
        meta = {
            "experiment": exp.id,
            "series": self.series,
            "command": self.display_command(exp),
            "argv": argvs,
            "started": started,
            "wall_seconds": round(wall, 1),
            "exit": rc,
            "commit": git_commit(),
            "kernel": self.kernel if any("{kernel}" in w for s in exp.steps for w in s) else None,
        }
        write_atomic(self.results_dir / f"{exp.id}.meta.json", json.dumps(meta, indent=1) + "\n")
        if status == FAILED:
            self.log(f"report {self.series}: {exp.id} failed: {reason}")
            return ExperimentOutcome(
                exp, FAILED, reason, out_json if out_json.exists() else None, meta=meta
            )
        data, err = _load_json(out_json)
        if data is None:
            why = f"exit {rc}; {err}; stderr in {log_path}"
            self.log(f"report {self.series}: {exp.id} failed: {why}")
            return ExperimentOutcome(exp, FAILED, why, out_json, meta=meta)
        self.log(f"report {self.series}: {exp.id} done in {wall:.1f} s (exit {rc})")
        reason = "" if rc == 0 else f"exit status {rc} (its JSON is used; see {log_path})"
        return ExperimentOutcome(exp, RAN, reason, out_json, data, meta)


def _duration(s: float) -> str:
    if s >= 90:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s"


def junit_nodeid(case: ET.Element) -> str:
    cls = case.get("classname", "")
    name = case.get("name", "")
    parts = cls.split(".")
    # tests.btrfs.test_x[.TestClass] -> tests/btrfs/test_x.py[::TestClass]
    for i in range(len(parts), 0, -1):
        file = "/".join(parts[:i]) + ".py"
        if (ROOT / file).exists():
            rest = parts[i:]
            return "::".join([file, *rest, name])
    return f"{cls}::{name}"


def pytest_json(junit: Path, wanted: list[str], rc: int) -> dict[str, Any]:
    """ExperimentOutcome per test case, and per requested node id (all its cases passed?)."""
    cases: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
            elif child.tag == "skipped":
                outcome = "skipped"
        cases[junit_nodeid(case)] = outcome
    # outcome per requested id and per test function (a file or a parametrized test
    # passes when all its cases passed)
    groups: dict[str, list[str]] = {}
    for n, o in cases.items():
        groups.setdefault(n.split("[", 1)[0], []).append(o)
        groups.setdefault(n.split("::", 1)[0], []).append(o)
    for w in wanted:
        if w not in groups:
            groups[w] = [o for n, o in cases.items() if n == w or n.startswith(w + "[")]
    tests = {}
    for name, outs in groups.items():
        if not outs:
            tests[name] = "not collected"
        elif all(o == "passed" for o in outs):
            tests[name] = "passed"
        else:
            tests[name] = sorted({o for o in outs if o != "passed"})[0]
    return {
        "format": "fsoracle-pytest",
        "version": 1,
        "exit": rc,
        "tests": tests,
        "cases": cases,
        "passed": sum(o == "passed" for o in cases.values()),
        "failed": sum(o in ("failed", "error") for o in cases.values()),
    }
