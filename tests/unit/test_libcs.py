"""Libc builds as flavours (mmap2conf/libcs.py): the layouts a build directory may
have, the checks that name what is wrong with one, the compile command that uses
nothing of the compiler's own libc, and --libc-prefix given Debian 13's i386
glibc package as a plain directory, beside a bad one.

The Debian packages are the ones libcs/ names, fetched into the cache by the
bootstrap (a fresh machine fetches them here once)."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mmap2conf import build, libcs
from mmap2conf.model import REPO, load_all


def configs_with_libcs():
    configs = load_all()
    libcs.attach(configs, libcs.load(configs))
    return configs


CONFIGS = configs_with_libcs()


def archive_root(config, name):
    return CONFIGS[config].flavours[name].build.root()


@pytest.fixture(scope="module")
def trixie_i386():
    """Debian 13's libc6-dev-i386-cross and libc6-i386-cross, unpacked: usr/i686-linux-gnu/{include,lib}."""
    return archive_root("i386", "glibc-2.41")


@pytest.fixture(scope="module")
def musl_i386():
    """Debian 12's musl-dev for i386, unpacked: usr/include/i386-linux-musl, usr/lib/i386-linux-musl."""
    return archive_root("i386", "musl-1.2.3")


def prefix(tmp_path, include=None, lib=None, name="d"):
    """A build directory DIR/include + DIR/lib, each a link to a real directory or absent."""
    root = tmp_path / name
    root.mkdir()
    if include is not None:
        (root / "include").symlink_to(include)
    if lib is not None:
        (root / "lib").symlink_to(lib)
    return root


def build_of(root, config="i386"):
    return libcs.LibcBuild(name="mine", config=config, origin=f"--libc-prefix mine={config}:{root}",
                           libc=libcs.detect_libc(root, CONFIGS[config]), directory=root, asked=True)


# ---------------------------------------------------------------------------
# Definitions

def test_the_data_names_each_release_by_its_libc_and_release():
    builds = libcs.load(load_all())
    assert builds and all(b.name == f"{b.libc}-{b.release}" for b in builds)
    assert {b.name for b in builds} == {"glibc-2.41", "glibc-2.40", "musl-1.2.3"}
    assert {b.config for b in builds if b.name == "glibc-2.40"} == {"mips", "mipsel", "mips64"}


def test_a_data_entry_may_name_a_build_directory(tmp_path, trixie_i386):
    (tmp_path / "libcs").mkdir()
    (tmp_path / "libcs" / "mine.toml").write_text(
        f'[[flavour]]\nname = "glibc-main"\nconfig = "i386"\ndir = "{trixie_i386}"\n')
    [found] = libcs.load(load_all(), tmp_path / "libcs")
    assert (found.name, found.config, found.libc, found.directory, found.asked) == \
        ("glibc-main", "i386", "glibc", trixie_i386, True)
    assert found.origin.endswith("mine.toml:1")


@pytest.mark.parametrize("entry, message", [
    ('name = "mine"\nconfig = "i386"\nlibc = "musl"\ndir = "TRIXIE"', "musl stated, but the headers under"),
    ('name = "glibc-2.41"\nconfig = "vax"\ndir = "/"', "unknown configuration 'vax'"),
    ('name = "glibc-9"\nconfig = "i386"\nlibc = "glibc"\nsuite = "trixie"\narch = "amd64"\n'
     'packages = ["libc6-dev-i386-cross"]\nrelease = "2.41"', "named by its libc and release: glibc-2.41"),
    ('name = "glibc-2.41"\nconfig = "i386"\nlibc = "glibc"\nsuite = "trixie"\narch = "amd64"\n'
     'packages = []\nrelease = "2.41"', "packages: expected a non-empty list"),
    ('name = "glibc-2.41"\nconfig = "i386"\nlibc = "glibc"\nsuite = "trixie"\narch = "amd64"\n'
     'packages = ["x"]\nrelease = "2.41"\ncolour = "blue"', "colour: unknown key"),
    ('name = "glibc-2.41"\nconfig = "i386"\nsuite = "trixie"\narch = "amd64"\npackages = ["x"]\n'
     'release = "2.41"', "libc: missing"),
])
def test_a_malformed_data_entry_is_an_error_naming_file_and_key(tmp_path, trixie_i386, entry, message):
    from mmap2conf.model import ModelError
    (tmp_path / "libcs").mkdir()
    (tmp_path / "libcs" / "bad.toml").write_text("[[flavour]]\n" + entry.replace("TRIXIE", str(trixie_i386)) + "\n")
    with pytest.raises((ModelError, libcs.LibcUsageError)) as error:
        libcs.load(load_all(), tmp_path / "libcs")
    assert "bad.toml" in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("mine", "expected NAME=CONFIG:DIR"),
    ("mine=i386", "expected NAME=CONFIG:DIR"),
    ("mine=i386:", "expected NAME=CONFIG:DIR"),
    ("Mine=i386:/", "flavour name 'Mine' must be lower-case"),
    ("raw=i386:/", "flavour name 'raw'"),
    ("mine=vax:/", "unknown configuration 'vax'; valid: aarch64"),
    ("mine=i386:/no/such/directory", "/no/such/directory is not a directory"),
])
def test_a_prefix_is_a_name_a_configuration_and_a_directory(text, message):
    with pytest.raises(libcs.LibcUsageError, match="--libc-prefix") as error:
        libcs.parse_prefix(text, load_all())
    assert message in str(error.value)


