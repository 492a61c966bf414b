"""Fixtures for the harness's own tests: copies of arches/ to break on purpose, real
reports of small runs, and a report with every outcome written by the suite's own writer."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmap2conf import report
from mmap2conf.cases import load_clauses
from mmap2conf.model import ARCHES_DIR, REPO


@pytest.fixture
def arches_copy(tmp_path):
    target = tmp_path / "arches"
    shutil.copytree(ARCHES_DIR, target)
    return target


@pytest.fixture
def edit():
    """Replace the first ``old`` in a file by ``new``; the text must be there."""
    def replace(path, old, new):
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))
    return replace


@pytest.fixture(scope="session")
def real_reports(tmp_path_factory):
    """The i386 cases run under the system's qemu-user (7.2, as a --qemu-dir build) and by the
    host kernel, as two reports, each with its KTAP (run --ktap); one pair of runs for every
    test that reads real reports."""
    out = tmp_path_factory.mktemp("reports")
    qemu = Path(shutil.which("qemu-i386-static")).parent
    for runner, more in (("qemu-user", ["--qemu-dir", str(qemu)]), ("native", [])):
        subprocess.run([sys.executable, "-m", "mmap2conf", "run", "--arch", "i386", "--runner", runner, *more,
                        "--reports", str(out / runner), "--ktap", str(out / runner / "conformance.ktap"),
                        "--", "-q"], cwd=REPO, check=True,
                       capture_output=True, timeout=600)
    return out


def _record(column, flavour, case, clause, outcome, known_issue=None, reason=None):
    """A verdict record with every field the plugin writes (README "The JSON report")."""
    config, runner = column.split("@")
    ran = outcome not in ("n.a.", "skipped")
    return {"nodeid": f"tests/test_conformance.py::test_case[{config}/{flavour}/{runner}/{case}]",
            "config": config, "flavour": flavour, "runner": runner, "system": runner, "runner_version": "7.2.22",
            "column": column, "case": case, "table": case.split("/")[0],
            "case_file": f"tests/cases/{case.split('/')[0]}.toml:10", "clause": clause,
            "section": load_clauses()[clause].section, "call": "mmap2",
            "request": {"op": "call", "id": case} if ran else None,
            "expected": {"result": "mapped", "block": 1} if ran else None,
            "observed": {"result": "error", "errno": "EINVAL"} if ran else None,
            "sources": ["mmap2(2) DESCRIPTION"], "outcome": outcome, "reason": reason,
            "known_issue": known_issue,
            "reproducer": "echo '{\"op\":\"call\"}' | qemu-i386-static helper" if ran else None,
            "helper_process": "1:i386/raw/qemu-user:1" if ran else None, "exchange_ms": 2.5 if ran else None,
            "guest_start": None}


@pytest.fixture
def outcomes_report(tmp_path):
    """A JSON report (report.write_json) with each of the seven outcomes, over two columns."""
    records = [
        _record("i386@qemu-user", "raw", "offset-unit/pgoff=1", "mmap2.DESCRIPTION.unit", "passed"),
        _record("i386@qemu-user", "raw", "errors/unknown-prot-bit", "mmap.DESCRIPTION.prot", "xfailed", "KI-1",
                "KI-1: qemu-user rejects unknown PROT_ bits with EINVAL (expected a mapping; observed EINVAL)"),
        _record("i386@qemu-user", "glibc", "large-offsets/pgoff=0x100001", "mmap2.DESCRIPTION.large-files",
                "xpassed", "KI-9", "[XPASS(strict)] KI-9: qemu-user before 8.1 truncates offsets"),
        _record("i386@qemu-user", "musl", "libc-limits/musl-length-ptrdiff-max", "mmap.ERRORS.ENOMEM",
                "n.a.", reason="n.a.: the row checks glibc only; this is the musl flavour"),
        _record("armhf@qemu-user", "raw", "errors/eperm-exec-on-a-noexec-mount", "mmap.ERRORS.EPERM",
                "skipped", reason="unavailable: no noexec tmpfs here"),
        _record("armhf@qemu-user", "raw", "precedence/bad-fd-and-length-0", "mmap.ERRORS.EBADF", "failed",
                reason="expected EBADF, observed EINVAL\nsecond line of the reason"),
        _record("armhf@qemu-user", "glibc", "return-value/error-is-minus-one", "mmap2.RETURN_VALUE.error", "error",
                reason="ProtocolError: the helper closed its output"),
    ]
    path = tmp_path / "outcomes.json"
    report.write_json(records, path, {"host": "Linux 6.1.0 x86_64", "python": "3.11.7"}, "nonconformant")
    return path


@pytest.fixture
def given_report():
    """A report named by MMAP2CONF_REPORT (make check: the full run's), or None."""
    path = os.environ.get("MMAP2CONF_REPORT")
    return Path(path) if path else None


# The reports the format tests (KTAP, KCIDB, LAVA) read: every outcome, two real runs, and
# under make check the full run's (MMAP2CONF_REPORT).
REPORTS = ["outcomes", "real-qemu-user", "real-native"] + (["given"] if os.environ.get("MMAP2CONF_REPORT") else [])


@pytest.fixture(params=REPORTS)
def json_report(request, outcomes_report, given_report):
    if request.param == "outcomes":
        return outcomes_report
    if request.param == "given":
        return given_report
    return request.getfixturevalue("real_reports") / request.param.removeprefix("real-") / "conformance.json"
