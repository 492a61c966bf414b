"""docker: qemu-user inside the suite's image (docker/Dockerfile), one `docker run -i --rm
--network=none` per helper process. The helper is built and verified in the image, so
the host needs neither qemu-user nor cross compilers; it answers as the image's
qemu-user does (the same expectations and known issues, by its release)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..model import Config
from . import VERSION_TIMEOUT, Options, Runner, RunnerUnavailable, host_kernel_bits, noexec

SCRATCH_IN_CONTAINER = "/scratch"
IMAGE_PYTHON = ".venv/bin/python"   # the image's WORKDIR is the suite, bootstrapped there


class Docker(Runner):
    kind = "docker"
    apt = ("docker.io", "debootstrap")
    tracer = "argument"   # qemu -strace, inside the container

    def __init__(self, config: Config, name: str, asked: bool, options: Options):
        super().__init__(config, name, asked)
        self.options = options
        self._version: tuple[str, str] | None = None

    @classmethod
    def systems(cls, config: Config, options: Options) -> list[Runner]:
        # Only when asked for by name: it needs an image and an engine.
        if "qemu-user" not in config.runners or not options.wants(cls.kind, False):
            return []
        return [cls(config, "docker", True, options)]

    def engine(self):
        """The engine is found or started once per run, and stopped when the run ends."""
        from .. import containers
        if self.options.image is None:
            raise RunnerUnavailable("the docker runner needs --image")
        resources = self.options.resources
        if "engine" not in resources:
            try:
                resources["engine"] = containers.find_engine()
            except containers.EngineUnavailable as exc:
                resources["engine"] = exc
            else:
                self.options.closers.append(lambda: containers.stop(resources["engine"]))
        engine = resources["engine"]
        if isinstance(engine, Exception):
            raise RunnerUnavailable(str(engine))
        if not engine.has_image(self.options.image):
            raise RunnerUnavailable(f"no image {self.options.image} (build docker/Dockerfile)")
        return engine

    def identity(self) -> dict:
        if self._version is None:
            binary = f"qemu-{self.config.runners['qemu-user'].target}-static"
            result = self.engine().run("run", "--rm", "--network=none", self.options.image, binary, "--version",
                                       timeout=VERSION_TIMEOUT * 4)
            match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", result.stdout)
            if result.returncode != 0 or not match:
                raise RunnerUnavailable(f"{self.options.image} does not run {binary}: {result.stderr.strip()[-300:]}")
            self._version = (match.group(1), result.stdout.strip().splitlines()[0])
        return {"image": self.options.image, "version_line": self._version[1], "version": self._version[0]}

    def stated(self) -> dict:
        return {"emulator": "qemu-user", "emulator_version": self.identity()["version"], **host_kernel_bits()}

    def helper(self, flavour: str) -> str:
        spec = self.config.flavours[flavour]
        if spec.build is not None and spec.build.directory is not None:
            # A build directory of the host's is not in the image (libcs/ archive releases are).
            raise RunnerUnavailable(f"the docker runner starts the helpers prebuilt in {self.options.image}; "
                                    f"the {flavour} flavour's build ({spec.build.describe()}) is on the host")
        return f"{self.config.name}/{flavour}"   # prebuilt in the image

    def command(self, helper: str, workdir: Path, trace: bool = False) -> list[str]:
        # The helper's files live in a tmpfs of the container, noexec where the session's is.
        return self._command(helper, noexec(workdir), trace)

    def _command(self, helper: str, noexec_scratch: bool, trace: bool = False) -> list[str]:
        config, flavour = helper.split("/")
        return self.engine().command(
            "run", "-i", "--rm", "--network=none", "--tmpfs", f"{SCRATCH_IN_CONTAINER}:rw,"
            f"{'noexec' if noexec_scratch else 'exec'},size=64m", self.options.image, IMAGE_PYTHON, "-m",
            "mmap2conf.runners", "exec", config, flavour, *(["--trace"] if trace else []))

    def reproducer(self, helper: str, line: str, scratch_kind: str | None = None, trace: bool = False) -> str:
        return f"echo {shlex.quote(line)} | {shlex.join(self._command(helper, scratch_kind == 'noexec', trace))}"
