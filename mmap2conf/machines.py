"""Machines: the qemu-system boards that boot a kernel with the helper as /init.

One file per machine in machines/: the qemu-system binary and its arguments, the
kernel's console, the kind of kernel image it boots, the ABIs whose helpers its
kernels run (the first of the kernel's own word size: the init that starts the
others, dispatch.py, must run on every kernel of the machine), and the kernels it boots by default (Debian packages, fetched into
the cache by mmap2conf.archive). A user's own kernel image (--kernel) boots on the
machine named with --machine, or on the one machine that takes its image kind.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .model import REPO, ModelError, _Table

MACHINES_DIR = REPO / "machines"
# The kernel's console= argument: a device, and for a serial port baud, parity, bits, flow
# control (Documentation/admin-guide/serial-console.rst).
CONSOLE = re.compile(r"[A-Za-z]+[0-9]+(,[0-9]+([noe]([5-8]r?)?)?)?")
# What kernels.image_kind() recognises in a kernel file.
IMAGE_KINDS = ("x86-bzImage-32", "x86-bzImage-64", "arm-zImage", "arm64-Image", "mips-elf-32", "mips-elf-64")


@dataclass(frozen=True)
class KernelPackage:
    """A kernel that a machine boots by default: a file inside a Debian package."""

    package: str
    suite: str
    arch: str          # the architecture index it is looked up in: the host's (amd64) for an
                       # Architecture: all package, which every index lists
    path: str          # a glob inside the unpacked package
    # The package that ships the build's .config (Debian: linux-headers-<release>), as
    # the same four fields; None: only an embedded configuration (CONFIG_IKCONFIG) is read.
    config: "KernelPackage | None" = None


@dataclass(frozen=True)
class Machine:
    name: str
    path: Path
    description: str
    qemu_system: str
    machine_args: tuple[str, ...]
    console: str
    image: str
    runs: tuple[str, ...]
    source: str
    kernels: tuple[KernelPackage, ...]


def load_machine(path: Path) -> Machine:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{path}: {exc}") from None
    top = _Table(data, path, "top")
    name = top.get("name", str)
    if name != path.stem:
        raise top.error("name", f"{name!r} does not match the file name {path.stem!r}")
    description = top.get("description", str)
    qemu_system = top.get("qemu_system", str)
    if not re.fullmatch(r"qemu-system-[a-z0-9_]+", qemu_system):
        raise top.error("qemu_system", f"{qemu_system!r} is not a qemu-system-<arch> binary")
    machine_args = top.get("machine_args", list)
    if not machine_args or not all(isinstance(arg, str) and arg for arg in machine_args):
        raise top.error("machine_args", "expected a non-empty list of non-empty strings")
    console = top.get("console", str)
    if not CONSOLE.fullmatch(console):
        raise top.error("console", f"{console!r} is not a console such as ttyS0 or ttyS0,115200 "
                                   "(a device name, and a serial port's options)")
    image = top.get("image", str, IMAGE_KINDS)
    runs = top.get("runs", list)
    if not runs or not all(isinstance(r, str) for r in runs):
        raise top.error("runs", "expected a non-empty list of configuration names")
    source = top.get("source", str)
    if not source.strip():
        raise top.error("source", "is empty")
    kernels = []
    for index, raw in enumerate(top.get("kernel", list, required=False) or [], 1):
        if not isinstance(raw, dict):
            raise top.error("kernel", "expected [[kernel]] tables")
        entry = _Table(raw, path, f"kernel #{index}")
        config = entry.sub("config", required=False)
        kernels.append(_package(entry, _package(config) if config is not None else None))
    top.done()
    return Machine(name, path, description, qemu_system, tuple(machine_args), console, image,
                   tuple(runs), source, tuple(kernels))


def _package(entry: _Table, config: KernelPackage | None = None) -> KernelPackage:
    package, suite = entry.get("package", str), entry.get("suite", str)
    arch, glob = entry.get("arch", str), entry.get("path", str)
    if glob.startswith("/") or ".." in Path(glob).parts:
        raise entry.error("path", f"{glob!r} must be a glob inside the unpacked package")
    entry.done()
    return KernelPackage(package, suite, arch, glob, config)


def load_machines(configs: dict, machines_dir: Path = MACHINES_DIR) -> dict[str, Machine]:
    machines = {p.stem: load_machine(p) for p in sorted(machines_dir.glob("*.toml"))}
    for machine in machines.values():
        unknown = [r for r in machine.runs if r not in configs]
        if unknown:
            raise ModelError(f"{machine.path}: runs: {unknown[0]!r} is not a configuration in arches/")
    return machines


def machine_for_image(machines: dict[str, Machine], kind: str, config_name: str | None = None) -> Machine:
    """The one machine that boots an image of this kind (and runs ``config_name``)."""
    found = [m for m in machines.values() if m.image == kind and (config_name is None or config_name in m.runs)]
    if len(found) != 1:
        names = ", ".join(m.name for m in found) or "none"
        raise ModelError(f"a {kind} kernel image boots on {names} of machines/: name one with --machine")
    return found[0]
