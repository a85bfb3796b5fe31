"""``fsoracle btrfs check`` against ``btrfs check`` (btrfs-progs 6.14) on a few hundred
mutated copies of small mkfs.btrfs images: the same accept/reject on each.

Mutation families (each edit recomputes the checksum of what it touched, so that the check
reaches the structure and does not stop at a checksum):

* ``super``: fields of the primary superblock (btrfs check reads only the primary, as the
  kernel's mount does), chosen to cross each rule of ``btrfs_validate_super`` and of
  btrfs-progs' ``btrfs_check_super`` on both sides of its boundary;
* ``generation``: the generations that name a tree's root block (superblock generation and
  chunk_root_generation, every ROOT_ITEM's generation) and the root blocks' own header
  generations;
* ``size``: the image truncated or extended, the superblock's total_bytes, the chunk tree's
  DEV_ITEM total_bytes, the superblock's copy of the dev item's total_bytes.

The oracle is btrfs check's exit status (0 accept; anything else, a crash or the 10 s
timeout, reject). Ours rejects when the image cannot be opened (FormatError) or the check
finds an error; any other exception fails the test. The differences we keep are listed in
:data:`DIFFERENCES`, each with its reason, and each must still differ. ``pytest -s`` prints
the accept/reject table.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from model.blocksource import FileSource
from model.btrfs import constants as C
from model.btrfs.check import btrfs_check
from model.btrfs.csum import csum_block
from model.btrfs.items import DevItem
from model.btrfs.reader import BtrfsImage
from model.errors import FormatError
from model.linux import U64
from tests.btrfs.images import make_image
from tests.btrfs.imgedit import (
    SB_FIELDS,
    SbValue,
    edit_super,
    find_slot,
    item_body,
    sb_get,
    sparse_copy,
)
from tests.tools import require_tool, run

SIZE = 256 << 20
BASES = ["default", "bg-tree", "rootdir-4k"]
TIMEOUT = 10.0

# ---- what a mutation needs to know about its base image ---------------------------------


@dataclass(frozen=True)
class RootRef:
    """A tree's root block and where its referrer records its generation."""

    objectid: int
    bytenr: int
    copies: tuple[int, ...]
    item_leaf_copies: tuple[int, ...] = ()  # the root tree leaf holding its ROOT_ITEM
    item_body: int = 0  # offset of the ROOT_ITEM body in that leaf
    generation: int = 0


@dataclass(frozen=True)
class Base:
    name: str
    path: Path
    sb: bytes  # the primary superblock
    nodesize: int
    csum_type: int
    roots: tuple[RootRef, ...]  # ROOT_ITEM trees (key offset 0)
    tree_root: RootRef
    chunk_root: RootRef
    dev_item_copies: tuple[int, ...]  # the chunk tree leaf with the DEV_ITEM
    dev_item_body: int
    dev_total_bytes: int
    dev_extents_end: int  # end of the last dev extent on the device


def describe_base(name: str, path: Path) -> Base:
    """Where things are in a base image (found with the reader: locations, not
    expected values)."""
    with FileSource(path) as src:
        img = BtrfsImage.open(src)
        sb = img.sb
        ns = sb.nodesize

        def copies(logical: int) -> tuple[int, ...]:
            return tuple(img.chunk_map.map_read(logical, ns))

        roots = []
        for (oid, off), ri in sorted(img.root_items.items()):
            if off != 0:
                continue
            leaf, slot = find_slot(
                img,
                C.ROOT_TREE_OBJECTID,
                lambda b, s, k, oid=oid: k.type == C.ROOT_ITEM_KEY and k.objectid == oid,
            )
            roots.append(
                RootRef(
                    oid,
                    ri.bytenr,
                    copies(ri.bytenr),
                    copies(leaf.logical),
                    item_body(leaf, slot),
                    ri.generation,
                )
            )
        dleaf, dslot = find_slot(
            img, C.CHUNK_TREE_OBJECTID, lambda b, s, k: k.type == C.DEV_ITEM_KEY
        )
        dev = dleaf.item(dslot)
        assert isinstance(dev, DevItem)
        dev_root = img.tree(C.DEV_TREE_OBJECTID)
        assert dev_root is not None
        end = 0
        for blk, s, _ in img.iter_items(dev_root):
            k = blk.items[s].key
            if k.type == C.DEV_EXTENT_KEY:
                (length,) = struct.unpack_from("<Q", blk.item_data(s), 24)
                end = max(end, k.offset + length)
        return Base(
            name,
            path,
            sb.raw,
            ns,
            sb.csum_type,
            tuple(roots),
            RootRef(C.ROOT_TREE_OBJECTID, sb.root, copies(sb.root)),
            RootRef(C.CHUNK_TREE_OBJECTID, sb.chunk_root, copies(sb.chunk_root)),
            copies(dleaf.logical),
            item_body(dleaf, dslot),
            dev.total_bytes,
            end,
        )


