"""Archive: Debian packages of any suite and architecture, unpacked into the cache.

``fetch("qemu-user", "bookworm-backports")`` returns the root of the unpacked
package, ``CACHE/archive/<suite>/<arch>/<package>_<version>/`` (the version as
``apt-get download`` spells it in a file name: an epoch's ``:`` becomes
``%3a``, so the path can go on PATH). Nothing is installed and the system's apt
configuration and state are left alone: each (suite, architecture, component)
has its own apt directory under ``CACHE/archive/<suite>/<arch>/.apt-<component>/``
with its own sources.list, lists, package cache and an empty dpkg status, and
apt is run with ``-o`` options pointing at it (reference/archive.md). The
mirror is the one the machine already uses, read from
/etc/apt/sources.list.d/*.sources (deb822) or the one-line sources.list files,
with its Signed-By keyring, so every download is checked against the suite's
signed Release file as usual.

Fetched once: the private lists stay in the cache, so a later call finds the
version locally (``apt-cache``, no network) and returns the root it already
unpacked. The lists are refreshed (``apt-get update``, for that suite only)
when they do not hold the wanted package or version, when the download of the
version they name fails (the suite moved on), or on ``refresh=True``. With a
pinned ``version`` an existing root is returned without running apt at all, and
so is the root of an unpinned request resolved before from the same lists: each
resolution is remembered in ``.apt-<component>/resolved.json`` beside the lists'
names, sizes and modification times (``apt-cache show`` parses the whole
Packages index, about a second a call, every run otherwise).

Atomic: the .deb is downloaded and unpacked (``dpkg-deb -x``) in a temporary
directory beside the root, which is renamed into place when complete. Work on
one (suite, architecture) holds a file lock, so parallel callers (pytest-xdist
workers) fetch once; a temporary directory left by a killed process is removed
by the next call that takes the lock.

``fetch_all`` unpacks a list of named packages into one root (a cross libc and
its kernel headers, a qemu-system and its libraries): dependencies are not
followed, the caller names what it needs.

Run by the bootstrap before any virtual environment exists: standard library only.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .model import REPO

APT_ETC = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
MIRROR_VARIABLE = "MMAP2CONF_DEBIAN_MIRROR"   # a URI that overrides the one read from apt's sources
UPDATE_TIMEOUT = 600      # apt-get update of one suite: its InRelease and one Packages file
DOWNLOAD_TIMEOUT = 1800   # apt-get download: qemu-user is about 60 MB
LOCAL_TIMEOUT = 120       # apt-cache and dpkg-deb, which do not touch the network
TEMP_PREFIX = ".tmp-"
NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*\Z")          # Debian policy 5.6.1 (package names)
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_-]*\Z")  # suites, architectures, components


class ArchiveError(Exception):
    """A package that cannot be fetched: the package, the suite and apt's own message."""

    def __init__(self, package: str, suite: str, message: str):
        self.package = package
        self.suite = suite
        self.message = message
        super().__init__(f"{package} from {suite}: {message}")


@dataclass(frozen=True)
class Mirror:
    """A Debian archive URI and the keyring that signs its Release files (None: apt's default)."""

    uri: str
    signed_by: str | None = None


def cache_dir() -> Path:
    """The project cache, as build.CACHE_DIR reads it (without importing build's dependencies)."""
    return Path(os.environ.get("MMAP2CONF_CACHE", REPO / ".cache"))


# ---------------------------------------------------------------------------
# The mirror the machine uses

@dataclass(frozen=True)
class _Source:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    signed_by: str | None


def _deb822_sources(text: str) -> list[_Source]:
    """Stanzas of a deb822 .sources file (sources.list(5) DEB822-STYLE FORMAT)."""
    sources = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:      # a continuation line (an embedded key)
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if not fields or fields.get("enabled", "yes").lower() == "no":
            continue
        sources.append(_Source(tuple(fields.get("types", "").split()), tuple(fields.get("uris", "").split()),
                               tuple(fields.get("suites", "").split()), fields.get("signed-by") or None))
    return sources


