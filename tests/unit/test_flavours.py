"""Flavours in the generated matrix: every libc row runs through every libc a
configuration has (glibc and musl alike), rows for one libc are n.a. elsewhere
with a reason, and the raw rows stay with the raw flavour."""
from mmap2conf import engine, machines, runners
from mmap2conf.cases import FILE_CALLS, RAW_CALLS, load_cases
from mmap2conf.model import LIBC_FLAVOURS, load_all

CONFIGS = load_all()
CASES = load_cases()


QEMU_USER = runners.REGISTRY["qemu-user"]


def instances(config, flavour):
    runner = QEMU_USER.systems(config, runners.Options(machines=machines.load_machines(CONFIGS)))
    system = runner[0] if runner else runners.REGISTRY["native"](config, "native", False)
    return {i.case.key: i for case in CASES for i in engine.instances_for(config, flavour, system, case)}


def test_every_row_that_runs_through_glibc_also_runs_through_musl():
    for config in CONFIGS.values():
        if not {"glibc", "musl"} <= set(config.flavours):
            continue
        glibc, musl = instances(config, "glibc"), instances(config, "musl")
        assert set(glibc) == set(musl), config.name
        for key, instance in glibc.items():
            if instance.not_applicable is None and instance.case.flavours is None:
                assert musl[key].not_applicable is None, (config.name, key)


def test_a_row_for_one_libc_shows_as_na_for_the_other_with_its_reason():
    config = CONFIGS["i386"]
    musl_row = instances(config, "glibc")["libc-limits/musl-length-ptrdiff-max"]
    assert musl_row.not_applicable.startswith("n.a.: the row checks musl only")
    glibc_row = instances(config, "musl")["libc-limits/glibc-length-4gib-less-a-page"]
    assert glibc_row.not_applicable.startswith("n.a.: the row checks glibc only")
    assert instances(config, "musl")["libc-limits/musl-length-ptrdiff-max"].not_applicable is None


def test_the_wrapper_check_runs_for_every_libc_flavour_of_every_configuration():
    for config in CONFIGS.values():
        for flavour in set(config.flavours) & set(LIBC_FLAVOURS):
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
