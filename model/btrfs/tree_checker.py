"""The kernel's tree-checker (``fs/btrfs/tree-checker.c``), applied to every block read.

Each violation is a :class:`~model.btrfs.findings.Finding` with code ``tree-checker``.
Function names follow the kernel's (``btrfs_check_leaf``, ``btrfs_check_node``,
``check_leaf_item``...).
"""

from __future__ import annotations

from model.btrfs import constants as C
from model.btrfs.findings import Finding
from model.btrfs.superblock import Superblock
from model.btrfs.treeblock import TreeBlock


def _finding(blk: TreeBlock, msg: str) -> Finding:
    what = f"{'leaf' if blk.is_leaf else 'node'} {blk.logical} (owner {blk.header.owner})"
    return Finding("tree-checker", what, msg, blk.logical, blk.header.owner)


def btrfs_check_leaf(blk: TreeBlock, sb: Superblock) -> list[Finding]:
    """``btrfs_check_leaf()``: key order and item layout."""
    out: list[Finding] = []
    data_end = sb.nodesize - C.BTRFS_HEADER_SIZE
    prev = None
    for slot, ih in enumerate(blk.items):
        if prev is not None and not prev < ih.key:
            out.append(
                _finding(blk, f"bad key order, slot {slot - 1} {prev} >= slot {slot} {ih.key}")
            )
        want_end = data_end if slot == 0 else blk.items[slot - 1].offset
        if ih.offset + ih.size != want_end:
            out.append(
                _finding(
                    blk,
                    f"unexpected item end, slot {slot} have "
                    f"{ih.offset + ih.size} expect {want_end}",
                )
            )
        prev = ih.key
    return out


def btrfs_check_node(blk: TreeBlock, sb: Superblock) -> list[Finding]:
    """``btrfs_check_node()``: key order and pointer alignment."""
    out: list[Finding] = []
    prev = None
    for slot, p in enumerate(blk.ptrs):
        if p.blockptr == 0 or p.blockptr % sb.sectorsize:
            out.append(_finding(blk, f"invalid child pointer {p.blockptr} in slot {slot}"))
        if prev is not None and not prev < p.key:
            out.append(
                _finding(blk, f"bad key order, slot {slot - 1} {prev} >= slot {slot} {p.key}")
            )
        prev = p.key
    return out


def check_tree_block(blk: TreeBlock, sb: Superblock) -> list[Finding]:
    """Entry point used by the reader for every block read."""
    if blk.is_leaf:
        return btrfs_check_leaf(blk, sb)
    return btrfs_check_node(blk, sb)
