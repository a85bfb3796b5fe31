"""The op registry as the guest driver reads it: a JSON table.

The driver (``driver.py``, standard library only, pushed into guests as one file) cannot
import ``model/fsstate/ops.py``; it reads the registry as data (:func:`~model.fsstate.ops.
guest_table`: each op's arguments and their kinds, filesystems, weight, effects). It has
one built in, between the ``BEGIN OP TABLE`` / ``END OP TABLE`` lines, for callers that
push the driver alone; ``driver.py run --op-table FILE`` takes another (a registry with ops
added at run time, such as a test's).

    python -m harness.workload.opstable --check      exit 1 if the built-in table is stale
    python -m harness.workload.opstable --write      rewrite it from the registry
    python -m harness.workload.opstable --out FILE   write the registry's table to FILE

``make ops-table`` runs ``--write``; ``make lint`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.safeio import write_atomic
from harness.workload.ontarget import DRIVER
from model.fsstate.ops import guest_table

BEGIN = "# BEGIN OP TABLE\n"
END = "# END OP TABLE\n"
WIDTH = 96


def table_text(table: dict[str, Any], indent: int = 0) -> str:
    """JSON with each value on one line when it fits in :data:`WIDTH` columns, else its
    items one per line (so the driver's lines stay short)."""
    flat = json.dumps(table)
    if indent + len(flat) <= WIDTH or not isinstance(table, dict | list) or not table:
        return flat
    pad = " " * (indent + 1)
    if isinstance(table, dict):
        items = [f"{json.dumps(k)}: {table_text(v, indent + 1)}" for k, v in table.items()]
        return "{\n" + ",\n".join(pad + i for i in items) + "\n" + " " * indent + "}"
    items = [table_text(v, indent + 1) for v in table]
    return "[\n" + ",\n".join(pad + i for i in items) + "\n" + " " * indent + "]"


def embedded_block(table: dict[str, Any]) -> str:
    return f'{BEGIN}OPS_JSON = """\n{table_text(table)}\n"""\n{END}'


def with_table(driver_text: str, table: dict[str, Any]) -> str:
    """``driver_text`` with its built-in table replaced by ``table``."""
    start = driver_text.index(BEGIN)
    end = driver_text.index(END) + len(END)
    return driver_text[:start] + embedded_block(table) + driver_text[end:]


def write_table(path: Path, table: dict[str, Any] | None = None) -> Path:
    """Write the registry's table (or ``table``) as JSON for ``--op-table``."""
    write_atomic(path, json.dumps(table or guest_table(), indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="exit 1 if the driver's table is stale")
    g.add_argument("--write", action="store_true", help="rewrite the driver's table")
    g.add_argument("--out", metavar="FILE", help="write the registry's table here")
    a = ap.parse_args(argv)
    if a.out:
        write_table(Path(a.out))
        return 0
    text = DRIVER.read_text()
    want = with_table(text, guest_table())
    if a.check:
        if want != text:
            print(f"{DRIVER}: the built-in op table is stale: run make ops-table", file=sys.stderr)
            return 1
        return 0
    if want != text:
        write_atomic(DRIVER, want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
