"""Issue 15 item 3: nothing outlives a killed run. Processes that hold real helper
sessions (a noexec tmpfs mount, a wrapper with children) and real pytest runs are
killed with real signals; their guardian, or the next start's sweep, leaves no
process, mount or scratch directory behind, and never touches a live run's."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mmap2conf import procs, scratch

from faultlib import (FAULTS, REPO, alive, assert_nothing_left, conformance, leftovers, logged_pids,
                      no_traceback, pytest_command, qemu_dir, records, tag_of, wait_until)

HOLDER = FAULTS / "wrappers" / "holder.py"


def hold(started, helper, tmp_path, name, kind="noexec"):
    """A process holding a session on ``helper`` (behind inject.py --sleeper); returns what
    it wrote once its session answered, with the pids inject.py logged."""
    out, log = tmp_path / f"{name}.json", tmp_path / f"{name}.log"
    process = subprocess.Popen([sys.executable, str(HOLDER), str(helper), kind, str(log), str(out)],
                               env={**os.environ, "PYTHONPATH": str(REPO)}, process_group=0)
    started.append(process)
    wait_until(lambda: out.exists() or process.poll() is not None, f"the holder {name} to open its session")
    assert process.poll() is None, f"the holder {name} ended with status {process.returncode}"
    info = json.loads(out.read_text())
    info["process"], info["pids"] = process, logged_pids(log)   # wrapper, helper, sleeper
    return info


def mounted(path: str) -> bool:
    return any(line.split()[1] == path for line in open("/proc/mounts"))


def test_a_sigkilled_holder_leaves_nothing_its_guardian_cleans_up(native_helper, scratch_root, tmp_path, started):
    holder = hold(started, native_helper, tmp_path, "holder")
    assert mounted(holder["workdir"]) and all(alive(p) for p in holder["pids"])
    holder["process"].send_signal(signal.SIGKILL)     # the holder alone, not its group
    holder["process"].wait()
    assert_nothing_left(scratch_root, holder["tag"])
    assert not any(alive(p) for p in holder["pids"])


def test_what_a_run_killed_with_its_guardian_left_is_removed_at_the_next_start(
        native_helper, scratch_root, tmp_path, started):
    live = hold(started, native_helper, tmp_path, "live")          # a concurrent run, alive throughout
    dead = hold(started, native_helper, tmp_path, "dead")
    os.kill(dead["guardian"], signal.SIGKILL)
    wait_until(lambda: not alive(dead["guardian"]), "the guardian to die")
    dead["process"].send_signal(signal.SIGKILL)
    dead["process"].wait()
    wrapper, helper, sleeper = dead["pids"]
    # The session's own process died with its parent (PR_SET_PDEATHSIG), the helper at EOF;
    # the wrapper's sleeper, the mount and the directory are left for the next start.
    wait_until(lambda: not alive(wrapper) and not alive(helper), "the session's processes to die with the holder")
    left = leftovers(scratch_root, dead["tag"])
    assert list(left["processes"]) == [sleeper]
    assert dead["workdir"] in left["mounts"] and Path(dead["workdir"]).name in left["entries"]

    # The next start: a real conformance run in the same scratch root.
    result = conformance(["--arch", "i386", "--runner", "native", "--libc", "raw", "-k", "offset-unit"])
    no_traceback(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout[-2000:]
    assert leftovers(scratch_root, dead["tag"])["processes"] == {}
    assert not alive(sleeper) and not mounted(dead["workdir"]) and not Path(dead["workdir"]).exists()
    # The live run's session is untouched: its processes, its mount, its directory.
    assert all(alive(p) for p in live["pids"]) and mounted(live["workdir"])
    assert {e.name for e in scratch_root.iterdir()} == {Path(live["workdir"]).name}
    live["process"].send_signal(signal.SIGKILL)
    live["process"].wait()
    assert_nothing_left(scratch_root, live["tag"])


def test_a_wrappers_children_end_with_the_session(native_helper, scratch_root, tmp_path):
    """Closing a session kills its process group: the wrapper's sleeper too."""
    from mmap2conf.protocol import HelperSession
    from faultlib import INJECT
    log = tmp_path / "log"
    session = HelperSession(lambda workdir: [sys.executable, str(INJECT), "--fault", "none", "--log", str(log),
                                             "--sleeper", "--", str(native_helper), str(workdir)])
    try:
        assert session.request({"op": "probe", "id": "p"})["id"] == "p"
        pids = logged_pids(log)
        assert len(pids) == 3 and all(alive(p) for p in pids)
    finally:
        session.close()
    assert not any(alive(p) for p in pids)
    assert list(scratch_root.iterdir()) == []


