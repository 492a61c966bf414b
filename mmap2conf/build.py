"""Build: compile the one helper source for a configuration and flavour, on demand.

A helper is cached under a key made of the sources, the command line and the
compiler's version, so changing any of them rebuilds it and nothing else.
Builds take a file lock and publish with an atomic rename, so pytest-xdist
workers that need the same helper build it once. A build that was interrupted
(its process killed) leaves a ``.partial`` file: the next build of the same
configuration and flavour removes it, under the same lock (so never one that a
live build is writing). The compiler runs through procs.run: in a process group
of its own, killed as a whole at the timeout or when the build is interrupted.

A flavour's compiler is a command from arches/ (``cc``), which may be a recipe:
words in braces are filled in here (RECIPE_VALUES), so that, say, zig from the
pinned ``ziglang`` package runs as ``{python} -m ziglang cc`` with this very
interpreter. zig keeps the libcs it builds (musl, ~40 s per target the first
time) in its global cache, which lives under CACHE_DIR: it survives between
runs and is shared by the xdist workers.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from . import procs
from .model import HELPERS_DIR, RECIPE_WORDS, REPO, Config, ModelError

HELPER_SOURCE = HELPERS_DIR / "mmap2_helper.c"
CACHE_DIR = Path(os.environ.get("MMAP2CONF_CACHE", REPO / ".cache"))
BUILD_TIMEOUT = 900   # a first musl build compiles musl itself: 40 s idle, several minutes on a loaded machine

# Freestanding: the helper brings its own _start and syscall stub, so nothing of
# a libc may be linked or called implicitly (builtins, unwind tables). What only
# one compiler needs for that (gcc's -fno-tree-loop-distribute-patterns, -lgcc)
# is in the flavour's cflags in arches/.
RAW_FLAGS = ("-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-builtin",
             "-fno-stack-protector", "-fno-pic", "-no-pie",
             "-fno-asynchronous-unwind-tables", "-DHELPER_FREESTANDING")
# Every libc flavour (glibc, musl): the call under test is the libc's mmap/mmap64.
# 32-bit off_t stays glibc's default so that mmap() is the ABI's own 32-bit off_t
# entry point (musl's off_t is 64 bits whatever the flags).
LIBC_FLAGS = ("-O2", "-static", "-no-pie", "-D_LARGEFILE64_SOURCE", "-DHELPER_LIBC")


class BuildError(Exception):
    pass


def _zig_lib() -> str:
    """The lib directory of the ziglang package: zig's bundled libc and kernel headers."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"the ziglang package is not installed for {sys.executable} "
                         "(it is pinned in requirements.txt: run `make bootstrap`)")
    return str(Path(spec.submodule_search_locations[0]) / "lib")


# What each recipe word in a cc command or a cflag stands for (model.RECIPE_WORDS).
RECIPE_VALUES = {"python": lambda: sys.executable, "zig_lib": _zig_lib}
assert set(RECIPE_VALUES) == set(RECIPE_WORDS)


def _fill(text: str) -> str:
    """Fill the recipe words of one word of a command line ({python}, {zig_lib})."""
    return re.sub(r"\{(\w+)\}", lambda m: RECIPE_VALUES[m.group(1)](), text)


def compiler(cc: str) -> list[str]:
    """The compiler command of a flavour's ``cc``, recipe words filled in."""
    return [_fill(word) for word in shlex.split(cc)]


def build_environment() -> dict[str, str]:
    """zig's caches under CACHE_DIR: kept between runs, shared by the workers."""
    zig_cache = str(CACHE_DIR / "zig")
    return {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}


def compile_command(config: Config, flavour: str, output: Path) -> list[str]:
    """The flavour's own flags come after the source, so that a library they
    name (-lgcc) is searched after it; include and define flags work anywhere."""
    spec = config.flavours[flavour]
    if spec.libc is None and spec.build is not None:
        # A build directory whose headers name no libc: its checks say what is missing.
        _sysroot(config, flavour)
        raise BuildError(f"{spec.build.origin}: {spec.build.describe()} holds no glibc or musl headers")
    common = RAW_FLAGS if spec.libc is None else (*LIBC_FLAGS, f"-DHELPER_LIBC_{spec.libc.upper()}")
    head = [*compiler(spec.cc), *common, f'-DHELPER_FLAVOUR="{flavour}"',
            f'-DHELPER_ABI_H="abi/{config.stub}.h"', "-I", str(HELPERS_DIR)]
    flags = [_resolve(flag) for flag in spec.cflags]
    if spec.build is None:
        return [*head, "-o", str(output), str(HELPER_SOURCE), *flags]
    # Another build of the libc (libcs.py): its headers, start files and archive, nothing of the compiler's own libc.
    root = _sysroot(config, flavour)
    return [*head, *root.include_flags, "-o", str(output), *root.start, str(HELPER_SOURCE), *flags, *root.end]


