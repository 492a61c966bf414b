"""The system under test: what it is, measured from it and checked against data.

A runner states what it knows without running anything (its kind, the qemu
binary and release, the kernel image); the probe of a helper session measures
the rest (the page size in force, the kernel's release and machine). Case rows
and known issues key their answers by these properties, never by a runner's
name, so a system nobody here has seen gets the right expectations.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from .model import ARCHES_DIR, KERNEL_OPTION, Config, Fact, ModelError

UNAME_TABLE = ARCHES_DIR / "kernel" / "uname.toml"
# The properties a row's expectation or a known issue's `where` may name, with the
# values each may take (checked when the tables load).
PROPERTIES = {"kernel_bits": (32, 64), "emulator": ("qemu-user", "none"), "page_size": None,
              "libc": ("glibc", "musl")}


class SystemUnderTestError(Exception):
    """The system under test answered something the ABI's data rules out."""


class KernelConfigUnknown(Exception):
    """A fact depends on a kernel configuration option that the configuration, as read
    from the system under test, does not give; the message says why (an n.a. reason)."""


@dataclass(frozen=True)
class Properties:
    page_size: int
    kernel_bits: int
    kernel_release: str | None     # uname -r of the kernel that answers (the host's under qemu-user)
    kernel_version: str | None     # a PEP 440 version of it (kernel_version())
    machine: str | None            # uname -m
    emulator: str                  # "qemu-user" where qemu linux-user answers the calls, else "none"
    emulator_version: str | None
    sources: dict                  # where each property comes from
    libc: str | None = None        # the helper's libc (glibc, musl); None: the raw flavour
    libc_version: str | None = None   # as that libc reports its release (gnu_get_libc_version())
    # The kernel configuration options arches/ names (model.Config.kernel_options), as its
    # .config writes them (an option it does not set is absent); None: not read, and
    # sources["kernel_config"] says why. Where read, that source says from where.
    kernel_config: dict | None = None

    def value(self, name: str):
        if KERNEL_OPTION.fullmatch(name):
            return self._option(name) or "n"   # Kconfig: an option the .config does not set is n
        return getattr(self, name)

    def kernel_option(self, name: str, where: str) -> int:
        """The integer value of a kernel configuration option (CONFIG_PAGE_OFFSET)."""
        text = self._option(name)
        if text is None:
            raise KernelConfigUnknown(f"the kernel's configuration does not set {name} "
                                      f"({self.sources['kernel_config']})")
        try:
            return int(text, 0)
        except ValueError:
            raise SystemUnderTestError(f"{where}: {name} is {text!r} in the kernel's configuration "
                                       f"({self.sources['kernel_config']}), not an integer") from None

    def _option(self, name: str) -> str | None:
        if self.kernel_config is None:
            raise KernelConfigUnknown(f"the kernel's configuration cannot be read "
                                      f"({self.sources.get('kernel_config', 'the runner reads none')})")
        return self.kernel_config.get(name)

    def as_dict(self) -> dict:
        """One dict, made once (every record of a session carries it): never change it."""
        return self._dict

    @cached_property
    def _dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=None)
def uname_machines(path: Path = UNAME_TABLE) -> dict[str, Fact]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: {exc}") from None
    table = data.get("machines")
    if not isinstance(table, dict) or set(data) != {"machines"}:
        raise ModelError(f"{path}: expected one [machines] table")
    machines = {}
    for name, fact in table.items():
        if (not isinstance(fact, dict) or set(fact) != {"value", "source"} or fact["value"] not in (32, 64)
                or not isinstance(fact["source"], str) or not fact["source"].strip()):
            raise ModelError(f"{path}: [machines] {name}: expected {{ value = 32 or 64, source = \"...\" }}")
        machines[name] = Fact(fact["value"], fact["source"])
    return machines


def kernel_bits_of(machine: str) -> Fact:
    machines = uname_machines()
    if machine not in machines:
        raise SystemUnderTestError(f"the kernel's uname machine {machine!r} is not in {UNAME_TABLE.relative_to(ARCHES_DIR.parent)}"
                           f" (known: {', '.join(sorted(machines))}); add it with its word size and source")
    return machines[machine]


_DEBIAN = re.compile(r"\bDebian (\d+\.\d+(?:\.\d+)?)")
_DEBIAN_PACKAGE = re.compile(r"\bDebian (\d\S*)")   # the whole Debian version: 6.1.176-1
_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?")


