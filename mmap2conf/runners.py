"""Runners: the only thing a runner does is start a helper process.

Everything above this module (protocol, cases, oracle, report) is the same for
every runner. A runner knows how to turn a helper binary into a command line,
whether it can run at all on this machine, and which version of the emulator or
kernel answers.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .model import Config

VERSION_TIMEOUT = 30


class RunnerUnavailable(Exception):
    """This runner cannot run this configuration here; the message says why."""


def clean_environment() -> dict[str, str]:
    # QEMU_PAGESIZE (like -p) changes qemu's idea of the host page and makes mmap2
    # map wrong data (toolchains.md section 4); no QEMU_* setting may leak into a run.
    return {k: v for k, v in os.environ.items() if not k.startswith("QEMU_")}


@dataclass(frozen=True)
class QemuUser:
    """qemu-user, called explicitly: binfmt_misc is not relied upon."""

    config: Config
    qemu_dir: Path | None = None
    kind: str = "qemu-user"
    apt = ("qemu-user-static",)
    trace_shows = "argument"   # qemu -strace prints mmap2's last argument as passed

    @property
    def binary(self) -> str:
        name = self.config.runners[self.kind].binary
        if self.qemu_dir is not None:
            path = self.qemu_dir / name
            if not os.access(path, os.X_OK):
                raise RunnerUnavailable(f"{path} is not an executable (from --qemu-dir)")
            return str(path)
        found = shutil.which(name)
        if found is None:
            raise RunnerUnavailable(f"{name} is not on PATH (apt package qemu-user-static)")
        return found

    def version(self) -> str:
        return _qemu_version(self.binary)

    def command(self, helper: Path, workdir: Path, trace: bool = False) -> list[str]:
        return [self.binary, *(["-strace"] if trace else []), str(helper), str(workdir)]


@dataclass(frozen=True)
class Native:
    """The host kernel runs the helper itself (for i386: the x86_64 kernel's compat path)."""

    config: Config
    kind: str = "native"
    apt = ("strace",)
    trace_shows = "bytes"      # strace prints mmap2's offset scaled to bytes

    def version(self) -> str:
        return f"Linux {platform.release()} {platform.machine()}"

    def command(self, helper: Path, workdir: Path, trace: bool = False) -> list[str]:
        tracer = ["strace", "-f", "-qq", "-e", "trace=mmap,mmap2"] if trace else []
        if trace and shutil.which("strace") is None:
            raise RunnerUnavailable("strace is not installed (apt package strace)")
        return [*tracer, str(helper), str(workdir)]


@lru_cache(maxsize=None)
def _qemu_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         timeout=VERSION_TIMEOUT, env=clean_environment()).stdout
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", out)
    if not match:
        raise RunnerUnavailable(f"{binary} --version printed no version: {out[:200]!r}")
    return match.group(1)


def make_runner(kind: str, config: Config, qemu_dir: Path | None = None):
    if kind not in config.runners:
        raise RunnerUnavailable(f"{config.path.name} declares no [runners.{kind}]")
    return QemuUser(config, qemu_dir) if kind == "qemu-user" else Native(config)
