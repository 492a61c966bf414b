"""The self-contained HTML report: the matrix, each cell linked to its cases, and
for every unexpected result the exact helper input and the command that reruns it.

Built from a JSON report (the same verdict records as the terminal matrix), so it
can be regenerated or shared without rerunning anything.
"""
from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path

from .report import (SECTIONS, ReportError, cell_outcome, cell_text, column_verdict, differential, load_report,
                     release_differential)

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th.section { background: #eee; }
td.cell a { color: inherit; text-decoration: none; display: block; }
.passed { background: #d8f0d8; } .xfailed { background: #fff1c2; } .n-a- { background: #e3eef6; }
.skipped { background: #e8dcf3; } .failed, .error, .xpassed { background: #f6c9c9; font-weight: bold; }
code, pre { font: 12px/1.3 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
details { margin: 0.2em 0; } h2 { margin-top: 1.5em; }
#matrix th, #matrix td { white-space: nowrap; }
#matrix th.column { writing-mode: vertical-rl; transform: rotate(180deg); vertical-align: bottom; padding: 7px 3px; }
"""


def _answers_table(anchor: str, title: str, rows, intro: str) -> list[str]:
    """A differential: a row per case, a column per system (or flavour), each answer with why."""
    if not rows:
        return []
    heads = sorted({head for _, answers in rows for head in answers})
    out = [f"<h2 id='{anchor}'>{title}</h2><p>{intro}</p><table><tr><th>case</th>"
           + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"]
    for key, answers in rows:
        out.append(f"<tr><td>{html.escape(key)}</td>" + "".join(
            f"<td>{html.escape(answers[h][0])} ({html.escape(answers[h][1])})</td>" if h in answers
            else "<td>-</td>" for h in heads) + "</tr>")
    out.append("</table>")
    return out


def _cls(outcome: str) -> str:
    return re.sub(r"[^a-z]", "-", outcome)


def _anchor(*parts: str) -> str:
    return "c-" + re.sub(r"[^A-Za-z0-9_-]", "_", "-".join(parts))


def _case_block(record: dict) -> str:
    rows = [("outcome", record["outcome"] + (f" ({record['known_issue']}, {record.get('known_issue_kind')})"
                                             if record.get("known_issue") else "")),
            ("deviation", record.get("deviation") or ""),
            ("case", f"{record['case']} ({record.get('case_file', '')})"),
            ("flavour / system", f"{record['flavour']} / {record['system']} ({record['runner']}) "
                                 f"{record.get('runner_version') or ''}"),
            ("system identity", json.dumps(record.get("identity"), sort_keys=True) if record.get("identity") else ""),
            ("guest start", json.dumps(record.get("guest_start"), sort_keys=True) if record.get("guest_start") else ""),
            ("measured", json.dumps(record.get("properties"), sort_keys=True) if record.get("properties") else ""),
            ("expected", json.dumps(record.get("expected"), sort_keys=True)),
            ("observed", json.dumps(record.get("observed"), sort_keys=True)),
            ("sources", "; ".join(record.get("sources") or [])),
            ("reason", record.get("reason") or ""),
            ("helper input", json.dumps(record.get("request"), separators=(",", ":")) if record.get("request") else ""),
            ("reproduce", record.get("reproducer") or "")]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                   for k, v in rows if v)
    return (f'<details class="case" id="{_anchor(record["nodeid"])}"{" open" if record["outcome"] in ("failed", "error", "xpassed") else ""}>'
            f'<summary class="{_cls(record["outcome"])}">{html.escape(record["outcome"])}: '
            f'{html.escape(record["config"])}/{html.escape(record["flavour"])}@{html.escape(record["system"])} '
            f'{html.escape(record["case"])}</summary><table>{body}</table></details>')


def render(document: dict, clauses: dict, known_issues: dict) -> str:
    records = document["records"]
    columns = sorted({r["column"] for r in records})
    cells = defaultdict(list)
    for record in records:
        cells[record["clause"], record["column"]].append(record)
    used = sorted({r["clause"] for r in records}, key=lambda c: (SECTIONS.index(clauses[c].section), c))

    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>mmap2 conformance report</title><style>{STYLE}</style></head><body>",
           "<h1>mmap2(2) conformance</h1>",
           f"<p>Schema <code>{html.escape(document['schema'])}</code>; environment "
           f"<code>{html.escape(json.dumps(document.get('environment', {}), sort_keys=True))}</code>; "
           f"summary <code>{html.escape(json.dumps(document.get('summary', {}), sort_keys=True))}</code></p>"]

    bad = [r for r in records if r["outcome"] in ("failed", "error", "xpassed")]
    if bad:
        out.append(f"<h2 id='unexpected'>Unexpected results ({len(bad)})</h2>")
        out += [_case_block(r) for r in bad]

    # Column headers run upwards, so that a cell is as narrow as its text ("pass 12").
    out.append("<h2 id='matrix-heading'>Matrix</h2><table id='matrix'><tr><th>clause</th>"
               + "".join(f"<th class='column'>{html.escape(c)}</th>" for c in columns) + "</tr>")
    section = None
    for clause in used:
        if clauses[clause].section != section:
            section = clauses[clause].section
            out.append(f"<tr><th class='section' colspan='{len(columns) + 1}'>{html.escape(section)}</th></tr>")
        out.append(f"<tr><th title='{html.escape(clauses[clause].text)}'>{html.escape(clause)}</th>")
        for column in columns:
            group = cells.get((clause, column))
            if not group:
                out.append("<td>-</td>")
                continue
            out.append(f"<td class='cell {_cls(cell_outcome(group))}'><a href='#{_anchor(clause, column)}'>"
                       f"{html.escape(cell_text(group))}</a></td>")
        out.append("</tr>")
    out.append("</table><h2>Verdicts</h2><ul id='verdicts'>")
    for column in columns:
        out.append(f"<li><b>{html.escape(column)}</b>: "
                   f"{html.escape(column_verdict([r for r in records if r['column'] == column]))}</li>")
    out.append("</ul>")

    out += _answers_table("differential", "Answers that differ between systems", differential(records),
                          "Same configuration, flavour and case; each answer with why it is right or known: a "
                          "known issue, or <i>expected</i> there (an expectation keyed by the system's properties).")
    out += _answers_table("releases", "Answers that differ between releases of one libc",
                          release_differential(records),
                          "Same configuration, system, libc and case, two flavours built with that libc (release "
                          "in parentheses, as the helper reports it); each answer with why: a known issue, or "
                          "<i>expected</i> there (an expectation, or a row, for that release).")

    cited = sorted({r["known_issue"] for r in records if r.get("known_issue")})
    if cited:
        out.append("<h2>Known issues</h2><table><tr><th>id</th><th>kind</th><th>title</th><th>expected</th>"
                   "<th>observed</th><th>evidence</th><th>upstream</th></tr>")
        for issue_id in cited:
            issue = known_issues.get(issue_id)
            fields = ([issue.kind, issue.title, issue.expected, issue.observed, issue.evidence, issue.upstream]
                      if issue else ["", "(not in this checkout's known-issues.toml)"] + [""] * 4)
            out.append(f"<tr id='{_anchor(issue_id)}'><td>{html.escape(issue_id)}</td>"
                       + "".join(f"<td>{html.escape(f)}</td>" for f in fields) + "</tr>")
        out.append("</table>")

    out.append("<h2>Cases by cell</h2>")
    for clause in used:
        for column in columns:
            group = cells.get((clause, column))
            if group:
                out.append(f"<h3 id='{_anchor(clause, column)}'>{html.escape(clause)} on "
                           f"{html.escape(column)}</h3><p>{html.escape(clauses[clause].text)}</p>")
                out += [_case_block(r) for r in sorted(group, key=lambda r: r["nodeid"])]
    out.append("</body></html>")
    return "\n".join(out)


def write_html(json_path: Path, html_path: Path, clauses: dict, known_issues: dict) -> None:
    """The HTML report of a JSON report (report.load_report: a ReportError if it is none,
    or if it names clauses this checkout does not have)."""
    document = load_report(json_path)
    unknown = sorted({r["clause"] for r in document["records"]} - set(clauses))
    if unknown:
        raise ReportError(f"{json_path}: names clause {unknown[0]!r}, which tests/clauses.toml does not have "
                          f"(a report of another version of the suite?)")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render(document, clauses, known_issues))
