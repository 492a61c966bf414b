"""ssh: a Linux board reached over ssh runs the static helpers itself.

``--runner ssh --target [user@]host[:port]`` (repeatable) gives one system under
test per configuration and target, named ``ssh-HOST`` (``ssh-USER@HOST:PORT``
with a user or port). Which configurations a board runs is found by running
them: an x86_64 board runs the i386 and x86_64 helpers, an arm64 board may run
armhf ones; a helper the board cannot execute makes its sessions unavailable
with the reason "the board does not run <config> helpers", a skip, because the
user named the board, not its ABIs. A target that cannot be reached at all
(refused, timed out, authentication or host key refused) is an error, as for
any system asked for by name. The board's page size, kernel release and word
size come from the probe, as for every runner; nothing is stated.

The client is OpenSSH's ``ssh``, not a Python library (paramiko, asyncssh): it is
what people already reach their boards with, so their ~/.ssh/config, agent,
ProxyJump hosts, certificates and known_hosts work unchanged; it is in every
distribution (Debian's openssh-client) and adds no Python dependency; and its
stdin and stdout are exactly the pipes protocol.HelperSession speaks over, so the
same deadlines, error messages and restarts serve it. Options it always gets,
after the user's own (ssh takes the first value given for an option, so
``--ssh-option`` overrides them):

- ``BatchMode=yes``: never ask for a password, a passphrase or a new host key.
  There is no terminal to answer on; a prompt would hang the run, BatchMode
  makes it a clear authentication or host-key error instead.
- ``ConnectTimeout=10``: a board that is off or behind a black hole is an error
  after 10 s, not after the kernel's TCP connect timeout (about two minutes).
- ``ServerAliveInterval=5``, ``ServerAliveCountMax=3``: a connection that dies
  without a FIN (a board that lost power, a network that went away) ends the
  client within 15 s even while no request is in flight, so the next request
  starts a new connection instead of writing into a dead one.
- ``ControlMaster=no``, ``ControlPath=none``: each helper session is its own
  connection. A shared master would outlive the client the session kills at a
  deadline, and with it the helper on the board.
- ``-T`` (no pty: the stream is binary, and a pty would echo and translate it),
  ``-e none`` (no escape character), ``-a -x`` (no agent or X11 forwarding),
  ``LogLevel=ERROR`` (no "Permanently added" chatter on stderr).

The helper goes over the same connection, and nothing is left on the board. The
remote command is ``exec sh -c BOOT mmap2conf-ssh N CONFIG KIND LARGEST``: the
board's /bin/sh reads one line, REMOTE_SCRIPT, and runs it. The script makes a private directory (``mktemp -d`` under $TMPDIR or /tmp, mode 0700), reads
exactly N bytes of helper from stdin with ``dd`` (``iflag=fullblock``, which
never reads past the block; plain ``dd bs=1`` where the board's dd lacks it:
``head -c`` of busybox reads ahead through stdio and would swallow the first
request), checks the size, runs the helper once without DIR (it exits 2: the
board runs it), makes the helper's DIR (see below) and then runs the helper as
a child on the rest of stdin and waits, so that its traps still run: EXIT
removes the private directory and DIR; HUP, INT, TERM and PIPE end the shell
through EXIT (after killing the helper). The session writes the script's line and
the N bytes as its preamble (protocol.HelperSession) right after the client
starts, then the requests. Without a pty,
a dropped connection sends the board's processes no SIGHUP: sshd closes the
helper's stdin, the helper reads EOF and exits, the shell removes everything
(tests/test_ssh.py kills the client mid-session and finds the board's temporary
directories empty).

The helper's DIR is chosen on the board as the harness chooses its own scratch
root (scratch.scratch_root): a private directory in /dev/shm if a sparse file of
scratch.LARGEST_FILE bytes fits there (tmpfs; the large-offset cases need 2^45
bytes, ext4 stops at 16 TiB), else DIR inside the private directory. A noexec
session (the EPERM case) needs a writable noexec tmpfs on the board (one that
the suite did not mount for another session); an unprivileged user cannot mount
one, so without it those sessions are unavailable, a skip with that reason. The
binary itself runs from $TMPDIR or /tmp, which must allow exec.

tracer is None: a class attribute read when the cases are generated, before any
connection (a board that cannot be reached must be a record with its error, not
a collection failure), while whether a board has strace, and how it prints
mmap2's offset, could only be learnt from the board. The traced rows run
untraced on ssh systems: libc's answer is judged, its system call is not.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..model import FLAVOURS, Config
from ..scratch import LARGEST_FILE
from . import VERSION_TIMEOUT, Options, Runner, RunnerUnavailable, clean_environment, noexec

CONNECT_TIMEOUT = 10
DEFAULT_OPTIONS = ("BatchMode=yes", f"ConnectTimeout={CONNECT_TIMEOUT}", "ServerAliveInterval=5",
                   "ServerAliveCountMax=3", "ControlMaster=no", "ControlPath=none", "LogLevel=ERROR")
EXEC_CHECK_STATUS = 2      # the helper's exit status without DIR (PROTOCOL.md, Exit status)
SETUP_FAILED = 125         # the remote script's own status when it cannot set a session up
IDENTITY_KEY = "ssh identity"   # Options.resources: what each target answered, asked once per process

# The remote command: the board's /bin/sh reads one line, the script, and runs it with
# the arguments N CONFIG KIND LARGEST (KIND: "exec" or "noexec"). The `read` builtin
# reads a pipe byte by byte, so it takes the line and nothing after it. The script
# comes first in the preamble rather than in the command, so that the login shell
# (bash, dash, fish, csh: whatever the board's user has) only ever parses this short
# command, which means the same to all of them.
BOOT = 'IFS= read -r script && eval "$script"'
# Sent as one line: every line below ends where a sh command may follow.
REMOTE_SCRIPT = """
n=$1; config=$2; kind=$3; large=$4;
umask 077; d=; s=; pid=;
cleanup() {
 trap - EXIT HUP INT TERM PIPE;
 if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi;
 if [ -n "$s" ]; then rm -rf "$s" 2>/dev/null; fi;
 if [ -n "$d" ]; then rm -rf "$d" 2>/dev/null; fi;
};
trap cleanup EXIT; trap "exit 129" HUP; trap "exit 130" INT; trap "exit 143" TERM; trap "exit 141" PIPE;
fail() { echo "mmap2conf-ssh: $*" >&2; exit @SETUP_FAILED@; };
t=${TMPDIR:-/tmp};
d=$(mktemp -d "$t/mmap2conf-ssh.XXXXXX") || fail "cannot make a private directory in $t";
if dd bs="$n" count=1 iflag=fullblock of="$d/helper" 2>"$d/dd"; then :;
elif [ -s "$d/helper" ]; then fail "receiving the helper: $(cat "$d/dd")";
else dd bs=1 count="$n" of="$d/helper" 2>"$d/dd" || fail "receiving the helper: $(cat "$d/dd")"; fi;
got=$(($(wc -c < "$d/helper")));
if [ "$got" -ne "$n" ]; then fail "received $got of the $n bytes of the helper"; fi;
chmod 700 "$d/helper";
"$d/helper" </dev/null >/dev/null 2>"$d/check"; st=$?;
if [ "$st" -ne @EXEC_CHECK_STATUS@ ]; then
 fail "the board does not run $config helpers ($(uname -sm)): the helper in $t exited with status $st: $(cat "$d/check")";
