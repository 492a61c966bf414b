"""Fixtures of the fault-injection tests (the helpers are in faultlib.py)."""
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from mmap2conf import build, scratch
from mmap2conf.model import load_all

from faultlib import can_run_i386_natively, mounts_under


def private_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="mmap2conf-faults-", dir="/dev/shm"))


def remove_root(root: Path) -> None:
    for point in sorted(mounts_under(root), key=len, reverse=True):   # a failed test's: unmount first
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch_root(monkeypatch):
    """A private, empty scratch root on a tmpfs (large sparse files work there), set as
    MMAP2CONF_SCRATCH for this process and every process it starts."""
    root = private_root()
    monkeypatch.setenv(scratch.ENV_SCRATCH, str(root))
    scratch.scratch_root.cache_clear()
    yield root
    scratch.scratch_root.cache_clear()
    remove_root(root)


@pytest.fixture(scope="session")
def i386_raw() -> Path:
    """The real i386 raw helper (built and verified like the suite's)."""
    return build.helper_path(load_all()["i386"], "raw")


@pytest.fixture(scope="session")
def native_helper(i386_raw) -> Path:
    if not can_run_i386_natively(i386_raw):
        pytest.skip("this host kernel does not run i386 helpers (IA32 emulation off)")
    return i386_raw


@pytest.fixture
def started():
    """Processes a test starts itself (each in a group of its own): whatever is left of
    them is killed, as a group, and reaped at the end."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
