"""Kernels built here from Debian's source: the ``build:`` kernel spec.

    build:6.12                            the unpatched baseline
    build:6.12+skinny-bg-tree             with the series in patches/skinny-bg-tree/
    build:6.12+skinny-bg-tree+debug       ... and the config-only fragment vm/kconfig/debug.config

Each name after the base is a :class:`KernelPatchSet` (diff files in order, config lines).
vm/ does not read ``patches/``: the caller hands the sets over, to
:func:`parse_build_spec` or once for all with :func:`register_patch_sets` (the harness
registers the series of ``patches/``, read by its series loader); a name no set takes may be
a config-only fragment ``vm/kconfig/NAME.config`` (``debug``).

A build takes ``linux-source-6.12`` (6.12.117) from Debian (``apt-get download``, cached
under ``<cache>/debs/``), applies each set's patches in order (GNU ``patch``; a patch that
does not apply fails with patch's message and the rejected hunks), and configures the kernel
from ``make tinyconfig`` plus config fragments: :data:`GUEST_FRAGMENT` (what the guest root
needs; everything built in, so no modules) and each set's config lines, later fragments
overriding earlier ones. After
``make olddefconfig`` every fragment option must have survived into ``.config`` (the check
kunit_tool makes); the options that fell out are named and the build stops. Then
``make bzImage`` (and ``modules`` if a fragment turned them on), at ``nice -n 10`` and
``-j2`` (``$FSORACLE_KBUILD_JOBS``), with a progress line every 30 s; on failure the
compiler's error lines are printed and the log is kept.

Cache. The finished kernel is ``<cache>/kernels/build/<key>/`` (``bzImage``, ``vmlinux``,
``System.map``, ``config``, ``build.log``, ``kernel.json``), made in a temporary directory
and renamed into place. ``key`` hashes the source package version, the patch files' bytes
in order, the merged fragment, the toolchain's version lines and this builder's recipe
version; the kernel release is ``6.12.117-fso-<key[:8]>``, so ``uname -r`` in a guest names
the build.

Work tree. One unpacked source tree per source version (``<cache>/kbuild/<version>/tree``)
and one object directory per configuration (``obj/<hash of the merged fragment>``, an
out-of-tree ``O=`` build): switching between the baseline and a series rewrites only the
files the patches touch (a pristine copy of each is saved first; the set of modified files
is recorded before any is touched), so ``make`` recompiles only what depends on them (the
baseline after ``+skinny-bg-tree`` costs fs/btrfs, not a kernel). Files are rewritten with a
fresh mtime and never hard-linked back, so make always sees them as newer. A file lock
serialises builds on one tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vm import progress
from vm.cache import atomic_dir, atomic_write_bytes, cache_dir
from vm.debian import DEBIAN_KERNELS, apt_download
from vm.errors import KernelSpecError, ToolMissing, VMUserError
from vm.kimage import Kernel

# Changes whenever the way a kernel is configured or built changes (part of the cache key).
RECIPE_VERSION = "1: tinyconfig + fragments + olddefconfig; bzImage (+modules); O= build"

FRAGMENTS = Path(__file__).with_name("kconfig")
GUEST_FRAGMENT = FRAGMENTS / "guest.config"
KBUILD_DEPS = "build-essential flex bison bc libelf-dev libssl-dev xz-utils"
PROGRESS_EVERY = 30.0


@dataclass(frozen=True)
class LinuxSource:
    """A Debian ``linux-source-X`` package: where its tarball is and what it unpacks to."""

    base: str
    package: str
    version: str

    @property
    def deb_name(self) -> str:
        return f"{self.package}_{self.version}_all.deb"

    @property
    def tarball(self) -> str:
        return f"usr/src/{self.package}.tar.xz"

    @property
    def topdir(self) -> str:
        return self.package


# Pinned: the version of bookworm's linux-source-6.12 is that of the stock debian:6.12 kernel.
BASES: dict[str, LinuxSource] = {
    "6.12": LinuxSource("6.12", "linux-source-6.12", "6.12.117-1~deb12u1"),
}


class KernelBuildError(VMUserError):
    """A kernel could not be built: a patch did not apply, a config option fell out, the
    compiler failed, or a build tool is missing. The message says which and where the log is."""


# ---------------------------------------------------------------- patch sets


@dataclass(frozen=True)
class KernelPatchSet:
    """One named change to the kernel: diffs applied in order, then config lines. The caller
    reads them (the harness, from ``patches/NAME/``); ``origin`` says from where."""

    name: str
    patch_files: tuple[Path, ...] = ()  # diffs only, in order (no cover letter)
    config: tuple[str, ...] = ()  # fragment lines: CONFIG_X=v or # CONFIG_X is not set
    status: str = ""
    origin: str = ""  # patches/NAME or vm/kconfig/NAME.config

    @property
    def config_only(self) -> bool:
        return not self.patch_files


PatchSetSource = Callable[[], Mapping[str, KernelPatchSet]]
_SOURCES: list[PatchSetSource] = []


def register_patch_sets(source: PatchSetSource) -> None:
    """Make ``build:`` specs find the sets ``source()`` returns, by name (the harness
    registers the series of ``patches/``); vm/kconfig/'s config-only fragments are always
    found, under a name no registered set takes."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def fragment_sets() -> dict[str, KernelPatchSet]:
    """The config-only fragments of ``vm/kconfig/`` but vm's own (``debug``), by name."""
    out = {}
    for p in sorted(FRAGMENTS.glob("*.config")):
        if p != GUEST_FRAGMENT:
            origin = f"vm/kconfig/{p.name}"
            lines = tuple(o.line for o in parse_fragment(p.read_text(), origin))
            out[p.stem] = KernelPatchSet(p.stem, (), lines, "config-fragment", origin)
    return out


