"""Case tables: the real ones load; a mistake in a row is an error naming the
file and the line of the row."""
import pytest

from mmap2conf.cases import CaseError, evaluate, load_cases, load_clauses, load_table

CLAUSES = load_clauses()


def test_the_real_tables_load_and_every_row_names_a_known_clause():
    cases = load_cases()
    assert len({case.key for case in cases}) == len(cases)
    assert {case.table for case in cases} >= {"offset-unit", "libc-offset", "return-value", "self-checks"}
    assert all(case.clause in CLAUSES and case.source for case in cases)


FIRST_ROW = """
[[case]]
id = "first"
clause = "mmap2.DESCRIPTION.unit"
call = "mmap2"
len = "page"
expect = "mapping"
source = "x"
"""
SECOND_ROW = ["[[case]]", 'id = "second"', 'clause = "mmap2.DESCRIPTION.unit"', 'call = "mmap2"',
              'len = "page"', 'expect = "mapping"', 'source = "x"']

def load_with_second_row(tmp_path, row, line, new):
    """Write a table whose second row is ``row`` with line ``line`` replaced by ``new``
    (or ``new`` appended when line is None), load it, and return the CaseError's text;
    the error must name the second row's id line (11)."""
    second = list(row)
    if line is None:
        second.append(new)
    else:
        second[line] = new
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(second) + "\n")
    with pytest.raises(CaseError) as error:
        load_table(path, CLAUSES)
    assert f"{path}:11:" in str(error.value)
    return str(error.value)



@pytest.mark.parametrize("line, new, message", [
    (5, 'expect = "EWHATEVER"', "unknown expectation 'EWHATEVER'"),
    (2, 'clause = "mmap2.NOWHERE"', "unknown clause"),
    (None, "lenght = 3", "unknown key 'lenght'"),
    (4, 'len = "page ** "', "bad expression"),
    (4, 'len = "__import__(1)"', "bad expression"),
    (None, 'flags = "PRIVATE|FIXD"', "flags token 'FIXD'"),
    (3, 'call = "mmap3"', "call must be one of"),
    (1, 'id = "first"', "duplicate id 'first'"),
])
def test_a_bad_row_is_an_error_naming_file_and_line(tmp_path, line, new, message):
    """The second row is broken, so the location must be that row's id line (11)."""
    assert message in load_with_second_row(tmp_path, SECOND_ROW, line, new)


def test_expressions_use_the_page_of_the_system_under_test():
    names = {"page": 8192, "unit": 8192}
    assert evaluate("3 * page // 4096", names, "here") == 6
    assert evaluate(7, names, "here") == 7
    with pytest.raises(CaseError, match="negative"):
        evaluate("1 - page", names, "here")


def test_file_size_covers_the_mapping_in_the_unit_of_the_call():
    case = {c.key: c for c in load_cases()}["offset-unit/pgoff=3-pages-len-2-pages"]
    request = case.concrete_inputs(8192, 8192)
    assert request["offset"] == 6 and request["len"] == 16384
    assert request["file_blocks"] == (6 * 8192 + 16384) // 4096
    assert request["id"] == "offset-unit/pgoff=3-pages-len-2-pages"


@pytest.mark.parametrize("line, new, message", [
    (None, 'requires = "high_addresses=maybe"', "requires must be NAME=VALUE"),
    (None, 'requires = "colour=blue"', "requires must be NAME=VALUE"),
    (5, 'expect = "fact:favourite_errno"', "unknown expectation 'fact:favourite_errno'"),
    (None, 'scratch = "nfs"', "scratch must be one of"),
    (None, "trace = true", "only for libc calls"),
])
def test_rows_may_only_refer_to_facts_that_exist(tmp_path, line, new, message):
    assert message in load_with_second_row(tmp_path, SECOND_ROW, line, new)


@pytest.mark.parametrize("line, new, message", [
    (None, 'flavours = ["musl"]', "a row names the libc whose own answer it states"),
    (None, 'libc = "bionic"', "libc must be one of glibc, musl, not 'bionic'"),
    (None, 'libc = "glibc-2.41"', "libc must be one of glibc, musl, not 'glibc-2.41'"),
    (None, 'libc_version = ">=2.41"', "libc must be one of glibc, musl (libc_version needs it)"),
    (None, 'libc = "musl"', "libc: a mmap2 call is the raw flavour's"),
    (3, 'call = "mmap"\nlibc = "musl"\nlibc_version = "1.2.3"', "libc_version must be a PEP 440 specifier"),
    (3, 'call = "mmap"\nlibc = "musl"\nlibc_version = ""', "libc_version must be a PEP 440 specifier"),
])
def test_a_row_names_a_libc_and_releases_never_a_flavour(tmp_path, line, new, message):
    assert message in load_with_second_row(tmp_path, SECOND_ROW, line, new)


