"""The ssh runner without a server: targets and options, xdist scopes, and the remote
script run by this machine's /bin/sh (what needs a board is tests/test_ssh.py, against
a real sshd)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmap2conf import bootstrap, build, model, plugin
from mmap2conf.engine import Suite
from mmap2conf.runners import Options, RunnerUnavailable
from mmap2conf.runners import ssh
from mmap2conf.scratch import LARGEST_FILE


@pytest.mark.parametrize("text, user, host, port, name", [
    ("board", None, "board", None, "ssh-board"),
    ("pi@board.local", "pi", "board.local", None, "ssh-pi@board.local"),
    ("pi@10.0.0.7:2222", "pi", "10.0.0.7", 2222, "ssh-pi@10.0.0.7:2222"),
    ("[fe80::1%eth0]:22", None, "fe80::1%eth0", 22, "ssh-fe80__1_eth0:22"),
    ("root@::1", "root", "::1", None, "ssh-root@__1"),
])
def test_a_target_is_user_host_and_port_and_names_its_system(text, user, host, port, name):
    target = ssh.parse_target(text)
    assert (target.user, target.host, target.port, target.name) == (user, host, port, name)
    assert "/" not in target.name


@pytest.mark.parametrize("text, message", [
    ("@board", "empty user"),
    ("pi@board:0", "port must be a number from 1 to 65535"),
    ("pi@board:ssh", "port must be a number"),
    ("-oProxyCommand=x", "expected [user@]host[:port]"),
    ("pi@", "expected [user@]host[:port]"),
    ("a b", "expected [user@]host[:port]"),
    ("[::1", "expected [IPv6-address]:port"),
])
def test_a_malformed_target_says_what_is_wrong(text, message):
    with pytest.raises(ssh.TargetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ssh.parse_target(text)


def test_the_client_gets_the_users_options_before_its_own(tmp_path):
    options = Options(kinds={"ssh"}, targets=("pi@board:2222",),
                      ssh_args=ssh.client_args(["ProxyJump=gw", "BatchMode=no"], tmp_path / "key", tmp_path / "kh"))
    runner = ssh.Ssh.systems(model.load_all()["armhf"], options)[0]
    command = runner.ssh()
    assert command[-5:] == ["-p", "2222", "-l", "pi", "board"]
    assert command.index("ProxyJump=gw") < command.index("BatchMode=yes")   # ssh takes the first value
    assert command.index("BatchMode=no") < command.index("BatchMode=yes")
    assert ["-i", str(tmp_path / "key"), "-o", "IdentitiesOnly=yes"] == command[command.index("-i"):][:4]
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in command
    for option in ("ConnectTimeout=10", "ServerAliveInterval=5", "ControlPath=none"):
        assert option in command
    with pytest.raises(ssh.TargetError, match="expected KEY=VALUE"):
        ssh.client_args(["BatchMode"], None, None)


def test_one_system_per_configuration_and_target_only_when_asked_for():
    config = model.load_all()["i386"]
    assert ssh.Ssh.systems(config, Options()) == []
    options = Options(kinds={"ssh"}, targets=("a", "b@c:2"))
    systems = ssh.Ssh.systems(config, options)
    assert [s.name for s in systems] == ["ssh-a", "ssh-b@c:2"]
    # Not an error for a board that does not run an ABI; an error once the board cannot be reached.
    assert not systems[0].asked
    options.resources[ssh.IDENTITY_KEY] = {"a": RunnerUnavailable("cannot reach a")}
    assert systems[0].asked and not systems[1].asked
    with pytest.raises(RunnerUnavailable, match="cannot reach a"):
        systems[0].identity()


def test_the_traced_rows_are_not_applicable_on_a_board():
    runner = ssh.Ssh.systems(model.load_all()["i386"], Options(kinds={"ssh"}, targets=("a",)))[0]
    assert runner.tracer is None
    with pytest.raises(RunnerUnavailable, match="no system call tracer"):
        runner.command(Path("/bin/sh"), Path("/"), trace=True)


class FakeConfig:
    def __init__(self, **values):
        self.values = values

    def getoption(self, name):
        defaults = {"m2_target": [], "m2_ssh_option": [], "m2_ssh_identity": None, "m2_ssh_known_hosts": None}
        return self.values.get(name, defaults.get(name))


@pytest.mark.parametrize("kinds, values, message", [
    ({"ssh"}, {}, "--runner ssh needs --target"),
    ({"native"}, {"m2_target": ["board"]}, "--target need --runner ssh"),
    (None, {"m2_ssh_option": ["A=b"]}, "--ssh-option need --runner ssh"),
    ({"ssh"}, {"m2_target": ["board:99999"]}, "port must be a number"),
    ({"ssh"}, {"m2_target": ["board", "board"]}, "two targets name the same system ssh-board"),
    ({"ssh"}, {"m2_target": ["board"], "m2_ssh_identity": Path("/nonexistent")}, "--ssh-identity /nonexistent is not a file"),
    ({"ssh"}, {"m2_target": ["board"], "m2_ssh_option": ["=x"]}, "expected KEY=VALUE"),
])
def test_the_ssh_options_are_usage_errors_when_wrong(kinds, values, message):
    with pytest.raises(pytest.UsageError, match=message):
        plugin._ssh_options(FakeConfig(**values), kinds)


def test_a_bad_target_is_a_usage_error_of_the_run():
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_conformance.py", "-p", "no:cacheprovider",
                             "--runner", "ssh", "--target", "pi@board:x"], cwd=model.REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 4 and "the port must be a number" in result.stderr


def test_each_board_is_one_xdist_scope_and_every_other_helper_its_own_on_all_its_systems():
    suite = Suite(Options(kinds={"ssh", "native"}, targets=("pi@a:22", "b")), arches={"i386", "x86_64"})
    boards = suite.one_worker_systems()
    assert boards == {"ssh-pi@a:22", "ssh-b"}
    case = "tests/test_conformance.py::test_case[{}/table/row]"
    assert plugin.scope_of(case.format("i386/raw/ssh-pi@a:22"), boards) == "ssh-pi@a:22"
    assert plugin.scope_of(case.format("x86_64/glibc/ssh-pi@a:22"), boards) == "ssh-pi@a:22"
    assert plugin.scope_of(case.format("i386/raw/ssh-b"), boards) == "ssh-b"
    assert plugin.scope_of(case.format("i386/raw/native"), boards) == "i386/raw"
    assert plugin.scope_of(case.format("i386/raw/qemu-7.2"), boards) == "i386/raw"


def test_the_bootstrap_installs_the_client_and_the_tests_server():
    assert {"openssh-client", "openssh-server"} <= set(bootstrap.apt_packages())


# ---- the remote script, run by this machine's /bin/sh as a board's would ----

def _remote(tmp_path, helper: Path, config="i386", data: bytes | None = None,
            lines=b'{"op":"probe","id":"p"}\n', path=None):
    """Run the board's side of a session here: the remote command, its preamble and requests."""
    runner = ssh.Ssh.systems(model.load_all()[config], Options(kinds={"ssh"}, targets=("board",)))[0]
    preamble = runner.preamble(helper) if data is None else ssh.remote_script().encode() + b"\n" + data
    remote = ["sh", "-c", ssh.BOOT, "mmap2conf-ssh", str(helper.stat().st_size), config, "exec", str(LARGEST_FILE)]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": path or os.environ["PATH"]}
    return subprocess.run(remote, input=preamble + lines, capture_output=True, timeout=60, env=env)


