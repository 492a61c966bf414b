"""The model: ABI configurations loaded from arches/*.toml and validated.

Every fact the oracle relies on is a ``{ value, source }`` pair, so a report can
name where each expectation comes from. A missing or unknown key is a load
error naming the file and the key: nothing is defaulted per ABI.
"""
from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCHES_DIR = REPO / "arches"
HELPERS_DIR = REPO / "helpers"
STUBS_DIR = HELPERS_DIR / "abi"

ERROR_CONVENTIONS = ("negative", "a3-flag", "cr0-so", "carry")
OFFSET_UNITS = ("4096", "page")
MISALIGNED = ("EINVAL", "unreachable")
# Runner kinds an ABI file may declare; the kernel runner (linux) takes its machines
# from machines/*.toml, docker and ssh run whatever their system answers for.
RUNNER_KINDS = ("qemu-user", "native")
# raw: freestanding, the system call itself; every other flavour is a libc whose
# mmap()/mmap64() are under test (the cases with libc calls run through each).
# These are the flavours of arches/; libcs/*.toml and --libc-prefix add flavours
# of other builds of the same libcs (mmap2conf/libcs.py), each of one of LIBCS.
FLAVOURS = ("raw", "glibc", "musl")
LIBCS = ("glibc", "musl")
# What rows and known issues name a flavour by: its libc (every build of it), or raw.
FLAVOUR_KINDS = ("raw", *LIBCS)
# Words in braces that a flavour's cc and cflags may use; build.RECIPE_VALUES fills
# them in: {python} is the interpreter running the suite (zig comes from the pinned
# ziglang package: "{python} -m ziglang cc"), {zig_lib} that package's lib directory.
RECIPE_WORDS = ("python", "zig_lib")
# Per-ABI answers that case rows refer to ("fact:NAME" expectations, "NAME=VALUE"
# requirements, and the ADDRESS_FACTS as names in a row's expressions), with the values
# each may take (None: any); required wherever mmap2 exists. Where the answer depends on
# the system, the value is a table of conditions over its measured properties, as a
# row's expect is (sut.condition_holds; "default" for the rest); a system that no key
# matches has no stated answer, and the rows that need one are n.a. there.
ROW_FACTS = {
    "unknown_prot": (str, ("mapping", "EINVAL")),
    "oversized_len": (str, ("ENOMEM", "EINVAL")),
    "fixed_past_top": (str, ("ENOMEM", "EINVAL")),
    "hint_past_top": (str, ("mapping-below-top", "EINVAL")),
    "argument_passing": (str, ("registers", "stack-5-6", "block")),
    "high_addresses": (bool, (True, False)),
    # The first address a task of the ABI may not map (TASK_SIZE for it): an integer, or
    # an expression over `page` (2^32 less a page on several compat paths) and the
    # kernel's configuration options (CONFIG_PAGE_OFFSET where it is a Kconfig choice).
    "task_size": ((int, str), None),
}
ADDRESS_FACTS = ("task_size",)
# A kernel configuration option, as a name in an address fact's expression (its
# integer value) or in a row fact's condition (CONFIG_KASAN=n): sut.Properties.kernel_config.
KERNEL_OPTION = re.compile(r"CONFIG_[A-Z0-9_]+")
# e_machine names as pyelftools spells them (EM_QDSP6 is Hexagon, EM_SPARCV9 64-bit SPARC).
ELF_MACHINES = ("EM_386", "EM_X86_64", "EM_ARM", "EM_MIPS", "EM_PPC", "EM_OPENRISC", "EM_SPARC32PLUS",
                "EM_68K", "EM_PARISC", "EM_QDSP6", "EM_RISCV", "EM_AARCH64", "EM_SPARCV9")


class ModelError(Exception):
    """A configuration file is malformed; the message names the file and key."""


@dataclass(frozen=True)
class Fact:
    value: object
    source: str