def test_a_prefix_may_hold_any_character_in_its_directory(tmp_path):
    odd = tmp_path / "a=b:c"
    odd.mkdir()
    found = libcs.parse_prefix(f"mine=armhf:{odd}", load_all())
    assert (found.name, found.config, found.directory, found.asked) == ("mine", "armhf", odd, True)


def test_a_prefix_adds_a_flavour_and_never_replaces_one(tmp_path):
    configs = configs_with_libcs()
    for name in ("glibc", "musl-1.2.3"):
        with pytest.raises(libcs.LibcUsageError, match=f"i386 already has a flavour '{name}'"):
            libcs.attach(configs, [libcs.parse_prefix(f"{name}=i386:{tmp_path}", configs)])


# ---------------------------------------------------------------------------
# Layouts

def fake_glibc(include: Path, lib: Path):
    include.mkdir(parents=True)
    (include / "features.h").write_text("#define __GLIBC__ 2\n#define __GLIBC_MINOR__ 99\n")
    lib.mkdir(parents=True)
    (lib / "libc.a").write_bytes(b"!<arch>\n")


@pytest.mark.parametrize("include, lib, words", [
    ("include", "lib", "DIR/include + DIR/lib"),
    ("usr/include", "usr/lib", "DIR/usr/include + DIR/usr/lib"),
    ("usr/i686-linux-gnu/include", "usr/i686-linux-gnu/lib", "Debian cross package"),
    ("usr/include/i386-linux-musl", "usr/lib/i386-linux-musl", "Debian multiarch package"),
])
def test_each_accepted_layout_is_found(tmp_path, include, lib, words):
    fake_glibc(tmp_path / include, tmp_path / lib)
    layout = libcs.choose_layout(tmp_path, CONFIGS["i386"])
    assert (layout.include, layout.lib) == (tmp_path / include, tmp_path / lib)
    assert words in layout.words
    assert libcs.detect_libc(tmp_path, CONFIGS["i386"]) == "glibc"


def test_the_cross_package_layout_follows_the_compilers_multilib_directory(tmp_path):
    fake_glibc(tmp_path / "usr/sparc64-linux-gnu/include", tmp_path / "usr/sparc64-linux-gnu/lib32")
    assert libcs.choose_layout(tmp_path, CONFIGS["sparc32plus"]).lib == tmp_path / "usr/sparc64-linux-gnu/lib32"
    assert libcs.cross_triplet(CONFIGS["hexagon"]) is None     # zig only: no Debian cross layout


# ---------------------------------------------------------------------------
# The packages of libcs/ are builds like any other

def test_debian_13s_package_directory_is_a_cross_package_layout(trixie_i386):
    root, layout, facts = libcs.check(build_of(trixie_i386), CONFIGS["i386"])
    assert layout.include == trixie_i386 / "usr/i686-linux-gnu/include"
    assert (facts.libc, facts.release, facts.member, facts.machine) == ("glibc", "2.41", "version.o", "EM_386")


def test_debian_12s_musl_is_a_multiarch_layout(musl_i386):
    _, layout, facts = libcs.check(build_of(musl_i386), CONFIGS["i386"])
    assert layout.lib == musl_i386 / "usr/lib/i386-linux-musl"
    assert (facts.libc, facts.release, facts.member) == ("musl", "1.2.3", "version.lo")


def test_the_compile_command_uses_nothing_of_the_compilers_own_libc(trixie_i386, musl_i386):
    for name, root in (("glibc-2.41", trixie_i386), ("musl-1.2.3", musl_i386)):
        command = build.compile_command(CONFIGS["i386"], name, Path("OUT"))
        assert "-nostdinc" in command and "-nostdlib" in command, name
        libs = [word for word in command if word.endswith(("libc.a", "crt1.o", "crti.o", "crtn.o"))]
        assert len(libs) == 4 and all(word.startswith(str(root)) for word in libs), (name, libs)
        includes = [command[i + 1] for i, word in enumerate(command) if word == "-isystem"]
        assert not any(word.startswith(("/usr/i686-linux-gnu", "/usr/include")) for word in includes), includes
        assert f"-DHELPER_LIBC_{name.split('-')[0].upper()}" in command
    zig = build.compile_command(CONFIGS["i386"], "musl-1.2.3", Path("OUT"))
    assert "-rtlib=compiler-rt" in zig and zig[:4] == [sys.executable, "-m", "ziglang", "cc"]


