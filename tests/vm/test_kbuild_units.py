"""vm/kbuild.py without compiling a kernel: config fragments and the check that they survived,
patch application and the work tree's switching between series, the error lines shown for a
failed build. (Specs, the patch sets and the cache key: tests/patches/test_patchsets.py.)

Expected values come from the files in vm/kconfig/ themselves, from GNU diff and
patch (the synthetic patches are made by ``diff -u``), and from the kconfig ``.config``
syntax (``CONFIG_X=v`` / ``# CONFIG_X is not set``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tools import require_tool
from vm import kbuild
from vm.errors import KernelSpecError
from vm.guestroot import MODULE_CONFIG, OPTIONAL_MODULES, REQUIRED_MODULES, missing_builtins
from vm.kernels import Kernel

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- fragments


def test_fragment_lines() -> None:
    p = kbuild.parse_config_line
    assert p("CONFIG_A=y", "t") == kbuild.ConfigOption("CONFIG_A", "y", "t")
    assert p("# CONFIG_B is not set", "t") == kbuild.ConfigOption("CONFIG_B", "n", "t")
    assert p('CONFIG_C="x y"', "t") == kbuild.ConfigOption("CONFIG_C", '"x y"', "t")
    assert p("  # a comment", "t") is None and p("", "t") is None
    with pytest.raises(KernelSpecError, match="not a CONFIG_X=value"):
        p("BTRFS_FS=y", "t")


def test_merge_later_wins_and_survival_check() -> None:
    a = kbuild.parse_fragment("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=n\n", "vm")
    b = kbuild.parse_fragment("CONFIG_B=n\nCONFIG_D=y\n", "patches/x")
    merged, notes = kbuild.merge_fragments([("vm", a), ("x", b)])
    assert [o.line for o in merged.values()] == [
        "CONFIG_A=y",
        "CONFIG_B=n",
        "CONFIG_C=n",
        "CONFIG_D=y",
    ]
    assert notes == ["patches/x sets CONFIG_B=n over vm's CONFIG_B=y"]
    dot = kbuild.parse_dotconfig(
        "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n# CONFIG_D is not set\n"
    )
    lost = kbuild.fell_out(merged, dot)
    assert lost == [
        "CONFIG_C=n (got: y; from vm)",
        "CONFIG_D=y (got: not set; from patches/x)",
    ]
    # an absent symbol counts as n
    assert kbuild.fell_out(merged, {"CONFIG_A": "y", "CONFIG_D": "y"}) == []


def test_apply_fragment_replaces_symbols() -> None:
    merged, _ = kbuild.merge_fragments(
        [("t", kbuild.parse_fragment("CONFIG_A=y\nCONFIG_B=n\nCONFIG_NEW=y\n", "t"))]
    )
    out = kbuild.apply_fragment("# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_KEEP=y\n", merged)
    assert kbuild.parse_dotconfig(out) == {
        "CONFIG_KEEP": "y",
        "CONFIG_A": "y",
        "CONFIG_B": "n",
        "CONFIG_NEW": "y",
    }


def test_guest_fragment_builds_in_what_the_guest_root_loads() -> None:
    """Every module the guest root loads on a Debian kernel is built in (=y), and module
    support is off: the guest root then needs no modules directory."""
    frag = {o.name: o.value for o in kbuild.parse_fragment(kbuild.GUEST_FRAGMENT.read_text(), "vm")}
    assert set(MODULE_CONFIG) == {*REQUIRED_MODULES, *OPTIONAL_MODULES}
    for mod, sym in MODULE_CONFIG.items():
        assert frag.get(f"CONFIG_{sym}") == "y", mod
    assert frag["CONFIG_MODULES"] == "n"
    for sym in ("FTRACE", "FUNCTION_GRAPH_TRACER", "KPROBE_EVENTS", "FUTEX", "EPOLL", "UNIX"):
        assert frag[f"CONFIG_{sym}"] == "y", sym
    for sym in ("UNIX98_PTYS", "ACPI", "MAGIC_SYSRQ", "EXT4_FS", "BTRFS_FS", "DM_DELAY"):
        assert frag[f"CONFIG_{sym}"] == "y", sym


def test_missing_builtins(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    lines = [f"CONFIG_{s}=y" for s in MODULE_CONFIG.values() if s != "DM_FLAKEY"]
    cfg.write_text("\n".join([*lines, "# CONFIG_DM_FLAKEY is not set"]) + "\n")
    k = Kernel("path:x", "6.12.117", tmp_path / "bzImage", None, cfg)
    assert missing_builtins(k) == ["dm_flakey (CONFIG_DM_FLAKEY=n)"]
    assert missing_builtins(Kernel("path:x", "r", tmp_path / "b", tmp_path, cfg)) == []


# ---------------------------------------------------------------- patches and the work tree


def _diff(old: Path, new: Path, cwd: Path) -> str:
    r = subprocess.run(
        ["diff", "-Naur", old.name, new.name], cwd=cwd, capture_output=True, text=True
    )
    assert r.returncode == 1, r.stderr  # 1: the trees differ
    # diff names the two top directories; patch -p1 strips them (as a/ and b/)
    return r.stdout


def _tree(tmp: Path) -> Path:
    t = tmp / "a"
    (t / "fs").mkdir(parents=True)
    (t / "fs" / "one.c").write_text("".join(f"line {i}\n" for i in range(40)))
    (t / "fs" / "two.h").write_text("#define TWO 2\n")
    (t / "Makefile").write_text("all:\n")
    return t


def test_patch_then_switch_back(tmp_path: Path) -> None:
    require_tool("patch")
    require_tool("diff")
    tree = _tree(tmp_path)
    new = tmp_path / "b"
    shutil.copytree(tree, new)
    (new / "fs" / "one.c").write_text((new / "fs" / "one.c").read_text().replace("line 7", "seven"))
    (new / "fs" / "three.c").write_text("new file\n")
    patch = tmp_path / "0001.patch"
    patch.write_text(_diff(tree, new, tmp_path))
    assert kbuild.touched_paths(patch) == ["fs/one.c", "fs/three.c"]

    top = tmp_path / "kb"
    top.mkdir()
    old_mtime = (tree / "fs" / "two.h").stat().st_mtime_ns
    one_before = (tree / "fs" / "one.c").stat().st_mtime_ns
    time.sleep(0.01)

    def switch(patches: list[Path]) -> list[str]:
        st = kbuild.TreeState.load(tree, top)
        scratch = tmp_path / f"scratch{time.monotonic_ns()}"
        scratch.mkdir()
        return st.sync(kbuild.apply_patches(st, patches, scratch))

    assert switch([patch]) == ["fs/one.c", "fs/three.c"]
    assert (tree / "fs" / "one.c").read_text() == (new / "fs" / "one.c").read_text()
    assert (tree / "fs" / "three.c").read_text() == "new file\n"
    assert (tree / "fs" / "two.h").stat().st_mtime_ns == old_mtime  # untouched: not rebuilt
    assert (tree / "fs" / "one.c").stat().st_mtime_ns > one_before
    assert kbuild.TreeState.load(tree, top).dirty == {"fs/one.c", "fs/three.c"}
    assert switch([patch]) == []  # already there: nothing rewritten
    # back to the baseline: pristine content with a new mtime, the new file gone
    assert switch([]) == ["fs/one.c", "fs/three.c"]
    assert (tree / "fs" / "one.c").read_text() == (
        tmp_path / "b" / "fs" / "one.c"
    ).read_text().replace("seven", "line 7")
    assert not (tree / "fs" / "three.c").exists()
    assert kbuild.TreeState.load(tree, top).dirty == set()


def test_patch_that_does_not_apply_shows_the_rejected_hunk(tmp_path: Path) -> None:
    require_tool("patch")
    require_tool("diff")
    tree = _tree(tmp_path)
    new = tmp_path / "b"
    shutil.copytree(tree, new)
    (new / "fs" / "one.c").write_text((new / "fs" / "one.c").read_text().replace("line 20", "xx"))
    patch = tmp_path / "0001-x.patch"
    patch.write_text(_diff(tree, new, tmp_path))
    # the tree drifted under the hunk's context
    (tree / "fs" / "one.c").write_text((tree / "fs" / "one.c").read_text().replace("line 19", "19"))
    st = kbuild.TreeState.load(tree, tmp_path / "kb")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(kbuild.KernelBuildError) as ei:
        kbuild.apply_patches(st, [patch], scratch)
    msg = str(ei.value)
    assert "0001-x.patch does not apply" in msg
    assert "Hunk #1 FAILED" in msg  # GNU patch's words
    assert "rejected hunks of fs/one.c" in msg and "+xx" in msg and "-line 20" in msg


def test_error_lines_of_a_failed_build() -> None:
    log = "\n".join(
        [
            "  CC      fs/btrfs/super.o",
            "  CC      fs/btrfs/block-group.o",
            "fs/btrfs/block-group.c: In function 'read_one_skinny_block_group':",
            "fs/btrfs/block-group.c:2411:9: error: implicit declaration of function 'foo'",
            "  2411 |         foo();",
            "make[4]: *** [scripts/Makefile.build:229: fs/btrfs/block-group.o] Error 1",
            "make: *** [Makefile:224: __sub-make] Error 2",
        ]
    )
    out = kbuild.error_lines(log)
    assert out[0].endswith("In function 'read_one_skinny_block_group':")
    assert "error: implicit declaration" in out[1]
    assert any("block-group.o] Error 1" in ln for ln in out)
    assert not any("CC" in ln for ln in out)


def test_cli_list_runs(tmp_path: Path) -> None:
    env = dict(os.environ, FSORACLE_CACHE=str(tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "kernel", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert "no cached kernels" in r.stdout


def test_error_lines_show_what_a_tool_said() -> None:
    """No compiler error: the line before make's first *** line (kconfig, the linker...)."""
    log = "\n".join(
        [
            "  HOSTLD  scripts/kconfig/conf",
            'init/Kconfig:1404: can\'t open file "usr/Kconfig"',
            "make[5]: *** [scripts/kconfig/Makefile:85: allnoconfig] Error 1",
            "make[4]: *** [Makefile:707: allnoconfig] Error 2",
        ]
    )
    out = kbuild.error_lines(log)
    assert out[0] == 'init/Kconfig:1404: can\'t open file "usr/Kconfig"'
    assert "HOSTLD" not in "\n".join(out)