@dataclass(frozen=True)
class ErrnoTable:
    family: str
    errno: dict[str, Fact]
    signals: dict[str, Fact]

    def name_of(self, number: int) -> str | None:
        return next((n for n, f in self.errno.items() if f.value == number), None)

    def number_of(self, name: str) -> int:
        try:
            return self.errno[name].value
        except KeyError:
            raise ModelError(f"errno name {name!r} is not in the {self.family} errno table "
                             f"(known: {', '.join(sorted(self.errno))})") from None


@dataclass(frozen=True)
class RunnerSpec:
    kind: str
    target: str | None = None     # qemu-user: the qemu target name (qemu-<target>)


@dataclass(frozen=True)
class Flavour:
    name: str
    cc: str
    cflags: tuple[str, ...]
    apt: tuple[str, ...]
    libc: str | None = None       # one of LIBCS; None: raw, no libc
    # A libc build outside the compiler's own (libcs.LibcBuild: a directory or Debian
    # packages), compiled with the cc and cflags of the configuration's flavour of that libc.
    build: object | None = field(default=None, compare=False)
    asked: bool = False           # named by the user: a session that cannot start is an error

    @property
    def kind(self) -> str:
        """raw, glibc or musl: what case rows and known issues name a flavour by ("unknown":
        a libc build whose headers name no libc; its sessions say what is wrong)."""
        return self.libc or ("raw" if self.build is None else "unknown")


@dataclass(frozen=True)
class Config:
    name: str
    path: Path
    description: str
    tags: tuple[str, ...]
    elf_machine: str
    elf_class: int
    endianness: str
    stub: str
    mmap2_nr: Fact
    error_convention: Fact
    errno_family: Fact
    offset_unit: Fact | None
    misaligned_pgoff: Fact | None
    page_sizes: Fact              # every page size this ABI's kernels can have (a list)
    runners: dict[str, RunnerSpec]
    flavours: dict[str, Flavour]
    row_facts: dict[str, Fact]
    errno: ErrnoTable = field(repr=False)
    kernel_options: tuple[str, ...] = ()   # the CONFIG_ options its row facts name

    @property
    def has_mmap2(self) -> bool:
        return self.mmap2_nr.value is not False

    @property
    def word_bits(self) -> int:
        return self.elf_class

    def requirement(self, name: str) -> Fact | None:
        """The fact a case row's ``requires = "name=value"`` refers to, if this ABI states it."""
        if name == "mmap2":
            return Fact(self.has_mmap2, self.mmap2_nr.source)
        return self.row_facts.get(name)

    def unit_bytes(self, page_size: int) -> int:
        """Bytes per mmap2 pgoff step on a system whose page is ``page_size``."""
        return 4096 if self.offset_unit.value == "4096" else page_size


