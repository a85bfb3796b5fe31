"""Reading a btrfs image the way ``open_ctree()`` does (``fs/btrfs/disk-io.c``).

Order: superblock (primary or mirror N) → ``btrfs_read_sys_array`` → chunk tree
(``btrfs_read_chunk_tree``) → root tree → the trees its ROOT_ITEMs name.

Every tree block read goes through :meth:`BtrfsImage.read_tree_block`, which does what
``read_extent_buffer_pages`` + ``btrfs_validate_extent_buffer`` do: try each copy, verify
the checksum, the header's bytenr, fsid and level, the generation the parent expects, and
run the tree checker. A bad copy with a good mirror is a finding; a block with no good copy
raises :class:`FormatError`.

Work is bounded. Child levels must strictly decrease, so a pointer to the block itself or
to an ancestor fails the level check; a walk never visits the same logical block twice (a
block reached again, through a second parent, is a FormatError); and a walk visits at most
as many blocks as the image holds (size // nodesize, else a FormatError). Each visit reads
each distinct copy at most once, so one walk reads at most
``(size // nodesize) * copies`` blocks, ``copies`` being the most stripes one chunk has on
this device (``blocks_read`` counts them); a caller walking ``n`` trees reads at most
``n`` times that. (Snapshots share blocks, so one block is legitimately read once per tree
that holds it.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from model.blocksource import BlockSource
from model.btrfs import constants as C
from model.btrfs import tree_checker
from model.btrfs.chunks import ChunkMap
from model.btrfs.csum import csum_block
from model.btrfs.findings import BtrfsFinding
from model.btrfs.items import ChunkItem, Item, Key, RootItem
from model.btrfs.superblock import (
    Superblock,
    SuperViolation,
    btrfs_read_sys_array,
    open_ctree_validate_super,
    parse_superblock,
)
from model.btrfs.treeblock import TreeBlock, parse_tree_block
from model.errors import FormatError

ErrorHandler = Callable[[FormatError], None]


@dataclass(frozen=True, slots=True)
class TreeRoot:
    """A tree to walk: its id (ROOT_ITEM key objectid), the key offset (global root id
    under extent-tree-v2, snapshot transid...), its root node and level."""

    objectid: int
    offset: int
    bytenr: int
    level: int
    generation: int

    @property
    def name(self) -> str:
        return tree_name(self.objectid)


def super_finding(v: SuperViolation, mirror: int) -> BtrfsFinding:
    """A superblock rule broken but not fatal for reading: code ``super`` (an error, the
    kernel refuses the mount) or ``super-warning`` (printed, accepted); the message is the
    line the rule's function prints."""
    code = "super" if v.rule.severity == "error" else "super-warning"
    return BtrfsFinding(code, f"superblock (mirror {mirror}) {v.rule.name}", v.message)


def tree_name(objectid: int) -> str:
    return C.TREE_NAMES.get(objectid, str(objectid))


@dataclass(frozen=True, slots=True)
class BlockFact:
    """Per-block facts a walk yields: where, level, owner, generation, item count."""

    logical: int
    physical: int
    level: int
    owner: int
    generation: int
    nritems: int


@dataclass
class TreeStats:
    root: TreeRoot
    nodes: int = 0
    leaves: int = 0
    items: int = 0

    @property
    def height(self) -> int:
        return self.root.level + 1


