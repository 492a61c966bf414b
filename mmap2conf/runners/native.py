"""native: the host kernel runs the helper itself (for i386: the x86_64 kernel's compat path).

Whether the host can run a configuration's helper is found by running it (IA32
emulation may be off); the kernel's release and word size come from the probe.
"""
from __future__ import annotations

import platform
import shutil
from pathlib import Path

from ..model import Config
from . import Options, Runner, RunnerUnavailable


class Native(Runner):
    kind = "native"
    apt = ("strace",)
    tracer = "bytes"      # strace prints mmap2's offset scaled to bytes

    @classmethod
    def systems(cls, config: Config, options: Options) -> list[Runner]:
        if "native" not in config.runners or not options.wants(cls.kind, True):
            return []
        return [cls(config, "native", options.asked_for(cls.kind))]

    def identity(self) -> dict:
        return {"kernel": platform.release(), "machine": platform.machine(),
                "version": f"Linux {platform.release()} {platform.machine()}"}

    def command(self, helper, workdir: Path, trace: bool = False) -> list[str]:
        if trace and shutil.which("strace") is None:
            raise RunnerUnavailable("strace is not installed (apt package strace)")
        tracer = ["strace", "-f", "-qq", "-e", "trace=mmap,mmap2"] if trace else []
        return [*tracer, str(helper), str(workdir)]
