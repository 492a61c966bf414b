"""KTAP output, read back by the kernel's own KTAP parser (tools/testing/kunit/kunit_parser.py
of Debian's linux-source-6.1, unpacked into the build cache by mmap2conf/debian.py), with
its counts checked against the JSON report it came from."""
import json
import sys
from collections import Counter

import pytest

from mmap2conf import debian
from mmap2conf.cli import known_issue_titles, main
from mmap2conf.ktap import write_ktap



@pytest.fixture(scope="module")
def kunit_parser():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(debian.kunit_dir()))
        import kunit_parser
        yield kunit_parser
        for name in ("kunit_parser", "kunit_printer"):
            sys.modules.pop(name, None)


def parse(kunit_parser, text):
    return kunit_parser.parse_run_tests(text.splitlines())


def test_the_kernel_parser_counts_what_the_json_says(kunit_parser, json_report):
    document = json.loads(json_report.read_text())
    text = write_ktap(json_report, None, known_issue_titles())
    main_test = parse(kunit_parser, text)
    outcomes = Counter(r["outcome"] for r in document["records"])
    counts = main_test.counts
    assert counts.errors == 0, "the parser found KTAP it could not read"
    assert counts.crashed == 0
    # ok: passed, and known issues (ok # XFAIL); not ok: failures, unexpected passes, errors.
    assert counts.passed == outcomes["passed"] + outcomes["xfailed"]
    assert counts.failed == outcomes["failed"] + outcomes["xpassed"] + outcomes["error"]
    assert counts.skipped == outcomes["n.a."] + outcomes["skipped"]
    assert counts.total() == len(document["records"])
    unexpected = outcomes["failed"] + outcomes["xpassed"] + outcomes["error"]
    status = kunit_parser.TestStatus
    assert main_test.status == (status.FAILURE if unexpected else status.SUCCESS)
    assert text.count(" # XFAIL ") == outcomes["xfailed"]


def test_one_subtest_per_column_and_one_line_per_case(kunit_parser, json_report):
    document = json.loads(json_report.read_text())
    main_test = parse(kunit_parser, write_ktap(json_report, None, known_issue_titles()))
    columns = sorted({r["column"] for r in document["records"]})
    assert [subtest.name for subtest in main_test.subtests] == columns
    status = kunit_parser.TestStatus
    expected_status = {"passed": status.SUCCESS, "xfailed": status.SUCCESS, "failed": status.FAILURE,
                       "xpassed": status.FAILURE, "error": status.FAILURE,
                       "n.a.": status.SKIPPED, "skipped": status.SKIPPED}
    for subtest in main_test.subtests:
        records = [r for r in document["records"] if r["column"] == subtest.name]
        assert [case.name for case in subtest.subtests] == [f"{r['flavour']}/{r['case']}" for r in records]
        for case, record in zip(subtest.subtests, records):
            assert case.status == expected_status[record["outcome"]], case.name
            diagnostics = " ".join(case.log)
            assert record["clause"] in diagnostics      # the clause is a diagnostic line
            if record["known_issue"]:
                assert f"known issue {record['known_issue']}" in diagnostics


def test_skips_and_known_issues_carry_their_reason(outcomes_report):
    lines = write_ktap(outcomes_report, None, {"KI-1": "qemu-user rejects unknown PROT_ bits"}).splitlines()
    by_name = {line.split()[2 if line.lstrip().startswith("ok") else 3]: line.strip()
               for line in lines if line.lstrip().startswith(("ok ", "not ok "))}
    assert by_name["raw/errors/unknown-prot-bit"].endswith("# XFAIL KI-1 qemu-user rejects unknown PROT_ bits")
    assert by_name["glibc/large-offsets/pgoff=0x100001"].startswith("not ok") and " # XPASS KI-9" in \
        by_name["glibc/large-offsets/pgoff=0x100001"]
    assert by_name["musl/libc-limits/musl-length-ptrdiff-max"].endswith("# SKIP n.a.: the row checks glibc only; "
                                                                        "this is the musl flavour")
    assert by_name["raw/errors/eperm-exec-on-a-noexec-mount"].endswith("# SKIP unavailable: no noexec tmpfs here")
    assert by_name["glibc/return-value/error-is-minus-one"].startswith("not ok") and \
        "# ERROR ProtocolError" in by_name["glibc/return-value/error-is-minus-one"]
    failed = next(i for i, line in enumerate(lines) if line.endswith(" raw/precedence/bad-fd-and-length-0"))
    assert lines[failed].startswith("  not ok ")
    assert lines[failed - 3:failed] == ["  # reason: expected EBADF, observed EINVAL",
                                        "  # reason: second line of the reason",
                                        "  # reproduce: echo '{\"op\":\"call\"}' | qemu-i386-static helper"]


def test_a_column_of_skips_is_a_skip(kunit_parser, tmp_path, outcomes_report):
    document = json.loads(outcomes_report.read_text())
    document["records"] = [r for r in document["records"] if r["outcome"] in ("n.a.", "skipped")]
    for record in document["records"]:
        record["column"] = "i386@qemu-user"
    path = tmp_path / "skips.json"
    path.write_text(json.dumps(document))
    text = write_ktap(path, None)
    assert text.rstrip().splitlines()[-1] == "ok 1 i386@qemu-user # SKIP every case is n.a. or skipped"
    assert parse(kunit_parser, text).status == kunit_parser.TestStatus.SKIPPED


def test_the_ktap_command_writes_a_file(tmp_path, outcomes_report, capsys):
    out = tmp_path / "sub" / "report.ktap"
    assert main(["ktap", str(outcomes_report), "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert out.read_text().startswith("KTAP version 1\n1..2\n")
    assert main(["ktap", str(outcomes_report)]) == 0
    assert capsys.readouterr().out == out.read_text()


def test_run_writes_the_ktap_of_its_report(real_reports):
    for runner in ("qemu-user", "native"):
        written = (real_reports / runner / "conformance.ktap").read_text()
        assert written == write_ktap(real_reports / runner / "conformance.json", None, known_issue_titles())
