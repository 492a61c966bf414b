"""Libc builds as flavours: a glibc or musl other than the one a compiler brings.

A flavour from ``libcs/*.toml`` or from ``--libc-prefix NAME=CONFIG:DIR`` is the
helper compiled with the compiler and flags of the configuration's own flavour
of that libc (arches/: Debian's cross gcc for glibc, zig for musl; a musl build
for a configuration without a musl flavour takes its glibc flavour's gcc), but
with nothing of that compiler's libc: ``-nostdinc`` and ``-nostdlib``, the
build's headers, its crt1.o, crti.o and crtn.o and its static ``libc.a`` named
explicitly, and only the compiler's own headers and runtime (gcc: its include
directory, crtbeginT.o, crtend.o, libgcc.a and libgcc_eh.a; zig: its clang
headers and compiler-rt). So a header or archive missing from the build is an
error, never a silent fall-back to the system's libc.

Accepted layouts of a build directory DIR, tried in this order; the first with
both its include directory and ``libc.a`` is taken:

1. ``DIR/include`` and ``DIR/lib/libc.a``: an install prefix (musl's and
   glibc's ``make install DESTDIR=D`` with a prefix P leave ``D/P``: give that).
2. ``DIR/usr/include`` and ``DIR/usr/lib/libc.a``: a sysroot, or ``make install
   DESTDIR=DIR`` with prefix /usr.
3. ``DIR/usr/<triplet>/include`` and ``DIR/usr/<triplet>/<libdir>/libc.a``:
   Debian's cross packages (``libc6-dev-<arch>-cross``), the triplet and libdir
   being the configuration's GNU cross compiler's (``-dumpmachine``,
   ``-print-multi-os-directory``: i686-linux-gnu and lib; sparc64-linux-gnu and
   lib32 for sparc32plus). Only for configurations with a glibc flavour.
4. ``DIR/usr/include/<multiarch>`` and ``DIR/usr/lib/<multiarch>/libc.a``:
   Debian's multiarch packages (``musl-dev``: i386-linux-musl), the one
   directory of DIR/usr/lib that holds a libc.a and has its include directory.

Checked before anything is compiled, each failure naming the path: the include
directory and ``libc.a`` (and crt1.o, crti.o, crtn.o beside it) exist; ``libc.a``
is an ar archive whose version member (glibc's ``version.o``, which defines
gnu_get_libc_version; musl's ``version.lo``, which defines __libc_version) is
an ELF object of the configuration's e_machine, class and byte order
(pyelftools); the headers are of the same libc as the archive, and for glibc of
the same release (``__GLIBC__``.``__GLIBC_MINOR__`` of features.h against the
archive's __libc_version; musl's headers carry no version). A link error is a
build error with the linker's message. The kernel's uapi headers (asm/,
linux/, ...) come from DIR's include directory where it has them
(asm/unistd.h), else from the system's cross package, as the configuration's
glibc flavour's gcc finds them (linux-libc-dev-<arch>-cross), else from the
compiler's own (zig's bundled headers, for hexagon and riscv32): a directory of
symbolic links to exactly the uapi directories, so no other libc's header can
be found through it.

The version a flavour's helper reports is measured by its probe (the libc's own
string); ``release`` in libcs/ is the one the archive must hold, checked.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .model import LIBCS, REPO, Config, Flavour, ModelError, _Table

LIBCS_DIR = REPO / "libcs"
NAME = re.compile(r"[a-z0-9][a-z0-9.+_-]*\Z")
# What `make headers_install` installs: the kernel's uapi, and nothing of a libc.
UAPI_DIRS = ("asm", "asm-generic", "drm", "linux", "misc", "mtd", "rdma", "scsi", "sound", "video", "xen")
START_FILES = ("crt1.o", "crti.o", "crtn.o")
# The e_machine a member object of a configuration's libc.a may have, where it is not the
# executable's own: a sparc32plus (v8plus) libc.a holds EM_SPARC objects too, since gas marks
# an object EM_SPARC32PLUS only when it uses v9 instructions (measured: 129 of the first 400
# members of Debian 12's lib32/libc.a are EM_SPARC, version.o among them), and ld links them
# into the EM_SPARC32PLUS helper.
MEMBER_MACHINES = {"EM_SPARC32PLUS": ("EM_SPARC32PLUS", "EM_SPARC")}
COMPILER_TIMEOUT = 60


class LibcError(Exception):
    """A libc build that cannot be used; the message names the path and what is wrong."""


class LibcUsageError(Exception):
    """A malformed --libc-prefix or libcs/ entry (a usage error, exit 4)."""


@dataclass(frozen=True)
class LibcBuild:
    """Where a libc flavour's headers and archive come from."""

    name: str                      # the flavour's name
    config: str
    origin: str                    # where it was defined, for messages
    libc: str | None               # stated, or read from DIR's headers; None: DIR's headers are unreadable
    directory: Path | None = None  # a build directory, or:
    suite: str | None = None       # Debian packages unpacked by mmap2conf.archive
    arch: str | None = None
    packages: tuple[str, ...] = ()
    release: str | None = None     # the libc release the archive must hold (libcs/ archive entries)
    asked: bool = False            # named by the user: a build that cannot be used is an error
    cflags: tuple[str, ...] | None = None   # instead of the base flavour's (an ABI detail the build differs in)

    def describe(self) -> str:
        if self.directory is not None:
            return str(self.directory)
        return f"{', '.join(self.packages)} ({self.suite}, {self.arch})"

    def root(self) -> Path:
        """The directory the build is in, fetched into the cache for archive entries."""
        if self.directory is not None:
            if not self.directory.is_dir():
                raise LibcError(f"{self.directory}: not a directory ({self.origin})")
            return self.directory
        from .archive import ArchiveError, fetch_all
        try:
            return fetch_all(list(self.packages), self.suite, self.arch)
        except ArchiveError as exc:
            raise LibcError(f"{self.origin}: {exc}") from None


