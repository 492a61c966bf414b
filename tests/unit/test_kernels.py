"""The kernel runners without booting anything: the initramfs (a newc cpio read
back by an independent reader), the kernel's version from its image, the kernel
file lookup, the qemu-system command line, the [runners.<kind>] keys of arches/,
and the bootstrap's packages."""
import gzip
import lzma
import os
import stat
import zlib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mmap2conf import bootstrap, kernels, model, plugin, runners
from mmap2conf.cases import Case
from mmap2conf.model import KERNEL_RUNNER_KINDS, ModelError, load_all, load_config

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


def test_the_initramfs_holds_init_the_console_dev_zero_and_tmp():
    init = b"\x7fELF" + bytes(range(256)) * 3 + b"odd"
    members = {m["name"]: m for m in read_newc(kernels.newc_archive(init))}
    assert set(members) == {"dev", "tmp", "dev/console", "dev/zero", "init"}
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
    (DEBIAN_BANNER, "6.1.176+6.1.0-50-686"),
    (b"Linux version 6.1.0-50-4kc-malta (x@y) (gcc) #1 SMP Debian 6.1.176-1 (2026-07-02)\n",
     "6.1.176+6.1.0-50-4kc-malta"),
    (b"Linux version 6.18.0 (me@host) (gcc 14) #1 SMP Mon Nov 24 10:00:00 UTC 2026\n", "6.18.0"),
    (b"Linux version 6.9.0-rc1-custom (me@host) (gcc 14) #3 SMP\n", "6.9.0+6.9.0-rc1-custom"),
])
def test_the_version_comes_from_the_banner_and_is_pep_440(banner, version):
    assert kernels.banner_version(banner) == version
    Version(version)  # known-issues.toml matches it with PEP 440 specifiers


def test_a_debian_kernel_version_matches_a_release_specifier():
    version = Version(kernels.banner_version(DEBIAN_BANNER))
    assert version in SpecifierSet("==6.1.176") and version in SpecifierSet(">=6.1,<6.2")
    assert version not in SpecifierSet("==6.1.175")


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


def test_the_version_is_cached_by_the_kernel_files_content(tmp_path, monkeypatch):
    monkeypatch.setattr("mmap2conf.build.CACHE_DIR", tmp_path / "cache")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"stub" + lzma.compress(DEBIAN_BANNER))
    assert kernels.kernel_version(kernel) == "6.1.176+6.1.0-50-686"
    cached = list((tmp_path / "cache" / "kernels").glob("*.version"))
    assert [p.read_text() for p in cached] == ["6.1.176+6.1.0-50-686"]
    cached[0].write_text("9.9.9")  # the cache answers; the image is not read again
    assert kernels.kernel_version(kernel) == "9.9.9"


def test_the_kernel_file_is_found_by_its_glob(tmp_path):
    (tmp_path / "mipsel" / "malta").mkdir(parents=True)
    (tmp_path / "mipsel" / "malta" / "vmlinuz-6.1.0-50-4kc-malta").write_bytes(b"k")
    found = kernels.find_kernel("mipsel/malta/vmlinuz-*-4kc-malta", "pkg", tmp_path)
    assert found.name == "vmlinuz-6.1.0-50-4kc-malta"
    with pytest.raises(kernels.KernelError, match=r"no kernel file .*5kc.* \(apt package pkg\)"):
        kernels.find_kernel("mipsel/malta/vmlinuz-*-5kc-malta", "pkg", tmp_path)
    (tmp_path / "mipsel" / "malta" / "vmlinuz-6.1.0-51-4kc-malta").write_bytes(b"k")
    with pytest.raises(kernels.KernelError, match="matches several kernel files"):
        kernels.find_kernel("mipsel/malta/vmlinuz-*-4kc-malta", "pkg", tmp_path)


# ---- the runner ----

@pytest.fixture
def fake_guest(tmp_path, monkeypatch):
    """A kernel image directory and a qemu-system-mipsel on PATH, both fakes."""
    images = tmp_path / "images"
    (images / "mipsel" / "malta").mkdir(parents=True)
    (images / "mipsel" / "malta" / "vmlinuz-6.1.0-50-4kc-malta").write_bytes(b"x" + lzma.compress(DEBIAN_BANNER))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-system-mipsel"
    qemu.write_text("#!/bin/sh\nexit 0\n")
    qemu.chmod(0o755)
    monkeypatch.setattr(kernels, "KERNEL_IMAGES", images)
    monkeypatch.setattr("mmap2conf.build.CACHE_DIR", tmp_path / "cache")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    helper = tmp_path / "helper"
    helper.write_bytes(b"\x7fELF helper")
    return runners.make_runner("linux-32", load_all()["mipsel"]), helper, qemu


