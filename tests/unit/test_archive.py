"""archive.py: Debian packages fetched from the machine's own mirror into a cache.

The mirror tests read made-up apt source files. The fetch tests really download
small packages (hello, cowsay: tens of kilobytes, plus the suite's Packages
index) into a private cache, and check the second fetch inside a network
namespace with no network at all (``unshare -rn``), so "no network access" is
observed, not assumed.
"""
import gzip
import os
import shutil
import subprocess
import sys

import pytest

from mmap2conf.archive import (MIRROR_VARIABLE, TEMP_PREFIX, ArchiveError, Mirror, fetch, fetch_all,
                               mirror, packages_of)
from mmap2conf.model import REPO

SUITE = "bookworm"   # a stable release: hello and cowsay stay in it


def write_etc(tmp_path, sources=None, one_line=None, codename="bookworm"):
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources is not None:
        (etc / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line is not None:
        (etc / "sources.list").write_text(one_line)
    os_release = tmp_path / "os-release"
    os_release.write_text(f'PRETTY_NAME="Debian"\nVERSION_CODENAME={codename}\n')
    return etc, os_release


DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.invalid/debian
Suites: trixie
Enabled: no
"""


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv(MIRROR_VARIABLE, raising=False)


def test_the_mirror_is_the_source_that_lists_the_suite_else_the_systems_release(tmp_path):
    etc, os_release = write_etc(tmp_path, sources=DEB822)
    main = Mirror("http://mirror.invalid/debian", "/usr/share/keyrings/debian-archive-keyring.gpg")
    assert mirror("bookworm-updates", etc, os_release) == main
    assert mirror("bookworm-security", etc, os_release) == Mirror("http://security.invalid/debian-security")
    # trixie is listed only by a disabled stanza: the main archive of the system's release serves it
    assert mirror("trixie", etc, os_release) == main
    assert mirror("bookworm-backports", etc, os_release) == main


def test_one_line_sources_give_the_uri_and_the_signed_by_option(tmp_path):
    etc, os_release = write_etc(tmp_path, one_line=(
        "# deb http://old.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian/ bookworm main contrib\n"))
    assert mirror("trixie", etc, os_release) == Mirror("http://mirror.invalid/debian", "/k.gpg")


def test_no_debian_source_is_an_error_that_says_how_to_name_one(tmp_path):
    etc, os_release = write_etc(tmp_path, one_line="deb http://vendor.invalid/repo nodistro main\n")
    with pytest.raises(ArchiveError, match=MIRROR_VARIABLE):
        mirror("trixie", etc, os_release)


def test_the_environment_overrides_the_mirror(tmp_path, monkeypatch):
    etc, os_release = write_etc(tmp_path, sources=DEB822)
    monkeypatch.setenv(MIRROR_VARIABLE, "http://other.invalid/debian/")
    assert mirror("trixie", etc, os_release) == Mirror("http://other.invalid/debian")


def test_names_that_are_not_debian_names_are_refused_before_apt_runs(tmp_path):
    with pytest.raises(ArchiveError, match="not a Debian package name"):
        fetch("../hello", SUITE, cache=tmp_path)
    with pytest.raises(ArchiveError, match="not a valid suite"):
        fetch("hello", "../bookworm", cache=tmp_path)
    assert not (tmp_path / "archive").exists()


# ---------------------------------------------------------------------------
# Real downloads from the machine's mirror

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def elf_machine(path):
    """e_machine of an ELF file (the byte order from EI_DATA)."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def changelog_version(root, package):
    """The version on the first line of the package's Debian changelog: 'hello (2.10-3) unstable; ...'."""
    doc = root / "usr" / "share" / "doc" / package / "changelog.Debian.gz"
    first = gzip.decompress(doc.read_bytes()).decode().splitlines()[0]
    return first.split("(", 1)[1].split(")", 1)[0]


def offline(code, cache):
    """Run python code in a network namespace with no interface up but loopback: no network."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.skip("unshare -rn (a user and network namespace) is not available here")
    return subprocess.run(["unshare", "-rn", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "MMAP2CONF_CACHE": str(cache)})


def test_fetch_unpacks_the_package_once_keyed_by_its_version(cache):
    stale = cache / "archive" / SUITE / "amd64" / f"{TEMP_PREFIX}hello_x.interrupted"
    stale.mkdir(parents=True)
    root = fetch("hello", SUITE, cache=cache)
    version = changelog_version(root, "hello")
    assert root == cache / "archive" / SUITE / "amd64" / f"hello_{version.replace(':', '%3a')}"
    assert elf_machine(root / "usr" / "bin" / "hello") == 62       # EM_X86_64
    assert packages_of(root) == {"hello": version}
    # the stale temporary directory of a killed fetch is gone, and this fetch left none
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    # the system's apt state is not where the lists went
    assert list((root.parent / ".apt-main" / "lists").glob("*_dists_bookworm_InRelease"))

    again = offline(f"from mmap2conf.archive import fetch; print(fetch('hello', {SUITE!r}))", cache)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(root)
    pinned = offline(f"from mmap2conf.archive import fetch; "
                     f"print(fetch('hello', {SUITE!r}, version={version!r}))", cache)
    assert pinned.stdout.strip() == str(root), pinned.stderr


def test_a_resolution_is_remembered_until_the_lists_change(cache, monkeypatch):
    root = fetch("hello", SUITE, cache=cache)

    def no_apt(self, package, tool, *args, **kwargs):
        raise AssertionError(f"{tool} {' '.join(args)} ran")

    monkeypatch.setattr("mmap2conf.archive._Apt.run", no_apt)
    assert fetch("hello", SUITE, cache=cache) == root   # no apt-cache: the memo named the root
    lists = next((root.parent / ".apt-main" / "lists").glob("*_Packages*"))
    os.utime(lists, ns=(lists.stat().st_atime_ns, lists.stat().st_mtime_ns + 1))
    with pytest.raises(AssertionError, match="apt-cache show"):
        fetch("hello", SUITE, cache=cache)               # other lists: resolved again


def test_fetch_of_another_architecture_unpacks_that_architectures_binary(cache):
    root = fetch("hello", SUITE, "armhf", cache=cache)
    assert root.parent == cache / "archive" / SUITE / "armhf"
    assert elf_machine(root / "usr" / "bin" / "hello") == 40       # EM_ARM


def test_fetch_all_unpacks_named_packages_into_one_root(cache):
    root = fetch_all(["hello", "cowsay"], SUITE, cache=cache)
    versions = packages_of(root)
    assert versions == {"hello": changelog_version(root, "hello"), "cowsay": changelog_version(root, "cowsay")}
    assert (root / "usr" / "bin" / "hello").is_file() and (root / "usr" / "games" / "cowsay").is_file()
    assert root.name.startswith("hello+1_")
    assert fetch_all({"hello": versions["hello"], "cowsay": versions["cowsay"]}, SUITE, cache=cache) == root


def test_an_unknown_package_is_an_error_with_the_package_the_suite_and_apts_message(cache):
    with pytest.raises(ArchiveError) as error:
        fetch("no-such-package-mmap2conf", SUITE, cache=cache)
    assert error.value.package == "no-such-package-mmap2conf" and error.value.suite == SUITE
    assert "no package no-such-package-mmap2conf" in str(error.value)
    assert "No packages found" in error.value.message                 # apt-cache's own words


def test_an_unknown_version_is_an_error(cache):
    with pytest.raises(ArchiveError, match="version 0.0-0 of hello"):
        fetch("hello", SUITE, version="0.0-0", cache=cache)


def test_an_unknown_suite_is_an_error_with_apts_message(cache):
    with pytest.raises(ArchiveError) as error:
        fetch("hello", "no-such-suite", cache=cache)
    assert error.value.suite == "no-such-suite"
    assert "apt-get update failed" in str(error.value)
    assert "does not have a Release file" in error.value.message
    assert not list((cache / "archive" / "no-such-suite" / "amd64").glob("hello_*"))