def test_a_release_the_archive_does_not_hold_is_an_error(trixie_i386):
    entry = replace(CONFIGS["i386"].flavours["glibc-2.41"].build, release="2.42")
    with pytest.raises(libcs.LibcError, match=r"holds glibc 2\.41 .*the entry names 2\.42"):
        libcs.check(entry, CONFIGS["i386"])


# ---------------------------------------------------------------------------
# Bad input: each a clear error naming the path and what is missing

def test_no_include_directory(tmp_path, trixie_i386):
    root = prefix(tmp_path, lib=trixie_i386 / "usr/i686-linux-gnu/lib")
    with pytest.raises(libcs.LibcError) as error:
        libcs.check(build_of(root), CONFIGS["i386"])
    assert f"{root}: no include directory: {root}/lib/libc.a exists, but there is no {root}/include" in str(error.value)


def test_no_static_archive(tmp_path, trixie_i386):
    root = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include")
    with pytest.raises(libcs.LibcError) as error:
        libcs.check(build_of(root), CONFIGS["i386"])
    assert f"{root}: no static libc archive: {root}/include exists, but there is no {root}/lib/libc.a" \
        in str(error.value)


def test_an_empty_directory_says_every_place_it_looked(tmp_path):
    with pytest.raises(libcs.LibcError) as error:
        libcs.check(build_of(tmp_path), CONFIGS["i386"])
    text = str(error.value)
    assert "no include directory and no libc.a" in text
    assert f"{tmp_path}/usr/i686-linux-gnu/include and {tmp_path}/usr/i686-linux-gnu/lib/libc.a" in text


def test_no_start_files(tmp_path, trixie_i386):
    lib = tmp_path / "lib-without-crt"
    lib.mkdir()
    (lib / "libc.a").symlink_to(trixie_i386 / "usr/i686-linux-gnu/lib/libc.a")
    root = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include", lib=lib)
    with pytest.raises(libcs.LibcError, match=f"no {root}/lib/crt1.o beside {root}/lib/libc.a"):
        libcs.check(build_of(root), CONFIGS["i386"])


def test_an_archive_of_another_abi(tmp_path, trixie_i386):
    root = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include", lib=Path("/usr/arm-linux-gnueabihf/lib"))
    with pytest.raises(libcs.LibcError) as error:
        libcs.check(build_of(root), CONFIGS["i386"])
    assert (f"{root}/lib/libc.a: its member version.o is EM_ARM, 32-bit, little-endian, but i386 is EM_386"
            in str(error.value)) and "an archive for another ABI" in str(error.value)
    # mips and mipsel differ in byte order only
    mips = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include", lib=Path("/usr/mips-linux-gnu/lib"),
                  name="mips")
    with pytest.raises(libcs.LibcError, match="EM_MIPS, 32-bit, big-endian, but mipsel is EM_MIPS, 32-bit, little"):
        libcs.check(build_of(mips, "mipsel"), CONFIGS["mipsel"])


def test_headers_and_archive_of_different_releases(tmp_path, trixie_i386):
    root = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include", lib=Path("/usr/i686-linux-gnu/lib"))
    with pytest.raises(libcs.LibcError) as error:
        libcs.check(build_of(root), CONFIGS["i386"])
    assert (f"headers and archive of different releases: {root}/include/features.h is glibc 2.41, "
            f"{root}/lib/libc.a is glibc 2.36 (version.o)") in str(error.value)


def test_headers_and_archive_of_different_libcs(tmp_path, trixie_i386, musl_i386):
    root = prefix(tmp_path, include=musl_i386 / "usr/include/i386-linux-musl", lib=trixie_i386 / "usr/i686-linux-gnu/lib")
    with pytest.raises(libcs.LibcError, match=f"{root}/include holds musl's headers, but {root}/lib/libc.a is glibc's"):
        libcs.check(build_of(root), CONFIGS["i386"])


def test_a_libc_a_that_is_not_an_archive(tmp_path, trixie_i386):
    lib = tmp_path / "text"
    lib.mkdir()
    (lib / "libc.a").write_text("INPUT(-lc_real)\n")
    for name in libcs.START_FILES:
        (lib / name).write_bytes(b"")
    root = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include", lib=lib)
    with pytest.raises(libcs.LibcError, match=f"{root}/lib/libc.a: not an ar archive"):
        libcs.check(build_of(root), CONFIGS["i386"])


