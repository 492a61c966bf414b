"""The kernel runner without booting anything: the initramfs (a newc cpio read
back by an independent reader), the kernel's version and image kind from its
image, the kernel file lookup, the qemu-system command line of the machines of
machines/ with Debian's real kernels, the machine files' keys, and the
bootstrap's packages."""
import gzip
import lzma
import os
import stat
import zlib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mmap2conf import bootstrap, engine, kernels, machines, runners
from mmap2conf.cases import Case
from mmap2conf.model import ModelError, load_all
from mmap2conf.runners.linux import Linux

HEADER = 110  # "070701" and 13 fields of 8 hex digits


def read_newc(archive: bytes) -> list[dict]:
    """A newc reader written from the format (the kernel's init/initramfs.c reads the
    same): header and name padded to 4 bytes, then the data padded to 4 bytes."""
    members, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701", f"no newc magic at {pos}"
        fields = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmajor, rminor, namesize, check = fields
        name = archive[pos + HEADER:pos + HEADER + namesize]
        assert name.endswith(b"\0") and b"\0" not in name[:-1]
        start = pos + HEADER + namesize
        start += -start % 4
        body = archive[start:start + size]
        pos = start + size
        pos += -pos % 4
        if name == b"TRAILER!!!\0":
            assert pos == len(archive), "bytes after the trailer"
            return members
        members.append(dict(name=name[:-1].decode(), ino=ino, mode=mode, uid=uid, gid=gid, nlink=nlink,
                            mtime=mtime, rdev=(rmajor, rminor), body=body, check=check))


def test_the_initramfs_holds_init_the_console_dev_zero_and_the_scratch_directories():
    init = b"\x7fELF" + bytes(range(256)) * 3 + b"odd"
    members = {m["name"]: m for m in read_newc(kernels.newc_archive(init))}
    assert set(members) == {"dev", "tmp", "noexec", "h", "dev/console", "dev/zero", "init"}
    assert members["noexec"]["mode"] == stat.S_IFDIR | 0o1777
    assert members["init"]["body"] == init
    assert members["init"]["mode"] == stat.S_IFREG | 0o755
    assert members["dev"]["mode"] == stat.S_IFDIR | 0o755 and members["dev"]["nlink"] == 2
    assert members["tmp"]["mode"] == stat.S_IFDIR | 0o1777
    assert members["dev/console"]["mode"] == stat.S_IFCHR | 0o600
    assert members["dev/console"]["rdev"] == (5, 1)
    assert members["dev/zero"]["rdev"] == (1, 5)
    names = list(members)
    assert names.index("dev") < names.index("dev/console"), "a directory comes before its entries"
    assert len({m["ino"] for m in members.values()}) == len(members)
    assert all(m["uid"] == m["gid"] == m["mtime"] == m["check"] == 0 for m in members.values())


def test_a_dispatching_inits_initramfs_holds_the_helpers_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr("mmap2conf.build.CACHE_DIR", tmp_path / "cache")
    init, other = tmp_path / "init", tmp_path / "other"
    init.write_bytes(b"helper one")
    other.write_bytes(b"helper two")
    path = kernels.initramfs_for(init, (init, other))
    members = {m["name"]: m for m in read_newc(gzip.decompress(path.read_bytes()))}
    assert [kernels.guest_path(0), kernels.guest_path(1)] == ["/h/0", "/h/1"]
    assert members["init"]["body"] == members["h/0"]["body"] == b"helper one"
    assert members["h/1"]["body"] == b"helper two" and members["h/1"]["mode"] == stat.S_IFREG | 0o755
    assert path not in (kernels.initramfs_for(init), kernels.initramfs_for(init, (init,)),
                        kernels.initramfs_for(init, (other, init))), "keyed by every helper and their order"


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5])
def test_every_member_is_padded_to_four_bytes(size):
    entry = kernels.newc_entry("x" * size, stat.S_IFREG | 0o644, b"d" * size, ino=1)
    assert len(entry) % 4 == 0
    assert (HEADER + size + 1 + -(HEADER + size + 1) % 4) % 4 == 0


def test_the_initramfs_is_gzip_and_reproducible():
    first, second = kernels.initramfs_bytes(b"helper"), kernels.initramfs_bytes(b"helper")
    assert first == second, "no timestamps: equal helpers give equal archives"
    assert first[:2] == b"\x1f\x8b"
    assert read_newc(gzip.decompress(first))[-1]["body"] == b"helper"