def patch_sets(given: Mapping[str, KernelPatchSet] | None = None) -> dict[str, KernelPatchSet]:
    """``given`` (default: what the registered sources return), then the fragments."""
    sets: dict[str, KernelPatchSet] = {}
    if given is None:
        for source in _SOURCES:
            sets.update(source())
    else:
        sets.update(given)
    for name, fragment in fragment_sets().items():
        sets.setdefault(name, fragment)
    for s in sets.values():
        for line in s.config:
            parse_config_line(line, s.origin or s.name)
    return sets


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class BuildRequest:
    """What to build: a base and patch sets in order (config-only ones among them)."""

    base: str
    series: tuple[KernelPatchSet, ...] = ()

    @property
    def spec(self) -> str:
        return "build:" + "+".join([self.base, *(s.name for s in self.series)])

    @property
    def source(self) -> LinuxSource:
        return BASES[self.base]


def parse_build_spec(rest: str, sets: Mapping[str, KernelPatchSet] | None = None) -> BuildRequest:
    """``6.12+SERIES+...`` (the part after ``build:``) -> :class:`BuildRequest`, each name
    looked up in :func:`patch_sets` of ``sets``."""
    base, *names = rest.split("+")
    if base not in BASES:
        raise KernelSpecError(
            f"build:{rest}: unknown base {base!r}; use "
            + ", ".join(f"build:{b}[+SERIES...]" for b in BASES)
        )
    if len(set(names)) != len(names) or any(not n for n in names):
        raise KernelSpecError(f"build:{rest}: name each series once, separated by '+'")
    known = patch_sets(sets) if names else {}
    for n in names:
        if n not in known:
            raise KernelSpecError(
                f"no series {n!r} in patches/ or vm/kconfig/: use one of "
                + ", ".join(sorted(known))
            )
    return BuildRequest(base, tuple(known[n] for n in names))


