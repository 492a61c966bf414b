"""Issue 15 item 2: stray output fails only the case whose exchange it falls into;
a helper that hangs is a named failure at the (settable) deadline. Real helpers
behind a wrapper that injects the fault (wrappers/inject.py)."""
import json
import re
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from mmap2conf.protocol import HelperSession, ProtocolError

from conftest import private_root, remove_root
from faultlib import INJECT, alive, conformance, logged_pids, no_traceback, qemu_dir, records

REQUESTS = [{"op": "probe", "id": "probe-1"},
            *({"op": "call", "id": f"call-{n}", "call": "mmap2", "len": 4096, "prot": "READ",
               "flags": "PRIVATE", "fd": "file", "offset": n, "file_blocks": n + 1} for n in range(6)),
            {"op": "probe", "id": "probe-2"}]


def session(helper, fault, match, log, timeout=None):
    return HelperSession(lambda workdir: [sys.executable, str(INJECT), "--fault", fault, "--match", match,
                                          "--log", str(log), "--", str(helper), str(workdir)], timeout=timeout)


@pytest.mark.parametrize("fault, failing, message", [
    ("stray-before", "call-2", "stray output before the answer to 'call-2' (1 line): garbled answer "
                               "b'this line is not JSON'"),
    ("other-id", "call-2", "answer for id 'someone-else#0', expected 'call-2#4'"),
    ("escape", "call-2", "garbled answer b'\\x1bc\\x1b[2J"),
    # Output after an answer falls into the next exchange: that one fails, then in step.
    ("stray-after", "call-3", "stray output before the answer to 'call-3' (1 line): garbled answer "
                              "b'this line is not JSON either'"),
    ("duplicate", "call-3", "answer for id 'call-2#4', expected 'call-3#5'"),
])
def test_one_stray_line_fails_one_exchange_and_the_session_stays_in_step(
        native_helper, scratch_root, tmp_path, fault, failing, message):
    log = tmp_path / "log"
    helper_session = session(native_helper, fault, '"id":"call-2#', log)
    outcomes = {}
    try:
        for request in REQUESTS:
            try:
                answer = helper_session.request(request)
                assert answer["id"] == request["id"]
                outcomes[request["id"]] = "answered"
            except ProtocolError as exc:
                outcomes[request["id"]] = (exc.kind, str(exc))
        starts = helper_session.starts
    finally:
        helper_session.close()
    failed = {k: v for k, v in outcomes.items() if v != "answered"}
    assert list(failed) == [failing], outcomes
    kind, text = failed[failing]
    assert kind == "stray" and message in text
    assert "\x1b" not in text and "\x07" not in text
    assert starts == 1                       # in step again without a restart
    assert not any(alive(pid) for pid in logged_pids(log))
    assert list(scratch_root.iterdir()) == []


def test_a_hung_helper_is_killed_at_the_deadline_with_its_group_and_the_next_case_restarts_it(
        native_helper, scratch_root, tmp_path):
    log = tmp_path / "log"
    helper_session = session(native_helper, "hang", '"id":"call-2#', log, timeout=1.0)
    outcomes = {}
    try:
        for request in REQUESTS:
            try:
                helper_session.request(request)
                outcomes[request["id"]] = "answered"
            except ProtocolError as exc:
                outcomes[request["id"]] = (exc.kind, str(exc))
                # The wrapper and the helper under it (its child) were killed as a group.
                assert not any(alive(pid) for pid in logged_pids(log))
        starts = helper_session.starts
    finally:
        helper_session.close()
    assert {k: v for k, v in outcomes.items() if v != "answered"} == {
        "call-2": ("timeout", "no answer within 1 s; helper killed")}
    assert starts == 2
    assert not any(alive(pid) for pid in logged_pids(log))
    assert list(scratch_root.iterdir()) == []


