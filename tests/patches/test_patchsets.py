"""The kernel builder's ``build:`` specs over the series of ``patches/``: the patch sets the
harness hands to vm/kbuild.py (diff files in order, config lines), vm/kconfig/'s config-only
fragments beside them, and the build cache key following patch bytes and config.

Expected values come from the series.yaml files and vm/kconfig/ fragments themselves, read
here with PyYAML, and from the patch files (a cover letter carries no ``diff --git``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from harness.kernel.patchsets import series_patch_sets
from vm import kbuild
from vm.errors import KernelSpecError
from vm.kernels import resolve_kernel

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "patches"


def test_spec_parsing() -> None:
    """Through the sets the harness registered (tests/conftest.py, as the CLI does)."""
    req = kbuild.parse_build_spec("6.12")
    assert req.base == "6.12" and req.series == () and req.spec == "build:6.12"
    req = kbuild.parse_build_spec("6.12+skinny-bg-tree+debug")
    assert [s.name for s in req.series] == ["skinny-bg-tree", "debug"]
    assert req.spec == "build:6.12+skinny-bg-tree+debug"
    assert req.source.version == "6.12.117-1~deb12u1"
    with pytest.raises(KernelSpecError, match=r"unknown base '6\.13'"):
        kbuild.parse_build_spec("6.13")
    with pytest.raises(KernelSpecError, match=r"no series 'nope'.*skinny-bg-tree"):
        kbuild.parse_build_spec("6.12+nope")
    with pytest.raises(KernelSpecError, match="once"):
        kbuild.parse_build_spec("6.12+debug+debug")


def test_build_scheme_is_registered() -> None:
    with pytest.raises(KernelSpecError, match="no series"):
        resolve_kernel("build:6.12+no-such-series")


def test_without_the_harness_vm_knows_only_its_fragments() -> None:
    """vm/ alone (no sets given) finds vm/kconfig/'s fragments, not patches/."""
    assert kbuild.parse_build_spec("6.12+debug", {}).series[0].origin == "vm/kconfig/debug.config"
    with pytest.raises(KernelSpecError, match="no series 'skinny-bg-tree'"):
        kbuild.parse_build_spec("6.12+skinny-bg-tree", {})


def test_series_patch_sets_are_what_series_yaml_lists() -> None:
    """Every series: its diff files in series.yaml order, the cover letter left out, its
    config lines and status; skinny-bg-tree's five diffs in order."""
    sets = series_patch_sets(PATCHES)
    folders = sorted(p.parent.name for p in PATCHES.glob("*/series.yaml"))
    assert sorted(sets) == folders
    for name in folders:
        doc = yaml.safe_load((PATCHES / name / "series.yaml").read_text())
        s = sets[name]
        diffs = [n for n in doc["patches"] if "\ndiff --git " in (PATCHES / name / n).read_text()]
        assert [p.name for p in s.patch_files] == diffs, name
        assert all(p.parent == PATCHES / name and p.is_file() for p in s.patch_files)
        assert s.config == tuple(doc["config"]), name
        assert (s.status, s.origin) == (doc["status"], f"patches/{name}")
    skinny = yaml.safe_load((PATCHES / "skinny-bg-tree/series.yaml").read_text())
    assert skinny["patches"][0] == "0000-cover-letter.patch"
    assert [p.name for p in sets["skinny-bg-tree"].patch_files] == skinny["patches"][1:]
    assert len(sets["skinny-bg-tree"].patch_files) == 5 and not sets["skinny-bg-tree"].config_only
    e = sets["extent-tree-v2"]
    assert e.config_only and "CONFIG_BTRFS_DEBUG=y" in e.config


def test_fragments_beside_the_series() -> None:
    known = kbuild.patch_sets(series_patch_sets(PATCHES))
    d = known["debug"]  # vm/kconfig/debug.config: no series of that name
    assert d.config_only and "CONFIG_KASAN=y" in d.config and "CONFIG_PROVE_LOCKING=y" in d.config
    assert d.origin == "vm/kconfig/debug.config"
    # the fragment's settings in order, "# CONFIG_X is not set" as CONFIG_X=n (kconfig's n)
    expect = []
    for ln in (ROOT / "vm/kconfig/debug.config").read_text().splitlines():
        if ln.startswith("CONFIG_"):
            expect.append(ln.strip())
        elif m := re.fullmatch(r"# (CONFIG_\w+) is not set", ln.strip()):
            expect.append(f"{m.group(1)}=n")
    assert list(d.config) == expect
    assert "guest" not in known  # vm's own fragment is no series
    with pytest.raises(KernelSpecError, match="no series 'guest'"):
        kbuild.parse_build_spec("6.12+guest", series_patch_sets(PATCHES))


def test_config_only_refuses_a_patched_series() -> None:
    sets = series_patch_sets(PATCHES)
    req = kbuild.make_request("6.12", ["skinny-bg-tree"], ["debug"], sets)
    assert req.spec == "build:6.12+skinny-bg-tree+debug"
    with pytest.raises(KernelSpecError, match="5 patch"):
        kbuild.make_request("6.12", [], ["skinny-bg-tree"], sets)


def test_a_bad_config_line_is_refused(tmp_path: Path) -> None:
    bad = kbuild.KernelPatchSet("x", (), ("CONFIG_A=y", "BTRFS=y"), origin="patches/x")
    with pytest.raises(KernelSpecError, match="patches/x: 'BTRFS=y' is not a CONFIG_X=value"):
        kbuild.parse_build_spec("6.12+x", {"x": bad})


# ---------------------------------------------------------------- cache keys


def test_key_follows_patch_bytes_and_config(tmp_path: Path) -> None:
    root = tmp_path / "patches"
    shutil.copytree(PATCHES / "skinny-bg-tree", root / "skinny-bg-tree")
    tool = ["gcc 12", "ld 2.40"]

    def key(rest: str) -> tuple[str, str]:
        req = kbuild.parse_build_spec(rest, series_patch_sets(root))
        merged, _ = kbuild.merge_fragments(kbuild.request_fragments(req))
        return kbuild.build_key(req, merged, tool), kbuild.config_key(req, merged)

    base, skinny, debug = key("6.12"), key("6.12+skinny-bg-tree"), key("6.12+skinny-bg-tree+debug")
    assert len({base[0], skinny[0], debug[0]}) == 3
    # the series adds no config the guest fragment lacks: baseline and series share objects
    assert base[1] == skinny[1] != debug[1]
    assert key("6.12+skinny-bg-tree") == skinny
    p = root / "skinny-bg-tree" / "0003-btrfs-read-skinny-block-group-items-at-mount.patch"
    p.write_text(p.read_text().replace("lockless is fine", "lockless is fine."))
    assert key("6.12+skinny-bg-tree")[0] != skinny[0]
    assert key("6.12+skinny-bg-tree")[1] == skinny[1]
    req = kbuild.parse_build_spec("6.12", {})
    merged, _ = kbuild.merge_fragments(kbuild.request_fragments(req))
    assert kbuild.build_key(req, merged, ["gcc 13"]) != base[0]
