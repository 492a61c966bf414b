"""Runners: the only thing a runner does is start a helper process.

Everything above this module (protocol, cases, oracle, report) is the same for
every runner. A runner knows how to turn a helper binary into a command line,
whether it can run at all on this machine, and which version of the emulator or
kernel answers.

qemu-user and native give the helper's own pipes. The kernel runners (linux-32,
linux-16k, linux-64bit-4k) boot a real Debian kernel under qemu-system with an
initramfs whose /init is the helper (kernels.py; helpers/PROTOCOL.md, init
mode), so their stream is the guest's serial console (Console).
"""
from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import kernels
from .model import KERNEL_RUNNER_KINDS, Config, KernelSpec

VERSION_TIMEOUT = 30
BOOT_TIMEOUT = 90.0     # from qemu's start to the helper's ready line (boots take 2-5 s, kernels.md)


class RunnerUnavailable(Exception):
    """This runner cannot run this configuration here; the message says why."""


def clean_environment() -> dict[str, str]:
    # QEMU_PAGESIZE (like -p) changes qemu's idea of the host page and makes mmap2
    # map wrong data (toolchains.md section 4); no QEMU_* setting may leak into a run.
    return {k: v for k, v in os.environ.items() if not k.startswith("QEMU_")}


@dataclass(frozen=True)
class Console:
    """The helper's stdin and stdout are a guest's console, a tty: see protocol.py."""

    ready: bytes              # the line the helper writes once it reads requests
    boot_timeout: float       # seconds from start to that line
    eof: bytes = b"\x04"      # VEOF: in canonical mode the helper's read returns 0
    max_line: int = 4095      # the tty's canonical line (N_TTY_BUF_SIZE 4096, with the newline)


@dataclass(frozen=True)
class QemuUser:
    """qemu-user, called explicitly: binfmt_misc is not relied upon."""

    config: Config
    qemu_dir: Path | None = None
    kind: str = "qemu-user"
    apt = ("qemu-user-static",)
    trace_shows = "argument"   # qemu -strace prints mmap2's last argument as passed
    console = None             # the helper's own pipes

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
    console = None

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


@dataclass(frozen=True)
class LinuxKernel:
    """A real Linux kernel under qemu-system, the helper as its /init (kernels.md).

    One boot serves a whole session: the helper answers on the serial console until
    EOF, then powers the machine off. [runners.<kind>] in arches/ names the kernel
    package and file, the qemu-system binary, its machine arguments and the console."""

    config: Config
    kind: str
    apt = ("qemu-system-x86", "qemu-system-arm", "qemu-system-mips")
    trace_shows = None         # no system call tracer runs inside the guest
    # The ready line is INIT_READY in helpers/mmap2_helper.c (PROTOCOL.md, init mode).
    console = Console(ready=b"mmap2_helper: init mode, ready", boot_timeout=BOOT_TIMEOUT)

    @property
    def spec(self) -> KernelSpec:
        return self.config.runners[self.kind].kernel

    def kernel(self) -> Path:
        try:
            return kernels.find_kernel(self.spec.kernel, self.spec.package)
        except kernels.KernelError as exc:
            raise RunnerUnavailable(str(exc)) from None

    @property
    def binary(self) -> str:
        found = shutil.which(self.spec.qemu_system)
        if found is None:
            raise RunnerUnavailable(f"{self.spec.qemu_system} is not on PATH "
                                    f"(apt packages {' '.join(self.apt)})")
        return found

    def version(self) -> str:
        """The kernel's version from its image (no boot): 6.1.176+6.1.0-50-686."""
        try:
            return kernels.kernel_version(self.kernel())
        except (kernels.KernelError, OSError) as exc:
            raise RunnerUnavailable(str(exc)) from None

    def command(self, helper: Path, workdir: Path, trace: bool = False) -> list[str]:
        if trace:
            raise RunnerUnavailable(f"no system call tracer runs inside the {self.kind} guest")
        # The guest makes its own scratch tmpfs, noexec where the session's is.
        return self._command(helper, _noexec(workdir))

    def _command(self, helper: Path, noexec: bool) -> list[str]:
        binary, kernel = self.binary, self.kernel()
        append = f"console={self.spec.console} panic=-1 quiet" + (" MMAP2_SCRATCH=noexec" if noexec else "")
        return [binary, *self.spec.machine_args, "-kernel", str(kernel),
                "-initrd", str(kernels.initramfs_for(helper)), "-append", append]

    def reproducer(self, helper: Path, line: str, scratch_kind: str | None = None) -> str:
        """A shell command that boots the guest, sends one request once it has booted
        (input before the console is up is lost), then EOF (^D), which powers it off."""
        command = self._command(helper, scratch_kind == "noexec")
        return (f"(sleep 20; printf '%s\\n\\004' {shlex.quote(line)}) | timeout {BOOT_TIMEOUT:g} "
                f"{shlex.join(command)}")


