"""Scratch directories: where a helper process makes the files of its cases.

The helper unlinks each file right after opening it; the directory itself is
removed (and unmounted, for a mount the suite made) when the session closes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KINDS = (None, "noexec")
MOUNT_TIMEOUT = 30


class ScratchUnavailable(Exception):
    pass


def scratch_root() -> str | None:
    """Prefer tmpfs: no 16 TiB file cap and sparse files cost no disk (semantics.md section 9)."""
    override = os.environ.get("MMAP2CONF_SCRATCH")
    if override:
        return override
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def make(kind: str | None) -> Path:
    path = Path(tempfile.mkdtemp(prefix="mmap2conf-", dir=scratch_root()))
    if kind == "noexec":
        # A small tmpfs of our own: PROT_EXEC on its files must fail with EPERM (mmap(2) ERRORS).
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,nosuid,nodev,size=16m",
                                 "mmap2conf-noexec", str(path)], capture_output=True, text=True,
                                timeout=MOUNT_TIMEOUT)
        if result.returncode != 0:
            path.rmdir()
            raise ScratchUnavailable(f"cannot mount a noexec tmpfs (needs root): {result.stderr.strip()}")
    return path


def remove(kind: str | None, path: Path) -> None:
    if kind == "noexec":
        subprocess.run(["umount", str(path)], capture_output=True, timeout=MOUNT_TIMEOUT)
    shutil.rmtree(path, ignore_errors=True)
