"""The claims in every ``patches/*/series.yaml`` as data: each quote occurs verbatim in its
seed, each seed number is read from its quote, every model function, test and experiment
named exists. Expected values are the seed files themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.report import seedtext as S
from harness.report.build import seed_values
from harness.report.refs import pytest_node_exists, resolve_function
from harness.report.runner import cli_missing
from harness.series import ROOT, Claim, load_series, series_names

PATCHES = ROOT / "patches"
SERIES = series_names(PATCHES)
# the five seeds' series and the block group tree's own
EXPECTED = {
    "block-group-tree",
    "delayed-compression",
    "ext4-free-space-tree",
    "extent-tree-v2",
    "hot-data",
    "skinny-bg-tree",
}


def seed_file(name: str) -> Path:
    path = S.seeds_dir() / name
    if not path.exists():
        msg = f"seed {path} not found (set FSORACLE_SEEDS)"
        if os.environ.get("FSORACLE_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_every_series_has_claims() -> None:
    assert set(SERIES) >= EXPECTED
    for name in SERIES:
        s = load_series(PATCHES / name)
        assert s.claims, name
        for c in s.claims:
            assert c.quote.strip(), f"{name}: {c.id} has no quote"
            assert c.measures or c.not_measurable, f"{name}: {c.id}"


@pytest.mark.parametrize("name", SERIES)
def test_quotes_are_verbatim_in_the_seed(name: str) -> None:
    s = load_series(PATCHES / name)
    text = seed_file(s.seed.file).read_text()
    missing = [c.id for c in s.claims if not S.quote_in_seed(c.quote, text)]
    assert not missing, f"{name}: quotes not in {s.seed.file}: {missing}"


@pytest.mark.parametrize("name", SERIES)
def test_seed_numbers_come_from_the_quote(name: str) -> None:
    s = load_series(PATCHES / name)
    for c in s.claims:
        values, problems = seed_values(c)
        assert not problems, problems
        for v in values:
            if isinstance(v.value, int | float) and not isinstance(v.value, bool):
                assert v.found, f"{name}: {c.id}: {v.key}"


def _claim(quote: str, seed: dict[str, object], seed_text: dict[str, str]) -> Claim:
    return Claim("c", "t", quote, seed, seed_text, "u", "", [], [], [], "why", "")


def test_seed_number_checks_can_fail() -> None:
    quote = "nodes | 55 | total | 1080 | took 25m51s and @ 805851.8 us"
    ok, problems = seed_values(
        _claim(quote, {"nodes": 55, "time_s": 1551, "a_ms": 805.85}, {"time_s": "25m51s",
               "a_ms": "805851.8 us"})
    )  # fmt: skip
    assert not problems and all(v.found for v in ok)
    # a number not in the quote, a token converting to another value, a token not there
    _, problems = seed_values(_claim(quote, {"nodes": 56}, {}))
    assert problems == ["c: seed nodes token '56' is not in the quote"]
    _, problems = seed_values(_claim(quote, {"time_s": 1550}, {"time_s": "25m51s"}))
    assert problems == ["c: seed time_s = 1550 does not follow from '25m51s'"]
    _, problems = seed_values(_claim(quote, {"a_ms": 805.8}, {"a_ms": "805851.8 us"}))
    assert problems == ["c: seed a_ms = 805.8 does not follow from '805851.8 us'"]
    # a number inside a longer one does not count: 108 is not in "1080"
    _, problems = seed_values(_claim(quote, {"total": 108}, {}))
    assert problems


@pytest.mark.parametrize("name", SERIES)
def test_model_functions_tests_and_experiments_exist(name: str) -> None:
    s = load_series(PATCHES / name)
    refs = [r for c in s.claims for r in c.model] + [r for i in s.invariants for r in i.model]
    refs += [f"{m.module}:{f}" for m in s.model for f in m.functions]
    bad = [(r, p) for r in refs if (p := resolve_function(s, r).problem)]
    assert not bad, bad
    tests = [t for c in s.claims for t in c.tests] + [t for i in s.invariants for t in i.tests]
    tests += [t for e in s.experiments.values() for t in e.pytest]
    assert not [t for t in tests if not pytest_node_exists(t)]
    for e in s.experiments.values():
        for step in e.steps:
            if step[0] == "fsoracle" and e.cost != "vm":
                # commands the report runs itself must exist in this checkout
                assert cli_missing(step[1:]) is None, (e.id, step)
        used = any(m.experiment == e.id for c in s.claims for m in c.measures) or any(
            i.experiment == e.id for i in s.invariants
        )
        assert used, f"{name}: experiment {e.id} is not used"


def test_function_resolution_reports_what_is_missing() -> None:
    s = load_series(PATCHES / "skinny-bg-tree")
    r = resolve_function(s, "predict_built")
    assert r.file == "model/btrfs/mount.py" and r.line > 0 and r.doc
    assert resolve_function(s, "Searcher.find_first_block_group").file == "model/btrfs/mount.py"
    assert "not found" in resolve_function(s, "no_such_function").problem
    assert not pytest_node_exists("tests/btrfs/test_mkfs.py::test_no_such_test")
    assert pytest_node_exists("tests/btrfs/test_etv2.py::test_leaf_capacity_arithmetic")
