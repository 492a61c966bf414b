"""Saved guest states: a kernel guest restored in a fraction of a second instead of booted.

A guest booted to its helper's ready line is saved once: the session stops it, QEMU's
migration writes its whole state into a pipe to this process, which hashes it on its way
into the cache, and the guest goes on to serve the session. Every later start of the same
slot restores it: qemu starts with ``-incoming fd:N`` on the file itself, while this
process checks the stream's sha256 against the header's: the digest the save recorded,
kept by the file's identity (digests.py), or the file hashed again where it was copied
or changed since. The saved guest was paused, so the restored one
stays paused after the load until the hash has matched and ``cont`` resumes it; the
session then sends it a probe, and only a guest that answers serves requests
(protocol.HelperSession). No
state, a state of other inputs, a corrupt file, qemu refusing it, no answer: each is a
fresh boot, whose state replaces the old one, and the session's ``guest_start`` says
which it was and why.

The key is everything that determines the state: the qemu-system command (binary path,
its --version line and sha256, every argument: machine arguments, kernel command line)
with the content of every argument that names a file (kernel image, initramfs), and what
only the running qemu shows, recorded at the save and checked again before a restore: the
executable it runs (a wrapper script may exec another) and the firmware files it loaded
(``info roms``, found in its data directories like qemu_find_file does). Nothing else
about the guest is assumed, so a guest with other files or another command line is keyed
the same way.

A state file is a HEADER_SIZE block (the key, the stream's size and sha256, the boot log;
JSON padded with spaces) and then the migration stream, written to a partial file and
renamed into place. One file per command (its slot): a new state of the same command (a
kernel image or qemu-system replaced in place) replaces the old one. Guests of other
commands (another initramfs: other helpers, or a rebuilt one) keep their own states; at
each save, the states whose files are gone are removed, and then the least recently used
ones while the directory holds more than BUDGET bytes. MMAP2CONF_GUEST_STATES names the
directory (default $MMAP2CONF_CACHE/guest-states), or is "off".
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import procs, scratch
from .digests import file_digest, publish, remember

ENV_STATES = "MMAP2CONF_GUEST_STATES"
FORMAT = 1
HEADER_SIZE = 1 << 16
SAVE_TIMEOUT = 60.0          # to stop, migrate, write and resume
SILENT = ".silent"           # a machine whose restored guests did not answer (machine_of(), why)
MACHINE_OPTIONS = ("-M", "-machine", "-cpu")
CHUNK = 1 << 20
BOOT_LOG_KEPT = 40           # the last lines of the boot log a state keeps for error messages
BUDGET = 2 << 30             # bytes of states kept: 20 to 50 guests (39 to 93 MB each, measured)


class StateError(Exception):
    """This saved state cannot be used, or cannot be made; the message says why."""


def check_setting() -> str | None:
    """The error in MMAP2CONF_GUEST_STATES, or None: "off" or an absolute directory."""
    value = os.environ.get(ENV_STATES)
    if value is None or value == "off" or os.path.isabs(value):
        return None
    return f"{ENV_STATES}={value!r} must be \"off\" or an absolute directory"


def states_dir() -> Path | None:
    value = os.environ.get(ENV_STATES)
    if value == "off":
        return None
    if value:
        return Path(value)
    from .build import CACHE_DIR
    return CACHE_DIR / "guest-states"


def key_of(command: list[str]) -> dict:
    """What the command's guest is made of, as far as it shows before qemu runs."""
    from .runners import RunnerUnavailable
    from .runners.qemu_user import version_of
    binary = command[0]
    try:
        _, version = version_of(Path(binary))
        files = {arg: file_digest(arg) for arg in command[1:] if os.path.isfile(arg)}
        identity = {"path": binary, "version": version, "sha256": file_digest(binary)}
    except (RunnerUnavailable, OSError) as exc:
        raise StateError(f"the guest's inputs cannot be read: {exc}") from None
    return {"format": FORMAT, "qemu_system": identity, "arguments": command[1:], "files": files}


