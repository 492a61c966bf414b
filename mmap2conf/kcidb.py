"""KCIDB I/O data of a JSON report, validated with kcidb-io's own schema before it is
written.

    mmap2-conformance kcidb REPORT.json [--origin NAME] [--commit SHA] [-o PATH]

The objects (schema v5.3 of kcidb-io 141, its latest):

- **checkout**: the suite's own source, its git commit (the report's
  ``environment.suite.commit`` when the run recorded one, else ``--commit``, else the
  HEAD of this checkout, marked ``misc.dirty`` when the work tree has changes).
- **builds**: one per system under test: a configuration's helper flavour run by one
  runner of one version (``config``, ``flavour`` and its libc, ``runner``,
  ``runner_version``; any further property the records carry, such as
  ``kernel_release`` or ``libc_version``, goes to ``misc``). ``architecture`` is the
  configuration, ``config_name`` is ``<config>-<flavour>``.
- **tests**: one per case, ``path`` = ``mmap2.<clause>.<table>.<escaped id>`` (the
  clause's own dotted parts, e.g. ``mmap2.mmap2.DESCRIPTION.unit.offset-unit.pgoff_3d1``;
  the id escaped as mmap2conf/names.py documents: every byte outside [A-Za-z0-9-] as
  ``_`` and two hex digits), the whole record as ``misc``, its reason as
  ``log_excerpt``, the host as ``environment``.
- **issues** and **incidents**: each known issue the records cite is an issue (its
  record of known-issues.toml as ``misc``, ``culprit.code``: the system under test is
  at fault); an expected failure is an incident of it with ``present: true``, an
  unexpected pass one with ``present: false``. This is how kcidb-io itself carries the
  v4 "waived" flag into v5 (``Version._inherit`` in kcidb_io/schema/v05_00.py: an issue
  and, per waived test, an incident with ``present: true``).

Status of each outcome (KCIDB's own definitions, in the schema's "status" text):

    passed  -> PASS    "completed and reported the tested code as correct"
    failed  -> FAIL    "completed and reported the tested code as faulty"
    xfailed -> FAIL    the code is faulty, in a known way: plus the incident (present)
    xpassed -> PASS    the code answered as the manual page says; the known issue is
                       absent (incident present: false). The suite's run fails on it,
                       because known-issues.toml is stale, not because the code is.
    n.a.    -> SKIP    "did not run ... because it was not applicable"
    skipped -> MISS    the case applies but could not run here (a runner, emulator or
                       scratch directory unavailable): "didn't run due to a failure in
                       the test harness", status of test and code unknown
    error   -> ERROR   "didn't complete due to a failure in its code"

Ids: ``<origin>:<commit>`` for the checkout; builds and tests add the first 16 hex
digits of the report's SHA-256 (one run), so resubmitting the same report replaces its
objects and another run adds its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

from . import names
from .model import REPO

ORIGIN = "mmap2_conformance"
ORIGIN_RE = re.compile(r"[a-z0-9_]+")        # kcidb-io schema v3+: origin_pattern
STATUS = {"passed": "PASS", "failed": "FAIL", "xfailed": "FAIL", "xpassed": "PASS",
          "n.a.": "SKIP", "skipped": "MISS", "error": "ERROR"}
# Record fields that describe the system under test rather than the case.
SYSTEM_FIELDS = ("config", "flavour", "runner", "system", "runner_version", "libc", "libc_version",
                 "kernel_release", "kernel_bits", "page_size", "emulator", "qemu_version")
ISSUE_VERSION = 1       # known-issues.toml has no revisions; kcidb-io uses 1 for its own
LOG_EXCERPT_MAX = 16384  # the schema's maxLength


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def suite_checkout(document: dict, commit: str | None = None) -> dict:
    """What is known of the suite's source: commit, dirty flag, where it came from."""
    recorded = (document.get("environment") or {}).get("suite") or {}
    if commit is None and recorded.get("commit"):
        return {"commit": recorded["commit"], "dirty": bool(recorded.get("dirty")), "from": "report"}
    if commit is not None:
        return {"commit": commit, "dirty": False, "from": "--commit"}
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head, "dirty": bool(status), "from": f"git HEAD of {REPO}"}


