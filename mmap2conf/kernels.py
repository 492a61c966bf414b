"""Kernels: what a real Linux kernel under qemu-system needs to run a helper.

The guest is a Debian kernel from a debian-installer netboot package (kernels.md)
and an initramfs whose /init is the static helper itself (helpers/PROTOCOL.md,
init mode). This module writes that initramfs (a gzip'd newc cpio, with the
standard library only), finds the kernel file, and reads the kernel's version
from the image without booting it. Both are cached under the build cache,
keyed by content: the initramfs per helper binary, the version per kernel file.

Standard library only at import time: the bootstrap imports the runners before
any virtual environment exists.
"""
from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import stat
import zlib
from pathlib import Path

# Where the debian-installer-12-netboot-<arch> packages put their images.
KERNEL_IMAGES = Path("/usr/lib/debian-installer/images/12")

# The initramfs: /init is the helper; /dev/console must exist for the kernel to give
# init its descriptors 0-2 (init/main.c console_on_rootfs), /dev/zero serves fd
# "devzero", and /tmp is where init mode mounts its tmpfs.
DIRECTORIES = (("dev", 0o755), ("tmp", 0o1777))
DEVICES = (("dev/console", 0o600, 5, 1), ("dev/zero", 0o666, 1, 5))
NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class KernelError(Exception):
    """The kernel file or its image cannot be used; the message says why."""


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def newc_entry(name: str, mode: int, data: bytes = b"", ino: int = 0, nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One member of a newc ("070701") cpio archive: header and name, then the data,
    each padded to a multiple of 4 bytes (the kernel's init/initramfs.c reads this)."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
    return _pad4(header + encoded) + _pad4(data)


def newc_archive(init: bytes) -> bytes:
    """The uncompressed initramfs: the directories, the device nodes and /init."""
    members, ino = [], 1
    for name, perm in DIRECTORIES:
        members.append(newc_entry(name, stat.S_IFDIR | perm, ino=ino, nlink=2))
        ino += 1
    for name, perm, major, minor in DEVICES:
        members.append(newc_entry(name, stat.S_IFCHR | perm, ino=ino, rdev=(major, minor)))
        ino += 1
    members.append(newc_entry("init", stat.S_IFREG | 0o755, init, ino=ino))
    members.append(newc_entry(TRAILER, 0))
    return b"".join(members)


def initramfs_bytes(init: bytes) -> bytes:
    """gzip'd newc archive; no timestamps anywhere, so equal helpers give equal bytes."""
    return gzip.compress(newc_archive(init), compresslevel=6, mtime=0)


def _cache_dir() -> Path:
    from .build import CACHE_DIR  # late: build needs pyelftools, the bootstrap has none
    return CACHE_DIR


def _publish(path: Path, data: bytes) -> None:
    """Write atomically, so concurrent workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def initramfs_for(helper: Path) -> Path:
    """The cached initramfs whose /init is ``helper``, keyed by the helper's content."""
    init = helper.read_bytes()
    path = _cache_dir() / "initramfs" / f"{hashlib.sha256(init).hexdigest()[:16]}.cpio.gz"
    if not path.exists():
        _publish(path, initramfs_bytes(init))
    return path


def find_kernel(pattern: str, package: str, images: Path | None = None) -> Path:
    """The kernel file that ``pattern`` (a glob under ``images``, by default
    KERNEL_IMAGES) names."""
    images = KERNEL_IMAGES if images is None else images
    found = sorted(p for p in images.glob(pattern) if p.is_file())
    if not found:
        raise KernelError(f"no kernel file {images / pattern} (apt package {package})")
    if len(found) > 1:
        raise KernelError(f"{images / pattern} matches several kernel files: "
                          f"{', '.join(str(p) for p in found)}")
    return found[0]


_BANNER = re.compile(rb"Linux version \S+ \([^\n\0]+")
_DEBIAN = re.compile(rb" Debian (\d+(?:\.\d+)+)[-~+][^ ]* \(\d{4}-\d\d-\d\d\)\s*$")
_STREAMS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"))
_MAX_UNPACKED = 256 << 20


def banner_version(banner: bytes) -> str:
    """A PEP 440 version from a ``Linux version ...`` banner: the upstream release the
    Debian package is built from (6.1.176), with the uname release as its local label
    (6.1.176+6.1.0-50-686). Without a Debian version, the uname release's numbers."""
    match = _BANNER.match(banner)
    if not match:
        raise KernelError(f"not a kernel banner: {banner[:120]!r}")
    release = match.group().split()[2].decode()
    debian = _DEBIAN.search(match.group())
    numbers = debian.group(1).decode() if debian else None
    if numbers is None:
        found = re.match(r"\d+(?:\.\d+){1,2}", release)
        if not found:
            raise KernelError(f"kernel release {release!r} has no version number")
        numbers = found.group()
    return numbers if numbers == release else f"{numbers}+{release}"


def image_banner(image: bytes) -> bytes:
    """The ``Linux version`` banner of a kernel image: in the clear, or inside the first
    xz or gzip stream that holds one (bzImage, zImage and MIPS vmlinuz all compress it)."""
    match = _BANNER.search(image)
    if match:
        return match.group()
    for magic, kind in _STREAMS:
        start = image.find(magic)
        while start >= 0:
            try:
                if kind == "xz":
                    unpacked = lzma.LZMADecompressor().decompress(image[start:], _MAX_UNPACKED)
                else:
                    unpacked = zlib.decompressobj(31).decompress(image[start:], _MAX_UNPACKED)
            except (lzma.LZMAError, zlib.error):
                unpacked = b""
            match = _BANNER.search(unpacked)
            if match:
                return match.group()
            start = image.find(magic, start + 1)
    raise KernelError("no 'Linux version' banner in the image, in the clear or in an xz or gzip stream")


def kernel_version(kernel: Path) -> str:
    """The version of the kernel in ``kernel``, cached by the file's content."""
    image = kernel.read_bytes()
    path = _cache_dir() / "kernels" / f"{hashlib.sha256(image).hexdigest()[:16]}.version"
    if path.exists():
        return path.read_text()
    try:
        version = banner_version(image_banner(image))
    except KernelError as exc:
        raise KernelError(f"{kernel}: {exc}") from None
    _publish(path, version.encode())
    return version