def test_the_command_boots_the_configured_kernel_with_the_helper_as_init(fake_guest, tmp_path):
    runner, helper, qemu = fake_guest
    command = runner.command(helper, tmp_path)
    spec = runner.spec
    assert command[0] == str(qemu)
    assert command[1:1 + len(spec.machine_args)] == list(spec.machine_args)
    assert command[command.index("-kernel") + 1].endswith("mipsel/malta/vmlinuz-6.1.0-50-4kc-malta")
    initrd = Path(command[command.index("-initrd") + 1])
    assert read_newc(gzip.decompress(initrd.read_bytes()))[-1]["body"] == helper.read_bytes()
    assert command[-2:] == ["-append", "console=ttyS0 panic=-1 quiet"]
    assert runner.version() == "6.1.176+6.1.0-50-686"
    assert runner.console is not None and runner.trace_shows is None


def test_a_noexec_scratch_directory_gives_the_guest_a_noexec_scratch(fake_guest, tmp_path, monkeypatch):
    runner, helper, _ = fake_guest
    real_statvfs = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: type("V", (), {"f_flag": real_statvfs(path).f_flag
                                                                             | os.ST_NOEXEC})())
    assert runner.command(helper, tmp_path)[-1].endswith(" MMAP2_SCRATCH=noexec")
    assert "MMAP2_SCRATCH=noexec" in runner.reproducer(helper, '{"op":"probe","id":"p"}', "noexec")
    assert "MMAP2_SCRATCH" not in runner.reproducer(helper, '{"op":"probe","id":"p"}', None)


def test_no_qemu_or_no_kernel_makes_the_runner_unavailable(fake_guest, tmp_path, monkeypatch):
    runner, helper, qemu = fake_guest
    qemu.unlink()
    monkeypatch.setenv("PATH", str(qemu.parent))  # not the machine's own qemu-system either
    with pytest.raises(runners.RunnerUnavailable, match="qemu-system-mipsel is not on PATH .*qemu-system-mips"):
        runner.command(helper, tmp_path)
    for path in (kernels.KERNEL_IMAGES / "mipsel" / "malta").iterdir():
        path.unlink()
    with pytest.raises(runners.RunnerUnavailable, match="debian-installer-12-netboot-mipsel"):
        runner.version()
    with pytest.raises(runners.RunnerUnavailable, match="tracer"):
        runner.command(helper, tmp_path, trace=True)


def test_libc_rows_checked_by_a_tracer_are_not_applicable_on_a_kernel_runner():
    config = load_all()["i386"]
    row = Case(table="t", id="traced", path=Path("t.toml"), line=1, clause="mmap2.VERSIONS.glibc-wrapper",
               op="call", call="mmap", check=None, expect="mapping", source="s", inputs={"len": 4096},
               trace=True)
    on_kernel = list(plugin._instances_for(config, "glibc", "linux-32", row))
    assert on_kernel[0].not_applicable.startswith("n.a.: the linux-32 runner has no system call tracer")
    assert list(plugin._instances_for(config, "glibc", "native", row))[0].not_applicable is None


def test_the_bootstrap_installs_qemu_system_and_the_kernel_packages():
    packages = bootstrap.apt_packages()
    assert {"qemu-system-x86", "qemu-system-arm", "qemu-system-mips", "debian-installer-12-netboot-i386",
            "debian-installer-12-netboot-armhf", "debian-installer-12-netboot-mipsel",
            "debian-installer-12-netboot-mips64el"} <= set(packages)


# ---- arches/: the [runners.<kind>] keys of the kernel runners ----

