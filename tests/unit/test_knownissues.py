"""Known-issue records: exact version ranges, strictness of fields."""
import pytest

from mmap2conf.knownissues import KnownIssueError, find_issue, load_known_issues

RECORD = '''
[[issue]]
id = "KI-example"
title = "qemu truncates offsets"
cases = ["large-offsets/*"]
configs = ["i386", "arm*"]
flavours = ["raw"]
runner = "qemu-user"
versions = ">=2.0,<8.1"
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


@pytest.mark.parametrize("version, config, flavour, case, matched", [
    ("7.2.22", "i386", "raw", "large-offsets/pgoff=0x100001", True),
    ("7.2.22", "armhf", "raw", "large-offsets/pgoff=0x100001", True),
    ("8.0.5", "arm", "raw", "large-offsets/x", True),
    ("8.1.0", "i386", "raw", "large-offsets/x", False),      # fixed in 8.1: no longer xfailed
    ("9.2.0", "i386", "raw", "large-offsets/x", False),
    ("7.2.22", "mips", "raw", "large-offsets/x", False),
    ("7.2.22", "i386", "glibc", "large-offsets/x", False),
    ("7.2.22", "i386", "raw", "offset-unit/pgoff=1", False),
])
def test_a_record_matches_exactly_its_range(tmp_path, version, config, flavour, case, matched):
    issues = load(tmp_path)
    found = find_issue(issues, case, config, flavour, "qemu-user", version)
    assert (found is not None) == matched
    assert find_issue(issues, case, config, flavour, "native", version) is None


@pytest.mark.parametrize("old, new, message", [
    ('upstream = "qemu 55baec0f4c"\n', "", ":2: issue #1: missing upstream"),
    ('versions = ">=2.0,<8.1"', 'versions = "soon"', "versions"),
    ('versions = ">=2.0,<8.1"', 'versions = ""', "must bound the affected range"),
    ('title =', 'titel = "x"\ntitle =', ":4: unknown key 'titel'"),
])
def test_a_malformed_record_is_an_error(tmp_path, old, new, message):
    with pytest.raises(KnownIssueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, RECORD.replace(old, new))


def test_overlapping_records_are_an_error(tmp_path):
    issues = load(tmp_path, RECORD + RECORD.replace("KI-example", "KI-other"))
    with pytest.raises(KnownIssueError, match="several known issues"):
        find_issue(issues, "large-offsets/x", "i386", "raw", "qemu-user", "7.2.22")


def test_the_repository_file_loads():
    assert all(issue.evidence and issue.expected and issue.observed for issue in load_known_issues())


@pytest.mark.parametrize("old, new, message", [
    ('configs = ["i386", "arm*"]', 'configs = ["i386", "vax"]', "configs: 'vax' matches no configuration"),
    ('cases = ["large-offsets/*"]', 'cases = ["large-offset/*"]', "cases: 'large-offset/*' matches no case"),
    ('flavours = ["raw"]', 'flavours = ["bionic"]', "flavours: unknown ['bionic']"),
    ('runner = "qemu-user"', 'runner = "bochs"', "runner: unknown 'bochs'"),
])
def test_a_record_must_name_what_exists(tmp_path, old, new, message):
    from mmap2conf.cases import load_cases
    from mmap2conf.model import FLAVOURS, RUNNER_KINDS, load_all
    from mmap2conf.knownissues import check_references

    path = tmp_path / "known-issues.toml"
    path.write_text("\n\n" + RECORD.replace(old, new))
    with pytest.raises(KnownIssueError) as error:
        check_references(load_known_issues(path), load_all(), [c.key for c in load_cases()], FLAVOURS,
                         RUNNER_KINDS, path)
    assert f"{path}:5 (KI-example)" in str(error.value)
    assert message in str(error.value)
