"""The JSON-lines conversation: garbage, truncation, silence and death are clear
errors within the deadline, never a hang; a dead helper is restarted."""
import json
import re
import time

import pytest

from mmap2conf import build, model
from mmap2conf.protocol import HelperSession, ProtocolError
from mmap2conf.runners.native import Native


def fake(script, timeout=5.0):
    return HelperSession(lambda workdir: ["sh", "-c", script], timeout=timeout)


@pytest.mark.parametrize("script, message", [
    ("read l; echo 'not json'; read l", "garbled answer"),
    ("read l; printf '{\"id\":\"x\", \"ret\"'", "exited (status 0) mid-answer"),
    ("read l; echo '[1, 2]'; read l", "not a JSON object"),
    ("read l; echo '{\"id\": \"other\"}'; read l", "answer for id 'other'"),
    ("read l; echo '{\"id\": null, \"protocol_error\": \"bad key\"}'; read l", "rejected the request: bad key"),
    ("exit 3", "exited"),
])
def test_bad_answers_are_clear_errors(script, message):
    session = fake(script)
    try:
        with pytest.raises(ProtocolError, match=re.escape(message)):
            session.request({"op": "probe", "id": "x"})
    finally:
        session.close()


def test_a_silent_helper_is_killed_at_the_deadline():
    session = fake("sleep 30", timeout=0.5)
    start = time.monotonic()
    try:
        with pytest.raises(ProtocolError, match="no answer within 0.5 s"):
            session.request({"op": "probe", "id": "x"})
    finally:
        session.close()
    assert time.monotonic() - start < 5


def test_the_scratch_directory_is_removed():
    session = fake("read l; echo '{\"id\": \"x\"}'")
    workdir = session.workdir
    session.request({"op": "probe", "id": "x"})
    (workdir / "left-behind").write_text("x")
    session.close()
    assert not workdir.exists()


@pytest.fixture(scope="module")
def native_session():
    config = model.load_all()["x86_64"]
    helper = build.helper_path(config, "glibc")
    runner = Native(config, "native", True)
    session = HelperSession(lambda workdir: runner.command(helper, workdir))
    yield session
    session.close()


def test_the_real_helper_rejects_garbage_and_carries_on(native_session):
    session = native_session
    session.request({"op": "probe", "id": "first"})
    session.process.stdin.write(b"{this is not json\n")
    answer = json.loads(session._read_line())
    assert answer["id"] is None and "protocol_error" in answer
    with pytest.raises(ProtocolError, match="rejected"):
        session.request({"op": "call", "id": "x", "call": "mmap2", "len": 4096, "nonsense": 1})
    assert session.request({"op": "probe", "id": "after"})["id"] == "after"


def test_a_helper_that_died_is_restarted(native_session):
    session = native_session
    starts = session.starts
    session.process.kill()
    session.process.wait()
    assert session.request({"op": "probe", "id": "again"})["auxv_pagesz"] == 4096
    assert session.starts == starts + 1


def test_a_signal_in_one_case_loses_nothing_else(native_session):
    """Reading past the end of a one-block file raises SIGBUS in the forked child only."""
    session = native_session
    answer = session.request({"op": "call", "id": "bus", "call": "mmap", "len": 8192, "prot": "READ",
                              "flags": "PRIVATE", "fd": "file", "file_blocks": 1, "reads": [0, 4096]})
    assert answer["signal"] == "SIGBUS" and answer["signal_at"] == 4096
    assert session.request({"op": "probe", "id": "next"})["id"] == "next"


def test_a_noexec_scratch_directory_is_mounted_and_removed():
    from mmap2conf import scratch
    try:
        path = scratch.make("noexec")
    except scratch.ScratchUnavailable as exc:
        pytest.skip(f"not root here: {exc}")
    try:
        assert "noexec" in next(line for line in open("/proc/mounts") if f" {path} " in line)
    finally:
        scratch.remove("noexec", path)
    assert not path.exists()
    assert not any(f" {path} " in line for line in open("/proc/mounts"))


def test_the_scratch_root_holds_sparse_files_of_2_pow_45_bytes():
    from mmap2conf import scratch
    root, fs, why_not = scratch.scratch_root()
    assert why_not is None, why_not
    assert fs != "unknown" and root


def test_a_case_in_process_answers_and_the_helper_carries_on(native_session):
    """"fork":0 (traced sessions) runs the case in the helper itself: same answer, no child."""
    request = {"call": "mmap", "len": 4096, "prot": "READ", "flags": "PRIVATE", "fd": "file",
               "file_blocks": 2, "offset": 4096, "markers": [1]}
    forked = native_session.request({"op": "call", "id": "forked", **request})
    in_process = native_session.request({"op": "call", "id": "in-process", "fork": 0, **request})
    assert in_process["reads"][0][1:3] == forked["reads"][0][1:3] == [0x4D32434B, 1]
    assert native_session.request({"op": "probe", "id": "after"})["id"] == "after"


# ---- a preamble: written after each start, with its own deadline ----

def test_the_preamble_comes_before_the_first_request_after_every_start():
    script = ('dd bs=6 count=1 iflag=fullblock 2>/dev/null | grep -qx hello || exit 9; '
              'read l; echo "{\\"id\\": \\"x\\"}"')
    session = HelperSession(lambda workdir: ["sh", "-c", script], timeout=5, preamble=b"hello\n")
    try:
        assert session.request({"op": "probe", "id": "x"}) == {"id": "x"}
        session.process.wait(timeout=5)    # it answers once: the next request starts it again
        assert session.request({"op": "probe", "id": "x"}) == {"id": "x"} and session.starts == 2
    finally:
        session.close()


def test_a_process_that_refuses_the_preamble_is_a_clear_error():
    session = HelperSession(lambda workdir: ["sh", "-c", "echo refused >&2; exit 3"], timeout=5,
                            preamble=b"x" * (1 << 20))
    try:
        with pytest.raises(ProtocolError, match=r"exited before taking its preamble \(status 3\): refused"):
            session.request({"op": "probe", "id": "x"})
    finally:
        session.close()


def test_a_process_that_does_not_read_the_preamble_is_killed_at_its_deadline(monkeypatch):
    monkeypatch.setattr("mmap2conf.protocol.PREAMBLE_TIMEOUT", 0.5)
    session = HelperSession(lambda workdir: ["sleep", "30"], timeout=5, preamble=b"x" * (1 << 20))
    try:
        with pytest.raises(ProtocolError, match="did not take its 1048576-byte preamble within 0.5 s"):
            session.request({"op": "probe", "id": "x"})
    finally:
        session.close()
