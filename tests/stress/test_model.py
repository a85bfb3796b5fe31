"""The model's rules, op by op. Each expected result is what the cited kernel function
returns (Linux 6.12: fs/namei.c, fs/open.c, fs/btrfs/{inode,ioctl,transaction}.c,
fs/ext4/namei.c), or arithmetic on the written data; the differential tests check the
same rules against a running kernel."""

from __future__ import annotations

import hashlib

import pytest

from model.fsstate.compare import check_log, diff_trees
from model.fsstate.faults import Faults
from model.fsstate.namespace import FsModel, Unmodeled
from model.fsstate.oplog import parse_op, write_data
from model.fsstate.tree import BTRFS, EXT4, Entry, entries_from_walk


def run(fs: str, *lines: str, subvol: bool = False, faults: Faults | None = None):  # type: ignore[no-untyped-def]
    """Apply op lines (``name k=v ...``) and return (model, results)."""
    m = FsModel(fs, root_is_subvol=subvol, faults=faults)
    out = []
    for i, text in enumerate(lines):
        op = parse_op(f"p0 {i} {text}")
        out.append(m.apply(op).result)
    return m, out


def last(fs: str, *lines: str, subvol: bool = False) -> str:
    return run(fs, *lines, subvol=subvol)[1][-1]


BOTH = pytest.mark.parametrize("fs", ["btrfs", "ext4"])


# ---- path walk and creation ---------------------------------------------------------------


@BOTH
def test_creation_errors(fs: str) -> None:
    assert last(fs, "creat path=a mode=644", "creat path=a mode=644") == "EEXIST"  # O_EXCL
    assert last(fs, "creat path=x/a mode=644") == "ENOENT"
    assert last(fs, "creat path=f mode=644", "mkdir path=f/d mode=755") == "ENOTDIR"
    # O_CREAT|O_EXCL does not follow a dangling symlink: EEXIST (do_open)
    assert last(fs, "symlink target=nowhere path=l", "creat path=l mode=644") == "EEXIST"
    assert last(fs, "symlink target= path=l") == "ENOENT"  # getname("")


@BOTH
def test_symlinks_are_followed_in_the_middle_and_at_the_end(fs: str) -> None:
    m, res = run(
        fs,
        "mkdir path=d mode=755",
        "symlink target=d path=l",
        "creat path=l/f mode=600",
        "write path=l/f off=0 len=3 seed=1",
        "symlink target=l/f path=l2",
        "read path=l2 off=0 len=10",
    )
    assert res == ["0", "0", "0", "3", "0", "3"]
    assert m.entries()["d/f"].sha256 == hashlib.sha256(write_data(1, 3)).hexdigest()


@BOTH
def test_symlink_loops_and_dangling_links(fs: str) -> None:
    assert last(fs, "symlink target=a path=a", "write path=a off=0 len=1 seed=0") == "ELOOP"
    assert last(fs, "symlink target=b path=a", "truncate path=a size=0") == "ENOENT"
    # 40 links may be followed (MAXSYMLINKS), the 41st is ELOOP
    chain = [f"symlink target=l{i + 1} path=l{i}" for i in range(41)] + ["creat path=l41 mode=644"]
    assert last(fs, *chain, "fsync path=l1") == "0"
    assert last(fs, *chain, "fsync path=l0") == "ELOOP"


@BOTH
def test_unlink_and_rmdir(fs: str) -> None:
    assert last(fs, "mkdir path=d mode=755", "unlink path=d") == "EISDIR"  # may_delete
    assert last(fs, "creat path=f mode=644", "rmdir path=f") == "ENOTDIR"
    assert last(fs, "mkdir path=d mode=755", "symlink target=d path=l", "rmdir path=l") == "ENOTDIR"
    assert (
        last(fs, "mkdir path=d mode=755", "creat path=d/f mode=644", "rmdir path=d") == "ENOTEMPTY"
    )


# ---- rename and link (do_renameat2, vfs_rename, do_linkat, vfs_link) ---------------------