def test_a_row_for_one_libc_is_not_applicable_to_the_others():
    rows = {c.key: c for c in load_cases()}
    musl_only = rows["libc-limits/musl-length-ptrdiff-max"]
    assert musl_only.libc == "musl"
    assert musl_only.not_for_libc("musl", "musl-1.2.3") is None
    assert musl_only.not_for_libc("glibc", "glibc-2.41").startswith("n.a.: the row checks musl only")
    assert "the glibc-2.41 flavour is built with glibc" in musl_only.not_for_libc("glibc", "glibc-2.41")
    assert rows["libc-limits/mmap64-offset=4097"].not_for_libc("glibc", "glibc") is None


def test_a_row_for_some_releases_asks_the_release_the_helper_reported():
    from dataclasses import replace
    from types import SimpleNamespace
    row = replace({c.key: c for c in load_cases()}["libc-limits/musl-length-ptrdiff-max"], libc_version=">=1.2.4")
    assert row.not_for_release(SimpleNamespace(libc="musl", libc_version="1.2.5")) is None
    assert row.not_for_release(SimpleNamespace(libc="musl", libc_version="1.2.5-git-3-gabc")) is None
    reason = row.not_for_release(SimpleNamespace(libc="musl", libc_version="1.2.3"))
    assert reason == "n.a.: the row checks musl >=1.2.4 only; the helper's musl reports release 1.2.3"


FILE_ROW = ["[[case]]", 'id = "second"', 'clause = "write.ERRORS.EFBIG"', 'call = "extend"',
            "file_blocks = 0x100000000", 'expect = "EFBIG"', 'source = "x"']


@pytest.mark.parametrize("line, new, message", [
    (None, 'len = "page"', "'len' means nothing to the extend call (it takes only file_blocks, markers)"),
    (None, 'open = "RDONLY"', "'open' means nothing to the extend call"),
    (None, 'fd = "file"', "'fd' means nothing to the extend call"),
    (3, 'call = "open"\nprot = "READ"', "'prot' means nothing to the open call (it takes only file_blocks, "
                                        "markers, open)"),
    (4, "file_blocks = 0", "extend needs file_blocks of 1 or more"),
    (4, 'file_blocks = "page - 4096"', "extend needs file_blocks of 1 or more"),
    (5, 'expect = "mapping"', "unknown expectation 'mapping' for the extend call"),
    (5, 'expect = { default = "success", "kernel_bits=32" = "fact:unknown_prot" }',
     "unknown expectation 'fact:unknown_prot' for the extend call"),
    (5, 'expect = { default = "success", linux-32 = "EFBIG" }',
     "expect: 'linux-32' is not NAME=VALUE with NAME one of kernel_bits"),
    (5, 'expect = { default = "success", "kernel_bits=16" = "EFBIG" }', "kernel_bits is one of 32, 64"),
    (None, "trace = true", "only for libc calls"),
    (None, 'libc = "glibc"', "libc: a extend call is the raw flavour's"),
    (None, 'open = "RDONLY|BIGFILE"', "'open' means nothing to the extend call"),
    (3, 'call = "open"\nopen = "RDONLY|BIGFILE"', "open token 'BIGFILE'"),
])
def test_a_bad_file_call_row_is_an_error_naming_file_and_line(tmp_path, line, new, message):
    """extend and open take the file's size, markers and (open) flags, and expect success or an errno."""
    assert message in load_with_second_row(tmp_path, FILE_ROW, line, new)


def test_success_is_an_expectation_of_the_file_calls_only(tmp_path):
    second = list(SECOND_ROW)
    second[5] = 'expect = "success"'
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(second) + "\n")
    with pytest.raises(CaseError, match=r":11: unknown expectation 'success' \(an errno name"):
        load_table(path, CLAUSES)


