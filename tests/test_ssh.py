"""The ssh runner, for real: Debian's OpenSSH server on 127.0.0.1 (a random free port,
a throw-away host key, user key and user, its own sshd_config), serving the i386 and
x86_64 helpers on this machine's kernel, compared case by case with the native runner.

The board's account is a throw-away unprivileged user made with useradd, not root: a
board is normally reached as an ordinary user, and root would hide exactly what such a
user cannot do (mount the noexec tmpfs of the EPERM case, get past the memlock limit
without dropping CAP_IPC_LOCK), so the comparison sees what a real board account gets.
Its home holds only ~/.ssh/authorized_keys (StrictModes stays on: the home, ~/.ssh and
the key file belong to the user, mode 0700/0600). sshd is stopped, the user deleted and
every file removed afterwards. One more server runs in a mount namespace of its own with
a noexec tmpfs that user can write, as a board's administrator would provide it, so that
the EPERM case runs over ssh too.

Making a user and starting sshd need root: without it these tests skip with the reason
(a failure under --require-all, as in `make check`).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmap2conf import build, model
from mmap2conf.protocol import HelperSession
from mmap2conf.runners import Options
from mmap2conf.runners import ssh as ssh_runner
from mmap2conf.model import REPO

SSHD = "/usr/sbin/sshd"     # sshd re-executes itself and wants its absolute path
ADDRESSES = ("127.0.0.1", "127.0.0.2")   # two "boards" on one server (the xdist test)
ARCHES = "i386,x86_64"
RUN_TIMEOUT = 600
START_TIMEOUT = 20
BOARD_TEMP = ("/tmp", "/var/tmp", "/dev/shm")   # where the remote script may make its directories
EXIT_NOT_RUN = 6


@dataclass
class Board:
    user: str
    port: int
    root: Path
    identity: Path
    known_hosts: Path
    sshd_pid: int
    noexec: Path | None = None    # a noexec tmpfs that only the board's sessions see

    def target(self, address: str = ADDRESSES[0]) -> str:
        return f"{self.user}@{address}:{self.port}"

    def options(self, address: str = ADDRESSES[0]) -> list[str]:
        return ["--runner", "ssh", "--target", self.target(address), "--ssh-identity", str(self.identity),
                "--ssh-known-hosts", str(self.known_hosts)]

    def left_behind(self) -> list[str]:
        """Anything the board's user has in the board's temporary directories."""
        result = subprocess.run(["find", *BOARD_TEMP, "-mindepth", "1", "-maxdepth", "1", "-user", self.user],
                                capture_output=True, text=True, timeout=30)
        return result.stdout.split()

    def in_noexec_tmpfs(self) -> list[str]:
        """What the noexec tmpfs holds, seen from sshd's own mount namespace."""
        result = subprocess.run(["nsenter", "-t", str(self.sshd_pid), "-m", "find", str(self.noexec), "-mindepth",
                                 "1"], capture_output=True, text=True, timeout=30, check=True)
        return result.stdout.split()

    def processes(self) -> list[tuple[int, str]]:
        result = subprocess.run(["ps", "-u", self.user, "-o", "pid=,args="], capture_output=True, text=True,
                                timeout=30)
        return [(int(pid), args) for pid, _, args in (line.strip().partition(" ")
                                                    for line in result.stdout.splitlines() if line.strip())]


