"""``btrfs check``'s chunk, block group and device checks.

Sources: btrfs-progs ``check/main.c``: ``check_chunk_refs``, ``check_chunks``,
``check_device_used``, ``check_devices``, ``check_dev_extents``,
``check_type_with_root``; the kernel's ``fs/btrfs/volumes.c``: ``verify_one_dev_extent``
(a dev extent inside the first 1 MiB is a warning there, not an error) and
``fs/btrfs/block-group.c``: ``read_one_block_group`` (a block group must match its chunk's
start, length and type).
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from model.btrfs import constants as C
from model.btrfs.check_free_space import btrfs_calc_stripe_length
from model.btrfs.findings import BtrfsFinding
from model.btrfs.items import ChunkItem, DevExtent, DevItem, Key
from model.btrfs.superblock import Superblock
from model.linux import U64


@dataclass(frozen=True, slots=True)
class BgRecord:
    """A block group item as found: where (tree), its key, used, flags."""

    start: int
    length: int
    flags: int
    used: int
    tree: int
    key_type: int

    @property
    def end(self) -> int:
        return self.start + self.length


def skinny_bg_items_allowed(sb: Superblock) -> bool:
    """Skinny block group items (key type 193) belong in tree 11 of a filesystem with the
    forward-port's incompat bit SKINNY_BG_TREE, which requires compat_ro
    BLOCK_GROUP_TREE (patches/skinny-bg-tree, 0001 and 0002)."""
    return bool(
        sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE
        and sb.incompat_flags & C.INCOMPAT_SKINNY_BG_TREE
    )


def check_type_with_root(sb: Superblock, owner: int, key_type: int) -> str | None:
    """``check_type_with_root()``: the tree a key type may appear in, judged by the leaf's
    owner. Returns what is wrong, or None."""
    bg_tree = bool(sb.compat_ro_flags & C.COMPAT_RO_BLOCK_GROUP_TREE)
    if key_type in (C.DEV_ITEM_KEY, C.CHUNK_ITEM_KEY):
        ok = owner == C.CHUNK_TREE_OBJECTID
        where = "the chunk tree"
    elif key_type in (C.EXTENT_ITEM_KEY, C.METADATA_ITEM_KEY):
        ok = owner == C.EXTENT_TREE_OBJECTID
        where = "the extent tree"
    elif key_type == C.BLOCK_GROUP_ITEM_KEY and skinny_bg_items_allowed(sb):
        # read_skinny_block_group_tree() (patches/skinny-bg-tree 0003) refuses any item but
        # a skinny one in tree 11 with -EUCLEAN; regular items have no tree to live in
        ok = False
        where = "no tree: with SKINNY_BG_TREE, block groups are skinny items (type 193)"
    elif key_type == C.BLOCK_GROUP_ITEM_KEY:
        want = C.BLOCK_GROUP_TREE_OBJECTID if bg_tree else C.EXTENT_TREE_OBJECTID
        ok = owner == want
        where = (
            "the block group tree (compat_ro BLOCK_GROUP_TREE is set)"
            if bg_tree
            else "the extent tree (no BLOCK_GROUP_TREE)"
        )
    elif key_type == C.SKINNY_BLOCK_GROUP_ITEM_KEY:
        ok = owner == C.BLOCK_GROUP_TREE_OBJECTID and skinny_bg_items_allowed(sb)
        where = "the block group tree, with the skinny block group tree feature"
    elif key_type == C.ROOT_ITEM_KEY:
        ok = owner == C.ROOT_TREE_OBJECTID
        where = "the root tree"
    elif key_type == C.DEV_EXTENT_KEY:
        ok = owner == C.DEV_TREE_OBJECTID
        where = "the dev tree"
    else:
        return None
    if ok:
        return None
    return f"key type {key_type} found in tree {owner}; it belongs in {where}"


def _dev_extent_what(key: Key) -> str:
    return f"dev extent ({key.objectid} {key.type} {key.offset})"


def check_chunks(
    chunks: Sequence[ChunkItem],
    bgs: Sequence[BgRecord],
    dev_extents: Sequence[tuple[Key, DevExtent]],
    report: Callable[[BtrfsFinding], None],
) -> None:
    """``check_chunks()`` / ``check_chunk_refs()``: every chunk has the block group with
    its start, length and type, and one dev extent per stripe at the stripe's offset,
    pointing back at it with the stripe length; every block group and dev extent is
    claimed by a chunk."""
    bg_starts = [b.start for b in bgs]
    claimed_bgs: set[int] = set()
    by_dev: dict[int, list[tuple[int, int, int]]] = {}  # devid -> (start, end, index)
    for idx, (key, de) in enumerate(dev_extents):
        by_dev.setdefault(key.objectid, []).append((key.offset, key.offset + de.length, idx))
    for lst in by_dev.values():
        lst.sort()
    claimed_dev: set[int] = set()
    for chunk in chunks:
        cstart = chunk.key.offset
        cwhat = f"chunk ({C.FIRST_CHUNK_TREE_OBJECTID} {C.CHUNK_ITEM_KEY} {cstart})"
        # lookup_cache_extent(): the first block group overlapping the chunk
        i = max(bisect.bisect_right(bg_starts, cstart) - 1, 0)
        bg = None
        for b in bgs[i : i + 2]:
            if b.start < cstart + chunk.length and b.end > cstart:
                bg = b
                break
        if bg is None:
            report(
                BtrfsFinding(
                    "chunk-no-bg",
                    cwhat,
                    f"chunk [{cstart}, +{chunk.length}) type {chunk.type:#x} has no block group",
                    cstart,
                    C.CHUNK_TREE_OBJECTID,
                )
            )
        elif bg.start != cstart or bg.length != chunk.length or bg.flags != chunk.type:
            report(
                BtrfsFinding(
                    "chunk-bg-mismatch",
                    f"{cwhat} / block group {bg.start}",
                    f"chunk start {cstart} length {chunk.length} type {chunk.type:#x} "
                    f"mismatches block group ({bg.start} {bg.key_type} {bg.length}) "
                    f"flags {bg.flags:#x}",
                    cstart,
                    bg.tree,
                )
            )
        else:
            claimed_bgs.add(bg.start)
        length = btrfs_calc_stripe_length(chunk)
        for sn, stripe in enumerate(chunk.stripes):
            lst = by_dev.get(stripe.devid, [])
            j = max(bisect.bisect_right(lst, (stripe.offset, U64, 0)) - 1, 0)
            hit = None
            for s, e, idx in lst[j : j + 2]:
                if s < stripe.offset + length and e > stripe.offset:
                    hit = idx
                    break
            if hit is None:
                report(
                    BtrfsFinding(
                        "chunk-no-dev-extent",
                        cwhat,
                        f"stripe {sn} (devid {stripe.devid} physical {stripe.offset}) has no "
                        "dev extent",
                        cstart,
                        C.CHUNK_TREE_OBJECTID,
                    )
                )
                continue
            dkey, de = dev_extents[hit]
            if dkey.offset != stripe.offset or de.chunk_offset != cstart or de.length != length:
                report(
                    BtrfsFinding(
                        "chunk-dev-extent-mismatch",
                        f"{cwhat} / {_dev_extent_what(dkey)}",
                        f"stripe {sn} (devid {stripe.devid} physical {stripe.offset} length "
                        f"{length}) mismatches dev extent at {dkey.offset} chunk_offset "
                        f"{de.chunk_offset} length {de.length}",
                        cstart,
                        C.DEV_TREE_OBJECTID,
                    )
                )
            else:
                claimed_dev.add(hit)
    for bg in bgs:
        if bg.start not in claimed_bgs:
            report(
                BtrfsFinding(
                    "bg-no-chunk",
                    f"block group {bg.start}",
                    f"block group ({bg.start} {bg.key_type} {bg.length}) flags {bg.flags:#x} "
                    "has no matching chunk",
                    bg.start,
                    bg.tree,
                )
            )
    for idx, (key, de) in enumerate(dev_extents):
        if idx not in claimed_dev:
            report(
                BtrfsFinding(
                    "dev-extent-no-chunk",
                    _dev_extent_what(key),
                    f"dev extent of {de.length} bytes for chunk {de.chunk_offset} has no "
                    "matching chunk stripe",
                    None,
                    C.DEV_TREE_OBJECTID,
                )
            )


def check_dev_extents(
    dev_extents: Sequence[tuple[Key, DevExtent]],
    devices: dict[int, DevItem],
    report: Callable[[BtrfsFinding], None],
    warn: Callable[[BtrfsFinding], None],
) -> None:
    """``check_dev_extents()``: dev extents of one device do not overlap and stay inside
    its total_bytes; ``verify_one_dev_extent()`` warns about one inside the first 1 MiB."""
    prev_devid = -1
    prev_end = 0
    prev_key: Key | None = None
    for key, de in sorted(dev_extents, key=lambda kd: (kd[0].objectid, kd[0].offset)):
        what = _dev_extent_what(key)
        dev = devices.get(key.objectid)
        if dev is None:
            report(
                BtrfsFinding(
                    "dev-extent-no-device",
                    what,
                    f"no device item for devid {key.objectid}",
                    None,
                    C.DEV_TREE_OBJECTID,
                )
            )
        elif key.offset + de.length > dev.total_bytes:
            report(
                BtrfsFinding(
                    "dev-extent-range",
                    what,
                    f"dev extent [{key.offset}, {key.offset + de.length}) is beyond the device "
                    f"boundary {dev.total_bytes}",
                    None,
                    C.DEV_TREE_OBJECTID,
                )
            )
        if prev_devid == key.objectid and key.offset < prev_end:
            report(
                BtrfsFinding(
                    "dev-extent-overlap",
                    what,
                    f"dev extent at {key.offset} overlaps the previous one {prev_key} "
                    f"ending at {prev_end}",
                    None,
                    C.DEV_TREE_OBJECTID,
                )
            )
        if key.offset < C.BTRFS_DEVICE_RANGE_RESERVED:
            warn(
                BtrfsFinding(
                    "dev-extent-reserved",
                    what,
                    f"dev extent at {key.offset} is inside the reserved first "
                    f"{C.BTRFS_DEVICE_RANGE_RESERVED} bytes of the device",
                    None,
                    C.DEV_TREE_OBJECTID,
                )
            )
        prev_devid, prev_end, prev_key = key.objectid, key.offset + de.length, key


def check_devices(
    devices: dict[int, DevItem],
    dev_extents: Sequence[tuple[Key, DevExtent]],
    report: Callable[[BtrfsFinding], None],
) -> None:
    """``check_devices()`` / ``check_device_used()``: a device's bytes_used is at most
    its total_bytes and equals the sum of its dev extents' lengths."""
    sums: dict[int, int] = {}
    for key, de in dev_extents:
        sums[key.objectid] = sums.get(key.objectid, 0) + de.length
    for devid, dev in sorted(devices.items()):
        what = f"device item ({C.DEV_ITEMS_OBJECTID} {C.DEV_ITEM_KEY} {devid})"
        if dev.bytes_used > dev.total_bytes:
            report(
                BtrfsFinding(
                    "dev-used",
                    what,
                    f"device {devid} bytes_used {dev.bytes_used} > total_bytes {dev.total_bytes}",
                    None,
                    C.CHUNK_TREE_OBJECTID,
                )
            )
        got = sums.get(devid, 0)
        if got != dev.bytes_used:
            report(
                BtrfsFinding(
                    "dev-used",
                    what,
                    f"dev extents total {got} bytes, device item bytes_used {dev.bytes_used}",
                    None,
                    C.CHUNK_TREE_OBJECTID,
                )
            )


