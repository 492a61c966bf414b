"""Flavours in the generated matrix: every libc row runs through every libc flavour
a configuration has (glibc and musl alike, every release of each: libcs/), rows
for one libc are n.a. elsewhere with a reason, and the raw rows stay with the raw
flavour."""
from mmap2conf import engine, libcs, machines, runners
from mmap2conf.cases import FILE_CALLS, RAW_CALLS, load_cases
from mmap2conf.model import load_all

CONFIGS = load_all()
libcs.attach(CONFIGS, libcs.load(CONFIGS))
CASES = load_cases()


QEMU_USER = runners.REGISTRY["qemu-user"]


def instances(config, flavour):
    runner = QEMU_USER.systems(config, runners.Options(machines=machines.load_machines(CONFIGS)))
    system = runner[0] if runner else runners.REGISTRY["native"](config, "native", False)
    return {i.case.key: i for case in CASES for i in engine.instances_for(config, flavour, system, case)}


def libc_flavours(config):
    return [name for name, flavour in config.flavours.items() if flavour.libc is not None]


def test_every_libc_row_runs_through_every_libc_flavour_whatever_its_release():
    for config in CONFIGS.values():
        flavours = libc_flavours(config)
        if len(flavours) < 2:
            continue
        by_flavour = {name: instances(config, name) for name in flavours}
        first = by_flavour[flavours[0]]
        for name, rows in by_flavour.items():
            assert set(rows) == set(first), (config.name, name)
            libc = config.flavours[name].libc
            for key, instance in rows.items():
                if instance.case.libc in (None, libc) and instance.case.call is not None:
                    assert instance.not_applicable is None or "has no mmap2" in instance.not_applicable \
                        or "needs" in instance.not_applicable or "tracer" in instance.not_applicable, (config.name, name, key)


def test_the_second_releases_are_flavours_beside_the_first():
    """Debian 13's glibc beside Debian 12's on every configuration with glibc (2.40 on the
    mips ABIs), Debian 12's musl 1.2.3 beside zig's 1.2.5 on Debian's musl architectures."""
    for config in CONFIGS.values():
        if "glibc" in config.flavours:
            second = "glibc-2.40" if config.name.startswith("mips") else "glibc-2.41"
            assert config.flavours[second].libc == "glibc", config.name
        if config.name in ("i386", "arm", "armhf", "mipsel"):
            assert config.flavours["musl-1.2.3"].libc == "musl"
            assert config.flavours["musl-1.2.3"].cc == config.flavours["musl"].cc
    assert "musl-1.2.3" not in CONFIGS["ppc"].flavours and "musl-1.2.3" not in CONFIGS["hexagon"].flavours


def test_a_row_for_one_libc_shows_as_na_for_the_other_with_its_reason():
    config = CONFIGS["i386"]
    for glibc in ("glibc", "glibc-2.41"):
        musl_row = instances(config, glibc)["libc-limits/musl-length-ptrdiff-max"]
        assert musl_row.not_applicable.startswith("n.a.: the row checks musl only")
    for musl in ("musl", "musl-1.2.3"):
        glibc_row = instances(config, musl)["libc-limits/glibc-length-4gib-less-a-page"]
        assert glibc_row.not_applicable.startswith("n.a.: the row checks glibc only")
        assert instances(config, musl)["libc-limits/musl-length-ptrdiff-max"].not_applicable is None


def test_the_wrapper_check_runs_for_every_libc_flavour_of_every_configuration():
    for config in CONFIGS.values():
        for flavour in libc_flavours(config):
            traced = [i for i in instances(config, flavour).values()
                      if i.case.table == "glibc-wrapper" and i.not_applicable is None]
            assert {i.case.call for i in traced} == {"mmap", "mmap64"}, (config.name, flavour)


def test_raw_rows_never_reach_a_libc_flavour():
    config = CONFIGS["hexagon"]
    assert all(i.case.call in ("mmap", "mmap64", None) for i in instances(config, "musl").values())
    assert all(i.case.call in (*RAW_CALLS, None) for i in instances(config, "raw").values())


def test_file_calls_run_through_the_raw_flavour_of_every_abi_even_without_mmap2():
    """Only mmap2 rows need mmap2: extend and open go through the stub on the 64-bit controls too."""
    for name in ("x86_64", "aarch64", "i386"):
        raw = instances(CONFIGS[name], "raw")
        file_rows = [i for i in raw.values() if i.case.call in FILE_CALLS]
        assert file_rows, name
        assert all(i.not_applicable is None or "the case needs" in i.not_applicable for i in file_rows), name
        assert {i.case.call for i in file_rows if i.not_applicable is None} == set(FILE_CALLS), name
    x86_64 = instances(CONFIGS["x86_64"], "raw")
    assert x86_64["offset-unit/pgoff=1"].not_applicable.startswith("n.a.: x86_64 has no mmap2")
    assert x86_64["file-limits/extend-to-16tib"].not_applicable is None
    assert x86_64["file-limits/open-3gib-without-largefile-64-bit"].not_applicable is None
    assert "needs true" in x86_64["file-limits/open-3gib-without-largefile"].not_applicable
    assert "needs false" in instances(CONFIGS["i386"], "raw")["file-limits/open-3gib-without-largefile-64-bit"].not_applicable
    assert not any(i.case.call in FILE_CALLS for i in instances(CONFIGS["i386"], "glibc").values())
