"""The JSON-lines conversation with one helper process (helpers/PROTOCOL.md).

A session owns one helper process and its scratch directory. Every exchange has
a deadline, so a helper that hangs, dies or answers garbage is a clear error,
never a stuck run. If the helper process itself dies, the next request starts a
new one (the cases are independent: each runs in a forked child anyway).

Most runners give the helper's own pipes, and every line on them is protocol.
A kernel runner gives a guest's console instead (runners.Console): a tty that
echoes each request, ends lines with "\r\n" and carries the kernel's own
messages. There the session waits for the helper's ready line, drops "\r",
skips the echo and keeps every line that is not a JSON object as console noise:
the boot log (all the console printed before the ready line), and the latest
noise, both shown in the error when the guest fails.

A runner may also give a *preamble*: bytes written to the process's stdin right
after each start, before the first request (the ssh runner sends the helper
binary itself this way, over the same connection, and its remote side reads
exactly that many bytes before starting the helper on the rest of the stream).
The preamble has its own deadline (it may cross a slow link, after the
connection and authentication); the requests' deadlines begin after it.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path

from . import scratch
from .runners import clean_environment

EXCHANGE_TIMEOUT = 10.0
MAX_LINE = 1 << 20
CONSOLE_TAIL = 40       # console lines an error shows
CONSOLE_EXIT_TIMEOUT = 10.0   # for the guest to power off after EOF
PREAMBLE_TIMEOUT = 60.0       # to take a preamble: connecting, authenticating and sending a helper


class ProtocolError(Exception):
    pass


def parse_answer(line: bytes, request_id: str | None) -> dict:
    """Decode one answer line and check it belongs to the request."""
    try:
        answer = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"garbled answer {line[:200]!r}: {exc}") from None
    if not isinstance(answer, dict):
        raise ProtocolError(f"answer is not a JSON object: {line[:200]!r}")
    if "protocol_error" in answer:
        raise ProtocolError(f"the helper rejected the request: {answer['protocol_error']}")
    if answer.get("id") != request_id:
        raise ProtocolError(f"answer for id {answer.get('id')!r}, expected {request_id!r}")
    return answer


def console_line(raw: bytes) -> bytes:
    """A console line as the helper wrote it: the tty's output processing turns "\n"
    into "\r\n", and no answer holds a raw "\r" (the helper escapes control bytes)."""
    return raw.replace(b"\r", b"")


def console_object(line: bytes) -> dict | None:
    """The JSON object a console line holds, or None for console noise (kernel
    messages, firmware escapes, a line that a kernel message broke)."""
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class HelperSession:
    """One helper process started by ``command_for(workdir)``; restarted if it dies.

    ``console`` (a runners.Console, or None for plain pipes) says that the process's
    stdin and stdout are a guest's console. ``preamble`` (bytes, or None) is written to
    the process's stdin after every start, before the first request."""

    def __init__(self, command_for, timeout: float = EXCHANGE_TIMEOUT, scratch_kind: str | None = None,
                 console=None, preamble: bytes | None = None):
        self.command_for, self.timeout, self.scratch_kind = command_for, timeout, scratch_kind
        self.console, self.preamble = console, preamble
        self.workdir = scratch.make(scratch_kind)
        self.process = None
        self.starts = 0
        self.stderr = tempfile.TemporaryFile()
        self.boot_log: list[str] = []     # console: everything before the latest ready line
        self.boot_seconds: float | None = None
        self.noise: deque[str] = deque(maxlen=CONSOLE_TAIL)  # console: latest non-protocol lines

    def _start(self) -> None:
        # Unbuffered: a request is one write, and nothing is left to flush into a dead pipe.
        self.process = subprocess.Popen(self.command_for(self.workdir), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr,
                                        env=clean_environment(), bufsize=0)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = b""
        self.starts += 1
        if self.preamble:
            self._send_preamble()
        if self.console is not None:
            self._wait_until_ready()

    def _send_preamble(self) -> None:
        """Write the preamble within PREAMBLE_TIMEOUT: the process may take it slowly (a
        connection being made), or stop reading (it exited, or it hangs)."""
        fd, data = self.process.stdin.fileno(), memoryview(self.preamble)
        deadline = time.monotonic() + PREAMBLE_TIMEOUT
        os.set_blocking(fd, False)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_WRITE)
                while data:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.close_process()
                        raise ProtocolError(f"the helper did not take its {len(self.preamble)}-byte preamble "
                                            f"within {PREAMBLE_TIMEOUT:g} s; helper killed: {self.stderr_tail()}")
                    if not selector.select(remaining):
                        continue
                    try:
                        data = data[os.write(fd, data):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        status = self._exit_status()
                        raise ProtocolError(f"the helper exited before taking its preamble (status {status}): "
                                            f"{self.stderr_tail()}") from None
        finally:
            if not self.process.stdin.closed:
                os.set_blocking(fd, True)

    def _exit_status(self) -> int:
        """The status of a process that stopped reading: it exits, or is killed."""
        try:
            return self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close_process()
            return self.process.returncode

    def _wait_until_ready(self) -> None:
        """Console: keep the boot log until the helper says it reads. Input sent
        earlier is lost while the kernel brings up the console."""
        started = time.monotonic()
        self.boot_log, self.boot_seconds = [], None
        deadline = started + self.console.boot_timeout
        while True:
            try:
                line = console_line(self._read_line(deadline, self.console.boot_timeout, "ready line"))
            except ProtocolError as exc:
                raise ProtocolError(f"the guest did not boot: {exc}{self._console_report()}") from None
            self.boot_log.append(line.decode(errors="replace"))
            if self.console.ready in line:
                self.boot_seconds = time.monotonic() - started
                return

    def request(self, message: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._start()
        line = json.dumps(message, separators=(",", ":")).encode()
        if self.console is not None and len(line) > self.console.max_line:
            raise ProtocolError(f"a {len(line)}-byte request does not fit the console's "
                                f"{self.console.max_line}-byte line")
        try:
            self.process.stdin.write(line + b"\n")
        except BrokenPipeError:
            raise ProtocolError(f"the helper exited before reading the request "
                                f"(status {self.process.wait()}): {self.stderr_tail()}") from None
        if self.console is None:
            return parse_answer(self._read_line(), message.get("id"))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                answer = console_line(self._read_line(deadline))
            except ProtocolError as exc:
                raise ProtocolError(f"{exc}{self._console_report()}") from None
            value = console_object(answer)
            if value is None:
                self.noise.append(answer.decode(errors="replace"))
            elif value != message:   # else the tty's echo of the request
                return parse_answer(answer, message.get("id"))

    def _console_report(self) -> str:
        """The console's boot log and latest noise, and qemu's stderr, for an error message."""
        lines = [*self.boot_log, *(["..."] if self.noise else []), *self.noise][-CONSOLE_TAIL:]
        console = "\n".join(lines).strip()
        stderr = self.stderr_tail().strip()
        return (f"\n--- console (boot log and latest noise) ---\n{console or '(nothing)'}"
                + (f"\n--- stderr ---\n{stderr}" if stderr else ""))

    def _read_line(self, deadline: float | None = None, timeout: float | None = None,
                   what: str = "answer") -> bytes:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout if deadline is None else deadline
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close_process()
                    raise ProtocolError(f"no {what} within {timeout:g} s; helper killed")
                if not selector.select(remaining):
                    continue
                chunk = self.process.stdout.read(65536)
                if chunk is None:   # spurious wake-up of the non-blocking pipe
                    continue
                if not chunk:
                    status = self.process.wait()
                    raise ProtocolError(f"the helper exited (status {status}) mid-answer; "
                                        f"got {self._buffer[:200]!r}; stderr: {self.stderr_tail()}")
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE:
                    self.close_process()
                    raise ProtocolError("answer line longer than 1 MiB")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def stderr_size(self) -> int:
        return os.fstat(self.stderr.fileno()).st_size

    def stderr_since(self, mark: int, until, wait: float = 2.0) -> str:
        """What the process wrote to stderr after ``mark``.

        A tracer that runs beside the helper (strace) may print a little after the
        helper answered, so wait up to ``wait`` seconds for ``until(text)`` to hold."""
        deadline = time.monotonic() + wait
        while True:
            self.stderr.seek(mark)
            text = self.stderr.read().decode(errors="replace")
            if until(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.01)

    def stderr_tail(self, limit: int = 2000) -> str:
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - limit))
        return self.stderr.read().decode(errors="replace")

    def close_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                pipe.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                if self.console is not None:
                    # A console never ends by itself: the tty's end-of-file character
                    # makes the helper's read return 0, and it powers the guest off.
                    self.process.stdin.write(self.console.eof)
                self.process.stdin.close()  # EOF: the helper exits on its own
                self.process.wait(timeout=self.timeout if self.console is None else CONSOLE_EXIT_TIMEOUT)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                pass
        self.close_process()
        self.stderr.close()
        scratch.remove(self.scratch_kind, self.workdir)
