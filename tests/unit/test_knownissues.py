"""Known-issue records: exact version ranges over the component at fault, the
properties a system must have, strictness of fields, and the recorded symptom."""
import pytest

from mmap2conf.knownissues import KnownIssueError, find_issue, load_known_issues
from mmap2conf.sut import Properties

RECORD = '''
[[issue]]
id = "KI-example"
title = "qemu truncates offsets"
cases = ["large-offsets/*"]
configs = ["i386", "arm*"]
flavours = ["raw"]
kind = "violates-manual"
component = "qemu"
versions = ">=2.0,<8.1"
symptom = { result = "mapped", block = "byte_offset % 2**32 // 4096" }
input = "pgoff 0x100001"
expected = "block 0x100001"
observed = "block 1"
evidence = "measured"
upstream = "qemu 55baec0f4c"
'''


def load(tmp_path, text=RECORD):
    path = tmp_path / "known-issues.toml"
    path.write_text(text)
    return load_known_issues(path)


def system(emulator="qemu-user", version="7.2.22", kernel="6.18.0+6.18.0", bits=64, page=4096):
    return Properties(page_size=page, kernel_bits=bits, kernel_release="6.18.0", kernel_version=kernel,
                      machine="x86_64", emulator=emulator,
                      emulator_version=version if emulator == "qemu-user" else None, sources={})


@pytest.mark.parametrize("version, config, flavour, case, matched", [
    ("7.2.22", "i386", "raw", "large-offsets/pgoff=0x100001", True),
    ("7.2.22", "armhf", "raw", "large-offsets/pgoff=0x100001", True),
    ("8.0.5", "arm", "raw", "large-offsets/x", True),
    ("8.1.0", "i386", "raw", "large-offsets/x", False),      # fixed in 8.1: no longer xfailed
    ("10.0.2", "i386", "raw", "large-offsets/x", False),
    ("7.2.22", "mips", "raw", "large-offsets/x", False),
    ("7.2.22", "i386", "glibc", "large-offsets/x", False),
    ("7.2.22", "i386", "raw", "offset-unit/pgoff=1", False),
])
def test_a_record_matches_exactly_its_range(tmp_path, version, config, flavour, case, matched):
    issues = load(tmp_path)
    assert (find_issue(issues, case, config, flavour, system(version=version)) is not None) == matched
    # a qemu record never matches a system where a kernel answers
    assert find_issue(issues, case, config, flavour, system(emulator="none")) is None


def test_a_kernel_record_matches_by_release_and_properties(tmp_path):
    text = (RECORD.replace('component = "qemu"', 'component = "kernel"\nwhere = { kernel_bits = 32 }')
            .replace('versions = ">=2.0,<8.1"', 'versions = "==6.1.*"'))
    issues = load(tmp_path, text)
    on_32 = system(emulator="none", kernel="6.1.176+6.1.0.50.686", bits=32)
    assert find_issue(issues, "large-offsets/x", "i386", "raw", on_32) is not None
    assert find_issue(issues, "large-offsets/x", "i386", "raw", system(emulator="none", kernel="6.1.176", bits=64)) is None
    assert find_issue(issues, "large-offsets/x", "i386", "raw", system(emulator="none", kernel="6.12.57", bits=32)) is None


def test_only_the_recorded_symptom_is_absorbed(tmp_path):
    issue = load(tmp_path)[0]
    names = {"offset": 0x100001, "byte_offset": 0x100001 * 4096, "page": 4096, "unit": 4096}
    assert issue.symptom_problem({"result": "mapped", "block": 1}, names) is None
    assert "observed mapped with block 0x2" in issue.symptom_problem({"result": "mapped", "block": 2}, names)
    assert "observed EINVAL" in issue.symptom_problem({"result": "error", "errno": "EINVAL"}, names)
    assert "harness error" in issue.symptom_problem({"setup_error": "ENOSPC"}, names)


@pytest.mark.parametrize("old, new, message", [
    ('upstream = "qemu 55baec0f4c"\n', "", "missing 'upstream'"),
    ('versions = ">=2.0,<8.1"', 'versions = "soon"', "versions"),
    ('versions = ">=2.0,<8.1"', 'versions = ""', "versions must be a non-empty string"),
    ('title =', 'titel = "x"\ntitle =', "unknown field 'titel'"),
    ('kind = "violates-manual"', 'kind = "bad"', "kind 'bad' is not one of"),
    ('component = "qemu"', 'component = "bochs"', "component 'bochs' is not one of"),
    ('symptom = { result = "mapped", block', 'symptom = { result = "gone", block', "result 'gone' is not one of"),
    ('symptom = { result = "mapped", block = "byte_offset % 2**32 // 4096" }', 'symptom = { block = "1" }',
     "block goes with result"),
    ('symptom = { result = "mapped", block = "byte_offset % 2**32 // 4096" }', 'symptom = {}', "symptom"),
    ('configs = ["i386", "arm*"]', 'configs = "i386"', "configs must be a non-empty list"),
    ('component = "qemu"', 'component = "qemu"\nwhere = { kernel_bits = 16 }', "kernel_bits is one of 32, 64"),
])
def test_a_malformed_record_is_an_error_naming_its_line(tmp_path, old, new, message):
    assert old in RECORD
    with pytest.raises(KnownIssueError) as error:
        load(tmp_path, RECORD.replace(old, new))
    assert ":2 (KI-example)" in str(error.value) and message in str(error.value)


