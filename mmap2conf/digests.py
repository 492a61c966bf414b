"""The sha256 of a big input file (a kernel image, a qemu binary, firmware, a libc.a, a
saved guest state), hashed once per version of the file rather than once per process.

Every pytest process (the xdist controller and each worker) names the kernel columns by
their images' identities and keys saved guest states by the qemu-system binaries and the
files they load: hashing those MBs again took about 0.45 s per process, and a restore
hashing its 40 to 95 MB state 50 to 200 ms (two workers busy on two cores). A digest is kept
for the rest of the process and in a memo file under the cache, both keyed by the file's
(realpath, st_dev, st_ino, st_size, st_mtime_ns); a saved guest state's is recorded as it
is written (remember), from the hash of its stream on its way in.

That key is safe enough because every way our inputs change changes it: a file replaced
by a rename (dpkg, apt, our own unpacking, a compiler's output) is a new inode, and one
rewritten in place gets the mtime of the write. What it misses is a rewrite in place that
keeps the size and the mtime: one within the same tick of the kernel's file clock (a few
ms) as the version hashed, or one that sets the old mtime back (touch -r); make and rsync
take that risk too, nothing of ours rewrites these files in place, and the per-process
digest had the same key before it was kept across processes.

Standard library only at import time: the bootstrap imports kernels before any virtual
environment exists.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

_HEX = re.compile(r"[0-9a-f]{64}")
# Smaller files are hashed in a ms or less and get no memo: the files tests make in their
# temporary directories leave nothing in the cache.
MEMO_MIN_SIZE = 1 << 20


def file_digest(path, start: int = 0) -> str:
    """The sha256 (hex) of the file at ``path``, from byte ``start`` on."""
    return _digest_of(*_identity(path, start, os.stat(path)))


def _identity(path, start: int, info: os.stat_result) -> tuple:
    """What a digest is kept by: the file's real path and its version (module docstring)."""
    return os.path.realpath(path), start, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def remember(path, start: int, info: os.stat_result, digest: str) -> None:
    """Record the digest of a file this process has just written and hashed on its way
    (``info``: its fstat after the last write), so that no process hashes it again."""
    _keep(_memo(*_identity(path, start, info)), digest, info.st_size)


def _memo(path: str, start: int, *identity) -> Path:
    from .build import CACHE_DIR  # late, as kernels._cache_dir
    return CACHE_DIR / "digests" / hashlib.sha256(repr((path, start, *identity)).encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=256)
def _digest_of(path: str, start: int, *identity) -> str:
    memo = _memo(path, start, *identity)
    try:
        known = memo.read_text()
        if _HEX.fullmatch(known):   # else a memo of another format, or damaged: hash again
            return known
    except OSError:
        pass
    with open(path, "rb") as file:
        file.seek(start)
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    _keep(memo, digest, identity[2])
    return digest


def _keep(memo: Path, digest: str, size: int) -> None:
    """The memo is a cache: one that cannot be written (a full disk, a read-only cache)
    costs a hash later, not an error now."""
    if size >= MEMO_MIN_SIZE:
        try:
            publish(memo, digest.encode())
        except OSError:
            pass


def publish(path: Path, data: bytes) -> None:
    """Write atomically, so concurrent workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
