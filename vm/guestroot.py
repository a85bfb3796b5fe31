"""The guest's root filesystem: one initramfs per kernel, built from the host's own binaries.

Why an initramfs. The Debian cloud kernels have no 9p and bookworm has no virtiofsd, so the
host root cannot be shared into the guest the way virtme-ng does it; a disk image would need
mkfs, a mount and a writable overlay on every boot. An initramfs needs nothing from the
kernel but ``BLK_DEV_INITRD``, is unpacked into RAM before ``/init`` runs (so the guest's root
is private, writable and thrown away at power-off), and leaves every virtual disk to the test.

What is in it (all taken from the host, whose packages ``harness/install-debian-deps.sh``
installs): static busybox (shell, coreutils, ``ip``, ``insmod``/``modprobe``, ``init``),
dropbear with an ed25519 host key made at build time (its public half is kept beside the
archive so the host pins it), btrfs-progs, e2fsprogs, dmsetup, the Debian ``python3`` binary
with a trimmed standard library compiled to sourceless ``.pyc`` files, the shared libraries
all of those need (found with ``ldd``), and the kernel's modules for disks, network and btrfs
(decompressed, with ``modules.dep`` remade by ``depmod``) with their load order.

The archive is uncompressed newc: under TCG the kernel's decompressors are the slow part of
unpacking (measured in README), while QEMU loads the file into guest RAM at host speed.

Cache key, in two levels. ``<cache>/initramfs/<key>/`` is named by the kernel release and its
module tree, the stat signature (path, size, mtime) of each program copied in and of the
Python standard library, and this builder's own source. Inside it, ``hostfiles.json`` lists
every host file the last build copied (shared libraries included) and the archive sits in a
sub-directory named by the current stat signatures of those files, so upgrading a library
the guest uses rebuilds it, and unrelated package installs do not.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vm import progress
from vm.cache import atomic_dir, atomic_write_bytes, cache_dir
from vm.cpio import CpioWriter
from vm.errors import ToolMissing, VMUserError
from vm.kernels import Kernel

BUILDER_VERSION = "1"

# kernel modules loaded at boot, in this order (each after its own dependencies). The
# network ones are loaded before the SSH server starts; the rest load while the host's SSH
# handshake runs, and /run/fso-ready appears when they are all in.
EARLY_MODULES = ("virtio_pci", "virtio_net")
REQUIRED_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "nvme", "btrfs")
OPTIONAL_MODULES = (
    "virtio_rng",
    "virtio_console",
    "dm_mod",
    "dm_delay",
    "dm_flakey",
    "dm_log_writes",
    "loop",
)

# the config symbol of each module above, for kernels with everything built in (no modules
# directory: `fsoracle kernel build`, vm/kconfig/guest.config); a required one not =y is
# reported when the guest root is built
MODULE_CONFIG = {
    "virtio_pci": "VIRTIO_PCI",
    "virtio_net": "VIRTIO_NET",
    "virtio_blk": "VIRTIO_BLK",
    "nvme": "BLK_DEV_NVME",
    "btrfs": "BTRFS_FS",
    "virtio_rng": "HW_RANDOM_VIRTIO",
    "virtio_console": "VIRTIO_CONSOLE",
    "dm_mod": "BLK_DEV_DM",
    "dm_delay": "DM_DELAY",
    "dm_flakey": "DM_FLAKEY",
    "dm_log_writes": "DM_LOG_WRITES",
    "loop": "BLK_DEV_LOOP",
}


def missing_builtins(kernel: Kernel) -> list[str]:
    """For a kernel without modules: the guest root's modules it does not have built in
    (``module (CONFIG_X=value)``); empty when its ``.config`` is unknown."""
    if kernel.modules_dir is not None or kernel.config is None:
        return []
    out = []
    for mod in (*REQUIRED_MODULES, *OPTIONAL_MODULES):
        val = kernel.config_value(MODULE_CONFIG[mod])
        if val != "y":
            out.append(f"{mod} (CONFIG_{MODULE_CONFIG[mod]}={val or 'n'})")
    return out


# host programs copied into the guest: (command, Debian package, required)
HOST_TOOLS: tuple[tuple[str, str, bool], ...] = (
    ("busybox", "busybox-static", True),
    ("dropbear", "dropbear-bin", True),
    ("dropbearkey", "dropbear-bin", True),
    ("btrfs", "btrfs-progs", True),
    ("mkfs.btrfs", "btrfs-progs", True),
    ("btrfstune", "btrfs-progs", True),
    ("btrfs-image", "btrfs-progs", False),
    ("mke2fs", "e2fsprogs", True),
    ("mkfs.ext4", "e2fsprogs", True),
    ("e2fsck", "e2fsprogs", True),
    ("fsck.ext4", "e2fsprogs", False),
    ("tune2fs", "e2fsprogs", True),
    ("dumpe2fs", "e2fsprogs", True),
    ("debugfs", "e2fsprogs", True),
    ("resize2fs", "e2fsprogs", False),
    ("e2image", "e2fsprogs", False),
    ("dmsetup", "dmsetup", True),
)
HOST_DATA_FILES = ("/etc/mke2fs.conf",)

# standard-library parts the workload driver will not need (saves ~15 MB of 28)
STDLIB_EXCLUDE = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "venv",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "__phello__",
    "EXTERNALLY-MANAGED",
    "LICENSE.txt",
}
# extension modules left out, with the libraries only they need (OpenSSL, Berkeley DB,
# SQLite, ncurses, readline, NIS/Kerberos): ~10 MB; hashlib falls back to its built-ins
DYNLOAD_EXCLUDE = re.compile(
    r"^(_test|_ctypes_test|_xx|xxlimited|_tkinter|_ssl|_hashlib|_dbm|_gdbm|_sqlite3|_curses"
    r"|readline|nis|_crypt|ossaudiodev)"
)
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class GuestRoot:
    """A built initramfs for one kernel release.

    ``host_key`` is the guest SSH server's public key (``ssh-ed25519 AAAA...``) to pin;
    ``modules`` the module files ``/init`` loads, in order (paths under lib/modules/<release>).
    """

    initramfs: Path
    host_key: str
    release: str
    modules: tuple[str, ...]
    key: str

    @property
    def size(self) -> int:
        return self.initramfs.stat().st_size


def _which(cmd: str) -> str | None:
    return shutil.which(cmd, path=SYSTEM_PATH) or shutil.which(cmd)


def _system_python() -> tuple[Path, Path]:
    """The Debian python3 binary (not a virtualenv's or pyenv's) and its stdlib directory."""
    exe = shutil.which("python3", path="/usr/bin:/bin")
    if exe is None:
        raise ToolMissing("no system python3 (Debian package python3): install it")
    real = Path(os.path.realpath(exe))
    out = subprocess.run(
        [str(real), "-S", "-c", "import os,sys;print(os.path.dirname(os.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return real, Path(out)


def _stat_sig(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _tree_sig(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            yield _stat_sig(Path(dirpath) / f)


def _input_key(kernel: Kernel) -> str:
    h = hashlib.sha256()

    def add(s: str) -> None:
        h.update(s.encode() + b"\0")

    add(f"builder {BUILDER_VERSION}")
    add(Path(__file__).read_text())
    for name in sorted(p.name for p in resources.files("vm.guest").iterdir()):
        if name.endswith(".sh"):
            add(resources.files("vm.guest").joinpath(name).read_text())
    add(f"release {kernel.release}")
    if kernel.modules_dir is not None:
        for s in _tree_sig(kernel.modules_dir):
            add(s)
    for cmd, _pkg, _req in HOST_TOOLS:
        found = _which(cmd)
        add(_stat_sig(Path(found)) if found else f"{cmd}:absent")
    py, stdlib = _system_python()
    add(_stat_sig(py))
    for s in _tree_sig(stdlib):
        add(s)
    for f in HOST_DATA_FILES:
        add(_stat_sig(Path(f)))
    return h.hexdigest()[:24]


# ---------------------------------------------------------------- staging helpers


class _Stage:
    """A directory tree laid out like the guest root, filled from host files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # top-level symlinks of a merged-/usr host (/bin -> usr/bin ...), mirrored in the guest
        self.toplinks: dict[str, str] = {}
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = Path("/") / name
            if p.is_symlink():
                self.toplinks[name] = os.readlink(p).strip("/")
        for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
            (root / d).mkdir(parents=True, exist_ok=True)
        for name, target in self.toplinks.items():
            (root / target).mkdir(parents=True, exist_ok=True)
            os.symlink(target, root / name)
        for name in ("bin", "sbin", "lib", "lib64"):
            (root / name).mkdir(exist_ok=True)
        self._seen: set[str] = set()
        self.host_files: set[str] = set()  # real paths of every host file copied

    def canon(self, path: str) -> str:
        """``path`` (absolute) with the host's top-level symlinks resolved, no leading /."""
        rel = path.strip("/")
        head, sep, tail = rel.partition("/")
        if head in self.toplinks:
            rel = self.toplinks[head] + sep + tail
        return rel

    def add_host_file(self, path: str, at: str | None = None) -> None:
        """Copy host file ``path`` to the same place (or to ``at``), keeping symlink names."""
        real = os.path.realpath(path)
        dest_rel = self.canon(at or real)
        dest = self.root / dest_rel
        if dest_rel not in self._seen:
            self._seen.add(dest_rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, dest)
            self.host_files.add(real)
        if at is None:
            alias = self.canon(
                os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
            )
            if alias != dest_rel and not (self.root / alias).exists():
                (self.root / alias).parent.mkdir(parents=True, exist_ok=True)
                os.symlink("/" + dest_rel, self.root / alias)

    def add_with_libs(self, path: str) -> None:
        self.add_host_file(path)
        for lib in _ldd(path):
            self.add_host_file(lib)

    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        dest = self.root / self.canon("/" + rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(mode)


_LDD_PATH = re.compile(r"(/\S+)")


def _ldd(path: str) -> list[str]:
    proc = subprocess.run(["ldd", path], capture_output=True, text=True)
    if proc.returncode != 0:  # static executables: "not a dynamic executable"
        return []
    libs: list[str] = []
    for line in proc.stdout.splitlines():
        if "=>" in line:
            line = line.split("=>", 1)[1]
        m = _LDD_PATH.search(line)
        if m:
            libs.append(m.group(1))
    return libs


def _decompress(src: Path) -> tuple[bytes, str]:
    """A module file's bytes, uncompressed, and its name without the compression suffix."""
    name = src.name
    if name.endswith(".xz"):
        return lzma.decompress(src.read_bytes()), name[:-3]
    if name.endswith(".gz"):
        return gzip.decompress(src.read_bytes()), name[:-3]
    if name.endswith(".zst"):
        out = subprocess.run(["zstd", "-dc", str(src)], capture_output=True, check=True).stdout
        return out, name[:-4]
    return src.read_bytes(), name


def module_plan(kernel: Kernel, names: tuple[str, ...] | None = None) -> list[str]:
    """Module files to load at boot, dependencies first (paths relative to the release dir).

    Uses kmod's own resolution (``modprobe --show-depends``: aliases, soft dependencies) over
    the kernel's modules tree. Built-in and absent modules are skipped; an absent required one
    is reported.
    """
    if kernel.modules_dir is None:
        return []
    if not (kernel.modules_dir / "modules.dep").is_file():
        raise VMUserError(
            f"{kernel.modules_dir} has no modules.dep: run `depmod -b ROOT {kernel.release}`"
        )
    if shutil.which("modprobe", path=SYSTEM_PATH) is None:
        raise ToolMissing("modprobe not found: install kmod")
    plan: list[str] = []
    with tempfile.TemporaryDirectory() as root:
        libmod = Path(root) / "lib" / "modules"
        libmod.mkdir(parents=True)
        (libmod / kernel.release).symlink_to(kernel.modules_dir)
        prefix = str(libmod / kernel.release) + "/"
        for mod in names or (*REQUIRED_MODULES, *OPTIONAL_MODULES):
            proc = subprocess.run(
                [
                    shutil.which("modprobe", path=SYSTEM_PATH) or "modprobe",
                    "-d",
                    root,
                    "-S",
                    kernel.release,
                    "--show-depends",
                    mod,
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                if mod in REQUIRED_MODULES:
                    progress.note(f"warning: kernel {kernel.release} has no module {mod}")
                continue
            for line in proc.stdout.splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "insmod":
                    rel = words[1].removeprefix(prefix)
                    if rel not in plan:
                        plan.append(rel)
    return plan


# ---------------------------------------------------------------- the build


def _build(kernel: Kernel, out: Path) -> None:
    missing = [f"{cmd} ({pkg})" for cmd, pkg, req in HOST_TOOLS if req and _which(cmd) is None]
    if missing:
        raise ToolMissing(
            "the guest root needs host programs that are missing: "
            + ", ".join(missing)
            + "; run harness/install-debian-deps.sh as root"
        )
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        stage = _Stage(Path(tmp) / "root")
        root = stage.root
        for d in ("dev", "proc", "sys", "tmp", "run", "root", "mnt", "etc/dropbear", "var/log"):
            (root / d).mkdir(parents=True, exist_ok=True)

        # real programs first, then busybox applets where nothing real sits
        for cmd, _pkg, _req in HOST_TOOLS:
            found = _which(cmd)
            if found and cmd != "dropbearkey":
                stage.add_with_libs(found)
        for f in HOST_DATA_FILES:
            if os.path.isfile(f):
                stage.add_host_file(f)
        busybox = _which("busybox") or "busybox"
        applets = subprocess.run(
            [busybox, "--list-full"], capture_output=True, text=True, check=True
        ).stdout.split()
        bb_rel = stage.canon(os.path.realpath(busybox))
        for applet in applets:
            rel = stage.canon("/" + applet)
            dest = root / rel
            if not dest.exists() and not dest.is_symlink():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink("/" + bb_rel, dest)

        _add_python(stage)
        early, late = _add_modules(stage, kernel)

        # configuration and scripts
        guest = resources.files("vm.guest")
        stage.write("init", guest.joinpath("init.sh").read_text(), 0o755)
        stage.write("usr/sbin/fso-disks", guest.joinpath("fso-disks.sh").read_text(), 0o755)
        stage.write("usr/sbin/fso-poweroff", guest.joinpath("fso-poweroff.sh").read_text(), 0o755)
        stage.write("etc/fso-modules-early", "".join(f"{m}\n" for m in early))
        stage.write("etc/fso-modules", "".join(f"{m}\n" for m in late))
        stage.write("etc/inittab", "::shutdown:/usr/sbin/fso-poweroff\n")
        stage.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        stage.write("etc/group", "root:x:0:\ntty:x:5:\n")
        stage.write("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600)
        stage.write("etc/shells", "/bin/sh\n")
        stage.write("etc/hosts", "127.0.0.1 localhost fsoracle\n")
        stage.write("etc/profile", f"export PATH={SYSTEM_PATH}\nexport DM_DISABLE_UDEV=1\n")
        stage.write("etc/fstab", "")

        # SSH host key, made now so every boot of this archive presents the same one
        keyfile = root / "etc/dropbear/dropbear_ed25519_host_key"
        dropbearkey = _which("dropbearkey") or "dropbearkey"
        subprocess.run(
            [dropbearkey, "-t", "ed25519", "-f", str(keyfile)], capture_output=True, check=True
        )
        pub = subprocess.run(
            [dropbearkey, "-y", "-f", str(keyfile)], capture_output=True, text=True, check=True
        ).stdout
        host_key = next(ln for ln in pub.splitlines() if ln.startswith("ssh-ed25519 "))
        host_key = " ".join(host_key.split()[:2])

        with open(out / "initramfs.cpio", "wb") as archive:
            _write_cpio(root, CpioWriter(archive))
        meta = {
            "release": kernel.release,
            "host_key": host_key,
            "modules": early + late,
            "host_files": sorted(stage.host_files),
            "builder": BUILDER_VERSION,
        }
        (out / "guestroot.json").write_text(json.dumps(meta, indent=1) + "\n")


def _add_python(stage: _Stage) -> None:
    py, stdlib = _system_python()
    stage.add_with_libs(str(py))
    name = py.name  # python3.11
    bindir = stage.root / stage.canon(str(py.parent))
    if not (bindir / "python3").exists():
        os.symlink(name, bindir / "python3")
    dest = stage.root / stage.canon(str(stdlib))

    def ignore(d: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in STDLIB_EXCLUDE or n.startswith("config-")}
        if os.path.basename(d) == "lib-dynload":
            skip |= {n for n in names if DYNLOAD_EXCLUDE.match(n)}
        return skip

    shutil.copytree(stdlib, dest, ignore=ignore, symlinks=True)
    # sourceless .pyc beside each module: smaller, and nothing to compile in the slow guest
    proc = subprocess.run(
        [str(py), "-m", "compileall", "-q", "-b", "-j", "0", "-d", str(stdlib), str(dest)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        progress.note(f"warning: compileall: {proc.stdout.strip()[-300:]}")
    for p in dest.rglob("*.py"):
        if p.with_suffix(".pyc").exists():
            p.unlink()
    for so in sorted((dest / "lib-dynload").glob("*.so")):
        for lib in _ldd(str(so)):
            stage.add_host_file(lib)


def _add_modules(stage: _Stage, kernel: Kernel) -> tuple[list[str], list[str]]:
    """Copy the modules in; return the early and the late load lists (guest paths)."""
    if kernel.modules_dir is None:
        gaps = missing_builtins(kernel)
        if gaps:
            progress.note(
                f"warning: kernel {kernel.release} has no modules and lacks built-in "
                + ", ".join(gaps)
            )
        return [], []
    early_src = module_plan(kernel, EARLY_MODULES)
    plan = early_src + [m for m in module_plan(kernel) if m not in early_src]
    relroot = f"lib/modules/{kernel.release}"
    guest_root = stage.root / stage.canon("/" + relroot)
    guest_root.mkdir(parents=True, exist_ok=True)
    early: list[str] = []
    late: list[str] = []
    for rel in plan:
        data, name = _decompress(kernel.modules_dir / rel)
        grel = str(Path(rel).parent / name)
        (guest_root / grel).parent.mkdir(parents=True, exist_ok=True)
        (guest_root / grel).write_bytes(data)
        (early if rel in early_src else late).append(grel)
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (kernel.modules_dir / f).is_file():
            shutil.copy2(kernel.modules_dir / f, guest_root / f)
    # modules.dep etc. for just these files, so `modprobe` in the guest works too
    with tempfile.TemporaryDirectory() as tmp:
        lm = Path(tmp) / "lib" / "modules"
        lm.mkdir(parents=True)
        (lm / kernel.release).symlink_to(guest_root)
        subprocess.run(
            [shutil.which("depmod", path=SYSTEM_PATH) or "depmod", "-b", tmp, kernel.release],
            check=True,
            capture_output=True,
        )
    return early, late


def _write_cpio(root: Path, w: CpioWriter) -> None:
    w.chardev("dev/console", 5, 1)
    w.chardev("dev/null", 1, 3, 0o666)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        rel_base = base.relative_to(root)
        for name in sorted(dirnames) + sorted(filenames):
            p = base / name
            rel = str(rel_base / name) if str(rel_base) != "." else name
            if rel in w:
                continue
            if p.is_symlink():
                w.symlink(rel, os.readlink(p))
                if name in dirnames:
                    dirnames.remove(name)  # do not descend through a symlink
            elif p.is_dir():
                w.dir(rel, p.stat().st_mode & 0o7777)
            else:
                w.file(rel, p.read_bytes(), p.stat().st_mode & 0o7777)
    w.close()


def _files_key(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(_stat_sig(Path(p)).encode() + b"\0")
    return h.hexdigest()[:16]


def build_guest_root(kernel: Kernel, *, force: bool = False) -> GuestRoot:
    """The initramfs for ``kernel``, built (with progress output) unless cached."""
    key = _input_key(kernel)
    top = cache_dir("initramfs", key)
    manifest = top / "hostfiles.json"
    entry: Path | None = None
    if manifest.is_file() and not force:
        entry = top / _files_key(json.loads(manifest.read_text()))
        if not (entry / "guestroot.json").is_file():
            entry = None
    if entry is None:
        with progress.step(f"building guest initramfs for {kernel.release}"):
            with tempfile.TemporaryDirectory(dir=top) as tmp:
                _build(kernel, Path(tmp))
                files = json.loads((Path(tmp) / "guestroot.json").read_text())["host_files"]
                entry = top / _files_key(files)
                if force and entry.exists():
                    shutil.rmtree(entry)
                with atomic_dir(entry) as dest:
                    for name in ("initramfs.cpio", "guestroot.json"):
                        os.replace(Path(tmp) / name, dest / name)
                atomic_write_bytes(manifest, json.dumps(files, indent=0).encode())
            size = (entry / "initramfs.cpio").stat().st_size
            progress.note(f"initramfs {entry / 'initramfs.cpio'}: {size / 2**20:.1f} MiB")
    meta = json.loads((entry / "guestroot.json").read_text())
    return GuestRoot(
        initramfs=entry / "initramfs.cpio",
        host_key=meta["host_key"],
        release=meta["release"],
        modules=tuple(meta["modules"]),
        key=f"{key}/{entry.name}",
    )
