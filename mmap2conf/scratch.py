"""Scratch directories: where a helper process makes the files of its cases.

The helper unlinks each file right after opening it; the directory itself is
removed (and unmounted, for a mount the suite made) when the session closes.
Each directory's name carries its owner's tag (procs.py), mmap2conf-<pid>.<start
time>-XXXXXXXX: a run that died leaves its directories and mounts to the sweep
(its guardian's, or the next run's), which takes only those whose owner is gone.

$MMAP2CONF_SCRATCH, when set, is the scratch root; it must be a writable,
exec-allowing directory, else it is an error (never silently replaced).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import procs

KINDS = (None, "noexec", "large")
MOUNT_TIMEOUT = 30
MOUNT_SOURCE = "mmap2conf-noexec"   # the name of the tmpfs mounts the suite makes itself
# The largest file a case makes: pgoff 0xFFFFFFFE in 8 KiB units, plus a page.
LARGEST_FILE = (0xFFFFFFFF << 13) + 8192


ENV_SCRATCH = "MMAP2CONF_SCRATCH"
PREFIX = "mmap2conf-"
# What the suite names after its owner (procs.TAG): scratch directories, the files
# that probe a root for large files (mmap2conf-probe-...), Chromium's profile
# directories (mmap2conf-chromium-..., cli.py), and owned_directory()'s (mmap2conf-rootfs-...,
# mmap2conf-dockerd-...: containers.py).
OWNED = re.compile(rf"{PREFIX}(?:[a-z]+-)?({procs.TAG})-")


class ScratchUnavailable(Exception):
    pass


class ScratchSettingError(Exception):
    """$MMAP2CONF_SCRATCH names a directory the suite cannot use: a usage error."""


def check_setting() -> None:
    """Raise ScratchSettingError if $MMAP2CONF_SCRATCH is set to an unusable directory."""
    value = os.environ.get(ENV_SCRATCH)
    if value is None:
        return
    why = _unusable(value)
    if why:
        raise ScratchSettingError(f"{ENV_SCRATCH}={value!r} cannot be the scratch root: {why}")


def _unusable(path: str) -> str | None:
    if not path or not os.path.isabs(path):
        return "not an absolute path"
    if not os.path.isdir(path):
        return "no such directory" if not os.path.exists(path) else "not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=f"{PREFIX}probe-{procs.owner()}-"):
            pass
    except OSError as exc:
        return f"a file cannot be made there ({exc.strerror})"
    if os.statvfs(path).f_flag & os.ST_NOEXEC:
        return "it is on a noexec filesystem (the cases that map files PROT_EXEC need exec)"
    return None


@functools.lru_cache(maxsize=None)
def scratch_root() -> tuple[str, str, str | None]:
    """(directory, filesystem type, why large sparse files cannot be made there or None).

    $MMAP2CONF_SCRATCH if set (an unusable one is a ScratchSettingError), else the first
    of /dev/shm and the system temporary directory that holds a sparse file of
    LARGEST_FILE bytes (tmpfs does; ext4 with 4 KiB blocks stops at 16 TiB, semantics.md
    section 9), else the first writable one."""
    check_setting()
    candidates = _candidates()
    if not candidates:
        raise ScratchUnavailable("no writable scratch directory (/dev/shm, "
                                 f"{tempfile.gettempdir()}; or set {ENV_SCRATCH})")
    reasons = []
    for candidate in candidates:
        try:
            with tempfile.NamedTemporaryFile(dir=candidate, prefix=f"{PREFIX}probe-{procs.owner()}-") as probe:
                os.truncate(probe.name, LARGEST_FILE)
            return candidate, _fs_type(candidate), None
        except OSError as exc:
            reasons.append(f"{candidate} ({_fs_type(candidate)}): {exc.strerror}")
    return candidates[0], _fs_type(candidates[0]), "no directory holds a sparse file of 2^45 bytes: " + "; ".join(reasons)


def _candidates() -> list[str]:
    if os.environ.get(ENV_SCRATCH) is not None:
        return [os.environ[ENV_SCRATCH]]
    return [c for c in ("/dev/shm", tempfile.gettempdir()) if os.access(c, os.W_OK)]


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
    procs.sweep_at_start()
    if kind == "large" and large_files_unavailable:
        raise ScratchUnavailable(large_files_unavailable)
    prefix = f"{PREFIX}{procs.owner()}-"
    if kind == "noexec":
        existing = _writable_noexec_tmpfs()
        if existing:   # e.g. docker run --tmpfs /mnt/noexec:noexec, or a noexec /dev/shm: no root needed
            return Path(tempfile.mkdtemp(prefix=prefix, dir=existing))
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    if kind == "noexec":
        # A small tmpfs of our own: PROT_EXEC on its files must fail with EPERM (mmap(2) ERRORS).
        try:
            result = procs.run(["mount", "-t", "tmpfs", "-o", "noexec,nosuid,nodev,size=16m",
                                MOUNT_SOURCE, str(path)], timeout=MOUNT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            result = subprocess.CompletedProcess([], 1, "", str(exc))
        if result.returncode != 0:
            remove(kind, path)
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


def owned_directory(kind: str) -> Path:
    """A directory of the suite's own that is not a case's scratch directory (a container
    image's root file system, a private dockerd's: containers.py), named after its owner
    like one: when the owner is gone, the sweep takes it and whatever is mounted in it."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{procs.owner()}-"))


def remove(kind: str | None, path: Path) -> None:
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def unmount_under(path) -> bool:
    """Unmount ``path`` and every mount below it (debootstrap's /proc in a root file system,
    dockerd's network namespace), innermost first; whether all of them went."""
    points = _mount_points(lambda source, point: point == str(path) or point.startswith(f"{path}/"))
    return all([_unmount(point) for point in points])


def _unmount(path: str) -> bool:
    """Unmount; a mount still busy is detached (lazy), so the directory can go."""
    for command in (["umount", path], ["umount", "-l", path]):
        try:
            if procs.run(command, timeout=MOUNT_TIMEOUT).returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    return False


def _mount_points(wanted) -> list[str]:
    """The mount points of /proc/mounts whose (source, mount point) ``wanted`` takes,
    innermost first."""
    with open("/proc/mounts") as mounts:
        entries = [(line.split()[0], line.split()[1].replace("\\040", " ")) for line in mounts]
    return sorted((point for source, point in entries if wanted(source, point)), key=len, reverse=True)


def _suite_mounts() -> list[str]:
    """Mount points of the tmpfs mounts the suite made (MOUNT_SOURCE), innermost first."""
    return _mount_points(lambda source, point: source == MOUNT_SOURCE)


def sweep(stale) -> list[str]:
    """Unmount the suite's mounts, and remove the scratch directories and probe files, whose
    owner's tag ``stale(tag)`` says is stale (procs.sweep: its processes are already gone).
    Names without an owner's tag (an older suite's) are never touched."""
    done = []
    for point in _suite_mounts():
        match = OWNED.match(os.path.basename(point))
        if match and stale(match.group(1)):
            if _unmount(point):
                done.append(f"unmounted {point}")
    roots = {*_candidates(), tempfile.gettempdir(), *filter(None, [_writable_noexec_tmpfs()])}
    for root in sorted(roots):
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            match = OWNED.match(entry.name)
            if not match or not stale(match.group(1)):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not unmount_under(entry.path):
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except OSError:
                    continue
            done.append(f"removed {entry.path}")
    return done