fi;
if [ "$kind" = noexec ]; then
 while read -r src mp fs opts rest; do
  case "$fs" in tmpfs) ;; *) continue;; esac;
  case "$src" in mmap2conf-noexec) continue;; esac;
  case ",$opts," in *,noexec,*) ;; *) continue;; esac;
  s=$(mktemp -d "$mp/mmap2conf-ssh.XXXXXX" 2>/dev/null) && break;
  s=;
 done < /proc/mounts;
 if [ -z "$s" ]; then
  fail "the board has no writable noexec tmpfs for the noexec scratch directory (an unprivileged user cannot mount one; an administrator can: mount -t tmpfs -o noexec,mode=1777 none /mnt/noexec)";
 fi;
else
 for r in /dev/shm "$t"; do
  s=$(mktemp -d "$r/mmap2conf-ssh.XXXXXX" 2>/dev/null) || { s=; continue; };
  if : > "$s/large" && truncate -s "$large" "$s/large" 2>/dev/null; then rm -f "$s/large"; break; fi;
  rm -rf "$s"; s=;
 done;
 if [ -z "$s" ]; then s=$d/dir; mkdir "$s" || fail "cannot make $s"; fi;
fi;
rm -f "$d/dd" "$d/check";
exec 3<&0;
"$d/helper" "$s" <&3 3<&- &
pid=$!; exec 3<&-;
wait "$pid"; st=$?; pid=;
exit "$st"
"""


def remote_script() -> str:
    """REMOTE_SCRIPT as the one line that is sent."""
    script = REMOTE_SCRIPT.replace("@SETUP_FAILED@", str(SETUP_FAILED))
    script = script.replace("@EXEC_CHECK_STATUS@", str(EXEC_CHECK_STATUS))
    return " ".join(part.strip() for part in script.strip().splitlines())


class TargetError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    """One board: ``[user@]host[:port]`` (an IPv6 address in brackets when it has a port)."""

    text: str
    user: str | None
    host: str
    port: int | None

    @property
    def name(self) -> str:
        """The system's name: ssh-HOST, ssh-USER@HOST:PORT; no "/" (pytest ids, xdist scopes)."""
        host = re.sub(r"[^A-Za-z0-9._-]", "_", self.host)
        user = re.sub(r"[^A-Za-z0-9._-]", "_", self.user) + "@" if self.user else ""
        return f"ssh-{user}{host}" + (f":{self.port}" if self.port else "")

    def args(self) -> list[str]:
        return [*(["-p", str(self.port)] if self.port else []), *(["-l", self.user] if self.user else []),
                self.host]


