"""Kernels to boot, named by a spec string.

A spec is ``SCHEME:REST``; each scheme has a resolver that turns ``REST`` into a
:class:`Kernel` (a bzImage, its release string, its modules). Built in:

- ``debian:6.12`` (the default), ``debian:6.1``, or ``debian:linux-image-...`` for any other
  package name: the pinned Debian cloud kernel package, fetched with ``apt-get download``,
  unpacked with ``dpkg-deb -x``, indexed with ``depmod -b`` and cached under
  ``<cache>/kernels/debian/<package>/`` (keyed by the exact package name, which Debian never
  reuses for different contents).
- ``path:VMLINUZ[,MODULES_DIR]``: a kernel the user built. ``MODULES_DIR`` is the
  ``lib/modules/<release>`` directory, or a directory holding ``lib/modules/<release>``
  (``make modules_install INSTALL_MOD_PATH=DIR``), or one holding ``<release>``.

- ``build:6.12[+SERIES...]``: built here from Debian's ``linux-source-6.12`` with the patch
  sets the caller registered (the harness: the series in ``patches/``) (:mod:`vm.kbuild`).

Other schemes register themselves with :func:`register_resolver`.

Imports go one way: this registry imports the kernel sources (:mod:`vm.debian`,
:mod:`vm.kbuild`), which import only the :class:`Kernel` record (:mod:`vm.kimage`), never this
module. ``Kernel``, ``DEBIAN_KERNELS`` and ``fetch_debian_kernel`` are importable from here.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from vm.cache import atomic_dir, cache_dir
from vm.debian import DEBIAN_KERNELS, fetch_debian_kernel
from vm.errors import KernelSpecError
from vm.kbuild import resolve_build
from vm.kimage import Kernel

__all__ = [
    "DEBIAN_KERNELS",
    "DEFAULT_SPEC",
    "Kernel",
    "Resolver",
    "boot_image",
    "bzimage_release",
    "fetch_debian_kernel",
    "register_resolver",
    "resolve_kernel",
    "schemes",
]

DEFAULT_SPEC = "debian:6.12"

Resolver = Callable[[str], Kernel]
_RESOLVERS: dict[str, Resolver] = {}


def register_resolver(scheme: str, resolver: Resolver) -> None:
    """Make ``scheme:REST`` specs resolve through ``resolver(REST)``."""
    _RESOLVERS[scheme] = resolver


def schemes() -> list[str]:
    return sorted(_RESOLVERS)


def resolve_kernel(spec: str | None = None) -> Kernel:
    """Turn a spec into a :class:`Kernel`, fetching and caching it if needed."""
    spec = spec or DEFAULT_SPEC
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in _RESOLVERS:
        raise KernelSpecError(
            f"unknown kernel spec {spec!r}: use one of "
            + ", ".join(f"{s}:..." for s in schemes())
            + f" (e.g. {DEFAULT_SPEC}, path:VMLINUZ[,MODULES_DIR], build:6.12+SERIES)"
        )
    return _RESOLVERS[scheme](rest)


def bzimage_release(vmlinuz: Path) -> str:
    """The release string a bzImage carries in its setup header (``kernel_version`` field).

    Boot protocol (Documentation/arch/x86/boot.rst): the 2-byte field at 0x20E points to a
    NUL-terminated version string, relative to 0x200; the string begins with the release.
    """
    try:
        with open(vmlinuz, "rb") as f:
            head = f.read(0x10000)
    except OSError as e:
        raise KernelSpecError(f"cannot read kernel image {vmlinuz}: {e.strerror}") from e
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise KernelSpecError(f"{vmlinuz} is not an x86 bzImage: pass the arch/x86/boot/bzImage")
    (ptr,) = struct.unpack_from("<H", head, 0x20E)
    start = ptr + 0x200
    end = head.find(b"\0", start)
    if ptr == 0 or end < 0:
        raise KernelSpecError(f"{vmlinuz} carries no version string: is it a bzImage?")
    return head[start:end].decode(errors="replace").split()[0]


# ---------------------------------------------------------------- debian:


def _resolve_debian(rest: str) -> Kernel:
    spec = f"debian:{rest}"
    if rest in DEBIAN_KERNELS:
        return fetch_debian_kernel(DEBIAN_KERNELS[rest], spec)
    if rest.startswith("linux-image-"):
        return fetch_debian_kernel(rest, spec)
    raise KernelSpecError(
        f"unknown Debian kernel {spec!r}: use "
        + ", ".join(f"debian:{k}" for k in DEBIAN_KERNELS)
        + " or debian:linux-image-<exact package name>"
    )


# ---------------------------------------------------------------- path:


def _find_modules_dir(given: Path, release: str) -> Path:
    def is_release_dir(d: Path) -> bool:
        return (d / "kernel").is_dir() or (d / "modules.order").is_file()

    for cand in (given, given / "lib" / "modules" / release, given / release):
        if is_release_dir(cand):
            return cand
    raise KernelSpecError(
        f"no modules for release {release} under {given}: pass the lib/modules/{release} "
        "directory (or the INSTALL_MOD_PATH of `make modules_install`)"
    )


def _find_config(image: Path, release: str) -> Path | None:
    """``config-<release>`` beside the image, or the ``.config`` of the tree it was built in."""
    cands = [image.parent / f"config-{release}"]
    if image.parent.name == "boot" and len(image.parents) > 3:  # arch/x86/boot/bzImage
        cands.append(image.parents[3] / ".config")
    return next((c for c in cands if c.is_file()), None)


def _resolve_path(rest: str) -> Kernel:
    spec = f"path:{rest}"
    image_s, _, mods_s = rest.partition(",")
    if not image_s:
        raise KernelSpecError("path: spec needs a kernel image: path:VMLINUZ[,MODULES_DIR]")
    image = Path(image_s).expanduser().resolve()
    if not image.is_file():
        raise KernelSpecError(f"kernel image {image} not found: check the path: spec")
    release = bzimage_release(image)
    modules: Path | None = None
    if mods_s:
        given = Path(mods_s).expanduser().resolve()
        if not given.is_dir():
            raise KernelSpecError(f"modules directory {given} not found: check the path: spec")
        modules = _find_modules_dir(given, release)
    config = _find_config(image, release)
    return Kernel(spec=spec, release=release, vmlinuz=image, modules_dir=modules, config=config)


register_resolver("debian", _resolve_debian)
register_resolver("path", _resolve_path)
register_resolver("build", resolve_build)


# ---------------------------------------------------------------- PVH boot


def _elf_has_pvh_entry(data: bytes) -> bool:
    """True if an ELF64 image carries the Xen PHYS32_ENTRY note (type 18) QEMU boots via PVH."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name = data[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _decompress_payload(payload: bytes) -> bytes | None:
    """The kernel's compressed payload, uncompressed (None for a format we cannot read).

    The build appends the uncompressed size (4 bytes) after the stream, which some
    decompressors call trailing garbage; the output is checked by its ELF magic instead.
    """
    import lzma
    import zlib

    try:
        if payload[:2] == b"\x1f\x8b":
            return zlib.decompressobj(wbits=31).decompress(payload)
        if payload[:6] == b"\xfd7zXZ\x00":
            return lzma.LZMADecompressor().decompress(payload)
        tool = {b"\x28\xb5\x2f\xfd": "zstd", b"\x02\x21\x4c\x18": "lz4"}.get(payload[:4])
        if tool and shutil.which(tool):
            proc = subprocess.run([tool, "-dc"], input=payload, capture_output=True)
            return proc.stdout or None
    except (zlib.error, lzma.LZMAError):
        return None
    return None


