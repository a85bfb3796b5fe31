"""The function_graph trace parser and the read windows, on traces saved from real guests
(``test_data/``, kunit_tool style: golden logs in, dataclasses out).

The saved traces are the bench's own probes on the stock kernels: function_graph on
open_ctree (depth 2, abstime, proc, tail), kprobe ``fsoracle/tree_block_read`` on the
tree-block validator, kprobe/kretprobe ``rbg_enter``/``rbg_exit`` on
``btrfs_read_block_groups``, and the shell's trace_marker writes around ``mount``. Expected
values are read off the trace text itself (durations as printed, event lines between two
marker lines: ftrace prints every CPU's events merged in time order), independently of
the parser; the last test sets the kernel's reads beside the model's prediction for the
same image, rebuilt by the writer.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from harness.mount.trace import (
    TraceError,
    analyse_mount,
    attribute_reads,
    marker_interval,
    parse_function_graph,
)

DATA = Path(__file__).parent / "test_data"
EV = ("tree_block_read", "rbg_enter", "rbg_exit")


def text(name: str) -> str:
    return (DATA / name).read_text()


def reads_between(trace: str, start: str, end: str) -> list[int]:
    """bytenr= of the read-probe lines strictly between the line containing ``start`` and
    the next one containing ``end``, in file order (independent of the parser)."""
    lines = trace.splitlines()
    i = next(n for n, ln in enumerate(lines) if start in ln)
    j = next(n for n, ln in enumerate(lines) if n > i and end in ln)
    return [
        int(m.group(1))
        for ln in lines[i + 1 : j]
        if "tree_block_read:" in ln and (m := re.search(r" bytenr=(\d+)", ln))
    ]


def all_reads(trace: str) -> list[int]:
    return [int(x) for x in re.findall(r"tree_block_read: .*? bytenr=(\d+)", trace)]


@pytest.mark.parametrize(
    "name, rbg_ns, open_ctree_ns",
    [
        # "@ 506885.1 us |    } /* btrfs_read_block_groups [btrfs] */" (nested form)
        # "@ 850552.6 us |  } /* open_ctree [btrfs] */"
        ("6.12-extent-tree-virtio.trace", 506_885_100, 850_552_600),
        # "@ 306502.4 us |    btrfs_read_block_groups [btrfs]();" (leaf form: the reads
        # on the other CPU are printed after it) and "@ 478180.2 us |  } /* open_ctree"
        ("6.12-extent-tree-nvme.trace", 306_502_400, 478_180_200),
        # 6.1, preset small: "@ 794662.8 us" and, past a second, "$ 1053423 us"
        ("6.1-small-extent-tree-virtio.trace", 794_662_800, 1_053_423_000),
    ],
)
def test_extent_tree_windows(name: str, rbg_ns: int, open_ctree_ns: int) -> None:
    t = text(name)
    mt = analyse_mount(t, *EV)
    assert mt.read_block_groups_ns == rbg_ns
    assert mt.open_ctree_ns == open_ctree_ns
    inside = reads_between(t, "rbg_enter:", "rbg_exit:")
    before = reads_between(t, "fsoracle-mount-begin", "rbg_enter:")
    assert mt.windows.inside == inside
    assert mt.windows.before == before
    assert mt.windows.before + mt.windows.inside + mt.windows.after == all_reads(t)
    # the counts by hand, for the record: 32 GiB (6.12) and 96 GiB (6.1) images
    assert (len(before), len(inside), len(mt.windows.after)) in ((8, 37, 5), (13, 105, 5))
    # the function_graph interval and the kprobe markers: within a millisecond of each
    # other, not nested exactly (the kretprobe fires 0.2-0.25 ms after function_graph's
    # return under TCG; the duration is taken on the CPU's local clock, the stamps on the
    # global trace clock, so on 6.1 return - duration falls 9 us before the entry kprobe),
    # and they agree on every read
    assert abs(mt.windows.entry_ns - mt.graph_windows.entry_ns) < 1_000_000
    assert abs(mt.graph_windows.exit_ns - mt.windows.exit_ns) < 1_000_000
    assert mt.graph_windows.as_dict() == mt.windows.as_dict()
    assert mt.unparsed == []


def test_mount_markers_give_the_mount_time() -> None:
    # "33.264458 ... /* fsoracle-mount-begin */" and "34.270117 ... /* fsoracle-mount-end */"
    mt = analyse_mount(text("6.12-extent-tree-virtio.trace"), *EV)
    assert mt.mount_ns == 34_270_117_000 - 33_264_458_000


def test_block_group_tree_reads_nothing_inside() -> None:
    """A 34-item block group tree is one leaf, its root: read by open_ctree before."""
    t = text("6.12-bg-tree-virtio.trace")
    mt = analyse_mount(t, *EV)
    assert mt.windows.inside == []
    assert reads_between(t, "rbg_enter:", "rbg_exit:") == []
    assert len(mt.windows.before) == len(reads_between(t, "fsoracle-mount-begin", "rbg_enter:"))


@pytest.mark.parametrize("name", ["6.12-skinny-refused.trace", "6.1-skinny-refused.trace"])
def test_refused_mount_has_no_window(name: str) -> None:
    """The skinny layout on a stock kernel: open_ctree gives up before the block groups."""
    t = text(name)
    tr = parse_function_graph(t)
    assert [c.name for c in tr.calls if c.name == "open_ctree"] == ["open_ctree"]
    with pytest.raises(TraceError, match="btrfs_read_block_groups"):
        analyse_mount(t, *EV)


def test_closing_line_stands_alone_under_migration() -> None:
    """A task that moves between CPUs mid-call: the closing line (return time, duration)
    gives the call's interval; entries left open are reported, not guessed."""
    tr = parse_function_graph(text("6.12-migration-excerpt.trace"))
    first = next(c for c in tr.calls if c.name == "btrfs_alloc_workqueue")
    # "56.872513 | 1) ... # 8393.113 us | } /* btrfs_alloc_workqueue [btrfs] */"
    assert first.exit_line_ns == 56_872_513_000
    assert first.entry_ns == 56_872_513_000 - 8_393_113
    # its entry line "56.864110 | 0) ... btrfs_alloc_workqueue [btrfs]() {": within 10 us
    assert abs(first.entry_ns - 56_864_110_000) < 10_000
    assert first.depth == 1
    assert [c.duration_ns for c in tr.calls if c.name == "load_super_root"] == [
        18_765_040,
        5_080_030,
    ]
    assert any("unclosed call open_ctree" in u for u in tr.unparsed)
    assert [e.fields["bytenr"] for e in tr.events] == ["1048576"]