def test_the_initramfs_is_cached_by_the_helpers_content(tmp_path, monkeypatch):
    monkeypatch.setattr("mmap2conf.build.CACHE_DIR", tmp_path / "cache")
    one, two, same = tmp_path / "one", tmp_path / "two", tmp_path / "same"
    one.write_bytes(b"helper one")
    two.write_bytes(b"helper two")
    same.write_bytes(b"helper one")
    path = kernels.initramfs_for(one)
    assert path.parent == tmp_path / "cache" / "initramfs"
    assert kernels.initramfs_for(same) == path
    assert kernels.initramfs_for(two) != path
    assert read_newc(gzip.decompress(path.read_bytes()))[-1]["body"] == b"helper one"
    assert not list(path.parent.glob("*.partial"))


DEBIAN_BANNER = (b"Linux version 6.1.0-50-686 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) "
                 b"12.2.0, GNU ld (GNU Binutils for Debian) 2.40) # SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)\n")


@pytest.mark.parametrize("banner, version", [
    (DEBIAN_BANNER, "6.1.176+6.1.0.50.686"),
    (b"Linux version 6.1.0-50-4kc-malta (x@y) (gcc) #1 SMP Debian 6.1.176-1 (2026-07-02)\n",
     "6.1.176+6.1.0.50.4kc.malta"),
    (b"Linux version 6.18.0 (me@host) (gcc 14) #1 SMP Mon Nov 24 10:00:00 UTC 2026\n", "6.18.0+6.18.0"),
    (b"Linux version 6.9.0-rc1-custom (me@host) (gcc 14) #3 SMP\n", "6.9.0rc1+6.9.0.rc1.custom"),
    (b"Linux version 6.13.0-rc1+ (me@host) (gcc 14) #3 SMP\n", "6.13.0rc1+6.13.0.rc1"),
    (b"Linux version 7.2.13+deb14-armmp (x@y) (gcc) #1 SMP\n", "7.2.13+7.2.13.deb14.armmp"),
])
def test_the_version_comes_from_the_banner_and_is_pep_440(banner, version):
    assert kernels.banner_version(banner) == version
    Version(version)  # known-issues.toml matches it with PEP 440 specifiers


def test_a_debian_kernel_version_matches_a_release_specifier():
    version = Version(kernels.banner_version(DEBIAN_BANNER))
    assert version in SpecifierSet("==6.1.176") and version in SpecifierSet(">=6.1,<6.2")
    assert version not in SpecifierSet("==6.1.175")
    # A release candidate of a user's own build still matches a range (as a pre-release).
    rc = Version(kernels.banner_version(b"Linux version 6.13.0-rc1+ (me@host) (gcc 14) #3 SMP\n"))
    assert SpecifierSet(">=6.12").contains(rc, prereleases=True)


@pytest.mark.parametrize("wrap", [
    lambda banner: b"setup code " + banner + b"\0rest",
    lambda banner: b"boot stub \xfd7zXZ\x00 not xz" + lzma.compress(b"\0" * 100 + banner + b"\0" * 100),
    lambda banner: b"MZ stub" + gzip.compress(b"kernel text " + banner + b"\0more"),
])
def test_the_banner_is_found_in_the_clear_or_in_a_compressed_payload(wrap):
    assert kernels.image_banner(wrap(DEBIAN_BANNER)).rstrip(b"\n") == DEBIAN_BANNER.rstrip(b"\n")


def test_an_image_without_a_banner_is_a_kernel_error():
    with pytest.raises(kernels.KernelError, match="no 'Linux version' banner"):
        kernels.image_banner(b"nothing" + zlib.compress(b"here either"))


def test_the_identity_is_cached_by_the_kernel_files_content(tmp_path, monkeypatch):
    monkeypatch.setattr("mmap2conf.build.CACHE_DIR", tmp_path / "cache")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\x7fELF\x01\x01" + b"\0" * 10 + b"\x02\0\x08\0" + lzma.compress(DEBIAN_BANNER))
    identity = kernels.kernel_identity(kernel)
    assert identity["release"] == "6.1.0-50-686" and identity["image_kind"] == "mips-elf-32"
    cached = list((tmp_path / "cache" / "kernels").glob("*.json"))
    cached[0].write_text('{"release": "9.9.9"}')  # the cache answers; the image is not read again
    assert kernels.kernel_identity(kernel) == {"release": "9.9.9"}


CONFIG_TEXT = ("#\n# Linux/arm 6.1.176 Kernel Configuration\n#\nCONFIG_MMU=y\nCONFIG_VMSPLIT_2G=y\n"
               "CONFIG_PAGE_OFFSET=0x80000000\n# CONFIG_KASAN is not set\nCONFIG_LOCALVERSION=\"\"\n")


