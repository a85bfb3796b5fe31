"""A parser for the guest's function_graph trace of one mount, and the attribution of tree
block reads to windows of ``btrfs_read_block_groups``.

The trace is what ``/sys/kernel/tracing/trace`` prints with ``current_tracer`` =
function_graph, ``set_graph_function`` = ``open_ctree``, ``max_graph_depth`` = 2, the options
``funcgraph-abstime``, ``funcgraph-proc`` and ``funcgraph-tail``, ``trace_clock`` = global,
kprobe events on the tree-block validation (with a ``bytenr=`` field) and on the entry and
return of ``btrfs_read_block_groups`` (the window's markers), and ``trace_marker`` writes
around the ``mount`` command. Lines look like::

       57.016925 |   1)   mount-357    | @ 112979.5 us |    btrfs_read_block_groups [btrfs]();
      105.795292 |   1)   mount-411    |               |    btrfs_read_block_groups [btrfs]() {
      105.982166 |   1)   mount-411    | @ 186867.0 us |    }
       56.872513 |   1)   mount-357    | # 8393.113 us |    } /* btrfs_alloc_workqueue [btrfs] */
       57.020254 |   0)   kworker-12   |               |  /* ebread: (...) bytenr=38297600 */

Timestamps: the first column is the event's time on the trace clock (``global``: one
clock for all CPUs, so events of the mounting task and of the kworker that completes the
reads on another CPU can be ordered). A call is printed either as one *leaf* line (entry
time, duration) when the tracer finds its return next in the same CPU's buffer, or as an
entry line ``{`` and a closing line ``}`` (return time, duration; with ``funcgraph-tail``
the closing line names the function): which form appears depends on what else that CPU
recorded meanwhile, so both are handled. A closing line is the return event itself and
stands alone (interval [return - duration, return]); the open entry, matched by name per
task (a task may move between CPUs inside a call), only gives the depth. When a task
migrates in the middle of a call of a function it calls repeatedly, the tracer can pair an
entry with the wrong return and print a bogus leaf (seen for ``alloc_workqueue``); the two
calls this module times are each made once per mount, so that cannot happen to them.

Parsing is pure (text in, dataclasses out) so it is tested on saved traces
(``tests/bench/test_data/``), as kunit_tool tests its parser on golden logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(
    r"^\s*(?P<sec>\d+)\.(?P<frac>\d+)\s*\|\s*(?P<cpu>\d+)\)\s*(?P<task>.*?)\s*\|"
    r"\s*(?:(?P<mark>[!#*@$+])\s*)?(?:(?P<dur>\d+(?:\.\d*)?)\s*us)?\s*\|(?P<body>.*)$"
)
_ENTRY = re.compile(r"^\s*(?P<name>[\w.]+)(?:\s+\[\w+\])?\(\)\s*\{\s*$")
_LEAF = re.compile(r"^\s*(?P<name>[\w.]+)(?:\s+\[\w+\])?\(\);\s*$")
_EXIT = re.compile(r"^\s*\}\s*(?:/\*\s*(?P<name>[\w.]+)(?:\s+\[\w+\])?\s*\*/)?\s*$")
_COMMENT = re.compile(r"^\s*/\*\s*(?P<text>.*?)\s*\*/\s*$")
_EVENT = re.compile(r"^(?P<name>[\w.-]+):\s+(?P<rest>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
_LOST = re.compile(r"LOST \d+ EVENTS|\[LOST")


class TraceError(ValueError):
    """The trace cannot be used for this sample (events lost, a call never closed...)."""


@dataclass(frozen=True)
class Call:
    """One traced function call: times in nanoseconds on the trace clock."""

    name: str
    task: str
    depth: int
    entry_ns: int
    duration_ns: int
    exit_line_ns: int | None = None  # the closing line's own time, when printed as one

    @property
    def exit_ns(self) -> int:
        return self.entry_ns + self.duration_ns


@dataclass(frozen=True)
class Event:
    """A trace event shown as a comment (a kprobe hit, a trace_marker write)."""

    ts_ns: int
    cpu: int
    task: str
    name: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class GraphTrace:
    calls: list[Call] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def call(self, name: str) -> Call:
        """The one call of ``name`` (a mount runs open_ctree and btrfs_read_block_groups
        once); raises :class:`TraceError` if there is not exactly one."""
        found = [c for c in self.calls if c.name == name]
        if len(found) != 1:
            raise TraceError(f"expected one call of {name} in the trace, found {len(found)}")
        return found[0]


def _ns(sec: str, frac: str) -> int:
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def _dur_ns(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def parse_function_graph(text: str) -> GraphTrace:
    """Calls and events of a function_graph trace with absolute timestamps."""
    out = GraphTrace()
    stacks: dict[str, list[tuple[str, int, int]]] = {}  # task -> [(name, entry_ns, depth)]
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            if _LOST.search(line):
                out.lost.append(line.strip())
            continue
        if _LOST.search(line):
            out.lost.append(line.strip())
            continue
        m = _LINE.match(line)
        if m is None:
            # context-switch banners ("---" and "0) a-1 => b-2") and irq arrows carry nothing
            if not (set(line.strip()) <= {"-"} or "=>" in line or "==========" in line):
                out.unparsed.append(line)
            continue
        ts = _ns(m["sec"], m["frac"])
        task = m["task"].strip()
        body = m["body"]
        dur = _dur_ns(m["dur"]) if m["dur"] else None
        stack = stacks.setdefault(task, [])
        if c := _COMMENT.match(body):
            if e := _EVENT.match(c["text"]):
                name, rest = e["name"], e["rest"]
            else:  # a trace_marker write
                name, rest = "print", c["text"]
            out.events.append(
                Event(ts, int(m["cpu"]), task, name, rest, dict(_FIELD.findall(rest)))
            )
        elif e := _ENTRY.match(body):
            stack.append((e["name"], ts, len(stack)))
        elif e := _LEAF.match(body):
            if dur is None:
                out.unparsed.append(line)
                continue
            out.calls.append(Call(e["name"], task, len(stack), ts, dur))
        elif e := _EXIT.match(body):
            if dur is None:
                out.unparsed.append(line)
                continue
            # The closing line is the return event itself: its time is the return time and
            # its duration the call's, so it stands alone; the open entry only gives depth.
            name = e["name"]
            depth = -1
            for i in range(len(stack) - 1, -1, -1):
                if name is None or stack[i][0] == name:
                    name, _entry, depth = stack[i]
                    del stack[i:]
                    break
            if name is None:
                out.unparsed.append(line)
                continue
            out.calls.append(Call(name, task, depth, ts - dur, dur, exit_line_ns=ts))
        else:
            out.unparsed.append(line)
    for task, stack in stacks.items():
        for name, entry, depth in stack:  # still open when tracing stopped
            out.unparsed.append(f"unclosed call {name} of {task} at {entry} ns (depth {depth})")
    out.calls.sort(key=lambda c: c.entry_ns)
    out.events.sort(key=lambda e: e.ts_ns)
    return out


@dataclass
class Windows:
    """Tree-block reads split by an interval [entry, exit] of the trace clock: before,
    inside, after. Addresses in completion order."""

    entry_ns: int
    exit_ns: int
    before: list[int] = field(default_factory=list)
    inside: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        return {"before": self.before, "inside": self.inside, "after": self.after}


def read_addresses(trace: GraphTrace, event: str, field_name: str = "bytenr") -> list[Event]:
    """The hits of the tree-block read probe, checked: each has ``field_name`` (and, when
    the probe also fetched the raw offset as ``raw=``, the two agree)."""
    out = []
    for ev in trace.events:
        if ev.name != event:
            continue
        v = ev.fields.get(field_name)
        if v is None:
            raise TraceError(f"{event} event without {field_name}=: {ev.text!r}")
        raw = ev.fields.get("raw")
        if raw is not None and int(raw, 0) != int(v, 0):
            raise TraceError(f"{event}: {field_name}={v} but the raw offset fetch gave {raw}")
        out.append(ev)
    return out


def attribute_reads(
    trace: GraphTrace, event: str, entry_ns: int, exit_ns: int, field_name: str = "bytenr"
) -> Windows:
    """Put every ``event`` hit (its ``field_name``: a tree block's logical address) in the
    window its timestamp falls in.

    A block read inside the window completes inside it: the search waits for each read
    (``read_extent_buffer_pages`` sleeps until the validation at bio completion has run), so
    the completion time, which the probe records, lies between the call's entry and return.
    """
    if trace.lost:
        raise TraceError(f"the trace lost events: {trace.lost[0]}")
    w = Windows(entry_ns, exit_ns)
    for ev in read_addresses(trace, event, field_name):
        addr = int(ev.fields[field_name], 0)
        if ev.ts_ns < entry_ns:
            w.before.append(addr)
        elif ev.ts_ns <= exit_ns:
            w.inside.append(addr)
        else:
            w.after.append(addr)
    return w


def marker_interval(trace: GraphTrace, enter: str, exit: str) -> tuple[int, int]:
    """The interval between the one ``enter`` event and the one ``exit`` event after it
    (a kprobe and a kretprobe on the same function)."""
    ins = [e for e in trace.events if e.name == enter]
    outs = [e for e in trace.events if e.name == exit]
    if len(ins) != 1 or len(outs) != 1:
        raise TraceError(
            f"expected one {enter} and one {exit} event, found {len(ins)}, {len(outs)}"
        )
    if outs[0].ts_ns < ins[0].ts_ns:
        raise TraceError(f"{exit} precedes {enter}")
    return ins[0].ts_ns, outs[0].ts_ns


def markers(trace: GraphTrace) -> dict[str, int]:
    """``trace_marker`` writes by text → time (function_graph shows them as ``/* text */``
    comments; a comment that does not start ``name: `` is parsed as event ``print``)."""
    return {e.text: e.ts_ns for e in trace.events if e.name == "print"}


@dataclass
class MountTrace:
    """What one traced mount says: the two calls' durations (function_graph), the reads in
    each window, and the window both ways (function_graph call interval, kprobe markers)."""

    open_ctree_ns: int | None
    read_block_groups_ns: int
    windows: Windows
    graph_windows: Windows
    mount_ns: int | None
    events: int
    unparsed: list[str]


def analyse_mount(
    text: str,
    read_event: str,
    enter_event: str,
    exit_event: str,
    window: str = "btrfs_read_block_groups",
    outer: str = "open_ctree",
    mount_markers: tuple[str, str] = ("fsoracle-mount-begin", "fsoracle-mount-end"),
) -> MountTrace:
    """Parse one mount's trace and attribute its reads. The windows come from the kprobe
    markers; the same attribution by the function_graph call interval must agree exactly,
    else the sample is refused (:class:`TraceError`): a read that one clock reading puts
    inside and the other outside would make the count depend on how it was measured."""
    tr = parse_function_graph(text)
    call = tr.call(window)
    outer_calls = [c for c in tr.calls if c.name == outer]
    entry, exit_ = marker_interval(tr, enter_event, exit_event)
    w = attribute_reads(tr, read_event, entry, exit_)
    g = attribute_reads(tr, read_event, call.entry_ns, call.exit_ns)
    if g.as_dict() != w.as_dict():
        raise TraceError(
            f"reads per window differ between the kprobe markers ({len(w.before)}, "
            f"{len(w.inside)}, {len(w.after)}) and the function_graph interval "
            f"({len(g.before)}, {len(g.inside)}, {len(g.after)})"
        )
    mk = markers(tr)
    begin, end = (mk.get(m) for m in mount_markers)
    return MountTrace(
        open_ctree_ns=outer_calls[0].duration_ns if len(outer_calls) == 1 else None,
        read_block_groups_ns=call.duration_ns,
        windows=w,
        graph_windows=g,
        mount_ns=end - begin if begin is not None and end is not None else None,
        events=len(tr.events),
        unparsed=tr.unparsed,
    )
