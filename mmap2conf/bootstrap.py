"""Bootstrap: install what the suite needs, and only what is missing.

Run by `make bootstrap` with the system's python3 before any virtual
environment exists, so it uses the standard library only. The Debian packages
come from arches/*.toml (each flavour's compiler) and from the runner kinds; the
Python packages are the pinned requirements.txt, installed into .venv. What the
default systems under test need beyond that (the qemu-user releases of
emulators/qemu-user.toml that come from the archive, the kernels of machines/)
is fetched into the cache by mmap2conf.archive, never installed over the
system's packages. A second run finds everything present and installs nothing.

With MMAP2CONF_IMAGE=1 (the container image, docker/Dockerfile) the browser and
the container engine are left out: the image runs the suite, not its reports'
browser test nor the docker runner.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import archive
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


def apt_packages() -> list[str]:
    wanted = set(BASE_PACKAGES if os.environ.get("MMAP2CONF_IMAGE") else BASE_PACKAGES + HOST_PACKAGES)
    for config in load_all().values():
        for flavour in config.flavours.values():
            wanted.update(flavour.apt)
    for kind, runner in REGISTRY.items():
        if kind != "docker":   # the docker runner's packages are HOST_PACKAGES
            wanted.update(runner.apt)
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


def install_apt() -> None:
    missing = missing_packages(apt_packages())
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
    """The default systems' files into the cache: qemu-user releases, kernels."""
    wanted = [(r["package"], r["suite"], "amd64") for r in releases() if r["from"] == "archive"]
    for machine in load_machines(load_all()).values():
        wanted += [(k.package, k.suite, k.arch) for k in machine.kernels]
    for package, suite, arch in dict.fromkeys(wanted):
        try:
            root = archive.fetch(package, suite, arch)
        except archive.ArchiveError as exc:
            sys.exit(f"bootstrap: {exc}")
        print(f"bootstrap: {package} ({suite}) in {root}", flush=True)


def main() -> None:
    install_apt()
    if not os.environ.get("MMAP2CONF_IMAGE"):
        fetch_systems()
    install_venv()


if __name__ == "__main__":
    main()
