"""The kernel patch series in ``patches/``: every folder's ``series.yaml`` describes exactly the
files present, every patch is ``git format-patch`` output with a Signed-off-by, and (slow) the
skinny-bg-tree series applies in order to Debian's linux-source-6.12 and passes the kernel's
``scripts/checkpatch.pl --strict``.

Expected values come from the files themselves (what git format-patch writes), the kernel
patch text (the incompat bit and key type the patches define) and Debian's package name and
version the series names as its base."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import require_tool, run
from vm.cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "patches"
SERIES = sorted(p for p in PATCHES.iterdir() if p.is_dir())
STATUSES = {"merged-equivalent", "forward-ported", "model-only", "config-only"}

# The base of every forward-ported series: Debian bookworm-security's linux-source-6.12.
DEB_PACKAGE = "linux-source-6.12"
DEB_VERSION = "6.12.117-1~deb12u1"
DEB_FILE = f"{DEB_PACKAGE}_{DEB_VERSION}_all.deb"
TARBALL = "usr/src/linux-source-6.12.tar.xz"
TOPDIR = "linux-source-6.12"

# git format-patch's mbox separator line and subject prefix.
FROM_LINE = re.compile(r"^From [0-9a-f]{40} Mon Sep 17 00:00:00 2001$")
SUBJECT = re.compile(r"^\[PATCH (\d+)/(\d+)\] (\S.*)$")
SIGNED_OFF = re.compile(r"^Signed-off-by: .+ <[^<>@\s]+@[^<>\s]+>$", re.MULTILINE)
CONFIG_LINE = re.compile(r'^CONFIG_[A-Z0-9_]+=(y|m|n|-?\d+|0x[0-9a-fA-F]+|"[^"]*")$')


def load(series: Path) -> dict[str, Any]:
    doc = yaml.safe_load((series / "series.yaml").read_text())
    assert isinstance(doc, dict), f"{series.name}/series.yaml is not a mapping"
    return doc


def parse_patch(path: Path) -> tuple[int, int, str, str]:
    """(n, N, subject, body) of one format-patch file; asserts its mbox shape."""
    text = path.read_text()
    first = text.split("\n", 1)[0]
    assert FROM_LINE.match(first), f"{path.name}: first line {first!r} is not format-patch's"
    msg = email.message_from_string(text.split("\n", 1)[1], policy=email.policy.compat32)
    for header in ("From", "Date", "Subject"):
        assert msg[header], f"{path.name}: no {header} header"
    subject = " ".join(str(msg["Subject"]).split())
    m = SUBJECT.match(subject)
    assert m, f"{path.name}: subject {subject!r} is not '[PATCH n/N] ...'"
    body = msg.get_payload()
    assert isinstance(body, str)
    return int(m.group(1)), int(m.group(2)), m.group(3), body


@pytest.mark.parametrize("series", SERIES, ids=lambda p: p.name)
def test_series_yaml_shape(series: Path) -> None:
    doc = load(series)
    assert doc["name"] == series.name
    assert doc["status"] in STATUSES
    assert doc["title"]
    assert "base" in doc
    assert doc["upstream"], "name the upstream posting (message-id or null with a subject)"
    for up in doc["upstream"]:
        assert up.get("subject"), up
        assert "message-id" in up or "commit" in up, up
    for line in doc["config"]:
        assert CONFIG_LINE.match(line), f"{series.name}: config line {line!r}"
    if doc["status"] == "config-only":
        assert doc["config"], "a config-only series is its config fragment"
    for mod in doc["model"]:
        assert mod["state"] in ("written", "planned"), mod
        if mod["state"] == "written":
            assert (ROOT / mod["module"]).exists(), f"{mod['module']} is marked written"
    ids = [c["id"] for c in doc["claims"]]
    assert len(ids) == len(set(ids)), "claim ids repeat"
    for claim in doc["claims"]:
        for key in ("text", "seed", "unit", "measured_by"):
            assert key in claim, f"{series.name}: claim {claim['id']} lacks {key}"
    seed = doc["seed"]["file"]
    assert re.fullmatch(r"[a-z0-9-]+\.txt", seed), seed


@pytest.mark.parametrize("series", SERIES, ids=lambda p: p.name)
def test_series_lists_exactly_its_patches(series: Path) -> None:
    doc = load(series)
    present = sorted(p.name for p in series.glob("*.patch"))
    assert doc["patches"] == present
    others = sorted(
        p.name for p in series.iterdir() if p.suffix != ".patch" and p.name != "series.yaml"
    )
    assert others in ([], ["NOTES.md"]), f"unexpected files in {series.name}: {others}"
    if doc["status"] == "forward-ported":
        assert present, "a forward-ported series has patches"
    else:
        assert not present, f"a {doc['status']} series carries no patches"


@pytest.mark.parametrize("series", [s for s in SERIES if load(s)["patches"]], ids=lambda p: p.name)
def test_patches_are_format_patch_output(series: Path, tmp_path: Path) -> None:
    require_tool("git")
    names = load(series)["patches"]
    parsed = [parse_patch(series / n) for n in names]
    total = len(names) - 1
    assert names[0] == "0000-cover-letter.patch"
    for i, (name, (n, big_n, subject, body)) in enumerate(zip(names, parsed, strict=True)):
        assert (n, big_n) == (i, total), f"{name}: [PATCH {n}/{big_n}], expected {i}/{total}"
        assert name.startswith(f"{i:04d}-"), name
        if i == 0:
            assert "*** SUBJECT HERE ***" not in subject and "*** BLURB HERE ***" not in body
            assert "diff --git" not in body
            # the cover letter's shortlog names every patch (git wraps long subjects)
            flat = " ".join(body.split())
            for _, _, sub, _ in parsed[1:]:
                assert sub in flat, f"cover letter does not list {sub!r}"
            continue
        assert SIGNED_OFF.search(body.split("\n---\n", 1)[0]), f"{name}: no Signed-off-by"
        assert "\ndiff --git a/" in body, f"{name}: no diff"
        # git itself must accept the diff (syntax only, no tree needed); outside any
        # repository, since inside one git apply skips paths outside the current directory
        res = run(["git", "apply", "--numstat", str(series / name)], cwd=tmp_path)
        assert res.returncode == 0, f"{name}: {res.stderr}"
        assert res.stdout.strip(), f"{name}: empty diff"


def test_skinny_series_defines_what_the_model_writes() -> None:
    """The incompat bit and key type in series.yaml are those the patches define and the
    writer (model/btrfs/mkfs.py, constants.py) uses."""
    from model.btrfs import constants as C
    from model.btrfs.constants import INCOMPAT_SKINNY_BG_TREE

    series = PATCHES / "skinny-bg-tree"
    doc = load(series)
    text = "".join((series / n).read_text() for n in doc["patches"])
    bit = re.search(
        r"^\+#define BTRFS_FEATURE_INCOMPAT_SKINNY_BG_TREE\s+\(1ULL << (\d+)\)$", text, re.M
    )
    key = re.search(r"^\+#define BTRFS_SKINNY_BLOCK_GROUP_ITEM_KEY (\d+)$", text, re.M)
    assert bit and key
    assert int(bit.group(1)) == doc["incompat_bit"]
    assert int(key.group(1)) == doc["key_type"]
    assert 1 << doc["incompat_bit"] == INCOMPAT_SKINNY_BG_TREE
    assert doc["key_type"] == C.SKINNY_BLOCK_GROUP_ITEM_KEY
    # the sysfs feature entry and the SUPP flag are in the series
    assert "+BTRFS_FEAT_ATTR_INCOMPAT(skinny_bg_tree, SKINNY_BG_TREE);" in text
    assert "BTRFS_FEATURE_INCOMPAT_SKINNY_BG_TREE)" in text


# ---------------------------------------------------------------------------------------
# slow: against Debian's linux-source-6.12


def linux_source_deb() -> Path:
    """Debian's linux-source-6.12 .deb in the cache, fetched with ``apt-get download``."""
    d = cache_dir("debs")
    deb = d / DEB_FILE
    if deb.exists():
        return deb
    require_tool("apt-get")
    res = run(["apt-get", "download", f"{DEB_PACKAGE}={DEB_VERSION}"], cwd=d, timeout=1800)
    if res.returncode != 0 or not deb.exists():
        pytest.fail(
            f"apt-get download {DEB_PACKAGE}={DEB_VERSION} failed ({res.stderr.strip()});"
            f" put {DEB_FILE} into {d}"
        )
    return deb


