"""A guest's console as the helper's stream (runners.Console): the session waits
for the ready line and keeps the boot log, drops "\\r", skips the tty's echo of
each request and keeps kernel noise aside, while a plain pipe stays strict."""
import re

import pytest

from mmap2conf.protocol import HelperSession, ProtocolError, console_line, console_object
from mmap2conf.runners import Console

READY = b"mmap2_helper: init mode, ready"
# A fake guest: firmware escapes and kernel lines, then the ready line; for each
# request, the tty's echo, a kernel message, and the answer, all with \r\n.
GUEST = r"""
printf '\033c\033[2JSeaBIOS (version 1.16)\r\n[    0.5] mce: Unable to init MCE device\r\n'
printf 'mmap2_helper: init mode, ready\r\n'
while IFS= read -r line; do
  printf '%s\r\n' "$line"
  printf '[    7.1] random: crng init done\r\n'
  id=$(printf '%s' "$line" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  printf '{"id":"%s","op":"probe","auxv_pagesz":4096}\r\n' "$id"
done
"""


def console_session(script, boot_timeout=5.0, timeout=5.0):
    return HelperSession(lambda workdir: ["sh", "-c", script], timeout=timeout,
                         console=Console(ready=READY, boot_timeout=boot_timeout))


@pytest.mark.parametrize("raw, line", [
    (b'{"id":"x"}\r', b'{"id":"x"}'),
    (b'{"id":"x"}\r\r', b'{"id":"x"}'),
    (b"\x1bc\x1b[2J[ 1.5] kernel\r", b"\x1bc\x1b[2J[ 1.5] kernel"),
])
def test_console_lines_lose_their_carriage_returns(raw, line):
    assert console_line(raw) == line


@pytest.mark.parametrize("line, value", [
    (b'{"id":"x","ret":1}', {"id": "x", "ret": 1}),
    (b"[    7.9] reboot: Power down", None),
    (b'":"probe","id":"p"}', None),   # a request the tty lost the start of
    (b"[1, 2]", None),
    (b"\xff\xfe", None),
])
def test_only_json_objects_are_answers_on_a_console(line, value):
    assert console_object(line) == value


def probe_error(session, request_id: str) -> str:
    """The ProtocolError a session's first probe raises; the session is closed after it."""
    try:
        with pytest.raises(ProtocolError) as error:
            session.request({"op": "probe", "id": request_id})
    finally:
        session.close()
    return str(error.value)


def test_a_console_session_skips_echo_and_noise_and_keeps_the_boot_log():
    session = console_session(GUEST)
    try:
        answer = session.request({"op": "probe", "id": "first"})
        assert answer == {"id": "first", "op": "probe", "auxv_pagesz": 4096}
        assert session.request({"op": "probe", "id": "second"})["id"] == "second"
        assert session.boot_log[-1] == READY.decode()
        assert any("SeaBIOS" in line for line in session.boot_log)
        assert not any("\r" in line for line in session.boot_log)
        assert session.boot_seconds is not None and session.boot_seconds < 5
        assert list(session.noise) == ["[    7.1] random: crng init done"] * 2
        assert session.starts == 1
    finally:
        session.close()


def test_the_same_stream_on_a_plain_pipe_is_a_protocol_error():
    session = HelperSession(lambda workdir: ["sh", "-c", GUEST], timeout=5.0)
    assert re.search("garbled answer", probe_error(session, "first"))


def test_a_guest_that_never_gets_ready_is_an_error_with_its_boot_log():
    session = console_session("printf 'Booting from ROM..\\r\\nKernel panic - not syncing\\r\\n'; sleep 30",
                              boot_timeout=1.0)
    message = probe_error(session, "x")
    assert message.startswith("the guest did not boot: no ready line within 1 s")
    assert "Booting from ROM..\nKernel panic - not syncing" in message


def test_a_guest_that_dies_shows_its_console_and_stderr():
    session = console_session("printf 'mmap2_helper: init mode, ready\\r\\n'; read l; "
                              "printf '[  9.0] Kernel panic - not syncing: Attempted to kill init!\\r\\n'; "
                              "echo 'qemu: terminating' >&2; exit 0")
    message = probe_error(session, "x")
    assert re.search(r"exited \(status 0\)", message)
    assert "Attempted to kill init!" in message and "qemu: terminating" in message


def test_a_silent_guest_after_boot_is_killed_at_the_exchange_deadline():
    session = console_session("printf 'mmap2_helper: init mode, ready\\r\\n'; sleep 30", timeout=0.5)
    assert re.search("no answer within 0.5 s", probe_error(session, "x"))


def test_a_request_longer_than_the_ttys_line_is_refused():
    session = console_session(GUEST)
    try:
        with pytest.raises(ProtocolError, match="does not fit the console's 4095-byte line"):
            session.request({"op": "call", "id": "x", "reads": list(range(0, 4096 * 1000, 4096))})
        assert session.request({"op": "probe", "id": "after"})["id"] == "after"
    finally:
        session.close()


def test_closing_sends_the_end_of_file_character(tmp_path):
    received = tmp_path / "stdin"
    session = console_session(f"printf 'mmap2_helper: init mode, ready\\r\\n'; cat > {received}")
    session._start()
    session.close()
    assert received.read_bytes() == b"\x04"
    assert session.process.returncode == 0