def kernel_version(release: str, uname_version: str | None = None) -> str:
    """A PEP 440 version for a kernel release, for known-issue ranges.

    The upstream release it is built from (Debian's uname -v names it: "Debian
    6.1.176-1"; else the release's own numbers, "-rcN" as a pre-release), with the
    whole uname release as the local label: 6.1.176+6.1.0.50.686, 6.13.0rc1+6.13.0.rc1,
    7.2.13+7.2.13.deb14.armmp."""
    match = _RELEASE.match(release)
    if not match:
        raise SystemUnderTestError(f"kernel release {release!r} does not start with a version number")
    major, minor, patch, rc = match.groups()
    # The last "Debian X.Y.Z" is the kernel package's (a banner names the compiler's first).
    debian = _DEBIAN.findall(uname_version or "")
    numbers = debian[-1] if debian else f"{major}.{minor}.{patch or 0}"
    local = re.sub(r"[^A-Za-z0-9]+", ".", release).strip(".")
    text = f"{numbers}{f'rc{rc}' if rc and not debian else ''}+{local}"
    from packaging.version import InvalidVersion, Version   # late: the bootstrap runs without it
    try:
        return str(Version(text))
    except InvalidVersion as exc:   # cannot happen for the forms above; say so if it does
        raise SystemUnderTestError(f"kernel release {release!r}: {exc}") from None


def qemu_version(version_output: str) -> str:
    """The release in `qemu-<arch> --version`: "version 7.2.22 (Debian ...)" -> 7.2.22; a
    build tree's "version 10.1.50 (v10.1.0-1234-gabcdef)" -> 10.1.50."""
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", version_output)
    if not match:
        raise SystemUnderTestError(f"no version in {version_output.strip()[:200]!r}")
    return match.group(1)


def libc_version(release: str) -> str:
    """A PEP 440 version for a libc's release string, for known-issue ranges and rows:
    its leading numbers, the rest as the local label ("2.41" -> 2.41; a development
    build's "2.41.9000" -> 2.41.9000; "1.2.5-git-12-gabc" -> 1.2.5+git.12.gabc)."""
    match = re.match(r"(\d+(?:\.\d+)*)(.*)", release.strip())
    if not match:
        raise SystemUnderTestError(f"libc release {release!r} does not start with a version number")
    numbers, rest = match.groups()
    local = re.sub(r"[^A-Za-z0-9]+", ".", rest).strip(".")
    from packaging.version import InvalidVersion, Version   # late: the bootstrap runs without it
    try:
        return str(Version(numbers + (f"+{local}" if local else "")))
    except InvalidVersion as exc:
        raise SystemUnderTestError(f"libc release {release!r}: {exc}") from None


def _libc(probe: dict, libc: str | None, sources: dict) -> tuple[str | None, str | None]:
    """The libc the probe names, checked against the flavour's."""
    reported = probe.get("libc")
    if libc is None:
        if reported is not None:
            raise SystemUnderTestError(f"the raw helper's probe names a libc: {reported!r}")
        return None, None
    if not isinstance(reported, dict) or not isinstance(reported.get("version"), str):
        raise SystemUnderTestError(f"the probe reported no libc version: {reported!r}")
    if reported.get("name") != libc:
        raise SystemUnderTestError(f"the probe names libc {reported.get('name')!r}; the flavour is built with {libc}")
    sources["libc_version"] = ("measured: gnu_get_libc_version() in the helper" if libc == "glibc" else
                               "measured: musl's __libc_version (src/internal/version.c) in the helper")
    libc_version(reported["version"])   # a release no range could be matched against is an error now
    return libc, reported["version"]


def measure(config: Config, probe: dict, stated: dict, libc: str | None = None) -> Properties:
    """The properties of a system from its probe answer and what its runner states.

    ``stated`` may fix kernel_bits (qemu-user: the host kernel's), emulator and
    emulator_version; ``libc`` is the flavour's libc, which the probe must name. A
    page size the ABI's kernels cannot have is an error about the system, not a
    reason to judge it by the wrong page."""
    page = probe.get("auxv_pagesz")
    if not isinstance(page, int) or isinstance(page, bool):
        raise SystemUnderTestError(f"the probe reported no page size (AT_PAGESZ): {page!r}")
    if page not in config.page_sizes.value:
        raise SystemUnderTestError(f"the system reports a page of {page} bytes, which {config.name} kernels cannot have "
                           f"(page_sizes {config.page_sizes.value}: {config.page_sizes.source})")
    uname = probe.get("uname") or {}
    machine, release = uname.get("machine"), uname.get("release")
    sources = {"page_size": "measured: AT_PAGESZ of the helper's auxiliary vector"}
    if "kernel_bits" in stated:
        bits = stated["kernel_bits"]
        sources["kernel_bits"] = stated["kernel_bits_source"]
    else:
        if not machine:
            raise SystemUnderTestError("the probe reported no uname machine, so the kernel's word size is unknown")
        fact = kernel_bits_of(machine)
        bits = fact.value
        sources["kernel_bits"] = f"measured: uname -m {machine!r}; {fact.source}"
    version = kernel_version(release, uname.get("version")) if release else None
    if release:
        sources["kernel_release"] = "measured: uname -r of the helper"
    libc_name, libc_release = _libc(probe, libc, sources)
    kernel_config = _kernel_config(config, stated, release, uname.get("version"), sources)
    return Properties(page_size=page, kernel_bits=bits, kernel_release=release, kernel_version=version,
                      machine=machine, emulator=stated.get("emulator", "none"),
                      emulator_version=stated.get("emulator_version"), sources=sources,
                      libc=libc_name, libc_version=libc_release, kernel_config=kernel_config)