def test_lost_events_refuse_the_sample() -> None:
    t = text("6.12-extent-tree-virtio.trace").replace(
        "# tracer: function_graph", "# tracer: function_graph\nCPU:1 [LOST 12 EVENTS]", 1
    )
    with pytest.raises(TraceError, match="lost"):
        analyse_mount(t, *EV)


def test_markers_and_graph_must_agree() -> None:
    """A read stamped between the kprobe entry marker and function_graph's entry would be
    inside by one clock reading and before by the other: the sample is refused."""
    t = text("6.12-extent-tree-virtio.trace")
    tr = parse_function_graph(t)
    enter, _ = marker_interval(tr, "rbg_enter", "rbg_exit")
    call = tr.call("btrfs_read_block_groups")
    assert enter < call.entry_ns  # 33.615275 vs 33.615307
    mid = (enter + call.entry_ns) // 2
    stamp = f"{mid // 10**9}.{mid % 10**9 // 1000:06d}"
    line = (
        f"   {stamp} |   0)   kworker-9    |               |      /* tree_block_read: "
        "(btrfs_validate_extent_buffer+0x4/0x550 [btrfs]) bytenr=4096 raw=4096 */"
    )
    with pytest.raises(TraceError, match="differ"):
        analyse_mount(t + line + "\n", *EV)


def test_btf_and_raw_fetch_must_agree() -> None:
    t = text("6.12-extent-tree-virtio.trace").replace(
        "bytenr=1048576 raw=1048576", "bytenr=1048576 raw=1052672", 1
    )
    tr = parse_function_graph(t)
    with pytest.raises(TraceError, match="raw offset"):
        attribute_reads(tr, "tree_block_read", 0, 1)


@pytest.mark.parametrize(
    "size, traces",
    [
        # 6.12, `--size 32G`: the bench's defaults otherwise
        (
            "32G",
            {
                "extent-tree": ["6.12-extent-tree-virtio.trace", "6.12-extent-tree-nvme.trace"],
                "bg-tree": ["6.12-bg-tree-virtio.trace"],
            },
        ),
        # 6.1, preset small (96 GiB): two block group tree leaves under a root node
        (
            "96G",
            {
                "extent-tree": ["6.1-small-extent-tree-virtio.trace"],
                "bg-tree": ["6.1-small-bg-tree-nvme.trace"],
            },
        ),
    ],
)
def test_kernel_reads_equal_the_model(
    tmp_path: Path, size: str, traces: dict[str, list[str]]
) -> None:
    """The saved traces came from images the writer makes from SIZE of 4 MiB extents,
    4 KiB nodes, seed 0, on a device 10 % larger: the blocks the kernel read inside
    btrfs_read_block_groups, in order, are the model's prediction, and the searched tree's
    root was read before."""
    from harness.mount.config import make_config
    from model.blocksource import FileSink, FileSource
    from model.btrfs.mkfs import plan_filesystem, write_filesystem
    from model.btrfs.mount import predict_mount_reads
    from model.btrfs.reader import BtrfsImage

    cfg = make_config("default", overrides={"size": size})
    assert cfg.nodesize == 4096 and cfg.extent_size == 4 << 20 and cfg.seed == 0
    spec = plan_filesystem(cfg.mkfs())
    for layout, names in traces.items():
        path = tmp_path / f"{layout}.img"
        with FileSink(path, cfg.device_size) as sink:
            write_filesystem(dataclasses.replace(spec, layout=layout), sink)
        cost, reads, root = predict_mount_reads(BtrfsImage.open(FileSource(path)))
        for name in names:
            t = text(name)
            mt = analyse_mount(t, *EV)
            assert mt.windows.inside == reads, name
            assert cost.first_read_inside == len(reads_between(t, "rbg_enter:", "rbg_exit:"))
            assert root in mt.windows.before