def _run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60, **kwargs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (sshd's per-connection processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


SSHD_CONFIG = """\
Port {port}
{listen}
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {user}
StrictModes yes
PermitTTY no
PermitUserEnvironment no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 64
ClientAliveInterval 5
ClientAliveCountMax 3
LogLevel VERBOSE
"""


# With a noexec tmpfs: sshd runs in a mount namespace of its own where a world-writable
# noexec tmpfs is mounted, as a board's administrator would mount one; the host (and any
# other harness on it, which would take a writable noexec tmpfs for its own) never sees it.
NOEXEC_MOUNT = ('mount -t tmpfs -o noexec,nosuid,nodev,mode=1777,size=16m m2ssh-noexec "$1" && shift && '
                'exec "$@"')


@contextmanager
def local_sshd(noexec_tmpfs: bool = False):
    """sshd on 127.0.0.1 and 127.0.0.2 with a throw-away user; everything removed afterwards."""
    user = f"m2ssh-{secrets.token_hex(4)}"
    root = Path(tempfile.mkdtemp(prefix="mmap2conf-sshd-"))
    root.chmod(0o711)           # the user passes through to its home, and reads nothing else
    home = root / "home"
    privsep = Path("/run/sshd")  # sshd's privilege separation directory (the package makes it at boot)
    made_privsep = not privsep.exists()
    process = log = None
    noexec = root / "noexec" if noexec_tmpfs else None
    try:
        _run("useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
             "--password", "*", "--user-group", user)   # "*": no password, but not a locked account
        entry = pwd.getpwnam(user)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", str(root / "host_key"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", user, "-f", str(root / "client_key"))
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "authorized_keys").write_text((root / "client_key.pub").read_text())
        for path, mode in ((home, 0o700), (home / ".ssh", 0o700), (home / ".ssh" / "authorized_keys", 0o600)):
            os.chown(path, entry.pw_uid, entry.pw_gid)
            path.chmod(mode)
        if made_privsep:
            privsep.mkdir(mode=0o755)
        prefix = []
        if noexec is not None:
            noexec.mkdir()
            prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", NOEXEC_MOUNT, "sh", str(noexec)]
        host_key = (root / "host_key.pub").read_text().split()
        for attempt in range(3):   # the free port may be taken between the probe and sshd's bind
            port = _free_port()
            (root / "known_hosts").write_text("".join(f"[{a}]:{port} {host_key[0]} {host_key[1]}\n"
                                                      for a in ADDRESSES))
            config = root / "sshd_config"
            config.write_text(SSHD_CONFIG.format(port=port, root=root, user=user,
                                                 listen="\n".join(f"ListenAddress {a}" for a in ADDRESSES)))
            _run(SSHD, "-t", "-f", str(config))
            log = open(root / "sshd.log", "w+")
            process = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if (root / "sshd.log").read_text().count("Server listening on") == len(ADDRESSES):
                    break
                time.sleep(0.05)
            if process.poll() is None and (root / "sshd.log").read_text().count("Server listening on") == len(ADDRESSES):
                break
            process.kill()
            process.wait()
            process = None
            log.close()
        else:
            raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()[-2000:]}")
        yield Board(user, port, root, root / "client_key", root / "known_hosts", process.pid, noexec)
    finally:
        if process is not None:
            leftovers = _children(process.pid)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pid in leftovers:   # connections still open: their sshd processes, by their ids
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        try:
            pwd.getpwnam(user)
        except KeyError:
            pass
        else:
            for pid in _user_processes(user):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["userdel", user], capture_output=True, timeout=60)
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)
        if log is not None:
            log.close()
        shutil.rmtree(root, ignore_errors=True)   # the namespace and its tmpfs ended with sshd


def _user_processes(user: str) -> list[int]:
    result = subprocess.run(["ps", "-u", user, "-o", "pid="], capture_output=True, text=True, timeout=30)
    return [int(pid) for pid in result.stdout.split()]


def _sshd_unavailable(request) -> None:
    why = None
    if os.geteuid() != 0:
        why = "making a throw-away user and starting sshd need root"
    elif not Path(SSHD).is_file():
        why = f"no {SSHD} (apt package openssh-server; make bootstrap installs it)"
    elif shutil.which("ssh") is None or shutil.which("useradd") is None:
        why = "no ssh client or useradd (apt packages openssh-client, passwd)"
    if why:
        if request.config.getoption("m2_require_all"):
            pytest.fail(f"{why} (--require-all)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def board(request):
    _sshd_unavailable(request)
    with local_sshd() as found:
        yield found
        assert found.left_behind() == [], "the board kept files after the tests"


@pytest.fixture
def board_with_noexec_tmpfs(request):
    _sshd_unavailable(request)
    with local_sshd(noexec_tmpfs=True) as found:
        yield found
        assert found.left_behind() == [], "the board kept files after the tests"


def run_suite(tmp_path: Path, name: str, *args: str, timeout: float = RUN_TIMEOUT):
    """One conformance run in a pytest of its own: (completed process, records, seconds)."""
    report = tmp_path / f"{name}.json"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p",
                             "no:cacheprovider", *args, "--conformance-json", str(report)],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    records = json.loads(report.read_text())["records"] if report.exists() else []
    return result, records, seconds


# Addresses differ between two processes (ASLR): a mapping's return value is not compared;
# nor the system calls a tracer saw (a traced row runs untraced on ssh: libc's answer only).
def comparable(observed: dict | None) -> dict | None:
    if not observed:
        return observed
    return {k: v for k, v in observed.items() if k != "syscalls" and not (k == "ret" and observed.get("result") == "mapped")}


# Why a case may have run on one side only, and the reason the ssh record must give.
KNOWN_DIFFERENCES = {
    "noexec tmpfs": ("skipped", "the board has no writable noexec tmpfs"),
}


