"""KTAP version 1 of a JSON report, as the kernel's selftests and KernelCI read it.

    mmap2-conformance ktap REPORT.json [-o PATH]     (or `run --ktap PATH`)

Layout (Documentation/dev-tools/ktap.rst, "KTAP version 1", of the kernel):

    KTAP version 1
    1..<columns>
    # mmap2-conformance: <cases> cases, <summary>
      KTAP version 1
      # Subtest: i386@qemu-user              one subtest per configuration column
      1..<cases of the column>
      # mmap2.DESCRIPTION.unit: offset-unit/pgoff=1 (tests/cases/offset-unit.toml:12)
      ok 1 raw/offset-unit/pgoff=1           one result line per case: <flavour>/<case>
      ...
    ok 1 i386@qemu-user

Each case's clause (and the row it comes from) is a diagnostic line just before its
result line, as ktap.rst asks of diagnostics about a test; a known issue, the expected
and observed answers, the reason and the reproducer of an unexpected result follow it.

Outcomes:

    passed    ok N name
    failed    not ok N name
    xfailed   ok N name # XFAIL KI-n <title>       (the known issue)
    xpassed   not ok N name # XPASS KI-n <title>   (a strict known issue that no longer fails)
    n.a.      ok N name # SKIP n.a.: <why>
    skipped   ok N name # SKIP <why it could not run here>
    error     not ok N name # ERROR <reason>

A column is "not ok" when one of its cases is; it is "ok ... # SKIP" when every case is
a skip.

Why ``ok ... # XFAIL`` for a known issue, and not TAP's ``not ok ... # TODO``:

- KTAP v1 (ktap.rst of 6.1) lists XFAIL as the directive of a test that "is expected
  to fail", "used by some kselftest tests", discourages TODO ("its use in the kernel is
  discouraged") and lists TODO as "not recognized" in its table of differences from
  TAP. kselftest writes an expected failure as ``ok N # XFAIL`` (kselftest.h,
  ksft_test_result_xfail).
- ktap.rst: a parser that meets a directive it does not support "should fall back to
  the ok / not ok result". The kernel's own parser, tools/testing/kunit/kunit_parser.py
  (6.1), supports SKIP only: ``ok # XFAIL`` counts as passed, while ``not ok # TODO``
  would count as failed and turn a run the suite calls conformant (exit status 0) into
  a failed one. LKFT's kselftest parser (Linaro test-definitions,
  automated/linux/kselftest/parse-output.py) likewise maps every ``ok`` without SKIP to
  pass.
- A TAP 13/14 consumer knows SKIP and TODO only; it reads ``ok N name # XFAIL ...`` as a
  passing test whose description carries the XFAIL note: not a failure, as the suite
  judges it. Only a consumer that knows KTAP's XFAIL (kselftest's) counts it as an
  expected failure; the others keep it visible in the directive and in the "# known
  issue" diagnostic line.

XPASS is not a KTAP directive: by the fall-back rule it reads as the "not ok" it is
written with, which is the suite's verdict (a strict known issue that no longer fails
fails the run until known-issues.toml is updated). ERROR is ktap.rst's directive for a
test whose execution failed, written with "not ok" as it asks.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

UNEXPECTED = ("failed", "error", "xpassed")
SKIPS = ("n.a.", "skipped")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _name(record: dict) -> str:
    # A KTAP description "can't include #" (ktap.rst).
    return f"{record['flavour']}/{record['case']}".replace("#", "_23")


def _diagnostics(record: dict) -> list[str]:
    lines = [f"{record['clause']}: {record['case']} ({record.get('case_file') or 'no row'})"]
    issue = record.get("known_issue")
    if issue:
        reason = record.get("reason") or ""
        lines.append(f"known issue {reason}" if reason.startswith(f"{issue}:") else f"known issue {issue}: {reason}")
    if record.get("deviation"):
        lines.append(f"deviation: {record['deviation']}")
    if record["outcome"] in UNEXPECTED:
        for key in ("expected", "observed"):
            if record.get(key) is not None:
                lines.append(f"{key}: {json.dumps(record[key], sort_keys=True)}")
        if record.get("reason") and not record.get("known_issue"):
            lines += [f"reason: {line}" for line in str(record["reason"]).splitlines() if line.strip()]
        if record.get("reproducer"):
            lines.append(f"reproduce: {record['reproducer']}")
    return [_one_line(line) for line in lines]


def result_line(number: int, record: dict, titles: dict[str, str]) -> str:
    outcome, name = record["outcome"], _name(record)
    issue = record.get("known_issue") or ""
    about = _one_line(f"{issue} {titles.get(issue, '')}")
    reason = _one_line(record.get("reason") or "")
    if outcome == "passed":
        return f"ok {number} {name}"
    if outcome == "failed":
        return f"not ok {number} {name}"
    if outcome == "xfailed":
        return f"ok {number} {name} # XFAIL {about}"
    if outcome == "xpassed":
        return f"not ok {number} {name} # XPASS {about}"
    if outcome in SKIPS:
        return f"ok {number} {name} # SKIP {reason or outcome}"
    if outcome == "error":
        return f"not ok {number} {name} # ERROR {reason}"
    raise ValueError(f"{record['nodeid']}: unknown outcome {outcome!r}")


def ktap_lines(document: dict, titles: dict[str, str] | None = None) -> list[str]:
    """The KTAP lines of a JSON report's records; titles: known issue id -> title."""
    titles = titles or {}
    by_column = defaultdict(list)
    for record in document["records"]:
        by_column[record["column"]].append(record)
    summary = ", ".join(f"{n} {o}" for o, n in sorted(document.get("summary", {}).items()))
    lines = ["KTAP version 1", f"1..{len(by_column)}",
             f"# mmap2-conformance: {len(document['records'])} cases ({summary}), "
             f"report schema {document.get('schema')}"]
    for number, column in enumerate(sorted(by_column), 1):
        records = by_column[column]
        lines += ["  KTAP version 1", f"  # Subtest: {column}", f"  1..{len(records)}"]
        for case_number, record in enumerate(records, 1):
            lines += [f"  # {line}" for line in _diagnostics(record)]
            lines.append("  " + result_line(case_number, record, titles))
        if any(r["outcome"] in UNEXPECTED for r in records):
            lines.append(f"not ok {number} {column}")
        elif all(r["outcome"] in SKIPS for r in records):
            lines.append(f"ok {number} {column} # SKIP every case is n.a. or skipped")
        else:
            lines.append(f"ok {number} {column}")
    return lines


def write_ktap(json_path: Path, output: Path | None, titles: dict[str, str] | None = None) -> str:
    """Write (or, without output, return) the KTAP text of a JSON report."""
    text = "\n".join(ktap_lines(json.loads(Path(json_path).read_text()), titles)) + "\n"
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    return text