def _one_line_sources(text: str) -> list[_Source]:
    """Lines of a one-line-style sources.list: deb [options] uri suite [component...]."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"(\S+)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
        if not match:
            continue
        options = dict(option.split("=", 1) for option in (match.group(2) or "").split() if "=" in option)
        sources.append(_Source((match.group(1),), (match.group(3),), (match.group(4),),
                               options.get("signed-by")))
    return sources


def _system_codename(os_release: Path) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", text, re.M)
    return match.group(1) if match and match.group(1) else None


def mirror(suite: str, apt_etc: Path = APT_ETC, os_release: Path = OS_RELEASE) -> Mirror:
    """The archive to fetch ``suite`` from: the machine's own apt source that lists
    that suite, else the one that lists the system's release (VERSION_CODENAME of
    /etc/os-release), which is the main archive rather than debian-security or a
    third party's repository. MMAP2CONF_DEBIAN_MIRROR overrides the URI."""
    override = os.environ.get(MIRROR_VARIABLE)
    if override:
        return Mirror(override.rstrip("/"))
    files = [*sorted((apt_etc / "sources.list.d").glob("*.sources"))]
    one_line = [apt_etc / "sources.list", *sorted((apt_etc / "sources.list.d").glob("*.list"))]
    sources: list[_Source] = []
    for path in files:
        sources += _deb822_sources(path.read_text())
    for path in one_line:
        if path.exists():
            sources += _one_line_sources(path.read_text())
    sources = [s for s in sources if "deb" in s.types and s.uris]
    codename = _system_codename(os_release)
    for wanted in (suite, codename):
        for source in sources:
            if wanted is not None and wanted in source.suites:
                return Mirror(source.uris[0].rstrip("/"), source.signed_by)
    raise ArchiveError("(the mirror)", suite,
                       f"no apt source in {apt_etc} lists {suite!r} or the system's release {codename!r}; "
                       f"set {MIRROR_VARIABLE} to a Debian mirror's URI")


# ---------------------------------------------------------------------------
# A private apt for one suite, architecture and component

