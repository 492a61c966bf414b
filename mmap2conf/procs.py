"""Processes the suite starts, and what a run that died leaves behind.

Every process the suite starts (helpers, guests, compilers, mount, chromium) goes
through popen() or run() here, which puts it

- in a process group of its own, killed as a whole: a wrapper's children, or a
  guest under a shell wrapper, end with it;
- under a parent-death signal (PR_SET_PDEATHSIG, SIGKILL): it dies with the
  process that started it, even when that one was killed with SIGKILL;
- under the owner's tag, MMAP2CONF_OWNER=<pid>.<start time> in its environment,
  which everything it starts inherits.

The tag names its run exactly (a pid is reused, a pid with its start time is
not), and scratch directories carry it in their names (scratch.py). A guardian
process, one per owner and started with its first child, waits until its owner
ends, however it ends, then kills whatever still carries the owner's tag and
removes the owner's scratch directories and mounts (sweep). The same sweep runs
once at the start of every run, for the runs that died without a guardian: it
takes only what belongs to an owner that is gone, so concurrent runs never touch
each other's processes, mounts or directories.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_OWNER = "MMAP2CONF_OWNER"
ENV_GUARDIAN = "MMAP2CONF_GUARDIAN"     # in the guardian's own environment: whose guardian it is
TAG = r"(\d+)\.(\d+)"                   # <pid>.<start time in clock ticks since boot>
PR_SET_PDEATHSIG = 1
SWEEP_ROUNDS = 50                       # kill rounds, for processes that fork while being killed
_libc = ctypes.CDLL(None, use_errno=True)


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None when there is no such process (a zombie
    counts as none: it has ended, only its parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@functools.lru_cache(maxsize=None)
def _owner_of(pid: int) -> str:
    return f"{pid}.{start_time(pid)}"


def owner() -> str:
    """This process's tag (computed per pid: a forked child is an owner of its own)."""
    return _owner_of(os.getpid())


def owner_alive(tag: str) -> bool:
    match = re.fullmatch(TAG, tag)
    if not match:
        return True     # not a tag of ours: never treat it as stale
    return start_time(int(match.group(1))) == int(match.group(2))


def _preexec(parent: int) -> None:
    # Runs in the child between fork and exec.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:      # the parent died before prctl: nobody would see this child
        os._exit(127)


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.pop(ENV_GUARDIAN, None)
    env[ENV_OWNER] = owner()
    return env


def popen(command, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a group of its own, with a parent-death signal and the owner's tag."""
    if ENV_GUARDIAN not in os.environ:   # a guardian starts no guardian and sweeps only its owner
        sweep_at_start()
        _ensure_guardian()
    return subprocess.Popen(command, env=environment(env), process_group=0,
                            preexec_fn=functools.partial(_preexec, os.getpid()), **kwargs)


def exited(process: subprocess.Popen) -> bool:
    """Whether the process has ended, without reaping it: until it is reaped, its pid
    cannot be reused, so it still names its group safely."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_exit(process: subprocess.Popen, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: for ever) for the process to end, without
    reaping it. True if it ended."""
    if exited(process):
        return True
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:
        pidfd = None
    try:
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
            return exited(process)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while not exited(process):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


GROUP_GONE_BOUND = 5.0     # seconds for killed group members to be gone (not counting zombies)


def end(process: subprocess.Popen, timeout: float = 0.0) -> int:
    """Give the process ``timeout`` seconds to end by itself, then kill its whole group
    (stragglers too: a wrapper's children outlive the wrapper), reap it, and wait until
    no member of its group runs any more."""
    if process.returncode is not None:
        return process.returncode
    wait_exit(process, timeout)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return process.wait()
    status = process.wait()
    _wait_group_gone(process.pid)
    return status


def _group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(name))
    return members


