"""The report's parts on hand-made input: seed tokens, the path language and extractors,
the verdict arithmetic. Every expected value is worked out by hand in the test."""

from __future__ import annotations

import pytest

from harness.report import extract as X
from harness.report import seedtext as S
from harness.report import verdict as V

# --------------------------------------------------------------------------- seed tokens


@pytest.mark.parametrize(
    "token,number,unit",
    [
        ("25m51s", 25 * 60 + 51, "s"),
        ("0m8s", 8, "s"),
        ("6s", 6, "s"),
        ("805851.8 us", 805851.8, "us"),
        ("~680", 680, None),
        ("6.8 KB/s", 6.8, "kb/s"),
        ("43.5 MB", 43.5, "mb"),
        ("16KiB", 16, "kib"),
        ("88%", 88, "%"),
        ("5x", 5, "x"),
        ("two", 2, None),
        ("half", 0.5, None),
        ("128K", 128 * 1024, None),
    ],
)
def test_parse_token(token: str, number: float, unit: str | None) -> None:
    assert S.parse_token(token) == (number, unit)


@pytest.mark.parametrize(
    "token,key,value,ok",
    [
        ("805851.8 us", "before_ms", 805.85, True),  # 805.8518 rounds to 805.85
        ("805851.8 us", "before_ms", 805.86, False),
        ("63395.75 us", "after_ms", 63.40, True),  # 63.39575 -> 63.4 at one decimal
        ("25m51s", "time_s", 1551, True),
        ("25m51s", "time_s", 1550, False),
        ("16KiB", "nodesize", 16384, True),  # no unit suffix: bytes
        ("20%", "ssd_fraction", 0.2, True),  # no unit suffix: a fraction
        ("88%", "percent", 88, True),
        ("1%", "max_percent", 1, True),
        ("6.8 KB/s", "throughput_kb_s", 6.8, True),
        ("3.6 GB", "ram_gb", 3.6, True),
        ("two", "leaves", 2, True),
    ],
)
def test_token_matches(token: str, key: str, value: float, ok: bool) -> None:
    assert S.token_matches(token, key, value) is ok


def test_bad_tokens() -> None:
    with pytest.raises(S.TokenError):
        S.parse_token("many")
    with pytest.raises(S.TokenError):
        S.parse_token("5 parsecs")
    with pytest.raises(S.TokenError):
        S.convert(5, "ms", "mb")


def test_parse_range() -> None:
    assert S.parse_range("[8K, 128K)") == [[8192, 131072]]
    assert S.parse_range("[0, 4K)") == [[0, 4096]]
    with pytest.raises(S.TokenError):
        S.parse_range("8K to 128K")


def test_quote_normalisation() -> None:
    seed = "the range [8K, 128K) is completely locked during\n> compression.\n"
    assert S.quote_in_seed("the range [8K, 128K) is completely locked during compression.", seed)
    # one changed word, or a dropped one, is not verbatim
    assert not S.quote_in_seed("the range [8K, 128K) is fully locked during compression.", seed)
    assert not S.quote_in_seed("the range [8K, 128K) is locked during compression.", seed)
    # a '>' that is not a lone reply marker (between spaces) is kept
    assert not S.quote_in_seed("a b", "a>b")
    assert S.quote_in_seed("a b", "a\n> b")
    assert S.quote_in_seed("x->y", "x->y")


# --------------------------------------------------------------------------- extraction

DOC = {
    "rows": [
        {"layout": "extent-tree", "ours": {"visited": 1091}, "ok": True},
        {"layout": "bg-tree", "ours": {"visited": 14}, "ok": False},
    ],
    "pairs": [[1, 0.76], [2, 0.49], [16, 0.07]],
    "hist": {"4": 114, "5": 5},
    "tests": {"tests/x.py::test_a": "passed", "tests/x.py::test_b": "failed"},
    "samples": [
        {"layout": "et", "status": "ok", "us": 800.0},
        {"layout": "et", "status": "ok", "us": 900.0},
        {"layout": "et", "status": "skipped", "us": None},
        {"layout": "bg", "status": "ok", "us": 60.0},
    ],
    "extents": [
        {"offset": 0, "num_bytes": 4096, "compression": "none"},
        {"offset": 8192, "num_bytes": 122880, "compression": "zstd"},
    ],
    "locked": [True, True],
}


