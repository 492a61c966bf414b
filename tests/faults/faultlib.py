"""Helpers of the fault-injection tests (the fixtures are in conftest.py).

Every test that runs the suite gives it a private scratch root (MMAP2CONF_SCRATCH,
a directory on /dev/shm made by the scratch_root fixture), so that "nothing left
in the scratch root" is exact while other runs share the machine; processes are
found by their owner's tag (mmap2conf/procs.py), never by name.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmap2conf import procs
from mmap2conf.model import REPO

FAULTS = Path(__file__).resolve().parent
INJECT = FAULTS / "wrappers" / "inject.py"
WAIT = 120.0      # the bound on waiting for something that must happen (never asserted on)
RUN_TIMEOUT = 600
QEMU_I386 = shutil.which("qemu-i386-static")


def wait_until(predicate, what, bound: float = WAIT):
    """Poll ``predicate`` until it returns a true value (returned); fail naming ``what``
    (a text, or a function giving it then) if it has not after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {bound:g} s for {what() if callable(what) else what}")
        time.sleep(0.05)


def tag_of(pid: int) -> str:
    return f"{pid}.{procs.start_time(pid)}"


def alive(pid: int) -> bool:
    return procs.start_time(pid) is not None


def mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts
                if line.split()[1] == str(root) or line.split()[1].startswith(f"{root}/")]


def guardians(tag: str) -> list[int]:
    entry = f"{procs.ENV_GUARDIAN}={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if entry in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                    found.append(int(name))
            except OSError:
                pass
    return found


def leftovers(root: Path, *tags: str) -> dict:
    """What is left of runs: processes carrying one of ``tags``, their guardians still
    running, mounts under the scratch root and entries in it."""
    return {"processes": {pid: t for tag in tags for pid, t in procs.tagged_processes(tag).items()},
            "guardians": [pid for tag in tags for pid in guardians(tag)],
            "mounts": mounts_under(root), "entries": sorted(p.name for p in root.iterdir())}


NOTHING = {"processes": {}, "guardians": [], "mounts": [], "entries": []}


def assert_nothing_left(root: Path, *tags: str) -> None:
    """Wait (bounded) for the guardians of ``tags`` to finish; then nothing may be left."""
    wait_until(lambda: leftovers(root, *tags) == NOTHING,
               lambda: f"nothing to be left of {', '.join(tags)}; left: {leftovers(root, *tags)}")


def can_run_i386_natively(helper: Path) -> bool:
    try:
        result = subprocess.run([str(helper), "/tmp"], input=b'{"op":"probe","id":"p"}\n',
                                capture_output=True, timeout=30)
    except OSError:
        return False
    return result.returncode == 0 and b'"id":"p"' in result.stdout


def qemu_dir(tmp_path: Path, fault: str | None, match: str = "", once: bool = True,
             extra: str = "") -> tuple[Path, Path]:
    """A --qemu-dir whose qemu-i386-static is the real one behind inject.py (--version
    answered by the real one). Returns (directory, inject.py's log file)."""
    if QEMU_I386 is None:
        pytest.skip("qemu-i386-static is not installed (make bootstrap)")
    directory = tmp_path / "qemu"
    directory.mkdir()
    log = tmp_path / "inject.log"
    wrapper = directory / "qemu-i386-static"
    if fault is None:
        body = f'exec {QEMU_I386} "$@"'
    else:
        body = (f"exec {sys.executable} {INJECT} --fault {fault} --match '{match}' --log {log} "
                + (f"--once {tmp_path / 'fired'} " if once else "") + f'{extra} -- {QEMU_I386} "$@"')
    wrapper.write_text(f'#!/bin/sh\ncase "$1" in --version) exec {QEMU_I386} "$@";; esac\n{body}\n')
    wrapper.chmod(0o755)
    return directory, log


def logged_pids(log: Path) -> list[int]:
    """Every pid inject.py logged: the wrappers, their helpers, their sleepers."""
    if not log.exists():
        return []
    return [int(p) for line in log.read_text().splitlines() if line.startswith("pid ")
            for p in line.split()[1:]]


def pytest_command(args: list[str], cwd: Path = REPO) -> list[str]:
    return [sys.executable, "-m", "pytest", str(cwd / "tests" / "test_conformance.py"),
            "-p", "no:cacheprovider", "-q", *args]


def conformance(args: list[str], env: dict | None = None, cwd: Path = REPO,
                timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """A real pytest run of the conformance cases, as a user would start it."""
    return subprocess.run(pytest_command(args, cwd), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def records(path: Path) -> dict[str, dict]:
    """A JSON report's records by test id (config/flavour/runner/table/case)."""
    return {r["nodeid"].split("[", 1)[1][:-1]: r for r in json.loads(path.read_text())["records"]}


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "INTERNALERROR" not in text, text[-3000:]