def ikconfig(text: str = CONFIG_TEXT) -> bytes:
    """kernel/configs.c's embedded configuration: the marker, the gzip'd .config, the end marker."""
    return b"IKCFG_ST" + gzip.compress(text.encode()) + b"IKCFG_ED"


@pytest.mark.parametrize("wrap", [
    lambda data: b"vmlinux text " + data + b"\0more",
    lambda data: b"zImage decompressor \xfd7zXZ\x00 not xz" + lzma.compress(b"\0" * 64 + data),
    lambda data: b"MZ stub" + gzip.compress(b"kernel text IKCFG_ST not gzip " + data),
])
def test_an_embedded_configuration_is_found_in_the_clear_or_in_a_compressed_payload(wrap):
    """scripts/extract-ikconfig's search, on images built here (no cached kernel has
    CONFIG_IKCONFIG): a marker not followed by a gzip stream is passed over."""
    text = kernels.embedded_config(wrap(ikconfig()))
    assert text == CONFIG_TEXT
    assert kernels.parse_config(text) == {"CONFIG_MMU": "y", "CONFIG_VMSPLIT_2G": "y", "CONFIG_PAGE_OFFSET": "0x80000000",
                                          "CONFIG_KASAN": "n", "CONFIG_LOCALVERSION": '""'}


def test_debians_kernels_embed_no_configuration():
    for name in ("i386", "armhf"):
        for runner in _linux_systems(name)[0]:
            assert kernels.embedded_config(runner.kernel().read_bytes()) is None, runner.name
            assert kernels.image_config(runner.kernel()) is None, runner.name


def test_the_configuration_of_a_machines_kernel_is_its_linux_headers_packages():
    """i386-pc's 686 kernel: the .config of linux-headers-6.1.0-50-686 (the real package,
    fetched into the cache), for the release and Debian version the kernel answers;
    another kernel's answer is an error that names both."""
    from mmap2conf.sut import SystemUnderTestError, measure
    runner = next(s for s in _linux_systems("i386")[0] if s.machine.name == "i386-pc")
    stated = runner.stated()
    assert stated["kernel_config_for"] == {"release": "6.1.0-50-686", "version": "6.1.176-1"}
    assert stated["kernel_config"]["CONFIG_PAGE_OFFSET"] == "0xC0000000"
    assert stated["kernel_config_source"] == ("usr/src/linux-headers-6.1.0-50-686/.config of "
                                              "linux-headers-6.1.0-50-686 6.1.176-1 (bookworm, i386)")

    def probe(release="6.1.0-50-686", version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)"):
        return {"auxv_pagesz": 4096, "uname": {"machine": "i686", "release": release, "version": version}}
    properties = measure(runner.config, probe(), stated)
    assert properties.kernel_config == {"CONFIG_PAGE_OFFSET": "0xC0000000"}
    assert properties.as_dict()["sources"]["kernel_config"] == stated["kernel_config_source"]
    with pytest.raises(SystemUnderTestError, match="is for release '6.1.0-50-686'; the kernel answers uname -r "
                                                   "'6.1.0-51-686'"):
        measure(runner.config, probe(release="6.1.0-51-686"), stated)
    with pytest.raises(SystemUnderTestError, match="Debian version 6.1.176-1; the kernel's uname -v names "
                                                   "Debian 6.1.177-1"):
        measure(runner.config, probe(version="#1 SMP Debian 6.1.177-1 (2026-08-01)"), stated)


def test_a_users_kernel_gives_its_embedded_configuration_or_none(tmp_path):
    """--kernel IMAGE: the configuration the image embeds (Debian's armmp zImage with one
    appended, which still boots as a zImage), else none, and the rows that need it say so."""
    from mmap2conf.sut import measure
    debian = _linux_systems("armhf")[0][0].kernel().read_bytes()
    plain, embedding = tmp_path / "plain-zImage", tmp_path / "ikconfig-zImage"
    plain.write_bytes(debian)
    embedding.write_bytes(debian + ikconfig())
    (with_config,), _ = _linux_systems("armhf", kernels=(embedding,))
    stated = with_config.stated()
    assert stated["kernel_config"]["CONFIG_PAGE_OFFSET"] == "0x80000000"
    assert stated["kernel_config_source"] == f"CONFIG_IKCONFIG: the configuration embedded in {embedding}"
    probe = {"auxv_pagesz": 4096, "uname": {"machine": "armv7l", "release": stated["kernel_config_for"]["release"]}}
    assert measure(with_config.config, probe, stated).kernel_config == {
        "CONFIG_KASAN": "n", "CONFIG_MMU": "y", "CONFIG_PAGE_OFFSET": "0x80000000"}
    (without,), _ = _linux_systems("armhf", kernels=(plain,))
    assert without.stated() == {"kernel_config": None, "kernel_config_source": (
        f"{plain} embeds none (CONFIG_IKCONFIG, in the clear or in an xz or gzip stream)")}


