"""What runs on the target: the tracing set-up (once per boot) and the shell script of one
cold, traced mount, with the parser of that script's output.

What is traced (one ring buffer, ``trace_clock`` global, so every CPU's events share a
clock):

- function_graph on ``open_ctree`` (``set_graph_function``, ``max_graph_depth`` 2, options
  ``funcgraph-abstime``, ``funcgraph-proc``, ``funcgraph-tail``): the durations of
  ``open_ctree`` and of ``btrfs_read_block_groups``, as the seed measured them.
- A kprobe event on the function that validates a tree block freshly read from disk, run
  once per read at bio completion and never for a cached block: 6.12
  ``btrfs_validate_extent_buffer(eb, check)`` (``fs/btrfs/disk-io.c``, called from
  ``end_bbio_meta_read`` in ``extent_io.c``), 6.1 ``validate_extent_buffer(eb)`` (static,
  called from ``btrfs_validate_metadata_buffer``; in 6.1 that function takes a page and runs
  once per page, so it would count a 16 KiB block four times). The function is chosen by
  name from ``/proc/kallsyms``. It records the block's logical address ``eb->start``:
  through BTF (``bytenr=eb->start``) where the kernel's probe parser supports it (6.12), with
  ``raw=+0(%di):u64`` fetched beside it and checked equal; else ``+0(%di):u64`` alone
  (``start`` is the first member of ``struct extent_buffer`` in 6.1 and 6.12,
  ``extent_io.h``; the first argument is in %rdi on x86-64).
- The window: a kprobe and a kretprobe on ``btrfs_read_block_groups`` (events in the same
  buffer as the reads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.errors import UserError
from harness.target import Target

TRACING = "/sys/kernel/tracing"
MNT = "/mnt/fso-bench"
GROUP = "fsoracle"
READ_EVENT = "tree_block_read"
ENTER_EVENT = "rbg_enter"
EXIT_EVENT = "rbg_exit"
# functions that validate a freshly read tree block, newest first: (name, BTF argument)
VALIDATORS = (("btrfs_validate_extent_buffer", "eb"), ("validate_extent_buffer", "eb"))
# a mount the kernel refuses for a feature it does not know: skipped, not failed
UNSUPPORTED = re.compile(r"unknown incompat features|unsupported (optional )?features", re.I)


@dataclass
class Probe:
    """How reads are counted in this kernel (recorded in result.json)."""

    function: str
    fetch: str
    definitions: list[str]
    btf: bool


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def setup_tracing(t: Target) -> Probe:
    """Define the probes and the function_graph tracer once per boot."""
    t.run("modprobe btrfs 2>/dev/null; mkdir -p " + MNT, check=False)
    have = t.run(
        f"test -w {TRACING}/kprobe_events && grep -qw function_graph {TRACING}/available_tracers",
        check=False,
    )
    if have.status != 0:
        raise UserError(
            "the guest kernel lacks kprobe events or the function_graph tracer "
            "(CONFIG_KPROBE_EVENTS, CONFIG_FUNCTION_GRAPH_TRACER): cannot trace the mount"
        )
    syms = t.run("cat /proc/kallsyms").out
    names = {parts[2] for parts in (ln.split() for ln in syms.splitlines()) if len(parts) >= 3}
    for need in ("open_ctree", "btrfs_read_block_groups"):
        if need not in names:
            raise UserError(f"the guest kernel has no {need} symbol: is btrfs built or loaded?")
    func, arg = next(((f, a) for f, a in VALIDATORS if f in names), (None, None))
    if func is None:
        raise UserError(
            "the guest kernel has none of " + ", ".join(f for f, _ in VALIDATORS) + ": "
            "find the function that validates a freshly read tree block and add it"
        )
    T = TRACING
    t.run(
        f"echo 0 > {T}/tracing_on; echo nop > {T}/current_tracer; "
        f"echo 0 > {T}/events/enable; echo > {T}/kprobe_events"
    )
    candidates = [
        (f"bytenr={arg}->start raw=+0(%di):u64", True),
        ("bytenr=+0(%di):u64", False),
    ]
    for fetch, btf in candidates:  # noqa: B007 - the accepted pair is used below
        read_def = f"p:{GROUP}/{READ_EVENT} {func} {fetch}"
        if t.run(f"echo {_sh_quote(read_def)} >> {T}/kprobe_events", check=False).status == 0:
            break
    else:
        err = t.run(f"tail -3 {T}/error_log", check=False).out
        raise UserError(f"cannot define a kprobe on {func}: {err.strip()}")
    defs = [
        read_def,
        f"p:{GROUP}/{ENTER_EVENT} btrfs_read_block_groups",
        f"r:{GROUP}/{EXIT_EVENT} btrfs_read_block_groups ret=$retval",
    ]
    for d in defs[1:]:
        t.run(f"echo {_sh_quote(d)} >> {T}/kprobe_events")
    t.run(
        f"cd {T} && echo global > trace_clock && echo 4096 > buffer_size_kb && "
        "echo open_ctree > set_graph_function && echo 2 > max_graph_depth && "
        "echo function_graph > current_tracer && echo funcgraph-abstime > trace_options && "
        "echo funcgraph-proc > trace_options && echo funcgraph-tail > trace_options && "
        f"echo 1 > events/{GROUP}/enable && echo > trace"
    )
    return Probe(function=func, fetch=fetch, definitions=defs, btf=btf)


def kernel_names(t: Target, devs: list[str]) -> list[str]:
    """The kernel's names (``vdb``, ``nvme0n1``) of the target's device paths ``devs``."""
    out = t.run("for p in " + " ".join(_sh_quote(d) for d in devs) + '; do readlink -f "$p"; done')
    names = [ln.strip().rsplit("/", 1)[-1] for ln in out.out.splitlines() if ln.strip()]
    if len(names) != len(devs):
        raise UserError(f"cannot resolve the target's devices {devs}: {out.out.strip()!r}")
    return names


SAMPLE_SCRIPT = r"""
T={tracing}; D={dev}; M={mnt}
echo 0 > $T/tracing_on; echo > $T/trace
umount $M 2>/dev/null
btrfs device scan --forget >/dev/null 2>&1
sync; echo 3 > /proc/sys/vm/drop_caches
dmesg -c >/dev/null
# Where the block layer counts this disk's requests: the disk itself, unless it keeps no
# I/O statistics (queue/iostats 0): then an NVMe multipath head node (6.1's nvme0n1 is
# bio-based and counts nothing) whose requests are counted on its hidden path devices
# nvme0c*n1
S=$D
if [ "$(cat /sys/block/$D/queue/iostats 2>/dev/null)" = 0 ]; then
  P=$(echo $D | sed -n 's/^nvme\([0-9]*\)n\([0-9]*\)$/nvme\1c*n\2/p')
  [ -n "$P" ] && S=$(cd /sys/block && echo $P)