class _Apt:
    """apt-get and apt-cache with their own sources.list, lists, cache and status
    under ``state``; nothing of the system's apt state is read or written."""

    def __init__(self, state: Path, suite: str, arch: str, component: str, source: Mirror):
        self.state = state
        self.suite = suite
        for sub in ("lists/partial", "cache/archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()            # an empty dpkg status: nothing is installed
        keyring = source.signed_by
        if keyring is not None and "\n" in keyring:   # a key embedded in the .sources stanza
            (state / "keyring.asc").write_text(keyring + "\n")
            keyring = str(state / "keyring.asc")
        options = f"arch={arch}" + (f" signed-by={keyring}" if keyring else "")
        self.sources_line = f"deb [{options}] {source.uri} {suite} {component}\n"
        self.options = [
            f"-oDir::Etc::SourceList={state / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
            "-oDir::Etc::Preferences=/dev/null", "-oDir::Etc::PreferencesParts=/dev/null",
            f"-oDir::State={state}", f"-oDir::State::Lists={state / 'lists'}",
            f"-oDir::State::status={state / 'status'}", f"-oDir::Cache={state / 'cache'}",
            f"-oAPT::Architecture={arch}", f"-oAPT::Architectures::={arch}",
            "-oDebug::NoLocking=1",               # apt's locks are the system's; ours is _lock
            "-oAPT::Update::Error-Mode=any",      # a failed index download is an error, not a warning
            "-oAPT::Update::Post-Invoke::=", "-oAPT::Update::Post-Invoke-Success::=",
            "-oAcquire::Languages=none",
        ]
        sources = state / "sources.list"
        if not sources.exists() or sources.read_text() != self.sources_line:
            sources.write_text(self.sources_line)   # a new mirror: its lists are not there yet

    def run(self, package: str, tool: str, *args: str, timeout: float,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        try:
            return subprocess.run([tool, *self.options, *args], capture_output=True, text=True,
                                  timeout=timeout, env=env, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise ArchiveError(package, self.suite, f"{tool} {' '.join(args)} took more than {timeout} s")

    def update(self, package: str) -> None:
        result = self.run(package, "apt-get", "update", timeout=UPDATE_TIMEOUT)
        if result.returncode != 0:
            raise ArchiveError(package, self.suite, f"apt-get update failed: {_apt_message(result)}")

    def candidate(self, package: str, version: str | None) -> str | None:
        """The version the local lists hold (the highest, or exactly ``version``), or None."""
        wanted = package if version is None else f"{package}={version}"
        result = self.run(package, "apt-cache", "show", "--no-all-versions", wanted, timeout=LOCAL_TIMEOUT)
        if result.returncode != 0:
            return None
        match = re.search(r"^Version: (\S+)$", result.stdout, re.M)
        return match.group(1) if match else None

    def download(self, package: str, version: str, into: Path) -> Path | str:
        """The downloaded .deb, or apt's message when the download failed."""
        result = self.run(package, "apt-get", "download", f"{package}={version}",
                          timeout=DOWNLOAD_TIMEOUT, cwd=into)
        debs = list(into.glob("*.deb"))
        if result.returncode != 0 or len(debs) != 1:
            return _apt_message(result) or f"apt-get download left {len(debs)} .deb files"
        return debs[0]


def _apt_message(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines()
             if line.startswith(("E:", "Err:")) or line.startswith("  ")]
    return "; ".join(line.strip() for line in lines) or (result.stderr.strip() or result.stdout.strip())[-500:]


# ---------------------------------------------------------------------------
# The cache

def _check(package: str, suite: str, arch: str, component: str) -> None:
    if not NAME.match(package):
        raise ArchiveError(package, suite, "not a Debian package name (Debian policy 5.6.1)")
    for what, value in (("suite", suite), ("architecture", arch), ("component", component)):
        if not WORD.match(value):
            raise ArchiveError(package, suite, f"not a valid {what}: {value!r}")


def _file_version(version: str) -> str:
    return version.replace(":", "%3a")   # as apt-get download names the .deb


@contextmanager
def _lock(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for stale in directory.glob(TEMP_PREFIX + "*"):   # left by a killed fetch: we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _resolve(apt: _Apt, packages: dict[str, str | None], refresh: bool) -> dict[str, str]:
    """A version for each package, from the local lists; one ``apt-get update`` when
    they are missing one (or on ``refresh``)."""
    if not refresh:
        found = {p: apt.candidate(p, v) for p, v in packages.items()}
        if all(found.values()):
            return found   # type: ignore[return-value]
    first = next(iter(packages))
    apt.update(first)
    found = {p: apt.candidate(p, v) for p, v in packages.items()}
    for package, version in found.items():
        if version is None:
            wanted = packages[package]
            what = f"version {wanted} of {package}" if wanted else f"no package {package}"
            result = apt.run(package, "apt-cache", "show", package if wanted is None else f"{package}={wanted}",
                             timeout=LOCAL_TIMEOUT)
            raise ArchiveError(package, apt.suite, f"{what} in {apt.sources_line.strip()!r}: "
                                                   f"{_apt_message(result)}")
    return found   # type: ignore[return-value]


def _unpack(apt: _Apt, versions: dict[str, str], target: Path, manifest: bool) -> None:
    """Download each package and unpack them all into one temporary root, then rename it to ``target``."""
    temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + target.name + ".", dir=target.parent))
    try:
        root = temp / "root"
        root.mkdir()
        for package, version in versions.items():
            downloads = temp / "download"
            downloads.mkdir()
            deb = apt.download(package, version, downloads)
            if isinstance(deb, str):
                raise _DownloadFailed(package, deb)
            result = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True,
                                    text=True, timeout=LOCAL_TIMEOUT)
            if result.returncode != 0:
                raise ArchiveError(package, apt.suite, f"dpkg-deb -x {deb.name}: {result.stderr.strip()}")
            shutil.rmtree(downloads)
        if manifest:
            (root / ".packages").write_text("".join(f"{p} {v}\n" for p, v in versions.items()))
        os.rename(root, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


class _DownloadFailed(Exception):
    def __init__(self, package: str, message: str):
        self.package = package
        self.message = message


def _lists_signature(state: Path) -> list:
    """The lists apt would read: its sources.list (a new mirror is written there) and the
    lists' names, sizes and modification times."""
    lists, sources = state / "lists", state / "sources.list"
    files = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in lists.iterdir()
                   if p.is_file()) if lists.is_dir() else []
    return [sources.read_text() if sources.is_file() else None, *files]


def _memo_key(packages: dict[str, str | None]) -> str:
    return json.dumps(sorted(packages.items()))


def _remembered(state: Path, packages: dict[str, str | None]) -> dict[str, str] | None:
    """The versions an earlier call resolved ``packages`` to, if the lists are unchanged since."""
    try:
        memo = json.loads((state / "resolved.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(memo, dict) or memo.get("lists") != _lists_signature(state):
        return None
    found = memo.get("sets", {}).get(_memo_key(packages))
    return found if isinstance(found, dict) else None


def _remember(state: Path, packages: dict[str, str | None], versions: dict[str, str]) -> None:
    """Called with the lock held; written whole (rename), so a reader without the lock sees
    the old memo or the new one."""
    signature = _lists_signature(state)
    try:
        memo = json.loads((state / "resolved.json").read_text())
    except (OSError, ValueError):
        memo = {}
    sets = memo.get("sets", {}) if isinstance(memo, dict) and memo.get("lists") == signature else {}
    sets[_memo_key(packages)] = versions
    temp = state / f"{TEMP_PREFIX}resolved.json"
    temp.write_text(json.dumps({"lists": signature, "sets": sets}))
    os.replace(temp, state / "resolved.json")


def _fetch(packages: dict[str, str | None], suite: str, arch: str, component: str, refresh: bool,
           cache: Path | None, name) -> Path:
    for package in packages:
        _check(package, suite, arch, component)
    base = (cache or cache_dir()) / "archive" / suite / arch
    state = base / f".apt-{component}"
    # Every version pinned, or resolved before from these lists: an existing root needs no apt.
    known = dict(packages) if all(packages.values()) else None if refresh else _remembered(state, packages)
    if known is not None:
        target = base / name(known)
        if target.is_dir():
            return target
    with _lock(base):
        try:
            source = mirror(suite)
        except ArchiveError as error:
            raise ArchiveError(next(iter(packages)), suite, error.message) from None
        apt = _Apt(state, suite, arch, component, source)
        for attempt in (1, 2):
            versions = _resolve(apt, packages, refresh or attempt == 2)
            target = base / name(versions)
            try:
                if not target.is_dir():
                    _unpack(apt, versions, target, manifest=len(versions) > 1)
                _remember(state, packages, versions)
                return target
            except _DownloadFailed as failure:
                # The lists may name a version the mirror no longer has: refresh once,
                # unless that exact version was asked for.
                if attempt == 2 or packages[failure.package] is not None:
                    raise ArchiveError(failure.package, suite, f"apt-get download "
                                       f"{failure.package}={versions[failure.package]}: {failure.message}")
    raise AssertionError("unreachable")


def fetch(package: str, suite: str, arch: str = "amd64", component: str = "main", *,
          version: str | None = None, refresh: bool = False, cache: Path | None = None) -> Path:
    """Unpack ``package`` of ``suite`` for ``arch`` (its highest version there, or
    ``version``) into the cache, once, and return its root
    ``CACHE/archive/<suite>/<arch>/<package>_<version>/``. ArchiveError names the
    package, the suite and apt's message (an unknown package, suite or version, a
    download that failed)."""
    return _fetch({package: version}, suite, arch, component, refresh, cache,
                  lambda versions: f"{package}_{_file_version(versions[package])}")


def _set_name(versions: dict[str, str]) -> str:
    digest = hashlib.sha256("".join(f"{p}={v}\n" for p, v in sorted(versions.items())).encode()).hexdigest()
    first = next(iter(versions))
    return f"{first}+{len(versions) - 1}_{digest[:16]}"


def fetch_all(packages: list[str] | dict[str, str | None], suite: str, arch: str = "amd64",
              component: str = "main", *, refresh: bool = False, cache: Path | None = None) -> Path:
    """Unpack several packages of one suite and architecture into one root, once,
    and return it: ``CACHE/archive/<suite>/<arch>/<first>+<n>_<digest>/``, the
    digest over every package's name and version, with a ``.packages`` file that
    lists them (``name version`` lines). ``packages`` is a list of names or a
    mapping of names to pinned versions (None: the highest). Dependencies are not
    followed: name every package the root needs."""
    wanted = dict.fromkeys(packages) if isinstance(packages, list) else dict(packages)
    if not wanted:
        raise ArchiveError("(no package)", suite, "fetch_all needs at least one package")
    return _fetch(wanted, suite, arch, component, refresh, cache, _set_name)


def packages_of(root: Path) -> dict[str, str]:
    """The packages and versions unpacked in a root that fetch or fetch_all returned."""
    manifest = root / ".packages"
    if manifest.exists():
        return dict(line.split(" ", 1) for line in manifest.read_text().splitlines())
    package, _, version = root.name.partition("_")
    return {package: version.replace("%3a", ":")}
