"""KCIDB output, validated with kcidb-io's own schema (the pinned kcidb-io package), with
statuses, builds and known-issue incidents checked against the JSON report."""
import json
from collections import Counter

import jsonschema
import pytest
from kcidb_io import schema

from mmap2conf import names
from mmap2conf.cli import main
from mmap2conf.kcidb import STATUS, kcidb_document
from mmap2conf.knownissues import load_known_issues

KNOWN = {issue.id: issue for issue in load_known_issues()}


def convert(path, **options):
    raw = path.read_bytes()
    return json.loads(raw), kcidb_document(json.loads(raw), raw, known_issues=KNOWN, **options)


def test_kcidb_io_accepts_it_and_every_case_is_a_test(json_report):
    document, data = convert(json_report)
    schema.LATEST.validate_exactly(data)        # kcidb-io's own validation (jsonschema, formats)
    assert (data["version"]["major"], data["version"]["minor"]) == (schema.LATEST.major, schema.LATEST.minor)
    assert len(data["tests"]) == len(document["records"])
    assert Counter(t["status"] for t in data["tests"]) == Counter(STATUS[r["outcome"]] for r in document["records"])
    assert len({t["id"] for t in data["tests"]}) == len(data["tests"])
    for test, record in zip(data["tests"], document["records"]):
        assert test["misc"] == record
        parts = test["path"].split(".")
        assert parts[0] == "mmap2"
        assert ".".join(parts[1:-2]) == record["clause"]
        assert names.split_case(parts) == record["case"]        # the escaping decodes


def test_one_build_per_system_under_test(json_report):
    document, data = convert(json_report)
    systems = {(r["config"], r["flavour"], r["system"], r.get("runner_version")) for r in document["records"]}
    assert len(data["builds"]) == len(systems)
    builds = {b["id"]: b for b in data["builds"]}
    assert {(b["misc"]["config"], b["misc"]["flavour"], b["misc"]["system"], b["misc"].get("runner_version"))
            for b in data["builds"]} == systems
    for build in data["builds"]:
        # the libc the build's helper reported (glibc for glibc and glibc-2.41), none for raw
        reported = {(r.get("properties") or {}).get("libc") for r in document["records"]
                    if (r["config"], r["flavour"], r["system"]) == (build["misc"]["config"], build["misc"]["flavour"],
                                                                   build["misc"]["system"])} - {None}
        assert build["misc"].get("libc") == (reported.pop() if reported else None)
        assert build["checkout_id"] == data["checkouts"][0]["id"]
    for test, record in zip(data["tests"], document["records"]):
        build = builds[test["build_id"]]["misc"]
        assert (build["config"], build["flavour"], build["system"]) == (record["config"], record["flavour"],
                                                                        record["system"])


def test_known_issues_are_issues_with_incidents(json_report):
    document, data = convert(json_report)
    known = [r for r in document["records"] if r["outcome"] in ("xfailed", "xpassed")]
    assert len(data.get("incidents", [])) == len(known)
    tests = {t["id"]: t for t in data["tests"]}
    issues = {i["id"]: i for i in data.get("issues", [])}
    for incident in data.get("incidents", []):
        record = tests[incident["test_id"]]["misc"]
        assert incident["issue_id"] == f"mmap2_conformance:{record['known_issue']}"
        assert incident["present"] == (record["outcome"] == "xfailed")
        assert issues[incident["issue_id"]]["culprit"] == {"code": True, "tool": False, "harness": False}
    assert {i.removeprefix("mmap2_conformance:") for i in issues} == {r["known_issue"] for r in known}


def test_the_checkout_is_the_suites_commit(outcomes_report):
    _, data = convert(outcomes_report, commit="0123456789abcdef0123456789abcdef01234567")
    assert data["checkouts"][0]["git_commit_hash"] == "0123456789abcdef0123456789abcdef01234567"
    assert data["checkouts"][0]["id"] == "mmap2_conformance:0123456789abcdef0123456789abcdef01234567"
    document = json.loads(outcomes_report.read_text())
    document["environment"]["suite"] = {"commit": "f" * 40, "dirty": True}
    data = kcidb_document(document, b"", known_issues=KNOWN)
    assert data["checkouts"][0]["id"] == f"mmap2_conformance:{'f' * 40}+dirty"
    assert data["checkouts"][0]["misc"]["commit_from"] == "report"


def test_an_unescaped_case_id_is_what_kcidb_refuses(outcomes_report):
    _, data = convert(outcomes_report)
    data["tests"][0]["path"] = "mmap2.mmap2.DESCRIPTION.unit.offset-unit.pgoff=1"
    with pytest.raises(jsonschema.ValidationError):
        schema.LATEST.validate_exactly(data)


def test_the_kcidb_command_takes_an_origin(tmp_path, outcomes_report, capsys):
    out = tmp_path / "kcidb.json"
    assert main(["kcidb", str(outcomes_report), "--origin", "my_lab", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    schema.LATEST.validate_exactly(data)
    objects = data["checkouts"] + data["builds"] + data["tests"] + data["issues"] + data["incidents"]
    assert {o["origin"] for o in objects} == {"my_lab"}
    assert all(o["id"].startswith("my_lab:") for o in objects)
    with pytest.raises(SystemExit):
        main(["kcidb", str(outcomes_report), "--origin", "My-Lab"])
    assert "KCIDB origins are [a-z0-9_]+" in capsys.readouterr().err
