"""Issue 15 item 8: terminal control from a guest's console never reaches a message
or the JSON; an unusable MMAP2CONF_SCRATCH or timeout setting is a usage error;
an interrupted build leaves no .partial file behind for long."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mmap2conf import model
from mmap2conf.protocol import HelperSession, ProtocolError, printable
from mmap2conf.runners import Console

from faultlib import REPO, assert_nothing_left, conformance, no_traceback, records, tag_of, wait_until

# What a terminal would act on: ESC c (reset), CSI (clear, colours), OSC (title), BEL,
# a lone ESC, C1 CSI, backspace, a bare carriage return.
NOISE = (r"\033c\033[2J\033[1;31mSeaBIOS\033[0m \033]0;pwned\007\007 ok\033 \302\233 2J\010x\r\n"
         r"[    0.9] Kernel panic - not syncing: \033[5mVFS\033[0m\r\n")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> bool:
    return CONTROL.search(text) is None


def test_printable_removes_escape_sequences_and_shows_other_controls():
    assert printable("\x1bc\x1b[2J\x1b[1;31mred\x1b[0m \x1b]0;title\x07bell\x07 \x9b2J\x08 tab\tok\n") == \
        "red bell\\x07 \\x08 tab\tok\n"


def test_console_noise_of_a_guest_that_dies_is_printable_in_the_error():
    session = HelperSession(lambda workdir: ["sh", "-c", f"printf '{NOISE}'; echo 'qemu: \033c gone' >&2"],
                            console=Console(ready=b"mmap2_helper: init mode, ready", boot_timeout=5.0))
    try:
        with pytest.raises(ProtocolError) as error:
            session.request({"op": "probe", "id": "x"})
    finally:
        session.close()
    message = str(error.value)
    assert error.value.kind == "not-ready" and clean(message)
    assert "SeaBIOS \\x07 ok" in message and "pwned" not in message and "\\x08x" in message
    assert "Kernel panic - not syncing: VFS" in message and "qemu:  gone" in message


QEMU_SYSTEM = shutil.which("qemu-system-i386")


def fake_qemu_system(tmp_path: Path, script: str) -> Path:
    """A --qemu-dir whose qemu-system-i386 and qemu-system-x86_64 (both machines of machines/
    that run i386 helpers) print console noise instead of booting (their --version is the
    real qemu-system-i386's)."""
    if QEMU_SYSTEM is None:
        pytest.skip("qemu-system-i386 is not installed (make bootstrap)")
    directory = tmp_path / "qemu"
    directory.mkdir()
    for name in ("qemu-system-i386", "qemu-system-x86_64"):
        fake = directory / name
        fake.write_text(f'#!/bin/sh\ncase "$1" in --version) exec {QEMU_SYSTEM} "$@";; esac\n{script}\n')
        fake.chmod(0o755)
    return directory


@pytest.mark.parametrize("script, reason", [
    (f"printf '{NOISE}'; exit 1", "the guest did not boot"),
    (f"printf 'mmap2_helper: init mode, ready\\r\\n'; while read l; do printf '{NOISE}'; done",
     "no answer within 1 s"),
])
def test_a_guests_console_noise_reaches_neither_the_terminal_nor_the_json(scratch_root, tmp_path, script, reason):
    directory = fake_qemu_system(tmp_path, script)
    report = tmp_path / "report.json"
    result = conformance(["--arch", "i386", "--runner", "linux", "--libc", "raw", "--require-all",
                          "--qemu-dir", str(directory), "-k", "offset-unit", "--conformance-json", str(report)],
                         env={"MMAP2CONF_BOOT_TIMEOUT": "5", "MMAP2CONF_EXCHANGE_TIMEOUT": "1"})
    no_traceback(result.stdout, result.stderr)
    by_id = records(report)
    reasons = {r["reason"] for r in by_id.values()}
    if not any(reason in r for r in reasons):
        pytest.skip(f"the i386 kernels of machines/ are not here: {sorted(reasons)[:1]}")
    assert all(r["outcome"] in ("failed", "error") and reason in r["reason"] for r in by_id.values())
    assert result.returncode == 6                 # could not run what was asked (--require-all)
    assert clean(report.read_text()) and "\\u001b" not in report.read_text()
    assert clean(result.stdout.replace("\n", "")) and clean(result.stderr.replace("\n", ""))
    assert "Kernel panic - not syncing" in report.read_text()
    assert list(scratch_root.iterdir()) == []


def test_a_guest_that_never_boots_is_an_error_in_the_default_selection_too(scratch_root, tmp_path):
    """Issue 15 item 4: a kernel system that starts and never reaches the helper's ready line
    is broken, an error with exit status 6, not a skip, even where nobody named it."""
    directory = fake_qemu_system(tmp_path, f"printf '{NOISE}'; exit 1")
    report = tmp_path / "report.json"
    result = conformance(["--arch", "i386", "--libc", "raw", "-k", "offset-unit", "--conformance-json", str(report)],
                         env={"PATH": f"{directory}:{os.environ['PATH']}", "MMAP2CONF_BOOT_TIMEOUT": "5"})
    no_traceback(result.stdout, result.stderr)
    by_system = {}
    for record in records(report).values():
        by_system.setdefault(record["runner"], set()).add(record["outcome"])
    if by_system.get("linux") == {"skipped"}:
        pytest.skip("the i386 kernels of machines/ are not here")
    assert by_system["linux"] <= {"error", "n.a."} and "error" in by_system["linux"]
    assert all("the system is broken" in r["reason"] for r in records(report).values()
               if r["runner"] == "linux" and r["outcome"] == "error")
    assert by_system["native"] <= {"passed", "n.a."}
    assert result.returncode == 6
    assert list(scratch_root.iterdir()) == []


@pytest.mark.parametrize("value, why", [
    ("/nonexistent/mmap2conf", "no such directory"),
    ("/etc/passwd", "not a directory"),
    ("relative/dir", "not an absolute path"),
    ("", "not an absolute path"),
    ("/proc", "a file cannot be made there"),
    ("NOEXEC", "it is on a noexec filesystem"),
])
def test_an_unusable_scratch_setting_is_a_usage_error(tmp_path, value, why):
    mount = None
    if value == "NOEXEC":
        mount = tmp_path / "noexec"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,size=1m", "faults-noexec", str(mount)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a noexec tmpfs here (not root)")
        value = str(mount)
    try:
        result = conformance(["--arch", "i386", "--runner", "native"], env={"MMAP2CONF_SCRATCH": value})
        if mount is not None:
            assert list(mount.iterdir()) == []
    finally:
        if mount is not None:
            subprocess.run(["umount", str(mount)], check=True)
    no_traceback(result.stdout, result.stderr)
    assert result.returncode == 4
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith(f"ERROR: MMAP2CONF_SCRATCH={value!r} cannot be the "
                                                        f"scratch root: {why}")