def _key_difference(saved: dict, now: dict) -> str | None:
    """Why a state of key ``saved`` is not one of ``now``, in words; None if it is."""
    if saved.get("format") != now["format"]:
        return f"it has format {saved.get('format')!r}, not {now['format']}"
    old, new = saved.get("qemu_system", {}), now["qemu_system"]
    if old.get("version") != new["version"]:
        return f"it was saved by another qemu-system: {old.get('version')!r}, now {new['version']!r}"
    if old != new:
        return f"the qemu-system binary changed: {new['path']}"
    if saved.get("arguments") != now["arguments"]:
        before, after = saved.get("arguments") or [], now["arguments"]
        index = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
        return (f"the command differs from argument {index + 1}: {before[index:index + 2]} "
                f"then, {after[index:index + 2]} now")
    then = saved.get("files") or {}
    changed = sorted(path for path in {*then, *now["files"]} if then.get(path) != now["files"].get(path))
    if changed:
        return f"the file {changed[0]} " + ("changed" if changed[0] in now["files"] else "is gone")
    return None


def _learned_difference(learned: dict) -> str | None:
    """Whether the executable and firmware a save saw are still the same files."""
    for what, entry in [("the qemu-system executable", learned.get("executable", {})),
                        *((f"the firmware {name}", entry) for name, entry in learned.get("firmware", {}).items())]:
        try:
            if file_digest(entry["path"]) != entry["sha256"]:
                return f"{what} changed: {entry['path']}"
        except (KeyError, TypeError, OSError):
            return f"{what} is gone: {entry.get('path') if isinstance(entry, dict) else entry!r}"
    return None


def slot_name(command: list[str]) -> str:
    return f"{Path(command[0]).name}-{hashlib.sha256(chr(0).join(command).encode()).hexdigest()[:20]}"


def machine_of(key: dict) -> dict:
    """What a guest that does not answer once restored is taken to be a property of: the
    qemu-system and the machine it emulates, not the kernel, initramfs or command line it
    boots (so a helper changed, which makes a new initramfs, does not cost another try)."""
    arguments = key["arguments"]
    return {"format": key["format"], "qemu_system": key["qemu_system"],
            "machine": [arguments[i:i + 2] for i, argument in enumerate(arguments) if argument in MACHINE_OPTIONS]}


def marker_name(machine: dict) -> str:
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:20]
    return f"{Path(machine['qemu_system']['path']).name}-{digest}{SILENT}"


def _open_unused(path: Path):
    """``path`` open for reading without counting as a use: the budget's trim orders states
    by access time, which a read may set (relatime: once a day; strictatime: always).
    O_NOATIME is the owner's alone; another user's state is read as any file."""
    try:
        return open(os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_CLOEXEC), "rb")
    except PermissionError:
        return open(path, "rb")


class _Monitor:
    """A QMP connection (qemu's docs/interop/qmp-spec.txt): a greeting, qmp_capabilities,
    then one reply per command, with events in between (skipped)."""

    def __init__(self, path: str, deadline: float, process):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.socket.settimeout(max(0.01, deadline - time.monotonic()))
                self.socket.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if procs.exited(process) or time.monotonic() > deadline:
                    self.socket.close()
                    raise StateError("qemu-system's monitor socket never came up") from None
                time.sleep(0.005)
            except OSError as exc:
                self.socket.close()
                raise StateError(f"qemu-system's monitor: {exc}") from None
        self.socket.settimeout(SAVE_TIMEOUT)
        self.file = self.socket.makefile("rb")
        self._read()   # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        try:
            line = self.file.readline()
        except OSError as exc:
            raise StateError(f"qemu-system's monitor: {exc}") from None
        if not line:
            raise StateError("qemu-system closed its monitor")
        return json.loads(line)

    def execute(self, command: str, fds: tuple[int, ...] = (), **arguments):
        data = json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n"
        try:
            socket.send_fds(self.socket, [data], list(fds)) if fds else self.socket.sendall(data)
        except OSError as exc:
            raise StateError(f"qemu-system's monitor: {exc}") from None
        while True:
            reply = self._read()
            if "error" in reply:
                raise StateError(f"qemu-system's {command}: {reply['error'].get('desc')}")
            if "return" in reply:
                return reply["return"]

    def wait_for(self, command: str, done, deadline: float):
        """Poll ``command`` until ``done(its return)``; that return."""
        while True:
            value = self.execute(command)
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise StateError(f"qemu-system's {command} still says {value} after {SAVE_TIMEOUT:g} s")
            time.sleep(0.005)

    def close(self) -> None:
        self.file.close()
        self.socket.close()