def _build_key(record: dict) -> tuple:
    return (record["config"], record["flavour"], record["system"], record.get("runner_version") or "")


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def kcidb_document(document: dict, report_bytes: bytes, origin: str = ORIGIN, commit: str | None = None,
                   known_issues: dict | None = None) -> dict:
    """The KCIDB I/O data (schema v5.3) of a JSON report. known_issues: id -> record."""
    if not ORIGIN_RE.fullmatch(origin):
        raise ValueError(f"origin {origin!r}: KCIDB origins are [a-z0-9_]+")
    known_issues = known_issues or {}
    run = hashlib.sha256(report_bytes).hexdigest()[:16]
    source = suite_checkout(document, commit)
    checkout_id = f"{origin}:{source['commit'] or 'unknown'}{'+dirty' if source['dirty'] else ''}"
    checkout = {"id": checkout_id, "origin": origin, "tree_name": "mmap2-conformance",
                "misc": {"suite": "mmap2-conformance", "commit_from": source["from"], "dirty": source["dirty"],
                         "report_schema": document.get("schema")}}
    if source["commit"] and re.fullmatch(r"[0-9a-f]{40}", source["commit"]):
        checkout["git_commit_hash"] = source["commit"]
    remote = _git("remote", "get-url", "origin") if source["from"].startswith("git") else None
    if remote and remote.startswith("https://"):
        checkout["git_repository_url"] = remote

    environment = document.get("environment") or {}
    builds, tests, incidents, cited = {}, [], [], {}
    for record in document["records"]:
        key = _build_key(record)
        build_id = f"{origin}:{run}:{':'.join(key)}"
        if key not in builds:
            system = {k: record[k] for k in SYSTEM_FIELDS if record.get(k) is not None}
            builds[key] = {
                "id": build_id, "origin": origin, "checkout_id": checkout_id,
                "architecture": re.sub(r"[^a-z0-9_]", "_", record["config"].lower()),
                "config_name": f"{record['config']}-{record['flavour']}",
                "comment": f"{record['config']} {record['flavour']} helper on {record['system']} "
                           f"{record.get('runner_version') or ''}".strip(),
                "misc": _json_safe(system)}
        if record.get("observed") is not None:   # the helper was built and answered
            builds[key]["status"] = "PASS"
        properties = record.get("properties") or {}
        if properties.get("libc"):   # the libc and release the helper reported (none in raw)
            builds[key]["misc"].setdefault("libc", properties["libc"])
            builds[key]["misc"].setdefault("libc_version", properties.get("libc_version"))
        path = ".".join(["mmap2", *(names.component(part) for part in record["clause"].split(".")),
                         *names.case_components(record["case"])])
        test_id = f"{build_id}:{record['case']}"
        test = {"id": test_id, "origin": origin, "build_id": build_id, "path": path,
                "status": STATUS[record["outcome"]], "comment": f"{record['case']}: {record['outcome']}",
                "environment": {"comment": environment.get("host", ""), "misc": _json_safe(environment)},
                "misc": _json_safe(record)}
        if record.get("reason"):
            test["log_excerpt"] = str(record["reason"])[:LOG_EXCERPT_MAX]
        if isinstance(record.get("exchange_ms"), (int, float)):
            test["duration"] = record["exchange_ms"] / 1000
        tests.append(test)
        issue = record.get("known_issue")
        if issue and record["outcome"] in ("xfailed", "xpassed"):
            cited[issue] = None
            incidents.append({"id": f"{origin}:{issue}:{ISSUE_VERSION}:{test_id}", "origin": origin,
                              "issue_id": f"{origin}:{issue}", "issue_version": ISSUE_VERSION,
                              "test_id": test_id, "present": record["outcome"] == "xfailed",
                              "comment": str(record.get("reason") or "")})
    issues = []
    for issue in sorted(cited):
        known = known_issues.get(issue)
        fields = dataclasses.asdict(known) if dataclasses.is_dataclass(known) else {}
        title = fields.get("title") or issue
        entry = {"id": f"{origin}:{issue}", "origin": origin, "version": ISSUE_VERSION,
                 "comment": f"{issue}: {title}", "report_subject": title,
                 "culprit": {"code": True, "tool": False, "harness": False},
                 "misc": _json_safe(fields or {"id": issue, "note": "not in this checkout's known-issues.toml"})}
        if re.fullmatch(r"https://\S+", str(fields.get("upstream", ""))):
            entry["report_url"] = fields["upstream"]
        issues.append(entry)

    from kcidb_io import schema   # late: only this command needs it (pinned in requirements.txt)
    data = {"version": {"major": schema.LATEST.major, "minor": schema.LATEST.minor},
            "checkouts": [checkout], "builds": list(builds.values()), "tests": tests}
    if issues:
        data["issues"], data["incidents"] = issues, incidents
    schema.LATEST.validate_exactly(data)
    return data


def status_counts(data: dict) -> Counter:
    return Counter(test["status"] for test in data["tests"])


def write_kcidb(json_path: Path, output: Path | None, origin: str = ORIGIN, commit: str | None = None,
                known_issues: dict | None = None) -> str:
    """Write (or, without output, return) the KCIDB JSON text of a JSON report."""
    raw = Path(json_path).read_bytes()
    data = kcidb_document(json.loads(raw), raw, origin, commit, known_issues)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    return text
