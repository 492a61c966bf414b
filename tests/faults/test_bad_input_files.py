"""Issue 15 item 6: malformed data files, in a temporary copy of the repository, run
through the suite's real command line: each is a usage error (pytest's status 4)
whose one message names the file and the line, never a traceback, never a hang."""
import re
import shutil

import pytest

from faultlib import REPO, conformance, no_traceback

COPY_IGNORE = shutil.ignore_patterns(".venv", ".cache", ".git", "reports", "__pycache__", ".tox", "*.egg-info",
                                     "faults")
TABLE = "tests/cases/offset-unit.toml"
ROW = 'id = "pgoff=2"\noffset = 2\n'          # the row that is broken
KNOWN = "known-issues.toml"
KI_1 = 'cases = ["errors/unknown-prot-bit", "precedence/bad-fd-and-unknown-prot-bit"]\n'
CLAUSES = "tests/clauses.toml"
CLAUSE = 'section = "SYNOPSIS"\npage = "mmap2(2)"\n'


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    copy = tmp_path_factory.mktemp("pristine") / "repo"
    shutil.copytree(REPO, copy, ignore=COPY_IGNORE)
    return copy


def broken_copy(pristine, tmp_path, path, old, new):
    """A copy of the repository with the first ``old`` replaced by ``new`` in ``path``."""
    copy = tmp_path / "repo"
    shutil.copytree(pristine, copy)
    target = copy / path
    text = target.read_text()
    assert old in text, f"{old!r} is not in {path}"
    target.write_text(text.replace(old, new, 1))
    return copy


KI_1_TITLE = 'title = "qemu-user rejects unknown PROT_ bits with EINVAL; Linux ignores them except on powerpc"\n'
KI_1_VERSIONS = 'component = "qemu"\nversions = ">=7.2"\n'
KI_1_EVIDENCE = 'evidence = "measured on QEMU 7.2.22 for every configuration listed;'
HEADER = None   # the error names the record's header line ([[issue]], [[clause]]) before the edit

CASES = [
    # (file, old, new, the line of the error: the edit's first line plus this, or HEADER, message)
    (TABLE, ROW, 'id = "pgoff=2"\noffset = "page // 0"\n', 0, "bad expression 'page // 0': division by zero"),
    (TABLE, ROW, 'id = "pgoff=2"\noffset = 1.5\n', 0, "offset must be an integer or an expression, not 1.5"),
    (TABLE, ROW, 'id = "pgoff=2"\noffset = "7 ** 7 ** 10"\n', 0, "7 ** 282475249 is too large"),
    (TABLE, ROW, 'id = "pgoff=2"\noffset = 18446744073709551616\n', 0, "value 18446744073709551616 is "
                                                                       "0x10000000000000000, above 2^64-1"),
    (TABLE, ROW, 'id = "pgoff=2"\noffset = "0xFFFFFFFFFFFFF000 + page - 4096"\n', 0,
     "is 0x10000000000000000, above 2^64-1 (the largest integer of the helper protocol) (for page = 8192"),
    (TABLE, ROW, 'id = "pgoff=2"\noffset = "-1"\n', 0, "bad expression '-1': unsupported element"),
    (TABLE, ROW, 'id = "pgoff=2"\nexpect = 5\n', 0, "expect must be a non-empty string or a table of "
                                                    "conditions (or default) to strings, not 5"),
    (TABLE, ROW, 'id = 2\n', 0, "id must be a non-empty string, not 2"),
    (TABLE, ROW, 'id = "pgoff=2"\noffset =\n', 1, "invalid TOML: Invalid value"),
    # known-issues.toml (schema 2, knownissues.py) names the record's [[issue]] line.
    (KNOWN, KI_1, 'cases = "errors/unknown-prot-bit"\n', HEADER, "cases must be a non-empty list of strings"),
    (KNOWN, KI_1_TITLE, "title = 3\n", HEADER, "title must be a non-empty string"),
    (KNOWN, KI_1_VERSIONS, 'component = "qemu"\nversions = ">=banana"\n', HEADER,
     "versions: Invalid specifier: '>=banana'"),
    (KNOWN, 'symptom = { errno = "EINVAL" }\n', 'symptom = "EINVAL"\n', HEADER, "symptom: a table"),
    (KNOWN, KI_1_EVIDENCE, 'evidenc = "', HEADER, "unknown field 'evidenc'"),
    (KNOWN, KI_1, KI_1 + "[[issue]\n", 1, "invalid TOML"),
    (CLAUSES, CLAUSE, 'section = "NOPE"\npage = "mmap2(2)"\n', 0, "section 'NOPE' is not one of SYNOPSIS"),
    (CLAUSES, CLAUSE, 'section = "SYNOPSIS"\npage = 2\n', 1, "page must be a non-empty string, not an integer 2"),
    (CLAUSES, CLAUSE, 'section = "SYNOPSIS"\n', HEADER, "clause #1: missing page"),
    (CLAUSES, CLAUSE, 'section = "SYNOPSIS"\npage = "mmap2(2)\n', 1, "invalid TOML: Illegal character"),
]


def expected_line(copy, path, new, offset):
    text = (copy / path).read_text()
    start = text.index(new)
    if offset is HEADER:
        return text[:text.rindex("[[", 0, start)].count("\n") + 1
    return text[:start].count("\n") + 1 + offset


@pytest.mark.parametrize("path, old, new, offset, message", CASES,
                         ids=[f"{c[0].rsplit('/', 1)[-1]}:{c[4][:40]}" for c in CASES])
def test_a_malformed_data_file_is_one_clear_error_with_file_and_line(pristine, tmp_path, path, old, new, offset,
                                                                   message):
    copy = broken_copy(pristine, tmp_path, path, old, new)
    result = conformance(["--arch", "i386", "--runner", "native"], cwd=copy, timeout=300)
    no_traceback(result.stdout, result.stderr)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]
    assert re.search(rf"{re.escape(path)}:{expected_line(copy, path, new, offset)}(: | \()", errors[0]), errors[0]
