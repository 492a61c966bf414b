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
import json
import lzma
import re
import stat
import zlib
from pathlib import Path

from .digests import file_digest, publish

# The initramfs: /init is the helper; /dev/console must exist for the kernel to give
# init its descriptors 0-2 (init/main.c console_on_rootfs), /dev/zero serves fd
# "devzero", /tmp and /noexec are where init mode mounts its tmpfs, and a dispatching
# init finds the helpers it starts in /h (helpers/PROTOCOL.md, init mode).
DIRECTORIES = (("dev", 0o755), ("tmp", 0o1777), ("noexec", 0o1777), ("h", 0o755))
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


def newc_archive(init: bytes, helpers: tuple[bytes, ...] = ()) -> bytes:
    """The uncompressed initramfs: the directories, the device nodes, /init and /h/<n>."""
    members, ino = [], 1
    for name, perm in DIRECTORIES:
        members.append(newc_entry(name, stat.S_IFDIR | perm, ino=ino, nlink=2))
        ino += 1
    for name, perm, major, minor in DEVICES:
        members.append(newc_entry(name, stat.S_IFCHR | perm, ino=ino, rdev=(major, minor)))
        ino += 1
    members.append(newc_entry("init", stat.S_IFREG | 0o755, init, ino=ino))
    for index, helper in enumerate(helpers):
        members.append(newc_entry(guest_path(index)[1:], stat.S_IFREG | 0o755, helper, ino=ino + 1 + index))
    members.append(newc_entry(TRAILER, 0))
    return b"".join(members)


def guest_path(index: int) -> str:
    """Where the initramfs holds the helper ``index`` a dispatching init starts."""
    return f"/h/{index}"


def initramfs_bytes(init: bytes, helpers: tuple[bytes, ...] = ()) -> bytes:
    """gzip'd newc archive; no timestamps anywhere, so equal helpers give equal bytes."""
    return gzip.compress(newc_archive(init, helpers), compresslevel=6, mtime=0)


def _cache_dir() -> Path:
    from .build import CACHE_DIR  # late: build needs pyelftools, the bootstrap has none
    return CACHE_DIR


def initramfs_for(helper: Path, helpers: tuple[Path, ...] = ()) -> Path:
    """The cached initramfs whose /init is ``helper`` and whose /h/<n> are ``helpers``
    (for a dispatching init), keyed by their content: by their digests, which a process
    makes once (every case's reproducer names its initramfs)."""
    digest = hashlib.sha256(b"".join(bytes.fromhex(file_digest(h)) for h in (helper, *helpers)))
    path = _cache_dir() / "initramfs" / f"{digest.hexdigest()[:16]}.cpio.gz"
    if not path.exists():
        publish(path, initramfs_bytes(helper.read_bytes(), tuple(h.read_bytes() for h in helpers)))
    return path


def find_kernel(root: Path, pattern: str, what: str, kind: str = "kernel file") -> Path:
    """The one ``kind`` (a kernel file, its configuration) that ``pattern`` (a glob) names
    under ``root``."""
    found = sorted(p for p in root.glob(pattern) if p.is_file())
    if not found:
        raise KernelError(f"no {kind} {root / pattern} ({what})")
    if len(found) > 1:
        raise KernelError(f"{root / pattern} matches several: {', '.join(str(p) for p in found)}")
    return found[0]


def package_release(root: Path) -> str | None:
    """The release (uname -r) an unpacked kernel package is for: its one lib/modules/<release>,
    or usr/lib/modules/<release> (merged /usr: Debian 13) (Debian's linux-headers and
    linux-image packages both have it; kbuild's /lib/modules/$(uname -r)/build); None where
    it has not exactly one."""
    found = [p.name for modules in ("lib/modules", "usr/lib/modules") for p in (root / modules).glob("*")
             if p.is_dir()]
    return found[0] if len(found) == 1 else None


def image_kind(image: bytes) -> str:
    """What kind of kernel image this is (machines.IMAGE_KINDS), from its header:
    x86 bzImage ("HdrS" at 0x202, XLF_KERNEL_64 in xloadflags at 0x236), arm zImage
    (magic 0x016F2818 at 0x24), arm64 Image ("ARM\\x64" at 0x38; Debian gzips it),
    MIPS ELF (e_machine 8)."""
    if image[:3] == b"\x1f\x8b\x08":
        image = zlib.decompressobj(31).decompress(image, 4096)
    if image[0x202:0x206] == b"HdrS":
        return "x86-bzImage-64" if len(image) > 0x237 and image[0x236] & 1 else "x86-bzImage-32"
    if image[0x24:0x28] in (b"\x18\x28\x6f\x01", b"\x01\x6f\x28\x18"):
        return "arm-zImage"
    if image[0x38:0x3C] == b"ARM\x64":
        return "arm64-Image"
    if image[:4] == b"\x7fELF" and len(image) > 0x14:
        little = image[5] == 1
        machine = int.from_bytes(image[0x12:0x14], "little" if little else "big")
        if machine == 8:
            return "mips-elf-64" if image[4] == 2 else "mips-elf-32"
    raise KernelError("not a kernel image this suite can boot (no x86 bzImage, arm zImage, arm64 Image "
                      "or MIPS ELF header)")


_BANNER = re.compile(rb"Linux version \S+ \([^\n\0]+")
_STREAMS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"))
_MAX_UNPACKED = 256 << 20


