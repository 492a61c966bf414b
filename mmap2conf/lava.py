"""LAVA results of a JSON report: one `lava-test-case` command line per case.

    mmap2-conformance lava REPORT.json [-o PATH]

prints, one per case, in the order of the report:

    lava-test-case <config>.<flavour>.<system>.<table>.<escaped id> --result <result>

for example ``lava-test-case i386.raw.native.large-offsets.pgoff_3d0x100001 --result pass``.
The name uses only ``[-_a-zA-Z0-9.]`` (the id escaped as mmap2conf/names.py documents),
because LAVA splits the signal's parameters on ``=``, drops an id with a space, and
makes a results directory per id (lava-test-case in lava-dispatcher's lava_test_shell,
and handle_testcase in lava_dispatcher/actions/test/shell.py). The lines are shell
commands: lava/mmap2-conformance.yaml runs them with ``sh`` on the device, where LAVA
puts its ``lava-test-case`` helper on PATH.

Results (LAVA knows pass, fail, skip and unknown: lava_dispatcher/connection.py,
SignalMatch.match):

    passed  -> pass
    failed  -> fail
    xfailed -> fail      LAVA has no expected failure: the system under test does not do
                         what the manual page says, in a way known-issues.toml records
    xpassed -> pass      the system answered as the manual page says (the known issue is
                         absent; the suite's run fails until the record is updated)
    n.a.    -> skip
    skipped -> skip
    error   -> unknown   the harness failed, so nothing is known of the system

What the suite concludes is the run's own exit status, which the test definition
reports as one more test case, ``verdict`` (pass when every case passed, is n.a. or
is a known issue). The known issues themselves are in the run's log (the matrix ends
with them) and in the JSON, KCIDB (as incidents) and KTAP (as XFAIL) reports.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import names

RESULT = {"passed": "pass", "failed": "fail", "xfailed": "fail", "xpassed": "pass",
          "n.a.": "skip", "skipped": "skip", "error": "unknown"}


def case_name(record: dict) -> str:
    """config.flavour.system.table.id: the flavour (glibc-2.41), the system (qemu-10.0,
    linux-6.12.117+deb13-arm64) and the id escaped as for KCIDB, so that "." separates
    components only."""
    return ".".join([names.component(record["config"]), names.escape(record["flavour"]),
                     names.escape(record["system"]), *names.case_components(record["case"])])


def lava_lines(document: dict) -> list[str]:
    lines, seen = [], set()
    for record in document["records"]:
        name = case_name(record)
        if name in seen:   # LAVA refuses a second result for one test case id
            raise ValueError(f"two records are named {name}: {record['nodeid']}")
        seen.add(name)
        lines.append(f"lava-test-case {name} --result {RESULT[record['outcome']]}")
    return lines


def write_lava(json_path: Path, output: Path | None) -> str:
    text = "\n".join(lava_lines(json.loads(Path(json_path).read_text()))) + "\n"
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    return text