# ---------------------------------------------------------------------------
# Definitions: --libc-prefix and libcs/*.toml

def parse_prefix(text: str, configs: dict[str, Config]) -> LibcBuild:
    """``NAME=CONFIG:DIR`` (DIR may hold any character); LibcUsageError if malformed."""
    name, equals, rest = text.partition("=")
    config, colon, directory = rest.partition(":")
    origin = f"--libc-prefix {text}"
    if not equals or not colon or not directory:
        raise LibcUsageError(f"{origin}: expected NAME=CONFIG:DIR, e.g. glibc-master=i386:/opt/glibc-i686")
    _check_name(name, origin)
    if config not in configs:
        raise LibcUsageError(f"{origin}: unknown configuration {config!r}; valid: {', '.join(sorted(configs))}")
    path = Path(directory).expanduser().absolute()
    if not path.is_dir():
        raise LibcUsageError(f"{origin}: {path} is not a directory")
    return LibcBuild(name=name, config=config, origin=origin, libc=detect_libc(path, configs[config]),
                     directory=path, asked=True)


def _check_name(name: str, origin: str) -> None:
    if not NAME.match(name) or name == "raw":
        raise LibcUsageError(f"{origin}: flavour name {name!r} must be lower-case letters, digits and . + _ - "
                             "(and not raw)")


def load(configs: dict[str, Config], directory: Path = LIBCS_DIR) -> list[LibcBuild]:
    """The flavours of libcs/*.toml: a [defaults] table and [[flavour]] entries, each
    a build directory (``dir``) or Debian packages (``suite``, ``arch``, ``packages``,
    with the ``release`` they must hold)."""
    builds = []
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ModelError(f"{path}: {exc}") from None
        top = _Table(data, path, "top")
        defaults = top.get("defaults", dict, required=False) or {}
        entries = top.get("flavour", list)
        top.done()
        text = path.read_text()
        lines = [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[flavour]]"]
        for index, own in enumerate(entries):
            line = lines[index] if index < len(lines) else 0
            entry = _Table({**defaults, **own}, path, f"flavour at line {line}")
            builds.append(_entry(entry, f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line}",
                                 configs))
    return builds


