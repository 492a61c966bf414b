"""The matrix and the JSON come from the records alone."""
import json

from mmap2conf.cases import load_clauses
from mmap2conf.report import SCHEMA, cell_text, column_verdict, matrix_lines, write_json

CLAUSES = load_clauses()


def record(column, clause, outcome, known_issue=None):
    return {"column": column, "clause": clause, "outcome": outcome, "known_issue": known_issue,
            "nodeid": f"t[{column}/{clause}/{outcome}]"}


def test_cells_show_the_worst_outcome():
    assert cell_text([record("a", "c", "passed")] * 3) == "pass 3"
    assert cell_text([record("a", "c", "passed"), record("a", "c", "failed")]) == "FAIL 1/2"
    assert cell_text([record("a", "c", "passed"), record("a", "c", "xfailed", "KI-7")]) == "KI 7"
    assert cell_text([record("a", "c", "n.a.")]) == "n.a."
    assert cell_text([record("a", "c", "passed"), record("a", "c", "skipped")]) == "SKIP 1"


def test_verdicts_never_call_a_skip_or_an_unexpected_pass_conformant():
    assert column_verdict([record("a", "c", "passed")]).startswith("CONFORMANT")
    assert column_verdict([record("a", "c", "skipped")]).startswith("INCOMPLETE")
    assert column_verdict([record("a", "c", "xpassed")]).startswith("UNEXPECTED RESULTS")
    violation = dict(record("a", "c", "xfailed", "KI-1"), known_issue_kind="violates-manual")
    difference = dict(record("a", "c", "xfailed", "KI-2"), known_issue_kind="differs-from-linux")
    assert column_verdict([violation, difference]).startswith("NONCONFORMANT, known issues")
    assert column_verdict([difference]).startswith("conformant, differs from Linux")


def test_the_matrix_groups_clauses_by_section():
    records = [record("i386@qemu-user", "mmap2.DESCRIPTION.unit", "passed"),
               record("or1k@qemu-user", "mmap2.VERSIONS.ia64-unit", "passed"),
               record("x86_64@native", "mmap2.VERSIONS.no-x86-64", "passed"),
               record("i386@qemu-user", "mmap2.ERRORS.EINVAL", "failed")]
    text = "\n".join(matrix_lines(records, CLAUSES))
    assert text.index("DESCRIPTION") < text.index("ERRORS") < text.index("VERSIONS")
    assert "[1] i386@qemu-user: UNEXPECTED RESULTS" in text
    assert "[2] or1k@qemu-user: CONFORMANT" in text


def test_json_has_a_schema_and_every_record(tmp_path):
    path = tmp_path / "out" / "c.json"
    write_json([record("a", "c", "passed"), record("b", "c", "failed")], path, {"host": "h"}, "nonconformant")
    document = json.loads(path.read_text())
    assert document["schema"] == SCHEMA
    assert document["summary"] == {"passed": 1, "failed": 1}
    assert len(document["records"]) == 2


def test_the_differential_view_explains_each_answer():
    from mmap2conf.report import differential

    def answer(runner, observed, outcome="passed", issue=None):
        return {"config": "i386", "flavour": "raw", "case": "errors/x", "runner": runner, "system": runner,
                "outcome": outcome,
                "known_issue": issue, "observed": observed, "column": f"i386@{runner}", "clause": "c",
                "nodeid": runner}

    records = [answer("linux-32", {"result": "error", "errno": "EOVERFLOW"}),
               answer("native", {"result": "mapped", "block": 0}),
               answer("qemu-user", {"result": "error", "errno": "EINVAL"}, "xfailed", "KI-1")]
    assert differential(records) == [("i386/raw/errors/x", {
        "linux-32": ("EOVERFLOW", "expected"), "native": ("block 0x0", "expected"),
        "qemu-user": ("EINVAL", "KI-1")})]
    assert differential(records[1:2]) == []
