"""Report: verdict records in, conformance matrix and JSON out.

The matrix and the JSON file are built from the same records that the tests
produced; nothing here reruns or re-judges a case.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

SCHEMA = "mmap2-conformance/2"
# The exit status of a run (pytest's own codes where they mean the same).
EXIT_CONFORMANT, EXIT_NONCONFORMANT, EXIT_INTERRUPTED, EXIT_USAGE, EXIT_NOT_RUN = 0, 1, 2, 4, 6
STATUS_NAMES = {EXIT_CONFORMANT: "conformant", EXIT_NONCONFORMANT: "nonconformant",
                EXIT_INTERRUPTED: "interrupted", EXIT_USAGE: "usage error",
                EXIT_NOT_RUN: "could not run what was asked"}
SECTIONS = ("SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS", "VERSIONS", "HARNESS")
# Worst first: a cell shows the worst outcome among its cases.
SEVERITY = ("error", "failed", "xpassed", "skipped", "xfailed", "passed", "n.a.")
COLOURS = {"passed": "green", "xfailed": "yellow", "n.a.": "cyan", "skipped": "purple",
           "failed": "red", "xpassed": "red", "error": "red"}


def cell_outcome(records: list[dict]) -> str:
    return min((r["outcome"] for r in records), key=SEVERITY.index)


def cell_text(records: list[dict]) -> str:
    outcome = cell_outcome(records)
    counts = Counter(r["outcome"] for r in records)
    if outcome == "passed":
        return f"pass {counts['passed']}"
    if outcome == "xfailed":
        issues = sorted({r["known_issue"] for r in records if r["known_issue"]})
        return "KI " + ",".join(i.removeprefix("KI-") for i in issues)
    if outcome == "n.a.":
        return "n.a."
    if outcome == "skipped":
        return f"SKIP {counts['skipped']}"
    bad = counts["failed"] + counts["error"] + counts["xpassed"]
    return f"FAIL {bad}/{len(records)}"


def exit_status(records: list[dict], interrupted: bool) -> int:
    """0 conformant (known issues allowed), 1 nonconformant (an unexpected failure or
    pass), 6 could not run what was asked (or the harness broke), 2 interrupted."""
    counts = Counter(r["outcome"] for r in records)
    if interrupted:
        return EXIT_INTERRUPTED
    if counts["failed"] or counts["xpassed"]:
        return EXIT_NONCONFORMANT
    if counts["error"]:
        return EXIT_NOT_RUN
    return EXIT_CONFORMANT


def column_verdict(records: list[dict]) -> str:
    """Unexpected results first; then whether the known issues violate the manual page or
    only differ from Linux where the manual page allows both answers."""
    counts = Counter(r["outcome"] for r in records)
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda kv: SEVERITY.index(kv[0])))
    kinds = {r.get("known_issue_kind") for r in records if r["outcome"] == "xfailed"}
    if counts["failed"] or counts["error"] or counts["xpassed"]:
        return f"UNEXPECTED RESULTS ({summary})"
    if counts["skipped"]:
        return f"INCOMPLETE ({summary})"
    if "violates-manual" in kinds:
        return f"NONCONFORMANT, known issues ({summary})"
    if kinds:
        return f"conformant, differs from Linux ({summary})"
    return f"CONFORMANT ({summary})"


def matrix_lines(records: list[dict], clauses: dict, markup=lambda text, outcome: text) -> list[str]:
    """Rows: clauses grouped by manual page section; columns: configuration@runner."""
    columns = sorted({r["column"] for r in records})
    cells = defaultdict(list)
    for record in records:
        cells[record["clause"], record["column"]].append(record)
    used = sorted({r["clause"] for r in records},
                  key=lambda c: (SECTIONS.index(clauses[c].section), c))
    width = max([len(c) for c in used] + [10]) + 4
    col = max([len(cell_text(group)) for group in cells.values()] + [len(f"[{len(columns)}]")]) + 2
    lines = []
    # Column headers are long; print them numbered above the grid.
    for index, column in enumerate(columns, 1):
        lines.append(f"  [{index}] {column}")
    lines.append("")
    lines.append(" " * width + "".join(f"[{i}]".ljust(col) for i in range(1, len(columns) + 1)))
    section = None
    for clause in used:
        if clauses[clause].section != section:
            section = clauses[clause].section
            lines.append(section)
        row = f"  {clause}".ljust(width)
        for column in columns:
            group = cells.get((clause, column))
            text = cell_text(group) if group else "-"
            row += markup(text.ljust(col), cell_outcome(group) if group else "n.a.")
        lines.append(row)
    lines.append("")
    for index, column in enumerate(columns, 1):
        group = [r for r in records if r["column"] == column]
        verdict = column_verdict(group)
        lines.append(markup(f"[{index}] {column}: {verdict}",
                            "passed" if verdict.startswith(("CONFORMANT", "conformant")) else
                            "xfailed" if verdict.startswith("NONCONFORMANT") else "failed"))
    return lines


def known_issue_lines(records: list[dict], issues: dict) -> list[str]:
    """The known issues the matrix cites, with the columns they affect."""
    lines = []
    for issue_id in sorted({r["known_issue"] for r in records if r["known_issue"]}, key=lambda i: int(i.split("-")[1])):
        columns = sorted({r["column"] for r in records if r["known_issue"] == issue_id})
        issue = issues[issue_id]
        lines.append(f"{issue_id} ({issue.kind}, {issue.component} {issue.versions}): {issue.title} "
                     f"[{', '.join(columns)}]")
    return lines


def observed_summary(record: dict) -> str:
    """One short word for what a runner answered: an errno, a block, success, or the outcome."""
    observed = record.get("observed") or {}
    if observed.get("result") == "error":
        return observed.get("errno", "error")
    if observed.get("result") == "success":
        return "success"
    if observed.get("result") == "mapped":
        block = observed.get("block")
        return f"block {block:#x}" if isinstance(block, int) else f"mapped ({block})"
    return record["outcome"]


def differential(records: list[dict]) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """The cases of one configuration and flavour whose answers differ between systems.

    Returns (config/flavour/case, {system: (answer, why)}), where why is the known
    issue that covers the answer, or "expected" when the row expects it of that system
    (an expectation keyed by its properties), or the outcome."""
    by_case = defaultdict(dict)
    for record in records:
        by_case[f"{record['config']}/{record['flavour']}/{record['case']}"][record["system"]] = record
    rows = []
    for key, by_runner in sorted(by_case.items()):
        answers = {runner: observed_summary(r) for runner, r in by_runner.items() if r["outcome"] != "n.a."}
        if len(set(answers.values())) < 2:
            continue
        rows.append((key, {runner: (answer, by_runner[runner]["known_issue"] or
                                    ("expected" if by_runner[runner]["outcome"] == "passed" else by_runner[runner]["outcome"]))
                           for runner, answer in answers.items()}))
    return rows


def differential_lines(records: list[dict]) -> list[str]:
    rows = differential(records)
    runners = sorted({runner for _, answers in rows for runner in answers})
    if not rows:
        return []
    table = [(key, [f"{answers[r][0]} ({answers[r][1]})" if r in answers else "-" for r in runners])
             for key, answers in rows]
    width = max(len(key) for key, _ in table) + 2
    cell = max(len(c) for _, cells in table for c in cells + runners) + 2
    return ["case".ljust(width) + "".join(r.ljust(cell) for r in runners)] + [
        key.ljust(width) + "".join(c.ljust(cell) for c in cells) for key, cells in table]


def problems_lines(records: list[dict]) -> list[str]:
    """Each unexpected result with the way to reproduce it by hand."""
    lines = []
    for record in records:
        if record["outcome"] in ("failed", "error", "xpassed", "skipped"):
            lines.append(f"{record['outcome'].upper()} {record['nodeid']}")
            if record.get("reason"):
                lines.append(f"    {record['reason']}")
            if record.get("reproducer"):
                lines.append(f"    reproduce: {record['reproducer']}")
    return lines


def write_json(records: list[dict], path: Path, environment: dict, status: str) -> None:
    """``status``: how the run ended (STATUS_NAMES, or "interrupted")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema": SCHEMA, "status": status, "environment": environment,
                "summary": dict(Counter(r["outcome"] for r in records)),
                "records": sorted(records, key=lambda r: r["nodeid"])}
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")

