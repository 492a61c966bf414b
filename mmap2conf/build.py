"""Build: compile the one helper source for a configuration and flavour, on demand.

A helper is cached under a key made of the sources, the command line and the
compiler's version, so changing any of them rebuilds it and nothing else.
Builds take a file lock and publish with an atomic rename, so pytest-xdist
workers that need the same helper build it once.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from .model import HELPERS_DIR, REPO, Config, ModelError
from .verify import verify_helper

HELPER_SOURCE = HELPERS_DIR / "mmap2_helper.c"
CACHE_DIR = Path(os.environ.get("MMAP2CONF_CACHE", REPO / ".cache"))
BUILD_TIMEOUT = 300

# Freestanding: the helper brings its own _start and syscall stub, so nothing of
# a libc may be linked or called implicitly (builtins, loop-to-memset, unwind tables).
RAW_FLAGS = ("-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-builtin",
             "-fno-stack-protector", "-fno-pic", "-no-pie", "-fno-tree-loop-distribute-patterns",
             "-fno-asynchronous-unwind-tables", "-DHELPER_FREESTANDING")
# 32-bit off_t stays the default so that mmap() is the ABI's own 32-bit off_t entry point.
GLIBC_FLAGS = ("-O2", "-static", "-no-pie", "-D_LARGEFILE64_SOURCE", "-DHELPER_GLIBC")


class BuildError(Exception):
    pass


def compile_command(config: Config, flavour: str, output: Path) -> list[str]:
    spec = config.flavours[flavour]
    common = RAW_FLAGS if flavour == "raw" else GLIBC_FLAGS
    command = [spec.cc, *common, f'-DHELPER_ABI_H="abi/{config.stub}.h"', "-I", str(HELPERS_DIR),
               *(_resolve(flag) for flag in spec.cflags), "-o", str(output), str(HELPER_SOURCE)]
    return command + (["-lgcc"] if flavour == "raw" else [])


def _resolve(flag: str) -> str:
    """Flags in arches/ name repository paths relative to the repository root."""
    return str(REPO / flag) if flag.startswith("helpers/") else flag


@lru_cache(maxsize=None)
def compiler_version(cc: str) -> str:
    if shutil.which(cc) is None:
        raise BuildError(f"compiler {cc} not found on PATH (run `make bootstrap`)")
    return subprocess.run([cc, "--version"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.splitlines()[0]


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in HELPERS_DIR.rglob("*") if p.suffix in (".c", ".h")):
        digest.update(str(path.relative_to(HELPERS_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def helper_path(config: Config, flavour: str) -> Path:
    """Build (or reuse) the verified helper binary for ``config`` and ``flavour``."""
    if flavour not in config.flavours:
        raise ModelError(f"{config.path}: no [flavours.{flavour}]")
    spec = config.flavours[flavour]
    key = hashlib.sha256("\0".join(
        [_sources_digest(), compiler_version(spec.cc), *compile_command(config, flavour, Path("OUT"))]
    ).encode()).hexdigest()[:16]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / f"{config.name}-{flavour}-{key}"
    with open(CACHE_DIR / f".{config.name}-{flavour}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_suffix(".partial")
            command = compile_command(config, flavour, partial)
            result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            if result.returncode != 0:
                partial.unlink(missing_ok=True)
                raise BuildError(f"building the {flavour} helper for {config.name} failed:\n"
                                 f"$ {' '.join(command)}\n{result.stderr}")
            verify_helper(partial, config)
            os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """python3 -m mmap2conf.build --all: build and verify every helper (the container image does)."""
    import argparse

    from .model import load_all

    parser = argparse.ArgumentParser(prog="python3 -m mmap2conf.build", description=main.__doc__)
    parser.add_argument("--all", action="store_true", required=True, help="every configuration and flavour")
    parser.parse_args(argv)
    for config in load_all().values():
        for flavour in config.flavours:
            print(f"{config.name}/{flavour}: {helper_path(config, flavour)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