@pytest.mark.parametrize("name", ["MMAP2CONF_EXCHANGE_TIMEOUT", "MMAP2CONF_BOOT_TIMEOUT"])
@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan", "1e9", ""])
def test_an_invalid_timeout_setting_is_a_usage_error(name, value):
    result = conformance(["--arch", "i386", "--runner", "native"], env={name: value})
    no_traceback(result.stdout, result.stderr)
    assert result.returncode == 4
    assert result.stderr.strip() == (f"ERROR: {name}={value!r} must be a number of seconds above 0 and at "
                                     f"most 3600")


def test_an_interrupted_build_leaves_its_partial_file_to_the_next_build(tmp_path, started):
    config = model.load_all()["i386"]
    real = shutil.which(config.flavours["raw"].cc)
    if real is None:
        pytest.skip(f"{config.flavours['raw'].cc} is not installed (make bootstrap)")
    bin_dir, marker, cache = tmp_path / "bin", tmp_path / "compiling", tmp_path / "cache"
    bin_dir.mkdir()
    compiler = bin_dir / Path(real).name
    # A compiler that writes half its output, then hangs in a child of its own.
    compiler.write_text(f"""#!/bin/sh
for a; do case "$a" in --version) exec {real} "$@";; esac; done
prev=; for a; do [ "$prev" = -o ] && out=$a; prev=$a; done
printf 'half a binary' > "$out"; touch {marker}; sleep 600 & wait
""")
    compiler.chmod(0o755)
    code = ("import sys; from mmap2conf import build, model; "
            "print(build.helper_path(model.load_all()['i386'], 'raw'))")
    env = {**os.environ, "MMAP2CONF_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    builder = subprocess.Popen([sys.executable, "-c", code], env={**env, "PATH": f"{bin_dir}:{env['PATH']}"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0, cwd=REPO)
    started.append(builder)
    wait_until(lambda: marker.exists() or builder.poll() is not None, "the compiler to start writing")
    tag = tag_of(builder.pid)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    partials = list(cache.glob("i386-raw-*.partial"))
    assert len(partials) == 1 and partials[0].read_bytes() == b"half a binary"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_nothing_left(empty, tag)                 # the hanging compiler and its child are gone
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(cache.glob("*.partial"))
    assert Path(result.stdout.strip()).exists() and Path(result.stdout.strip()).parent == cache
