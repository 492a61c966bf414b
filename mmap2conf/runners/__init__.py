"""Runners: the one thing a runner does is start a helper process on a system under test.

Every runner kind is one module of this package behind the interface below, and
REGISTRY maps kind names to them. Everything above the runners (the engine, the
oracle, the reports) is the same for every kind and never asks which kind it has:
what differs is said through this interface (the command that starts a helper,
whether its stream is a guest's console, how a tracer shows mmap2's offset, what
the runner can state about the system before anything runs, what it sends the
helper process before the first request).

A runner object is one *system under test* for one configuration: a qemu-user
release, the host kernel, one kernel image on one machine, a container image.
Its ``name`` is that system's column in the matrix.
"""
from __future__ import annotations

import os
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..model import Config

VERSION_TIMEOUT = 30
BOOT_TIMEOUT = 90.0     # from qemu's start to the helper's ready line (boots take 2-5 s, kernels.md)


class RunnerUnavailable(Exception):
    """This system cannot run this configuration here; the message says why."""


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
    # The command is a qemu-system guest's: saved once ready, restored after (guest_state.py).
    restorable: bool = False


@dataclass
class Options:
    """What the user asked for, as far as the runners care."""

    kinds: set[str] | None = None            # --runner; None: every kind a configuration has by default
    qemu_dirs: tuple[Path, ...] = ()          # --qemu-dir: qemu builds to judge instead of the defaults
    kernels: tuple[Path, ...] = ()            # --kernel: kernel images to boot instead of the defaults
    machine: str | None = None                # --machine: the machine --kernel images boot on
    image: str | None = None                  # --image: the suite's container image (docker)
    targets: tuple[str, ...] = ()             # --target: [user@]host[:port] of boards reached over ssh
    ssh_args: tuple[str, ...] = ()            # from --ssh-option, --ssh-identity, --ssh-known-hosts
    machines: dict = field(default_factory=dict)   # machines/*.toml
    closers: list = field(default_factory=list)    # called once when the run ends
    resources: dict = field(default_factory=dict)  # made once per run by a runner kind (a container engine)

    def wants(self, kind: str, by_default: bool) -> bool:
        return kind in self.kinds if self.kinds is not None else by_default

    def asked_for(self, kind: str) -> bool:
        """Named by the user: a system of this kind that cannot run is a failure, not a skip."""
        return self.kinds is not None and kind in self.kinds


class Runner(ABC):
    """One system under test for one configuration."""

    kind: ClassVar[str]
    apt: ClassVar[tuple[str, ...]] = ()      # Debian packages the bootstrap installs for this kind
    # How a system call tracer shows mmap2's last argument: "argument" (as passed),
    # "bytes" (scaled to a byte offset), or None: no tracer can be attached.
    tracer: ClassVar[str | None] = None
    console: ClassVar[Console | None] = None  # None: the helper's own pipes
    # The exit status with which the runner's command says "this system cannot run that
    # here" (a missing facility, not a broken system): the session is then unavailable.
    unavailable_status: ClassVar[int | None] = None
    # Every case of such a system goes to one pytest-xdist worker (a board that takes one
    # session at a time, a guest that serves them all).
    one_worker: ClassVar[bool] = False
    # One process of such a system serves every configuration and flavour it runs: a guest
    # kernel whose init starts the helper of each session (dispatch.py); then the runner
    # gives serves() and dispatcher_command() too.
    shared: ClassVar[bool] = False

    def __init__(self, config: Config, name: str, asked: bool):
        self.config, self.name, self.asked = config, name, asked

    @classmethod
    @abstractmethod
    def systems(cls, config: Config, options: Options) -> list["Runner"]:
        """The systems of this kind that judge ``config`` in this run."""

    @abstractmethod
    def identity(self) -> dict:
        """What the system is, without starting a helper: for the report (binary path and
        --version line, kernel image and its sha256, machine) and "version", the release
        of what answers. Raises RunnerUnavailable when the system cannot run here."""

    def stated(self) -> dict:
        """Properties of the system the runner knows and the probe cannot measure
        (sut.measure): qemu-user states the emulator and the kernel's word size."""
        return {}

    def helper(self, flavour: str):
        """The helper this runner starts: built and verified on this machine."""
        from ..build import helper_path   # late: the bootstrap imports runners before pyelftools exists
        return helper_path(self.config, flavour)

    @abstractmethod
    def command(self, helper, workdir: Path, trace: bool = False) -> list[str]:
        """The command that starts the helper with ``workdir`` for its files."""

    def serves(self) -> tuple[str, ...]:
        """A shared system: the configurations it runs, the one of its own word size first."""
        return (self.config.name,)

    def dispatcher_command(self, helpers: list) -> list[str]:
        """A shared system: the command of the one process that serves ``helpers``
        (helpers[0] is the init that starts the others)."""
        raise RunnerUnavailable(f"{self.name} serves one helper per process")

    def preamble(self, helper) -> bytes | None:
        """Bytes the session writes to the command's stdin after each start, before the first
        request (protocol.HelperSession), or None: the ssh runner sends the helper itself."""
        return None

    def reproducer(self, helper, line: str, scratch_kind: str | None = None, trace: bool = False) -> str:
        """A shell command that reruns one request by hand and removes what it made."""
        command = shlex.join(self.command(helper, Path("DIR"), trace)[:-1])
        return (f"d=$(mktemp -d) && echo {shlex.quote(line)} | {command} \"$d\"; "
                f"rmdir \"$d\"")


def noexec(workdir: Path) -> bool:
    """Whether the session's scratch directory is noexec (the noexec scratch kind): runners
    whose helper makes its files elsewhere (a guest, a container) make theirs noexec too."""
    try:
        return bool(os.statvfs(workdir).f_flag & os.ST_NOEXEC)
    except OSError:
        return False


def host_kernel_bits() -> dict:
    """The host kernel's word size, for runners whose helper's calls the host kernel answers."""
    from ..sut import kernel_bits_of
    machine = os.uname().machine
    fact = kernel_bits_of(machine)
    return {"kernel_bits": fact.value,
            "kernel_bits_source": f"the host kernel answers the emulated calls: uname -m {machine!r}; {fact.source}"}


def _registry() -> dict[str, type[Runner]]:
    from .docker import Docker
    from .linux import Linux
    from .native import Native
    from .qemu_user import QemuUser
    from .ssh import Ssh
    return {runner.kind: runner for runner in (QemuUser, Native, Linux, Docker, Ssh)}


REGISTRY: dict[str, type[Runner]] = _registry()
KINDS = tuple(REGISTRY)


def systems(config: Config, options: Options) -> list[Runner]:
    """Every system of every selected kind that judges ``config``."""
    return [system for runner in REGISTRY.values() for system in runner.systems(config, options)]
