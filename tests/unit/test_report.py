"""The matrix and the JSON come from the records alone."""
import json
import re

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


def test_a_guest_columns_verdict_says_how_its_guest_started():
    booted = dict(record("i386@linux-a", "mmap2.DESCRIPTION.unit", "passed"),
                  guest_start={"how": "booted", "seconds": 4.213, "fallback": "the saved state is corrupt"})
    restored = dict(record("i386@linux-b", "mmap2.DESCRIPTION.unit", "passed"),
                    guest_start={"how": "restored", "seconds": 0.127, "fallback": None})
    text = "\n".join(matrix_lines([booted, restored, record("i386@native", "mmap2.DESCRIPTION.unit", "passed")],
                                  CLAUSES, width=400))
    assert "guest booted in 4.21 s, the saved state is corrupt" in text
    assert "[2] i386@linux-b: CONFORMANT (1 passed); guest restored in 0.13 s" in text
    assert "[3] i386@native: CONFORMANT (1 passed)\n" in text + "\n"


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


def twenty_two_columns():
    """Records like a full run's: 22 configuration@runner columns over every clause."""
    columns = [f"{config}@qemu-user" for config in ("aarch64", "arm", "armhf", "hexagon", "hppa", "i386", "m68k",
                                                     "mips", "mips64", "mipsel", "or1k", "ppc", "riscv32",
                                                     "sparc32plus", "sparc64")]
    columns += ["armhf@linux-32", "i386@linux-32", "i386@native", "mipsel@linux-32", "mipsel@linux-16k",
                "mipsel@linux-64bit-4k", "x86_64@native"]
    outcomes = ("passed", "xfailed", "n.a.", "failed")
    return [record(column, clause, outcomes[(i + j) % len(outcomes)], "KI-12" if (i + j) % 4 == 1 else None)
            for i, column in enumerate(columns) for j, clause in enumerate(sorted(CLAUSES))], columns


def test_the_matrix_fits_the_width_in_blocks_of_columns():
    records, columns = twenty_two_columns()
    assert len(columns) == 22
    for width in (80, 120, 200):
        lines = matrix_lines(records, CLAUSES, width=width)
        assert max(len(line) for line in lines) <= width, width
        legend = lines[:lines.index("")]
        assert re.findall(r"\[\d+\] [^ ]+", " ".join(legend)) == [f"[{n}] {c}" for n, c in
                                                                  enumerate(sorted(columns), 1)]
        assert all(re.fullmatch(r"(\[\d+\] [^ ]+)(  \[\d+\] [^ ]+)*", line) for line in legend)
        blocks = [[int(n) for n in re.findall(r"\[(\d+)\]", line)]
                  for line in lines if re.fullmatch(r" +\[\d+\]( +\[\d+\])*", line)]
        assert [n for block in blocks for n in block] == list(range(1, 23))   # each column in one block
        rows = [line for line in lines if line.startswith("  mmap2.DESCRIPTION.unit ")]
        assert len(rows) == len(blocks)                                       # every row in every block
        # every column's verdict, whole once the wrapped lines are joined
        text = " ".join(" ".join(line.split()) for line in lines)
        for index, column in enumerate(sorted(columns), 1):
            assert f"[{index}] {column}: " in text
        assert text.count("UNEXPECTED RESULTS (") == 22
    assert len(matrix_lines(records, CLAUSES, width=400)) < len(matrix_lines(records, CLAUSES, width=80))


def test_the_matrix_takes_the_terminal_width(monkeypatch):
    records, _ = twenty_two_columns()
    monkeypatch.setenv("COLUMNS", "100")
    assert max(len(line) for line in matrix_lines(records, CLAUSES)) <= 100


def test_known_issues_and_differences_fit_80_columns():
    from mmap2conf.knownissues import load_known_issues
    from mmap2conf.report import differential_lines, known_issue_lines

    issues = {i.id: i for i in load_known_issues()}
    records, columns = twenty_two_columns()
    assert max(len(line) for line in known_issue_lines(records, issues, width=80)) <= 80

    def answer(runner, observed, outcome="passed", issue=None):
        return {"config": "mipsel", "flavour": "raw", "case": "large-offsets/pgoff=0x100001", "runner": runner,
                "system": runner,
                "outcome": outcome, "known_issue": issue, "observed": observed, "column": f"mipsel@{runner}",
                "clause": "c", "nodeid": runner}

    answers = [answer("linux-32", {"result": "mapped", "block": 0x100001}),
               answer("linux-16k", {"result": "error", "errno": "EINVAL"}),
               answer("qemu-user", {"result": "mapped", "block": 1}, "xfailed", "KI-9")]
    lines = differential_lines(answers, width=80)
    assert max(len(line) for line in lines) <= 80
    assert lines[0] == "mipsel/raw/large-offsets/pgoff=0x100001"
    assert "    qemu-user: block 0x1 (KI-9)" in lines
    wide = differential_lines(answers, width=200)
    assert wide[0].split() == ["case", "linux-16k", "linux-32", "qemu-user"]