NOEXEC_CASE = '"id":"errors/eperm-exec-on-a-noexec-mount#'


def start_hung_run(tmp_path, started, command, env=None, ignored=()):
    """A run whose noexec-scratch helper (a mount of its own) hangs in its case, behind a
    wrapper with a sleeper child; returns the process once the hang has begun. It starts
    with the signals ``ignored`` ignored and SIGINT otherwise at its default, as from a
    terminal, whatever this test process inherited (a script's background job starts
    with SIGINT ignored)."""

    def dispositions():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)

    directory, log = qemu_dir(tmp_path, "hang", NOEXEC_CASE, extra="--sleeper")
    process = subprocess.Popen([*command, "--qemu-dir", str(directory)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, process_group=0,
                               preexec_fn=dispositions,
                               env={**os.environ, "MMAP2CONF_EXCHANGE_TIMEOUT": "600", **(env or {})})
    started.append(process)
    wait_until(lambda: "fired" in (log.read_text() if log.exists() else "") or process.poll() is not None,
               "the injected hang")
    assert process.poll() is None, process.communicate()
    return process, log


@pytest.mark.parametrize("signum, status", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 2),
                                            (signal.SIGINT, 2)])
def test_a_signalled_pytest_run_leaves_nothing_behind(scratch_root, tmp_path, started, signum, status):
    report = tmp_path / "report.json"
    process, log = start_hung_run(tmp_path, started, pytest_command(
        ["--arch", "i386", "--runner", "qemu-user", "--libc", "raw", "--conformance-json", str(report)]))
    tag = tag_of(process.pid)
    assert leftovers(scratch_root, tag)["mounts"]       # the noexec session's own tmpfs, mounted
    assert all(alive(p) for p in logged_pids(log)[-3:])  # the hung session's wrapper, qemu and sleeper
    process.send_signal(signum)                     # pytest alone, as `kill` would
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == status
    assert_nothing_left(scratch_root, tag)
    assert not any(alive(p) for p in logged_pids(log))
    if signum != signal.SIGKILL:                    # an interrupt: the clean-up ran, the JSON too
        no_traceback(stderr)
        assert records(report) and json.loads(report.read_text())["status"] == "interrupted"


def test_a_pytest_run_started_with_sighup_ignored_keeps_ignoring_it(scratch_root, tmp_path, started):
    """`nohup pytest ...`: a closed terminal's SIGHUP does not end it; SIGTERM still does."""
    report = tmp_path / "report.json"
    process, log = start_hung_run(tmp_path, started, pytest_command(
        ["--arch", "i386", "--runner", "qemu-user", "--libc", "raw", "--conformance-json", str(report)]),
        ignored=(signal.SIGHUP,))
    process.send_signal(signal.SIGHUP)
    # Had it taken the SIGHUP, it would be closing its sessions now and gone within 0.4 s
    # (measured); it waits on its hung helper instead.
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=3)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    no_traceback(stderr)
    assert process.returncode == 2 and "interrupted by SIGTERM" in stdout
    assert json.loads(report.read_text())["status"] == "interrupted"
    assert_nothing_left(scratch_root, tag_of(process.pid))


RUN_COMMAND = [sys.executable, "-m", "mmap2conf", "run", "--arch", "i386", "--runner", "qemu-user",
               "--libc", "raw"]


