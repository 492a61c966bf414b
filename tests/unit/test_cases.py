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
    second = list(SECOND_ROW)
    if line is None:
        second.append(new)
    else:
        second[line] = new
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(second) + "\n")
    with pytest.raises(CaseError) as error:
        load_table(path, CLAUSES)
    assert f"{path}:11:" in str(error.value)
    assert message in str(error.value)


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
    second = list(SECOND_ROW)
    if line is None:
        second.append(new)
    else:
        second[line] = new
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(second) + "\n")
    with pytest.raises(CaseError, match=message):
        load_table(path, CLAUSES)


@pytest.mark.parametrize("line, new, message", [
    (None, 'flavours = ["bionic"]', "flavours: unknown flavour 'bionic'"),
    (None, 'flavours = []', "flavours must be a non-empty list"),
    (None, 'flavours = "musl"', "flavours must be a non-empty list"),
    (None, 'flavours = ["raw", "raw"]', "names a flavour twice"),
    (None, 'flavours = ["musl"]', "the musl flavour cannot make a mmap2 call"),
    (3, 'call = "mmap"\nflavours = ["raw"]', "the raw flavour cannot make a mmap call"),
])
def test_a_rows_flavours_must_be_able_to_make_its_call(tmp_path, line, new, message):
    second = list(SECOND_ROW)
    if line is None:
        second.append(new)
    else:
        second[line] = new
    path = tmp_path / "table.toml"
    path.write_text(FIRST_ROW + "\n" + "\n".join(second) + "\n")
    with pytest.raises(CaseError) as error:
        load_table(path, CLAUSES)
    assert f"{path}:11:" in str(error.value)
    assert message in str(error.value)


def test_a_row_for_one_libc_is_not_applicable_to_the_others():
    rows = {c.key: c for c in load_cases()}
    musl_only = rows["libc-limits/musl-length-ptrdiff-max"]
    assert musl_only.flavours == ("musl",)
    assert musl_only.not_for_flavour("musl") is None
    assert musl_only.not_for_flavour("glibc").startswith("n.a.: the row checks musl only")
    assert rows["libc-limits/mmap64-offset=4097"].not_for_flavour("glibc") is None
