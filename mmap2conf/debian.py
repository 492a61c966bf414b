"""Files from Debian packages, unpacked into the build cache without installing them.

The tests of the result formats read them with the consumers' own code: the kernel's
KTAP parser (tools/testing/kunit/kunit_parser.py, inside the source tarball of
Debian's linux-source package), LAVA's schemas (lava-common) and LAVA's shell helper
`lava-test-case` (lava-dispatcher). Nothing is installed system-wide: `apt-get
download` fetches the version apt's lists name as the candidate, and only the files
named here are unpacked, into CACHE_DIR/debian/<package>_<version>/. A package
version already there is never fetched again (bootstrapping twice fetches nothing).

Standard library and Debian's own tools (apt-get, dpkg-deb, tar) only: the bootstrap
calls it before any virtual environment exists.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .model import REPO

# The same directory as build.CACHE_DIR (build imports pyelftools, the bootstrap has none).
CACHE_DIR = Path(os.environ.get("MMAP2CONF_CACHE", REPO / ".cache"))
TIMEOUT = 900   # seconds for one download and unpack (linux-source is 139 MB)


class DebianError(RuntimeError):
    pass


@dataclass(frozen=True)
class Files:
    """Some files of one Debian package: paths in the package's data, or, with
    `tarball`, paths inside a tarball that the package ships."""
    package: str
    members: tuple[str, ...]
    tarball: str | None = None


KUNIT = Files("linux-source-6.1", tarball="usr/src/linux-source-6.1.tar.xz",
              members=("linux-source-6.1/tools/testing/kunit/kunit_parser.py",
                       "linux-source-6.1/tools/testing/kunit/kunit_printer.py"))
LAVA_COMMON = Files("lava-common", members=("usr/lib/python3/dist-packages/lava_common",))
LAVA_DISPATCHER = Files("lava-dispatcher", members=(
    "usr/lib/python3/dist-packages/lava_dispatcher/lava_test_shell/lava-test-case",
    "usr/lib/python3/dist-packages/lava_dispatcher/lava_test_shell/lava-common-functions"))
ALL = (KUNIT, LAVA_COMMON, LAVA_DISPATCHER)


def candidate_version(package: str) -> str | None:
    """The version `apt-get download` would fetch, or None when apt's lists have none."""
    result = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                            env=dict(os.environ, LC_ALL="C"))
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            value = value.strip()
            return None if value in ("", "(none)") else value
    return None


def _directory(package: str, version: str) -> Path:
    return CACHE_DIR / "debian" / f"{package}_{version.replace(':', '%3a')}"


def cached(files: Files) -> Path | None:
    """The newest unpacked version of the package in the cache, if any."""
    found = sorted((CACHE_DIR / "debian").glob(f"{files.package}_*"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _run_pipeline(commands: list[list[str]], cwd: Path) -> None:
    """Run commands joined by pipes; raise DebianError naming the first that failed."""
    processes, stdin = [], None
    for index, command in enumerate(commands):
        last = index == len(commands) - 1
        process = subprocess.Popen(command, cwd=cwd, stdin=stdin, stderr=subprocess.PIPE,
                                   stdout=None if last else subprocess.PIPE)
        if stdin is not None:
            stdin.close()   # the next process owns the pipe now
        stdin = process.stdout
        processes.append(process)
    failures = []
    for command, process in zip(commands, processes):
        try:
            _, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        if process.returncode:
            failures.append(f"{' '.join(command)}: exit {process.returncode}: "
                            f"{stderr.decode(errors='replace').strip()[-400:]}")
    if failures:
        raise DebianError("; ".join(failures))


def fetch(files: Files) -> Path:
    """The directory the files of `files` are unpacked in (same layout as in the package,
    or in its tarball), fetching the candidate version first when it is not cached."""
    version = candidate_version(files.package)
    if version is None:
        old = cached(files)
        if old is not None:
            return old
        raise DebianError(f"apt knows no version of {files.package}: run `apt-get update` "
                          f"(make bootstrap does)")
    target = _directory(files.package, version)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{files.package}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another process may be fetching the same package
        if target.is_dir():
            return target
        work = Path(tempfile.mkdtemp(prefix=f".{files.package}-", dir=target.parent))
        try:
            download = subprocess.run(["apt-get", "download", f"{files.package}={version}"], cwd=work,
                                      capture_output=True, text=True, timeout=TIMEOUT)
            debs = list(work.glob("*.deb"))
            if download.returncode or len(debs) != 1:
                raise DebianError(f"apt-get download {files.package}={version} failed: "
                                  f"{download.stderr.strip()[-400:]}")
            tree = work / "tree"
            tree.mkdir()
            unpack = ["dpkg-deb", "--fsys-tarfile", str(debs[0])]
            if files.tarball is None:
                _run_pipeline([unpack, ["tar", "-x", "-C", str(tree), *(f"./{m}" for m in files.members)]], work)
            else:
                compression = {".xz": "--xz", ".gz": "--gzip", ".bz2": "--bzip2"}[Path(files.tarball).suffix]
                _run_pipeline([unpack, ["tar", "-x", "-O", f"./{files.tarball}"],
                               ["tar", "-x", compression, "-C", str(tree), *files.members]], work)
            missing = [m for m in files.members if not (tree / m).exists()]
            if missing:
                raise DebianError(f"{debs[0].name} has no {', '.join(missing)}")
            tree.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def kunit_dir() -> Path:
    """The directory holding kunit_parser.py and the kunit_printer.py it imports."""
    return fetch(KUNIT) / "linux-source-6.1" / "tools" / "testing" / "kunit"


def lava_common_path() -> Path:
    """The directory to put on sys.path to import lava_common (it needs voluptuous and yaml)."""
    return fetch(LAVA_COMMON) / "usr" / "lib" / "python3" / "dist-packages"


def lava_test_shell_dir() -> Path:
    """The directory of LAVA's lava-test-case helper, to put on PATH."""
    return fetch(LAVA_DISPATCHER) / "usr" / "lib" / "python3" / "dist-packages" / "lava_dispatcher" / "lava_test_shell"
