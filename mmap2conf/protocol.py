"""The JSON-lines conversation with one helper process (helpers/PROTOCOL.md).

A session owns one helper process and its scratch directory. Every exchange has
a deadline, so a helper that hangs, dies or answers garbage is a clear error,
never a stuck run. If the helper process itself dies, the next request starts a
new one (the cases are independent: each runs in a forked child anyway).
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import time
from pathlib import Path

from . import scratch
from .runners import clean_environment

EXCHANGE_TIMEOUT = 10.0
MAX_LINE = 1 << 20


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


class HelperSession:
    """One helper process started by ``command_for(workdir)``; restarted if it dies."""

    def __init__(self, command_for, timeout: float = EXCHANGE_TIMEOUT, scratch_kind: str | None = None):
        self.command_for, self.timeout, self.scratch_kind = command_for, timeout, scratch_kind
        self.workdir = scratch.make(scratch_kind)
        self.process = None
        self.starts = 0
        self.stderr = tempfile.TemporaryFile()

    def _start(self) -> None:
        # Unbuffered: a request is one write, and nothing is left to flush into a dead pipe.
        self.process = subprocess.Popen(self.command_for(self.workdir), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr,
                                        env=clean_environment(), bufsize=0)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = b""
        self.starts += 1

    def request(self, message: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._start()
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self.process.stdin.write(line)
        except BrokenPipeError:
            raise ProtocolError(f"the helper exited before reading the request "
                                f"(status {self.process.wait()}): {self.stderr_tail()}") from None
        return parse_answer(self._read_line(), message.get("id"))

    def _read_line(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close_process()
                    raise ProtocolError(f"no answer within {self.timeout:g} s; helper killed")
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

    def stderr_text(self) -> str:
        self.stderr.seek(0)
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
                self.process.stdin.close()  # EOF: the helper exits on its own
                self.process.wait(timeout=self.timeout)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                pass
        self.close_process()
        self.stderr.close()
        scratch.remove(self.scratch_kind, self.workdir)