# ---- edits on a copy ------------------------------------------------------------------------


def edit_block(
    base: Base, path: Path, copies: tuple[int, ...], fn: Callable[[bytearray], None]
) -> None:
    """Apply ``fn`` to a tree block (every copy), checksum recomputed."""
    with open(path, "r+b") as f:
        f.seek(copies[0])
        raw = bytearray(f.read(base.nodesize))
        fn(raw)
        raw[: C.BTRFS_CSUM_SIZE] = csum_block(base.csum_type, bytes(raw))
        for phys in copies:
            f.seek(phys)
            f.write(raw)


def u64_at(off: int, value: int) -> Callable[[bytearray], None]:
    def fn(raw: bytearray) -> None:
        struct.pack_into("<Q", raw, off, value)

    return fn


HEADER_GENERATION = 80  # struct btrfs_header: csum 32, fsid 16, bytenr, flags, chunk uuid 16
ROOT_ITEM_GENERATION = 160  # struct btrfs_root_item: after the 160-byte inode item
DEV_ITEM_TOTAL_BYTES = 8


# ---- the mutations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    family: str
    name: str  # the same name on every base it applies to
    apply: Callable[[Base, Path], None]


def sb_mut(name: str, fn: Callable[[Base], dict[str, SbValue]], recompute: bool = True) -> Mutation:
    return Mutation("super", name, lambda b, p: edit_super(p, fn(b), recompute))


def val(b: Base, field_name: str) -> int:
    v = sb_get(b.sb, field_name)
    assert isinstance(v, int)
    return v


def set_field(
    field_name: str, fn: Callable[[Base], SbValue]
) -> Callable[[Base], dict[str, SbValue]]:
    return lambda b: {field_name: fn(b)}