def check_device_sizes(
    sb: Superblock,
    devices: dict[int, DevItem],
    device_size: int,
    report: Callable[[BtrfsFinding], None],
    warn: Callable[[BtrfsFinding], None],
) -> None:
    """The device sizes btrfs check verifies, against the chunk tree's DEV_ITEMs:

    * ``process_device_item()``: the device being checked (the image, devid of the
      superblock's dev_item) is at least its DEV_ITEM's total_bytes ("block device size is
      smaller than total_bytes in device item, has %llu expect >= %llu"; the kernel's
      ``read_one_dev`` refuses it too: "device total_bytes should be at most %llu but
      found %llu");
    * ``is_super_size_valid()``: the superblock's total_bytes is at least the devices'
      sum ("super total bytes %llu smaller than real device(s) size %llu"; the kernel's
      ``btrfs_read_chunk_tree``: "super_total_bytes %llu mismatch with fs_devices
      total_rw_bytes %llu"); larger, or either not sector-aligned, is only a warning
      ("minor unaligned/mismatch device size detected");
    * ``check_and_repair_super_num_devs()``: num_devices is the number of DEV_ITEMs ("super
      num devices mismatch, have %llu expect %u"; the kernel only warns and repairs it);
    * every DEV_ITEM's fsid is the filesystem's (metadata_uuid): the kernel's
      ``read_one_dev`` takes another fsid for a seed filesystem's and fails without one.
    """
    own = sb.dev_item.devid
    fs_uuid = sb.header_fsid
    for devid, dev in sorted(devices.items()):
        what = f"device item ({C.DEV_ITEMS_OBJECTID} {C.DEV_ITEM_KEY} {devid})"
        if devid == own and device_size < dev.total_bytes:
            report(
                BtrfsFinding(
                    "device-size",
                    what,
                    "block device size is smaller than total_bytes in device item, has "
                    f"{device_size} expect >= {dev.total_bytes}",
                    None,
                    C.CHUNK_TREE_OBJECTID,
                )
            )
        if dev.fsid != fs_uuid:
            report(
                BtrfsFinding(
                    "device-fsid",
                    what,
                    f"device {devid} fsid {uuid.UUID(bytes=dev.fsid)} is not the filesystem's "
                    f"{uuid.UUID(bytes=fs_uuid)}: read_one_dev would open it as a seed device",
                    None,
                    C.CHUNK_TREE_OBJECTID,
                )
            )
    if not devices:
        return
    total = sum(d.total_bytes for d in devices.values())
    if sb.total_bytes < total:
        report(
            BtrfsFinding(
                "super-total-bytes",
                "superblock total_bytes",
                f"super total bytes {sb.total_bytes} smaller than real device(s) size {total}",
            )
        )
    elif sb.total_bytes != total or sb.total_bytes % sb.sectorsize or total % sb.sectorsize:
        warn(
            BtrfsFinding(
                "super-total-bytes",
                "superblock total_bytes",
                "minor unaligned/mismatch device size detected: super block total "
                f"bytes={sb.total_bytes} found total bytes={total}",
            )
        )
    if sb.num_devices != len(devices):
        report(
            BtrfsFinding(
                "super-num-devices",
                "superblock num_devices",
                f"super num devices mismatch, have {sb.num_devices} expect {len(devices)}",
            )
        )