def _entry(entry: _Table, origin: str, configs: dict[str, Config]) -> LibcBuild:
    name, config = entry.get("name", str), entry.get("config", str)
    try:
        _check_name(name, origin)
    except LibcUsageError as exc:
        raise entry.error("name", str(exc)) from None
    if config not in configs:
        raise entry.error("config", f"unknown configuration {config!r}")
    libc = entry.get("libc", str, LIBCS, required="dir" not in entry.data)
    if "dir" in entry.data:
        directory = Path(entry.get("dir", str)).expanduser()
        entry.done()
        found = detect_libc(directory, configs[config]) if directory.is_dir() else None
        if libc is not None and found is not None and found != libc:
            raise entry.error("libc", f"{libc} stated, but the headers under {directory} are {found}'s")
        return LibcBuild(name=name, config=config, origin=origin, libc=libc or found, directory=directory,
                         asked=True)
    suite, arch = entry.get("suite", str), entry.get("arch", str)
    packages, release = entry.get("packages", list), entry.get("release", str)
    cflags = entry.get("cflags", list, required=False)
    entry.done()
    if cflags is not None and not all(isinstance(f, str) and f for f in cflags):
        raise entry.error("cflags", "expected non-empty strings")
    if not packages or not all(isinstance(p, str) and p for p in packages):
        raise entry.error("packages", "expected a non-empty list of package names")
    if name != f"{libc}-{release}":
        raise entry.error("name", f"a release from the archive is named by its libc and release: {libc}-{release}")
    return LibcBuild(name=name, config=config, origin=origin, libc=libc, suite=suite, arch=arch,
                     packages=tuple(packages), release=release, cflags=None if cflags is None else tuple(cflags))


def attach(configs: dict[str, Config], builds: list[LibcBuild]) -> None:
    """Add each build as a flavour of its configuration (LibcUsageError on a clash)."""
    for build in builds:
        config = configs[build.config]
        if build.name in config.flavours:
            raise LibcUsageError(f"{build.origin}: {build.config} already has a flavour {build.name!r}")
        base = base_flavour(config, build.libc)
        cflags = build.cflags if build.cflags is not None else base.cflags if base else ()
        config.flavours[build.name] = Flavour(
            name=build.name, cc=base.cc if base else "", cflags=cflags, apt=(),
            libc=build.libc, build=build, asked=build.asked)


def base_flavour(config: Config, libc: str | None) -> Flavour | None:
    """The configuration's own flavour whose compiler builds a ``libc`` build: the one of
    that libc, else (a musl build where only glibc has a flavour) the other libc's."""
    own = [f for f in config.flavours.values() if f.build is None and f.libc is not None]
    same = [f for f in own if f.libc == libc]
    return (same or own or [None])[0]


def packages(builds: list[LibcBuild]) -> list[tuple[list[str], str, str]]:
    """(packages, suite, arch) of the archive entries, for the bootstrap to fetch."""
    return [(list(b.packages), b.suite, b.arch) for b in builds if b.directory is None]


# ---------------------------------------------------------------------------
# Layouts

@dataclass(frozen=True)
class Layout:
    words: str          # how the README names it
    include: Path
    lib: Path


def layouts(root: Path, config: Config) -> list[Layout]:
    """The candidate (include, lib) pairs of a build directory, in the order tried."""
    found = [Layout("DIR/include + DIR/lib", root / "include", root / "lib"),
             Layout("DIR/usr/include + DIR/usr/lib", root / "usr" / "include", root / "usr" / "lib")]
    gnu = cross_triplet(config)
    if gnu is not None:
        triplet, libdir = gnu
        found.append(Layout(f"DIR/usr/{triplet}/include + DIR/usr/{triplet}/{libdir} (Debian cross package)",
                            root / "usr" / triplet / "include", root / "usr" / triplet / libdir))
    lib = root / "usr" / "lib"
    if lib.is_dir():
        for multiarch in sorted(p.name for p in lib.iterdir() if (p / "libc.a").is_file()):
            found.append(Layout(f"DIR/usr/include/{multiarch} + DIR/usr/lib/{multiarch} (Debian multiarch package)",
                                root / "usr" / "include" / multiarch, lib / multiarch))
    return found


