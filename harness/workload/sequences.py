"""Each process's op sequence again, from the seed alone: determinism and the in-flight op.

The driver's generator (``driver.Generator``) picks each op from the process's seeded
random stream and its view of its directory, which follows the results its earlier ops
got. Fed the logged results, it must therefore produce exactly the logged ops:
:func:`regenerate` checks that ("the same seed gives the same per-process op sequences"),
and returns for each process the op it would have run next — after a crash, the op that
may have been running when the power went (its log line never written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.workload import driver as drv
from model.fsstate.oplog import Op, OpLog
from model.fsstate.ops import guest_table, table_digest


@dataclass
class Regenerated:
    differences: list[str] = field(default_factory=list)
    next_ops: list[Op] = field(default_factory=list)  # per process, the op after its last
    checked: int = 0


def regenerate(
    log: OpLog, *, next_op: bool = False, table: dict[str, Any] | None = None
) -> Regenerated:
    """Run each process's generator with the seed and sizes of ``log``'s header and the op
    registry's table (``table``: another one the guest was given with ``--op-table``),
    feeding it the logged results; every logged op must be the one generated. With
    ``next_op``, also the op each unfinished process would have run after its last logged
    one. A log whose header names another table (``optable=``) is a difference."""
    h = log.header
    out = Regenerated()
    table = table if table is not None else guest_table()
    if "optable" in h and h["optable"] != table_digest(table):
        out.differences.append(
            f"the run used op table {h['optable']}, the registry's is {table_digest(table)}"
            " (a stale table built into the driver? make ops-table)"
        )
        return out
    try:
        seed, ops, procs = int(h["seed"]), int(h["ops"]), int(h["procs"])
        fs = h["fs"]
        max_size, max_len = int(h.get("max_size", 256 << 10)), int(h.get("max_len", 64 << 10))
    except (KeyError, ValueError) as e:
        out.differences.append(f"the log header lacks what regenerating needs: {e}")
        return out
    by_proc = log.by_proc()
    for proc in range(procs):
        logged = by_proc.get(proc, [])
        gen = drv.Generator(proc, seed, fs, max_size, max_len, True, table)
        seqs = [op.seq for op in logged]
        if seqs != list(range(len(seqs))):
            out.differences.append(f"p{proc}: sequence numbers are not 0..{len(seqs) - 1}")
            continue
        alive = True
        for op in logged:
            name, args = gen.first() if op.seq == 0 else gen.next()
            want = {k: str(v) for k, v in args.items()}
            if (name, want) != (op.name, op.args):
                out.differences.append(
                    f"p{proc}#{op.seq}: logged {op.name} {op.args}, the seed gives {name} {want}"
                )
                alive = False
                break
            out.checked += 1
            result = op.result or ""
            if op.seq == 0:
                if result != "0":
                    alive = False  # the driver stops a process whose directory failed
                    break
                gen.view[gen.top] = "s" if name == "subvol_create" else "d"
            else:
                gen.update(name, args, result)
        if next_op and alive and len(logged) <= ops:
            name, args = gen.first() if not logged else gen.next()
            out.next_ops.append(Op(proc, len(logged), name, {k: str(v) for k, v in args.items()}))
    return out