def banner_version(banner: bytes) -> str:
    """The PEP 440 version (sut.kernel_version) of the kernel a ``Linux version ...``
    banner names: its release, and the Debian version where the banner has one."""
    match = _BANNER.match(banner)
    if not match:
        raise KernelError(f"not a kernel banner: {banner[:120]!r}")
    from .sut import SystemUnderTestError, kernel_version
    text = match.group().decode(errors="replace")
    try:
        return kernel_version(text.split()[2], text)
    except SystemUnderTestError as exc:
        raise KernelError(str(exc)) from None


def banner_release(banner: bytes) -> str:
    """uname -r of the kernel a banner names: "Linux version 6.1.0-50-686 (...)" -> 6.1.0-50-686."""
    return banner.split()[2].decode(errors="replace")


def _unpacked(image: bytes):
    """The image itself, then what each xz or gzip stream in it unpacks to (bzImage, zImage
    and MIPS vmlinuz all compress the kernel)."""
    yield image
    for magic, kind in _STREAMS:
        start = image.find(magic)
        while start >= 0:
            try:
                if kind == "xz":
                    yield lzma.LZMADecompressor().decompress(image[start:], _MAX_UNPACKED)
                else:
                    yield zlib.decompressobj(31).decompress(image[start:], _MAX_UNPACKED)
            except (lzma.LZMAError, zlib.error):
                pass
            start = image.find(magic, start + 1)


def image_banner(image: bytes) -> bytes:
    """The ``Linux version`` banner of a kernel image: in the clear, or inside the first
    xz or gzip stream that holds one."""
    for unpacked in _unpacked(image):
        match = _BANNER.search(unpacked)
        if match:
            return match.group()
    banner = _boot_header_banner(image)
    if banner:
        return banner
    raise KernelError("no 'Linux version' banner in the image, in the clear, in an xz or gzip stream, "
                      "or in an x86 boot header")


def _boot_header_banner(image: bytes) -> bytes | None:
    """An x86 bzImage names its version in its setup header (kernel_version at 0x20E points
    to the string, less 0x200; Documentation/arch/x86/boot.rst), whatever compresses the
    payload (Debian 13's amd64 kernel: zstd, which the standard library cannot read)."""
    if image[0x202:0x206] != b"HdrS" or len(image) < 0x210:
        return None
    start = int.from_bytes(image[0x20E:0x210], "little") + 0x200
    end = image.find(b"\0", start, start + 512)
    if start == 0x200 or end < 0:
        return None
    return b"Linux version " + image[start:end]


# CONFIG_IKCONFIG: kernel/configs.c embeds the gzip'd .config after this marker (and
# "IKCFG_ED" after it), which scripts/extract-ikconfig looks for.
IKCONFIG_START = b"IKCFG_ST"


def embedded_config(image: bytes) -> str | None:
    """The configuration a kernel built with CONFIG_IKCONFIG carries (as
    scripts/extract-ikconfig finds it: the marker, then a gzip stream), in the image
    or in an xz or gzip stream of it; None where it has none. Images compressed with
    bzip2, lzma (not xz), lzo, lz4 or zstd are not unpacked: their configuration is
    found only where it is in the clear (an uncompressed vmlinux or Image)."""
    for unpacked in _unpacked(image):
        start = unpacked.find(IKCONFIG_START)
        while start >= 0:
            try:
                return zlib.decompressobj(31).decompress(unpacked[start + len(IKCONFIG_START):],
                                                         _MAX_UNPACKED).decode(errors="replace")
            except zlib.error:
                start = unpacked.find(IKCONFIG_START, start + 1)
    return None


def image_config(kernel: Path) -> str | None:
    """embedded_config of a kernel file, cached by its content (unpacking an image takes
    about half a second)."""
    return _by_content(kernel, "config.json", lambda image, _: {"config": embedded_config(image)})["config"]


_OPTION = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)")
_NOT_SET = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as option -> value as written (y, m, 0xC0000000, a quoted string);
    "# CONFIG_X is not set" is n, as Kconfig reads it."""
    options = {}
    for line in text.splitlines():
        match = _OPTION.fullmatch(line.strip())
        if match:
            options[match.group(1)] = match.group(2)
            continue
        match = _NOT_SET.fullmatch(line.strip())
        if match:
            options[match.group(1)] = "n"
    return options


def kernel_identity(kernel: Path) -> dict:
    """What a kernel image says of itself without booting: its release (uname -r),
    PEP 440 version, image kind and sha256; cached by the file's content."""
    def identity(image: bytes, digest: str) -> dict:
        try:
            banner = image_banner(image)
            return {"release": banner_release(banner), "version": banner_version(banner),
                    "image_kind": image_kind(image), "sha256": digest}
        except KernelError as exc:
            raise KernelError(f"{kernel}: {exc}") from None
    return _by_content(kernel, "json", identity)


def _by_content(kernel: Path, suffix: str, compute) -> dict:
    """``compute(image, sha256)`` of a kernel file, cached under its digest: a hit reads
    no image (digests.py); a miss is stored under the digest of the bytes it read, so a
    file replaced meanwhile is never cached under the other's."""
    path = _cache_dir() / "kernels" / f"{file_digest(kernel)[:16]}.{suffix}"
    if path.exists():
        return json.loads(path.read_text())
    image = kernel.read_bytes()
    digest = hashlib.sha256(image).hexdigest()
    value = compute(image, digest)
    publish(_cache_dir() / "kernels" / f"{digest[:16]}.{suffix}", json.dumps(value).encode())
    return value
