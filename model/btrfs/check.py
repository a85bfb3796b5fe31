"""What ``btrfs check`` verifies, as a pure function over an opened image.

:func:`btrfs_check` follows btrfs-progs' ``check_chunks_and_extents()`` (original mode,
``check/main.c``): walk every tree from the superblock's roots and the root tree's
ROOT_ITEMs, each block once, recording what the extent tree declares and what the trees
reference; then ``check_dev_extents``, ``check_chunks``, ``check_extent_refs``,
``check_block_groups``, ``check_devices``; then the free space tree
(``validate_free_space_cache``, see :mod:`model.btrfs.check_free_space`) and the csum tree
(``check_csums``).

Before the walk: the superblock rules (:mod:`model.btrfs.superblock`: the kernel's, which
the reader reported, and btrfs-progs' own), the trees open_ctree needs, and every tree's
root block against the generation its referrer records. After it, besides the above:
device sizes and counts (``check_device_sizes``) and the subvolume ROOT_ITEMs against the
extent tree (``check_root_items``).

Order of the walk: the extent tree(s) first (the FULL_BACKREF flags of the blocks met
later come from their extent items), then the root and chunk trees and the other trees in
key order, the free space tree(s) last (their items are compared with the extent items as
they stream past).

Verdicts mirror btrfs check's exit status:

* a tree block with one bad copy and a good one (DUP metadata) is a *warning*: btrfs check
  prints "checksum verify failed" and reads the good copy, exit 0; with no good copy it is
  a finding (exit 1);
* a dev extent inside the first 1 MiB is a warning (the kernel's
  ``verify_one_dev_extent`` only warns);
* a block group whose flags differ from its chunk's type, or a chunk without a block
  group, is a finding; btrfs check's original mode prints it but drops the error (exit 0:
  ``check_chunks_and_extents`` lets ``check_devices`` overwrite ``check_chunks``'s
  result) while lowmem mode and the kernel (``read_one_block_group``,
  ``check_chunk_block_group_mappings``) reject it; we follow lowmem and the kernel.

Not walked: the log tree (btrfs check does not replay it; its blocks have no extent
items).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from model.btrfs import constants as C
from model.btrfs.blockgroups import block_group_from_item
from model.btrfs.check_chunks import (
    BgRecord,
    check_chunks,
    check_dev_extents,
    check_device_sizes,
    check_devices,
    check_type_with_root,
)
from model.btrfs.check_extents import BgAccount, ExtentScan, check_block_groups
from model.btrfs.check_free_space import BgRange, FreeSpaceTreeChecker
from model.btrfs.csum import btrfs_csum_data
from model.btrfs.findings import BtrfsFinding
from model.btrfs.intervals import Interval, merge_intervals, subtract_intervals
from model.btrfs.items import (
    ChunkItem,
    DevExtent,
    DevItem,
    ExtentItem,
    FileExtentItem,
    Key,
    KeyedRef,
)
from model.btrfs.reader import BtrfsImage, TreeRoot, super_finding, tree_name
from model.btrfs.superblock import (
    PROGS_CHECK_SUPER_RULES,
    SuperFacts,
    apply_super_rules,
    device_list_add,
)
from model.btrfs.treeblock import TreeBlock
from model.errors import FormatError

# codes of reader findings that btrfs check does not count as errors
WARNING_CODES = frozenset({"bad-copy", "super-warning"})


@dataclass
class BtrfsCheckResult:
    """``findings``: what btrfs check counts as errors (exit 1); ``warnings``: what it
    reports and survives (exit 0); ``blocks_checked``: tree blocks walked."""

    findings: list[BtrfsFinding] = field(default_factory=list)
    blocks_checked: int = 0
    warnings: list[BtrfsFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def read_error_finding(e: FormatError, tree: int | None) -> BtrfsFinding:
    """A block or item that could not be read (no good copy, bad header, loop...)."""
    what = f"tree block {e.logical}" if e.logical is not None else e.structure
    return BtrfsFinding("read-error", what, str(e), e.logical, tree)


@dataclass
class _Walk:
    """The state of one ``btrfs_check`` run."""

    img: BtrfsImage
    verify_data_csums: bool
    res: BtrfsCheckResult = field(default_factory=BtrfsCheckResult)
    seen: set[int] = field(default_factory=set)
    _reported: set[tuple[str, str, str]] = field(default_factory=set)
    _reader_taken: int = 0
    scan: ExtentScan = field(init=False)
    bgs: list[BgRecord] = field(default_factory=list)
    chunks: dict[int, ChunkItem] = field(default_factory=dict)
    devices: dict[int, DevItem] = field(default_factory=dict)
    dev_extents: list[tuple[Key, DevExtent]] = field(default_factory=list)
    # per csum root: under extent-tree-v2 each global root's csum tree is ordered on its own
    csum_ranges: dict[int, list[Interval]] = field(default_factory=dict)
    csum_items: list[tuple[int, int, int]] = field(default_factory=list)  # leaf, slot, start
    fst: FreeSpaceTreeChecker | None = None
    # root id -> [level, bytenr, generation, count] of its highest tree blocks whose first
    # inline backref is a TREE_BLOCK_REF to it (build_roots_info_cache)
    roots_info: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sb = self.img.sb
        self.scan = ExtentScan(sb.nodesize, sb.sectorsize, sb.generation, self.report)

    # ---- reporting -----------------------------------------------------------------------

    def report(self, f: BtrfsFinding) -> None:
        k = (f.code, f.what, f.message)
        if k not in self._reported:
            self._reported.add(k)
            self.res.findings.append(f)

    def warn(self, f: BtrfsFinding) -> None:
        k = (f.code, f.what, f.message)
        if k not in self._reported:
            self._reported.add(k)
            self.res.warnings.append(f)

    def take_reader_findings(self) -> None:
        """Move what the reader collected (tree checker, bad copies) into the result."""
        for f in self.img.findings[self._reader_taken :]:
            (self.warn if f.code in WARNING_CODES else self.report)(f)
        self._reader_taken = len(self.img.findings)

    # ---- walking -------------------------------------------------------------------------

    def walk_order(self) -> list[TreeRoot]:
        """Extent trees, root tree, chunk tree, other trees in key order, free space
        trees last; the log tree is not walked (btrfs check does not replay it)."""
        trees = self.img.trees()
        ext = [r for r in trees if r.objectid == C.EXTENT_TREE_OBJECTID]
        fst = [r for r in trees if r.objectid == C.FREE_SPACE_TREE_OBJECTID]
        rest = [
            r for r in trees if r not in ext and r not in fst and r.objectid != C.TREE_LOG_OBJECTID
        ]
        return ext + rest + fst

    def block_is_full_backref(self, blk: TreeBlock, root: TreeRoot) -> bool:
        """``run_next_block()``'s FULL_BACKREF decision: the block's extent item flags
        (else ``calc_extent_flag``), corrected for relocation trees and for a block
        reached from its owner after the last snapshot (both reported)."""
        hdr = blk.header
        reloc_hdr = bool(hdr.flags & C.HEADER_FLAG_RELOC)
        flags = self.scan.meta_flags.get(blk.logical)
        if flags is not None:
            full = bool(flags & C.BLOCK_FLAG_FULL_BACKREF)
        else:
            full = not (
                root.objectid < C.FIRST_FREE_OBJECTID
                or blk.logical == root.bytenr
                or (not reloc_hdr and hdr.owner == root.objectid)
            )
        what = f"tree block {blk.logical}"
        if full:
            ri = self.img.root_items.get((root.objectid, root.offset))
            last_snapshot = ri.last_snapshot if ri else 0
            if (
                root.objectid != C.TREE_RELOC_OBJECTID
                and root.objectid == hdr.owner
                and not reloc_hdr
                and hdr.generation > last_snapshot
            ):
                self.report(
                    BtrfsFinding(
                        "bad-full-backref",
                        what,
                        f"FULL_BACKREF set but reached from its owner {hdr.owner} with "
                        f"generation {hdr.generation} > last_snapshot {last_snapshot}",
                        blk.logical,
                        root.objectid,
                    )
                )
                full = False
        elif root.objectid == C.TREE_RELOC_OBJECTID or reloc_hdr:
            self.report(
                BtrfsFinding(
                    "bad-full-backref",
                    what,
                    "relocation tree block without FULL_BACKREF",
                    blk.logical,
                    root.objectid,
                )
            )
            full = True
        return full

    def walk_tree(self, root: TreeRoot) -> None:
        img = self.img
        ri = img.root_items.get((root.objectid, root.offset))
        drop_key: Key | None = None
        drop_level = 0
        if ri is not None and ri.drop_progress.objectid != 0:
            drop_key, drop_level = ri.drop_progress, ri.drop_level

        # add_root_to_pending(): the root node's own reference
        if root.objectid == C.TREE_RELOC_OBJECTID:
            self.scan.add_tree_ref(root.bytenr, root.bytenr, 0)
        else:
            self.scan.add_tree_ref(root.bytenr, 0, root.objectid)
        if root.bytenr in self.seen:
            return

        def first_slot(blk: TreeBlock) -> int:
            """Slots a dropping tree no longer references (``is_dropped_key``)."""
            if drop_key is None or not drop_level or blk.level < drop_level:
                return 0
            keys = [p.key for p in blk.ptrs]
            if blk.level > drop_level:
                i = bisect.bisect_left(keys, drop_key)
                if i < len(keys) and keys[i] == drop_key:
                    return i
                return max(i - 1, 0)
            return bisect.bisect_left(keys, drop_key)

        def descend(blk: TreeBlock, slot: int) -> bool:
            return slot >= first_slot(blk) and blk.ptrs[slot].blockptr not in self.seen

        def on_error(e: FormatError) -> None:
            self.report(read_error_finding(e, root.objectid))

        try:
            for blk in img.walk(root, on_error=on_error, descend=descend):
                self.process_block(blk, root, first_slot)
        except FormatError as e:  # a walk that cannot go on (more blocks than the image)
            self.report(read_error_finding(e, root.objectid))

    def process_block(
        self, blk: TreeBlock, root: TreeRoot, first_slot: Callable[[TreeBlock], int]
    ) -> None:
        """``run_next_block()`` for one block met for the first time: its children's
        references (a node) or its items (a leaf)."""
        if blk.logical in self.seen:
            return
        self.seen.add(blk.logical)
        self.res.blocks_checked += 1
        full = self.block_is_full_backref(blk, root)
        if blk.is_leaf:
            self.process_leaf(blk, root, full)
            return
        owner = blk.header.owner
        for slot in range(first_slot(blk), len(blk.ptrs)):
            child = blk.ptrs[slot].blockptr
            if full:
                self.scan.add_tree_ref(child, blk.logical, 0)
            else:
                self.scan.add_tree_ref(child, 0, owner)

    # ---- leaves --------------------------------------------------------------------------

    def process_leaf(self, blk: TreeBlock, root: TreeRoot, full: bool) -> None:
        img = self.img
        sb = img.sb
        owner = blk.header.owner
        raw = blk.raw
        for slot, ih in enumerate(blk.items):
            key = ih.key
            t = key.type
            if t == C.EXTENT_DATA_KEY:
                self.process_file_extent(blk, slot, root, full)
                continue
            if t not in _INTERESTING:
                continue
            wrong = check_type_with_root(sb, owner, t)
            if wrong is not None:
                self.report(
                    BtrfsFinding(
                        "item-wrong-tree",
                        f"key {key} in leaf {blk.logical}",
                        wrong + " (ignored)",
                        key.objectid if t in _BYTENR_KEYS else blk.logical,
                        owner,
                    )
                )
                continue
            if t in (C.FREE_SPACE_INFO_KEY, C.FREE_SPACE_EXTENT_KEY, C.FREE_SPACE_BITMAP_KEY):
                if self.fst is not None and root.objectid == C.FREE_SPACE_TREE_OBJECTID:
                    start = C.BTRFS_HEADER_SIZE + ih.offset
                    self.fst.feed(blk.logical, key, raw[start : start + ih.size])
                continue
            if t == C.ROOT_ITEM_KEY:
                continue  # the reader has the root items
            if t == C.EXTENT_CSUM_KEY:
                if root.objectid == C.CSUM_TREE_OBJECTID:
                    self.process_csum_item(blk, slot, root.offset)
                continue
            if t in (C.EXTENT_ITEM_KEY, C.METADATA_ITEM_KEY) and owner != root.objectid:
                continue
            try:
                item = blk.item(slot)
            except FormatError as e:
                self.report(read_error_finding(e, owner))
                continue
            if isinstance(item, ExtentItem):
                self.scan.process_extent_item(key, item)
                self.note_root_block(key, item)
            elif isinstance(item, KeyedRef):
                if owner == C.EXTENT_TREE_OBJECTID:
                    self.scan.process_keyed_ref(key, item)
            elif t in (C.BLOCK_GROUP_ITEM_KEY, C.SKINNY_BLOCK_GROUP_ITEM_KEY):
                bg = block_group_from_item(img, item, owner, blk.logical)
                if bg is not None:
                    self.bgs.append(
                        BgRecord(bg.start, bg.length, bg.flags, bg.used, owner, bg.key_type)
                    )
            elif isinstance(item, ChunkItem):
                self.chunks[key.offset] = item
            elif isinstance(item, DevItem):
                self.devices[key.offset] = item
            elif isinstance(item, DevExtent):
                self.dev_extents.append((key, item))

    def process_file_extent(self, blk: TreeBlock, slot: int, root: TreeRoot, full: bool) -> None:
        """``run_next_block()`` for an EXTENT_DATA item: a regular or prealloc extent
        with a disk_bytenr references that data extent (by the leaf's owner, inode and
        ``key.offset - offset``; by the leaf itself when it is FULL_BACKREF)."""
        ih = blk.items[slot]
        key = ih.key
        what = f"file extent item {key} in leaf {blk.logical}"
        if ih.size < FileExtentItem.HEAD.size:
            self.report(
                BtrfsFinding(
                    "file-extent",
                    what,
                    f"item size {ih.size} is smaller than {FileExtentItem.HEAD.size}",
                    blk.logical,
                    blk.header.owner,
                )
            )
            return
        start = C.BTRFS_HEADER_SIZE + ih.offset
        ftype = blk.raw[start + FileExtentItem.TYPE_OFFSET]
        if ftype == C.FILE_EXTENT_INLINE:
            return
        if ih.size != FileExtentItem.SIZE:
            self.report(
                BtrfsFinding(
                    "file-extent",
                    what,
                    f"item size {ih.size}, a regular/prealloc extent is {FileExtentItem.SIZE}",
                    blk.logical,
                    blk.header.owner,
                )
            )
            return
        if key.offset % self.img.sb.sectorsize:
            self.report(
                BtrfsFinding(
                    "file-extent",
                    what,
                    f"file offset {key.offset} is not aligned to {self.img.sb.sectorsize}",
                    blk.logical,
                    blk.header.owner,
                )
            )
            return
        disk_bytenr, disk_num_bytes, offset, _ = FileExtentItem.BODY.unpack_from(
            blk.raw, start + FileExtentItem.HEAD.size
        )
        if disk_bytenr == 0:
            return
        if full:
            self.scan.add_data_ref(disk_bytenr, disk_num_bytes, blk.logical, 0, 0, 0)
        else:
            self.scan.add_data_ref(
                disk_bytenr,
                disk_num_bytes,
                0,
                blk.header.owner,
                key.objectid,
                key.offset - offset,
            )

    def process_csum_item(self, blk: TreeBlock, slot: int, global_root: int = 0) -> None:
        """``check_csum_root()``: csum items do not overlap and are not too large. Ranges are
        compared within one csum tree (``global_root``: its root key offset; extent-tree-v2
        has one csum tree per global root, each in key order of its own)."""
        sb = self.img.sb
        ranges = self.csum_ranges.setdefault(global_root, [])
        ih = blk.items[slot]
        key = ih.key
        n = ih.size // sb.csum_size
        data_len = n * sb.sectorsize
        what = f"csum item {key} in leaf {blk.logical}"
        if ranges and key.offset < ranges[-1][1]:
            self.report(
                BtrfsFinding(
                    "csum-overlap",
                    what,
                    f"csum range starts at {key.offset}, before the previous one ends at "
                    f"{ranges[-1][1]}",
                    key.offset,
                    C.CSUM_TREE_OBJECTID,
                )
            )
        max_entries = (
            (sb.nodesize - C.BTRFS_HEADER_SIZE - 2 * C.BTRFS_ITEM_SIZE) // sb.csum_size
        ) - 1
        if n > max_entries:
            self.report(
                BtrfsFinding(
                    "csum-too-large",
                    what,
                    f"{n} checksums, at most {max_entries} fit",
                    key.offset,
                    C.CSUM_TREE_OBJECTID,
                )
            )
        end = key.offset + data_len
        if ranges and key.offset == ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], end)
        elif ranges and key.offset < ranges[-1][1]:
            ranges[-1] = (
                ranges[-1][0],
                max(end, ranges[-1][1]),
            )
        else:
            ranges.append((key.offset, end))
        if self.verify_data_csums:
            self.check_extent_csums(blk, slot)

    def check_extent_csums(self, blk: TreeBlock, slot: int) -> None:
        """``check_extent_csums()`` (``--check-data-csum``): every copy of every sector a
        csum item covers hashes to its stored checksum."""
        img = self.img
        sb = img.sb
        ih = blk.items[slot]
        base = C.BTRFS_HEADER_SIZE + ih.offset
        n = ih.size // sb.csum_size
        bad: list[int] = []
        for i in range(n):
            logical = ih.key.offset + i * sb.sectorsize
            want = blk.raw[base + i * sb.csum_size : base + (i + 1) * sb.csum_size]
            try:
                copies = img.chunk_map.map_read(logical, sb.sectorsize)
                for phys in copies:
                    data = img.source.read(phys, sb.sectorsize, "data")
                    if btrfs_csum_data(sb.csum_type, data)[: sb.csum_size] != want:
                        bad.append(logical)
                        break
            except FormatError as e:
                self.report(read_error_finding(e, C.CSUM_TREE_OBJECTID))
                return
        if bad:
            self.report(
                BtrfsFinding(
                    "data-csum",
                    f"csum item {ih.key}",
                    f"{len(bad)} sector(s) do not match their checksum, first at {bad[0]}",
                    bad[0],
                    C.CSUM_TREE_OBJECTID,
                )
            )

    # ---- before the walk -----------------------------------------------------------------

    def check_super_progs(self) -> None:
        """btrfs-progs' own superblock checks the kernel does not make
        (:data:`~model.btrfs.superblock.PROGS_CHECK_SUPER_RULES`); the kernel's rules came
        with the reader's findings."""
        img = self.img
        facts = SuperFacts(img.sb, img.mirror, device_list_add(img.sb))
        for v in apply_super_rules(PROGS_CHECK_SUPER_RULES, facts):
            f = super_finding(v, img.mirror)
            (self.report if v.rule.severity == "error" else self.warn)(f)

    def check_required_roots(self) -> None:
        """The trees open_ctree cannot do without: the extent tree
        (``btrfs_read_roots``: "failed to read root (objectid=%llu)"; btrfs check: "could
        not setup extent tree") and, with compat_ro BLOCK_GROUP_TREE, the block group tree
        (``load_global_roots``/``btrfs_read_roots``; btrfs check: "couldn't load block
        group tree")."""
        img = self.img
        need = [C.EXTENT_TREE_OBJECTID]
        if img.sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE:
            need.append(C.BLOCK_GROUP_TREE_OBJECTID)
        for oid in need:
            if img.tree(oid) is None:
                self.report(
                    BtrfsFinding(
                        "root-missing",
                        f"tree {oid} ({tree_name(oid)})",
                        "the root tree has no ROOT_ITEM for it",
                        None,
                        C.ROOT_TREE_OBJECTID,
                    )
                )

    def verify_root_transids(self) -> None:
        """Every tree's root block against the generation its referrer records
        (``verify_parent_transid`` as ``load_super_root`` and ``read_tree_root_path`` call
        it): the root tree against the superblock's generation, the chunk tree against
        chunk_root_generation, the log tree against generation + 1, every other tree
        against its ROOT_ITEM's generation (0: not checked, as there). btrfs check prints
        "parent transid verify failed on %llu wanted %llu found %llu" and fails; the
        kernel refuses the mount. A root block that cannot be read is a read error (the
        log tree, which is not walked, is read here only)."""
        img = self.img
        for root in img.trees():
            try:
                blk = img.read_tree_block(root.bytenr, level=root.level, owner_hint=root.objectid)
            except FormatError as e:
                self.report(read_error_finding(e, root.objectid))
                continue
            found = blk.header.generation
            if root.generation and found != root.generation:
                self.report(
                    BtrfsFinding(
                        "parent-transid",
                        f"tree block {root.bytenr} (root of tree {root.name})",
                        f"parent transid verify failed on {root.bytenr} wanted "
                        f"{root.generation} found {found}",
                        root.bytenr,
                        root.objectid,
                    )
                )

    def note_root_block(self, key: Key, item: ExtentItem) -> None:
        """``build_roots_info_cache()``: a tree block extent whose first inline backref is
        a TREE_BLOCK_REF names a candidate root node of that tree; keep the highest level
        (and how many blocks share it)."""
        if key.type == C.EXTENT_ITEM_KEY and not item.flags & C.EXTENT_FLAG_TREE_BLOCK:
            return
        level = key.offset if key.type == C.METADATA_ITEM_KEY else item.tree_block_level
        if level is None or not item.inline_refs:
            return
        ref = item.inline_refs[0]
        if ref.type != C.TREE_BLOCK_REF_KEY:
            return
        rii = self.roots_info.get(ref.offset)
        if rii is None or level > rii[0]:
            self.roots_info[ref.offset] = [level, key.objectid, item.generation, 1]
        elif level == rii[0]:
            rii[3] += 1

    # ---- after the walk ------------------------------------------------------------------

    def check_root_items(self) -> None:
        """btrfs check's "checking root items" (``repair_root_items()`` /
        ``maybe_repair_root_item()``, read-only): the ROOT_ITEM of every subvolume and of
        the data relocation tree (objectid >= 256, not the tree relocation tree) names the
        node the extent tree holds for it: the highest-level tree block whose first inline
        backref is a TREE_BLOCK_REF to that root, with that bytenr, level and extent
        generation. The kernel does not compare them (it reads the root the ROOT_ITEM
        names); btrfs check fails ("Found %d roots with an outdated root item"), so do we.
        Skipped under extent-tree-v2, as there."""
        img = self.img
        if img.sb.incompat_flags & C.INCOMPAT_EXTENT_TREE_V2:
            return
        for (oid, off), ri in sorted(img.root_items.items()):
            if oid < C.FIRST_FREE_OBJECTID or oid == C.TREE_RELOC_OBJECTID:
                continue
            what = f"root item ({oid} {C.ROOT_ITEM_KEY} {off})"
            rii = self.roots_info.get(oid)
            if rii is None:
                msg = f"could not find extent items for root {oid}"
            elif rii[3] != 1:
                msg = f"could not find btree root extent for root {oid}"
            else:
                level, bytenr, gen, _ = rii
                if (ri.bytenr, ri.level, ri.generation) == (bytenr, level, gen):
                    continue
                if ri.generation > gen:
                    msg = (
                        f"root {oid} has a root item with a more recent gen ({ri.generation}) "
                        f"compared to the found root node ({gen})"
                    )
                else:
                    msg = (
                        f"root item for root {oid}, current bytenr {ri.bytenr}, current gen "
                        f"{ri.generation}, current level {ri.level}, new bytenr {bytenr}, new "
                        f"gen {gen}, new level {level}"
                    )
            self.report(BtrfsFinding("root-item", what, msg, None, C.ROOT_TREE_OBJECTID))

    def start_free_space_check(self) -> None:
        """Set up the free space tree checker once the extent tree and the block groups
        are known (the free space tree is walked last)."""
        sb = self.img.sb
        if not sb.compat_ro_flags & C.COMPAT_RO_FREE_SPACE_TREE:
            return
        bgs = sorted({(b.start, b.length, b.flags) for b in self.bgs if self.bg_in_right_tree(b)})
        self.fst = FreeSpaceTreeChecker(
            sb.sectorsize,
            [BgRange(*b) for b in bgs],
            self.chunks,
            self.scan.used_intervals(),
            self.report,
        )

    def bg_in_right_tree(self, bg: BgRecord) -> bool:
        return check_type_with_root(self.img.sb, bg.tree, bg.key_type) is None

    def check_csums(self) -> None:
        """``check_csums()`` / ``check_extent_exists()``: every checksummed range lies
        inside EXTENT_ITEMs."""
        covered = self.scan.used_intervals(data_only=True)
        ranges = merge_intervals(r for rs in self.csum_ranges.values() for r in rs)
        for s, e in subtract_intervals(ranges, covered):
            self.report(
                BtrfsFinding(
                    "csum-no-extent",
                    f"csum range [{s}, {e})",
                    f"checksums exist for [{s}, {e}) but there is no extent record",
                    s,
                    C.CSUM_TREE_OBJECTID,
                )
            )


