"""linux: a real Linux kernel under qemu-system, the helper as its /init (kernels.md).

The machines are data (machines/*.toml): the qemu-system binary and arguments,
the console, the kind of image, the ABIs its kernels run and the kernels it boots
by default (Debian packages unpacked into the cache, never installed). A user's
own image (``--kernel IMAGE``) boots on ``--machine NAME``, or on the one machine
that takes its kind of image. One boot serves every helper of a kernel in a run:
its init starts the helper each session asks for (dispatch.py), and powers the
machine off at the end. The kernel's release, page size and word size are each
helper's probe's, not the machine's.
"""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from .. import kernels
from ..machines import Machine, machine_for_image
from ..model import Config, ModelError
from . import BOOT_TIMEOUT, Console, Options, Runner, RunnerUnavailable, noexec
from .qemu_user import version_of


class Linux(Runner):
    kind = "linux"
    apt = ("qemu-system-x86", "qemu-system-arm", "qemu-system-mips")
    tracer = None             # no system call tracer runs inside the guest
    # The ready line is INIT_READY in helpers/mmap2_helper.c (PROTOCOL.md, init mode).
    console = Console(ready=b"mmap2_helper: init mode, ready", boot_timeout=BOOT_TIMEOUT, restorable=True)
    one_worker = shared = True    # one boot serves every helper of the kernel (dispatch.py)

    def __init__(self, config: Config, name: str, asked: bool, machine: Machine, kernel_source,
                 qemu_dirs: tuple[Path, ...] = ()):
        super().__init__(config, name, asked)
        self.machine, self.kernel_source, self.qemu_dirs = machine, kernel_source, qemu_dirs
        self._kernel: Path | None = None
        self._stated: dict | None = None

    @classmethod
    def systems(cls, config: Config, options: Options) -> list[Runner]:
        if not options.wants(cls.kind, True):
            return []
        found = []
        if options.kernels:
            for image in options.kernels:
                machine = _machine_of(image, options, config)
                if machine is not None and config.name in machine.runs:
                    found.append(cls(config, _name(image, machine), True, machine, image, options.qemu_dirs))
            return found
        for machine in options.machines.values():
            if config.name in machine.runs:
                found += [cls(config, _name(kernel, machine), options.asked_for(cls.kind), machine, kernel,
                              options.qemu_dirs) for kernel in machine.kernels]
        return found

    def kernel(self) -> Path:
        """The kernel file: the user's, or the one inside the machine's default package."""
        if isinstance(self.kernel_source, Path):
            if not self.kernel_source.is_file():
                raise RunnerUnavailable(f"--kernel {self.kernel_source} is not a file")
            return self.kernel_source
        if self._kernel is None:
            self._kernel = _package_kernel(self.kernel_source)
        return self._kernel

    def stated(self) -> dict:
        """The kernel's configuration, where the configuration's facts name options of it
        (sut.measure checks that it is the booted kernel's): the one embedded in the image
        (CONFIG_IKCONFIG), else the .config of the machine's package for the kernel; else
        None, with the reason."""
        if not self.config.kernel_options:
            return {"kernel_config_source": f"not read: {self.config.path.name} names no configuration option"}
        if self._stated is None:
            self._stated = self._read_config()
        return self._stated

    def _read_config(self) -> dict:
        kernel = self.kernel()
        try:
            embedded = kernels.image_config(kernel)
            release = kernels.kernel_identity(kernel)["release"]
        except (kernels.KernelError, OSError) as exc:
            raise RunnerUnavailable(str(exc)) from None
        if embedded is not None:
            return {"kernel_config": kernels.parse_config(embedded), "kernel_config_for": {"release": release},
                    "kernel_config_source": f"CONFIG_IKCONFIG: the configuration embedded in {kernel}"}
        none_embedded = f"{kernel} embeds none (CONFIG_IKCONFIG, in the clear or in an xz or gzip stream)"
        package = None if isinstance(self.kernel_source, Path) else self.kernel_source.config
        if package is None:
            return {"kernel_config": None, "kernel_config_source": none_embedded}
        from ..archive import ArchiveError, fetch, packages_of
        try:
            root = fetch(package.package, package.suite, package.arch)
            path = kernels.find_kernel(root, package.path, f"package {package.package} of {package.suite}",
                                       "configuration file")
            text = path.read_text(errors="replace")
        except (ArchiveError, kernels.KernelError, OSError) as exc:
            # The machine's data promise it, as they promise the kernel: not a row's n.a.
            raise RunnerUnavailable(f"the configuration of {kernel}: {exc}") from None
        version = packages_of(root)[package.package]
        return {"kernel_config": kernels.parse_config(text),
                "kernel_config_for": {"release": kernels.package_release(root), "version": version},
                "kernel_config_source": f"{path.relative_to(root)} of {package.package} {version} "
                                        f"({package.suite}, {package.arch})"}

    def qemu_system(self) -> Path:
        for directory in self.qemu_dirs:
            if (directory / self.machine.qemu_system).is_file():
                return directory / self.machine.qemu_system
        found = shutil.which(self.machine.qemu_system)
        if found is None:
            raise RunnerUnavailable(f"{self.machine.qemu_system} is not on PATH "
                                    f"(apt packages {' '.join(self.apt)})")
        return Path(found)

    def identity(self) -> dict:
        kernel = self.kernel()
        try:
            image = kernels.kernel_identity(kernel)
        except (kernels.KernelError, OSError) as exc:
            raise RunnerUnavailable(str(exc)) from None
        if image["image_kind"] != self.machine.image:
            raise RunnerUnavailable(f"{kernel} is a {image['image_kind']} image; machine {self.machine.name} "
                                    f"boots {self.machine.image}")
        binary = self.qemu_system()
        _, line = version_of(binary)
        return {"kernel": str(kernel), "kernel_release": image["release"], "sha256": image["sha256"],
                "machine": self.machine.name, "qemu_system": str(binary), "qemu_system_version": line,
                "version": image["version"]}

    def command(self, helper, workdir: Path, trace: bool = False) -> list[str]:
        if trace:
            raise RunnerUnavailable(f"no system call tracer runs inside the {self.name} guest")
        # The guest makes its own scratch tmpfs, noexec where the session's is.
        return self._command(helper, noexec(workdir))

    def serves(self) -> tuple[str, ...]:
        return self.machine.runs

    def dispatcher_command(self, helpers: list) -> list[str]:
        return self._boot(helpers[0], tuple(helpers), "MMAP2_INIT=dispatch")

    def _command(self, helper, noexec_scratch: bool) -> list[str]:
        return self._boot(helper, (), "MMAP2_SCRATCH=noexec" if noexec_scratch else "")

    def _boot(self, init: Path, helpers: tuple[Path, ...], words: str) -> list[str]:
        """The guest whose /init is ``init``, with ``helpers`` to start, and ``words`` for init
        on the kernel command line (helpers/PROTOCOL.md, init mode)."""
        qemu, kernel = str(self.qemu_system()), str(self.kernel())
        append = f"console={self.machine.console} panic=-1 quiet {words}".rstrip()
        return [qemu, *self.machine.machine_args, "-kernel", kernel,
                "-initrd", str(kernels.initramfs_for(init, helpers)), "-append", append]

    def reproducer(self, helper, line: str, scratch_kind: str | None = None, trace: bool = False) -> str:
        """Boots the guest, sends one request once it has booted (input before the console
        is up is lost), then EOF (^D), which powers it off."""
        command = self._command(helper, scratch_kind == "noexec")
        return (f"(sleep 20; printf '%s\\n\\004' {shlex.quote(line)}) | timeout {BOOT_TIMEOUT:g} "
                f"{shlex.join(command)}")


