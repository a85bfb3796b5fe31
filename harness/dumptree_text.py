"""A small parser of ``btrfs inspect-internal dump-tree`` text for the extent, free space
and block group trees: blocks, their levels, keys, item sizes and children.

It is deliberately independent of fsoracle's reader (:mod:`model.btrfs.reader`): tests and
experiments use it as the outside view of a tree that btrfs-progs (or a guest's btrfs-progs)
printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# key type names dump-tree prints in these trees (include/uapi/linux/btrfs_tree.h)
TYPES = {
    "EXTENT_ITEM": 168,
    "METADATA_ITEM": 169,
    "EXTENT_OWNER_REF": 172,
    "TREE_BLOCK_REF": 176,
    "EXTENT_DATA_REF": 178,
    "SHARED_BLOCK_REF": 182,
    "SHARED_DATA_REF": 184,
    "BLOCK_GROUP_ITEM": 192,
    "UNKNOWN.193": 193,
    "FREE_SPACE_INFO": 198,
    "FREE_SPACE_EXTENT": 199,
    "FREE_SPACE_BITMAP": 200,
}


@dataclass
class Blk:
    addr: int
    level: int
    keys: list[tuple[int, int, int]] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # leaf item sizes


def parse_key(s: str) -> tuple[int, int, int]:
    o, t, off = s.split()
    return int(o), TYPES[t] if t in TYPES else int(t.split(".")[-1]), int(off)


def parse_dump_tree(text: str) -> tuple[int, dict[int, Blk]]:
    """(root address, blocks by address) of the first tree in ``text``."""
    blocks: dict[int, Blk] = {}
    root = None
    cur = None
    for line in text.splitlines():
        m = re.match(r"^(node|leaf) (\d+) (?:level (\d+) )?items", line)
        if m:
            addr = int(m.group(2))
            if addr in blocks:  # dump-tree prints a second line per block (flags)
                continue
            cur = Blk(addr, int(m.group(3) or 0))
            blocks[addr] = cur
            root = addr if root is None else root
            continue
        m = re.match(r"^\tkey \((.*)\) block (\d+) gen", line)
        if m and cur is not None:
            cur.keys.append(parse_key(m.group(1)))
            cur.children.append(int(m.group(2)))
            continue
        m = re.match(r"^\titem \d+ key \((.*)\) itemoff \d+ itemsize (\d+)", line)
        if m and cur is not None:
            cur.keys.append(parse_key(m.group(1)))
            cur.sizes.append(int(m.group(2)))
    if root is None:
        raise ValueError("no tree block in the dump-tree text")
    return root, blocks


def path_to(root: int, blocks: dict[int, Blk], key: tuple[int, int, int]) -> list[int]:
    """Addresses from the root to the leaf holding ``key`` (the last child whose first key
    is <= key at each node)."""
    out = [root]
    addr = root
    while blocks[addr].level > 0:
        b = blocks[addr]
        idx = max([i for i, k in enumerate(b.keys) if k <= key], default=0)
        addr = b.children[idx]
        out.append(addr)
    if key not in blocks[addr].keys:
        raise KeyError(f"{key} is not in leaf {addr}")
    return out