@BOTH
def test_rename_checks_in_kernel_order(fs: str) -> None:
    d = "mkdir path=a mode=755"
    assert last(fs, d, "mkdir path=a/b mode=755", "rename old=a new=a/b/c") == "EINVAL"
    # target an ancestor of the source: ENOTEMPTY even for a file source (lock_rename trap)
    assert last(fs, d, "creat path=a/f mode=644", "rename old=a/f new=a") == "ENOTEMPTY"
    assert last(fs, d, "creat path=f mode=644", "rename old=f new=a") == "EISDIR"
    assert last(fs, d, "creat path=f mode=644", "rename old=a new=f") == "ENOTDIR"
    assert (
        last(fs, d, "mkdir path=b mode=755", "creat path=b/x mode=644", "rename old=a new=b")
        == "ENOTEMPTY"
    )
    assert last(fs, "rename old=x new=y") == "ENOENT"


@BOTH
def test_rename_between_links_of_one_inode_changes_nothing(fs: str) -> None:
    m, res = run(fs, "creat path=a mode=644", "link old=a new=b", "rename old=a new=b")
    assert res == ["0", "0", "0"]
    e = m.entries()
    assert set(e) == {"a", "b"} and e["a"].nlink == 2 and e["a"].links == ("b",)


@BOTH
def test_rename_replaces_and_drops_the_target_link(fs: str) -> None:
    m, _ = run(
        fs,
        "creat path=a mode=644",
        "creat path=b mode=600",
        "link old=b new=c",
        "rename old=a new=b",
    )
    e = m.entries()
    assert set(e) == {"b", "c"}
    assert e["b"].mode == 0o644 and e["b"].nlink == 1 and e["c"].nlink == 1


@BOTH
def test_link_errors(fs: str) -> None:
    assert last(fs, "mkdir path=d mode=755", "link old=d new=e") == "EPERM"  # vfs_link
    assert (
        last(fs, "creat path=a mode=644", "creat path=b mode=644", "link old=a new=b") == "EEXIST"
    )
    assert last(fs, "link old=a new=b") == "ENOENT"
    # a hard link to a symlink, not to its target (no AT_SYMLINK_FOLLOW)
    m, _ = run(fs, "symlink target=zz path=l", "link old=l new=m")
    assert m.entries()["m"].type == "symlink" and m.entries()["m"].nlink == 2


# ---- data -------------------------------------------------------------------------------


@BOTH
def test_data_ops(fs: str) -> None:
    m, res = run(
        fs,
        "creat path=f mode=644",
        "write path=f off=10 len=5 seed=2",
        "writev path=f off=0 seed=3 iov=2,0,1",
        "fallocate path=f mode=zero_range|keep_size off=12 len=100",
        "fallocate path=f mode=alloc off=0 len=20",
        "truncate path=f size=25",
        "read path=f off=0 len=100",
    )
    assert res == ["0", "5", "3", "0", "0", "0", "25"]
    want = bytearray(10) + write_data(2, 5)
    want[0:3] = write_data(3, 3)
    want[12:15] = bytes(3)  # zeroed within the size, size kept at 15
    want += bytes(5)  # allocate to 20
    want += bytes(5)  # truncate up to 25
    assert m.entries()["f"].sha256 == hashlib.sha256(bytes(want)).hexdigest()
    assert m.entries()["f"].size == 25


@BOTH
def test_fallocate_mode_checks(fs: str) -> None:
    c = "creat path=f mode=644"
    assert last(fs, c, "fallocate path=f mode=punch_hole off=0 len=1") == "EOPNOTSUPP"
    assert last(fs, c, "fallocate path=f mode=alloc off=0 len=0") == "EINVAL"
    assert last(fs, c, "fallocate path=f mode=punch_hole|zero_range off=0 len=1") == "EOPNOTSUPP"
    assert last(fs, "mkdir path=d mode=755", "fallocate path=d mode=alloc off=0 len=1") == "EISDIR"
    m, _ = run(fs, c, "fallocate path=f mode=keep_size off=0 len=4096")
    assert m.entries()["f"].size == 0
    m, _ = run(fs, c, "fallocate path=f mode=zero_range off=4096 len=10")
    assert m.entries()["f"].size == 4106


