"""The JSON-lines conversation with one helper process (helpers/PROTOCOL.md).

A session owns one helper process and its scratch directory. Every exchange has
a deadline (MMAP2CONF_EXCHANGE_TIMEOUT seconds, 10 by default), so a helper that
hangs, dies or answers garbage is a clear error, never a stuck run. If the helper
process itself dies, the next request starts a new one (the cases are
independent: each runs in a forked child anyway). The helper process runs in a
process group of its own, under a parent-death signal (procs.py): killing it
kills a wrapper's children too, and nothing outlives the run.

Every request goes out with an id of its own, the caller's id and the session's
sequence number ("errors/x#7"; on a guest's console, where every byte costs the guest,
the number alone: "#7"), and its answer is the line that carries that id.
A line that is not that answer (not JSON, an answer for another id, the request
echoed back) is stray: it is kept, reading goes on until the answer arrives, and
the exchange then fails naming the stray lines. So stray output fails only the
case whose exchange it fell into, and the session stays in step; only a missing
answer (the deadline) or a dead helper costs the process.

Most runners give the helper's own pipes, and every line on them is protocol.
A kernel runner gives a guest's console instead (runners.Console): a tty (whose
echo the helper's init turns off) that ends lines with "\r\n" and carries the
kernel's own messages. There the session waits for the helper's ready line
(MMAP2CONF_BOOT_TIMEOUT overrides the runner's deadline), drops "\r", skips an
echo and keeps every line that is not a JSON object as console noise: the boot
log (all the console printed before the ready line), and the latest noise, both
shown in the error when the guest fails. Terminal control sequences (a
firmware's ESC c, colours) are removed from console text and every error
message (printable()), so they reach neither a terminal nor the JSON report.

A runner may also give a *preamble*: bytes written to the process's stdin right
after each start, before the first request (the ssh runner sends the helper
binary itself this way, over the same connection, and its remote side reads
exactly that many bytes before starting the helper on the rest of the stream).
The preamble has its own deadline (it may cross a slow link, after the
connection and authentication); the requests' deadlines begin after it.
"""
from __future__ import annotations

import json
import math
import os
import re
import selectors
import subprocess
import tempfile
import time
from collections import deque
from itertools import count

from . import guest_state, procs, scratch
from .runners import clean_environment

EXCHANGE_TIMEOUT = 10.0
ENV_EXCHANGE_TIMEOUT = "MMAP2CONF_EXCHANGE_TIMEOUT"
ENV_BOOT_TIMEOUT = "MMAP2CONF_BOOT_TIMEOUT"
MAX_TIMEOUT = 3600.0
MAX_LINE = 1 << 20
CONSOLE_TAIL = 40       # console lines an error shows
CONSOLE_EXIT_TIMEOUT = 10.0   # for the guest to power off after EOF
PREAMBLE_TIMEOUT = 60.0       # to take a preamble: connecting, authenticating and sending a helper
STRAY_SHOWN = 5         # stray lines an error quotes
LINE_SHOWN = 200        # bytes of a line an error quotes


_LAUNCHES = count(1)   # the processes every session of this process started, numbered


class ProtocolError(Exception):
    """``kind`` names what happened: "stray" (the answer came, after other output: the
    session is in step), "rejected", "timeout", "exited", "too-long", "not-ready" (a
    guest that did not boot), "request-too-long", "cannot-start" (the command cannot be
    executed at all: not an executable format, a directory, missing)."""

    def __init__(self, message: str, kind: str = "protocol", answer: dict | None = None,
                 status: int | None = None):
        super().__init__(printable(message))
        self.kind, self.answer, self.status = kind, answer, status   # status: of an exited process


class SettingError(Exception):
    """An environment setting of the protocol is not valid: a usage error."""