def parse_target(text: str) -> Target:
    """[user@]host[:port]; TargetError says what is wrong."""
    user, at, rest = text.rpartition("@")
    if at and not user:
        raise TargetError(f"--target {text!r}: empty user before '@'")
    port_text = None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise TargetError(f"--target {text!r}: expected [IPv6-address]:port")
        port_text = after[1:] if after else None
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest   # a bare IPv6 address, or a name
    if not host or host.startswith("-") or re.search(r"\s", text):
        raise TargetError(f"--target {text!r}: expected [user@]host[:port]")
    if user and (user.startswith("-") or not re.fullmatch(r"[^\s:/]+", user)):
        raise TargetError(f"--target {text!r}: bad user {user!r}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise TargetError(f"--target {text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return Target(text, user or None, host, port)


def client_args(options: list[str], identity: Path | None, known_hosts: Path | None) -> tuple[str, ...]:
    """ssh arguments from --ssh-option KEY=VALUE, --ssh-identity and --ssh-known-hosts;
    TargetError for a malformed one."""
    args: list[str] = []
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key) or not value:
            raise TargetError(f"--ssh-option {option!r}: expected KEY=VALUE, an ssh_config(5) option")
        args += ["-o", option]
    if identity is not None:
        args += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    if known_hosts is not None:
        args += ["-o", f"UserKnownHostsFile={known_hosts}"]
    return tuple(args)


class Ssh(Runner):
    kind = "ssh"
    apt = ("openssh-client",)
    tracer = None     # decided before any connection is made: see the module's docstring

    unavailable_status = SETUP_FAILED   # the board lacks what the session needs (the remote script says what)
    one_worker = True                    # a board takes one session at a time

    def __init__(self, config: Config, target: Target, options: Options):
        super().__init__(config, target.name, False)
        self.target, self.options = target, options

    # The engine makes a session that cannot start an error for a system asked for by name,
    # a skip otherwise. The user named the board, not the configurations it might run: a
    # board that cannot be reached is an error, one that does not run an ABI's helpers a skip.
    @property
    def asked(self) -> bool:
        return isinstance(self.options.resources.get(IDENTITY_KEY, {}).get(self.target.text), RunnerUnavailable)

    @asked.setter
    def asked(self, value: bool) -> None:
        pass   # Runner.__init__'s; what counts is whether the target answered

    @classmethod
    def systems(cls, config: Config, options: Options) -> list[Runner]:
        if not options.wants(cls.kind, False) or not set(config.flavours) & set(FLAVOURS):
            return []
        return [cls(config, parse_target(target), options) for target in options.targets]

    def ssh(self) -> list[str]:
        """The client and its options, the destination last."""
        client = shutil.which("ssh")
        if client is None:
            raise RunnerUnavailable("ssh is not installed (apt package openssh-client)")
        defaults = [word for option in DEFAULT_OPTIONS for word in ("-o", option)]
        return [client, "-T", "-e", "none", "-a", "-x", *self.options.ssh_args, *defaults, *self.target.args()]

    def identity(self) -> dict:
        """The target and its `uname -a`, asked once per target by a quick connection;
        RunnerUnavailable (and an error: the board was named) when it cannot be reached."""
        answers = self.options.resources.setdefault(IDENTITY_KEY, {})
        if self.target.text not in answers:
            answers[self.target.text] = self._ask_identity()
        found = answers[self.target.text]
        if isinstance(found, RunnerUnavailable):
            raise found
        return found

    def _ask_identity(self) -> dict | RunnerUnavailable:
        try:
            command = [*self.ssh(), "uname -r; uname -m; uname -a"]
        except RunnerUnavailable as exc:
            return exc
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=VERSION_TIMEOUT, env=clean_environment())
        except subprocess.TimeoutExpired:
            return RunnerUnavailable(f"cannot reach {self.target.text}: ssh did not answer within "
                                     f"{VERSION_TIMEOUT} s")
        lines = result.stdout.splitlines()
        if result.returncode != 0 or len(lines) < 3:
            why = result.stderr.strip()[-500:] or f"printed {result.stdout.strip()[-200:]!r}"
            return RunnerUnavailable(f"cannot reach {self.target.text}: ssh exited with status "
                                     f"{result.returncode}: {why}")
        release, machine, uname = lines[-3:]
        return {"target": self.target.text, "uname": uname, "kernel": release, "machine": machine,
                "version": f"Linux {release} {machine}"}

    def command(self, helper, workdir: Path, trace: bool = False) -> list[str]:
        if trace:
            raise RunnerUnavailable(f"no system call tracer runs on {self.name}")
        return self._command(Path(helper).stat().st_size, "noexec" if noexec(workdir) else "exec")

    def _command(self, size: int, kind: str) -> list[str]:
        remote = shlex.join(["exec", "sh", "-c", BOOT, "mmap2conf-ssh", str(size), self.config.name, kind,
                             str(LARGEST_FILE)])
        return [*self.ssh(), remote]

    def preamble(self, helper) -> bytes:
        """The remote script's line, then the helper binary."""
        return remote_script().encode() + b"\n" + Path(helper).read_bytes()

    def reproducer(self, helper, line: str, scratch_kind: str | None = None, trace: bool = False) -> str:
        """The script, the helper and the request into the same remote command: the board
        removes what it made when the helper exits at the end of the input."""
        kind = "noexec" if scratch_kind == "noexec" else "exec"
        command = self._command(Path(helper).stat().st_size, kind)
        return (f"{{ printf '%s\\n' {shlex.quote(remote_script())}; cat {shlex.quote(str(helper))}; "
                f"printf '%s\\n' {shlex.quote(line)}; }} | {shlex.join(command)}")