def _noexec(workdir: Path) -> bool:
    """Whether the session's scratch directory is noexec (the noexec scratch kind): runners
    whose helper makes its files elsewhere (a guest, a container) make theirs noexec too."""
    try:
        return bool(os.statvfs(workdir).f_flag & os.ST_NOEXEC)
    except OSError:
        return False


def semantics(kind: str) -> str:
    return SEMANTICS.get(kind, kind)


def helper_for(runner, config: Config, flavour: str):
    """The helper a runner starts: built and verified here, except inside a container."""
    if isinstance(runner, Docker):
        return f"{config.name}/{flavour}"
    from .build import helper_path   # not at import: the bootstrap imports this module before pyelftools exists
    return helper_path(config, flavour)


@dataclass(frozen=True)
class Docker:
    """qemu-user inside the suite's image (docker/Dockerfile): one `docker run -i --rm
    --network=none` per helper process. The helper is built and verified in the image,
    so the host needs neither qemu-user nor cross compilers; it answers as qemu-user."""

    config: Config
    image: str
    engine: object              # containers.Engine
    kind: str = "docker"
    apt = ("docker.io", "debootstrap")
    trace_shows = "argument"
    console = None

    def version(self) -> str:
        binary = self.config.runners["qemu-user"].binary
        result = self.engine.run("run", "--rm", "--network=none", self.image, binary, "--version",
                                 timeout=VERSION_TIMEOUT * 4)
        match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", result.stdout)
        if result.returncode != 0 or not match:
            raise RunnerUnavailable(f"{self.image} does not run {binary}: {result.stderr.strip()[-300:]}")
        return match.group(1)

    def command(self, helper: str, workdir: Path, trace: bool = False) -> list[str]:
        # The helper's files live in a tmpfs of the container, noexec where the session's is.
        return self._command(helper, _noexec(workdir), trace)

    def _command(self, helper: str, noexec: bool, trace: bool = False) -> list[str]:
        config, flavour = helper.split("/")
        return self.engine.command(
            "run", "-i", "--rm", "--network=none", "--tmpfs", f"{SCRATCH_IN_CONTAINER}:rw,"
            f"{'noexec' if noexec else 'exec'},size=64m", self.image, IMAGE_PYTHON, "-m", "mmap2conf.runners",
            "exec", config, flavour, *(["--trace"] if trace else []))


    def reproducer(self, helper: str, line: str, scratch_kind: str | None = None) -> str:
        return f"echo {shlex.quote(line)} | {shlex.join(self._command(helper, scratch_kind == 'noexec'))}"


SCRATCH_IN_CONTAINER = "/scratch"
IMAGE_PYTHON = ".venv/bin/python"   # the image's WORKDIR is the suite, bootstrapped there
# A runner kind answers as the kind named here: its expectations, known issues and
# page-size facts are that kind's (the docker runner runs qemu-user in a container).
SEMANTICS = {"docker": "qemu-user"}
RUNNER_CLASSES = {"qemu-user": QemuUser, "native": Native, "docker": Docker,
                  **{kind: LinuxKernel for kind in KERNEL_RUNNER_KINDS}}


def make_runner(kind: str, config: Config, qemu_dir: Path | None = None, docker=None):
    """``docker``: (engine, image) for the docker runner, which runs what qemu-user runs."""
    if kind == "docker":
        if "qemu-user" not in config.runners:
            raise RunnerUnavailable(f"{config.path.name} declares no [runners.qemu-user] to run in a container")
        if docker is None:
            raise RunnerUnavailable("the docker runner needs --image")
        engine, image = docker
        return Docker(config, image, engine)
    if kind not in config.runners:
        raise RunnerUnavailable(f"{config.path.name} declares no [runners.{kind}]")
    if kind == "qemu-user":
        return QemuUser(config, qemu_dir)
    return Native(config) if kind == "native" else LinuxKernel(config, kind)


def main(argv: list[str] | None = None) -> int:
    """Inside the image: python3 -m mmap2conf.runners exec CONFIG FLAVOUR [--trace]
    starts the prebuilt helper under qemu-user on the container's scratch tmpfs."""
    import argparse

    from .model import load_all

    parser = argparse.ArgumentParser(prog="python3 -m mmap2conf.runners")
    parser.add_argument("action", choices=["exec"])
    parser.add_argument("config")
    parser.add_argument("flavour")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    config = load_all()[args.config]
    runner = QemuUser(config)
    command = runner.command(helper_for(runner, config, args.flavour), Path(SCRATCH_IN_CONTAINER), args.trace)
    os.execve(command[0], command, clean_environment())


if __name__ == "__main__":
    raise SystemExit(main())