def test_the_kernel_runners_are_declared_with_their_page_sizes():
    configs = load_all()
    declared = {(name, kind): spec for name, config in configs.items()
                for kind, spec in config.runners.items() if kind in KERNEL_RUNNER_KINDS}
    assert set(declared) == {("i386", "linux-32"), ("armhf", "linux-32"), ("mipsel", "linux-32"),
                             ("mipsel", "linux-16k"), ("mipsel", "linux-64bit-4k")}
    assert declared["mipsel", "linux-16k"].page_size.value == 16384
    assert all(spec.page_size.value == 4096 for key, spec in declared.items() if key[1] != "linux-16k")
    assert all("kernels.md" in spec.page_size.source for spec in declared.values())
    assert declared["armhf", "linux-32"].kernel.console == "ttyAMA0"
    assert declared["mipsel", "linux-16k"].kernel.qemu_system == "qemu-system-mips64el"


KERNEL_RUNNER = '[runners.linux-16k]\nkernel_package = "debian-installer-12-netboot-mips64el"\n'
LOONGSON_ARGS = ('machine_args = ["-M", "loongson3-virt", "-cpu", "Loongson-3A1000", "-m", "512", "-nographic", '
                 '"-no-reboot", "-vga", "none", "-nic", "none"]')


@pytest.mark.parametrize("old, new, message", [
    ('kernel_package = "debian-installer-12-netboot-mips64el"\n', "", "[runners.linux-16k] kernel_package: missing"),
    ('kernel = "mips64el/loongson-3/vmlinuz-*-loongson-3"\n', "", "[runners.linux-16k] kernel: missing"),
    ('kernel = "mips64el/loongson-3/vmlinuz-*-loongson-3"', 'kernel = "/boot/vmlinuz"',
     "[runners.linux-16k] kernel: '/boot/vmlinuz' must be a glob relative"),
    ('kernel = "mips64el/loongson-3/vmlinuz-*-loongson-3"', 'kernel = "../../vmlinuz"',
     "[runners.linux-16k] kernel: '../../vmlinuz' must be a glob relative"),
    ('qemu_system = "qemu-system-mips64el"\nmachine_args = ["-M", "loongson3-virt"',
     'machine_args = ["-M", "loongson3-virt"', "[runners.linux-16k] qemu_system: missing"),
    ('qemu_system = "qemu-system-mips64el"\nmachine_args = ["-M", "loongson3-virt"',
     'qemu_system = "qemu-mips64el-static"\nmachine_args = ["-M", "loongson3-virt"',
     "[runners.linux-16k] qemu_system: 'qemu-mips64el-static' is not a qemu-system-<arch> binary"),
    ('machine_args = ["-M", "loongson3-virt"', 'machine_args = [3, "loongson3-virt"',
     "[runners.linux-16k] machine_args: expected a non-empty list"),
    (LOONGSON_ARGS, 'machine_args = "-M loongson3-virt"', "[runners.linux-16k] machine_args: expected list"),
    (LOONGSON_ARGS, 'machine_args = []', "[runners.linux-16k] machine_args: expected a non-empty list"),
    ('console = "ttyS0"\npage_size = { value = 16384', 'page_size = { value = 16384',
     "[runners.linux-16k] console: missing"),
    ('console = "ttyS0"\npage_size = { value = 16384', 'console = "ttyS0 init=/bin/sh"\npage_size = { value = 16384',
     "[runners.linux-16k] console: 'ttyS0 init=/bin/sh' is not a console device name"),
    ('page_size = { value = 16384, source = ', 'page_size = { value = 16384, sauce = ',
     "[runners.linux-16k.page_size] source: missing"),
    (KERNEL_RUNNER, KERNEL_RUNNER + 'binary = "qemu-mipsel-static"\n', "[runners.linux-16k] binary: unknown key"),
    ('[runners.qemu-user]\nbinary = "qemu-mipsel-static"\n',
     '[runners.qemu-user]\nbinary = "qemu-mipsel-static"\nkernel = "x"\n', "[runners.qemu-user] kernel: unknown key"),
    ("[runners.linux-16k]", "[runners.linux-8k]", "[runners] linux-8k: unknown runner kind"),
])
def test_a_malformed_kernel_runner_is_an_error_naming_file_and_key(arches_copy, edit, old, new, message):
    path = arches_copy / "mipsel.toml"
    edit(path, old, new)
    with pytest.raises(ModelError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_every_runner_kind_has_a_runner_class():
    assert set(runners.RUNNER_CLASSES) == set(model.RUNNER_KINDS) | {"docker"}
    assert all(runners.RUNNER_CLASSES[kind] is runners.LinuxKernel for kind in KERNEL_RUNNER_KINDS)