@pytest.mark.parametrize(
    "spec,want",
    [
        ("rows[layout=bg-tree].ours.visited", 14),
        ("rows.0.ours.visited", 1091),
        ("rows[0].ours.visited", 1091),
        ("rows[ok=true].layout", "extent-tree"),
        ("pairs[*].1", [0.76, 0.49, 0.07]),
        ("pairs.-1.0", 16),
        ("hist.5", 5),
        ('tests["tests/x.py::test_a"]', "passed"),
        ("samples[?layout=et][?status=ok].us", [800.0, 900.0]),
        ({"extract": "mode", "of": "hist"}, 4.0),
        ({"extract": "median", "of": "samples[?layout=et][?status=ok].us", "scale": 0.001}, 0.85),
        ({"extract": "count", "of": "samples[?layout=et]"}, 3),
        ({"extract": "ratio", "num": "rows.1.ours.visited", "den": "rows.0.ours.visited",
          "scale": 100, "round": 3}, 1.283),  # 14 / 1091 = 1.2832 %
        ({"extract": "trend", "of": "pairs[*].1"}, "decreasing"),
        ({"extract": "extent_ranges", "compressed": False}, [[0, 4096]]),
        ({"extract": "extent_ranges", "compressed": True}, [[8192, 131072]]),
        ({"extract": "all_passed", "tests": ["tests/x.py::test_a"]}, True),
        ({"extract": "all_passed"}, False),
        ({"extract": "all_passed", "tests": ["tests/x.py::test_a"], "negate": True}, False),
        ({"extract": "all", "of": "locked"}, True),
        ({"extract": "any", "of": "locked", "negate": True}, False),
        ({"extract": "less", "a": "rows.1.ours.visited", "b": "rows.0.ours.visited"}, True),
        ({"extract": "path", "of": "rows.1.ours.visited", "add": 1}, 15),
    ],
)  # fmt: skip
def test_extract(spec: object, want: object) -> None:
    X.check_spec(spec)
    got = X.extract(spec, DOC)
    if isinstance(want, float):
        assert got == pytest.approx(want)
    else:
        assert got == want


@pytest.mark.parametrize(
    "spec,message",
    [
        ("rows[layout=skinny].ours", "no element with layout = skinny"),
        ("rows.0.theirs", "no key 'theirs'"),
        ("rows.7", "index 7 out of range"),
        ({"extract": "median", "of": "samples[?layout=sk].us"}, "no values"),
        ({"extract": "median", "of": "samples[?layout=et].us"}, "None is not a number"),
        ({"extract": "all_passed", "tests": ["tests/x.py::test_c"]}, "not run: tests/x.py::test_c"),
    ],
)
def test_extract_errors(spec: object, message: str) -> None:
    with pytest.raises(X.ExtractError, match=message):
        X.extract(spec, DOC)


def test_bad_specs() -> None:
    for spec in ({"extract": "nosuch", "of": "a"}, {"extract": "median"}, 3, "a b"):
        with pytest.raises(ValueError):
            X.check_spec(spec)


# --------------------------------------------------------------------------- verdicts


def test_numbers_exact_and_with_tolerance() -> None:
    v = V.compare_value("total", 1080, 1091, 0, 0)
    assert (v.status, v.detail) == (V.DIFFERS, "+11 (+1.0 %)")  # 11 / 1080 = 1.02 %
    assert V.compare_value("total", 14, 14, 0, 0).status == V.HOLDS
    # ~680 with 5 %: 650 is within 34, 332 is not (-348, -51.2 %)
    assert V.compare_value("items", 680, 650, 0.05, 0).status == V.HOLDS
    v = V.compare_value("items", 680, 332, 0.05, 0)
    assert (v.status, v.detail) == (V.DIFFERS, "-348 (-51.2 %)")
    assert V.compare_value("n", 10, 11, 0, 1).status == V.HOLDS
    # a factor is added when the numbers are 3x or more apart
    assert V.compare_value("ram", 3.6, 0.04, 0, 0).detail.endswith("1/90.0")


def test_bounds_and_other_values() -> None:
    assert V.compare_value("max_percent", 1, 0.733, 0, 0, "max").status == V.HOLDS
    assert V.compare_value("max_percent", 1, 1.2, 0, 0, "max").status == V.DIFFERS
    assert V.compare_value("min", 5, 6, 0, 0, "min").status == V.HOLDS
    assert V.compare_value("d", "decreasing", "decreasing", 0, 0).status == V.HOLDS
    assert V.compare_value("d", "decreasing", "mixed", 0, 0).status == V.DIFFERS
    assert V.compare_value("r", [[0, 4096]], [[0, 4096]], 0, 0).status == V.HOLDS
    assert V.compare_value("r", [0, 4096], [[0, 4096]], 0, 0).status == V.HOLDS
    assert V.compare_value("r", [[8192, 131072]], [], 0, 0).status == V.DIFFERS
    assert V.compare_value("b", True, True, 0, 0).status == V.HOLDS
    assert V.compare_value("b", False, True, 0, 0).status == V.DIFFERS


def _m(status: str, label: str = "m", reason: str = "") -> V.MeasureVerdict:
    mv = V.MeasureVerdict(label, "e", status, reason)
    if status in (V.HOLDS, V.DIFFERS):
        mv.values = [V.ValueVerdict("k", 1, 1 if status == V.HOLDS else 2, status, "+1")]
    return mv


def test_claim_verdict_combination() -> None:
    assert V.claim_verdict([_m(V.HOLDS), _m(V.DIFFERS, "vm")], None).status == V.DIFFERS
    c = V.claim_verdict([_m(V.HOLDS), _m(V.NOT_RUN, "vm", "needs `x`")], None)
    assert c.status == V.HOLDS and "pending: vm (not run: needs `x`)" in c.summary
    c = V.claim_verdict([_m(V.NOT_RUN, "vm", "needs `x`")], None)
    assert (c.status, c.summary) == (V.NOT_RUN, "needs `x`")
    c = V.claim_verdict([], "no seed number")
    assert (c.status, c.summary) == (V.NOT_MEASURABLE, "no seed number")
    c = V.claim_verdict([_m(V.NOT_MEASURED, "x", "bad file")], "why")
    assert c.status == V.NOT_MEASURABLE
