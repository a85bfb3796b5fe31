"""Where a series' model functions and tests are: ``name``, ``Class.method`` or
``path/to/file.py:name`` looked up in the series' model modules (parsed with :mod:`ast`, never
imported), and pytest node ids looked up in their test files."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from harness.series import ROOT, Series


@dataclass
class FunctionRef:
    name: str
    file: str | None  # repository-relative; None when not found
    line: int = 0
    doc: str = ""
    problem: str = ""


def _module_files(module: str) -> list[Path]:
    p = ROOT / module
    if p.is_dir():
        return sorted(p.rglob("*.py"))
    return [p] if p.exists() else []


def _defs(path: Path) -> dict[str, tuple[int, str]]:
    """Top-level functions and classes, and methods as ``Class.method``: line, docstring."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _DEFS:
        _DEFS[key] = _parse_defs(path)
    return _DEFS[key]


_DEFS: dict[tuple[str, int, int], dict[str, tuple[int, str]]] = {}


def _parse_defs(path: Path) -> dict[str, tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: dict[str, tuple[int, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = (node.lineno, ast.get_docstring(node) or "")
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                        key = f"{node.name}.{sub.name}"
                        out[key] = (sub.lineno, ast.get_docstring(sub) or "")
    return out


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line, reST ``code`` as Markdown `code`."""
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "`")


def resolve_function(series: Series, ref: str) -> FunctionRef:
    """``name``, ``Class.method`` or ``path/to/file.py:name``, looked up in the series'
    model modules (or the given file)."""
    if ":" in ref:
        file, name = ref.split(":", 1)
        files = _module_files(file)
    else:
        name = ref
        files = [f for m in series.model for f in _module_files(m.module)]
    hits = []
    for f in files:
        d = _defs(f)
        if name in d:
            hits.append((f, *d[name]))
    if not hits:
        where = ", ".join(str(f.relative_to(ROOT)) for f in files) or "no model module"
        return FunctionRef(name, None, problem=f"not found in {where}")
    if len(hits) > 1:
        many = ", ".join(str(h[0].relative_to(ROOT)) for h in hits)
        return FunctionRef(name, None, problem=f"ambiguous: defined in {many}")
    f, line, doc = hits[0]
    return FunctionRef(name, str(f.relative_to(ROOT)), line, first_paragraph(doc))


def pytest_node_exists(nodeid: str) -> bool:
    """``tests/x.py::test_name`` (parameters stripped) is defined in that file."""
    file, _, name = nodeid.partition("::")
    path = ROOT / file
    if not path.exists():
        return False
    if not name:
        return True
    name = name.split("[", 1)[0]
    parts = name.split("::")
    defs = _defs(path)
    return ".".join(parts) in defs