def _run(tmp_path, fault, match, extra_env=None, args=()):
    """The i386 raw cases under qemu-user, through a --qemu-dir wrapper injecting ``fault``."""
    directory, log = qemu_dir(tmp_path, fault, match)
    report = tmp_path / f"{fault or 'clean'}.json"
    result = conformance(["--arch", "i386", "--runner", "qemu-user", "--libc", "raw", "--qemu-dir", str(directory),
                          "--conformance-json", str(report), *args], env=extra_env)
    no_traceback(result.stdout, result.stderr)
    return result, records(report), log


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The same selection through a wrapper that injects nothing: what every case answers here."""
    root = private_root()
    try:
        result, by_id, _ = _run(tmp_path_factory.mktemp("clean"), None, "", {"MMAP2CONF_SCRATCH": str(root)})
        assert list(root.iterdir()) == []
    finally:
        remove_root(root)
    return result, by_id


CASE = "i386/raw/qemu-dir/offset-unit/pgoff=2"      # the --qemu-dir system
STRAY = "protocol: stray output before the answer to 'offset-unit/pgoff=2' (1 line): "


def changed(clean, faulty):
    """{case: (outcome in the clean run, outcome with the fault)} where they differ."""
    return {k: (clean[k]["outcome"], faulty[k]["outcome"]) for k in clean
            if clean[k]["outcome"] != faulty[k]["outcome"]}


@pytest.mark.parametrize("fault, reason", [
    ("stray-before", STRAY + "garbled answer b'this line is not JSON'"),
    ("other-id", STRAY + "answer for id 'someone-else#0'"),
])
def test_in_a_real_run_a_stray_line_fails_exactly_its_case(tmp_path, scratch_root, clean_run, fault, reason):
    clean_result, clean = clean_run
    result, faulty, log = _run(tmp_path, fault, '"id":"offset-unit/pgoff=2#')
    assert clean[CASE]["outcome"] == "passed" and clean_result.returncode == 0
    # A harness error of that case (report.exit_status: 6, the harness broke), all else as clean.
    assert changed(clean, faulty) == {CASE: ("passed", "error")}
    assert faulty[CASE]["reason"].startswith(reason)
    assert result.returncode == 6
    # One helper process served the group before and after the fault.
    group = {r["helper_process"] for k, r in faulty.items()
             if k.startswith("i386/raw/qemu-dir/offset-unit/") and r.get("helper_process")}
    assert len(group) == 1
    assert "fired" in log.read_text()
    assert not any(alive(pid) for pid in logged_pids(log))
    assert list(scratch_root.iterdir()) == []


def test_in_a_real_run_a_hung_helper_fails_its_case_within_the_set_deadline(tmp_path, scratch_root, clean_run):
    _, clean = clean_run
    result, faulty, log = _run(tmp_path, "hang", '"id":"offset-unit/pgoff=2#',
                               {"MMAP2CONF_EXCHANGE_TIMEOUT": "2"})
    assert changed(clean, faulty) == {CASE: ("passed", "error")}
    assert re.match(r"protocol: no answer within 2 s; helper killed", faulty[CASE]["reason"])
    assert result.returncode == 6
    assert not any(alive(pid) for pid in logged_pids(log))   # the hung wrapper and its qemu
    assert list(scratch_root.iterdir()) == []


def test_under_xdist_a_wrong_verdict_is_a_failure_with_its_record_in_json_and_junit(tmp_path, scratch_root, clean_run):
    """The record crosses from the worker once, on the teardown report (plugin.py); a
    case's failure on the call report is its verdict, not a harness error."""
    _, clean = clean_run
    xml = tmp_path / "conformance.xml"
    result, faulty, _ = _run(tmp_path, "eperm", '"id":"offset-unit/pgoff=2#', args=["-n", "2", "--junitxml", str(xml)])
    assert changed(clean, faulty) == {CASE: ("passed", "failed")}
    assert "EPERM" in faulty[CASE]["reason"]
    assert result.returncode == 1                                     # nonconformant
    assert json.loads((tmp_path / "eperm.json").read_text())["harness_errors"] == []
    assert "harness errors" not in result.stdout
    cases = ElementTree.parse(xml).getroot().iter("testcase")
    properties = {c.get("name"): ({p.get("name"): p.get("value") for p in c.iter("property")},
                                  c.find("failure") is not None) for c in cases}
    assert len(properties) == len(faulty)
    assert all({"conformance", "case", "config", "runner"} <= set(p) for p, _ in properties.values())
    # The record itself, as JSON.
    assert all(json.loads(p["conformance"])["nodeid"].endswith(f"::{name}") for name, (p, _) in properties.items())
    assert [name for name, (_, failed) in properties.items() if failed] == [f"test_case[{CASE}]"]
