"""``btrfs check``'s extent checks: every extent item against the references the trees
make to it, block group accounting, extent placement.

Sources: btrfs-progs ``check/main.c`` (original mode): ``process_extent_item``,
``run_next_block`` (the references found while walking: a node's child pointers, a leaf's
file extent items), ``add_root_to_pending``, ``calc_extent_flag``, ``add_tree_backref``,
``add_data_backref``, ``all_backpointers_checked``, ``maybe_free_extent_rec``,
``check_extent_refs``, ``check_extent_type``, ``check_crossing_stripes``,
``update_block_group_used``, ``check_block_groups``; ``check/mode-lowmem.c`` for the
extent data ref hash check (``check_extent_data_backref``).

Design for large images: references are packed into fixed-width big-endian byte strings
(about 75 bytes each with their list slot), sorted, and merged with the extent items in
bytenr order; no per-extent Python object lives longer than its own merge step.

A reference key is ``(bytenr, type, a, b, c)``: TREE_BLOCK_REF ``a`` = root;
SHARED_BLOCK_REF ``a`` = parent block; EXTENT_DATA_REF ``a, b, c`` = root, inode,
file offset minus extent offset; SHARED_DATA_REF ``a`` = parent leaf.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from model.btrfs import constants as C
from model.btrfs.csum import hash_extent_data_ref
from model.btrfs.findings import BtrfsFinding
from model.btrfs.intervals import Interval, merge_intervals
from model.btrfs.items import ExtentItem, Key, KeyedRef
from model.linux import U64

TREE_REF_TYPES = (C.TREE_BLOCK_REF_KEY, C.SHARED_BLOCK_REF_KEY)
DATA_REF_TYPES = (C.EXTENT_DATA_REF_KEY, C.SHARED_DATA_REF_KEY)

_DECLARED = struct.Struct(">QBQQQI")  # ref key + count (from the extent tree)
_FOUND = struct.Struct(">QBQQQQ")  # ref key + bytes the referrer expects
_EXTENT = struct.Struct(">QQQQBQ")  # start, num_bytes, refs, flags, key type, generation

RefKey = tuple[int, int, int, int]  # type, a, b, c


@dataclass(frozen=True, slots=True)
class ExtentRecord:
    start: int
    num_bytes: int
    refs: int
    flags: int
    key_type: int
    generation: int

    @property
    def metadata(self) -> bool:
        return self.key_type == C.METADATA_ITEM_KEY or bool(self.flags & C.EXTENT_FLAG_TREE_BLOCK)

    @property
    def what(self) -> str:
        kind = "tree block" if self.metadata else "data extent"
        return f"{kind} {self.start} (extent item ({self.start} {self.key_type} ...))"


def describe_ref(rk: RefKey) -> str:
    t, a, b, c = rk
    if t == C.TREE_BLOCK_REF_KEY:
        return f"tree block backref root {a}"
    if t == C.SHARED_BLOCK_REF_KEY:
        return f"shared block backref parent {a}"
    if t == C.EXTENT_DATA_REF_KEY:
        return f"extent data backref root {a} objectid {b} offset {c}"
    return f"shared data backref parent {a}"


@dataclass(frozen=True, slots=True)
class BgAccount:
    """A block group as the extent checks see it."""

    start: int
    length: int
    flags: int
    used: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class ExtentScan:
    """What the walk collects for the extent checks (see the module docstring)."""

    nodesize: int
    sectorsize: int
    super_generation: int
    report: Callable[[BtrfsFinding], None]
    extents: list[bytes] = field(default_factory=list)
    declared: list[bytes] = field(default_factory=list)
    found: list[bytes] = field(default_factory=list)
    # flags of every tree block's extent item (to tell FULL_BACKREF blocks while walking)
    meta_flags: dict[int, int] = field(default_factory=dict)

    def _finding(self, code: str, what: str, msg: str, bytenr: int | None) -> None:
        self.report(BtrfsFinding(code, what, msg, bytenr, C.EXTENT_TREE_OBJECTID))

    # ---- the extent tree's side ----------------------------------------------------------

    def process_extent_item(self, key: Key, item: ExtentItem) -> None:
        """``process_extent_item()``: record the extent and its inline backrefs."""
        metadata = key.type == C.METADATA_ITEM_KEY or bool(item.flags & C.EXTENT_FLAG_TREE_BLOCK)
        num_bytes = self.nodesize if key.type == C.METADATA_ITEM_KEY else key.offset
        what = f"extent item {key}"
        if key.objectid % self.sectorsize:
            self._finding(
                "extent-item",
                what,
                f"bytenr {key.objectid} is not aligned to {self.sectorsize}",
                key.objectid,
            )
        if metadata and num_bytes != self.nodesize:
            self._finding(
                "extent-item",
                what,
                f"tree block extent of {num_bytes} bytes, nodesize is {self.nodesize}",
                key.objectid,
            )
        if not metadata and num_bytes % self.sectorsize:
            self._finding(
                "extent-item",
                what,
                f"data extent length {num_bytes} is not aligned to {self.sectorsize}",
                key.objectid,
            )
        if metadata:
            level = key.offset if key.type == C.METADATA_ITEM_KEY else item.tree_block_level
            if level is not None and level >= C.BTRFS_MAX_LEVEL:
                self._finding(
                    "extent-item",
                    what,
                    f"tree block has bad backref level {level}, expected [0, 7]",
                    key.objectid,
                )
            self.meta_flags[key.objectid] = item.flags
        self.extents.append(
            _EXTENT.pack(
                key.objectid,
                num_bytes,
                item.refs,
                item.flags,
                key.type,
                item.generation,
            )
        )
        for ref in item.inline_refs:
            if ref.type == C.TREE_BLOCK_REF_KEY or ref.type == C.SHARED_BLOCK_REF_KEY:
                self.declared.append(_DECLARED.pack(key.objectid, ref.type, ref.offset, 0, 0, 1))
            elif ref.type == C.EXTENT_DATA_REF_KEY:
                self.declared.append(
                    _DECLARED.pack(
                        key.objectid,
                        ref.type,
                        ref.root,
                        ref.objectid,
                        ref.file_offset,
                        ref.count,
                    )
                )
            elif ref.type == C.SHARED_DATA_REF_KEY:
                self.declared.append(
                    _DECLARED.pack(key.objectid, ref.type, ref.offset, 0, 0, ref.count)
                )
            # EXTENT_OWNER_REF (simple quotas) is not a reference: refs does not count it

    def process_keyed_ref(self, key: Key, item: KeyedRef) -> None:
        """A keyed backref item (TREE_BLOCK_REF, SHARED_BLOCK_REF, EXTENT_DATA_REF,
        SHARED_DATA_REF) in the extent tree."""
        if key.type == C.EXTENT_DATA_REF_KEY:
            want = hash_extent_data_ref(item.root, item.objectid, item.file_offset)
            if want != key.offset:
                self._finding(
                    "backref-hash",
                    f"extent data backref {key}",
                    f"key offset {key.offset} is not hash_extent_data_ref(root {item.root}, "
                    f"objectid {item.objectid}, offset {item.file_offset}) = {want}",
                    key.objectid,
                )
            self.declared.append(
                _DECLARED.pack(
                    key.objectid,
                    key.type,
                    item.root,
                    item.objectid,
                    item.file_offset,
                    item.count,
                )
            )
        elif key.type == C.SHARED_DATA_REF_KEY:
            self.declared.append(
                _DECLARED.pack(key.objectid, key.type, key.offset, 0, 0, item.count)
            )
        else:
            self.declared.append(_DECLARED.pack(key.objectid, key.type, key.offset, 0, 0, 1))

    # ---- the referrers' side -------------------------------------------------------------

    def add_tree_ref(self, bytenr: int, parent: int, root: int) -> None:
        """``add_tree_backref(..., found_ref=1)``: a node points at ``bytenr``; shared
        (``parent``) when the node is FULL_BACKREF, else keyed by the owner ``root``."""
        if parent:
            self.found.append(
                _FOUND.pack(bytenr, C.SHARED_BLOCK_REF_KEY, parent, 0, 0, self.nodesize)
            )
        else:
            self.found.append(_FOUND.pack(bytenr, C.TREE_BLOCK_REF_KEY, root, 0, 0, self.nodesize))

    def add_data_ref(
        self, bytenr: int, num_bytes: int, parent: int, root: int, ino: int, offset: int
    ) -> None:
        """``add_data_backref(..., found_ref=1)``: a file extent item points at the data
        extent ``bytenr`` (``disk_num_bytes`` = ``num_bytes``)."""
        if parent:
            self.found.append(_FOUND.pack(bytenr, C.SHARED_DATA_REF_KEY, parent, 0, 0, num_bytes))
        else:
            self.found.append(
                _FOUND.pack(bytenr, C.EXTENT_DATA_REF_KEY, root, ino, offset & U64, num_bytes)
            )

    # ---- checking ------------------------------------------------------------------------

    def iter_extents(self) -> Iterator[ExtentRecord]:
        self.extents.sort()
        for b in self.extents:
            yield ExtentRecord(*_EXTENT.unpack(b))

    def used_intervals(self, *, data_only: bool = False) -> list[Interval]:
        """``btrfs_mark_used_blocks()``: every EXTENT_ITEM and METADATA_ITEM range,
        merged (``data_only``: EXTENT_ITEM keys only, as ``check_extent_exists`` reads)."""
        return merge_intervals(
            (r.start, r.start + r.num_bytes)
            for r in self.iter_extents()
            if not data_only or r.key_type == C.EXTENT_ITEM_KEY
        )

    def check_extent_refs(self, bgs: Sequence[BgAccount]) -> dict[int, int]:
        """``check_extent_refs()`` with ``all_backpointers_checked()``,
        ``check_extent_type()`` and ``update_block_group_used()``: merge extent items,
        declared backrefs and found references by bytenr. Returns the bytes of extent
        items per block group start (the ``actual_used`` of ``check_block_groups``)."""
        self.extents.sort()
        self.declared.sort()
        self.found.sort()
        bg_starts = [b.start for b in bgs]
        actual_used: dict[int, int] = {b.start: 0 for b in bgs}
        ext_i = dec_i = fnd_i = 0
        n_ext, n_dec, n_fnd = len(self.extents), len(self.declared), len(self.found)
        prev: ExtentRecord | None = None
        while ext_i < n_ext or dec_i < n_dec or fnd_i < n_fnd:
            cands = []
            if ext_i < n_ext:
                cands.append(int.from_bytes(self.extents[ext_i][:8], "big"))
            if dec_i < n_dec:
                cands.append(int.from_bytes(self.declared[dec_i][:8], "big"))
            if fnd_i < n_fnd:
                cands.append(int.from_bytes(self.found[fnd_i][:8], "big"))
            bytenr = min(cands)
            recs: list[ExtentRecord] = []
            while ext_i < n_ext and int.from_bytes(self.extents[ext_i][:8], "big") == bytenr:
                recs.append(ExtentRecord(*_EXTENT.unpack(self.extents[ext_i])))
                ext_i += 1
            declared: dict[RefKey, int] = {}
            while dec_i < n_dec and int.from_bytes(self.declared[dec_i][:8], "big") == bytenr:
                _, t, a, b, c, cnt = _DECLARED.unpack(self.declared[dec_i])
                declared[(t, a, b, c)] = declared.get((t, a, b, c), 0) + cnt
                dec_i += 1
            found: dict[RefKey, int] = {}
            sizes: set[int] = set()
            while fnd_i < n_fnd and int.from_bytes(self.found[fnd_i][:8], "big") == bytenr:
                _, t, a, b, c, nb = _FOUND.unpack(self.found[fnd_i])
                found[(t, a, b, c)] = found.get((t, a, b, c), 0) + 1
                if t in DATA_REF_TYPES:
                    sizes.add(nb)
                fnd_i += 1
            for rec in recs:
                if prev is not None and rec.start < prev.start + prev.num_bytes:
                    self._finding(
                        "extent-overlap",
                        rec.what,
                        f"extent [{rec.start}, {rec.start + rec.num_bytes}) overlaps extent "
                        f"[{prev.start}, {prev.start + prev.num_bytes})",
                        rec.start,
                    )
                if prev is None or rec.start + rec.num_bytes > prev.start + prev.num_bytes:
                    prev = rec
                self._account(rec, bgs, bg_starts, actual_used, declared, found)
            self._check_one_extent(bytenr, recs, declared, found, sizes)
        return actual_used

    def _account(
        self,
        rec: ExtentRecord,
        bgs: Sequence[BgAccount],
        bg_starts: list[int],
        actual_used: dict[int, int],
        declared: dict[RefKey, int],
        found: dict[RefKey, int],
    ) -> None:
        """``update_block_group_used()`` and ``check_extent_type()`` (plus the checks
        ``maybe_free_extent_rec`` gates on: crossing stripes, generation)."""
        i = bisect.bisect_right(bg_starts, rec.start) - 1
        bg = bgs[i] if i >= 0 and rec.start < bgs[i].end else None
        if bg is None:
            self._finding(
                "extent-no-bg",
                rec.what,
                f"extent [{rec.start}, {rec.start + rec.num_bytes}) is in no block group",
                rec.start,
            )
        else:
            actual_used[bg.start] += rec.num_bytes
            if rec.start + rec.num_bytes > bg.end:
                self._finding(
                    "extent-no-bg",
                    rec.what,
                    f"extent [{rec.start}, {rec.start + rec.num_bytes}) runs past the end of "
                    f"block group {bg.start} ({bg.end})",
                    rec.start,
                )
            self.check_extent_type(rec, bg, declared, found)
        if rec.metadata and self.check_crossing_stripes(rec.start, self.nodesize):
            self._finding(
                "extent-crossing-stripe",
                rec.what,
                f"tree block [{rec.start}, {rec.start + self.nodesize}) crosses a "
                f"{C.BTRFS_STRIPE_LEN}-byte stripe boundary",
                rec.start,
            )
        if rec.generation > self.super_generation + 1:
            # btrfs check --mode=lowmem (check_extent_item) prints this line and fails, as
            # the kernel's tree-checker (check_extent_item) refuses the leaf; the original
            # mode (6.14) says nothing and exits 0: we follow lowmem and the kernel
            self._finding(
                "extent-generation",
                rec.what,
                f"invalid generation for extent {rec.start}, have {rec.generation} expect "
                f"(0, {self.super_generation + 1}]",
                rec.start,
            )

    @staticmethod
    def check_crossing_stripes(start: int, length: int) -> bool:
        """``check_crossing_stripes()``: the range spans two BTRFS_STRIPE_LEN stripes."""
        return start // C.BTRFS_STRIPE_LEN != (start + length - 1) // C.BTRFS_STRIPE_LEN

    def check_extent_type(
        self,
        rec: ExtentRecord,
        bg: BgAccount,
        declared: dict[RefKey, int],
        found: dict[RefKey, int],
    ) -> None:
        """``check_extent_type()``: data extents live in DATA block groups, tree blocks in
        SYSTEM or METADATA ones; a tree block whose first backref is the chunk tree's
        must be in SYSTEM, others in METADATA (a mixed block group has both bits)."""
        if not rec.metadata:
            if not bg.flags & C.BLOCK_GROUP_DATA:
                self._finding(
                    "extent-bg-type",
                    rec.what,
                    f"data extent in block group {bg.start} of type {bg.flags:#x}",
                    rec.start,
                )
            return
        if not bg.flags & (C.BLOCK_GROUP_SYSTEM | C.BLOCK_GROUP_METADATA):
            self._finding(
                "extent-bg-type",
                rec.what,
                f"tree block in block group {bg.start} of type {bg.flags:#x}",
                rec.start,
            )
            return
        refs = sorted(set(declared) | set(found), key=_backref_order)
        if not refs:
            return
        t, a, _, _ = refs[0]
        if t in DATA_REF_TYPES:
            self._finding("extent-bg-type", rec.what, "tree block with a data backref", rec.start)
            return
        want = (
            C.BLOCK_GROUP_SYSTEM
            if t == C.TREE_BLOCK_REF_KEY and a == C.CHUNK_TREE_OBJECTID
            else C.BLOCK_GROUP_METADATA
        )
        if not bg.flags & want:
            self._finding(
                "extent-bg-type",
                rec.what,
                f"tree block of {'the chunk tree' if want == C.BLOCK_GROUP_SYSTEM else 'a'}"
                f" tree in block group {bg.start} of type {bg.flags:#x}",
                rec.start,
            )

    def _check_one_extent(
        self,
        bytenr: int,
        recs: list[ExtentRecord],
        declared: dict[RefKey, int],
        found: dict[RefKey, int],
        sizes: set[int],
    ) -> None:
        """``all_backpointers_checked()`` and the ``ref mismatch``/``backpointer
        mismatch`` reports of ``check_extent_refs()`` for one bytenr."""
        if len(recs) > 1:
            self._finding(
                "extent-duplicate",
                f"extent {bytenr}",
                f"{len(recs)} extent items at the same bytenr: "
                + ", ".join(f"({r.start} {r.key_type} ...)" for r in recs),
                bytenr,
            )
        if not recs:
            for rk, n in sorted(found.items()):
                kind = "tree block" if rk[0] in TREE_REF_TYPES else "data extent"
                self._finding(
                    "extent-missing",
                    f"{kind} {bytenr}",
                    f"referenced ({describe_ref(rk)}, {n} time(s)) but has no extent item",
                    bytenr,
                )
            for rk, n in sorted(declared.items()):
                self._finding(
                    "backref-orphan",
                    f"extent {bytenr}",
                    f"backref item ({describe_ref(rk)}, count {n}) without an extent item",
                    bytenr,
                )
            return
        rec = recs[0]
        what = rec.what
        total_found = sum(found.values())
        if not found:
            self._finding(
                "extent-leak",
                what,
                f"extent item with refs {rec.refs} but nothing references it (leaked)",
                bytenr,
            )
        elif rec.refs != total_found:
            self._finding(
                "extent-refs",
                what,
                f"ref mismatch: extent item refs {rec.refs}, found {total_found} reference(s)",
                bytenr,
            )
        total_declared = sum(declared.values())
        if found and total_declared != rec.refs:
            self._finding(
                "extent-refs",
                what,
                f"extent item refs {rec.refs} but its backrefs count {total_declared}",
                bytenr,
            )
        for rk in sorted(set(declared) | set(found)):
            d, f = declared.get(rk, 0), found.get(rk, 0)
            if rk[0] in TREE_REF_TYPES:
                d, f = min(d, 1), min(f, 1)
            if d == f:
                continue
            if not d:
                msg = f"{describe_ref(rk)} is referenced {f} time(s) but has no backref item"
                code = "backref-missing"
            elif not f:
                msg = f"{describe_ref(rk)} (count {d}) has no referrer"
                code = "backref-unused"
            else:
                msg = f"{describe_ref(rk)} count {d}, found {f} referrer(s)"
                code = "backref-count"
            self._finding(code, what, msg, bytenr)
        tree_refs = any(rk[0] in TREE_REF_TYPES for rk in found)
        data_refs = any(rk[0] in DATA_REF_TYPES for rk in found)
        if rec.metadata and data_refs:
            self._finding("extent-kind", what, "tree block referenced as file data", bytenr)
        if not rec.metadata and tree_refs:
            self._finding("extent-kind", what, "data extent referenced as a tree block", bytenr)
        bad_sizes = sorted(s for s in sizes if s != rec.num_bytes)
        if not rec.metadata and bad_sizes:
            self._finding(
                "extent-size",
                what,
                f"data extent of {rec.num_bytes} bytes referenced by file extent items with "
                f"disk_num_bytes {bad_sizes}",
                bytenr,
            )


def _backref_order(rk: RefKey) -> tuple[int, int, int]:
    """``compare_extent_backref()``'s order: tree before data, keyed before shared, then
    by root/parent."""
    t, a, _, _ = rk
    is_data = t in DATA_REF_TYPES
    full = t in (C.SHARED_BLOCK_REF_KEY, C.SHARED_DATA_REF_KEY)
    return (int(is_data), int(full), a)


def check_block_groups(
    bgs: Sequence[BgAccount],
    actual_used: dict[int, int],
    super_bytes_used: int,
    report: Callable[[BtrfsFinding], None],
    tree_of: Callable[[int], int],
) -> None:
    """``check_block_groups()``: each block group's ``used`` equals the bytes of the
    extent items inside it; the superblock's ``bytes_used`` equals their sum."""
    total = 0
    for bg in bgs:
        got = actual_used.get(bg.start, 0)
        total += got
        if bg.used != got:
            report(
                BtrfsFinding(
                    "bg-used",
                    f"block group {bg.start}",
                    f"block group [{bg.start} {bg.length}] used {bg.used} but extent items "
                    f"use {got}",
                    bg.start,
                    tree_of(bg.start),
                )
            )
    if total != super_bytes_used:
        report(
            BtrfsFinding(
                "super-bytes-used",
                "superblock bytes_used",
                f"super bytes_used {super_bytes_used} mismatches actual used {total}",
            )
        )
