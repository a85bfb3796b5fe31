"""What the outside views share: :class:`OutsideView` (the files of an unmounted image as read
by something other than the kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OutsideView:
    """A view of the files read from the unmounted image by something other than the
    kernel: our btrfs reader, or debugfs for ext4."""

    tool: str
    records: list[dict[str, Any]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    inodes: int = 0
    seconds: float = 0.0