def timeout_setting(name: str, default: float) -> float:
    """Seconds from the environment variable ``name``, or ``default``: a finite number
    above 0 and at most MAX_TIMEOUT, else SettingError."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds <= MAX_TIMEOUT):
        raise SettingError(f"{name}={value!r} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return seconds


def check_settings() -> None:
    timeout_setting(ENV_EXCHANGE_TIMEOUT, EXCHANGE_TIMEOUT)
    timeout_setting(ENV_BOOT_TIMEOUT, 1.0)
    problem = guest_state.check_setting()
    if problem:
        raise SettingError(problem)


# Terminal control: CSI (ESC [ ... final, and the 8-bit CSI), OSC, DCS/SOS/PM/APC strings,
# then any other escape (ESC c resets a terminal, ESC ( B picks a charset, ESC 7 saves).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]"
                      r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
                      r"|\x1b[ -/]*[0-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text without terminal control: escape sequences removed, any other control
    character (but tab and newline) shown as \\xNN."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", _ESCAPES.sub("", text))


def _quote(line: bytes) -> str:
    return repr(line[:LINE_SHOWN]) + ("..." if len(line) > LINE_SHOWN else "")


def console_line(raw: bytes) -> bytes:
    """A console line as the helper wrote it: the tty's output processing turns "\n"
    into "\r\n", and no answer holds a raw "\r" (the helper escapes control bytes)."""
    return raw.replace(b"\r", b"")


def console_object(line: bytes) -> dict | None:
    """The JSON object a console line holds, or None for console noise (kernel
    messages, firmware escapes, a line that a kernel message broke)."""
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def console_text(line: bytes) -> str:
    return printable(line.decode(errors="replace"))


def _untag(value, tag: str, request_id):
    return request_id if value == tag else value


class HelperSession:
    """One helper process started by ``command_for(workdir)``; restarted if it dies.

    ``console`` (a runners.Console, or None for plain pipes) says that the process's
    stdin and stdout are a guest's console. ``timeout`` (seconds per exchange) defaults
    to MMAP2CONF_EXCHANGE_TIMEOUT, else EXCHANGE_TIMEOUT. ``preamble`` (bytes, or None) is
    written to the process's stdin after every start, before the first request."""

    def __init__(self, command_for, timeout: float | None = None, scratch_kind: str | None = None,
                 console=None, preamble: bytes | None = None):
        self.timeout = timeout_setting(ENV_EXCHANGE_TIMEOUT, EXCHANGE_TIMEOUT) if timeout is None else timeout
        self.boot_timeout = (None if console is None
                             else timeout_setting(ENV_BOOT_TIMEOUT, console.boot_timeout))
        self.command_for, self.scratch_kind = command_for, scratch_kind
        self.console, self.preamble = console, preamble
        self.workdir = scratch.make(scratch_kind)
        self.process = None
        self.starts = 0
        self.launch = 0            # its latest process's number among this process's launches
        self.sequence = 0
        self.in_exchange = False   # a request is out and its answer not read (an interrupt came)
        self.stderr = tempfile.TemporaryFile()
        self.boot_log: list[str] = []     # console: everything before the latest ready line
        self.boot_seconds: float | None = None
        self.guest_start: dict | None = None   # a restorable guest's latest start: booted or restored, and why
        self.noise: deque[str] = deque(maxlen=CONSOLE_TAIL)  # console: latest non-protocol lines

    def _start(self) -> None:
        command = self.command_for(self.workdir)
        if self.console is not None and self.console.restorable:
            self._start_guest(command)
            return
        self._launch(command)
        if self.console is not None:
            self._wait_until_ready()

    def _launch(self, command: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        # Unbuffered: a request is one write, and nothing is left to flush into a dead pipe.
        try:
            self.process = procs.popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=self.stderr, env=clean_environment(), bufsize=0,
                                       pass_fds=pass_fds)
        except OSError as exc:   # not an executable (format), a directory, missing
            self.process = None
            raise ProtocolError(f"cannot start {command[0]}: {exc.strerror or exc}", "cannot-start") from None
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = b""
        self.starts += 1
        self.launch = next(_LAUNCHES)
        if self.preamble:
            self._send_preamble()

    def _start_guest(self, command: list[str]) -> None:
        """A qemu-system guest: restored from its saved state where a valid one answers, else
        booted and then saved (guest_state.py). A restored guest prints no ready line; it is
        ready once it answers a probe. ``guest_start`` says which it was."""
        started = time.monotonic()
        guest = guest_state.Guest(command)
        try:
            if guest.saved is not None:
                try:
                    restore, fds = guest.restore_command()
                    self._launch(restore, fds)
                    guest.restore(self.process, started + self.boot_timeout)
                    self.boot_log, self.boot_seconds = guest.boot_log, None
                    self._answers()
                    self.guest_start = {"how": "restored", "seconds": round(time.monotonic() - started, 3),
                                        "fallback": None, "save_seconds": None, "save_error": None}
                    return
                except (guest_state.StateError, ProtocolError) as exc:
                    # One line, for the reports' one-line summaries: a timeout's message
                    # goes on with the saved boot's console, which says nothing new.
                    reason = str(exc).split("\n", 1)[0]
                    stderr = " ".join(self.stderr_tail(300).split()) if self.process is not None else ""
                    self.close_process()
                    if isinstance(exc, ProtocolError) and exc.kind == "timeout":
                        guest.silent(reason)   # loaded whole, then silent: it would be again
                    else:
                        guest.forget()
                    guest.fallback = f"the restore failed: {reason}" + (f" (stderr: {stderr})" if stderr else "")
            self._launch(guest.boot_command())
            self._wait_until_ready()
            self.guest_start = {"how": "booted", "seconds": round(time.monotonic() - started, 3),
                                "fallback": guest.fallback, "save_seconds": None, "save_error": None}
            try:
                self.guest_start["save_seconds"] = round(guest.save(self.process, self.boot_log), 3)
            except guest_state.StateError as exc:
                self.guest_start["save_error"] = str(exc)
                if guest.stopped:
                    self.close_process()
                    raise ProtocolError(f"the guest did not resume after its state was saved: {exc}",
                                        "not-ready") from None
        finally:
            guest.close()

    def _answers(self) -> None:
        """A restored guest answers: a probe, or the protocol error of a dispatching init,
        which takes only exec (dispatch.py), is the answer of a helper that reads."""
        try:
            self.request({"op": "probe", "id": "restored"})
        except ProtocolError as exc:
            if exc.kind != "rejected":
                raise

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
                                            f"{self.stderr_tail()}", "exited", status=status) from None
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
        deadline = started + self.boot_timeout
        while True:
            try:
                line = console_line(self._read_line(deadline, self.boot_timeout, "ready line"))
            except ProtocolError as exc:
                self.close_process()
                raise ProtocolError(f"the guest did not boot: {exc}{self._console_report()}",
                                    "not-ready") from None
            self.boot_log.append(console_text(line))
            if self.console.ready in line:
                self.boot_seconds = time.monotonic() - started
                return

    def alive(self) -> bool:
        return self.process is not None and not procs.exited(self.process)

    def request(self, message: dict) -> dict:
        if not self.alive():
            self.close_process()
            self._start()
        self.sequence += 1
        request_id = message.get("id")
        # On a guest's console every byte costs the guest (about 5 us of TCG, measured),
        # and the id travels twice: there the exchange's number alone tags it.
        tag = f"#{self.sequence}" if self.console is not None else f"{request_id}#{self.sequence}"
        wire = {**message, "id": tag}
        line = json.dumps(wire, separators=(",", ":")).encode()
        if self.console is not None and len(line) > self.console.max_line:
            raise ProtocolError(f"a {len(line)}-byte request does not fit the console's "
                                f"{self.console.max_line}-byte line", "request-too-long")
        self.in_exchange = True
        try:
            self.process.stdin.write(line + b"\n")
        except BrokenPipeError:
            status = self.close_process(wait=self.timeout)
            raise ProtocolError(f"the helper exited before reading the request "
                                f"(status {status}): {self.stderr_tail()}", "exited", status=status) from None
        answer, stray = self._answer(wire, tag)
        self.in_exchange = False
        answer["id"] = _untag(answer.get("id"), tag, request_id)
        if stray:
            shown = "; ".join(stray[:STRAY_SHOWN]) + (f"; and {len(stray) - STRAY_SHOWN} more"
                                                      if len(stray) > STRAY_SHOWN else "")
            raise ProtocolError(f"stray output before the answer to {request_id!r} "
                                f"({len(stray)} line{'s' if len(stray) > 1 else ''}): {shown}",
                                "stray", answer)
        if "protocol_error" in answer:
            raise ProtocolError(f"the helper rejected the request: {answer['protocol_error']}",
                                "rejected", answer)
        return answer

    def end_input(self) -> None:
        """A console's end of file: the helper reading the console sees EOF and exits (a
        dispatching init's helper; dispatch.py)."""
        try:
            self.process.stdin.write(self.console.eof)
        except BrokenPipeError:
            pass   # the guest is gone: the next request starts it again

    def _answer(self, wire: dict, tag: str) -> tuple[dict, list[str]]:
        """The answer line for ``tag`` and the stray lines read before it."""
        deadline = time.monotonic() + self.timeout
        stray: list[str] = []
        while True:
            try:
                raw = self._read_line(deadline)
            except ProtocolError as exc:
                after = f" (after stray output: {'; '.join(stray[:STRAY_SHOWN])})" if stray else ""
                report = self._console_report() if self.console is not None else ""
                raise ProtocolError(f"{exc}{after}{report}", exc.kind, exc.answer, exc.status) from None
            line = console_line(raw) if self.console is not None else raw
            value = console_object(line)
            if value is None:
                if self.console is not None:
                    self.noise.append(console_text(line))
                    continue
                try:
                    json.loads(line)
                    stray.append(f"a JSON value that is not an object {_quote(line)}")
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                    stray.append(f"garbled answer {_quote(line)}: {exc}")
                continue
            if value == wire:   # the tty's echo of the request (on a pipe: stray)
                if self.console is None:
                    stray.append(f"the request echoed back {_quote(line)}")
                continue
            if value.get("id") == tag:
                return value, stray
            if value.get("id") is None and "protocol_error" in value:
                # The helper could not parse a line; the only writer of its input is this
                # session, so it is the answer to this request (one line per line read).
                return value, stray
            stray.append(f"answer for id {value.get('id')!r}, expected {tag!r}")

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
                    raise ProtocolError(f"no {what} within {timeout:g} s; helper killed", "timeout")
                if not selector.select(remaining):
                    continue
                chunk = self.process.stdout.read(65536)
                if chunk is None:   # spurious wake-up of the non-blocking pipe
                    continue
                if not chunk:
                    status = self.close_process(wait=self.timeout)
                    raise ProtocolError(f"the helper exited (status {status}) mid-answer; "
                                        f"got {_quote(self._buffer)}; stderr: {self.stderr_tail()}",
                                        "exited", status=status)
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE:
                    self.close_process()
                    raise ProtocolError("answer line longer than 1 MiB; helper killed", "too-long")
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
        return printable(self.stderr.read().decode(errors="replace"))

    def close_process(self, wait: float = 0.0) -> int | None:
        """End the helper process: ``wait`` seconds for it to end by itself, then its whole
        process group is killed (a wrapper's children too) and it is reaped. Its status."""
        if self.process is None:
            return None
        self.in_exchange = False
        status = procs.end(self.process, wait)
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()
        return status

    def close(self) -> None:
        wait = 0.0
        # A helper busy with a request (the run was interrupted mid-exchange) is killed at
        # once; an idle one gets EOF and its time to exit.
        if self.alive() and not self.in_exchange:
            try:
                if self.console is not None:
                    # A console never ends by itself: the tty's end-of-file character
                    # makes the helper's read return 0, and it powers the guest off.
                    self.process.stdin.write(self.console.eof)
                self.process.stdin.close()  # EOF: the helper exits on its own
                wait = self.timeout if self.console is None else CONSOLE_EXIT_TIMEOUT
            except BrokenPipeError:
                pass
        try:
            self.close_process(wait)
        finally:
            self.stderr.close()
            scratch.remove(self.scratch_kind, self.workdir)