def _drain(pipe: int, out, hasher, deadline: float) -> int:
    """Copy qemu's migration stream from ``pipe`` to the file ``out`` until qemu closes it,
    hashing it; the number of bytes."""
    total = 0
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while True:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise StateError(f"qemu-system wrote no state for {SAVE_TIMEOUT:g} s")
            data = os.read(pipe, CHUNK)
            if not data:
                return total
            hasher.update(data)
            total += len(data)
            out.write(data)


class Guest:
    """One start of a qemu-system guest: the saved state it may restore, the commands that
    restore or boot it, and the save after a boot. ``fallback`` says why it boots."""

    def __init__(self, command: list[str]):
        self.command = command
        self.directory = states_dir()
        self.key = self.saved = self.marker = None
        self.fallback: str | None = None
        self.stopped = False     # the guest is stopped for its save (and did not resume, if still True)
        self.boot_log: list[str] = []
        self._private = self._incoming = self._file = None
        if self.directory is None:
            self.fallback = f"saved guest states are off ({ENV_STATES}=off)"
            return
        self.path = self.directory / f"{slot_name(command)}.state"
        try:
            self.key = key_of(command)
            self.marker = self.directory / marker_name(machine_of(self.key))
            if self._silent_when_restored():
                return
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            self.fallback = "no saved state"
            return
        except (StateError, OSError) as exc:
            self.fallback = str(exc)
            return
        self.fallback = self._check_header()
        if self.fallback is not None:
            self._close_file()

    def _silent_when_restored(self) -> bool:
        """A guest of this machine was restored once and did not answer (QEMU 7.2's
        loongson3-virt machine, measured): its guests are booted, and not saved, until the
        qemu-system or the machine changes."""
        try:
            silent = json.loads(self.marker.read_text())
            if silent["machine"] != machine_of(self.key):
                return False
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.fallback = f"a restored state of this guest did not answer ({silent['reason']}): booted, not saved"
        self.key = None
        self.path.unlink(missing_ok=True)   # another run's save before the mark: never restored
        return True

    def silent(self, reason: str) -> None:
        """The restored guest did not answer: remove its state and remember not to save one."""
        self.forget()
        try:
            publish(self.marker, json.dumps({"machine": machine_of(self.key),
                                             "reason": reason}).encode())
        except OSError:
            pass
        self.key = None   # the boot that follows saves nothing either

    def _check_header(self) -> str | None:
        """Why the open state file cannot be restored, or None (self.saved is its header)."""
        try:
            header = json.loads(self._file.read(HEADER_SIZE))
            size = os.fstat(self._file.fileno()).st_size - HEADER_SIZE
            if header["stream"]["size"] != size:
                return f"the saved state {self.path} is corrupt: its size is not the one its header records"
            why = _key_difference(header["key"], self.key) or _learned_difference(header["learned"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"the saved state {self.path} is corrupt: its header is not one this suite writes ({exc!r})"
        if why:
            return f"the saved state {self.path} is stale: {why}"
        self.saved = header
        self.boot_log = [*header.get("boot_log", []), f"(restored from the saved state {self.path})"]
        return None

    def _monitor_args(self) -> list[str]:
        """A QMP socket in a private directory (mode 0700), removed by close(); named after
        the run's owner, so a run killed before close() has it swept (procs.sweep)."""
        if self._private is None:
            self._private = tempfile.mkdtemp(prefix=f"{scratch.PREFIX}qmp-{procs.owner()}-")
        self.monitor_path = os.path.join(self._private, "qmp")
        if os.path.exists(self.monitor_path):   # a failed restore's: qemu makes a new one
            os.unlink(self.monitor_path)
        return ["-qmp", f"unix:{self.monitor_path},server=on,wait=off"]

    def boot_command(self) -> list[str]:
        if self.key is None:   # states are off, or the inputs cannot be keyed: nothing to save
            return self.command
        return [*self.command, *self._monitor_args()]

    def restore_command(self) -> tuple[list[str], tuple[int, ...]]:
        """The command that restores the saved state, and the fd qemu inherits for it: the
        checked file itself (opened again, for an offset of its own), at its stream. qemu
        reads it directly: through a pipe filled from here, an arm64 restore took twice
        as long (about 290 ms against 150, measured)."""
        self._incoming = os.open(f"/proc/self/fd/{self._file.fileno()}", os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(self._incoming, HEADER_SIZE, os.SEEK_SET)
        return [*self.command, *self._monitor_args(), "-incoming", f"fd:{self._incoming}"], (self._incoming,)

    def restore(self, process, deadline: float) -> None:
        """While qemu loads the state, check its sha256; then resume the guest."""
        os.close(self._incoming)
        self._incoming = None
        # Known by its identity (digests.py) from its save on, which its use below keeps
        # (it sets the access time alone); a copy, or a file changed since, is hashed again.
        if file_digest(f"/proc/self/fd/{self._file.fileno()}", HEADER_SIZE) != self.saved["stream"].get("sha256"):
            raise StateError(f"the saved state {self.path} is corrupt: its sha256 is not the one its header records")
        monitor = _Monitor(self.monitor_path, deadline, process)
        try:
            status = monitor.wait_for("query-status", lambda s: s.get("status") != "inmigrate", deadline)
            if status.get("status") != "running":
                monitor.execute("cont")
        finally:
            monitor.close()
        try:   # the last to go (BUDGET); a state of another user's keeps its time
            os.utime(self._file.fileno(), ns=(time.time_ns(), os.fstat(self._file.fileno()).st_mtime_ns))
        except PermissionError:
            pass

    def forget(self) -> None:
        """This state failed to restore: remove it, unless another run replaced it meanwhile."""
        try:
            if self._file is not None and os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino:
                os.unlink(self.path)
        except OSError:
            pass

    def save(self, process, boot_log: list[str]) -> float:
        """Stop the booted guest, save its state into the cache, resume it; the seconds it took.
        StateError if no state was saved: the guest runs on, unless ``stopped`` is still set."""
        started = time.monotonic()
        deadline = started + SAVE_TIMEOUT
        if self.key is None:
            raise StateError(self.fallback)
        if not os.path.exists(self.monitor_path):
            raise StateError("qemu-system has no monitor socket: not a qemu-system that can save")
        monitor = _Monitor(self.monitor_path, deadline, process)
        try:
            learned = self._learn(process, monitor)
            monitor.execute("stop")
            self.stopped = True
            try:
                self._migrate(monitor, learned, boot_log, deadline)
            finally:
                monitor.execute("cont")
                self.stopped = False
        finally:
            monitor.close()
        return time.monotonic() - started

    def _learn(self, process, monitor: _Monitor) -> dict:
        """What only the running qemu shows: its executable and the firmware it loaded."""
        try:
            executable = os.readlink(f"/proc/{process.pid}/exe")
            roms = monitor.execute("human-monitor-command", **{"command-line": "info roms"})
            names = sorted(set(re.findall(r'name="([^"]+)"', roms)))
            listed = procs.run([executable, *self.command[1:], "-L", "help"], timeout=SAVE_TIMEOUT)
            if listed.returncode != 0:
                raise StateError(f"{executable} -L help (status {listed.returncode}): {listed.stderr[-300:]}")
            data_dirs = listed.stdout.split()
            firmware = {}
            for name in names:
                found = next((os.path.join(d, name) for d in data_dirs if os.path.isfile(os.path.join(d, name))), None)
                if found is not None:
                    firmware[name] = {"path": os.path.realpath(found), "sha256": file_digest(found)}
            return {"executable": {"path": executable, "sha256": file_digest(executable)}, "firmware": firmware}
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StateError(f"what qemu-system loaded cannot be read: {exc}") from None

    def _migrate(self, monitor: _Monitor, learned: dict, boot_log: list[str], deadline: float) -> None:
        partial = self.path.with_name(f".{self.path.name}.{procs.owner()}.partial")
        read_end, write_end = os.pipe()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_dead_partials()
            try:
                monitor.execute("getfd", fds=(write_end,), fdname="state")
            finally:
                os.close(write_end)
            monitor.execute("migrate", uri="fd:state")
            hasher = hashlib.sha256()
            with open(partial, "wb") as out:
                out.truncate(HEADER_SIZE)
                out.seek(HEADER_SIZE)
                size = _drain(read_end, out, hasher, deadline)
                status = monitor.wait_for("query-migrate", lambda m: m.get("status") in ("completed", "failed",
                                                                                        "cancelled"), deadline)
                if status.get("status") != "completed" or size == 0:
                    raise StateError(f"qemu-system's migration {status.get('status')}: {status.get('error-desc', '')}")
                out.seek(0)
                out.write(self._header(learned, boot_log, size, hasher.hexdigest()))
                out.flush()
                written = os.fstat(out.fileno())
            os.replace(partial, self.path)   # the same inode: the identity its digest is kept by
            remember(self.path, HEADER_SIZE, written, hasher.hexdigest())
            self._trim()
        except OSError as exc:
            raise StateError(f"the state cannot be written to {self.path}: {exc}") from None
        finally:
            os.close(read_end)
            if partial.exists():
                partial.unlink()

    def _header(self, learned: dict, boot_log: list[str], size: int, digest: str) -> bytes:
        for kept in (BOOT_LOG_KEPT, 0):
            header = json.dumps({"key": self.key, "learned": learned, "stream": {"size": size, "sha256": digest},
                                 "boot_log": boot_log[-kept:] if kept else []}).encode() + b"\n"
            if len(header) <= HEADER_SIZE:
                return header.ljust(HEADER_SIZE, b" ")
        raise StateError(f"the state's key does not fit its {HEADER_SIZE}-byte header")

    def _trim(self) -> None:
        """Remove the states whose files are gone, then the least recently used beyond BUDGET."""
        found = []
        for state in self.directory.glob("*.state"):
            try:
                info = state.stat()
                with _open_unused(state) as file:
                    files = json.loads(file.read(HEADER_SIZE))["key"]["files"]
                found.append((info.st_atime, info.st_size, state, not all(map(os.path.exists, files))))
            except (ValueError, KeyError, TypeError, OSError):   # gone meanwhile, or not a state
                found.append((0, 0, state, True))
        kept = 0
        for _, size, state, gone in sorted(found, key=lambda entry: entry[0], reverse=True):
            if state != self.path and (gone or kept + size > BUDGET):
                state.unlink(missing_ok=True)
            else:
                kept += size

    def _remove_dead_partials(self) -> None:
        """Partial states of runs that were killed mid-save (tens of MB each)."""
        for partial in self.directory.glob(".*.partial"):
            match = re.search(rf"\.({procs.TAG})\.partial$", partial.name)
            if match and not procs.owner_alive(match.group(1)):
                partial.unlink(missing_ok=True)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Everything but the guest: the state file, the monitor's directory."""
        self._close_file()
        if self._incoming is not None:
            os.close(self._incoming)
            self._incoming = None
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