def _kernel_config(config: Config, stated: dict, release: str | None, uname_version: str | None,
                   sources: dict) -> dict | None:
    """The options ``config`` names from the kernel configuration the runner read (stated
    kernel_config: the whole .config, or None), checked to be the measured kernel's: the
    release it was built for (kernel_config_for) must be uname -r, and the Debian version
    of its package the one uname -v names, where both name one."""
    sources["kernel_config"] = stated.get("kernel_config_source", "the runner reads no kernel configuration")
    options = stated.get("kernel_config")
    if options is None:
        return None
    built_for = stated.get("kernel_config_for", {})
    if built_for.get("release") != release:
        raise SystemUnderTestError(f"the kernel's configuration ({sources['kernel_config']}) is for release "
                                   f"{built_for.get('release')!r}; the kernel answers uname -r {release!r}")
    debian = _DEBIAN_PACKAGE.findall(uname_version or "")
    if built_for.get("version") and debian and debian[-1] != built_for["version"]:
        raise SystemUnderTestError(f"the kernel's configuration ({sources['kernel_config']}) is of Debian version "
                                   f"{built_for['version']}; the kernel's uname -v names Debian {debian[-1]}")
    return {name: options[name] for name in config.kernel_options if name in options}


# A condition is one or more properties joined by ",", all of which must hold:
# "kernel_bits=64,page_size=4096". kernel_version takes a PEP 440 specifier instead
# of "=value" (kernel_version>=6.4), matched against the measured kernel_version.
_VERSION_CONDITION = re.compile(r"kernel_version\s*([<>=!~].*)")


def condition_holds(condition: str, properties: Properties) -> bool:
    """A condition over the properties (cases' expect keys, row facts of arches/, known
    issues' where). Kernel configuration options are looked at last, so a condition that
    fails on a measured property holds false even where the configuration is unknown
    (KernelConfigUnknown)."""
    parts = sorted((part.strip() for part in condition.split(",")),
                   key=lambda part: bool(KERNEL_OPTION.fullmatch(part.partition("=")[0])))
    return all(_part_holds(part, properties) for part in parts)


def _part_holds(part: str, properties: Properties) -> bool:
    version = _VERSION_CONDITION.fullmatch(part)
    if version:
        if properties.kernel_version is None:
            return False
        from packaging.specifiers import SpecifierSet
        return SpecifierSet(version.group(1)).contains(properties.kernel_version, prereleases=True)
    name, _, value = part.partition("=")
    return str(properties.value(name)) == value


def check_condition(condition: str, kernel_options: bool = False) -> str | None:
    """Why ``condition`` is not a valid condition over PROPERTIES (and, for arches/'s row
    facts, kernel configuration options: CONFIG_KASAN=n), or None."""
    names = []
    for part in (p.strip() for p in condition.split(",")):
        name, equals, value = part.partition("=")
        if kernel_options and KERNEL_OPTION.fullmatch(name):
            problem = None if equals and value else f"{part!r}: a configuration option takes =VALUE (y, m, n, 0x...)"
        else:
            problem = _check_part(part)
        if problem:
            return problem
        names.append("kernel_version" if _VERSION_CONDITION.fullmatch(part) else part.partition("=")[0])
    if len(set(names)) != len(names):
        return f"{condition!r} names a property twice"
    return None


def _check_part(part: str) -> str | None:
    version = _VERSION_CONDITION.fullmatch(part)
    if version:
        try:
            from packaging.specifiers import InvalidSpecifier, SpecifierSet
        except ImportError:   # the bootstrap loads arches/ before any virtual environment: the run checks it
            return None
        try:
            SpecifierSet(version.group(1))
        except InvalidSpecifier:
            return f"{part!r}: kernel_version takes a PEP 440 specifier such as >=6.4"
        return None
    name, equals, value = part.partition("=")
    if not equals or name not in PROPERTIES:
        return (f"{part!r} is not NAME=VALUE with NAME one of {', '.join(PROPERTIES)} (or "
                f"kernel_version with a PEP 440 specifier)")
    allowed = PROPERTIES[name]
    if allowed is None:
        return None if value.isdigit() else f"{part!r}: {name} takes a whole number"
    if value not in [str(v) for v in allowed]:
        return f"{part!r}: {name} is one of {', '.join(map(str, allowed))}"
    return None