def boot_image(kernel: Kernel) -> Path:
    """The image QEMU should load: the uncompressed ELF ``vmlinux`` when the kernel supports
    PVH entry (CONFIG_PVH), else the bzImage.

    Loading the ELF skips the bzImage's self-decompression, which under TCG costs 1.5 s for
    a zstd-compressed Debian 6.12 kernel. It is extracted once into ``<cache>/vmlinux/``,
    keyed by the bzImage's SHA-256.
    """
    from vm.cache import file_digest

    digest = file_digest(kernel.vmlinuz)[:24]
    final = cache_dir("vmlinux") / digest
    if (final / "vmlinux").is_file():
        return final / "vmlinux"
    if (final / "no-pvh").is_file():
        return kernel.vmlinuz
    head = kernel.vmlinuz.read_bytes()
    elf: bytes | None = None
    if len(head) > 0x250 and head[0x202:0x206] == b"HdrS":
        setup_sects = head[0x1F1] or 4
        offset, length = struct.unpack_from("<II", head, 0x248)
        start = (setup_sects + 1) * 512 + offset
        elf = _decompress_payload(head[start : start + length])
    with atomic_dir(final) as tmp:
        if elf is not None and _elf_has_pvh_entry(elf):
            (tmp / "vmlinux").write_bytes(elf)
        else:
            (tmp / "no-pvh").write_text("")
    return final / "vmlinux" if (final / "vmlinux").is_file() else kernel.vmlinuz