def super_mutations(base: Base) -> list[Mutation]:
    out: list[Mutation] = []
    bg_tree = bool(val(base, "compat_ro_flags") & C.COMPAT_RO_BLOCK_GROUP_TREE)

    def add(name: str, field_name: str, fn: Callable[[Base], SbValue]) -> None:
        out.append(sb_mut(name, set_field(field_name, fn)))

    # flags: bits inside BTRFS_SUPER_FLAG_SUPP and outside it
    for bit, label in [
        (0, "clear"),
        (C.HEADER_FLAG_RELOC, "reloc"),
        (C.SUPER_FLAG_ERROR, "error"),
        (C.SUPER_FLAG_SEEDING, "seeding"),
        (C.SUPER_FLAG_METADUMP, "metadump"),
        (C.SUPER_FLAG_METADUMP_V2, "metadump-v2"),
        (1 << 3, "bit3"),
        (C.SUPER_FLAG_CHANGING_FSID, "changing-fsid"),
        (C.SUPER_FLAG_CHANGING_BG_TREE, "changing-bg-tree"),
    ]:
        if bit == 0:
            add("flags=0", "flags", lambda b: 0)
        else:
            add(f"flags|={label}", "flags", lambda b, bit=bit: val(b, "flags") | bit)
    for f_ in ("root_level", "chunk_root_level", "log_root_level"):
        for v in (1, C.BTRFS_MAX_LEVEL - 1, C.BTRFS_MAX_LEVEL, 255):
            add(f"{f_}={v}", f_, lambda b, v=v: v)
    for v in (0, 2048, 4095, 8192, 65536, 131072):
        add(f"sectorsize={v}", "sectorsize", lambda b, v=v: v)
    for v in (0, 2048, 4096, 12288, 65536, 131072):
        out.append(sb_mut(f"nodesize=leafsize={v}", lambda b, v=v: {"nodesize": v, "leafsize": v}))
    add("nodesize*2", "nodesize", lambda b: 2 * val(b, "nodesize"))
    add("leafsize=0", "leafsize", lambda b: 0)
    for v in (0, 1, 2, 3, 512, 2048, 8192, 65536, 1 << 31):
        add(f"stripesize={v}", "stripesize", lambda b, v=v: v)
    for f_ in ("root", "chunk_root"):
        add(f"{f_}+1", f_, lambda b, f_=f_: val(b, f_) + 1)
        add(f"{f_}+512", f_, lambda b, f_=f_: val(b, f_) + 512)
        add(f"{f_}+sectorsize", f_, lambda b, f_=f_: val(b, f_) + val(b, "sectorsize"))
        add(f"{f_}=0", f_, lambda b: 0)
        add(f"{f_}=1<<50", f_, lambda b: 1 << 50)
    add("root=chunk_root", "root", lambda b: val(b, "chunk_root"))
    add("chunk_root=root", "chunk_root", lambda b: val(b, "root"))
    for label, fn in [
        ("4096", lambda b: 4096),
        ("4097", lambda b: 4097),
        ("root", lambda b: val(b, "root")),
        ("root+1", lambda b: val(b, "root") + 1),
        ("1<<40", lambda b: 1 << 40),
    ]:
        add(f"log_root={label}", "log_root", fn)
    out.append(
        sb_mut(
            "log_root=root,level=1",
            lambda b: {"log_root": val(b, "root"), "log_root_level": 1},
        )
    )
    other = uuid.UUID(int=0x1234).bytes
    add("fsid=other", "fsid", lambda b: other)
    add("dev_item.fsid=other", "dev_item.fsid", lambda b: other)
    out.append(
        sb_mut(
            "fsid=dev_item.fsid=other",
            lambda b: {"fsid": other, "dev_item.fsid": other},
        )
    )
    out.append(
        sb_mut(
            "metadata_uuid=fsid",
            lambda b: {
                "incompat_flags": val(b, "incompat_flags") | C.INCOMPAT_METADATA_UUID,
                "metadata_uuid": sb_get(b.sb, "fsid"),
            },
        )
    )
    out.append(
        sb_mut(
            "metadata_uuid=other",
            lambda b: {
                "incompat_flags": val(b, "incompat_flags") | C.INCOMPAT_METADATA_UUID,
                "metadata_uuid": other,
            },
        )
    )
    add("metadata_uuid=other,no-bit", "metadata_uuid", lambda b: other)
    if not bg_tree:
        add(
            "compat_ro|=bg-tree",
            "compat_ro_flags",
            lambda b: val(b, "compat_ro_flags") | C.COMPAT_RO_BLOCK_GROUP_TREE,
        )
    else:  # the block-group-tree rule's two halves, and free-space-tree without its bit
        for label, bit in [
            ("fst-valid", C.COMPAT_RO_FREE_SPACE_TREE_VALID),
            ("fst", C.COMPAT_RO_FREE_SPACE_TREE),
        ]:
            add(
                f"compat_ro&=~{label}",
                "compat_ro_flags",
                lambda b, bit=bit: val(b, "compat_ro_flags") & ~bit,
            )
        add(
            "incompat&=~no-holes",
            "incompat_flags",
            lambda b: val(b, "incompat_flags") & ~C.INCOMPAT_NO_HOLES,
        )
    for label, fn in [
        ("0", lambda b: 0),
        ("6*nodesize-1", lambda b: 6 * val(b, "nodesize") - 1),
        ("6*nodesize", lambda b: 6 * val(b, "nodesize")),
        ("+sectorsize", lambda b: val(b, "bytes_used") + val(b, "sectorsize")),
        ("1<<50", lambda b: 1 << 50),
    ]:
        add(f"bytes_used={label}", "bytes_used", fn)
    for v in (0, 2, 1 << 31, (1 << 31) + 1, 1 << 40):
        add(f"num_devices={v}", "num_devices", lambda b, v=v: v)
    add("bytenr+1", "bytenr", lambda b: val(b, "bytenr") + 1)
    add("bytenr=0", "bytenr", lambda b: 0)
    add("bytenr=mirror1", "bytenr", lambda b: C.btrfs_sb_offset(1))
    for label, fn in [
        ("0", lambda b: 0),
        ("96", lambda b: 96),
        ("97", lambda b: 97),
        ("-1", lambda b: val(b, "sys_array_size") - 1),
        ("2048", lambda b: 2048),
        ("2049", lambda b: 2049),
    ]:
        add(f"sys_array_size={label}", "sys_array_size", fn)
    for label, fn in [
        ("+1", lambda b: val(b, "generation") + 1),
        ("1<<40", lambda b: 1 << 40),
    ]:
        add(f"cache_generation={label}", "cache_generation", fn)
    add("cache_generation=-1", "cache_generation", lambda b: U64)
    add(
        "uuid_tree_generation+5",
        "uuid_tree_generation",
        lambda b: val(b, "uuid_tree_generation") + 5,
    )
    for v in (1, 2, 3):
        add(f"csum_type={v}", "csum_type", lambda b, v=v: v)
    out.append(sb_mut("csum_type=7", set_field("csum_type", lambda b: 7), recompute=False))
    add("magic=0", "magic", lambda b: 0)
    add("magic^1", "magic", lambda b: C.MAGIC ^ 1)
    add("root_dir=0", "root_dir", lambda b: 0)
    add("label=x", "label", lambda b: b"parity-label".ljust(16, b"\0"))
    add("nr_global_roots=5", "nr_global_roots", lambda b: 5)
    add("compat_flags=1", "compat_flags", lambda b: 1)
    return out


