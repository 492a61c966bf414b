"""Bootstrap: install what the suite needs, and only what is missing.

Run by `make bootstrap` with the system's python3 before any virtual
environment exists, so it uses the standard library only. The Debian packages
come from arches/*.toml (each flavour's compiler) and from the runner kinds; the
Python packages are the pinned requirements.txt, installed into .venv. What the
default systems under test need beyond that (the qemu-user releases of
emulators/qemu-user.toml that come from the archive, the kernels of machines/),
and the libc releases of libcs/ (Debian 13's cross glibc, Debian 12's musl), is
fetched into the cache by mmap2conf.archive, never installed over the system's
packages. A second run finds everything present and installs nothing.

The tests of the result formats read KTAP with the kernel's own parser, and the
LAVA files with LAVA's own schemas and helper: those files are unpacked from
Debian packages into the build cache, not installed (mmap2conf/debian.py).

With MMAP2CONF_IMAGE=1 (the container image, docker/Dockerfile) the browser, the
container engine and the files of those tests are left out: the image runs the
suite, not its reports' browser test nor the docker runner. With `--runner KIND[,KIND]`
(a LAVA device, lava/mmap2-conformance.yaml) only what running the configurations of
those runner kinds needs is installed: their compilers and the runners' own packages.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import archive, debian, libcs
from .machines import load_machines
from .model import REPO, load_all
from .runners import REGISTRY
from .runners.docker import Docker
from .runners.qemu_user import releases

VENV = REPO / ".venv"
REQUIREMENTS = REPO / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"
BASE_PACKAGES = ("python3-venv", "make")
# chromium: the HTML report's screenshot and its browser test (chromium-driver);
# the docker runner's engine and base-image tools: it serves every qemu-user configuration;
# openssh-server: tests/test_ssh.py starts its own sshd on 127.0.0.1 for the ssh runner
# (the system's sshd is never started: the test runs one of its own and stops it).
HOST_PACKAGES = ("chromium", "chromium-driver", *Docker.apt, "openssh-server")


def apt_packages(runner_kinds: set[str] | None = None) -> list[str]:
    """The Debian packages to install; with runner_kinds, only what those runners need."""
    if runner_kinds is not None or os.environ.get("MMAP2CONF_IMAGE"):
        wanted = set(BASE_PACKAGES)
    else:
        wanted = set(BASE_PACKAGES + HOST_PACKAGES)
    kinds = set(REGISTRY) - {"docker"} if runner_kinds is None else runner_kinds
    configs = load_all()
    machines = load_machines(configs)
    for config in configs.values():
        # The kinds that may run this configuration: its own, and linux where a machine runs it.
        own = set(config.runners) | ({"linux"} if any(config.name in m.runs for m in machines.values()) else set())
        if not own & kinds:
            continue
        for flavour in config.flavours.values():
            wanted.update(flavour.apt)
    for kind in kinds - {"docker"}:   # the docker runner's packages are HOST_PACKAGES
        wanted.update(REGISTRY[kind].apt)
    return sorted(wanted)


def missing_packages(packages: list[str]) -> list[str]:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *packages],
                            capture_output=True, text=True)
    installed = {line.split()[0] for line in result.stdout.splitlines() if line.endswith("install ok installed")}
    return [p for p in packages if p not in installed]


def as_root(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo") is None:
        sys.exit(f"bootstrap: {' '.join(command)} needs root, and sudo is not installed")
    return ["sudo", *command]


def install_apt(runner_kinds: set[str] | None = None) -> None:
    missing = missing_packages(apt_packages(runner_kinds))
    if not missing:
        print("bootstrap: Debian packages present")
        return
    print(f"bootstrap: installing {' '.join(missing)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(as_root(["apt-get", "update", "-q"]), check=True, env=env)
    subprocess.run(as_root(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]),
                   check=True, env=env)


def install_venv() -> None:
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + PYPROJECT.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        print("bootstrap: .venv up to date")
        return
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    # The package itself, editable, for the mmap2-conformance command in .venv/bin.
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True)
    stamp.write_text(digest)


def fetch_systems() -> None:
    """The default systems' files into the cache: qemu-user releases, kernels and the
    packages that hold their configurations."""
    wanted = [(r["package"], r["suite"], "amd64") for r in releases() if r["from"] == "archive"]
    for machine in load_machines(load_all()).values():
        for kernel in machine.kernels:
            wanted += [(p.package, p.suite, p.arch) for p in (kernel, kernel.config) if p is not None]
    for package, suite, arch in dict.fromkeys(wanted):
        try:
            root = archive.fetch(package, suite, arch)
        except archive.ArchiveError as exc:
            sys.exit(f"bootstrap: {exc}")
        print(f"bootstrap: {package} ({suite}) in {root}", flush=True)


def fetch_libcs() -> None:
    """The libc releases of libcs/ into the cache: each entry's packages, unpacked together."""
    for packages, suite, arch in dict.fromkeys((tuple(p), s, a) for p, s, a in libcs.packages(libcs.load(load_all()))):
        try:
            root = archive.fetch_all(list(packages), suite, arch)
        except archive.ArchiveError as exc:
            sys.exit(f"bootstrap: {exc}")
        print(f"bootstrap: {', '.join(packages)} ({suite}, {arch}) in {root}", flush=True)


def apt_update() -> None:
    subprocess.run(as_root(["apt-get", "update", "-q"]), check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def fetch_debian_files() -> None:
    """The kernel's KTAP parser and LAVA's schemas and helper, for tests/unit (not installed)."""
    for files in debian.ALL:
        if debian.candidate_version(files.package) is None and debian.cached(files) is None:
            apt_update()
        where = debian.fetch(files)
        print(f"bootstrap: {files.package} files in {where}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m mmap2conf.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", help="install only what these runner kinds need (comma-separated), "
                                         "e.g. native on a LAVA device")
    args = parser.parse_args(argv)
    runner_kinds = set(args.runner.split(",")) if args.runner else None
    unknown = (runner_kinds or set()) - set(REGISTRY)
    if unknown:
        parser.error(f"unknown runner kind {', '.join(sorted(unknown))} (known: {', '.join(sorted(REGISTRY))})")
    install_apt(runner_kinds)
    # The default systems' files: only where the default systems run (not on a device, nor in the image).
    if runner_kinds is None and not os.environ.get("MMAP2CONF_IMAGE"):
        fetch_systems()
    fetch_libcs()   # the image too: its helpers are prebuilt, against these
    install_venv()
    if runner_kinds is None and not os.environ.get("MMAP2CONF_IMAGE"):
        fetch_debian_files()


if __name__ == "__main__":
    main()
