"""Pull a measured value out of an experiment's JSON, as series.yaml says.

A value spec is either a *path* string or a mapping naming an *extractor*::

    rows[layout=extent-tree].ours.visited      # dotted path
    {extract: mode, of: layouts.extent-tree.cowed_histogram}
    {extract: median, of: "samples[?layout=skinny-bg-tree][?status=ok].read_block_groups_us",
     scale: 0.001}

Path segments are separated by dots. A segment is a mapping key (letters, digits, ``_``,
``-``; a number indexes a list), optionally followed by selectors:

- ``[N]``: list index; ``[*]``: every element (the rest of the path maps over them);
- ``[k=v]``: the first element whose field ``k`` equals ``v`` (compared as text);
- ``[?k=v]``: every such element (a list; the rest maps over it);
- ``["any key"]``: a mapping key with dots or colons in it (pytest node ids).

Extractors (``extract:``): ``path`` (the default), ``mode`` (the most frequent key of a
histogram mapping, as a number), ``median``, ``min``, ``max``, ``count``, ``ratio``
(``num`` / ``den``, two paths), ``trend`` (``decreasing``/``increasing``/``flat``/``mixed``
over a list of numbers), ``extent_ranges`` (``[start, end]`` of file extent items, with
``compressed: true|false``), ``all_passed`` (every pytest outcome under ``of`` is
``passed``), ``all`` / ``any`` (of a list of booleans), ``less`` (``a`` < ``b``, two
value specs). Every extractor takes ``scale`` (a factor for a numeric result), ``add`` (a
term added after scaling), ``round`` (decimal places) and ``negate`` (for a boolean: a
passing property that asserts "never locked" measures "locked: no").
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Callable, Mapping
from typing import Any


class ExtractError(ValueError):
    """The JSON does not have what the spec asks for."""


_SEG = re.compile(r'^([A-Za-z0-9_\-]*)((?:\[(?:"[^"]*"|[^\]]*)\])*)$')
_SEL = re.compile(r'\[("[^"]*"|[^\]]*)\]')


def split_path(path: str) -> list[str]:
    """Split on dots outside brackets and quotes."""
    out, cur, depth, quoted = [], "", 0, False
    for ch in path:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "[":
            depth += 1
        elif not quoted and ch == "]":
            depth -= 1
        if ch == "." and depth == 0 and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


class _Many(list[Any]):
    """A list produced by ``[*]`` or ``[?k=v]``: later steps map over it."""


def _step_key(node: Any, key: str, path: str) -> Any:
    if isinstance(node, _Many):
        return _Many(_step_key(n, key, path) for n in node)
    if isinstance(node, Mapping):
        if key not in node:
            raise ExtractError(f"{path}: no key {key!r} (have {', '.join(map(str, node))})")
        return node[key]
    if isinstance(node, list) and re.fullmatch(r"-?\d+", key):
        try:
            return node[int(key)]
        except IndexError:
            raise ExtractError(f"{path}: index {key} out of range ({len(node)})") from None
    raise ExtractError(f"{path}: cannot take {key!r} of a {type(node).__name__}")


def _match(elem: Any, field: str, want: str) -> bool:
    if not isinstance(elem, Mapping) or field not in elem:
        return False
    v = elem[field]
    text = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return text == want


def _step_sel(node: Any, sel: str, path: str) -> Any:
    if isinstance(node, _Many) and not (sel == "*" or sel.startswith("?")):
        return _Many(_step_sel(n, sel, path) for n in node)
    if sel.startswith('"'):
        return _step_key(node, sel[1:-1], path)
    if sel == "*":
        if isinstance(node, _Many):
            return _Many(x for n in node for x in n)
        if isinstance(node, Mapping):
            return _Many(node.values())
        if isinstance(node, list):
            return _Many(node)
        raise ExtractError(f"{path}: [*] of a {type(node).__name__}")
    if re.fullmatch(r"-?\d+", sel):
        return _step_key(node, sel, path)
    if "=" in sel:
        many = sel.startswith("?")
        field, want = sel.lstrip("?").split("=", 1)
        items = node if isinstance(node, list) else None
        if items is None:
            raise ExtractError(f"{path}: [{sel}] needs a list, got {type(node).__name__}")
        hits = [e for e in items if _match(e, field, want)]
        if many:
            return _Many(hits)
        if not hits:
            raise ExtractError(f"{path}: no element with {field} = {want}")
        return hits[0]
    raise ExtractError(f"{path}: bad selector [{sel}]")


def get_path(data: Any, path: str) -> Any:
    node = data
    for seg in split_path(path):
        m = _SEG.match(seg)
        if not m:
            raise ExtractError(f"{path}: bad segment {seg!r}")
        name, sels = m.group(1), m.group(2)
        if name:
            node = _step_key(node, name, path)
        for sm in _SEL.finditer(sels):
            node = _step_sel(node, sm.group(1), path)
    return list(node) if isinstance(node, _Many) else node


def _numbers(v: Any, what: str) -> list[float]:
    if not isinstance(v, list) or not v:
        raise ExtractError(f"{what}: no values (expected a non-empty list of numbers, got {v!r})")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise ExtractError(f"{what}: {x!r} is not a number")
        out.append(float(x))
    return out


def _mode(spec: Mapping[str, Any], data: Any) -> Any:
    hist = get_path(data, spec["of"])
    if not isinstance(hist, Mapping) or not hist:
        raise ExtractError(f"{spec['of']}: expected a histogram mapping")
    key = max(hist, key=lambda k: (hist[k], -float(k)))
    return float(key)


def _stat(fn: Callable[[list[float]], float]) -> Callable[[Mapping[str, Any], Any], Any]:
    def run(spec: Mapping[str, Any], data: Any) -> Any:
        return fn(_numbers(get_path(data, spec["of"]), spec["of"]))

    return run


def _count(spec: Mapping[str, Any], data: Any) -> Any:
    v = get_path(data, spec["of"])
    if not isinstance(v, list | Mapping):
        raise ExtractError(f"{spec['of']}: not a list")
    return len(v)


def _ratio(spec: Mapping[str, Any], data: Any) -> Any:
    num = extract(spec["num"], data)
    den = extract(spec["den"], data)
    if not den:
        raise ExtractError(f"{spec['den']}: zero")
    return float(num) / float(den)


def _trend(spec: Mapping[str, Any], data: Any) -> Any:
    xs = _numbers(get_path(data, spec["of"]), spec["of"])
    pairs = list(itertools.pairwise(xs))
    if all(b < a for a, b in pairs):
        return "decreasing"
    if all(b > a for a, b in pairs):
        return "increasing"
    if all(b == a for a, b in pairs):
        return "flat"
    return "mixed"


def _extent_ranges(spec: Mapping[str, Any], data: Any) -> Any:
    exts = get_path(data, spec.get("of", "extents"))
    want = bool(spec.get("compressed", True))
    out = []
    for e in exts:
        compressed = e.get("compression", "none") not in ("none", 0)
        if compressed == want:
            start = int(e["offset"])
            out.append([start, start + int(e["num_bytes"])])
    return out


def _all_passed(spec: Mapping[str, Any], data: Any) -> Any:
    outcomes = get_path(data, spec.get("of", "tests"))
    if not isinstance(outcomes, Mapping) or not outcomes:
        raise ExtractError("no test outcomes")
    names = spec.get("tests") or list(outcomes)
    missing = [n for n in names if n not in outcomes]
    if missing:
        raise ExtractError(f"not run: {', '.join(missing)}")
    return all(outcomes[n] == "passed" for n in names)


def _bools(spec: Mapping[str, Any], data: Any) -> list[bool]:
    v = get_path(data, spec["of"])
    if not isinstance(v, list) or not v or not all(isinstance(x, bool) for x in v):
        raise ExtractError(f"{spec['of']}: expected a non-empty list of true/false, got {v!r}")
    return v


def _less(spec: Mapping[str, Any], data: Any) -> Any:
    a, b = extract(spec["a"], data), extract(spec["b"], data)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
        raise ExtractError(f"less: {a!r} and {b!r} are not both numbers")
    return a < b


EXTRACTORS: dict[str, Callable[[Mapping[str, Any], Any], Any]] = {
    "path": lambda spec, data: get_path(data, spec["of"]),
    "mode": _mode,
    "median": _stat(statistics.median),
    "min": _stat(min),
    "max": _stat(max),
    "count": _count,
    "ratio": _ratio,
    "trend": _trend,
    "extent_ranges": _extent_ranges,
    "all_passed": _all_passed,
    "all": lambda spec, data: all(_bools(spec, data)),
    "any": lambda spec, data: any(_bools(spec, data)),
    "less": _less,
}


def check_spec(spec: Any) -> None:
    """Raise ValueError when a value spec is malformed (series.yaml validation)."""
    if isinstance(spec, str):
        for seg in split_path(spec):
            if not _SEG.match(seg):
                raise ValueError(f"bad path segment {seg!r} in {spec!r}")
        return
    if not isinstance(spec, Mapping):
        raise ValueError(f"a value spec is a path or a mapping, not {spec!r}")
    name = spec.get("extract", "path")
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r} (have {', '.join(EXTRACTORS)})")
    if name == "ratio":
        check_spec(spec.get("num"))
        check_spec(spec.get("den"))
    elif name == "less":
        check_spec(spec.get("a"))
        check_spec(spec.get("b"))
    elif name not in ("extent_ranges", "all_passed", "less") and "of" not in spec:
        raise ValueError(f"extractor {name!r} needs 'of'")
    if "of" in spec:
        check_spec(spec["of"])


def extract(spec: Any, data: Any) -> Any:
    """The value ``spec`` names in ``data`` (raises ExtractError)."""
    if isinstance(spec, str):
        value = get_path(data, spec)
        return value
    name = spec.get("extract", "path")
    value = EXTRACTORS[name](spec, data)
    if "scale" in spec:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExtractError(f"scale of a non-number {value!r}")
        value = value * float(spec["scale"])
    if "add" in spec:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExtractError(f"add to a non-number {value!r}")
        value = value + float(spec["add"])
    if spec.get("negate"):
        if not isinstance(value, bool):
            raise ExtractError(f"negate of a non-boolean {value!r}")
        value = not value
    if "round" in spec and isinstance(value, float):
        value = round(value, int(spec["round"]))
    return value


def describe(spec: Any) -> str:
    """The spec as one line for the report."""
    if isinstance(spec, str):
        return spec
    parts = []
    for k, v in spec.items():
        if k == "extract":
            continue
        parts.append(f"{k}: {describe(v) if isinstance(v, Mapping) else v}")
    return f"{spec.get('extract', 'path')}({', '.join(parts)})"