def test_a_link_error_names_the_build_and_gives_the_linkers_message(tmp_path, trixie_i386, monkeypatch):
    """A libc.a of glibc 2.41's version.o alone: it passes the checks, and the link fails."""
    lib = tmp_path / "lib-version-only"
    lib.mkdir()
    real = trixie_i386 / "usr/i686-linux-gnu/lib"
    subprocess.run(["i686-linux-gnu-ar", "x", str(real / "libc.a"), "version.o"], cwd=lib, check=True)
    subprocess.run(["i686-linux-gnu-ar", "rcs", "libc.a", "version.o"], cwd=lib, check=True)
    for name in libcs.START_FILES:
        (lib / name).symlink_to(real / name)
    root = prefix(tmp_path, include=trixie_i386 / "usr/i686-linux-gnu/include", lib=lib)
    configs = configs_with_libcs()
    libcs.attach(configs, [build_of(root)])
    monkeypatch.setattr(build, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(build.BuildError) as error:
        build.helper_path(configs["i386"], "mine")
    text = str(error.value)
    assert f"building the mine helper for i386 against the glibc 2.41 build in {root}" in text
    assert "undefined reference to" in text and "mmap64" in text
    assert not list((tmp_path / "cache").glob("i386-mine-*")), "a failed build leaves no helper"
    with pytest.raises(build.BuildError) as again:   # once per run: every session asks
        build.helper_path(configs["i386"], "mine")
    assert again.value is error.value


# ---------------------------------------------------------------------------
# --libc-prefix end to end: Debian 13's package directory as a plain directory, beside a bad one

def test_a_prefix_flavour_runs_beside_the_others_and_a_bad_one_is_an_error(tmp_path, trixie_i386):
    bad = tmp_path / "no-include"
    (bad / "lib").mkdir(parents=True)
    (bad / "lib" / "libc.a").symlink_to(trixie_i386 / "usr/i686-linux-gnu/lib/libc.a")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider",
         "--arch", "i386", "--runner", "native", "--libc", "glibc", "--libc-prefix", f"mine=i386:{trixie_i386}",
         "--libc-prefix", f"broken=i386:{bad}", "--conformance-json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    records = json.loads(report.read_text())["records"]
    glibc = [r for r in records if r["flavour"] == "glibc"]
    if all(r["outcome"] == "skipped" for r in glibc):
        pytest.skip(f"the host kernel cannot run i386 helpers: {glibc[0]['reason']}")
    mine = [r for r in records if r["flavour"] == "mine"]
    broken = [r for r in records if r["flavour"] == "broken"]
    assert mine and {r["outcome"] for r in mine} <= {"passed", "n.a."}, result.stdout[-3000:]
    assert {r["properties"]["libc_version"] for r in mine if r["properties"]} == {"2.41"}
    assert {r["outcome"] for r in glibc} <= {"passed", "n.a."}
    assert broken and {r["outcome"] for r in broken} == {"error"}
    assert all(f"{bad}: no include directory: {bad}/lib/libc.a exists" in r["reason"]
               and r["reason"].endswith("(asked for by name)") for r in broken), broken[0]["reason"]
    assert result.returncode == 6, result.stdout[-2000:]
    assert "i386@native glibc: glibc (2.36) vs mine (2.41): 0 case(s) differ" in result.stdout


def test_the_docker_runner_runs_the_images_releases_but_no_host_directory(tmp_path):
    from mmap2conf.runners import Options, RunnerUnavailable
    from mmap2conf.runners.docker import Docker
    configs = configs_with_libcs()
    libcs.attach(configs, [libcs.parse_prefix(f"mine=i386:{tmp_path}", configs)])
    runner = Docker(configs["i386"], "docker", True, Options(image="mmap2-conformance"))
    assert runner.helper("glibc-2.41") == "i386/glibc-2.41"
    with pytest.raises(RunnerUnavailable, match=f"the mine flavour's build \\({tmp_path}\\) is on the host"):
        runner.helper("mine")


@pytest.mark.parametrize("options, message", [
    (["--libc-prefix", "mine=vax:/"], "unknown configuration 'vax'"),
    (["--libc-prefix", "glibc=i386:/"], "i386 already has a flavour 'glibc'"),
    (["--arch", "armhf", "--libc-prefix", "mine=i386:/"], "--libc-prefix mine=i386:/: --arch leaves out i386"),
    (["--libc", "glibc-2.99"], "unknown flavour glibc-2.99; valid: glibc, glibc-2.40, glibc-2.41, musl"),
])
def test_a_bad_prefix_option_is_a_usage_error(options, message):
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider",
                             "--collect-only", *options], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4 and message in result.stderr, (result.returncode, result.stderr[-1000:])