class _Table:
    """A TOML table being validated: every read key is checked, leftovers are errors."""

    def __init__(self, data: dict, path: Path, where: str):
        self.data, self.path, self.where, self.seen = data, path, where, set()

    def error(self, key: str, message: str) -> ModelError:
        return ModelError(f"{self.path}: [{self.where}] {key}: {message}")

    def get(self, key: str, kind: type | tuple, choices=None, required: bool = True):
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "missing")
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value

    def fact(self, key: str, kind, choices=None, required: bool = True, keyed: bool = False) -> Fact | None:
        raw = self.get(key, dict, required=required)
        if raw is None:
            return None
        sub = _Table(raw, self.path, f"{self.where}.{key}")
        if keyed and isinstance(raw.get("value"), dict):
            value = sub.keyed_value(kind, choices)
        else:
            value = sub.get("value", kind, choices)
        source = sub.get("source", str)
        sub.done()
        if not source.strip():
            raise self.error(key, "the source is empty")
        return Fact(value, source)

    def keyed_value(self, kind, choices) -> dict:
        """A value per condition over the system's properties (see ROW_FACTS), which may
        name kernel configuration options."""
        from .sut import check_condition   # late: sut imports this module
        table = self.get("value", dict)
        if not table:
            raise self.error("value", "an empty table of conditions")
        for condition, value in table.items():
            problem = condition != "default" and check_condition(condition, kernel_options=True)
            if problem:
                raise self.error("value", f"{problem} (or default)")
            if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
                raise self.error("value", f"{condition}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
            if choices is not None and value not in choices:
                raise self.error("value", f"{condition}: {value!r} is not one of {', '.join(map(str, choices))}")
        return table

    def sub(self, key: str, required: bool = True) -> "_Table | None":
        raw = self.get(key, dict, required=required)
        return None if raw is None else _Table(raw, self.path, key if self.where == "top" else f"{self.where}.{key}")

    def done(self) -> None:
        extra = set(self.data) - self.seen
        if extra:
            raise self.error(sorted(extra)[0], "unknown key")


def load_errno_table(family: str, arches_dir: Path = ARCHES_DIR) -> ErrnoTable:
    path = arches_dir / "errno" / f"{family}.toml"
    if not path.exists():
        raise ModelError(f"{path}: no errno table for family {family!r}")
    top = _Table(_read_toml(path), path, "top")
    if top.get("family", str) != family:
        raise top.error("family", f"does not match the file name ({family})")
    tables = {}
    for section in ("errno", "signals"):
        table = top.sub(section)
        tables[section] = {name: table.fact(name, int) for name in table.data}
        table.done()
    top.done()
    return ErrnoTable(family, tables["errno"], tables["signals"])


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{path}: {exc}") from None


def expression_names(value) -> set[str]:
    """The names an expression (an address fact, a row's input) uses; none for an integer,
    or for text that does not parse (evaluating it reports that)."""
    if not isinstance(value, str):
        return set()
    try:
        return {node.id for node in ast.walk(ast.parse(value, mode="eval")) if isinstance(node, ast.Name)}
    except SyntaxError:
        return set()


def _kernel_options(abi: _Table, row_facts: dict[str, Fact]) -> tuple[str, ...]:
    """The kernel configuration options the row facts name, in conditions and in the
    address facts' expressions (which may use only `page` and such options)."""
    options = set()
    for name, fact in row_facts.items():
        table = fact.value if isinstance(fact.value, dict) else {"default": fact.value}
        for condition, value in table.items():
            options |= {part.partition("=")[0].strip() for part in condition.split(",")
                        if KERNEL_OPTION.fullmatch(part.partition("=")[0].strip())}
            if name not in ADDRESS_FACTS:
                continue
            names = expression_names(value)
            unknown = sorted(n for n in names if n != "page" and not KERNEL_OPTION.fullmatch(n))
            if unknown:
                raise abi.sub(name).error("value", f"{condition}: {value!r} names {unknown[0]!r}: an address fact's expression "
                                      f"may use page and kernel configuration options (CONFIG_...) only")
            options |= names - {"page"}
    return tuple(sorted(options))


def _check_recipe_words(table: _Table, key: str, words: list[str]) -> None:
    for word in words:
        for name in re.findall(r"\{([^}]*)\}", word):
            if name not in RECIPE_WORDS:
                raise table.error(key, f"unknown recipe word {{{name}}} in {word!r} "
                                       f"(known: {', '.join('{' + w + '}' for w in RECIPE_WORDS)})")


def load_config(path: Path) -> Config:
    top = _Table(_read_toml(path), path, "top")
    name = top.get("name", str)
    if name != path.stem:
        raise top.error("name", f"{name!r} does not match the file name {path.stem!r}")
    description = top.get("description", str)
    tags = tuple(top.get("tags", list))

    elf = top.sub("elf")
    elf_machine = elf.get("machine", str, ELF_MACHINES)
    elf_class = elf.get("class", int, (32, 64))
    endianness = elf.get("endianness", str, ("little", "big"))
    elf.done()

    abi = top.sub("abi")
    page_sizes = abi.fact("page_sizes", list)
    if not page_sizes.value or any(isinstance(size, bool) or not isinstance(size, int) or size < 4096
                                   or size & (size - 1) for size in page_sizes.value):
        raise abi.error("page_sizes", f"{page_sizes.value!r} is not a list of powers of two of 4096 or more")
    stub = abi.get("stub", str)
    if not (STUBS_DIR / f"{stub}.h").exists():
        raise abi.error("stub", f"no stub header {STUBS_DIR / stub}.h")
    mmap2_nr = abi.fact("mmap2_nr", (int, bool))
    if mmap2_nr.value is True:
        raise abi.error("mmap2_nr", "must be a syscall number or false")
    error_convention = abi.fact("error_convention", str, ERROR_CONVENTIONS)
    errno_family = abi.fact("errno_family", str)
    if not (path.parent / "errno" / f"{errno_family.value}.toml").exists():
        raise abi.error("errno_family", f"no errno table for family {errno_family.value!r} in errno/")
    # The offset facts only exist where mmap2 does: demanding them on x86_64 would
    # force invented values, allowing them to be absent elsewhere would be a default.
    has_mmap2 = mmap2_nr.value is not False
    offset_unit = abi.fact("offset_unit", str, OFFSET_UNITS, required=has_mmap2)
    misaligned = abi.fact("misaligned_pgoff", str, MISALIGNED, required=has_mmap2)
    row_facts = {name: abi.fact(name, kind, choices, required=has_mmap2, keyed=True)
                 for name, (kind, choices) in ROW_FACTS.items()}
    row_facts = {name: fact for name, fact in row_facts.items() if fact is not None}
    if not has_mmap2 and (offset_unit or misaligned or row_facts):
        raise abi.error("offset_unit", "mmap2 facts given for an ABI without mmap2")
    kernel_options = _kernel_options(abi, row_facts)
    abi.done()

    runners_table = top.sub("runners")
    runners = {}
    for kind in runners_table.data:
        if kind not in RUNNER_KINDS:
            raise runners_table.error(kind, f"unknown runner kind (known: {', '.join(RUNNER_KINDS)})")
        spec = runners_table.sub(kind)
        target = spec.get("target", str, required=kind == "qemu-user") if kind == "qemu-user" else None
        if target is not None and not re.fullmatch(r"[a-z0-9_]+", target):
            raise spec.error("target", f"{target!r} is not a qemu target name such as i386 or mipsel")
        runners[kind] = RunnerSpec(kind, target)
        spec.done()
    runners_table.done()

    flavours_table = top.sub("flavours")
    flavours = {}
    for fname in flavours_table.data:
        if fname not in FLAVOURS:
            raise flavours_table.error(fname, f"unknown flavour (known: {', '.join(FLAVOURS)})")
        spec = flavours_table.sub(fname)
        cc, cflags, apt = spec.get("cc", str), spec.get("cflags", list), spec.get("apt", list)
        if not cc.strip():
            raise spec.error("cc", "is empty")
        for key, words in (("cc", [cc]), ("cflags", cflags), ("apt", apt)):
            if not all(isinstance(word, str) and word for word in words):
                raise spec.error(key, "expected non-empty strings")
            if key != "apt":
                _check_recipe_words(spec, key, words)
        flavours[fname] = Flavour(fname, cc, tuple(cflags), tuple(apt), libc=fname if fname in LIBCS else None)
        spec.done()
    flavours_table.done()
    if "raw" not in flavours:
        raise flavours_table.error("raw", "missing: every configuration has the freestanding helper")
    top.done()

    return Config(name=name, path=path, description=description, tags=tags,
                  elf_machine=elf_machine, elf_class=elf_class, endianness=endianness,
                  stub=stub, mmap2_nr=mmap2_nr, error_convention=error_convention,
                  errno_family=errno_family, offset_unit=offset_unit,
                  misaligned_pgoff=misaligned, page_sizes=page_sizes, runners=runners, flavours=flavours, row_facts=row_facts,
                  errno=load_errno_table(errno_family.value, path.parent), kernel_options=kernel_options)


def load_all(arches_dir: Path = ARCHES_DIR) -> dict[str, Config]:
    configs = {p.stem: load_config(p) for p in sorted(arches_dir.glob("*.toml"))}
    if not configs:
        raise ModelError(f"{arches_dir}: no configuration files")
    for config in configs.values():
        clash = set(config.tags) & set(configs)
        if clash:
            raise ModelError(f"{config.path}: tag {sorted(clash)[0]!r} is also a configuration name")
    return configs
