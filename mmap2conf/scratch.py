"""Scratch directories: where a helper process makes the files of its cases.

The helper unlinks each file right after opening it; the directory itself is
removed (and unmounted, for a mount the suite made) when the session closes.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KINDS = (None, "noexec", "large")
MOUNT_TIMEOUT = 30
MOUNT_SOURCE = "mmap2conf-noexec"   # the name of the tmpfs mounts the suite makes itself
# The largest file a case makes: pgoff 0xFFFFFFFE in 8 KiB units, plus a page.
LARGEST_FILE = (0xFFFFFFFF << 13) + 8192


class ScratchUnavailable(Exception):
    pass


@functools.lru_cache(maxsize=None)
def scratch_root() -> tuple[str, str, str | None]:
    """(directory, filesystem type, why large sparse files cannot be made there or None).

    Candidates in order: $MMAP2CONF_SCRATCH, /dev/shm, the system temporary directory.
    The first that holds a sparse file of LARGEST_FILE bytes wins (tmpfs does; ext4 with
    4 KiB blocks stops at 16 TiB, semantics.md section 9); else the first writable one."""
    candidates = [c for c in (os.environ.get("MMAP2CONF_SCRATCH"), "/dev/shm", tempfile.gettempdir())
                  if c and os.access(c, os.W_OK)]
    if not candidates:
        raise ScratchUnavailable("no writable scratch directory")
    reasons = []
    for candidate in candidates:
        try:
            with tempfile.NamedTemporaryFile(dir=candidate, prefix="mmap2conf-probe-") as probe:
                os.truncate(probe.name, LARGEST_FILE)
            return candidate, _fs_type(candidate), None
        except OSError as exc:
            reasons.append(f"{candidate} ({_fs_type(candidate)}): {exc.strerror}")
    return candidates[0], _fs_type(candidates[0]), "no directory holds a sparse file of 2^45 bytes: " + "; ".join(reasons)


def _fs_type(path: str) -> str:
    """The type of the filesystem mounted at the longest /proc/mounts prefix of path."""
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mount_point, fs, *_ = line.split()
            if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) > len(best):
                best, kind = mount_point, fs
    return kind


def make(kind: str | None) -> Path:
    root, _, large_files_unavailable = scratch_root()
    if kind == "large" and large_files_unavailable:
        raise ScratchUnavailable(large_files_unavailable)
    if kind == "noexec":
        existing = _writable_noexec_tmpfs()
        if existing:   # e.g. docker run --tmpfs /mnt/noexec:noexec, or a noexec /dev/shm: no root needed
            return Path(tempfile.mkdtemp(prefix="mmap2conf-", dir=existing))
    path = Path(tempfile.mkdtemp(prefix="mmap2conf-", dir=root))
    if kind == "noexec":
        # A small tmpfs of our own: PROT_EXEC on its files must fail with EPERM (mmap(2) ERRORS).
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,nosuid,nodev,size=16m",
                                 MOUNT_SOURCE, str(path)], capture_output=True, text=True,
                                timeout=MOUNT_TIMEOUT)
        if result.returncode != 0:
            path.rmdir()
            raise ScratchUnavailable(f"no writable noexec tmpfs is mounted, and mounting one failed "
                                     f"(needs root, or run the container with --tmpfs /mnt/noexec:noexec): "
                                     f"{result.stderr.strip()}")
    return path


def _writable_noexec_tmpfs() -> str | None:
    with open("/proc/mounts") as mounts:
        for line in mounts:
            source, mount_point, fs, options, *_ = line.split()
            if (fs == "tmpfs" and "noexec" in options.split(",") and source != MOUNT_SOURCE
                    and os.access(mount_point, os.W_OK)):
                return mount_point
    return None


def remove(kind: str | None, path: Path) -> None:
    if kind == "noexec" and os.path.ismount(path):
        subprocess.run(["umount", str(path)], capture_output=True, timeout=MOUNT_TIMEOUT)
    shutil.rmtree(path, ignore_errors=True)
