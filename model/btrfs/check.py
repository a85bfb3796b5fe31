"""What ``btrfs check`` verifies, as a pure function over an opened image.

(Skeleton: the full set of checks is being written; see ``btrfs_check``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.btrfs.findings import Finding
from model.btrfs.reader import BtrfsImage


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    blocks_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


def btrfs_check(img: BtrfsImage) -> CheckResult:
    """Walk every tree (collecting read errors as findings) and return what is wrong."""
    res = CheckResult()

    def on_error(e: Exception) -> None:
        res.findings.append(Finding("read-error", "tree block", str(e)))

    for root in img.trees():
        for _blk in img.walk(root, on_error=on_error):
            res.blocks_checked += 1
    res.findings[:0] = img.findings
    return res