fi
iosum() {{
  for d in $S; do cat /sys/block/$d/stat; done |
    awk '{{for (i = 1; i <= NF; i++) t[i] += $i}}
         END {{for (i = 1; i <= NF; i++) printf "%d ", t[i]; print ""}}'
}}
s0=$(iosum)
echo 1 > $T/tracing_on
echo fsoracle-mount-begin > $T/trace_marker
mount -t btrfs -o ro /dev/$D $M 2>/tmp/fso-mount.err
rc=$?
echo fsoracle-mount-end > $T/trace_marker
echo 0 > $T/tracing_on
s1=$(iosum)
[ $rc -eq 0 ] && umount $M
echo "statdev=$S"
echo "rc=$rc"
echo "stat0=$s0"
echo "stat1=$s1"
echo "--dmesg--"
dmesg -c
echo "--stderr--"
cat /tmp/fso-mount.err
"""

STAT_FIELDS = ("read_ios", "read_merges", "read_sectors", "read_ticks_ms")


def sample_script(dev: str) -> str:
    """The script of one cold, traced mount of the kernel's block device ``dev``."""
    return SAMPLE_SCRIPT.format(tracing=TRACING, dev=dev, mnt=MNT)


def parse_script_output(text: str) -> tuple[int, dict[str, Any], list[str], str]:
    """rc, block-layer read deltas, dmesg lines, mount's stderr."""
    head, _, rest = text.partition("--dmesg--\n")
    dmesg, _, stderr = rest.partition("--stderr--\n")
    kv = dict(ln.split("=", 1) for ln in head.splitlines() if "=" in ln)
    stat_dev = kv.get("statdev", "").strip()
    s0 = [int(x) for x in kv.get("stat0", "").split()]
    s1 = [int(x) for x in kv.get("stat1", "").split()]
    delta: dict[str, Any] = {
        n: s1[i] - s0[i] for i, n in enumerate(STAT_FIELDS) if i < min(len(s0), len(s1))
    }
    if stat_dev:
        delta["device"] = stat_dev
    return int(kv.get("rc", "-1")), delta, [ln for ln in dmesg.splitlines() if ln.strip()], stderr