def assert_interrupted_and_published(process, log, scratch_root, reports, by):
    stdout, stderr = process.communicate(timeout=300)
    no_traceback(stdout, stderr)
    assert process.returncode == 2                  # pytest's "interrupted"
    assert f"interrupted by {by}" in stderr
    assert json.loads((reports / "conformance.json").read_text())["status"] == "interrupted"
    assert f"reports in {reports}: conformance.json" in stdout
    assert [p.name for p in reports.iterdir() if p.name.startswith(".")] == []
    assert_nothing_left(scratch_root, tag_of(process.pid))
    assert not any(alive(p) for p in logged_pids(log))


def test_ctrl_c_on_the_run_command_reaches_pytest_once_and_the_reports_are_published(
        scratch_root, tmp_path, started):
    reports = tmp_path / "reports"
    process, log = start_hung_run(tmp_path, started, [*RUN_COMMAND, "--reports", str(reports)])
    os.killpg(process.pid, signal.SIGINT)           # what a terminal does: the whole foreground group
    assert_interrupted_and_published(process, log, scratch_root, reports, "SIGINT")


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it_and_sigterm_still_interrupts_it(
        scratch_root, tmp_path, started):
    """A script's background job (`make conformance &`) starts with SIGINT ignored, and its
    pytest would inherit that; a CI's timeout then sends SIGTERM."""
    reports = tmp_path / "reports"
    process, log = start_hung_run(tmp_path, started, [*RUN_COMMAND, "--reports", str(reports)],
                                  ignored=(signal.SIGINT,))
    os.killpg(process.pid, signal.SIGINT)
    # Python runs pending handlers in signal-number order: had the SIGINT been taken,
    # it would be the one named, and the SIGTERM after it would kill pytest's group.
    os.killpg(process.pid, signal.SIGTERM)
    assert_interrupted_and_published(process, log, scratch_root, reports, "SIGTERM")


@pytest.mark.parametrize("content, mode, why", [
    (b"\x7fELF not really", 0o755, "Exec format error"),
    (b"#!/bin/sh\n", 0o644, "Permission denied"),
    (None, None, "Permission denied"),           # a directory
    ("missing", None, "No such file or directory"),
])
def test_a_helper_command_that_cannot_be_executed_is_a_named_failure(scratch_root, tmp_path, content, mode, why):
    from mmap2conf.protocol import HelperSession, ProtocolError
    if content is None:
        (tmp_path / "qemu").mkdir()
    elif content != "missing":
        (tmp_path / "qemu").write_bytes(content)
        (tmp_path / "qemu").chmod(mode)
    session = HelperSession(lambda workdir: [str(tmp_path / "qemu"), "helper", str(workdir)])
    try:
        for _ in range(2):     # and again on the next request: never a traceback
            with pytest.raises(ProtocolError) as error:
                session.request({"op": "probe", "id": "p"})
            assert error.value.kind == "cannot-start"
            assert str(error.value) == f"cannot start {tmp_path / 'qemu'}: {why}"
    finally:
        session.close()
    assert list(scratch_root.iterdir()) == []


def test_a_gone_owners_directory_goes_with_what_is_mounted_inside_it():
    """A container image's root file system (containers.ensure_base_image) has debootstrap's
    /proc mounted in it while debootstrap runs: a run killed then left both behind."""
    procs.sweep_at_start()   # this process's own first sweep, which the umount would start
    gone = subprocess.Popen(["sleep", "60"])
    tag = tag_of(gone.pid)
    gone.kill()
    gone.wait()
    rootfs = Path(tempfile.mkdtemp(prefix=f"{scratch.PREFIX}rootfs-{tag}-"))
    (rootfs / "proc").mkdir()
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    try:
        done = procs.sweep(tag)
        assert not mounted(str(rootfs / "proc")) and not rootfs.exists()
        assert f"removed {rootfs}" in done
    finally:
        if mounted(str(rootfs / "proc")):
            subprocess.run(["umount", "-l", str(rootfs / "proc")])
        shutil.rmtree(rootfs, ignore_errors=True)


def test_an_owned_directory_carries_its_owners_tag():
    path = scratch.owned_directory("rootfs")
    try:
        assert scratch.OWNED.match(path.name).group(1) == procs.owner()
        assert path.parent == Path(tempfile.gettempdir())   # a root the sweep looks in
    finally:
        path.rmdir()
