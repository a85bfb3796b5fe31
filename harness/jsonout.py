"""Turn results (dataclasses, keys, bytes) into JSON-ready values, fast enough for a
million items."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name != "raw")
        _FIELDS[cls] = names
    return names


def to_jsonable(obj: Any) -> Any:
    cls = type(obj)
    if cls is int or cls is str or cls is bool or cls is float or obj is None:
        return obj
    if hasattr(cls, "__dataclass_fields__"):
        return {n: to_jsonable(getattr(obj, n)) for n in _fields(cls)}
    if hasattr(obj, "_asdict"):  # named tuples (keys)
        return {n: to_jsonable(v) for n, v in obj._asdict().items()}
    if cls is bytes or cls is bytearray:
        return obj.hex()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    return obj


def dumps(obj: Any, *, pretty: bool = False) -> str:
    """JSON text; compact by default (the C encoder: large dumps stay fast)."""
    if pretty:
        return json.dumps(to_jsonable(obj), indent=2)
    return json.dumps(to_jsonable(obj), separators=(",", ":"))