def test_the_kernel_file_is_found_by_its_glob(tmp_path):
    (tmp_path / "mipsel" / "malta").mkdir(parents=True)
    (tmp_path / "mipsel" / "malta" / "vmlinuz-6.1.0-50-4kc-malta").write_bytes(b"k")
    found = kernels.find_kernel(tmp_path, "mipsel/malta/vmlinuz-*-4kc-malta", "package pkg")
    assert found.name == "vmlinuz-6.1.0-50-4kc-malta"
    with pytest.raises(kernels.KernelError, match=r"no kernel file .*5kc.* \(package pkg\)"):
        kernels.find_kernel(tmp_path, "mipsel/malta/vmlinuz-*-5kc-malta", "package pkg")
    (tmp_path / "mipsel" / "malta" / "vmlinuz-6.1.0-51-4kc-malta").write_bytes(b"k")
    with pytest.raises(kernels.KernelError, match="matches several: "):
        kernels.find_kernel(tmp_path, "mipsel/malta/vmlinuz-*-4kc-malta", "package pkg")


# ---- the runner, on the machines of machines/ and Debian's real kernels (the cache) ----

def _linux_systems(name: str, **options):
    configs = load_all()
    opts = runners.Options(machines=machines.load_machines(configs), **options)
    return Linux.systems(configs[name], opts), opts


def test_each_machine_kernel_is_a_system_named_by_its_release():
    systems, _ = _linux_systems("mipsel")
    assert sorted(s.name for s in systems) == ["linux-6.1.0-50-4kc-malta", "linux-6.1.0-50-5kc-malta",
                                               "linux-6.1.0-50-loongson-3"]
    assert {s.machine.name for s in systems} == {"mips-malta", "mips64el-malta", "mips64el-loongson3"}


def test_the_command_boots_the_machines_kernel_with_the_helper_as_init(tmp_path):
    systems, _ = _linux_systems("mipsel")
    runner = next(s for s in systems if s.machine.name == "mips-malta")
    helper = tmp_path / "helper"
    helper.write_bytes(b"\x7fELF helper")
    command = runner.command(helper, tmp_path)
    assert command[0].endswith("qemu-system-mipsel")
    assert command[1:1 + len(runner.machine.machine_args)] == list(runner.machine.machine_args)
    assert Path(command[command.index("-kernel") + 1]).name.endswith("-4kc-malta")
    initrd = Path(command[command.index("-initrd") + 1])
    assert read_newc(gzip.decompress(initrd.read_bytes()))[-1]["body"] == helper.read_bytes()
    assert command[-2:] == ["-append", "console=ttyS0,115200 panic=-1 quiet"]
    identity = runner.identity()
    assert identity["kernel_release"] == "6.1.0-50-4kc-malta" and len(identity["sha256"]) == 64
    assert Version(identity["version"]).local == "6.1.0.50.4kc.malta"
    assert runner.console is not None and runner.tracer is None


def test_a_noexec_scratch_directory_gives_the_guest_a_noexec_scratch(tmp_path, monkeypatch):
    runner = _linux_systems("armhf")[0][0]
    helper = tmp_path / "helper"
    helper.write_bytes(b"h")
    real_statvfs = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: type("V", (), {"f_flag": real_statvfs(path).f_flag
                                                                             | os.ST_NOEXEC})())
    assert runner.command(helper, tmp_path)[-1].endswith(" MMAP2_SCRATCH=noexec")
    assert "MMAP2_SCRATCH=noexec" in runner.reproducer(helper, '{"op":"probe","id":"p"}', "noexec")
    assert "MMAP2_SCRATCH" not in runner.reproducer(helper, '{"op":"probe","id":"p"}', None)