def choose_layout(root: Path, config: Config) -> Layout:
    candidates = layouts(root, config)
    for layout in candidates:
        if layout.include.is_dir() and (layout.lib / "libc.a").is_file():
            return layout
    includes = [c for c in candidates if c.include.is_dir()]
    archives = [c for c in candidates if (c.lib / "libc.a").is_file()]
    if not includes and not archives:
        raise LibcError(f"{root}: no include directory and no libc.a: looked for "
                        + "; ".join(f"{c.include} and {c.lib / 'libc.a'}" for c in candidates))
    if includes:
        raise LibcError(f"{root}: no static libc archive: {includes[0].include} exists, but there is no "
                        f"{includes[0].lib / 'libc.a'}" + _also(includes[1:], lambda c: c.lib / "libc.a"))
    raise LibcError(f"{root}: no include directory: {archives[0].lib / 'libc.a'} exists, but there is no "
                    f"{archives[0].include}" + _also(archives[1:], lambda c: c.include))


def _also(candidates, path) -> str:
    return "".join(f" (nor {path(c)})" for c in candidates)


def headers_libc(include: Path) -> tuple[str, str | None] | None:
    """(libc, release or None) of a header directory: glibc's features.h defines
    __GLIBC__ and __GLIBC_MINOR__; musl's has neither, and musl has bits/alltypes.h."""
    try:
        features = (include / "features.h").read_text(errors="replace")
    except OSError:
        return None
    major = re.search(r"^#\s*define\s+__GLIBC__\s+(\d+)", features, re.M)
    minor = re.search(r"^#\s*define\s+__GLIBC_MINOR__\s+(\d+)", features, re.M)
    if major and minor:
        return "glibc", f"{major.group(1)}.{minor.group(1)}"
    if (include / "bits" / "alltypes.h").is_file():
        return "musl", None
    return None


def detect_libc(root: Path, config: Config) -> str | None:
    """The libc whose headers a build directory holds, read without compiling anything."""
    for layout in layouts(root, config):
        found = headers_libc(layout.include)
        if found:
            return found[0]
    return None


# ---------------------------------------------------------------------------
# The static archive: ar members, the version member, its ELF header

def ar_members(path: Path) -> tuple[bytes, dict[str, int]]:
    """The bytes of an ar archive and its symbol index {symbol: member header offset}."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LibcError(f"{path}: {exc.strerror}") from None
    if data.startswith(b"!<thin>\n"):
        raise LibcError(f"{path}: a thin archive (its members are other files); a static libc.a holds them")
    if not data.startswith(b"!<arch>\n"):
        raise LibcError(f"{path}: not an ar archive (no !<arch> magic)")
    name, offset, size = _member_at(data, 8, path)
    index: dict[str, int] = {}
    if name in ("/", "/SYM64/"):
        width = 8 if name == "/SYM64/" else 4
        body = data[offset:offset + size]
        count = int.from_bytes(body[:width], "big")
        offsets = [int.from_bytes(body[width + i * width:width + (i + 1) * width], "big") for i in range(count)]
        names = body[width + count * width:].split(b"\0")
        for symbol, member in zip(names, offsets):
            index.setdefault(symbol.decode(errors="replace"), member)
    return data, index


def _member_at(data: bytes, at: int, path: Path) -> tuple[str, int, int]:
    header = data[at:at + 60]
    if len(header) < 60 or header[58:60] != b"`\n":
        raise LibcError(f"{path}: a malformed ar member header at byte {at}")
    name = header[:16].decode(errors="replace").rstrip()
    try:
        size = int(header[48:58].decode().strip())
    except ValueError:
        raise LibcError(f"{path}: a malformed ar member size at byte {at}") from None
    return name, at + 60, size


def _member_name(data: bytes, raw: str) -> str:
    if raw.startswith("/") and raw[1:].isdigit():        # GNU: an offset into the // member
        table_at = data.find(b"\n//")
        if table_at >= 0:
            _, start, size = _member_at(data, table_at + 1, Path("?"))
            table = data[start:start + size]
            begin = int(raw[1:])
            end = table.find(b"/\n", begin)
            return table[begin:end].decode(errors="replace")
    return raw.rstrip("/")


@dataclass(frozen=True)
class ArchiveFacts:
    libc: str
    release: str
    member: str
    machine: str
    elf_class: int
    endianness: str


def archive_facts(path: Path) -> ArchiveFacts:
    """Which libc and release a libc.a is, and the ELF header of its version member."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    data, index = ar_members(path)
    if "gnu_get_libc_version" in index:
        libc, at = "glibc", index["gnu_get_libc_version"]
    elif "__libc_version" in index:
        libc, at = "musl", index["__libc_version"]
    else:
        raise LibcError(f"{path}: neither glibc's version.o (gnu_get_libc_version) nor musl's version.lo "
                        "(__libc_version) is in its symbol index: not a glibc or musl libc.a")
    raw, start, size = _member_at(data, at, path)
    member = _member_name(data, raw)
    try:
        elf = ELFFile(io.BytesIO(data[start:start + size]))
        symtab = elf.get_section_by_name(".symtab")
        symbol = next((s for s in symtab.iter_symbols() if s.name == "__libc_version"), None) if symtab else None
        if symbol is None or not isinstance(symbol["st_shndx"], int):
            raise LibcError(f"{path}: its member {member} defines no __libc_version string")
        section = elf.get_section(symbol["st_shndx"])
        value = section.data()[symbol["st_value"]:symbol["st_value"] + symbol["st_size"]]
        machine, elf_class, little = elf["e_machine"], elf.elfclass, elf.little_endian
    except ELFError as exc:
        raise LibcError(f"{path}: its member {member} is not an ELF object: {exc}") from None
    release = value.split(b"\0", 1)[0].decode(errors="replace").strip()
    if not release:
        raise LibcError(f"{path}: __libc_version in {member} is empty")
    return ArchiveFacts(libc, release, member, machine, elf_class, "little" if little else "big")