def _shm():
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("mmap2conf-ssh.")}


@pytest.fixture
def i386_raw():
    return build.helper_path(model.load_all()["i386"], "raw")


def test_the_remote_script_runs_the_helper_and_removes_what_it_made(tmp_path, i386_raw):
    before = _shm()
    result = _remote(tmp_path, i386_raw)
    assert result.returncode == 0, result.stderr
    assert b'"id":"p"' in result.stdout and b'"auxv_pagesz":4096' in result.stdout
    assert list(tmp_path.iterdir()) == [] and _shm() <= before


def test_a_dd_without_fullblock_reads_the_helper_byte_by_byte(tmp_path, i386_raw):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dd").write_text('#!/bin/sh\ncase "$*" in *iflag=*) echo "dd: unknown operand iflag" >&2; exit 1;; esac\n'
                             'exec /bin/dd "$@"\n')
    (fake / "dd").chmod(0o755)
    board_tmp = tmp_path / "tmp"
    board_tmp.mkdir()
    result = _remote(board_tmp, i386_raw, path=f"{fake}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert b'"id":"p"' in result.stdout and list(board_tmp.iterdir()) == []


def test_a_short_helper_is_an_error_of_the_remote_script(tmp_path, i386_raw):
    result = _remote(tmp_path, i386_raw, data=i386_raw.read_bytes()[:1000], lines=b"")
    assert result.returncode == ssh.SETUP_FAILED
    assert f"received 1000 of the {i386_raw.stat().st_size} bytes".encode() in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_helper_the_board_cannot_execute_says_so(tmp_path):
    foreign = build.helper_path(model.load_all()["arm"], "raw")
    result = _remote(tmp_path, foreign, "arm")
    assert result.returncode == ssh.SETUP_FAILED
    assert b"the board does not run arm helpers" in result.stderr and b"Exec format error" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_reproducer_sends_the_script_the_helper_and_the_request(i386_raw):
    runner = ssh.Ssh.systems(model.load_all()["i386"], Options(kinds={"ssh"}, targets=("pi@board",)))[0]
    line = '{"op":"probe","id":"p"}'
    text = runner.reproducer(i386_raw, line, "noexec")
    assert text.startswith("{ printf '%s\\n' ") and f"cat {i386_raw};" in text
    assert text.endswith(f"-l pi board 'exec sh -c '\"'\"'{ssh.BOOT}'\"'\"' mmap2conf-ssh "
                         f"{i386_raw.stat().st_size} i386 noexec {LARGEST_FILE}'")