def _package_kernel(package) -> Path:
    from ..archive import ArchiveError, fetch
    try:
        root = fetch(package.package, package.suite, package.arch)
        return kernels.find_kernel(root, package.path, f"package {package.package} of {package.suite}")
    except (ArchiveError, kernels.KernelError) as exc:
        raise RunnerUnavailable(str(exc)) from None


def _name(kernel_source, machine: Machine) -> str:
    """linux-<uname -r of the image>; the machine's name where the image cannot be read."""
    try:
        path = kernel_source if isinstance(kernel_source, Path) else _package_kernel(kernel_source)
        return f"linux-{kernels.kernel_identity(path)['release']}"
    except (RunnerUnavailable, kernels.KernelError, OSError):
        return f"linux-{machine.name}"


def _machine_of(image: Path, options: Options, config: Config) -> Machine | None:
    """The machine a --kernel image boots on; None where it runs no helper of ``config``."""
    if options.machine is not None:
        return options.machines[options.machine]
    try:
        kind = kernels.image_kind(image.read_bytes())
        candidates = [m for m in options.machines.values() if m.image == kind]
        if not any(config.name in m.runs for m in candidates):
            return None
        return machine_for_image(options.machines, kind, config.name)
    except (kernels.KernelError, OSError, ModelError) as exc:
        raise RunnerUnavailable(f"--kernel {image}: {exc}") from None
