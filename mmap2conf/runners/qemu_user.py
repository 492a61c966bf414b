"""qemu-user: any qemu linux-user build, called explicitly (binfmt_misc is not relied upon).

The releases a default run judges are data (emulators/qemu-user.toml): the
system's own and the ones unpacked into the cache. ``--qemu-dir DIR`` judges the
build in DIR instead: a QEMU build tree, an unpacked package, a directory of
``qemu-<target>`` or ``qemu-<target>-static`` binaries.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from functools import lru_cache
from pathlib import Path

from ..model import REPO, Config, ModelError, _Table
from . import VERSION_TIMEOUT, Options, Runner, RunnerUnavailable, clean_environment, host_kernel_bits

RELEASES_FILE = REPO / "emulators" / "qemu-user.toml"


@lru_cache(maxsize=None)
def releases(path: Path = RELEASES_FILE) -> tuple[dict, ...]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: {exc}") from None
    top = _Table(data, path, "top")
    found = []
    for index, raw in enumerate(top.get("release", list), 1):
        entry = _Table(raw if isinstance(raw, dict) else {}, path, f"release #{index}")
        release = {"name": entry.get("name", str), "release": entry.get("release", str),
                   "from": entry.get("from", str, ("path", "archive")), "package": entry.get("package", str)}
        if release["from"] == "archive":
            release.update(suite=entry.get("suite", str), dir=entry.get("dir", str))
        entry.done()
        found.append(release)
    top.done()
    if len({r["name"] for r in found}) != len(found):
        raise ModelError(f"{path}: two releases have the same name")
    return tuple(found)


def find_binary(directory: Path | None, target: str) -> Path | None:
    """qemu-<target> or qemu-<target>-static in ``directory``, or on PATH for None."""
    for name in (f"qemu-{target}", f"qemu-{target}-static"):
        if directory is None:
            found = shutil.which(name)
            if found:
                return Path(found)
        elif (directory / name).is_file():
            return directory / name
    return None


@lru_cache(maxsize=None)
def version_of(binary: Path) -> tuple[str, str]:
    """(release, first line of --version) of a qemu binary; RunnerUnavailable if it cannot
    say: not executable, not an executable format, hangs, or prints no version."""
    from ..sut import SystemUnderTestError, qemu_version
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                                timeout=VERSION_TIMEOUT, env=clean_environment())
    except subprocess.TimeoutExpired:
        raise RunnerUnavailable(f"{binary} --version did not answer within {VERSION_TIMEOUT} s") from None
    except OSError as exc:
        raise RunnerUnavailable(f"{binary} cannot run: {exc.strerror}") from None
    try:
        return qemu_version(result.stdout), result.stdout.strip().splitlines()[0]
    except SystemUnderTestError as exc:
        raise RunnerUnavailable(f"{binary} --version (status {result.returncode}): {exc}") from None


class QemuUser(Runner):
    kind = "qemu-user"
    apt = ("qemu-user-static",)
    tracer = "argument"   # qemu -strace prints mmap2's last argument as passed

    def __init__(self, config: Config, name: str, asked: bool, directory: Path | None,
                 release: dict | None = None):
        super().__init__(config, name, asked)
        self.directory, self.release = directory, release
        self._binary: Path | None = None

    @classmethod
    def systems(cls, config: Config, options: Options) -> list[Runner]:
        if "qemu-user" not in config.runners or not options.wants(cls.kind, True):
            return []
        if options.qemu_dirs:
            return [cls(config, _dir_name(d, options.qemu_dirs), True, d) for d in options.qemu_dirs]
        return [cls(config, r["name"], options.asked_for(cls.kind), None, r) for r in releases()]

    @property
    def target(self) -> str:
        return self.config.runners["qemu-user"].target

    def binary(self) -> Path:
        """The qemu binary, found once (the archive release is unpacked on first use)."""
        if self._binary is None:
            self._binary = self._find_binary()
        return self._binary

    def _find_binary(self) -> Path:
        directory = self.directory
        if self.release is not None and self.release["from"] == "archive":
            from ..archive import ArchiveError, fetch
            try:
                directory = fetch(self.release["package"], self.release["suite"]) / self.release["dir"]
            except ArchiveError as exc:
                raise RunnerUnavailable(f"{self.name}: {exc}") from None
        found = find_binary(directory, self.target)
        if found is None:
            where = f"in {directory}" if directory is not None else "on PATH (apt package qemu-user-static)"
            raise RunnerUnavailable(f"no qemu-{self.target} or qemu-{self.target}-static {where}")
        if not os.access(found, os.X_OK):
            raise RunnerUnavailable(f"{found} is not executable")
        return found

    def identity(self) -> dict:
        binary = self.binary()
        version, line = version_of(binary)
        wanted = self.release and self.release["release"]
        if wanted and version.split(".")[:2] != wanted.split(".")[:2]:
            raise RunnerUnavailable(f"{binary} is QEMU {version}, but {RELEASES_FILE.name} says "
                                    f"{self.name} is release {wanted}")
        return {"binary": str(binary), "version_line": line, "version": version}

    def stated(self) -> dict:
        return {"emulator": "qemu-user", "emulator_version": self.identity()["version"], **host_kernel_bits()}

    def command(self, helper, workdir: Path, trace: bool = False) -> list[str]:
        return [str(self.binary()), *(["-strace"] if trace else []), str(helper), str(workdir)]


def _dir_name(directory: Path, all_dirs: tuple[Path, ...]) -> str:
    """The column of a --qemu-dir build (its release is in the report's identity)."""
    index = all_dirs.index(directory)
    return "qemu-dir" + (f"{index + 1}" if len(all_dirs) > 1 else "")
