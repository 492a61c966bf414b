"""Issue 15 item 7 (the command's part): compare and html refuse what is not a report
of this schema with one line and a distinct status; `run` publishes only what it
wrote; two runs sharing --reports do not share a Chromium profile."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mmap2conf import cli
from mmap2conf.report import SCHEMA

from faultlib import REPO, no_traceback, tag_of

CHROMIUM = shutil.which("chromium")


def command(*args, timeout=600):
    result = subprocess.run([sys.executable, "-m", "mmap2conf", *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    no_traceback(result.stdout, result.stderr)
    return result


def run(reports: Path, *args, timeout=600):
    return command("run", "--arch", "i386", "--runner", "native", *args, "--reports", reports, "--", "-q",
                   timeout=timeout)


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    reports = tmp_path_factory.mktemp("real")
    result = run(reports)
    assert result.returncode == 0, result.stdout[-2000:]
    return reports / "conformance.json"


def variant(tmp_path, real_report, change):
    document = json.loads(real_report.read_text())
    path = tmp_path / "variant.json"
    path.write_text(change(document) if callable(change) else change)
    return path


def _drop_case(document):
    del document["records"][3]["case"]
    return json.dumps(document)


def _bad_outcome(document):
    document["records"][0]["outcome"] = "sort of"
    return json.dumps(document)


def _other_clause(document):
    document["records"][0]["clause"] = "mmap3.DESCRIPTION.gone"
    return json.dumps(document)


BAD = [
    ("another schema", lambda d: json.dumps({**d, "schema": "mmap2-conformance/1"}), cli.EXIT_BAD_REPORT,
     f"a report of schema 'mmap2-conformance/1'; this suite reads {SCHEMA!r}"),
    ("a list", "[1, 2, 3]", cli.EXIT_BAD_REPORT, 'not a JSON report: no "schema"'),
    ("not JSON", "<html>hello</html>", cli.EXIT_BAD_REPORT, "not a JSON report: not JSON"),
    ("records not a list", json.dumps({"schema": SCHEMA, "records": {}}), cli.EXIT_BAD_REPORT,
     '"records" is not a list'),
    ("a record without its case", _drop_case, cli.EXIT_BAD_REPORT, "record #4 ("),
    ("an unknown outcome", _bad_outcome, cli.EXIT_BAD_REPORT, "unknown outcome 'sort of'"),
]


@pytest.mark.parametrize("what, change, status, message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("action", ["compare", "html"])
def test_a_json_that_is_not_a_report_of_this_schema_is_refused(tmp_path, real_report, action, what, change,
                                                              status, message):
    bad = variant(tmp_path, real_report, change)
    args = [real_report, bad] if action == "compare" else [bad, tmp_path / "out.html"]
    result = command(action, *args)
    assert result.returncode == status
    assert result.stderr.count("\n") == 1 and message in result.stderr and str(bad) in result.stderr
    assert not (tmp_path / "out.html").exists()


@pytest.mark.parametrize("action", ["compare", "html"])
def test_a_file_that_cannot_be_read_is_its_own_status(tmp_path, real_report, action):
    for missing in (tmp_path / "nothing.json", tmp_path):
        args = [real_report, missing] if action == "compare" else [missing, tmp_path / "out.html"]
        result = command(action, *args)
        assert result.returncode == cli.EXIT_NO_INPUT
        assert result.stderr.count("\n") == 1 and "cannot be read" in result.stderr


def test_a_report_naming_a_clause_this_checkout_lacks_is_refused_by_html(tmp_path, real_report):
    bad = variant(tmp_path, real_report, _other_clause)
    result = command("html", bad, tmp_path / "out.html")
    assert result.returncode == cli.EXIT_BAD_REPORT
    assert "names clause 'mmap3.DESCRIPTION.gone', which tests/clauses.toml does not have" in result.stderr


def test_html_to_a_path_that_cannot_be_written(tmp_path, real_report):
    result = command("html", real_report, "/proc/mmap2conf/out.html")
    assert result.returncode == cli.EXIT_CANNOT_WRITE and result.stderr.count("\n") == 1


def test_run_with_an_unknown_arch_publishes_no_stale_report(tmp_path, real_report):
    reports = tmp_path / "reports"
    shutil.copytree(real_report.parent, reports)
    result = command("run", "--arch", "vax", "--reports", reports)
    assert result.returncode == 4                        # pytest's usage error
    assert "unknown configuration or tag vax" in result.stderr
    assert "no reports: the run wrote none" in result.stdout
    assert list(reports.iterdir()) == []


def test_run_to_reports_that_cannot_be_written(tmp_path):
    result = command("run", "--arch", "i386", "--reports", "/proc/mmap2conf-reports")
    assert result.returncode == cli.EXIT_CANNOT_WRITE
    assert result.stderr.count("\n") == 1 and "--reports /proc/mmap2conf-reports: cannot write there" in result.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make bootstrap)")
def test_two_runs_sharing_reports_each_take_a_screenshot_with_a_profile_of_their_own(tmp_path):
    reports = tmp_path / "shared"
    runs = [subprocess.Popen([sys.executable, "-m", "mmap2conf", "run", "--arch", "i386", "--runner", "native",
                              "--reports", str(reports), "--", "-q"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    tags = [tag_of(process.pid) for process in runs]
    outputs = [process.communicate(timeout=600) for process in runs]
    for process, (stdout, stderr) in zip(runs, outputs):
        no_traceback(stdout, stderr)
        assert process.returncode == 0, stdout[-2000:] + stderr[-2000:]
        assert "no screenshot" not in stdout and "conformance.png" in stdout
    assert sorted(p.name for p in reports.iterdir()) == sorted(cli.REPORT_FILES)
    assert (reports / "conformance.png").read_bytes().startswith(b"\x89PNG")
    left = [p for p in Path(tempfile.gettempdir()).iterdir()
            if p.name.startswith("mmap2conf-chromium-") and any(t in p.name for t in tags)]
    assert left == []
