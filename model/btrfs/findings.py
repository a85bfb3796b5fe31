"""A finding: one thing found wrong in an image, named precisely enough to go and look."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BtrfsFinding:
    """``code`` is a stable short identifier (``csum-mismatch``, ``bg-used``...), ``what``
    names the broken thing (a block group, a tree block, a key), ``message`` says what is
    wrong. ``bytenr`` is the logical address concerned, when there is one."""

    code: str
    what: str
    message: str
    bytenr: int | None = None
    tree: int | None = None

    def __str__(self) -> str:
        return f"[{self.code}] {self.what}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