def make_request(
    base: str,
    series: Sequence[str] = (),
    config_only: Sequence[str] = (),
    sets: Mapping[str, KernelPatchSet] | None = None,
) -> BuildRequest:
    """The request ``fsoracle kernel build --base B --series S... --config-only C...`` makes:
    the series in order, then the config-only ones, which must carry no patches."""
    req = parse_build_spec("+".join([base, *series, *config_only]), sets)
    for s in req.series[len(series) :]:
        if not s.config_only:
            raise KernelSpecError(
                f"--config-only {s.name}: that series has {len(s.patch_files)} patch(es); "
                f"use --series {s.name}"
            )
    return req


# ---------------------------------------------------------------- config fragments

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class ConfigOption:
    name: str  # CONFIG_FOO
    value: str  # y, m, n, a number or a quoted string
    origin: str  # the fragment it came from

    @property
    def line(self) -> str:
        return f"{self.name}={self.value}"


def parse_config_line(line: str, origin: str) -> ConfigOption | None:
    """One fragment line: ``CONFIG_X=v``, ``# CONFIG_X is not set`` (= n); None for blank
    lines and comments."""
    s = line.strip()
    m = _UNSET.match(s)
    if m:
        return ConfigOption(m.group(1), "n", origin)
    if not s or s.startswith("#"):
        return None
    m = _SET.match(s)
    if not m or not m.group(2):
        raise KernelSpecError(f"{origin}: {line!r} is not a CONFIG_X=value line")
    return ConfigOption(m.group(1), m.group(2), origin)


def parse_fragment(text: str, origin: str) -> list[ConfigOption]:
    out = []
    for ln in text.splitlines():
        opt = parse_config_line(ln, origin)
        if opt is not None:
            out.append(opt)
    return out


def request_fragments(req: BuildRequest) -> list[tuple[str, list[ConfigOption]]]:
    """vm/'s own fragment first, then each series' ``config:`` in order."""
    frags = [("vm/kconfig/guest.config", parse_fragment(GUEST_FRAGMENT.read_text(), "vm"))]
    for s in req.series:
        origin = s.origin or s.name
        frags.append(
            (
                origin,
                [
                    o
                    for o in map(lambda ln: parse_config_line(ln, origin), s.config)
                    if o is not None
                ],
            )
        )
    return frags


def merge_fragments(
    frags: Sequence[tuple[str, list[ConfigOption]]],
) -> tuple[dict[str, ConfigOption], list[str]]:
    """The merged fragment (later fragments win) and a note per value overridden."""
    merged: dict[str, ConfigOption] = {}
    notes: list[str] = []
    for _origin, opts in frags:
        for o in opts:
            old = merged.get(o.name)
            if old is not None and old.value != o.value:
                notes.append(f"{o.origin} sets {o.line} over {old.origin}'s {old.line}")
            merged[o.name] = o
    return merged, notes


def fragment_text(merged: dict[str, ConfigOption]) -> str:
    return "".join(f"{o.line}\n" for o in merged.values())


def parse_dotconfig(text: str) -> dict[str, str]:
    """A ``.config``: symbol -> value (``n`` for ``# ... is not set``)."""
    out: dict[str, str] = {}
    for ln in text.splitlines():
        m = _SET.match(ln)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(ln)
        if m:
            out[m.group(1)] = "n"
    return out


def fell_out(merged: dict[str, ConfigOption], dotconfig: dict[str, str]) -> list[str]:
    """Fragment options whose value is not in the final ``.config`` (absent means n), as
    ``CONFIG_X=want (got: have; from ORIGIN)``."""
    out = []
    for o in merged.values():
        have = dotconfig.get(o.name, "n")
        if have != o.value:
            shown = "not set" if have == "n" else have
            out.append(f"{o.line} (got: {shown}; from {o.origin})")
    return out


def apply_fragment(dotconfig_text: str, merged: dict[str, ConfigOption]) -> str:
    """``dotconfig_text`` with every merged option replacing that symbol's line (or added)."""
    keep = []
    for ln in dotconfig_text.splitlines():
        m = _SET.match(ln) or _UNSET.match(ln)
        if m and m.group(1) in merged:
            continue
        keep.append(ln)
    for o in merged.values():
        keep.append(f"# {o.name} is not set" if o.value == "n" else o.line)
    return "\n".join(keep) + "\n"


