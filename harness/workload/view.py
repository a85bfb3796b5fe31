"""What the outside views share: :class:`OutsideView` (the files of an unmounted image as read
by something other than the kernel)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError


@dataclass
class OutsideView:
    """A view of the files read from the unmounted image by something other than the
    kernel: our btrfs reader, or debugfs for ext4."""

    tool: str
    records: list[dict[str, Any]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    inodes: int = 0
    seconds: float = 0.0


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} is not installed (make deps installs it)")
    return path