# ---------------------------------------------------------------------------
# The compilers' own parts

def _run(command: list[str], what: str) -> str:
    from .build import build_environment
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILER_TIMEOUT,
                                env=build_environment(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LibcError(f"{what}: $ {shlex.join(command)}: {exc}") from None
    if result.returncode != 0:
        raise LibcError(f"{what}: $ {shlex.join(command)} failed: {result.stderr.strip()[-500:]}")
    return result.stdout + result.stderr


def _command(flavour: Flavour) -> list[str]:
    from .build import _resolve, compiler
    return [*compiler(flavour.cc), *(_resolve(flag) for flag in flavour.cflags)]


@lru_cache(maxsize=None)
def _facts(cc: str, cflags: tuple[str, ...]) -> dict:
    """What a compiler says about itself: its family, its header search list."""
    flavour = Flavour("probe", cc, cflags, ())
    command = _command(flavour)
    version = _run([*command, "--version"], f"the compiler of {cc!r}")
    family = "clang" if "clang version" in version.splitlines()[0] else "gcc"
    listing = _run([*command, "-E", "-v", "-x", "c", "-o", os.devnull, os.devnull], f"the search list of {cc!r}")
    search, inside = [], False
    for line in listing.splitlines():
        if line.startswith("#include <...> search starts here:"):
            inside = True
        elif line.startswith("End of search list."):
            inside = False
        elif inside and line.startswith(" "):
            search.append(Path(os.path.abspath(line.strip())))   # zig prints them relative to the cwd
    return {"family": family, "search": search, "command": command}


@lru_cache(maxsize=None)
def _cross_triplet(cc: str, cflags: tuple[str, ...]) -> tuple[str, str] | None:
    command = _command(Flavour("probe", cc, cflags, ()))
    try:
        triplet = _run([*command, "-dumpmachine"], "the triplet").strip()
        os_dir = _run([*command, "-print-multi-os-directory"], "the multilib directory").strip()
    except LibcError:
        return None
    return triplet, os.path.normpath(f"lib/{os_dir}")


def cross_triplet(config: Config) -> tuple[str, str] | None:
    """(triplet, libdir) of the configuration's GNU cross compiler (its glibc flavour's)."""
    glibc = config.flavours.get("glibc")
    if glibc is None or _facts(glibc.cc, glibc.cflags)["family"] != "gcc":
        return None
    return _cross_triplet(glibc.cc, glibc.cflags)


def _builtin_includes(flavour: Flavour) -> list[Path]:
    """The compiler's own headers (stddef.h, stdarg.h, ...): gcc's include and include-fixed;
    clang's resource headers, the first entry of its search list."""
    facts = _facts(flavour.cc, flavour.cflags)
    if facts["family"] == "gcc":
        found = [Path(_run([*facts["command"], f"-print-file-name={name}"], "gcc's headers").strip())
                 for name in ("include", "include-fixed")]
        found = [p for p in found if p.is_absolute() and p.is_dir()]
    else:
        found = facts["search"][:1]
    if not found or not any((p / "stddef.h").is_file() for p in found):
        raise LibcError(f"the compiler {flavour.cc!r} shows no directory of its own headers (stddef.h)")
    return found


def _gcc_file(flavour: Flavour, name: str) -> str:
    facts = _facts(flavour.cc, flavour.cflags)
    path = _run([*facts["command"], f"-print-file-name={name}"], f"gcc's {name}").strip()
    if not Path(path).is_absolute() or not Path(path).is_file():
        raise LibcError(f"{shlex.join(facts['command'])} has no {name} (-print-file-name={name} says {path!r})")
    return path


def uapi_headers(config: Config, flavour: Flavour) -> Path:
    """A directory of links to the kernel's uapi header directories (UAPI_DIRS) as the
    system's cross package provides them (found by the configuration's glibc flavour's
    gcc), else as the building compiler finds them."""
    from .build import CACHE_DIR
    source = config.flavours.get("glibc") or flavour
    search = _facts(source.cc, source.cflags)["search"]
    links = {}
    for name in UAPI_DIRS:
        for directory in search:
            if (directory / name).is_dir():
                links[name] = directory / name
                break
    if "asm" not in links or not (links["asm"] / "unistd.h").is_file() or "linux" not in links:
        raise LibcError(f"no kernel uapi headers (asm/unistd.h, linux/) in the search list of {source.cc!r}: "
                        f"{', '.join(map(str, search))}")
    digest = hashlib.sha256("".join(f"{n}={p}\n" for n, p in links.items()).encode()).hexdigest()[:16]
    target = CACHE_DIR / "uapi" / f"{config.name}-{digest}"
    if not target.is_dir():
        temp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
        temp.mkdir(parents=True, exist_ok=True)
        for name, path in links.items():
            (temp / name).symlink_to(path)
        try:
            os.rename(temp, target)
        except OSError:    # another worker made it first
            for child in temp.iterdir():
                child.unlink()
            temp.rmdir()
    return target


# ---------------------------------------------------------------------------
# A build, checked and turned into compiler arguments

@dataclass(frozen=True)
class Sysroot:
    build: LibcBuild
    root: Path
    layout: Layout
    facts: ArchiveFacts
    uapi: Path | None          # None: the build's own include directory has them
    family: str                # the building compiler's: gcc or clang (zig)
    include_flags: tuple[str, ...]
    start: tuple[str, ...]     # before the helper's source
    end: tuple[str, ...]       # after it and the flavour's flags
    digest: str = field(default="")   # over the build's files, for the helper cache key

    def describe(self) -> str:
        uapi = "its own uapi headers" if self.uapi is None else f"the uapi headers linked in {self.uapi}"
        return (f"the {self.facts.libc} {self.facts.release} build in {self.root} "
                f"({self.layout.words}; {uapi})")


def check(build: LibcBuild, config: Config) -> tuple[Path, Layout, ArchiveFacts]:
    """The build's root, layout and archive facts, after every check of the module docstring."""
    root = build.root()
    layout = choose_layout(root, config)
    archive = layout.lib / "libc.a"
    for name in START_FILES:
        if not (layout.lib / name).is_file():
            raise LibcError(f"{root}: no {layout.lib / name} beside {archive} (a static link starts with "
                            f"{', '.join(START_FILES)})")
    facts = archive_facts(archive)
    wanted = (config.elf_machine, config.elf_class, config.endianness)
    machines = MEMBER_MACHINES.get(config.elf_machine, (config.elf_machine,))
    if facts.machine not in machines or (facts.elf_class, facts.endianness) != wanted[1:]:
        raise LibcError(f"{archive}: its member {facts.member} is {facts.machine}, {facts.elf_class}-bit, "
                        f"{facts.endianness}-endian, but {config.name} is {wanted[0]}, {wanted[1]}-bit, "
                        f"{wanted[2]}-endian ({config.path.name} [elf]): an archive for another ABI")
    headers = headers_libc(layout.include)
    if headers is None:
        raise LibcError(f"{layout.include}: no features.h of glibc or musl (features.h with __GLIBC__, "
                        f"or musl's bits/alltypes.h)")
    if headers[0] != facts.libc:
        raise LibcError(f"{layout.include} holds {headers[0]}'s headers, but {archive} is {facts.libc}'s "
                        f"({facts.member})")
    if headers[1] is not None and ".".join(facts.release.split(".")[:2]) != headers[1]:
        raise LibcError(f"headers and archive of different releases: {layout.include / 'features.h'} is "
                        f"glibc {headers[1]}, {archive} is glibc {facts.release} ({facts.member})")
    if build.libc is not None and build.libc != facts.libc:
        raise LibcError(f"{build.origin}: the flavour is {build.libc}, but {archive} is {facts.libc}'s")
    if build.release is not None and facts.release != build.release:
        raise LibcError(f"{build.origin}: {build.describe()} holds {facts.libc} {facts.release} ({archive}), "
                        f"the entry names {build.release}")
    return root, layout, facts


_SYSROOTS: dict[tuple, Sysroot] = {}


def sysroot(config: Config, flavour_name: str) -> Sysroot:
    """The checked build of a libc flavour and the compiler arguments that use it (once per run)."""
    flavour = config.flavours[flavour_name]
    key = (config.name, flavour_name, flavour.build)
    if key not in _SYSROOTS:
        _SYSROOTS[key] = _sysroot(config, flavour)
    return _SYSROOTS[key]


def _sysroot(config: Config, flavour: Flavour) -> Sysroot:
    build = flavour.build
    root, layout, facts = check(build, config)
    base = base_flavour(config, facts.libc)
    if base is None:
        raise LibcError(f"{build.origin}: {config.name} has no glibc or musl flavour in {config.path.name}, "
                        "so no compiler for a libc build")
    if flavour.libc != facts.libc:
        raise LibcError(f"{build.origin}: the flavour was taken for {flavour.libc}'s, but {layout.lib / 'libc.a'} "
                        f"is {facts.libc}'s")
    family = _facts(flavour.cc, flavour.cflags)["family"]
    own_uapi = (layout.include / "asm" / "unistd.h").is_file()
    uapi = None if own_uapi else uapi_headers(config, flavour)
    include = ["-nostdinc"]
    for directory in _builtin_includes(flavour):
        include += ["-isystem", str(directory)]
    include += ["-isystem", str(layout.include)]
    if uapi is not None:
        include += ["-isystem", str(uapi)]
    lib = layout.lib
    start = [str(lib / "crt1.o"), str(lib / "crti.o")]
    if family == "gcc":
        start.append(_gcc_file(flavour, "crtbeginT.o"))
        end = ["-Wl,--start-group", _gcc_file(flavour, "libgcc.a"), _gcc_file(flavour, "libgcc_eh.a"),
               str(lib / "libc.a"), "-Wl,--end-group", _gcc_file(flavour, "crtend.o"), str(lib / "crtn.o")]
        include.append("-nostdlib")
    else:
        # zig: -nostdlib drops its libc and start files; -rtlib=compiler-rt keeps its runtime
        # library (64-bit division and the like, which libc.a calls on 32-bit ABIs).
        include += ["-nostdlib", "-rtlib=compiler-rt"]
        end = [str(lib / "libc.a"), str(lib / "crtn.o")]
    return Sysroot(build=build, root=root, layout=layout, facts=facts, uapi=uapi, family=family,
                   include_flags=tuple(include), start=tuple(start), end=tuple(end),
                   digest=_digest(layout))


def _digest(layout: Layout) -> str:
    """The archive and start files by content, the headers by name, size and time."""
    digest = hashlib.sha256()
    for name in ("libc.a", *START_FILES):
        digest.update((layout.lib / name).read_bytes())
    for directory, _, files in sorted(os.walk(layout.include)):
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(directory, name))
            except OSError:
                continue
            digest.update(f"{os.path.relpath(os.path.join(directory, name), layout.include)} {stat.st_size} "
                          f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