@dataclass
class BtrfsImage:
    """An opened image. ``findings`` collects what was found wrong while reading."""

    source: BlockSource
    sb: Superblock
    mirror: int
    chunk_map: ChunkMap
    roots: dict[tuple[int, int], TreeRoot] = field(default_factory=dict)
    root_items: dict[tuple[int, int], RootItem] = field(default_factory=dict)
    findings: list[BtrfsFinding] = field(default_factory=list)
    run_tree_checker: bool = True
    blocks_read: int = 0
    _finding_set: set[BtrfsFinding] = field(default_factory=set, repr=False)

    # ---- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        source: BlockSource,
        mirror: int = 0,
        *,
        run_tree_checker: bool = True,
        on_error: ErrorHandler | None = None,
    ) -> BtrfsImage:
        """Open an image: validate the superblock, load the chunk map and the root tree.

        A superblock that breaks a ``fatal`` rule (:mod:`model.btrfs.superblock`) raises
        :class:`FormatError`; the other rules it breaks become findings.

        ``on_error`` receives FormatErrors in the chunk or root tree below their root
        (the subtree is skipped); without it they propagate.
        """
        if not 0 <= mirror < C.SUPER_MIRROR_MAX:
            raise FormatError("superblock", 0, f"mirror {mirror} is not 0, 1 or 2")
        where = C.btrfs_sb_offset(mirror)
        if source.size < where + C.SUPER_INFO_SIZE:
            raise FormatError(
                f"superblock (mirror {mirror})",
                where,
                f"the image ({source.size} bytes) ends before this superblock copy",
            )
        sb = parse_superblock(source.read(where, C.SUPER_INFO_SIZE, "superblock"), where)
        violations = open_ctree_validate_super(sb, mirror, where)
        img = cls(source, sb, mirror, ChunkMap(sb.dev_item.devid))
        img.run_tree_checker = run_tree_checker
        for v in violations:
            img._add_finding(super_finding(v, mirror))
        sys_chunks = btrfs_read_sys_array(sb, where)
        if run_tree_checker:
            for f in tree_checker.check_sys_chunk_array(sb, sys_chunks):
                img._add_finding(f)
        for chunk in sys_chunks:
            img.chunk_map.add(chunk, where)
        img._btrfs_read_chunk_tree(on_error)
        img._read_root_tree(on_error)
        return img

    def _btrfs_read_chunk_tree(self, on_error: ErrorHandler | None) -> None:
        root = TreeRoot(
            C.CHUNK_TREE_OBJECTID,
            0,
            self.sb.chunk_root,
            self.sb.chunk_root_level,
            self.sb.chunk_root_generation,
        )
        self.roots[(C.CHUNK_TREE_OBJECTID, 0)] = root
        for blk in self.walk(root, on_error=on_error):
            if not blk.is_leaf:
                continue
            for slot, ih in enumerate(blk.items):
                if ih.key.type != C.CHUNK_ITEM_KEY:
                    continue
                try:
                    chunk = blk.item(slot)
                    assert isinstance(chunk, ChunkItem)
                    self.chunk_map.add(chunk, blk.physical)
                except FormatError as e:
                    if on_error is None:
                        raise
                    on_error(e)

    def _read_root_tree(self, on_error: ErrorHandler | None) -> None:
        root = TreeRoot(
            C.ROOT_TREE_OBJECTID, 0, self.sb.root, self.sb.root_level, self.sb.generation
        )
        self.roots[(C.ROOT_TREE_OBJECTID, 0)] = root
        for blk in self.walk(root, on_error=on_error):
            if not blk.is_leaf:
                continue
            for slot, ih in enumerate(blk.items):
                if ih.key.type != C.ROOT_ITEM_KEY:
                    continue
                try:
                    ri = blk.item(slot)
                except FormatError as e:
                    if on_error is None:
                        raise
                    on_error(e)
                    continue
                assert isinstance(ri, RootItem)
                k = (ih.key.objectid, ih.key.offset)
                self.root_items[k] = ri
                self.roots[k] = TreeRoot(k[0], k[1], ri.bytenr, ri.level, ri.generation)
        if self.sb.log_root:
            self.roots[(C.TREE_LOG_OBJECTID, 0)] = TreeRoot(
                C.TREE_LOG_OBJECTID,
                0,
                self.sb.log_root,
                self.sb.log_root_level,
                self.sb.generation + 1,
            )

    # ---- trees -----------------------------------------------------------------------

    def tree(self, objectid: int, offset: int | None = None) -> TreeRoot | None:
        """The tree with this id (the lowest key offset if several, as the kernel's
        ``btrfs_global_root`` for global id 0)."""
        if offset is not None:
            return self.roots.get((objectid, offset))
        cands = sorted(k for k in self.roots if k[0] == objectid)
        return self.roots[cands[0]] if cands else None

    def trees(self) -> list[TreeRoot]:
        """Every tree: root and chunk tree first, then the root tree's ROOT_ITEMs in key
        order (dump-tree's order), then the log tree."""
        first = [(C.ROOT_TREE_OBJECTID, 0), (C.CHUNK_TREE_OBJECTID, 0)]
        rest = sorted(k for k in self.roots if k not in first and k[0] != C.TREE_LOG_OBJECTID)
        logs = [k for k in self.roots if k[0] == C.TREE_LOG_OBJECTID]
        return [self.roots[k] for k in first + rest + logs if k in self.roots]

    # ---- blocks ----------------------------------------------------------------------

    def read_tree_block(
        self,
        logical: int,
        *,
        level: int | None = None,
        generation: int | None = None,
        first_key: Key | None = None,
        owner_hint: int | None = None,
    ) -> TreeBlock:
        """``read_tree_block()``: the first copy whose checksum and header hold.

        ``level``, ``generation`` and ``first_key`` are what the parent pointer promises
        (``btrfs_verify_level_key`` and ``verify_parent_transid``)."""
        sb = self.sb
        nodesize = sb.nodesize
        if logical % sb.sectorsize or logical == 0:
            raise FormatError(
                "tree block", 0, f"address not aligned to sectorsize {sb.sectorsize}", logical
            )
        # a copy is read once even if two stripes name the same device range
        copies = list(dict.fromkeys(self.chunk_map.map_read(logical, nodesize)))
        errors: list[FormatError] = []
        for phys in copies:
            try:
                raw = self.source.read(phys, nodesize, "tree block")
                self.blocks_read += 1
                blk = self._validate_extent_buffer(
                    raw, logical, phys, level, generation, first_key, owner_hint
                )
            except FormatError as e:
                errors.append(e)
                continue
            for bad in errors:  # earlier copies were bad, this one is good: findings
                self._add_finding(
                    BtrfsFinding("bad-copy", f"tree block {logical}", str(bad), logical, owner_hint)
                )
            return blk
        if len(errors) == 1:
            raise errors[0]
        raise FormatError(
            "tree block",
            copies[0],
            f"no good copy of {len(copies)}: " + "; ".join(e.message for e in errors),
            logical,
        )

    def _validate_extent_buffer(
        self,
        raw: bytes,
        logical: int,
        phys: int,
        level: int | None,
        generation: int | None,
        first_key: Key | None,
        owner_root: int | None = None,
    ) -> TreeBlock:
        """``btrfs_validate_extent_buffer()`` for one copy."""
        sb = self.sb
        want = csum_block(sb.csum_type, raw)
        if raw[: C.BTRFS_CSUM_SIZE] != want:
            n = sb.csum_size
            raise FormatError(
                "tree block",
                phys,
                f"checksum mismatch: stored {raw[:n].hex()}, computed {want[:n].hex()}",
                logical,
            )
        blk = parse_tree_block(raw, logical, phys)
        hdr = blk.header
        if hdr.bytenr != logical:
            raise FormatError(
                "tree block", phys, f"header bytenr {hdr.bytenr} is not its address", logical
            )
        if hdr.fsid != sb.header_fsid:
            raise FormatError("tree block", phys, "fsid does not match the superblock", logical)
        if level is not None and hdr.level != level:
            raise FormatError(
                "tree block", phys, f"level {hdr.level}, its parent expects {level}", logical
            )
        if generation is not None and hdr.generation != generation:
            raise FormatError(
                "tree block",
                phys,
                f"generation {hdr.generation}, its parent expects {generation}"
                " (parent transid verify failed)",
                logical,
            )
        if first_key is not None and hdr.nritems and blk.first_key() != first_key:
            raise FormatError(
                "tree block",
                phys,
                f"first key {blk.first_key()} differs from the parent's {first_key}",
                logical,
            )
        if self.run_tree_checker:
            for f in tree_checker.check_tree_block(blk, sb, owner_root=owner_root):
                self._add_finding(f)
        return blk

    def _add_finding(self, f: BtrfsFinding) -> None:
        """Record a finding once (a block read again in a later walk finds it again)."""
        if f not in self._finding_set:
            self._finding_set.add(f)
            self.findings.append(f)

    # ---- walking ---------------------------------------------------------------------

    def walk(
        self,
        root: TreeRoot,
        *,
        on_error: ErrorHandler | None = None,
        descend: Callable[[TreeBlock, int], bool] | None = None,
    ) -> Iterator[TreeBlock]:
        """Every block of a tree, depth first in key order (parents before children).

        ``descend(node, slot)`` may return False to skip a child. A block met twice in
        one walk is a loop (FormatError)."""
        seen: set[int] = set()
        limit = max(1, self.source.size // self.sb.nodesize)
        # stack of (logical, expected level, expected generation, expected first key)
        stack: list[tuple[int, int, int | None, Key | None]] = [
            (root.bytenr, root.level, None, None)
        ]
        while stack:
            logical, level, gen, fkey = stack.pop()
            if logical in seen:
                err = FormatError(
                    "tree block",
                    0,
                    f"reached twice in tree {tree_name(root.objectid)}"
                    " (a loop, or a block with two parents)",
                    logical,
                )
                if on_error is None:
                    raise err
                on_error(err)
                continue
            seen.add(logical)
            if len(seen) > limit:
                raise FormatError(
                    f"tree {tree_name(root.objectid)}",
                    0,
                    f"more than {limit} blocks: more than the image can hold",
                )
            try:
                blk = self.read_tree_block(
                    logical,
                    level=level,
                    generation=gen,
                    first_key=fkey,
                    owner_hint=root.objectid,
                )
            except FormatError as e:
                if on_error is None:
                    raise
                on_error(e)
                continue
            yield blk
            if blk.is_leaf:
                continue
            for slot in range(len(blk.ptrs) - 1, -1, -1):
                if descend is not None and not descend(blk, slot):
                    continue
                p = blk.ptrs[slot]
                stack.append((p.blockptr, blk.level - 1, p.generation, p.key))

    def iter_items(
        self, root: TreeRoot, *, on_error: ErrorHandler | None = None
    ) -> Iterator[tuple[TreeBlock, int, Item]]:
        """(leaf, slot, decoded item) for every item of a tree, in key order."""
        for blk in self.walk(root, on_error=on_error):
            if not blk.is_leaf:
                continue
            for slot in range(len(blk.items)):
                try:
                    item = blk.item(slot)
                except FormatError as e:
                    if on_error is None:
                        raise
                    on_error(e)
                    continue
                yield blk, slot, item

    def tree_stats(self, root: TreeRoot, on_error: ErrorHandler | None = None) -> TreeStats:
        st = TreeStats(root)
        for blk in self.walk(root, on_error=on_error):
            if blk.is_leaf:
                st.leaves += 1
                st.items += blk.nritems
            else:
                st.nodes += 1
        return st

    def block_facts(self, root: TreeRoot) -> Iterator[BlockFact]:
        for blk in self.walk(root):
            h = blk.header
            yield BlockFact(blk.logical, blk.physical, h.level, h.owner, h.generation, h.nritems)

    @property
    def block_group_root(self) -> TreeRoot | None:
        """The tree ``btrfs_read_block_groups`` reads: tree 11 with BLOCK_GROUP_TREE, else
        the extent tree (global root 0)."""
        if self.sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE:
            return self.tree(C.BLOCK_GROUP_TREE_OBJECTID)
        return self.tree(C.EXTENT_TREE_OBJECTID)