def difference_reason(native: dict, remote: dict) -> str | None:
    """The known reason why the ssh record differs from the native one, or None."""
    for reason, (outcome, text) in KNOWN_DIFFERENCES.items():
        if remote["outcome"] == outcome and text in (remote["reason"] or "") and native["outcome"] == "passed":
            return reason
    return None


def test_the_ssh_runner_agrees_with_the_native_runner_case_by_case(board, tmp_path):
    native, native_records, _ = run_suite(tmp_path, "native", "--require-all", "--arch", ARCHES,
                                          "--runner", "native")
    assert native.returncode == 0, (native.stdout + native.stderr)[-4000:]
    remote, remote_records, seconds = run_suite(tmp_path, "ssh", "--arch", ARCHES, *board.options())
    assert remote.returncode == 0, (remote.stdout + remote.stderr)[-4000:]
    assert {r["system"] for r in remote_records} == {f"ssh-{board.target()}"}

    def index(records):
        return {(r["config"], r["flavour"], r["case"]): r for r in records}

    by_native, by_ssh = index(native_records), index(remote_records)
    assert by_native.keys() == by_ssh.keys()
    agree, differ, unexplained = Counter(), Counter(), []
    for key in sorted(by_native):
        n, s = by_native[key], by_ssh[key]
        if n["outcome"] == s["outcome"] and comparable(n["observed"]) == comparable(s["observed"]):
            agree[n["outcome"]] += 1
            continue
        reason = difference_reason(n, s)
        if reason is None:
            unexplained.append(f"{'/'.join(key)}: native {n['outcome']} {n['observed']}, "
                               f"ssh {s['outcome']} {s['observed']} ({s['reason']})")
        else:
            differ[reason] += 1
    summary = (f"{len(by_native)} cases in {seconds:.1f} s over ssh: agree {dict(agree)}; "
               f"differ with a known reason {dict(differ)}")
    print(summary)
    assert not unexplained, summary + "\n" + "\n".join(unexplained)
    assert agree["passed"] > 100 and set(differ) <= set(KNOWN_DIFFERENCES)
    # The board measured itself: the same kernel as the native runner's, by its probe.
    ran = [r for r in remote_records if r["properties"]]
    assert {r["properties"]["kernel_release"] for r in ran} == {os.uname().release}
    assert {r["properties"]["kernel_bits"] for r in ran} == {64}
    identity = ran[0]["identity"]
    assert identity["target"] == board.target() and identity["uname"].startswith("Linux ")
    assert board.left_behind() == []


def test_with_a_noexec_tmpfs_the_eperm_case_runs_on_the_board_too(board_with_noexec_tmpfs, tmp_path):
    board = board_with_noexec_tmpfs
    native, native_records, _ = run_suite(tmp_path, "native", "--require-all", "--arch", "i386", "--libc", "raw",
                                          "-k", "noexec", "--runner", "native")
    remote, remote_records, _ = run_suite(tmp_path, "ssh", "--require-all", "--arch", "i386", "--libc", "raw",
                                          "-k", "noexec", *board.options())
    assert native.returncode == remote.returncode == 0, (remote.stdout + remote.stderr)[-4000:]
    assert [(r["case"], r["outcome"], r["observed"]) for r in remote_records] == \
        [(r["case"], r["outcome"], r["observed"]) for r in native_records]
    assert [r["observed"]["err_name"] for r in remote_records] == ["EPERM"]
    assert board.in_noexec_tmpfs() == [] and board.left_behind() == []


def test_the_reproducer_reruns_a_case_by_hand_and_leaves_nothing(board, tmp_path):
    _, records, _ = run_suite(tmp_path, "ssh", "--arch", "i386", "--libc", "raw,glibc", "-k", "eacces",
                              *board.options())
    record = next(r for r in records if r["outcome"] == "passed" and (r["observed"] or {}).get("err_name"))
    result = subprocess.run(["sh", "-c", record["reproducer"]], capture_output=True, text=True, timeout=60)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["id"] == record["request"]["id"] and answer["err_name"] == record["observed"]["err_name"]
    assert result.returncode == 0, result.stderr
    assert board.left_behind() == []


