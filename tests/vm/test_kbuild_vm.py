"""Kernels built from Debian's linux-source-6.12 with the SKINNY_BG_TREE forward-port
(issue 7), booted on images written by ``fsoracle btrfs mkfs``.

- ``build:6.12+skinny-bg-tree`` mounts a skinny image, names the feature in sysfs, survives a
  stress run with block groups created and removed and a crash run; afterwards every skinny
  item's key offset equals the bytes of the extents in its block group.
- ``build:6.12+skinny-bg-tree+debug`` (KASAN, lockdep, BTRFS_ASSERT) does the same with no
  report on the console.
- On the extent-tree and bg-tree layouts the patched kernel gives what the unpatched
  ``build:6.12`` gives (one process, same seed: same op results, same tree).
- Refusals: ``build:6.12`` refuses the skinny image (unknown incompat); the patched kernel
  refuses a skinny tree holding a regular (192) item with -EUCLEAN.

The first use builds each kernel (``make vm-test`` budget: the skinny build cold is ~10-15
min here, the baseline after it an incremental fs/btrfs rebuild); later runs take them from
the cache. Expected values: the kernel's and the patches' own messages, the images' content
read by our reader (extent sums are arithmetic over the extent tree), the ops' results the
model predicts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.target import TargetSpec
from harness.workload.crash import CrashReport, crash_jobs, run_crashes
from harness.workload.hostmount import MkfsSpec
from model.btrfs import constants as C
from tests.vm.kbuild_guest import (
    DEV,
    MNT,
    GuestRun,
    block_groups,
    machine,
    mkfs,
    mount_attempt,
    our_check,
    skinny_mismatches,
    stress_run,
)
from tests.vm.vmtesting import VM_TOOLS, require_root, require_tools
from vm.kernels import Kernel, resolve_kernel

pytestmark = pytest.mark.vm

SKINNY = "build:6.12+skinny-bg-tree"
BASE = "build:6.12"
DEBUG = "build:6.12+skinny-bg-tree+debug"
ETV2 = "build:6.12+extent-tree-v2"
ROOT = Path(__file__).resolve().parents[2]
SERIES = ROOT / "patches" / "skinny-bg-tree"


def _kernel(spec: str) -> Kernel:
    require_tools(*VM_TOOLS, "make", "gcc", "flex", "bison", "bc", "patch")
    require_root()
    return resolve_kernel(spec)


@pytest.fixture(scope="session")
def skinny_kernel() -> Kernel:
    return _kernel(SKINNY)


@pytest.fixture(scope="session")
def base_kernel(skinny_kernel: Kernel) -> Kernel:  # after the series: an incremental build
    return _kernel(BASE)


@pytest.fixture(scope="session")
def debug_kernel(skinny_kernel: Kernel) -> Kernel:
    return _kernel(DEBUG)


def _assert_clean(run: GuestRun) -> None:
    rep = run.report
    assert rep is not None
    assert rep.model is not None and rep.model.ok, "\n".join(rep.lines())
    assert not rep.view_differences and not rep.view_findings, "\n".join(rep.lines())
    assert all(c.ok for c in rep.checkers), "\n".join(rep.lines())
    assert rep.ops_logged >= rep.procs * rep.ops_per_proc


def _assert_churned(run: GuestRun) -> None:
    """The churn created block groups and removed some (logical addresses only grow)."""
    new = run.bgs_after.keys() - run.bgs_before.keys()
    gone = run.bgs_before.keys() - run.bgs_after.keys()
    assert new and min(new) > max(run.bgs_before), (sorted(new), sorted(run.bgs_before))
    assert gone, "balance removed no block group"


def _crash_run(spec: str, tmp_path: Path) -> CrashReport:
    """The stress issue's crash run (``fsoracle stress --target vm --fs btrfs --mkfs writer
    --layout skinny-bg-tree --seed 3 --ops 400 --procs 2 --crash-at 500``) on ``spec``: the
    power is cut at op line 500 of 802, a second boot replays the log tree; both the crash
    rules (fsync'd files exact, nothing garbage) and our checker must hold, and every skinny
    item's used bytes must still equal its block group's extents."""
    spec_fs = MkfsSpec("btrfs", "writer", "skinny-bg-tree")
    (job,) = crash_jobs(
        spec_fs, tmp_path / "crash", seed=3, ops=400, procs=2, crash_at="500", keep_image=True
    )
    (rep,) = run_crashes(TargetSpec(kind="vm", kernel=spec), [job])
    assert rep.ok, "\n".join(rep.lines())
    assert 500 <= rep.lines_at_kill <= rep.ops_logged < 802 and not rep.driver_finished
    assert rep.replay_messages and not rep.mount_error
    assert rep.crash is not None and rep.crash.strict_checked > 0
    # btrfs-progs cannot open the image: ours is the only checker, and it ran
    assert [c.name for c in rep.checkers] == ["fsoracle btrfs check --check-data-csum"]
    img = job.out / "fs.img"
    assert skinny_mismatches(img) == [] and our_check(img) == []
    assert all(t == C.SKINNY_BLOCK_GROUP_ITEM_KEY for t, _ in block_groups(img).values())
    return rep


def test_skinny_kernel_build_record(skinny_kernel: Kernel) -> None:
    """The cache entry says what went in: the series' five patches (by their bytes), the
    fragment (every option of it is in the final .config: the build checks, we re-check)."""
    entry = skinny_kernel.vmlinuz.parent
    meta = json.loads((entry / "kernel.json").read_text())
    assert meta["spec"] == SKINNY and meta["source"]["version"] == "6.12.117-1~deb12u1"
    assert skinny_kernel.release == meta["release"]
    assert re.fullmatch(r"6\.12\.117-fso-[0-9a-f]{8}", skinny_kernel.release)
    import hashlib

    import yaml

    names = yaml.safe_load((SERIES / "series.yaml").read_text())["patches"][1:]
    (series,) = meta["series"]
    assert [p["file"] for p in series["patches"]] == names
    for p in series["patches"]:
        assert p["sha256"] == hashlib.sha256((SERIES / p["file"]).read_bytes()).hexdigest()
    from vm.kbuild import parse_dotconfig

    final = parse_dotconfig((entry / "config").read_text())
    for line in meta["fragment"]:
        name, value = line.split("=", 1)
        assert final.get(name, "n") == value, line
    assert skinny_kernel.modules_dir is None and final.get("CONFIG_MODULES", "n") == "n"
    assert (entry / "build.log").stat().st_size > 0


def test_skinny_mount_stress_and_crash(skinny_kernel: Kernel, tmp_path: Path) -> None:
    img = tmp_path / "skinny.img"
    mkfs(img, "skinny-bg-tree")
    before = block_groups(img)
    assert before and all(t == C.SKINNY_BLOCK_GROUP_ITEM_KEY for t, _ in before.values())

    # checkers=False: btrfs-progs cannot open incompat bit 24; ours checks below
    run = stress_run(SKINNY, img, tmp_path / "stress", seed=7, ops=1500, procs=4, checkers=False)
    assert "skinny_bg_tree" in run.features["global"].split()
    assert "skinny_bg_tree" in run.features["mounted"].split()
    _assert_clean(run)
    _assert_churned(run)
    assert skinny_mismatches(img) == []
    assert our_check(img) == []

    _crash_run(SKINNY, tmp_path)


@pytest.mark.slow
@pytest.mark.heavy  # a second cold build: 31 min here (make vm-test-heavy)
def test_debug_build_skinny_runs_without_reports(debug_kernel: Kernel, tmp_path: Path) -> None:
    """KASAN + lockdep + BTRFS_ASSERT: the same runs; the machine fails the test on any
    console report (vm/console.py), and the checks were live (their boot lines)."""
    assert debug_kernel.config_value("KASAN") == "y"
    assert debug_kernel.config_value("PROVE_LOCKING") == "y"
    assert debug_kernel.config_value("BTRFS_ASSERT") == "y"
    img = tmp_path / "skinny.img"
    mkfs(img, "skinny-bg-tree")
    run = stress_run(DEBUG, img, tmp_path / "stress", seed=7, ops=500, procs=4, checkers=False)
    _assert_clean(run)
    _assert_churned(run)
    assert "KernelAddressSanitizer initialized" in run.dmesg
    assert "Lock dependency validator" in run.dmesg
    assert run.features["debug_locks"].split() == ["debug_locks:", "1"]  # still validating
    for word in ("BUG: KASAN", "WARNING:", "possible circular locking", "assertion failed"):
        assert word not in run.dmesg, word
    assert skinny_mismatches(img) == []
    # the machine reports KASAN/lockdep/WARNING lines as kernel faults, which fail rep.ok
    rep = _crash_run(DEBUG, tmp_path)
    assert rep.kernel_faults == []


@pytest.mark.parametrize("layout", ["extent-tree", "bg-tree"])
def test_other_layouts_same_as_baseline(
    layout: str, skinny_kernel: Kernel, base_kernel: Kernel, tmp_path: Path
) -> None:
    """One process, the same seed: the patched and the unpatched kernel return the same
    result for every op and leave the same tree (paths, modes, sizes, link counts, inode
    numbers, file hashes), and both images are clean for our checker and btrfs check."""
    runs = {}
    for spec in (SKINNY, BASE):
        img = tmp_path / f"{layout}-{spec.replace(':', '_').replace('+', '_')}.img"
        mkfs(img, layout)
        runs[spec] = stress_run(
            spec, img, tmp_path / spec.replace(":", "_"), seed=11, ops=2000, procs=1, churn=True
        )
        _assert_clean(runs[spec])
        _assert_churned(runs[spec])
        assert all(t == C.BLOCK_GROUP_ITEM_KEY for t, _ in block_groups(img).values())
    a, b = runs[SKINNY], runs[BASE]
    assert a.release != b.release

    def results(run: GuestRun) -> list[str]:
        assert run.log_path is not None
        return [ln for ln in run.log_path.read_text().splitlines() if not ln.startswith("#")]

    def tree(run: GuestRun) -> list[dict[str, object]]:
        # st_dev is an anonymous device number, st_blocks depends on when writeback ran
        return [{k: v for k, v in r.items() if k not in ("dev", "blocks")} for r in run.walk]

    assert results(a) == results(b)
    assert tree(a) == tree(b)
    assert sorted(a.bgs_after) == sorted(b.bgs_after)


def test_unpatched_kernel_refuses_skinny_image(base_kernel: Kernel, tmp_path: Path) -> None:
    img = tmp_path / "skinny.img"
    mkfs(img, "skinny-bg-tree")
    status, dmesg = mount_attempt(BASE, img, tmp_path / "vm")
    assert status != 0
    # 6.12 disk-io.c: "cannot mount because of unknown incompat features (0x%llx)"
    m = re.search(r"unknown incompat features \((0x[0-9a-f]+)\)", dmesg)
    assert m, dmesg[-2000:]
    assert int(m.group(1), 16) == C.INCOMPAT_SKINNY_BG_TREE


def test_skinny_tree_with_regular_item_is_refused(
    skinny_kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skinny block group tree holding one regular (start, 192, length) item: the patch's
    read_skinny_block_group_tree() stops with -EUCLEAN (-117) and the mount fails."""
    import model.btrfs.mkfs as mk

    real = mk.block_group_items

    def one_regular(spec, gids):  # type: ignore[no-untyped-def]
        items = real(spec, gids)
        regular = mk.FsSpec(**{**spec.__dict__, "layout": "bg-tree"})
        items[1] = real(regular, gids)[1]
        return items

    monkeypatch.setattr(mk, "block_group_items", one_regular)
    from model.blocksource import FileSink

    img = tmp_path / "mixed.img"
    with FileSink(str(img), 2 << 30) as sink:
        mk.make_btrfs(mk.MkfsConfig(size=2 << 30, layout="skinny-bg-tree"), sink)
    monkeypatch.undo()
    types = sorted(t for t, _ in block_groups(img).values())
    assert types.count(C.BLOCK_GROUP_ITEM_KEY) == 1 and types[-1] == C.SKINNY_BLOCK_GROUP_ITEM_KEY
    start = sorted(block_groups(img))[1]
    status, dmesg = mount_attempt(SKINNY, img, tmp_path / "vm")
    assert status != 0
    assert re.search(
        rf"unexpected item \({start} {C.BLOCK_GROUP_ITEM_KEY} \d+\) in skinny block group tree",
        dmesg,
    ), dmesg[-2000:]
    assert "-117" in dmesg


def test_extent_tree_v2_config_survives(base_kernel: Kernel) -> None:
    """The extent-tree-v2 config-only build (BTRFS_DEBUG, which puts EXTENT_TREE_V2 in 6.12's
    supported incompat set) configures with every fragment option kept. Configure only: the
    build itself is issue 11's (fsoracle kernel build --base 6.12 --config-only
    extent-tree-v2). Runs after the other builds, since it switches the source tree."""
    from vm.kbuild import check_config, parse_build_spec

    res = check_config(parse_build_spec("6.12+extent-tree-v2"))
    assert res.dotconfig["CONFIG_BTRFS_DEBUG"] == "y"
    assert res.dotconfig["CONFIG_BTRFS_FS"] == "y"
    assert "CONFIG_BTRFS_DEBUG=y" in [o.line for o in res.merged.values()]


def test_mount_bench_on_the_skinny_kernel(skinny_kernel: Kernel, tmp_path: Path) -> None:
    """``fsoracle bench mount`` (issue 5, preset small) on the patched kernel: all three
    layouts mount, and in every sample the tree blocks read inside btrfs_read_block_groups
    are exactly the model's prediction (the skinny layout included, which a stock kernel
    refuses). The assertions are the mount bench's own VM test's, with this kernel."""
    from tests.vm.test_mount_bench import test_mount_bench_small

    test_mount_bench_small(None, SKINNY, tmp_path)


def _global_root_ids(image: Path) -> dict[int, int]:
    from model.blocksource import FileSource
    from model.btrfs.blockgroups import read_block_groups
    from model.btrfs.reader import BtrfsImage

    with FileSource(str(image)) as src:
        return {bg.start: bg.global_root_id for bg in read_block_groups(BtrfsImage.open(src))}


@pytest.mark.slow
@pytest.mark.heavy  # its own cold build (BTRFS_DEBUG): 16 min here (make vm-test-heavy)
def test_extent_tree_v2_image_mounts_on_the_debug_build(tmp_path: Path) -> None:
    """Issue 11: 6.12 with BTRFS_DEBUG (which adds EXTENT_TREE_V2 to the supported incompat
    bits) mounts an image our writer made with four global roots, writes to it, and the data
    block groups it creates carry the global_root_id of 6.12's calculate_global_root_id():
    (start / 128 MiB) mod 4 on a filesystem of at most 10 GiB (block-group.c); our checker
    finds the image clean afterwards."""
    _kernel(ETV2)
    img = tmp_path / "etv2.img"
    mkfs(img, "extent-tree-v2", "2G", "--global-roots", "4")
    before = _global_root_ids(img)
    with machine(ETV2, img, "etv2", tmp_path / "vm", timeout=1200) as m:
        r = m.run(
            f"set -e; mkdir -p {MNT}; mount {DEV} {MNT}; ls /sys/fs/btrfs/features;"
            f" dd if=/dev/urandom of={MNT}/f bs=1M count=700 conv=fsync 2>/dev/null;"
            f" umount {MNT}",
            timeout=900,
        )
        dmesg = m.run("dmesg", check=True).out
        m.check_faults()
    (tmp_path / "dmesg.txt").write_text(dmesg)
    assert r.status == 0, r.err + dmesg[-2000:]
    assert "extent_tree_v2" in r.out.split()
    assert "debug=on" in dmesg
    after = _global_root_ids(img)
    new = sorted(after.keys() - before.keys())
    assert new, "the kernel created no block group"
    assert {s: after[s] for s in new} == {s: (s // (128 << 20)) % 4 for s in new}
    assert len({after[s] for s in new} | {before[s] for s in before}) > 1
    assert our_check(img) == []