# ---------------------------------------------------------------- cache key


def toolchain_id() -> list[str]:
    """First lines of ``gcc --version`` and ``ld --version`` (part of the cache key)."""
    out = []
    for tool in ("gcc", "ld"):
        exe = shutil.which(tool)
        if exe is None:
            out.append(f"{tool}: absent")
            continue
        r = subprocess.run([exe, "--version"], capture_output=True, text=True)
        out.append((r.stdout.splitlines() or [f"{tool}: ?"])[0])
    return out


def build_key(req: BuildRequest, merged: dict[str, ConfigOption], toolchain: list[str]) -> str:
    h = hashlib.sha256()

    def add(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little") + b)

    add(RECIPE_VERSION.encode())
    src = req.source
    add(f"{src.package}={src.version}".encode())
    for s in req.series:
        add(f"series {s.name}".encode())
        for p in s.patch_files:
            add(p.read_bytes())
    add(fragment_text(merged).encode())
    for t in toolchain:
        add(t.encode())
    return h.hexdigest()[:20]


def config_key(req: BuildRequest, merged: dict[str, ConfigOption]) -> str:
    """Names the object directory: configurations that differ only in patches share it."""
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{req.source.version}\0{fragment_text(merged)}".encode())
    return h.hexdigest()[:16]


def built_root() -> Path:
    return cache_dir("kernels", "build")


# ---------------------------------------------------------------- the source tree


def _need(cmd: str) -> str:
    exe = shutil.which(cmd)
    if exe is None:
        raise ToolMissing(
            f"{cmd} not found: kernel builds need {KBUILD_DEPS} "
            "(sh harness/install-debian-deps.sh --kbuild, as root)"
        )
    return exe


def linux_source_deb(src: LinuxSource) -> Path:
    """Debian's ``linux-source`` .deb in ``<cache>/debs/``, fetched with ``apt-get download``."""
    d = cache_dir("debs")
    deb = d / src.deb_name
    if deb.is_file():
        return deb
    step = progress.step(f"fetching {src.package}={src.version}")
    with step, tempfile.TemporaryDirectory(dir=d) as tmp:
        got = apt_download(f"{src.package}={src.version}", Path(tmp))
        if got.name != src.deb_name:
            raise KernelSpecError(f"apt-get download gave {got.name}, expected {src.deb_name}")
        os.replace(got, deb)
    return deb


def kbuild_dir(src: LinuxSource) -> Path:
    return cache_dir("kbuild", src.version)


def source_tree(src: LinuxSource) -> Path:
    """The unpacked source tree (made once per source version)."""
    top = kbuild_dir(src)
    final = top / "tree"
    if (final / "Makefile").is_file():
        return final
    deb = linux_source_deb(src)
    _need("xz")
    step = progress.step(f"unpacking {src.deb_name}")
    with step, atomic_dir(final) as tmp, tempfile.TemporaryDirectory(dir=top) as dl:
        fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        assert fsys.stdout is not None
        r = subprocess.run(
            ["tar", "-x", "-C", dl, f"./{src.tarball}"],
            stdin=fsys.stdout,
            capture_output=True,
            text=True,
        )
        fsys.stdout.close()
        if fsys.wait() != 0 or r.returncode != 0:
            raise KernelBuildError(f"cannot unpack {deb}: {r.stderr.strip()[-300:]}")
        tarball = Path(dl) / src.tarball
        r = subprocess.run(
            ["tar", "-xJf", str(tarball), "-C", str(tmp), "--strip-components=1"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise KernelBuildError(f"cannot unpack {tarball}: {r.stderr.strip()[-300:]}")
        if not (tmp / "Makefile").is_file():
            raise KernelBuildError(f"{src.tarball} holds no kernel tree")
    return final


_DIFF_PATHS = re.compile(r"^(?:---|\+\+\+) (?:a|b)/(\S+)", re.M)


def touched_paths(patch: Path) -> list[str]:
    """Files a unified diff names (``--- a/X``, ``+++ b/Y``), in order."""
    seen: dict[str, None] = {}
    for m in _DIFF_PATHS.finditer(patch.read_text(errors="replace")):
        seen.setdefault(m.group(1), None)
    return list(seen)


@dataclass
class TreeState:
    """Files of the work tree that may differ from the pristine source, and where their
    pristine copies are (``<kbuild>/pristine/PATH``; ``PATH.absent`` when the source has no
    such file)."""

    tree: Path
    store: Path
    state_file: Path
    dirty: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, tree: Path, top: Path) -> TreeState:
        st = cls(tree, top / "pristine", top / "tree-state.json")
        if st.state_file.is_file():
            st.dirty = set(json.loads(st.state_file.read_text())["dirty"])
        return st

    def save(self) -> None:
        atomic_write_bytes(
            self.state_file, json.dumps({"dirty": sorted(self.dirty)}, indent=0).encode()
        )

    def pristine(self, rel: str) -> bytes | None:
        """The source's content of ``rel`` (None: the source has no such file)."""
        if rel in self.dirty:
            if (self.store / f"{rel}.absent").exists():
                return None
            return (self.store / rel).read_bytes()
        p = self.tree / rel
        return p.read_bytes() if p.is_file() else None

    def _remember(self, rel: str) -> None:
        """Save ``rel``'s pristine content and mark it dirty before it is first changed."""
        if rel in self.dirty:
            return
        cur = self.tree / rel
        dest = self.store / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in (dest, dest.with_name(dest.name + ".absent")):
            stale.unlink(missing_ok=True)
        if cur.is_file():
            shutil.copyfile(cur, dest)
        else:
            dest.with_name(dest.name + ".absent").write_bytes(b"")
        self.dirty.add(rel)
        self.save()

    def sync(self, desired: dict[str, bytes | None]) -> list[str]:
        """Make the tree hold ``desired`` (path -> content, None: absent) on top of the
        pristine source; returns the paths rewritten. Unchanged files keep their mtime."""
        changed = []
        for rel in sorted(self.dirty | set(desired)):
            target = desired[rel] if rel in desired else self.pristine(rel)
            path = self.tree / rel
            current = path.read_bytes() if path.is_file() else None
            if current == target:
                continue
            self._remember(rel)
            if path.exists():
                path.unlink()  # a new inode and a new mtime: make sees it as changed
            if target is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(target)
            changed.append(rel)
        self.dirty = {r for r in self.dirty if self.pristine(r) != _read(self.tree / r)}
        self.save()
        return changed


def _read(p: Path) -> bytes | None:
    return p.read_bytes() if p.is_file() else None


def apply_patches(
    state: TreeState, patches: Sequence[Path], scratch: Path
) -> dict[str, bytes | None]:
    """Apply ``patches`` in order to pristine copies of the files they touch (in
    ``scratch``); return the patched contents. A patch that does not apply raises
    :class:`KernelBuildError` with patch's output and the rejected hunks."""
    patch_exe = _need("patch")
    touched: list[str] = []
    for p in patches:
        for rel in touched_paths(p):
            if rel in touched:
                continue
            touched.append(rel)
            content = state.pristine(rel)
            if content is not None:
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                (scratch / rel).write_bytes(content)
    for p in patches:
        r = subprocess.run(
            [patch_exe, "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", str(p)],
            cwd=scratch,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            rejects = []
            for rej in sorted(scratch.rglob("*.rej")):
                rejects.append(f"--- rejected hunks of {rej.relative_to(scratch)}:")
                rejects.append(rej.read_text(errors="replace").rstrip())
            detail = "\n".join([(r.stdout + r.stderr).rstrip(), *rejects])
            raise KernelBuildError(
                f"patch {p.parent.name}/{p.name} does not apply to the source:\n{detail}"
            )
    return {rel: _read(scratch / rel) for rel in touched}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.note(f"waiting for another kernel build ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- make


_ERROR_LINE = re.compile(
    r"(?:\berror:|\bError \d+|undefined reference to|fatal error|\*\*\* \[|"
    r"No rule to make target|multiple definition of)"
)


def error_lines(log: str, limit: int = 40) -> list[str]:
    """The lines of a build log that tell why it failed (the compiler's ``error:`` lines
    with the line before each, the linker's, make's ``***`` lines)."""
    lines = log.splitlines()
    picked: dict[int, None] = {}
    for i, ln in enumerate(lines):
        if _ERROR_LINE.search(ln):
            if i > 0 and ("In function" in lines[i - 1] or lines[i - 1].endswith(":")):
                picked.setdefault(i - 1, None)
            picked.setdefault(i, None)
        if ln.startswith("make") and "***" in ln and i > 0 and not lines[i - 1].startswith("make"):
            picked.setdefault(i - 1, None)  # what the failing command said (kconfig, ld...)
    out = [lines[i] for i in sorted(picked)]
    return out[:limit] if out else lines[-limit // 2 :]


def _jobs() -> int:
    try:
        return max(1, int(os.environ.get("FSORACLE_KBUILD_JOBS", "2")))
    except ValueError:
        return 2


def _make(
    tree: Path,
    obj: Path,
    targets: Sequence[str],
    log: Any,
    *,
    extra: Sequence[str] = (),
    what: str = "",
    expect: int | None = None,
) -> int:
    """Run make in ``tree`` with ``O=obj``, appending its output to ``log``; report progress
    (objects compiled so far) every :data:`PROGRESS_EVERY` seconds. Returns the number of
    objects compiled; raises :class:`KernelBuildError` on failure."""
    argv = [
        "nice",
        "-n",
        "10",
        _need("make"),
        "-C",
        str(tree),
        f"O={obj}",
        f"-j{_jobs()}",
        *extra,
        *targets,
    ]
    env = dict(
        os.environ,
        KBUILD_BUILD_USER="fsoracle",
        KBUILD_BUILD_HOST="fsoracle",
        LC_ALL="C",
    )
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    t0 = time.monotonic()
    count = 0
    last = [""]
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(PROGRESS_EVERY):
            el = time.monotonic() - t0
            of = f" of ~{expect}" if expect else ""
            pct = f" ({min(99, 100 * count // expect)}%)" if expect else ""
            progress.note(
                f"{what}: {count}{of} objects compiled{pct}, {el / 60:.1f} min; {last[0].strip()}"
            )

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            log.write(raw)
            ln = raw.decode(errors="replace")
            if ln.startswith("  CC ") or ln.startswith("  AS "):
                count += 1
                last[0] = ln
            elif ln.startswith("  LD ") or ln.startswith("  BUILD "):
                last[0] = ln
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        log.flush()
    if rc != 0:
        raise KernelBuildError(f"make {' '.join(targets)} failed (exit {rc})")
    return count


# ---------------------------------------------------------------- build


@dataclass(frozen=True)
class ConfigResult:
    """A configured object directory: its ``.config`` and the fragment checked against it."""

    obj: Path
    dotconfig: dict[str, str]
    merged: dict[str, ConfigOption]
    notes: list[str]


def configure(tree: Path, obj: Path, merged: dict[str, ConfigOption], log: Any) -> dict[str, str]:
    """``make tinyconfig``, the merged fragment on top, ``make olddefconfig``; then check
    that every fragment option survived (raise naming those that fell out)."""
    obj.mkdir(parents=True, exist_ok=True)
    _make(tree, obj, ["tinyconfig"], log, what="configuring")
    cfg = obj / ".config"
    cfg.write_text(apply_fragment(cfg.read_text(), merged))
    _make(tree, obj, ["olddefconfig"], log, what="configuring")
    final = parse_dotconfig(cfg.read_text())
    lost = fell_out(merged, final)
    if lost:
        raise KernelBuildError(
            f"{len(lost)} config option(s) fell out in make olddefconfig (a dependency is "
            "missing or the option does not exist in this source): " + "; ".join(lost)
        )
    return final


def find_built(req: BuildRequest) -> tuple[Path, str, dict[str, ConfigOption], list[str]]:
    """The cache entry a request maps to (existing or not), its key and merged fragment."""
    merged, notes = merge_fragments(request_fragments(req))
    key = build_key(req, merged, toolchain_id())
    return built_root() / key, key, merged, notes


def kernel_from_entry(entry: Path, spec: str | None = None) -> Kernel:
    meta = json.loads((entry / "kernel.json").read_text())
    release = meta["release"]
    mods = entry / "lib" / "modules" / release
    return Kernel(
        spec=spec or meta["spec"],
        release=release,
        vmlinuz=entry / "bzImage",
        modules_dir=mods if mods.is_dir() else None,
        config=entry / "config",
    )


def _switch_tree(req: BuildRequest, tree: Path, top: Path) -> None:
    """Make the work tree hold the source with ``req``'s patches (call under the lock)."""
    state = TreeState.load(tree, top)
    desired: dict[str, bytes | None] = {}
    patches = [p for s in req.series for p in s.patch_files]
    with tempfile.TemporaryDirectory(prefix="patches.", dir=top) as scratch:
        if patches:
            with progress.step(f"applying {len(patches)} patch(es) for {req.spec}"):
                desired = apply_patches(state, patches, Path(scratch))
    changed = state.sync(desired)
    if changed:
        progress.note(f"source tree: {len(changed)} file(s) switched for {req.spec}")


def check_config(req: BuildRequest) -> ConfigResult:
    """Configure ``req`` (patched source, tinyconfig + fragments + olddefconfig) without
    compiling, and check that every fragment option survived."""
    merged, notes = merge_fragments(request_fragments(req))
    for tool in ("make", "gcc", "flex", "bison", "patch"):
        _need(tool)
    src = req.source
    tree = source_tree(src)
    top = kbuild_dir(src)
    obj = top / "obj" / config_key(req, merged)
    log_path = cache_dir("kbuild", "logs") / f"{time.strftime('%Y%m%d-%H%M%S')}-config.log"
    with _locked(top / "lock"):
        _switch_tree(req, tree, top)
        with open(log_path, "wb") as log:
            try:
                final = configure(tree, obj, merged, log)
            except KernelBuildError as e:
                raise KernelBuildError(f"{e}\nlog: {log_path}") from None
    return ConfigResult(obj, final, merged, notes)


def build_kernel(req: BuildRequest, *, force: bool = False) -> Kernel:
    """The kernel for ``req``, from the cache or built now (see the module docstring)."""
    entry, key, merged, notes = find_built(req)
    if (entry / "kernel.json").is_file() and not force:
        return kernel_from_entry(entry, req.spec)
    for tool in ("make", "gcc", "flex", "bison", "bc", "patch", "perl"):
        _need(tool)
    src = req.source
    tree = source_tree(src)
    top = kbuild_dir(src)
    obj = top / "obj" / config_key(req, merged)
    logs = cache_dir("kbuild", "logs")
    log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{key[:12]}.log"
    t_start = time.monotonic()
    for n in notes:
        progress.note(f"config: {n}")
    with _locked(top / "lock"):
        if (entry / "kernel.json").is_file() and not force:  # built while we waited
            return kernel_from_entry(entry, req.spec)
        _switch_tree(req, tree, top)
        cold = not (obj / "vmlinux").is_file()
        expect_file = obj / ".fso-objects"
        expect = int(expect_file.read_text()) if expect_file.is_file() else None
        release_suffix = f"-fso-{key[:8]}"
        with open(log_path, "wb") as log:
            try:
                with progress.step(f"configuring {req.spec}"):
                    final = configure(tree, obj, merged, log)
                modules = final.get("CONFIG_MODULES") == "y"
                targets = ["bzImage", *(["modules"] if modules else [])]
                what = f"building {req.spec} ({'cold' if cold else 'incremental'}, -j{_jobs()})"
                with progress.step(what):
                    n = _make(
                        tree,
                        obj,
                        targets,
                        log,
                        extra=[f"LOCALVERSION={release_suffix}"],
                        what=f"building {req.spec}",
                        expect=expect if cold else None,
                    )
            except KernelBuildError as e:
                log.close()
                text = log_path.read_text(errors="replace")
                if "fell out" in str(e):
                    raise KernelBuildError(f"{e}\nlog: {log_path}") from None
                shown = "\n".join(error_lines(text))
                raise KernelBuildError(
                    f"kernel build of {req.spec} failed: {e}; the errors:\n{shown}\n"
                    f"full log: {log_path}"
                ) from None
        if cold:
            expect_file.write_text(str(n))
        release = (obj / "include" / "config" / "kernel.release").read_text().strip()
        with atomic_dir(entry) as tmp:
            shutil.copyfile(obj / "arch" / "x86" / "boot" / "bzImage", tmp / "bzImage")
            for name in ("vmlinux", "System.map"):
                shutil.copyfile(obj / name, tmp / name)
            shutil.copyfile(obj / ".config", tmp / "config")
            if modules:
                with open(log_path, "ab") as log:
                    _make(
                        tree,
                        obj,
                        ["modules_install"],
                        log,
                        extra=[f"LOCALVERSION={release_suffix}", f"INSTALL_MOD_PATH={tmp}"],
                        what="installing modules",
                    )
            shutil.copyfile(log_path, tmp / "build.log")
            seconds = time.monotonic() - t_start
            meta = {
                "spec": req.spec,
                "key": key,
                "release": release,
                "base": req.base,
                "source": {"package": src.package, "version": src.version},
                "series": [
                    {
                        "name": s.name,
                        "status": s.status,
                        "patches": [
                            {"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                            for p in s.patch_files
                        ],
                        "config": list(s.config),
                    }
                    for s in req.series
                ],
                "fragment": [o.line for o in merged.values()],
                "fragment_notes": notes,
                "toolchain": toolchain_id(),
                "recipe": RECIPE_VERSION,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(seconds, 1),
                "cold": cold,
                "objects_compiled": n,
                "jobs": _jobs(),
                "modules": modules,
            }
            (tmp / "kernel.json").write_text(json.dumps(meta, indent=1) + "\n")
    progress.note(f"kernel {release} built in {seconds / 60:.1f} min: {entry}")
    return kernel_from_entry(entry, req.spec)


def resolve_build(rest: str) -> Kernel:
    """The ``build:`` scheme's resolver (registered by :mod:`vm.kernels`)."""
    return build_kernel(parse_build_spec(rest))


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class CachedKernel:
    spec: str
    release: str
    path: Path
    what: str
    meta: dict[str, Any]


def cached_kernels() -> list[CachedKernel]:
    """Every kernel in the cache: Debian packages and builds, with what they came from."""
    out: list[CachedKernel] = []
    deb = cache_dir("kernels", "debian")
    for meta_path in sorted(deb.glob("*/kernel.json")):
        meta = json.loads(meta_path.read_text())
        short = {v: k for k, v in DEBIAN_KERNELS.items()}.get(meta["package"])
        spec = f"debian:{short}" if short else f"debian:{meta['package']}"
        out.append(
            CachedKernel(
                spec,
                meta["release"],
                meta_path.parent,
                f"Debian package {meta['package']} {meta.get('version', '')}".strip(),
                meta,
            )
        )
    for meta_path in sorted(built_root().glob("*/kernel.json")):
        meta = json.loads(meta_path.read_text())
        parts = []
        for s in meta["series"]:
            kind = f"{len(s['patches'])} patches" if s["patches"] else "config only"
            parts.append(f"{s['name']} ({kind})")
        src = meta["source"]
        what = f"{src['package']} {src['version']}" + (
            " + " + ", ".join(parts) if parts else " (no series)"
        )
        out.append(CachedKernel(meta["spec"], meta["release"], meta_path.parent, what, meta))
    return out