def test_no_qemu_system_or_a_tracer_makes_the_runner_unavailable(tmp_path, monkeypatch):
    runner = _linux_systems("i386")[0][0]
    monkeypatch.setenv("PATH", str(tmp_path))  # not the machine's own qemu-system
    with pytest.raises(runners.RunnerUnavailable, match="qemu-system-i386 is not on PATH .*qemu-system-x86"):
        runner.command(tmp_path / "helper", tmp_path)
    with pytest.raises(runners.RunnerUnavailable, match="tracer"):
        runner.command(tmp_path / "helper", tmp_path, trace=True)


def test_a_users_kernel_image_boots_on_the_machine_its_kind_names(tmp_path):
    debian = _linux_systems("armhf")[0][0].kernel()
    image = tmp_path / "my-zImage"
    image.write_bytes(debian.read_bytes())
    assert kernels.image_kind(image.read_bytes()) == "arm-zImage"
    systems, _ = _linux_systems("armhf", kernels=(image,))
    assert [(s.machine.name, s.kernel(), s.asked) for s in systems] == [("arm-virt", image, True)]
    assert _linux_systems("i386", kernels=(image,))[0] == []   # an arm kernel runs no i386 helper
    with pytest.raises(ModelError, match="mips-elf-64 kernel image boots on mips64el-loongson3, mips64el-malta"):
        machines.machine_for_image(machines.load_machines(load_all()), "mips-elf-64")


def test_libc_rows_checked_by_a_tracer_keep_their_own_answer_on_a_kernel_runner():
    """Only the system-call part of a traced row needs a tracer: in a guest the row runs
    untraced (a session without a tracer), judged on libc's answer, and its source says so."""
    config = load_all()["i386"]
    row = Case(table="t", id="traced", path=Path("t.toml"), line=1, clause="mmap.DESCRIPTION.offset",
               op="call", call="mmap", check=None, expect="mapping", source="s", inputs={"len": 4096},
               trace="no-syscall")
    guest = _linux_systems("i386")[0][0]
    on_kernel = list(engine.instances_for(config, "glibc", guest, row))
    assert on_kernel[0].not_applicable is None and on_kernel[0].case.trace is False
    assert on_kernel[0].case.source == (f"s (no system call tracer runs on {guest.name}: libc's answer is "
                                        f"checked here, not the system call it made)")


def test_the_bootstrap_installs_qemu_system_and_fetches_the_machines_kernels():
    assert {"qemu-system-x86", "qemu-system-arm", "qemu-system-mips"} <= set(bootstrap.apt_packages())
    assert not any(p.startswith("debian-installer") for p in bootstrap.apt_packages())


# ---- machines/: the keys of a machine file ----

@pytest.mark.parametrize("old, new, message", [
    ('qemu_system = "qemu-system-mips64el"\n', "", "qemu_system: missing"),
    ('qemu_system = "qemu-system-mips64el"', 'qemu_system = "qemu-mips64el-static"',
     "qemu_system: 'qemu-mips64el-static' is not a qemu-system-<arch> binary"),
    ('machine_args = ["-M", "loongson3-virt"', 'machine_args = [3, "loongson3-virt"', "machine_args: expected a non-empty"),
    ('console = "ttyS0,115200"', 'console = "ttyS0 init=/bin/sh"', "console: 'ttyS0 init=/bin/sh' is not a console such"),
    ('console = "ttyS0,115200"', 'console = "ttyS0,115200 quiet"', "console: 'ttyS0,115200 quiet' is not a console such"),
    ('image = "mips-elf-64"', 'image = "vax"', "image: 'vax' is not one of"),
    ('runs = ["mipsel"]', 'runs = ["vax"]', "runs: 'vax' is not a configuration"),
    ('path = "usr/lib', 'path = "/usr/lib', "must be a glob inside the unpacked package"),
    ('suite = "bookworm"\n', 'suite = "bookworm"\nkernel = "x"\n', "[kernel #1] kernel: unknown key"),
    ('path = "usr/src/linux-headers-*/.config"', 'path = "../boot/config"',
     "[kernel #1.config] path: '../boot/config' must be a glob inside the unpacked package"),
    ('arch = "mips64el", path', 'path', "[kernel #1.config] arch: missing"),
])
def test_a_malformed_machine_is_an_error_naming_file_and_key(tmp_path, old, new, message):
    source = machines.MACHINES_DIR / "mips64el-loongson3.toml"
    path = tmp_path / source.name
    text = source.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelError) as error:
        machines.load_machines(load_all(), tmp_path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_every_runner_kind_has_a_module_behind_the_interface():
    assert set(runners.KINDS) == {"qemu-user", "native", "linux", "docker", "ssh"}
    assert all(issubclass(kind, runners.Runner) for kind in runners.REGISTRY.values())