def test_a_configuration_the_board_does_not_run_is_a_skip_with_the_reason(board, tmp_path):
    result, records, _ = run_suite(tmp_path, "foreign", "--arch", "i386,arm", "--libc", "raw", *board.options())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    outcomes = Counter((r["config"], r["outcome"]) for r in records)
    # i386's xfails are the board's (the host's) kernel's known issues, e.g. KI-35
    assert set(outcomes) <= {("arm", "skipped"), ("arm", "n.a."), ("i386", "passed"), ("i386", "n.a."),
                             ("i386", "skipped"), ("i386", "xfailed")}, outcomes
    assert all(r["known_issue"] for r in records if r["outcome"] == "xfailed")
    assert all(KNOWN_DIFFERENCES["noexec tmpfs"][1] in r["reason"] for r in records
               if r["config"] == "i386" and r["outcome"] == "skipped")
    assert outcomes[("arm", "skipped")] > 50 and outcomes[("i386", "passed")] > 50
    reasons = {r["reason"] for r in records if r["config"] == "arm" and r["outcome"] == "skipped"}
    assert all("the board does not run arm helpers" in reason and "Exec format error" in reason
               for reason in reasons), reasons
    assert board.left_behind() == []


def test_an_unreachable_target_is_a_clear_error_within_the_deadline(board, tmp_path):
    closed = _free_port()    # nothing listens there
    result, records, seconds = run_suite(
        tmp_path, "unreachable", "--arch", "i386", "--libc", "raw", "--runner", "ssh",
        "--target", f"{board.user}@127.0.0.1:{closed}", "--ssh-identity", str(board.identity),
        "--ssh-known-hosts", str(board.known_hosts), timeout=120)
    assert result.returncode == EXIT_NOT_RUN, (result.stdout + result.stderr)[-4000:]
    assert records and {r["outcome"] for r in records if r["outcome"] != "n.a."} == {"error"}
    reason = next(r["reason"] for r in records if r["outcome"] == "error")
    assert f"cannot reach {board.user}@127.0.0.1:{closed}" in reason and "Connection refused" in reason
    assert seconds < 60


def _session(board: Board, config_name: str = "i386", flavour: str = "raw") -> HelperSession:
    config = model.load_all()[config_name]
    options = Options(kinds={"ssh"}, targets=(board.target(),),
                      ssh_args=ssh_runner.client_args([], board.identity, board.known_hosts))
    runner = ssh_runner.Ssh.systems(config, options)[0]
    helper = build.helper_path(config, flavour)
    return HelperSession(lambda workdir: runner.command(helper, workdir), preamble=runner.preamble(helper))


def _wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_killing_the_ssh_client_mid_session_leaves_nothing_on_the_board(board):
    session = _session(board)
    try:
        assert session.request({"op": "probe", "id": "p"})["auxv_pagesz"] == 4096
        made = board.left_behind()
        assert len(made) == 2 and all(Path(p).name.startswith("mmap2conf-ssh.") for p in made), made
        session.process.kill()     # the local client dies, as in an interrupted run
        session.process.wait()
        assert _wait_until(lambda: board.left_behind() == []), board.left_behind()
        assert _wait_until(lambda: board.processes() == []), board.processes()
        # The next request connects again.
        assert session.request({"op": "probe", "id": "again"})["id"] == "again" and session.starts == 2
    finally:
        session.close()
    assert _wait_until(lambda: board.left_behind() == [])


@pytest.mark.parametrize("name", ["SIGHUP", "SIGINT", "SIGTERM"])
def test_a_signal_to_the_remote_shell_removes_everything(board, name):
    session = _session(board)
    try:
        session.request({"op": "probe", "id": "p"})
        shells = [pid for pid, args in board.processes() if args.startswith("sh -c IFS= read")]
        assert len(shells) == 1, board.processes()
        os.kill(shells[0], getattr(signal, name))   # the session's own remote shell, by its id
        assert _wait_until(lambda: board.left_behind() == []), board.left_behind()
        # The shell's status (128 + the signal) comes back through ssh; the next request reconnects.
        assert session.process.wait(timeout=20) == 128 + getattr(signal, name)
        assert session.request({"op": "probe", "id": "reconnected"})["id"] == "reconnected"
        assert session.starts == 2
    finally:
        session.close()
    assert _wait_until(lambda: board.left_behind() == [] and board.processes() == [])


def test_two_boards_get_a_worker_each(board, tmp_path):
    targets = [arg for address in ADDRESSES for arg in ("--target", board.target(address))]
    result, records, _ = run_suite(tmp_path, "two", "-n", "2", "--arch", "i386", "--libc", "raw,glibc",
                                   "--runner", "ssh", *targets, "--ssh-identity", str(board.identity),
                                   "--ssh-known-hosts", str(board.known_hosts))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    workers = {}
    for record in records:
        if record["helper_process"]:
            workers.setdefault(record["system"], set()).add(record["helper_process"].split(":")[0])
    assert sorted(workers) == sorted(f"ssh-{board.target(a)}" for a in ADDRESSES)
    assert all(len(pids) == 1 for pids in workers.values()), workers
    assert len(set.union(*workers.values())) == 2, workers
    assert board.left_behind() == []
