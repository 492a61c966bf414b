"""arches/ validation: every real file loads, and every kind of mistake is an
error that names the file and the key."""
import subprocess
import sys

import pytest

from mmap2conf import model
from mmap2conf.model import REPO, ModelError, load_all, load_config


def test_every_configuration_loads_with_a_source_for_each_fact():
    configs = load_all()
    assert {"i386", "arm", "armhf", "mips", "mipsel", "ppc", "or1k", "sparc32plus", "x86_64", "m68k", "hppa",
            "hexagon", "riscv32", "aarch64", "sparc64", "mips64"} <= set(configs)
    for config in configs.values():
        facts = [config.mmap2_nr, config.error_convention, config.errno_family,
                 config.page_sizes]
        if config.has_mmap2:
            facts += [config.offset_unit, config.misaligned_pgoff]
        assert all(fact.source.strip() for fact in facts), config.name


def test_the_ia64_like_configuration_has_page_units_and_a_non_4096_page():
    or1k = load_all()["or1k"]
    assert "ia64-like" in or1k.tags
    assert or1k.offset_unit.value == "page"
    assert or1k.page_sizes.value == [8192] and or1k.unit_bytes(8192) == 8192


@pytest.mark.parametrize("old, new, message", [
    ('mmap2_nr = { value = 192, source = "arch/x86/entry/syscalls/syscall_32.tbl:207 (Linux 6.18)" }\n', "",
     "[abi] mmap2_nr: missing"),
    ('source = "arch/x86/entry/syscalls/syscall_32.tbl:207 (Linux 6.18)"', 'source = " "',
     "[abi] mmap2_nr: the source is empty"),
    ('error_convention = { value = "negative"', 'error_convention = { value = "sometimes"',
     "[abi.error_convention] value: 'sometimes' is not one of"),
    ('class = 32', 'class = "32"', "[elf] class: expected int"),
    ('stub = "i386"', 'stub = "i386"\nstubb = "x"', "[abi] stubb: unknown key"),
    ('stub = "i386"', 'stub = "vax"', "[abi] stub: no stub header"),
    ('errno_family = { value = "generic"', 'errno_family = { value = "vms"', "no errno table for family 'vms'"),
    ('[runners.native]', '[runners.qemu-system-vax]', "[runners] qemu-system-vax: unknown runner kind"),
    ('target = "i386"\n', '', "[runners.qemu-user] target: missing"),
    ('page_sizes = { value = [4096]', 'page_sizes = { value = [0]', "[abi] page_sizes: [0] is not a list of powers"),
    ('page_sizes = { value = [4096]', 'page_sizes = { value = [6000]', "[abi] page_sizes: [6000] is not a list"),
    ('name = "i386"', 'name = "i486"', "does not match the file name"),
    ('[flavours.raw]', '[flavours.bionic]', "[flavours] bionic: unknown flavour"),
    ('cc = "i686-linux-gnu-gcc"', 'cc = "{ruby} i686-linux-gnu-gcc"', "[flavours.raw] cc: unknown recipe word {ruby}"),
    ('cflags = ["-fno-tree', 'cflags = ["-I{zig_include}", "-fno-tree', "[flavours.raw] cflags: unknown recipe word {zig_include}"),
    ('cc = "i686-linux-gnu-gcc"', 'cc = " "', "[flavours.raw] cc: is empty"),
    ('apt = ["gcc-i686-linux-gnu"]', 'apt = ["gcc-i686-linux-gnu", ""]', "[flavours.raw] apt: expected non-empty strings"),
    ('machine = "EM_386"', 'machine = "EM_VAX"', "[elf] machine: 'EM_VAX' is not one of"),
    ('task_size = { value = { "kernel_bits=64" = 0xFFFFE000,', 'task_size = { value = { "kernel_bitz=64" = 1,',
     "[abi.task_size] value: 'kernel_bitz=64' is not NAME=VALUE"),
    ('task_size = { value = { "kernel_bits=64" = 0xFFFFE000,', 'task_size = { value = { "kernel_bits=64" = true,',
     "[abi.task_size] value: kernel_bits=64: expected"),
    # Only the facts of arches/ may name kernel configuration options, each with its value.
    ('"kernel_bits=32" = "CONFIG_PAGE_OFFSET"', '"kernel_bits=32,CONFIG_X86_PAE" = "CONFIG_PAGE_OFFSET"',
     "[abi.task_size] value: 'CONFIG_X86_PAE': a configuration option takes =VALUE"),
    ('"kernel_bits=32" = "CONFIG_PAGE_OFFSET"', '"kernel_bits=32" = "PAGE_OFFSET"',
     "[abi.task_size] value: kernel_bits=32: 'PAGE_OFFSET' names 'PAGE_OFFSET': an address fact's expression may use page"),
    ('fixed_past_top = { value = "ENOMEM"', 'fixed_past_top = { value = { default = "EFAULT" }',
     "[abi.fixed_past_top] value: default: 'EFAULT' is not one of"),
])
def test_a_malformed_file_is_an_error_naming_file_and_key(arches_copy, edit, old, new, message):
    path = arches_copy / "i386.toml"
    edit(path, old, new)
    with pytest.raises(ModelError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_offset_facts_are_required_where_mmap2_exists_and_refused_where_not(arches_copy, edit):
    path = arches_copy / "or1k.toml"
    edit(path, 'offset_unit = { value = "page"', 'offset_unitt = { value = "page"')
    with pytest.raises(ModelError, match=r"\[abi\] offset_unit: missing"):
        load_config(path)
    control = arches_copy / "x86_64.toml"
    edit(control, '[runners.native]', 'offset_unit = { value = "4096", source = "x" }\n\n[runners.native]')
    with pytest.raises(ModelError, match="given for an ABI without mmap2"):
        load_config(control)


def test_invalid_toml_names_the_file(arches_copy):
    path = arches_copy / "mips.toml"
    path.write_text(path.read_text() + "\n[[[broken\n")
    with pytest.raises(ModelError, match=str(path)):
        load_config(path)


def test_a_tag_may_not_shadow_a_configuration_name(arches_copy, edit):
    edit(arches_copy / "mips.toml", '"mips-o32"]', '"mips-o32", "ppc"]')
    with pytest.raises(ModelError, match="tag 'ppc' is also a configuration name"):
        load_all(arches_copy)


def test_errno_tables_give_each_family_its_own_numbers():
    configs = load_all()
    assert configs["mips"].errno.number_of("EOVERFLOW") == 79
    assert configs["sparc32plus"].errno.number_of("EOVERFLOW") == 92
    assert configs["i386"].errno.number_of("EOVERFLOW") == 75
    assert configs["mips"].errno.name_of(79) == "EOVERFLOW"
    with pytest.raises(ModelError, match="EWHATEVER"):
        configs["i386"].errno.number_of("EWHATEVER")


def test_musl_sits_beside_glibc_and_takes_its_compiler_from_a_recipe():
    configs = load_all()
    with_musl = {name for name, config in configs.items() if "musl" in config.flavours}
    assert with_musl == {"i386", "arm", "armhf", "mips", "mipsel", "ppc", "hexagon", "riscv32"}
    for name in with_musl:
        musl = configs[name].flavours["musl"]
        assert musl.cc == "{python} -m ziglang cc" and musl.cflags[0] == "-target"
    assert configs["hexagon"].flavours["raw"].cflags[:2] == ("-target", "hexagon-linux-none")


def test_the_new_abis_state_their_facts():
    configs = load_all()
    assert configs["hppa"].mmap2_nr.value == 89 and configs["hppa"].errno.number_of("EOVERFLOW") == 72
    assert configs["m68k"].offset_unit.value == "page"
    hexagon = configs["hexagon"]
    assert hexagon.offset_unit.value == "page" and 65536 in hexagon.page_sizes.value
    assert configs["riscv32"].mmap2_nr.value == 222
    for control in ("aarch64", "sparc64", "mips64", "x86_64"):
        assert not configs[control].has_mmap2 and configs[control].elf_class == 64
    for config in configs.values():
        if config.has_mmap2:
            assert set(config.row_facts) == set(model.ROW_FACTS)


def test_a_fact_may_depend_on_the_system_and_be_stated_for_some_systems_only():
    """A row fact keyed by measured properties: riscv32 has addresses above 2 GiB on a
    32-bit kernel only; arm's task_size is stated for a 64-bit kernel's 4 and 16 KiB pages,
    not on a 32-bit kernel (a Kconfig choice), so the rows that need it are n.a. there."""
    from mmap2conf.cases import fact_value, load_cases
    from mmap2conf.sut import Properties

    def system(bits, page=4096, version=None):
        return Properties(page_size=page, kernel_bits=bits, kernel_release=None, kernel_version=version,
                          machine=None, emulator="none", emulator_version=None, sources={})
    configs = load_all()
    assert fact_value(configs["riscv32"], "high_addresses", system(32)) is True
    assert fact_value(configs["riscv32"], "high_addresses", system(64)) is False
    assert fact_value(configs["arm"], "task_size", system(64, 16384)) == 0xFFFFC000
    assert fact_value(configs["arm"], "task_size", system(64, 65536)) is None
    assert fact_value(configs["hppa"], "fixed_past_top", system(64, version="6.3.8")) == "ENOMEM"
    assert fact_value(configs["hppa"], "fixed_past_top", system(64, version="6.18.44+6.18.44")) == "EINVAL"
    top = {case.key: case for case in load_cases()}["top-of-address-space/fixed-last-page"]
    assert top.facts == ("task_size",)
    assert top.not_for_system(configs["arm"], system(64, 65536)).startswith("n.a.: arm states no task_size")
    assert top.not_for_system(configs["arm"], system(64)) is None
    assert top.concrete_inputs(4096, 4096, {"task_size": 0xFFFFF000})["addr"] == 0xFFFFE000


def test_a_native_32_bit_kernel_s_top_comes_from_its_configuration():
    """i386 and arm state TASK_SIZE of a 32-bit kernel over its configuration options
    (CONFIG_PAGE_OFFSET, the VMSPLIT_* choice; arm: with an MMU and without KASAN); unread,
    the rows that need it are n.a. with that reason, and a condition that fails on a
    measured property needs no configuration."""
    from mmap2conf.cases import fact_value, load_cases
    from mmap2conf.sut import Properties

    def system(bits, options, why="read from a test's table"):
        return Properties(page_size=4096, kernel_bits=bits, kernel_release=None, kernel_version=None, machine=None,
                          emulator="none", emulator_version=None, sources={"kernel_config": why},
                          kernel_config=options)
    configs = load_all()
    assert configs["arm"].kernel_options == ("CONFIG_KASAN", "CONFIG_MMU", "CONFIG_PAGE_OFFSET")
    assert configs["mips"].kernel_options == ()
    split_3g = {"CONFIG_PAGE_OFFSET": "0xC0000000", "CONFIG_MMU": "y"}
    assert fact_value(configs["i386"], "task_size", system(32, split_3g)) == 0xC0000000
    assert fact_value(configs["arm"], "task_size", system(32, split_3g)) == 0xBF000000
    assert fact_value(configs["armhf"], "task_size", system(32, {**split_3g, "CONFIG_PAGE_OFFSET": "0x80000000"})) \
        == 0x7F000000
    assert fact_value(configs["arm"], "task_size", system(32, {**split_3g, "CONFIG_KASAN": "y"})) is None
    assert fact_value(configs["i386"], "task_size", system(64, None)) == 0xFFFFE000
    top = {case.key: case for case in load_cases()}["top-of-address-space/fixed-first-page-past-the-top"]
    reason = top.not_for_system(configs["i386"], system(32, None, "vmlinuz embeds none (CONFIG_IKCONFIG)"))
    assert reason.startswith("n.a.: the kernel's configuration cannot be read (vmlinuz embeds none (CONFIG_IKCONFIG)); "
                             "i386's task_size depends on it here (kernel_bits 32, page 4096)")
    assert top.not_for_system(configs["i386"], system(32, {})).startswith(
        "n.a.: the kernel's configuration does not set CONFIG_PAGE_OFFSET (read from a test's table)")
    assert top.not_for_system(configs["arm"], system(32, split_3g)) is None
    assert fact_value(configs["ppc"], "task_size", system(32, {"CONFIG_TASK_SIZE": "0xb0000000"})) == 0xB0000000
    # riscv32's 32-bit TASK_SIZE depends on more than an option's value: not stated, and said so.
    assert top.not_for_system(configs["riscv32"], system(32, split_3g)).startswith(
        "n.a.: riscv32 states no task_size for this system (kernel_bits 32, page 4096): a compat task")


def test_the_bootstrap_reads_the_data_with_the_standard_library_only():
    # make bootstrap runs the system's python3 before .venv exists (no packaging, no
    # pyelftools): everything it reads of arches/, machines/ and libcs/ must load there.
    script = ("import sys; sys.modules['packaging'] = None\n"
              "from mmap2conf import bootstrap, libcs\n"
              "from mmap2conf.model import load_all\n"
              "print(len(bootstrap.apt_packages()), len(libcs.packages(libcs.load(load_all()))))")
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(int(n) > 0 for n in result.stdout.split())