def generation_mutations(base: Base) -> list[Mutation]:
    out: list[Mutation] = []
    for d in (-1, 1):
        out.append(
            sb_mut(f"generation{d:+d}", lambda b, d=d: {"generation": val(b, "generation") + d})
        )
        out.append(
            sb_mut(
                f"chunk_root_generation{d:+d}",
                lambda b, d=d: {"chunk_root_generation": val(b, "chunk_root_generation") + d},
            )
        )
    out = [Mutation("generation", m.name, m.apply) for m in out]
    for label, ref_of, gen_of in [
        ("tree-root", lambda b: b.tree_root, lambda b: val(b, "generation")),
        ("chunk-root", lambda b: b.chunk_root, lambda b: val(b, "chunk_root_generation")),
    ]:
        for d in (-1, 1):
            out.append(
                Mutation(
                    "generation",
                    f"{label}.header.generation{d:+d}",
                    lambda b, p, ref_of=ref_of, gen_of=gen_of, d=d: edit_block(
                        b, p, ref_of(b).copies, u64_at(HEADER_GENERATION, gen_of(b) + d)
                    ),
                )
            )
    for r in base.roots:
        tree = C.TREE_NAMES.get(r.objectid, str(r.objectid))

        def ref(b: Base, oid: int = r.objectid) -> RootRef:
            return next(x for x in b.roots if x.objectid == oid)

        for label, gen in [("-1", -1), ("+1", 1), ("=0", None), ("+1000", 1000)]:
            out.append(
                Mutation(
                    "generation",
                    f"{tree}.root_item.generation{label}",
                    lambda b, p, ref=ref, gen=gen: edit_block(
                        b,
                        p,
                        ref(b).item_leaf_copies,
                        u64_at(
                            ref(b).item_body + ROOT_ITEM_GENERATION,
                            0 if gen is None else ref(b).generation + gen,
                        ),
                    ),
                )
            )
        # (the header one newer than its ROOT_ITEM; root_item.generation-1 is the converse)
        out.append(
            Mutation(
                "generation",
                f"{tree}.header.generation+1",
                lambda b, p, ref=ref: edit_block(
                    b, p, ref(b).copies, u64_at(HEADER_GENERATION, ref(b).generation + 1)
                ),
            )
        )
    return out


def truncate_to(n: Callable[[Base], int]) -> Callable[[Base, Path], None]:
    def fn(b: Base, p: Path) -> None:
        os.truncate(p, n(b))

    return fn


def dev_item_total(n: Callable[[Base], int]) -> Callable[[Base, Path], None]:
    def fn(b: Base, p: Path) -> None:
        edit_block(b, p, b.dev_item_copies, u64_at(b.dev_item_body + DEV_ITEM_TOTAL_BYTES, n(b)))

    return fn