def test_invalid_toml_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(KnownIssueError, match="known-issues.toml"):
        load(tmp_path, RECORD + "\n[[issue]\n")


def test_overlapping_records_are_an_error(tmp_path):
    issues = load(tmp_path, RECORD + RECORD.replace("KI-example", "KI-other"))
    with pytest.raises(KnownIssueError, match="several known issues"):
        find_issue(issues, "large-offsets/x", "i386", "raw", system())


def test_the_repository_file_loads():
    assert all(issue.evidence and issue.expected and issue.observed and issue.symptom
               for issue in load_known_issues())


@pytest.mark.parametrize("old, new, message", [
    ('configs = ["i386", "arm*"]', 'configs = ["i386", "vax"]', "configs: 'vax' matches no configuration"),
    ('cases = ["large-offsets/*"]', 'cases = ["large-offset/*"]', "cases: 'large-offset/*' matches no case"),
    ('flavours = ["raw"]', 'flavours = ["bionic"]', "flavours: unknown ['bionic']"),
    ('flavours = ["raw"]', 'flavours = ["glibc-2.41"]', "a libc's name covers every build of it"),
    ('symptom = { result = "mapped", block = "byte_offset % 2**32 // 4096" }', 'symptom = { errno = "ENOPE" }',
     "errno 'ENOPE' is not an errno name"),
])
def test_a_record_must_name_what_exists(tmp_path, old, new, message):
    from mmap2conf.cases import ERRNO_NAMES, load_cases
    from mmap2conf.knownissues import check_references
    from mmap2conf.model import FLAVOUR_KINDS, load_all

    path = tmp_path / "known-issues.toml"
    path.write_text("\n\n" + RECORD.replace(old, new))
    with pytest.raises(KnownIssueError) as error:
        check_references(load_known_issues(path), load_all(), [c.key for c in load_cases()], FLAVOUR_KINDS,
                         ERRNO_NAMES, path)
    assert f"{path}:4 (KI-example)" in str(error.value)
    assert message in str(error.value)


LIBC_RECORD = (RECORD.replace('component = "qemu"', 'component = "libc"\nlibc = "glibc"')
               .replace('flavours = ["raw"]', 'flavours = ["glibc"]').replace('versions = ">=2.0,<8.1"',
                                                                               'versions = ">=2.41"'))


@pytest.mark.parametrize("libc, matched", [
    (("glibc", "2.41"), True), (("glibc", "2.42"), True), (("glibc", "2.41.9000"), True),
    (("glibc", "2.36"), False), (("glibc", "2.40"), False), (("musl", "2.41"), False), (None, False),
])
def test_a_libc_record_matches_the_release_the_helper_reports(tmp_path, libc, matched):
    issues = load(tmp_path, LIBC_RECORD)
    found = find_issue(issues, "large-offsets/x", "i386", "glibc", system(), libc=libc)
    assert (found is not None) == matched
    # on every system: a libc's answer is the same under qemu and on a kernel
    assert (find_issue(issues, "large-offsets/x", "i386", "glibc", system(emulator="none"), libc=libc)
            is not None) == matched


@pytest.mark.parametrize("old, new, message", [
    ('flavours = ["glibc"]', 'flavours = ["glibc", "musl"]', "flavours = [its name]"),
    ('libc = "glibc"', 'libc = "bionic"', "libc must be one of glibc, musl"),
    ('libc = "glibc"\n', '', "libc names the libc exactly when component is libc"),
])
def test_a_libc_record_names_one_libc(tmp_path, old, new, message):
    with pytest.raises(KnownIssueError, match=message.replace("[", "\\[").replace("]", "\\]")):
        load(tmp_path, LIBC_RECORD.replace(old, new))


def test_where_may_name_a_range_of_kernel_versions():
    """KI-46: qemu-hppa's ENOMEM is a difference from Linux 6.4 and later only, the host's
    kernel standing for the guest's under qemu-user."""
    issues = {i.id: i for i in load_known_issues()}
    ki = issues["KI-46"]
    key = "errors/enomem-fixed-range-past-the-top"
    assert ki.applies(key, "hppa", "raw", system(kernel="6.18.44+6.18.44"))
    assert not ki.applies(key, "hppa", "raw", system(kernel="6.1.176+6.1.0.50.amd64"))
