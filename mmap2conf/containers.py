"""Containers: find or start an engine, make the base image, build the suite's image.

Used by the docker runner and by tests/test_docker.py. An engine the user already
runs is used as it is; otherwise, as root, a private dockerd is started (data under
the build cache) and stopped again by stop(). With no registry reachable, the
`debian:bookworm` base image is made locally with debootstrap, as
../shared/reference/containers.md describes; the Dockerfile builds unchanged
for users who pull from a registry.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procs, scratch
from .build import CACHE_DIR
from .model import REPO

BASE_IMAGE = "debian:bookworm"
IMAGE = "mmap2-conformance:dev"
DOCKERFILE = REPO / "docker" / "Dockerfile"
# A noexec tmpfs for the EPERM case: a container cannot mount one itself (scratch.py finds it).
NOEXEC_TMPFS = "/mnt/noexec:rw,noexec,nosuid,nodev,size=16m"
START_TIMEOUT = 60
BUILD_TIMEOUT = 1800
DEBOOTSTRAP_TIMEOUT = 600


class EngineUnavailable(Exception):
    pass


@dataclass
class Engine:
    client: str                          # "docker" or "podman"
    env: dict = field(default_factory=dict)
    daemon: subprocess.Popen | None = None
    workdir: Path | None = None

    def command(self, *args: str) -> list[str]:
        return [self.client, *args]

    def run(self, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env={**os.environ, **self.env}, timeout=timeout,
                              capture_output=True, text=True, **kwargs)

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name).returncode == 0

    def version(self) -> str:
        result = self.run("version", "--format", "{{.Server.Version}}")
        return f"{self.client} {result.stdout.strip() or 'unknown'}"


def _responds(engine: Engine) -> bool:
    try:
        return engine.run("info", timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_engine() -> Engine:
    """A working engine: the user's docker, a private dockerd, or podman."""
    if shutil.which("docker") and _responds(Engine("docker")):
        return Engine("docker")
    reasons = []
    if shutil.which("dockerd") and shutil.which("docker") and os.geteuid() == 0:
        try:
            return _start_dockerd()
        except EngineUnavailable as exc:
            reasons.append(str(exc))
    else:
        reasons.append("no running docker engine, and no dockerd to start as root")
    if shutil.which("podman"):
        podman = _podman()
        if _responds(podman):
            return podman
        reasons.append("podman does not answer `podman info`")
    raise EngineUnavailable("; ".join(reasons) + " (apt package docker.io or podman)")


def _start_dockerd() -> Engine:
    # Outside the cache's long paths: unix socket paths are limited to 108 bytes.
    # Owned (scratch.py, procs.py): a run killed leaves the daemon to its guardian and the
    # directory, with the network namespace mounted in it, to the sweep.
    workdir = scratch.owned_directory("dockerd")
    socket = workdir / "docker.sock"
    log = open(workdir / "dockerd.log", "w")
    # No iptables or bridge changes to the host; tests run with --network=none.
    daemon = procs.popen(["dockerd", "--iptables=false", "--bridge=none",
                          "--data-root", str(CACHE_DIR / "docker-data"), "--exec-root", str(workdir / "exec"),
                          "--pidfile", str(workdir / "dockerd.pid"), "-H", f"unix://{socket}"],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    engine = Engine("docker", {"DOCKER_HOST": f"unix://{socket}", "DOCKER_BUILDKIT": "0"}, daemon, workdir)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            break
        if _responds(engine):
            return engine
        time.sleep(0.5)
    stop(engine)
    raise EngineUnavailable(f"dockerd did not start: {(workdir / 'dockerd.log').read_text()[-500:]}")


def _podman() -> Engine:
    # crun refuses hybrid cgroups and root lacks CAP_SYS_RESOURCE here (containers.md).
    conf = CACHE_DIR / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    return Engine("podman", {"CONTAINERS_CONF": str(conf)})


def stop(engine: Engine) -> None:
    """Stop the daemon this module started, if any; a user's engine is left alone."""
    if engine.daemon is not None:
        engine.daemon.terminate()
        try:
            engine.daemon.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            engine.daemon.kill()
            engine.daemon.wait()
    if engine.workdir is not None:
        # dockerd leaves its network namespace mounted in the exec root (exec/netns/default).
        scratch.remove(None, engine.workdir)


def ensure_base_image(engine: Engine) -> str:
    """debian:bookworm, from the engine's store or made here with debootstrap."""
    name = BASE_IMAGE if engine.client == "docker" else f"docker.io/library/{BASE_IMAGE}"
    if engine.has_image(name):
        return "present"
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise EngineUnavailable(f"{name} is not in the store, and debootstrap (as root) cannot make it")
    mirror = _debian_mirror()
    # debootstrap mounts /proc inside the root file system while it runs: a run killed then
    # leaves both to the sweep (an owned directory), and its timeout kills its whole group.
    rootfs = scratch.owned_directory("rootfs")
    try:
        result = procs.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                           timeout=DEBOOTSTRAP_TIMEOUT)
        if result.returncode != 0:
            raise EngineUnavailable(f"debootstrap failed (status {result.returncode}): {result.stderr[-500:]}")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        result = subprocess.run(engine.command("import", "-", name), stdin=tar.stdout,
                                env={**os.environ, **engine.env}, capture_output=True, text=True,
                                timeout=DEBOOTSTRAP_TIMEOUT)
        tar.wait()
        if result.returncode != 0:
            raise EngineUnavailable(f"importing the base image failed: {result.stderr[-500:]}")
    finally:
        scratch.remove(None, rootfs)
    return f"made with debootstrap from {mirror}"


def _debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def build_image(engine: Engine, tag: str = IMAGE) -> None:
    """Build docker/Dockerfile from a copy of the repository, with the host's trust store
    added as docker/extra-ca.crt so that pip in the build trusts what the host trusts."""
    with tempfile.TemporaryDirectory(prefix="mmap2conf-context-") as context:
        shutil.copytree(REPO, context, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".venv", ".cache", ".tox", "reports", "__pycache__"))
        trust = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
        if trust.is_file():
            shutil.copy(trust, Path(context) / "docker" / "extra-ca.crt")
        # --network=host: apt and pip inside the build reach what the host reaches.
        result = engine.run("build", "--network=host", "-f", str(Path(context) / "docker" / "Dockerfile"),
                            "-t", tag, context, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        raise EngineUnavailable(f"building {tag} failed:\n{(result.stdout + result.stderr)[-3000:]}")