def size_mutations() -> list[Mutation]:
    out: list[Mutation] = []
    for label, n in [
        ("total-4096", lambda b: b.dev_total_bytes - 4096),
        ("total-1M", lambda b: b.dev_total_bytes - (1 << 20)),
        ("dev-extents-end", lambda b: b.dev_extents_end),
        ("dev-extents-end-4096", lambda b: b.dev_extents_end - 4096),
        ("mirror1+4096", lambda b: C.btrfs_sb_offset(1) + 4096),
        ("total+1M", lambda b: b.dev_total_bytes + (1 << 20)),
        ("total+1", lambda b: b.dev_total_bytes + 1),
    ]:
        out.append(Mutation("size", f"truncate={label}", truncate_to(n)))
    for label, n in [
        ("0", lambda b: 0),
        ("1", lambda b: 1),
        ("-4096", lambda b: b.dev_total_bytes - 4096),
        ("-1", lambda b: b.dev_total_bytes - 1),
        ("+1", lambda b: b.dev_total_bytes + 1),
        ("+4096", lambda b: b.dev_total_bytes + 4096),
        ("*2", lambda b: 2 * b.dev_total_bytes),
        ("1<<60", lambda b: 1 << 60),
    ]:
        out.append(
            Mutation(
                "size",
                f"super.total_bytes={label}",
                lambda b, p, n=n: edit_super(p, {"total_bytes": n(b)}),
            )
        )
        out.append(Mutation("size", f"dev_item.total_bytes={label}", dev_item_total(n)))
    for label, n in [
        ("0", lambda b: 0),
        ("-4096", lambda b: b.dev_total_bytes - 4096),
        ("*2", lambda b: 2 * b.dev_total_bytes),
    ]:
        out.append(
            Mutation(
                "size",
                f"super.dev_item.total_bytes={label}",
                lambda b, p, n=n: edit_super(p, {"dev_item.total_bytes": n(b)}),
            )
        )
    return out


# ---- the known differences ------------------------------------------------------------------

# mutation name -> why btrfs check and we differ. Each must still differ on every base it runs
# on (else the entry is stale and the test fails).
DIFFERENCES: dict[str, str] = {
    # the kernel's rules btrfs-progs does not have: the kernel refuses to mount, we follow it
    "flags|=bit3": "btrfs_validate_super refuses flags outside BTRFS_SUPER_FLAG_SUPP "
    '("unrecognized or unsupported super flag"); btrfs_check_super has no flags rule',
    "leafsize=0": 'btrfs_validate_super: "invalid leafsize %u, should be %llu"; progs '
    "ignores the deprecated leafsize",
    "compat_ro&=~fst-valid": 'btrfs_validate_super: "block-group-tree feature requires '
    'free-space-tree and no-holes" (FREE_SPACE_TREE_VALID clear); progs has no such rule',
    "incompat&=~no-holes": "the same rule's other half (NO_HOLES clear)",
    "magic^1": "btrfs_read_dev_one_super takes no copy without BTRFS_MAGIC; btrfs check "
    "refuses a zero magic (magic=0 agrees) but checks a filesystem with this one and passes it",
    "log_root=root": "the log root's header generation is not generation + 1: the kernel's "
    "btrfs_replay_log (read_tree_block with that transid) fails the mount; btrfs check "
    'prints "parent transid verify failed", ignores it and exits 0',
    "DATA_RELOC_TREE.header.generation+1": "the kernel reads the data relocation tree's root "
    "at mount (btrfs_read_roots) and fails on the transid mismatch; btrfs check prints "
    '"parent transid verify failed" for it and "Ignoring transid failure", and exits 0',
    # where btrfs-progs refuses what the kernel mounts, and we follow the kernel
    "flags|=metadump": "METADUMP is in BTRFS_SUPER_FLAG_SUPP (the kernel mounts it); btrfs check "
    'takes the flag for a btrfs-image restore and fails to map the tree root ("No mapping '
    'for ...", "Couldn\'t map the block")',
}


# ---- running both ---------------------------------------------------------------------------