def release(flavour, version, observed, outcome="passed", issue=None, case="libc-limits/x", libc="glibc"):
    return {"config": "i386", "flavour": flavour, "case": case, "runner": "native", "system": "native",
            "outcome": outcome, "known_issue": issue, "observed": observed, "column": "i386@native",
            "clause": "c", "nodeid": f"{flavour}/{case}",
            "properties": None if version is None else {"libc": libc, "libc_version": version}}


def test_the_release_view_lists_the_cases_two_releases_of_one_libc_answer_differently():
    from mmap2conf.report import release_differential, release_lines
    records = [release("glibc", "2.36", {"result": "mapped", "block": 1}, "xfailed", "KI-99"),
               release("glibc-2.41", "2.41", {"result": "error", "errno": "EINVAL"}),
               release("mine", "2.42.9000", {"result": "error", "errno": "EINVAL"}),
               # the same answer from both: not a difference
               release("glibc", "2.36", {"result": "error", "errno": "EINVAL"}, case="libc-limits/same"),
               release("glibc-2.41", "2.41", {"result": "error", "errno": "EINVAL"}, case="libc-limits/same"),
               # a row for some releases only: n.a. after the probe, with the release
               release("glibc", "2.36", None, "n.a.", case="libc-limits/new"),
               release("glibc-2.41", "2.41", {"result": "error", "errno": "EINVAL"}, case="libc-limits/new"),
               # another libc on the same system is never compared with glibc
               release("musl", "1.2.5", {"result": "error", "errno": "ENOMEM"}, libc="musl"),
               # a session that never started says nothing
               release("glibc-2.41", None, None, "skipped", case="libc-limits/skipped"),
               release("raw", None, {"result": "mapped", "block": 0})]
    records[5]["properties"] = {"libc": "glibc", "libc_version": "2.36"}
    assert release_differential(records) == [
        ("i386@native/glibc/libc-limits/new", {"glibc (2.36)": ("n.a.", "expected"),
                                               "glibc-2.41 (2.41)": ("EINVAL", "expected")}),
        ("i386@native/glibc/libc-limits/x", {"glibc (2.36)": ("block 0x1", "KI-99"),
                                             "glibc-2.41 (2.41)": ("EINVAL", "expected"),
                                             "mine (2.42.9000)": ("EINVAL", "expected")})]
    text = "\n".join(release_lines(records))
    assert "i386@native glibc: glibc (2.36) vs glibc-2.41 (2.41) vs mine (2.42.9000): 2 case(s) differ" in text
    assert "musl" not in text.split("\n")[0]


def test_compare_matches_two_flavours_of_one_report(tmp_path):
    from mmap2conf.cli import compare
    records = [release("glibc", "2.36", {"result": "mapped", "block": 1}, "xfailed", "KI-99"),
               release("glibc-2.41", "2.41", {"result": "error", "errno": "EINVAL"}),
               release("glibc", "2.36", {}, case="libc-limits/same"),
               release("glibc-2.41", "2.41", {}, case="libc-limits/same"),
               dict(release("glibc", "2.36", {}, case="libc-limits/x"), config="hppa")]   # hppa has one only
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": SCHEMA, "records": records}))
    assert compare(path, path, ignore_runner=False, flavours=[("glibc", "glibc-2.41")]) == [
        ("i386/glibc=glibc-2.41/native/libc-limits/x", "xfailed", "passed", "KI-99")]
    assert compare(path, path, ignore_runner=False) == []


def test_every_report_shows_the_kind_of_a_deviation_and_of_a_known_issue(outcomes_report):
    from mmap2conf.htmlreport import render
    from mmap2conf.knownissues import load_known_issues
    from mmap2conf.ktap import ktap_lines
    from mmap2conf.report import problems_lines
    document = json.loads(outcomes_report.read_text())
    failed = next(r for r in document["records"] if r["outcome"] == "failed")
    failed.update(deviation="differs-from-linux", reason="differs-from-linux: expected EBADF, got EINVAL")
    assert f"FAILED {failed['nodeid']} (differs-from-linux)" in problems_lines(document["records"])
    assert "  # deviation: differs-from-linux" in ktap_lines(document)
    page = render(document, CLAUSES, {issue.id: issue for issue in load_known_issues()})
    assert "<th>deviation</th><td><code>differs-from-linux</code>" in page
    assert "<th>id</th><th>kind</th>" in page and "<td>KI-1</td><td>differs-from-linux</td>" in page