@BOTH
def test_reads_and_writes_on_directories(fs: str) -> None:
    d = "mkdir path=d mode=755"
    assert last(fs, d, "read path=d off=0 len=1") == "EISDIR"  # generic_read_dir
    assert last(fs, d, "write path=d off=0 len=1 seed=0") == "EISDIR"  # may_open
    assert last(fs, d, "truncate path=d size=0") == "EISDIR"  # vfs_truncate
    assert last(fs, d, "fsync path=d") == "0"


def test_planted_faults_change_exactly_their_op() -> None:
    f = Faults(truncate_extra_byte=True)
    m, _ = run(
        "ext4",
        "creat path=f mode=644",
        "write path=f off=0 len=4 seed=1",
        "truncate path=f size=2",
        faults=f,
    )
    assert m.entries()["f"].size == 3
    m, _ = run("ext4", "creat path=f mode=644", "truncate path=f size=9", faults=f)
    assert m.entries()["f"].size == 9  # growing is untouched
    g = Faults(rename_no_replace=True)
    m, res = run(
        "ext4", "creat path=a mode=644", "creat path=b mode=600", "rename old=a new=b", faults=g
    )
    assert res[-1] == "0" and set(m.entries()) == {"a", "b"}
    assert Faults.parse("rename_no_replace") == g and g.spec() == "rename_no_replace"
    with pytest.raises(ValueError):
        Faults.parse("nope")


# ---- per-filesystem fields --------------------------------------------------------------


def test_directory_nlink_and_size_per_filesystem() -> None:
    ops = ("mkdir path=d mode=755", "mkdir path=d/e mode=700", "creat path=d/abc mode=644")
    b = run("btrfs", *ops)[0].entries()["d"]
    e = run("ext4", *ops)[0].entries()["d"]
    assert (b.nlink, b.size) == (1, 2 * (1 + 3))  # btrfs: nlink 1; size 2 x name lengths
    assert (e.nlink, e.size) == (3, None)  # ext4: 2 + one subdirectory; size not compared
    assert b.mode == 0o755 and run("btrfs", *ops)[0].entries()["d/e"].mode == 0o700


def test_walk_records_take_the_same_rules() -> None:
    recs = [
        {"path": "d", "mode": 0o40755, "nlink": 1, "size": 8, "ino": 257, "dev": 40},
        {"path": "s", "mode": 0o40777, "nlink": 1, "size": 0, "ino": 256, "dev": 41},
        {
            "path": "f",
            "mode": 0o100644,
            "nlink": 2,
            "size": 3,
            "ino": 258,
            "dev": 40,
            "sha256": "x",
        },
        {
            "path": "d/g",
            "mode": 0o100644,
            "nlink": 2,
            "size": 3,
            "ino": 258,
            "dev": 40,
            "sha256": "x",
        },
    ]
    b = entries_from_walk(recs, BTRFS)
    assert b["s"].subvol == "subvol" and b["d"].subvol == "" and b["d"].size == 8
    assert b["f"].links == ("d/g",)
    e = entries_from_walk(recs, EXT4)
    assert e["d"].size is None and e["d"].subvol is None


# ---- btrfs subvolumes -------------------------------------------------------------------


def test_cross_subvolume_rename_and_link_are_exdev() -> None:
    s = ("subvol_create path=s", "creat path=f mode=644")
    assert last("btrfs", *s, "rename old=f new=s/f") == "EXDEV"  # btrfs_rename: root != dest
    assert last("btrfs", *s, "link old=f new=s/h") == "EXDEV"  # btrfs_link
    # a subvolume root may move between subvolumes
    assert (
        last("btrfs", "subvol_create path=s", "subvol_create path=t", "rename old=t new=s/t") == "0"
    )
    # replacing a subvolume root is ENOTEMPTY even when it is empty
    assert (
        last("btrfs", "subvol_create path=s", "mkdir path=d mode=755", "rename old=d new=s")
        == "ENOTEMPTY"
    )