def progs_accepts(path: Path) -> bool:
    try:
        r = run(["btrfs", "check", "--readonly", str(path)], timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def ours_accepts(path: Path) -> bool:
    """Open and check; a FormatError is a reject, any other exception fails the test."""
    try:
        with FileSource(path) as src:
            return btrfs_check(BtrfsImage.open(src)).ok
    except FormatError:
        return False


@dataclass
class Outcome:
    base: str
    family: str
    name: str
    progs: bool
    ours: bool

    @property
    def agree(self) -> bool:
        return self.progs == self.ours


@dataclass
class Table:
    rows: list[Outcome] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            "| family | mutations | agree: both accept | agree: both reject |"
            " differ: listed | differ: not listed |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for fam, rows in itertools.groupby(
            sorted(self.rows, key=lambda r: r.family), key=lambda r: r.family
        ):
            rs = list(rows)
            lines.append(
                f"| {fam} | {len(rs)} | {sum(r.agree and r.progs for r in rs)} |"
                f" {sum(r.agree and not r.progs for r in rs)} |"
                f" {sum(not r.agree and r.name in DIFFERENCES for r in rs)} |"
                f" {sum(not r.agree and r.name not in DIFFERENCES for r in rs)} |"
            )
        diffs = [r for r in self.rows if not r.agree]
        for r in sorted(diffs, key=lambda r: (r.name, r.base)):
            side = "btrfs check accepts, we reject" if r.progs else "btrfs check rejects, we accept"
            why = DIFFERENCES.get(r.name, "NOT LISTED")
            lines.append(f"  {r.base}: {r.family}/{r.name}: {side} ({why})")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[Base]:
    require_tool("mkfs.btrfs")
    require_tool("btrfs")
    d = tmp_path_factory.mktemp("parity")
    out = []
    for name in BASES:
        p = make_image(name, d / f"{name}.img", size=SIZE)
        assert progs_accepts(p), f"btrfs check fails the clean {name} image"
        out.append(describe_base(name, p))
    return out


def test_sb_field_offsets(bases: list[Base]) -> None:
    """The offsets above read what ``dump-super -f`` prints for the clean image."""
    b = bases[0]
    r = run(["btrfs", "inspect-internal", "dump-super", "-f", str(b.path)])
    assert r.returncode == 0, r.stderr
    printed: dict[str, str] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^([a-z_.]+)(?: \(deprecated\))?\t+(\S+)", line)
        if m:
            printed.setdefault(m.group(1), m.group(2))
    checked = 0
    for name in SB_FIELDS:
        key = name
        if key not in printed or name == "label":
            continue
        checked += 1
        v = sb_get(b.sb, name)
        if isinstance(v, bytes):
            if key in ("fsid", "dev_item.fsid"):
                assert str(uuid.UUID(bytes=v)) == printed[key], name
            continue
        want = printed[key]
        if name == "magic":
            assert struct.pack("<Q", v).decode() == want
            continue
        assert v == (int(want, 16) if want.startswith("0x") else int(want)), name
    assert checked >= 25, printed


def test_check_parity(bases: list[Base], tmp_path: Path) -> None:
    sizes = size_mutations()
    jobs: list[tuple[Base, Mutation]] = []
    for b in bases:
        for m in super_mutations(b) + generation_mutations(b) + sizes:
            jobs.append((b, m))
    counter = itertools.count()

    def one(job: tuple[Base, Mutation]) -> Outcome:
        b, m = job
        p = tmp_path / f"m{next(counter)}.img"
        sparse_copy(b.path, p)
        try:
            m.apply(b, p)
            return Outcome(b.name, m.family, m.name, progs_accepts(p), ours_accepts(p))
        finally:
            p.unlink()

    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        table = Table(list(pool.map(one, jobs)))
    elapsed = time.monotonic() - t0
    print(f"\n{len(jobs)} mutations in {elapsed:.1f} s\n" + table.render())

    unlisted = [r for r in table.rows if not r.agree and r.name not in DIFFERENCES]
    assert not unlisted, "\n".join(
        f"{r.base}: {r.family}/{r.name}: btrfs check {'accepts' if r.progs else 'rejects'}"
        for r in unlisted
    )
    assert len(DIFFERENCES) <= 10
    for name in DIFFERENCES:
        rows = [r for r in table.rows if r.name == name]
        assert rows, f"{name}: no such mutation"
        assert all(not r.agree for r in rows), f"{name}: no longer differs on some base"
    # the mutations reach the structure: each family has both verdicts
    for fam in ("super", "generation", "size"):
        verdicts = {r.progs for r in table.rows if r.family == fam}
        assert verdicts == {True, False}, fam
