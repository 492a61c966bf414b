"""Report: verdict records in, conformance matrix and JSON out.

The matrix and the JSON file are built from the same records that the tests
produced; nothing here reruns or re-judges a case.
"""
from __future__ import annotations

import json
import shutil
import textwrap
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
MIN_WIDTH = 40   # below this, as pytest's terminal writer does, assume 80


def terminal_width() -> int:
    """The terminal's width, as pytest's terminal writer finds it (shutil, COLUMNS; 80 when
    the output is not a terminal)."""
    width = shutil.get_terminal_size(fallback=(80, 24)).columns
    return width if width >= MIN_WIDTH else 80


def _wrap(text: str, width: int, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


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


def exit_status(records: list[dict], interrupted: bool = False, broken: bool = False) -> int:
    """0 conformant (known issues allowed), 1 nonconformant (an unexpected failure or
    pass), 6 could not run what was asked (or the harness broke: ``broken``, a test
    that failed without a verdict record), 2 interrupted."""
    counts = Counter(r["outcome"] for r in records)
    if interrupted:
        return EXIT_INTERRUPTED
    if counts["failed"] or counts["xpassed"]:
        return EXIT_NONCONFORMANT
    if counts["error"] or broken:
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


def matrix_lines(records: list[dict], clauses: dict, markup=lambda text, outcome: text,
                 width: int | None = None) -> list[str]:
    """Rows: clauses grouped by manual page section; columns: configuration@runner.

    The columns are numbered in a legend and split into blocks of as many as fit in
    `width` (default: the terminal's), each block with every row; then one verdict per
    column, wrapped to the width. The HTML report has the whole table at once."""
    width = width or terminal_width()
    columns = sorted({r["column"] for r in records})
    cells = defaultdict(list)
    for record in records:
        cells[record["clause"], record["column"]].append(record)
    used = sorted({r["clause"] for r in records},
                  key=lambda c: (SECTIONS.index(clauses[c].section), c))
    label = max([len(c) for c in used] + [10]) + 4
    col = max([len(cell_text(group)) for group in cells.values()] + [len(f"[{len(columns)}]")]) + 2
    per_block = max(1, (width - label) // col)
    lines = [""]
    for entry in (f"[{index}] {column}" for index, column in enumerate(columns, 1)):
        if lines[-1] and len(lines[-1]) + 2 + len(entry) > width:   # an entry is never split
            lines.append("")
        lines[-1] += ("  " if lines[-1] else "") + entry
    for start in range(0, len(columns), per_block):
        block = list(enumerate(columns, 1))[start:start + per_block]
        lines.append("")
        lines.append(" " * label + "".join(f"[{index}]".ljust(col) for index, _ in block).rstrip())
        section = None
        for clause in used:
            if clauses[clause].section != section:
                section = clauses[clause].section
                lines.append(section)
            row = f"  {clause}".ljust(label)
            for _, column in block:
                group = cells.get((clause, column))
                text = cell_text(group) if group else "-"
                row += markup(text.ljust(col), cell_outcome(group) if group else "n.a.")
            lines.append(row)
    lines.append("")
    for index, column in enumerate(columns, 1):
        group = [r for r in records if r["column"] == column]
        verdict = column_verdict(group)
        good = ("passed" if verdict.startswith(("CONFORMANT", "conformant")) else
                "xfailed" if verdict.startswith("NONCONFORMANT") else "failed")
        text = f"[{index}] {column}: {verdict}{guest_text(group)}"
        if len(text) > width:   # the counts go to lines of their own, whole
            head, _, counts = text.partition(" (")
            parts = _wrap(head, width) + _wrap(f"    ({counts}", width)
        else:
            parts = [text]
        lines += [markup(part, good) for part in parts]
    return lines


def guest_text(records: list[dict]) -> str:
    """How a column's guest kernel started, booted or restored from its saved state (guest_state.py)."""
    start = next((r["guest_start"] for r in records if r.get("guest_start")), None)
    if start is None:
        return ""
    fallback = f", {start['fallback']}" if start.get("fallback") else ""
    return f"; guest {start['how']} in {start['seconds']:.2f} s{fallback}"


def known_issue_lines(records: list[dict], issues: dict, width: int | None = None) -> list[str]:
    """The known issues the matrix cites, with the columns they affect, wrapped to the width."""
    width = width or terminal_width()
    lines = []
    for issue_id in sorted({r["known_issue"] for r in records if r["known_issue"]}, key=lambda i: int(i.split("-")[1])):
        columns = sorted({r["column"] for r in records if r["known_issue"] == issue_id})
        issue = issues[issue_id]
        lines += _wrap(f"{issue_id} ({issue.kind}, {issue.component} {issue.versions}): {issue.title} "
                       f"[{', '.join(columns)}]", width)
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


def release_differential(records: list[dict]) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """The cases whose answers differ between two flavours of the same libc (two releases,
    or a release and a build of one's own) on the same system.

    Returns (config@system/libc/case, {flavour (release): (answer, why)}), why as in
    differential(): the known issue, "expected" (the row expects it of that release, or
    applies only to some releases: n.a.), or the outcome. A record whose session never
    started says nothing about its libc and is left out (it is an unexpected result)."""
    by_case = defaultdict(dict)
    for record in records:
        properties = record.get("properties") or {}
        if properties.get("libc") is None:
            continue   # raw, a row n.a. before any helper ran, or a session that could not start
        key = f"{record['config']}@{record['system']}/{properties['libc']}/{record['case']}"
        by_case[key][f"{record['flavour']} ({properties.get('libc_version')})"] = record
    rows = []
    for key, by_flavour in sorted(by_case.items()):
        if len(by_flavour) < 2:
            continue
        answers = {flavour: ("n.a." if r["outcome"] == "n.a." else observed_summary(r), r["outcome"])
                   for flavour, r in by_flavour.items()}
        if len(set(answers.values())) < 2:
            continue
        rows.append((key, {flavour: (answers[flavour][0], r["known_issue"] or (
            "expected" if r["outcome"] in ("passed", "n.a.") else r["outcome"])) for flavour, r in by_flavour.items()}))
    return rows


def differential_lines(records: list[dict], width: int | None = None, rows=None) -> list[str]:
    """The differential() table (or another in its shape, release_differential()) as text: a
    table (case, then each system's answer) when it fits the width; else each case on a
    line of its own, followed by one line per system's answer."""
    width = width or terminal_width()
    rows = differential(records) if rows is None else rows
    runners = sorted({runner for _, answers in rows for runner in answers})
    if not rows:
        return []
    table = [(key, [f"{answers[r][0]} ({answers[r][1]})" if r in answers else "-" for r in runners])
             for key, answers in rows]
    key_width = max(len(key) for key, _ in table) + 2
    cell = max(len(c) for _, cells in table for c in cells + runners) + 2
    if key_width + cell * len(runners) <= width:
        return ["case".ljust(key_width) + "".join(r.ljust(cell) for r in runners).rstrip()] + [
            (key.ljust(key_width) + "".join(c.ljust(cell) for c in cells)).rstrip() for key, cells in table]
    lines = []
    for key, answers in rows:
        lines += _wrap(key, width)
        for runner in runners:
            if runner in answers:
                lines += _wrap(f"    {runner}: {answers[runner][0]} ({answers[runner][1]})", width, " " * 8)
    return lines


def release_lines(records: list[dict]) -> list[str]:
    """What the releases of each libc were compared on, and the differences (release_differential)."""
    compared = defaultdict(set)
    for record in records:
        properties = record.get("properties") or {}
        if properties.get("libc"):
            compared[record["config"], record["system"], properties["libc"]].add(
                f"{record['flavour']} ({properties.get('libc_version')})")
    pairs = {key: names for key, names in compared.items() if len(names) > 1}
    if not pairs:
        return []
    rows = release_differential(records)
    lines = [f"{config}@{system} {libc}: {' vs '.join(sorted(names))}: "
             f"{sum(1 for key, _ in rows if key.startswith(f'{config}@{system}/{libc}/'))} case(s) differ"
             for (config, system, libc), names in sorted(pairs.items())]
    return lines + ([""] + differential_lines(records, rows=rows) if rows else [])


def problems_lines(records: list[dict]) -> list[str]:
    """Each unexpected result with the way to reproduce it by hand."""
    lines = []
    for record in records:
        if record["outcome"] in ("failed", "error", "xpassed", "skipped"):
            lines.append(f"{record['outcome'].upper()} {record['nodeid']}"
                         + (f" ({record['deviation']})" if record.get("deviation") else ""))
            if record.get("reason"):
                lines.append(f"    {record['reason']}")
            if record.get("reproducer"):
                lines.append(f"    reproduce: {record['reproducer']}")
    return lines


def write_json(records: list[dict], path: Path, environment: dict, status: str,
               harness_errors: list[str] = ()) -> None:
    """``status``: how the run ended (STATUS_NAMES, or "interrupted"); ``harness_errors``:
    tests that failed without a verdict record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema": SCHEMA, "status": status, "harness_errors": list(harness_errors),
                "environment": environment,
                "summary": dict(Counter(r["outcome"] for r in records))}
    records = sorted(records, key=lambda r: r["nodeid"])
    # A record a line, each by json's C encoder (an indented document goes through its
    # pure-Python one: 2.5 s for the default matrix's 21 MB).
    head = json.dumps(document, indent=1, sort_keys=True).rpartition("\n}")[0]
    path.write_text(head + ',\n "records": [\n' + ",\n".join(json.dumps(r, sort_keys=True) for r in records)
                    + "\n ]\n}\n")



# Every record of a JSON report has these fields, of these types (write_json's records).
RECORD_FIELDS = {"nodeid": str, "config": str, "flavour": str, "runner": str, "system": str, "column": str,
                 "case": str, "clause": str, "outcome": str, "known_issue": (str, type(None))}


class ReportError(Exception):
    """A file that is not a JSON report of this schema; the message is one line."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing   # the file could not be read at all


def load_report(path: Path) -> dict:
    """A JSON report written by write_json, checked: its schema must be SCHEMA and every
    record must have the fields the matrix, compare and the HTML report read."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}", missing=True) from None
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ReportError(f"{path}: not a JSON report: not JSON ({exc})") from None
    if not isinstance(document, dict) or "schema" not in document:
        raise ReportError(f"{path}: not a JSON report: no \"schema\" (a report of this suite says {SCHEMA!r})")
    if document["schema"] != SCHEMA:
        raise ReportError(f"{path}: a report of schema {str(document['schema'])[:60]!r}; this suite reads {SCHEMA!r}")
    records = document.get("records")
    if not isinstance(records, list):
        raise ReportError(f"{path}: not a JSON report: \"records\" is not a list")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ReportError(f"{path}: record #{index + 1} is not an object")
        for name, kind in RECORD_FIELDS.items():
            if not isinstance(record.get(name), kind):
                raise ReportError(f"{path}: record #{index + 1} ({str(record.get('nodeid'))[:80]}): "
                                  f"{name} is missing or of the wrong type")
        if record["outcome"] not in SEVERITY:
            raise ReportError(f"{path}: record #{index + 1} ({record['nodeid'][:80]}): unknown outcome "
                              f"{record['outcome'][:40]!r}")
    for key in ("environment", "summary"):
        if not isinstance(document.get(key, {}), dict):
            raise ReportError(f"{path}: not a JSON report: {key!r} is not an object")
    return document