def extract_members(deb: Path, members: list[str], dest: Path) -> None:
    """Files of the kernel tree (paths relative to its top) from the .deb's source tarball,
    cached pristine next to the .deb."""
    require_tool("dpkg-deb")
    require_tool("xz")
    cached = cache_dir("linux-source") / DEB_VERSION
    missing = [m for m in members if not (cached / m).exists()]
    if missing:
        tmp = cached.with_name(cached.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        assert fsys.stdout is not None
        with tarfile.open(fileobj=fsys.stdout, mode="r|") as outer:
            for entry in outer:
                if entry.name.lstrip("./") == TARBALL:
                    inner_f = outer.extractfile(entry)
                    assert inner_f is not None
                    wanted = {f"{TOPDIR}/{m}" for m in members}
                    with tarfile.open(fileobj=inner_f, mode="r|xz") as inner:
                        for m in inner:
                            if m.name in wanted and m.isfile():
                                src = inner.extractfile(m)
                                assert src is not None
                                out = tmp / m.name
                                out.parent.mkdir(parents=True, exist_ok=True)
                                out.write_bytes(src.read())
                    break
        fsys.wait()
        got = tmp / TOPDIR
        for m in members:
            assert (got / m).exists(), f"{m} not in {DEB_FILE}"
        shutil.rmtree(cached, ignore_errors=True)
        got.rename(cached)
        shutil.rmtree(tmp, ignore_errors=True)
    for m in members:
        (dest / m).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached / m, dest / m)


@pytest.mark.slow
@pytest.mark.parametrize(
    "series", [s for s in SERIES if load(s)["status"] == "forward-ported"], ids=lambda p: p.name
)
def test_series_applies_to_debian_linux_source(series: Path, tmp_path: Path) -> None:
    require_tool("git")
    require_tool("perl")
    doc = load(series)
    assert "6.12.117" in doc["base"] and DEB_VERSION in doc["base"]
    patches = [series / n for n in doc["patches"][1:]]
    touched = sorted(
        {
            m.group(1)
            for p in patches
            for m in re.finditer(r"^diff --git a/(\S+) b/", p.read_text(), re.M)
        }
    )
    # checkpatch.pl reads these next to itself
    tools = ["scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch"]
    extract_members(linux_source_deb(), touched + tools, tmp_path)
    for p in patches:
        check = run(["git", "apply", "--check", "--verbose", str(p)], cwd=tmp_path)
        assert check.returncode == 0, f"{p.name} does not apply:\n{check.stderr}"
        res = run(["git", "apply", str(p)], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    for p in series.glob("*.patch"):
        cp = run(
            ["perl", "scripts/checkpatch.pl", "--strict", "--no-tree", "--no-color", str(p)],
            cwd=tmp_path,
        )
        assert "total: 0 errors, 0 warnings, 0 checks" in cp.stdout, f"{p.name}:\n{cp.stdout}"