def test_a_file_call_row_loads_and_asks_for_nothing_but_the_file(tmp_path):
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(FILE_ROW) + "\n"
                    + '\n[[case]]\nid = "third"\nclause = "open.ERRORS.EOVERFLOW"\ncall = "open"\n'
                      'file_blocks = 0xC0000\nopen = "RDONLY"\nrequires = "mmap2=true"\n'
                      'expect = { default = "EOVERFLOW", "kernel_bits=32" = "success" }\nsource = "x"\n')
    _, extend, reopen = load_table(path, CLAUSES)
    assert extend.concrete_inputs(4096, 4096) == {"op": "call", "id": "table/second", "call": "extend",
                                                  "file_blocks": 1 << 32}
    assert reopen.concrete_inputs(8192, 8192) == {"op": "call", "id": "table/third", "call": "open",
                                                  "file_blocks": 0xC0000, "open": "RDONLY"}
    kernel_32, kernel_64 = (type("P", (), {"value": lambda self, name, bits=bits: bits})() for bits in (32, 64))
    assert reopen.expectation_for(kernel_32) == "success" and reopen.requires == "mmap2=true"
    assert reopen.expectation_for(kernel_64) == "EOVERFLOW"


def test_no_row_keys_its_answer_by_a_runners_name():
    from mmap2conf.runners import KINDS
    keyed = [case for case in load_cases() if isinstance(case.expect, dict)]
    assert keyed and not any(set(case.expect) & set(KINDS) for case in keyed)


ALLOWED = ['allowed = ["mapping", "EOVERFLOW"]', 'allowed_source = "mmap(2) ERRORS EOVERFLOW"']


@pytest.mark.parametrize("line, new, message", [
    (None, ALLOWED[0], "case 'second': allowed and allowed_source go together"),
    (None, ALLOWED[1], "case 'second': allowed and allowed_source go together"),
    (5, 'expect = { default = "mapping", "kernel_bits=32" = "EFBIG" }\n' + "\n".join(ALLOWED),
     "case 'second': expect 'EFBIG', which allowed (mapping, EOVERFLOW) does not hold"),
    (5, 'expect = "fact:oversized_len"\nallowed = ["ENOMEM", "mapping"]\n' + ALLOWED[1],
     "expect 'fact:oversized_len' may be 'EINVAL' (a value of that fact), which allowed (ENOMEM, mapping)"),
    (None, 'allowed = ["mapping", "EWHATEVER"]\n' + ALLOWED[1], "allowed: 'EWHATEVER' is not an answer of a call"),
    (None, 'allowed = ["mapping", "success"]\n' + ALLOWED[1], "allowed: 'success' is not an answer of a call"),
    (None, 'allowed = ["mapping"]\n' + ALLOWED[1], "allowed must list two or more different answers"),
    (None, 'allowed = ["mapping", "mapping"]\n' + ALLOWED[1], "allowed must list two or more different answers"),
    (None, 'allowed = "mapping"\n' + ALLOWED[1], "allowed must be a non-empty list of non-empty strings"),
    (None, ALLOWED[0] + '\nallowed_source = ""', "allowed_source must be a non-empty string"),
])
def test_allowed_answers_hold_the_expected_one_and_name_their_source(tmp_path, line, new, message):
    assert message in load_with_second_row(tmp_path, SECOND_ROW, line, new)


def test_a_file_call_row_may_allow_success_and_errnos(tmp_path):
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(FILE_ROW) + '\nallowed = ["EFBIG", "success"]\n'
                    'allowed_source = "x"\n')
    assert load_table(path, CLAUSES)[1].allowed == ("EFBIG", "success")


def test_the_rows_whose_answer_the_manual_page_leaves_open_state_both():
    rows = {c.key: c for c in load_cases()}
    for key in ("errors/eoverflow-anonymous-pgoff-0xffffffff", "kernel-limits/file-pgoff-0xffffffff",
                "kernel-limits/file-pgoff-0xfffffffe-len-2-blocks"):
        assert rows[key].allowed == ("mapping", "EOVERFLOW") and "EOVERFLOW" in rows[key].allowed_source
    assert not rows["large-offsets/pgoff=0x80000000"].allowed   # the manual page asks for the mapping alone


def test_no_two_rows_make_the_same_request_for_the_same_clause():
    """A second row with the request and the clause of another, on every page size and unit,
    could only pass and fail with it."""
    from mmap2conf.cases import load_systems
    seen = {}
    for case in load_cases():
        if case.op != "call":
            continue
        requests = [sorted((k, v) for k, v in case.concrete_inputs(page, unit, facts).items() if k != "id")
                    for page, unit, facts in load_systems()]
        key = (case.clause, repr(requests), case.libc, case.libc_version, case.trace)
        assert key not in seen, f"{case.key} repeats {seen[key]}"
        seen[key] = case.key