def _wait_group_gone(pgid: int, bound: float = GROUP_GONE_BOUND) -> None:
    """SIGKILL is delivered asynchronously: wait (bounded) until the group's members that
    were killed are gone, so that nothing of it runs when a session says it is closed."""
    deadline = time.monotonic() + bound
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not _group_members(pgid) or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def run(command, timeout: float, input: bytes | None = None, env: dict[str, str] | None = None,
        cwd=None) -> subprocess.CompletedProcess:
    """Like subprocess.run(capture_output=True, text=True), through popen(): at the timeout,
    or on any exception (KeyboardInterrupt), the whole group is killed and reaped."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = popen(command, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                        stdout=out, stderr=err, env=env, cwd=cwd)
        try:
            if input is not None:
                try:
                    process.stdin.write(input)
                except BrokenPipeError:
                    pass
                process.stdin.close()
            finished = wait_exit(process, timeout)
        finally:
            status = end(process)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if not finished:
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
    return subprocess.CompletedProcess(command, status, stdout, stderr)


# -- what dead owners left behind ------------------------------------------------------------

def tagged_processes(tag: str | None = None) -> dict[int, str]:
    """{pid: tag} of the processes that carry an owner's tag (``tag``, or any)."""
    found = {}
    wanted = re.compile(rb"(?:^|\0)" + re.escape(ENV_OWNER.encode()) + rb"=("
                        + (re.escape(tag.encode()) if tag else TAG.encode()) + rb")\0")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                match = wanted.search(environ.read())
        except OSError:
            continue
        if match:
            found[int(entry.name)] = match.group(1).decode()
    return found


def kill_tagged(stale) -> list[int]:
    """SIGKILL every process whose tag ``stale(tag)`` says is stale, until none is left."""
    killed = []
    for _ in range(SWEEP_ROUNDS):
        targets = [pid for pid, tag in tagged_processes().items() if stale(tag)]
        if not targets:
            break
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
    return sorted(set(killed))


def sweep(tag: str | None = None) -> list[str]:
    """Kill the processes, unmount the mounts and remove the scratch directories of one
    owner (``tag``, which must be gone) or of every owner that is gone. Returns what it
    did, one line each."""
    from . import scratch

    def stale(found: str) -> bool:
        return found == tag if tag else not owner_alive(found)

    done = [f"killed process {pid}" for pid in kill_tagged(stale)]
    return done + scratch.sweep(stale)


_swept: dict[int, list[str]] = {}


def sweep_at_start() -> list[str]:
    """Once per process, before its first child or scratch directory: clean up what runs
    that are gone left behind. Returns what the sweep did."""
    if os.getpid() not in _swept:
        _swept[os.getpid()] = []      # first: the sweep itself starts processes (umount)
        _swept[os.getpid()].extend(sweep())
    return _swept[os.getpid()]


_guardians: dict[int, subprocess.Popen] = {}


def _ensure_guardian() -> None:
    """The guardian of this owner: started once, with the first child."""
    if os.getpid() in _guardians:
        return
    env = {k: v for k, v in os.environ.items() if k != ENV_OWNER}
    env[ENV_GUARDIAN] = owner()
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [env.get("PYTHONPATH")])])
    try:
        # A session of its own: a signal to the owner's process group (Ctrl-C, a CI job's
        # kill) does not reach it. Its stdin is the only copy of the pipe's write end left
        # open for it: EOF means the owner has ended.
        _guardians[os.getpid()] = subprocess.Popen(
            [sys.executable, "-m", "mmap2conf.procs", "guard", owner()], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
            cwd="/")
    except OSError:
        _guardians[os.getpid()] = None   # PDEATHSIG and the sweep at the next start remain


def guardian() -> subprocess.Popen | None:
    return _guardians.get(os.getpid())


def _guard(tag: str) -> int:
    for name in ("SIGINT", "SIGHUP", "SIGTERM", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    while sys.stdin.buffer.read(65536):
        pass
    # The owner closed the pipe: at its exit, or by dying. Wait until it is gone.
    while owner_alive(tag):
        time.sleep(0.05)
    sweep(tag)
    return 0


def main(argv: list[str] | None = None) -> int:
    """python3 -m mmap2conf.procs sweep: remove what runs that are gone left behind."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["guard"] and len(argv) == 2:
        return _guard(argv[1])
    if argv == ["sweep"]:
        for line in sweep():
            print(line)
        return 0
    print("usage: python3 -m mmap2conf.procs sweep", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
