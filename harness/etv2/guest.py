"""The commands the extent-tree-v2 measurements run on the target (a VM's shell and its
btrfs-progs; nothing is pushed)."""

from __future__ import annotations

import shlex

# After the mount: settle the filesystem, dump the tree holding the block group items
# (the state the next transaction starts from), then trace the COWs of that tree while two
# files go in one transaction. ``/tmp/pre.txt`` and ``/tmp/cow.txt`` are fetched after.
_COW = """
set -e
sync; btrfs filesystem sync {mnt}
echo 3 > /proc/sys/vm/drop_caches
btrfs inspect-internal dump-tree -t {tree} {dev} > {pre} 2>/dev/null
T=/sys/kernel/tracing
echo 0 > $T/tracing_on; echo > $T/trace
echo 'root_objectid == {tree}' > $T/events/btrfs/btrfs_cow_block/filter
echo 1 > $T/events/btrfs/btrfs_cow_block/enable
echo 1 > $T/tracing_on
rm {f1} {f2}
sync
echo 0 > $T/tracing_on
echo 0 > $T/events/btrfs/btrfs_cow_block/enable
cat $T/trace > {trace}
"""
DUMP_FILE = "/tmp/pre.txt"
TRACE_FILE = "/tmp/cow.txt"


def cow_script(*, dev: str, mnt: str, tree: int, files: tuple[str, str]) -> str:
    """The COW experiment on the filesystem of ``dev`` mounted at ``mnt``: dump tree
    ``tree`` to :data:`DUMP_FILE`, delete ``files`` (paths below the mount) with the
    ``btrfs_cow_block`` tracepoint on for that tree, its trace to :data:`TRACE_FILE`."""
    f1, f2 = (shlex.quote(f"{mnt}/{f}") for f in files)
    return _COW.format(
        dev=shlex.quote(dev), mnt=shlex.quote(mnt), tree=tree, f1=f1, f2=f2,
        pre=DUMP_FILE, trace=TRACE_FILE,
    )  # fmt: skip


def fallocate_argv(mnt: str, gib: int) -> list[str]:
    """Allocate ``gib`` GiB in one file on the filesystem mounted at ``mnt`` (no data is
    written: the kernel makes one 1 GiB data block group per GiB)."""
    return ["fallocate", "-l", f"{gib}G", f"{mnt}/f"]