def _sysroot(config: Config, flavour: str):
    from .libcs import LibcError, sysroot   # late: libcs reads archives with pyelftools
    try:
        return sysroot(config, flavour)
    except LibcError as exc:
        raise BuildError(f"the {flavour} flavour of {config.name}: {exc}") from None


def _resolve(flag: str) -> str:
    """Flags in arches/ name repository paths relative to the repository root."""
    return str(REPO / flag) if flag.startswith("helpers/") else _fill(flag)


@lru_cache(maxsize=None)
def compiler_version(cc: str) -> str:
    command = compiler(cc)
    if shutil.which(command[0]) is None:
        raise BuildError(f"compiler {command[0]} not found on PATH (run `make bootstrap`)")
    try:
        result = procs.run([*command, "--version"], timeout=60, env=build_environment())
    except subprocess.TimeoutExpired:
        raise BuildError(f"{shlex.join(command)} --version did not answer in 60 s") from None
    if result.returncode != 0 or not result.stdout.strip():
        raise BuildError(f"{shlex.join(command)} --version failed (run `make bootstrap`): "
                         f"{result.stderr.strip()[-500:]}")
    return result.stdout.splitlines()[0]


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in HELPERS_DIR.rglob("*") if p.suffix in (".c", ".h")):
        digest.update(str(path.relative_to(HELPERS_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_FAILED: dict[tuple, BuildError] = {}
_BUILT: dict[tuple, Path] = {}


def helper_path(config: Config, flavour: str) -> Path:
    """Build (or reuse) the verified helper binary for ``config`` and ``flavour``. A build
    that failed fails again at once for the rest of the run, and one found or made is
    not looked for again (every session asks; its key hashes the sources and the libc build)."""
    if flavour not in config.flavours:
        raise ModelError(f"{config.path}: no [flavours.{flavour}]")
    spec = config.flavours[flavour]
    memo = (config.name, flavour, spec.build)
    if memo in _FAILED:
        raise _FAILED[memo]
    if memo in _BUILT and _BUILT[memo].exists():
        return _BUILT[memo]
    try:
        _BUILT[memo] = _helper_path(config, flavour, spec)
    except BuildError as exc:
        _FAILED[memo] = exc
        raise
    return _BUILT[memo]


def _helper_path(config: Config, flavour: str, spec) -> Path:
    command = compile_command(config, flavour, Path("OUT"))
    against = [] if spec.build is None else [_sysroot(config, flavour).digest]
    key = hashlib.sha256("\0".join(
        [_sources_digest(), compiler_version(spec.cc), *command, *against]
    ).encode()).hexdigest()[:16]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / f"{config.name}-{flavour}-{key}"
    if target.exists():
        # Complete (a build renames it into place): no need to wait for the lock, which
        # another build of this configuration and flavour, from other sources, may hold.
        return target
    with open(CACHE_DIR / f".{config.name}-{flavour}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        remove_partials(config.name, flavour)
        if not target.exists():
            partial = target.with_suffix(".partial")
            command = compile_command(config, flavour, partial)
            try:
                try:
                    result = procs.run(command, timeout=BUILD_TIMEOUT, env=build_environment())
                except subprocess.TimeoutExpired:
                    raise BuildError(f"building the {flavour} helper for {config.name} took more than "
                                     f"{BUILD_TIMEOUT} s: $ {' '.join(command)}") from None
                if result.returncode != 0:
                    against = "" if spec.build is None else f" against {_sysroot(config, flavour).describe()}"
                    raise BuildError(f"building the {flavour} helper for {config.name}{against} failed:\n"
                                     f"$ {' '.join(command)}\n{result.stderr}")
                from .verify import verify_helper   # late: the bootstrap imports build before pyelftools exists
                verify_helper(partial, config)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    return target


def remove_partials(config_name: str, flavour: str) -> list[Path]:
    """Remove what interrupted builds of this configuration and flavour left. Call it only
    holding their lock: a live build of theirs would hold it."""
    name = re.compile(rf"{re.escape(config_name)}-{re.escape(flavour)}-[0-9a-f]{{16}}\.partial")
    removed = []
    for path in CACHE_DIR.glob(f"{config_name}-{flavour}-*.partial"):
        if name.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    """python3 -m mmap2conf.build --all: build and verify every helper, those of libcs/ too (the
    container image does; their Debian packages are fetched into the cache first)."""
    import argparse

    from . import libcs
    from .model import load_all

    parser = argparse.ArgumentParser(prog="python3 -m mmap2conf.build", description=main.__doc__)
    parser.add_argument("--all", action="store_true", required=True, help="every configuration and flavour")
    parser.add_argument("--libc", metavar="FLAVOUR[,FLAVOUR]",
                        help="only these flavours (default: every one a configuration has)")
    args = parser.parse_args(argv)
    chosen = set(args.libc.split(",")) if args.libc else None
    configs = load_all()
    libcs.attach(configs, libcs.load(configs))
    for config in configs.values():
        for flavour in config.flavours:
            if chosen is not None and flavour not in chosen:
                continue
            print(f"{config.name}/{flavour}: {helper_path(config, flavour)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
