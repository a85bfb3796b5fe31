"""Property tests of the writeback state machine (model/btrfs/writeback.py): the async path
(6.1/6.12) and the delayed-compression series, over random write patterns, data kinds,
truncations, bio boundaries (flusher breaks) and event interleavings chosen by Hypothesis.

Invariants (check_* in the model): every block under writeback has an ordered extent; the
delayed path never compresses locked folios; once quiescent, data/metadata reservations
are zero, no ordered extent is left, and the file reads back as written. Both paths end
with the same contents; with no breaks or truncations they give the same extent layout;
a delayed extent split across two bios gives two smaller compressed extents.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from model.btrfs import compression as Z
from model.btrfs import writeback as W
from model.btrfs.datapattern import pattern_bytes

K = 4096
MAX_FILE = 96 * K  # keeps examples fast; still spans 128 KiB pieces and several OEs


@st.composite
def programs(draw: st.DrawFn, allow_truncate: bool = True) -> list[tuple[object, ...]]:
    """A list of steps: ("write", off, len, kind, seed), ("truncate", k) (to k sectors
    below the current size),
    ("writeback", n) (the flusher writes back n folios, then its bio is submitted),
    ("steps", n) (n scheduler events), ("sync",)."""
    prog: list[tuple[object, ...]] = []
    for _ in range(draw(st.integers(1, 8))):
        kinds = ["write"] * 3 + ["writeback"] * 3 + ["steps", "sync"]
        what = draw(st.sampled_from(kinds + (["truncate"] * 2 if allow_truncate else [])))
        if what == "write":
            off = draw(st.integers(0, MAX_FILE // K - 1)) * K + draw(st.sampled_from([0, 0, 100]))
            length = draw(st.integers(1, 40)) * K - draw(st.sampled_from([0, 0, 1000]))
            kind = draw(st.sampled_from(["zeros", "text", "random"]))
            prog.append(("write", off, length, kind, draw(st.integers(0, 3))))
        elif what == "truncate":
            prog.append(("truncate", draw(st.integers(1, 16))))
        elif what == "writeback":
            prog.append(("writeback", draw(st.integers(1, 12))))
        elif what == "steps":
            prog.append(("steps", draw(st.integers(1, 30))))
        else:
            prog.append(("sync",))
    return prog


def run_program(
    m: W.WritebackModel,
    prog: list[tuple[object, ...]],
    choose: st.DataObject | None,
    allow_break: bool = True,
) -> list[W.Violation]:
    """Run the program; scheduler choices come from ``choose`` (None: eager). A write or
    truncation that would block waits: the model is synced first."""
    violations: list[W.Violation] = []

    def pick(ev: list[tuple[str, int]]) -> int:
        if choose is None:
            return W.eager_choice(ev)
        opts = [i for i, (n, _) in enumerate(ev) if allow_break or n != "flush_break"]
        return choose.draw(st.sampled_from(opts), label="event")

    def step() -> bool:
        ev = m.enabled()
        if not ev:
            return False
        if not allow_break:
            ev = [e for e in ev if e[0] != "flush_break"] or ev
        m.fire(*ev[pick(ev)])
        violations.extend(W.check_all(m) if not m.quiescent() else [])
        return True

    for s in prog:
        if s[0] == "write":
            _, off, length, kind, seed = s
            assert isinstance(off, int) and isinstance(length, int)
            data = pattern_bytes(str(kind), off, length, int(str(seed)))
            if not m.can_write(off, length):
                m.sync(pick if choose is not None else None)
            m.write(off, data)
        elif s[0] == "truncate":
            back = s[1]
            assert isinstance(back, int)
            size = max(0, (-(-m.inode.i_size // K) - back) * K)
            if size >= m.inode.i_size:
                continue
            if not m.can_truncate(size):
                m.sync(pick if choose is not None else None)  # truncate waits, like writes
            m.truncate(size)
        elif s[0] == "writeback":
            # a writeback pass of n folios (nr_to_write): a bio boundary where it stops
            n = s[1]
            assert isinstance(n, int)
            for _ in range(n):
                if not m.can_flush_step() or m._next_dirty() is None:
                    break
                m.flush_step()
                violations.extend(W.check_all(m) if not m.quiescent() else [])
            if m.open_bio is not None:
                m.flush_break()
        elif s[0] == "steps":
            n = s[1]
            assert isinstance(n, int)
            for _ in range(n):
                if not step():
                    break
        else:
            m.sync(pick if choose is not None else None)
            violations.extend(W.check_all(m))
    m.sync(pick if choose is not None else None)
    violations.extend(W.check_all(m))
    return violations


FAST = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@FAST
@given(prog=programs(), data=st.data(), kernel=st.sampled_from(["6.1", "6.12"]))
def test_both_paths_same_contents_and_invariants(
    prog: list[tuple[object, ...]], data: st.DataObject, kernel: str
) -> None:
    results = {}
    for path in ("async", "delayed"):
        m = W.WritebackModel(path, kernel)
        v = run_program(m, prog, data)
        assert v == [], (path, v)
        assert m.quiescent()
        results[path] = (m.file_contents(), bytes(m.expected))
        # async path: compression always ran with the chunk's folios locked
        if path == "async":
            assert all(locked for _, _, locked in m.compressions)
        else:
            assert not any(locked for _, _, locked in m.compressions)
        # every ordered extent added was finished
        assert sorted(m.ordered_added) == sorted(m.ordered_finished)
    assert results["async"] == results["delayed"]


@FAST
@given(
    writes=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 40)), min_size=1, max_size=4),
    kind=st.sampled_from(["zeros", "text", "random"]),
    kernel=st.sampled_from(["6.1", "6.12"]),
    opts=st.sampled_from(["compress=zstd", "compress-force=zstd", "compress=zlib"]),
)
def test_same_layout_without_breaks(
    writes: list[tuple[int, int]], kind: str, kernel: str, opts: str
) -> None:
    """Eager schedule, one data kind, no bio breaks, no truncation, no failed compression
    attempt: the delayed path creates the same extents as the async path (same <= 128 KiB
    pieces). compress-force on incompressible data is the fallback case, checked below."""
    assume(not (kind == "random" and opts.startswith("compress-force")))
    layouts = {}
    for path in ("async", "delayed"):
        m = W.WritebackModel(path, kernel, Z.parse_mount_options(opts))
        for s, n in writes:
            m.write(s * K, pattern_bytes(kind, s * K, n * K))
            m.sync()
        assert W.check_all(m) == []
        layouts[path] = [
            (i.file_offset, i.type, i.compression, i.ram_bytes, i.num_bytes, i.disk_num_bytes)
            for i in m.items
        ]
        layouts[path + "-flags"] = m.inode.flags  # type: ignore[assignment]
    assert layouts["async"] == layouts["delayed"]


def test_fallback_granularity_differs() -> None:
    """compress-force, incompressible 132 KiB: the async path's compress_file_range fails on
    the first 128 KiB piece and hands the rest of its chunk, [0,132K), to plain COW as one
    extent; the delayed path falls back per delayed ordered extent: [0,128K) and [128K,132K)."""
    got = {}
    for path in ("async", "delayed"):
        m = W.WritebackModel(path, "6.12", Z.parse_mount_options("compress-force=zstd"))
        m.write(0, pattern_bytes("random", 0, 33 * K))
        m.sync()
        assert W.check_all(m) == []
        got[path] = [(i.file_offset, i.compression, i.num_bytes) for i in m.items]
    assert got["async"] == [(0, 0, 33 * K)]
    assert got["delayed"] == [(0, 0, 32 * K), (32 * K, 0, K)]


def _split_case(path: str) -> W.WritebackModel:
    m = W.WritebackModel(path, "6.12")
    m.write(0, pattern_bytes("text", 0, 128 * 1024))
    m.inode.disk_i_size = 0
    m.cursor = 0
    # the flusher writes back 16 folios, then its pass ends (nr_to_write used up)
    for _ in range(16):
        while True:
            ev = m.enabled()
            names = [n for n, _ in ev]
            if "compress_chunk" in names:
                m.fire(*ev[names.index("compress_chunk")])
            elif "submit_chunk" in names:
                m.fire(*ev[names.index("submit_chunk")])
            else:
                break
        if m.can_flush_step() and m._next_dirty() is not None:
            m.flush_step()
    if m.open_bio is not None:
        m.flush_break()
    m.sync()
    return m


def test_delayed_extent_split_across_two_bios() -> None:
    """The review thread's cost: a delayed ordered extent [0,128K) whose folios go out in two
    bios ([0,64K) then [64K,128K)) becomes two compressed extents of 64 KiB; the async path
    compresses the 128 KiB range as one extent."""
    a, d = _split_case("async"), _split_case("delayed")
    assert [(i.file_offset, i.compression, i.ram_bytes) for i in a.items] == [
        (0, Z.BTRFS_COMPRESS_ZSTD, 131072)
    ]
    assert [(i.file_offset, i.compression, i.ram_bytes) for i in d.items] == [
        (0, Z.BTRFS_COMPRESS_ZSTD, 65536),
        (65536, Z.BTRFS_COMPRESS_ZSTD, 65536),
    ]
    assert W.check_all(a) == [] and W.check_all(d) == []
    assert a.file_contents() == d.file_contents() == bytes(d.expected)
    # one parent with two children: three ordered extents added and finished
    assert len(d.ordered_added) == 3 and len(d.ordered_finished) == 3


def test_no_child_sectors_release_their_reservation() -> None:
    """Constructed: a delayed OE [0,64K) sends [0,4K) in a bio, then the file is truncated
    to 32K before the flusher reaches [32K,64K): 8 sectors get no child. Correct: all
    reservations return to zero. With the planted bug they stay reserved."""
    for fault, leaks in (
        (W.WritebackFault(), False),
        (W.WritebackFault(forget_release_no_child=True), True),
    ):
        m = W.WritebackModel("delayed", "6.12", fault=fault)
        m.write(0, pattern_bytes("text", 0, 64 * K // 4 * 4))
        m.flush_step()
        m.flush_break()
        assert m.can_truncate(32 * K)
        m.truncate(32 * K)
        m.sync()
        found = W.check_reservations_released(m)
        assert bool(found) == leaks, found
        assert W.check_contents(m) == []


def test_planted_bug_is_caught_by_the_property() -> None:
    """The same property, run on the delayed path with the planted fault, must fail."""

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],  # finding it is the point; shrinking would only cost time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(prog=programs(), data=st.data())
    def prop(prog: list[tuple[object, ...]], data: st.DataObject) -> None:
        m = W.WritebackModel(
            "delayed", "6.12", fault=W.WritebackFault(forget_release_no_child=True)
        )
        assert run_program(m, prog, data) == []

    with pytest.raises(AssertionError) as e:
        prop()
    assert "reservations-released" in str(e.value)