def test_snapshot_copies_with_stubs_and_not_itself() -> None:
    m, res = run(
        "btrfs",
        "creat path=f mode=644",
        "link old=f new=g",
        "subvol_create path=n",
        "creat path=n/x mode=644",
        "snapshot src=. path=snap",
        subvol=True,
    )
    assert res == ["0"] * 5
    e = m.entries()
    assert "snap/snap" not in e  # copied before the new entry is inserted
    assert e["snap/n"].subvol == "stub" and e["snap/n"].mode == 0o755 and "snap/n/x" not in e
    assert e["snap/f"].nlink == 2 and e["snap/f"].links == ("snap/g",)
    assert e["snap"].subvol == "subvol" and e["snap"].mode == 0o777
    # in a stub: create EACCES, mkdir EPERM, rename into it EPERM; the stub may be rmdir'd
    assert m.apply(parse_op("p0 9 creat path=snap/n/a mode=644")).result == "EACCES"
    assert m.apply(parse_op("p0 10 mkdir path=snap/n/a mode=755")).result == "EPERM"
    assert m.apply(parse_op("p0 11 rename old=snap/f new=snap/n/f")).result == "EPERM"
    assert m.apply(parse_op("p0 12 rename old=snap/n new=snap/m")).result == "ENOTEMPTY"
    assert m.apply(parse_op("p0 13 rmdir path=snap/n")).result == "0"


def test_snapshot_and_subvolume_delete_errors() -> None:
    assert last("btrfs", "mkdir path=d mode=755", "snapshot src=d path=s") == "EINVAL"
    assert last("btrfs", "snapshot src=. path=s", subvol=False) == "EINVAL"
    # EINVAL (not a subvolume) is decided before EEXIST
    assert last("btrfs", "mkdir path=d mode=755", "snapshot src=d path=d") == "EINVAL"
    assert last("btrfs", "mkdir path=d mode=755", "subvol_delete path=d") == "EINVAL"
    assert last("btrfs", "creat path=f mode=644", "subvol_delete path=f") == "ENOTDIR"
    nested = ("subvol_create path=s", "subvol_create path=s/t")
    assert last("btrfs", *nested, "subvol_delete path=s") == "ENOTEMPTY"  # may_destroy_subvol
    assert last("btrfs", *nested, "rmdir path=s") == "ENOTEMPTY"
    assert last("btrfs", "subvol_create path=s", "rmdir path=s") == "0"  # btrfs_delete_subvolume
    assert (
        last("btrfs", "subvol_create path=s", "creat path=s/f mode=644", "subvol_delete path=s")
        == "0"
    )
    assert last("ext4", "subvol_create path=s") == "ENOTTY"


def test_unmodelled_paths_raise() -> None:
    m = FsModel("ext4")
    m.apply(parse_op("p0 0 symlink target=../up path=l"))
    with pytest.raises(Unmodeled):
        m.apply(parse_op("p0 1 read path=l off=0 len=1"))
    res = check_log(
        "ext4",
        [parse_op("p0 0 symlink target=/abs path=l -> 0"), parse_op("p0 1 fsync path=l -> 0")],
        None,
    )
    assert [d.kind for d in res.differences] == ["unmodeled"]


def test_differences_name_the_op_that_caused_them() -> None:
    ops = [
        parse_op("p0 0 creat path=a mode=644 -> 0"),
        parse_op("p0 1 write path=a off=0 len=4 seed=9 -> 4"),
        parse_op("p0 2 mkdir path=d mode=755 -> 0"),
        parse_op("p0 3 rename old=a new=d/a -> 0"),
        parse_op("p0 4 read path=d/a off=0 len=4 -> 3 sha256=00"),
    ]
    m = FsModel("btrfs")
    for op in ops:
        m.apply(op)
    real = dict(m.entries())
    real["d/a"] = Entry("d/a", "file", 0o644, 3, 1, sha256="00")
    del real["d"]
    diffs = {(d.path, d.field): d.op for d in diff_trees(m.entries(), real, m)}
    assert diffs[("d/a", "size")] == "p0#1 write"  # the inode's last change
    assert diffs[("d", "exists")] == "p0#2 mkdir"  # the last op naming the path
    res = check_log("btrfs", ops, None)
    assert [str(d) for d in res.differences] == [
        "p0#4 read: expected 4, got 3 [d/a]",
    ]