_INTERESTING = frozenset(
    {
        C.EXTENT_ITEM_KEY,
        C.METADATA_ITEM_KEY,
        C.TREE_BLOCK_REF_KEY,
        C.SHARED_BLOCK_REF_KEY,
        C.EXTENT_DATA_REF_KEY,
        C.SHARED_DATA_REF_KEY,
        C.BLOCK_GROUP_ITEM_KEY,
        C.SKINNY_BLOCK_GROUP_ITEM_KEY,
        C.CHUNK_ITEM_KEY,
        C.DEV_ITEM_KEY,
        C.DEV_EXTENT_KEY,
        C.ROOT_ITEM_KEY,
        C.EXTENT_CSUM_KEY,
        C.FREE_SPACE_INFO_KEY,
        C.FREE_SPACE_EXTENT_KEY,
        C.FREE_SPACE_BITMAP_KEY,
    }
)
# key types whose objectid is a logical address
_BYTENR_KEYS = frozenset(
    {
        C.EXTENT_ITEM_KEY,
        C.METADATA_ITEM_KEY,
        C.BLOCK_GROUP_ITEM_KEY,
        C.SKINNY_BLOCK_GROUP_ITEM_KEY,
    }
)


def btrfs_check(img: BtrfsImage, *, verify_data_csums: bool = False) -> BtrfsCheckResult:
    """Check an opened image the way ``btrfs check`` (btrfs-progs 6.14, read-only) does
    and return what is wrong. ``verify_data_csums`` also reads every checksummed data
    sector (``--check-data-csum``; off by default, as in btrfs check)."""
    w = _Walk(img, verify_data_csums)
    w.take_reader_findings()
    w.check_super_progs()
    w.check_required_roots()
    w.verify_root_transids()
    w.take_reader_findings()
    order = w.walk_order()
    for root in order:
        if root.objectid == C.FREE_SPACE_TREE_OBJECTID and w.fst is None:
            w.start_free_space_check()
        w.walk_tree(root)
    if w.fst is None:
        w.start_free_space_check()
        # no free space tree root although the feature is on
        if w.fst is not None and not any(r.objectid == C.FREE_SPACE_TREE_OBJECTID for r in order):
            w.report(
                BtrfsFinding(
                    "fst-missing",
                    "free space tree",
                    "compat_ro FREE_SPACE_TREE is set but the root tree has no free space "
                    "tree root",
                )
            )
            w.fst = None
    if w.fst is not None:
        w.fst.finish()

    sb = img.sb
    right_bgs = [b for b in w.bgs if w.bg_in_right_tree(b)]
    check_dev_extents(w.dev_extents, w.devices, w.report, w.warn)
    check_chunks(
        sorted(w.chunks.values(), key=lambda c: c.key.offset),
        _sorted_bgs(right_bgs),
        w.dev_extents,
        w.report,
    )
    accounts = [BgAccount(b.start, b.length, b.flags, b.used) for b in _sorted_bgs(right_bgs)]
    actual_used = w.scan.check_extent_refs(accounts)
    tree_of = {b.start: b.tree for b in right_bgs}
    check_block_groups(
        accounts,
        actual_used,
        sb.bytes_used,
        w.report,
        lambda start: tree_of.get(start, C.EXTENT_TREE_OBJECTID),
    )
    check_devices(w.devices, w.dev_extents, w.report)
    check_device_sizes(sb, w.devices, img.source.size, w.report, w.warn)
    w.check_root_items()
    w.check_csums()
    w.take_reader_findings()
    return w.res


def _sorted_bgs(bgs: list[BgRecord]) -> list[BgRecord]:
    return sorted(bgs, key=lambda b: (b.start, b.length))
