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


# A fake helper that answers each request with its id, after the lines in $STRAY.
ANSWERS = r"""while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  [ -n "$STRAY" ] && printf '%s\n' "$STRAY" && STRAY=
  printf '{"id":"%s","op":"probe","auxv_pagesz":4096}\n' "$id"
done"""


@pytest.mark.parametrize("stray, message", [
    ("not json", "garbled answer b'not json'"),
    ("[1, 2]", "a JSON value that is not an object b'[1, 2]'"),
    ('{"id": "other"}', "answer for id 'other', expected 'x#1'"),
    ('{"op":"probe","id":"x#1"}', "the request echoed back"),
])
def test_stray_output_fails_its_exchange_and_the_session_stays_in_step(stray, message):
    session = fake(f"STRAY='{stray}'\n{ANSWERS}")
    try:
        with pytest.raises(ProtocolError, match=re.escape(message)) as error:
            session.request({"op": "probe", "id": "x"})
        assert error.value.kind == "stray" and error.value.answer["id"] == "x"
        assert [session.request({"op": "probe", "id": i})["id"] for i in ("a", "b")] == ["a", "b"]
        assert session.starts == 1
    finally:
        session.close()


def test_a_stray_line_after_an_answer_fails_the_next_exchange_only():
    """An answer sent twice: the copy is read in the next exchange, which fails; then in step."""
    session = fake(ANSWERS.replace("done", "  [ \"$id\" = \"x#1\" ] && printf '{\"id\":\"x#1\"}\\n'\ndone"))
    try:
        assert session.request({"op": "probe", "id": "x"})["id"] == "x"
        with pytest.raises(ProtocolError, match="answer for id 'x#1', expected 'y#2'"):
            session.request({"op": "probe", "id": "y"})
        assert session.request({"op": "probe", "id": "z"})["id"] == "z"
    finally:
        session.close()


@pytest.mark.parametrize("script, message, kind", [
    ("read l; printf '{\"id\":\"x#1\", \"ret\"'", "exited (status 0) mid-answer", "exited"),
    ("read l; echo '{\"id\": null, \"protocol_error\": \"bad key\"}'; read l", "rejected the request: bad key",
     "rejected"),
    ("read l; echo '{\"id\": \"x#1\", \"protocol_error\": \"bad key\"}'; read l", "rejected the request: bad key",
     "rejected"),
    ("exit 3", "exited", "exited"),
    ("read l; echo 'not json'; sleep 30", "no answer within 1 s; helper killed (after stray output: garbled",
     "timeout"),
])
def test_bad_answers_are_clear_errors(script, message, kind):
    session = fake(script, timeout=1.0)
    try:
        with pytest.raises(ProtocolError, match=re.escape(message)) as error:
            session.request({"op": "probe", "id": "x"})
        assert error.value.kind == kind
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
    session = fake("read l; echo '{\"id\": \"x#1\"}'")
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
              # answers with the id it was sent (the session tags each request: "x#1")
              'read l; id=$(echo "$l" | sed \'s/.*"id":"\\([^"]*\\)".*/\\1/\'); echo "{\\"id\\": \\"$id\\"}"')
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
