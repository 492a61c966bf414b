"""Issue 14: saved guest states, on a real qemu-system-i386 and Debian 12's i386 kernel from
the cache. A guest booted once and saved is restored: it answers exactly as the booted one.
A corrupt state, one qemu refuses, one of another qemu-system version, and another kernel
command line or kernel image each lead to a fresh boot, and the boot replaces the state."""
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mmap2conf import digests, dispatch, guest_state, runners
from mmap2conf.engine import Engine, Suite
from mmap2conf.protocol import SettingError, check_settings

SYSTEM = "linux-6.1.0-50-686"
CASES = ("self-checks/", "offset-unit/")   # the probe answers and a handful of calls


@functools.lru_cache(maxsize=None)
def _suite() -> Suite:
    """The i386 raw helpers on the kernels of machines/ (loading them takes seconds)."""
    return Suite(runners.Options(kinds={"linux"}), arches={"i386"}, flavours={"raw"})


def _system(name: str):
    suite = _suite()
    return next(s for s in suite.systems(suite.configs["i386"]) if s.name == name)


@functools.lru_cache(maxsize=None)
def _helpers(name: str) -> tuple:
    """The helpers the engine's guest of that system holds, and its command."""
    runner = _system(name)
    helpers = _suite().shared_helpers(runner)
    return helpers, runner.dispatcher_command(helpers)


def _qmp_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("mmap2conf-qmp-")}


def _records(states: Path) -> dict:
    """The engine's records of CASES on the i386 guest, from a guest of their own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(guest_state.ENV_STATES, str(states))
        suite = _suite()
        engine = Engine(suite)
        try:
            found = {i.id: engine.run(i).to_json() for i in suite.instances()
                     if i.runner.name == SYSTEM and i.case.key.startswith(CASES)}
        finally:
            engine.close()
    if {r["outcome"] for r in found.values()} == {"skipped"}:
        pytest.skip(f"the i386 guest cannot run here: {next(iter(found.values()))['reason']}")
    return found


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A states directory with the state of one booted guest, the records of the sessions
    that booted it and that restored it, and whether its digest was known after the save."""
    states = tmp_path_factory.mktemp("states")
    booted = _records(states)
    [state] = states.glob("*.state")
    known = _known_without_hashing(state)   # before any restore could have hashed it
    restored = _records(states)
    return state, booted, restored, known


def _known_without_hashing(state: Path) -> bool:
    digests._digest_of.cache_clear()   # another process's view: the memo alone
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(digests.hashlib, "file_digest", None)
        try:
            return digests.file_digest(state, guest_state.HEADER_SIZE) == _header(state)["stream"]["sha256"]
        except TypeError:   # not known: it would have been hashed
            return False


@pytest.fixture
def copy(saved, tmp_path, monkeypatch):
    """A private copy of the saved state, in the directory this test's sessions use."""
    monkeypatch.setenv(guest_state.ENV_STATES, str(tmp_path))
    target = tmp_path / saved[0].name
    shutil.copyfile(saved[0], target)
    return target


def _header(state: Path) -> dict:
    with open(state, "rb") as file:
        return json.loads(file.read(guest_state.HEADER_SIZE))


def _rewrite(state: Path, edit_header=None, edit_stream=None) -> None:
    """Change a state file's header or stream, as a hand (or a broken disk) would."""
    data = state.read_bytes()
    header, stream = json.loads(data[:guest_state.HEADER_SIZE]), data[guest_state.HEADER_SIZE:]
    if edit_stream:
        stream = edit_stream(stream)
        header["stream"] = {"size": len(stream), "sha256": hashlib.sha256(stream).hexdigest()}
    if edit_header:
        edit_header(header)
    state.write_bytes(json.dumps(header).encode().ljust(guest_state.HEADER_SIZE) + stream)


def _start() -> dict:
    """One start of the i386 guest as the engine makes it, and its raw helper's probe: the
    guest_start."""
    helpers, command = _helpers(SYSTEM)
    before = _qmp_dirs()
    guest = dispatch.Guest(lambda workdir: command, _system(SYSTEM).console, helpers)
    try:
        assert guest.serve(helpers[0], False, "test").request({"op": "probe", "id": "p"})["op"] == "probe"
        return guest.session.guest_start
    finally:
        guest.close()
        assert not guest.session.alive() and _qmp_dirs() <= before   # no qemu, no monitor directory left


def _answer(observed: dict) -> dict:
    """What a case observed, but for where the kernel placed a mapping: each helper is a new
    exec, its address space randomised (ASLR) in a booted guest as in a restored one."""
    return {**observed, "ret": "address"} if observed.get("result") == "mapped" else observed


def test_a_restored_guest_answers_exactly_as_the_booted_one(saved):
    state, booted, restored, _ = saved
    assert booted.keys() == restored.keys() and len(booted) >= 10
    for case, record in booted.items():
        assert restored[case]["outcome"] == record["outcome"] == "passed", case
        assert _answer(restored[case]["observed"]) == _answer(record["observed"]), case
        assert restored[case]["properties"] == record["properties"], case
    starts = {json.dumps(r["guest_start"], sort_keys=True) for r in booted.values()}
    [first] = [json.loads(s) for s in starts]
    [again] = [json.loads(s) for s in {json.dumps(r["guest_start"], sort_keys=True) for r in restored.values()}]
    assert (first["how"], first["fallback"], first["save_error"]) == ("booted", "no saved state", None)
    assert (again["how"], again["fallback"], again["save_seconds"]) == ("restored", None, None)
    print(f"\nboot {first['seconds']} s (+ save {first['save_seconds']} s), restore {again['seconds']} s, "
          f"state {state.stat().st_size / 1e6:.1f} MB")


def test_the_save_records_the_state_s_digest_so_that_its_first_restore_hashes_nothing(saved):
    assert saved[3]   # the stream was hashed on its way in; hashing it again cost a restore 50 to 200 ms


def test_a_corrupt_state_is_a_boot_that_replaces_it(copy):
    assert _start()["how"] == "restored"  # hashed, and its digest kept (digests.py) ...
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF          # one bit pattern in the stream: only its sha256 shows it
    with open(copy, "r+b") as file:       # ... for this version only: the same inode, rewritten
        file.write(data)
    first = _start()
    assert first["how"] == "booted" and "corrupt: its sha256" in first["fallback"]
    assert first["save_seconds"] is not None
    assert _start()["how"] == "restored"  # the boot's own state replaced the corrupt one


def test_a_state_qemu_refuses_is_a_boot(copy):
    # Cut in half, with a matching sha256. (The stream's last kilobytes are only qemu's JSON
    # description of it, which a restore does not read.)
    _rewrite(copy, edit_stream=lambda stream: stream[:len(stream) // 2])
    cut = _header(copy)["stream"]
    first = _start()
    assert first["how"] == "booted" and first["fallback"].startswith("the restore failed: "), first
    assert "\n" not in first["fallback"]   # one line, for the reports' summaries
    assert _header(copy)["stream"]["size"] > cut["size"]   # replaced


def test_a_state_of_another_qemu_system_version_is_a_boot(copy):
    version = _header(copy)["key"]["qemu_system"]["version"]
    _rewrite(copy, edit_header=lambda h: h["key"]["qemu_system"].update(version="QEMU emulator version 7.1.0"))
    first = _start()
    assert first["how"] == "booted"
    assert first["fallback"] == (f"the saved state {copy} is stale: it was saved by another qemu-system: "
                                 f"'QEMU emulator version 7.1.0', now {version!r}")
    assert _header(copy)["key"]["qemu_system"]["version"] == version   # replaced


def _guest(command: list[str]) -> guest_state.Guest:
    guest = guest_state.Guest(command)
    guest.close()
    return guest


def test_another_kernel_command_line_or_kernel_image_is_another_key(copy, tmp_path):
    _, command = _helpers(SYSTEM)
    assert _guest(command).saved is not None
    # Another kernel command line is another command: a key of its own, with no state yet.
    other_line = [*command[:-1], command[-1] + " MMAP2_OTHER=1"]
    assert guest_state.key_of(other_line) != guest_state.key_of(command)
    assert _guest(other_line).fallback == "no saved state"
    # The same kernel path with other content: the state saved for a copy of the image, and
    # the copy then one byte longer.
    kernel = command[command.index("-kernel") + 1]
    changed = tmp_path / "linux"
    changed.write_bytes(Path(kernel).read_bytes() + b"\0")

    def renamed(header):
        arguments = header["key"]["arguments"]
        arguments[arguments.index(kernel)] = str(changed)
        header["key"]["files"][str(changed)] = header["key"]["files"].pop(kernel)
    _rewrite(copy, edit_header=renamed)
    other_image = [str(changed) if arg == kernel else arg for arg in command]
    state = copy.rename(tmp_path / f"{guest_state.slot_name(other_image)}.state")   # saved with the copy
    assert _guest(other_image).fallback == f"the saved state {state} is stale: the file {changed} changed"
    # Another cached kernel is another command, with no state yet.
    assert _guest(_helpers("linux-6.12.117+deb13-amd64")[1]).fallback == "no saved state"


def test_a_guest_silent_after_its_restore_is_booted_and_not_saved_until_its_machine_changes(copy):
    # QEMU 7.2's loongson3-virt guests load their state whole and never answer (measured):
    # each restore would cost the exchange timeout and then a boot anyway.
    _, command = _helpers(SYSTEM)
    guest = guest_state.Guest(command)
    assert guest.saved is not None
    data = copy.read_bytes()
    guest.silent("no answer within 10 s; helper killed")
    assert guest.boot_command() == command   # the boot that follows saves nothing
    guest.close()
    assert not copy.exists()
    copy.write_bytes(data)                   # as another run's save before the mark would
    again = _guest(command)
    assert not copy.exists()
    assert again.fallback == ("a restored state of this guest did not answer (no answer within 10 s; helper "
                              "killed): booted, not saved")
    assert again.boot_command() == command   # no monitor: nothing to save
    other_line = list(command)
    other_line[command.index("-append") + 1] += " nokaslr"
    assert _guest(other_line).fallback == again.fallback   # the machine's mark: another command line too
    [marker] = copy.parent.glob("*" + guest_state.SILENT)
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "machine": {"another": "machine"}}))
    assert _guest(command).fallback == "no saved state"   # a new qemu-system or machine tries again


def test_states_off_boot_without_a_monitor_and_a_relative_directory_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv(guest_state.ENV_STATES, "off")
    guest = _guest(["/bin/true", "-m", "1"])
    assert guest.fallback == "saved guest states are off (MMAP2CONF_GUEST_STATES=off)"
    assert guest.boot_command() == ["/bin/true", "-m", "1"]
    monkeypatch.setenv(guest_state.ENV_STATES, "states")
    with pytest.raises(SettingError, match="must be \"off\" or an absolute directory"):
        check_settings()


@pytest.mark.parametrize("body", [b"", b"garbage", b"[1, 2]".ljust(guest_state.HEADER_SIZE) + b"stream",
                                  b'{"stream": {"size": 6}, "key": [1], "learned": {}}'.ljust(guest_state.HEADER_SIZE)
                                  + b"stream"])
def test_a_state_file_whose_header_is_not_one_is_corrupt(monkeypatch, tmp_path, body):
    if shutil.which("qemu-system-i386") is None:
        pytest.skip("qemu-system-i386 is not installed (make bootstrap)")
    monkeypatch.setenv(guest_state.ENV_STATES, str(tmp_path))
    command = [shutil.which("qemu-system-i386"), "-m", "64"]
    (tmp_path / f"{guest_state.slot_name(command)}.state").write_bytes(body)
    guest = _guest(command)
    assert guest.saved is None and " is corrupt: its header is not one this suite writes" in guest.fallback


def test_a_save_removes_states_whose_files_are_gone_then_the_least_recently_used(monkeypatch, tmp_path):
    monkeypatch.setenv(guest_state.ENV_STATES, str(tmp_path))
    one = guest_state.HEADER_SIZE + 1000
    monkeypatch.setattr(guest_state, "BUDGET", 2 * one + one // 2)   # the new state and one more
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k")
    command = ["/usr/bin/qemu-system-i386", "-kernel", str(kernel)]
    guest = _guest(command)

    def state(path: Path, files, age: float, body: bytes | None = None) -> Path:
        header = json.dumps({"key": {"files": {str(f): "0" * 64 for f in files}}}).encode()
        path.write_bytes(body if body is not None else header.ljust(guest_state.HEADER_SIZE) + b"s" * 1000)
        os.utime(path, (1e9 - age, 1e9 - age))
        return path
    new = state(guest.path, [kernel], 0)
    recent = state(tmp_path / "recent.state", [kernel], 10)
    older = state(tmp_path / "older.state", [kernel], 20)
    gone = state(tmp_path / "gone.state", [tmp_path / "no-such-initramfs"], 5)
    garbage = state(tmp_path / "garbage.state", [], 1, body=b"not a state")
    guest._trim()
    assert {p.name for p in tmp_path.glob("*.state")} == {new.name, recent.name}
    assert not any(p.exists() for p in (older, gone, garbage))
    assert recent.stat().st_atime == 1e9 - 10   # its header read is no use (a day old: relatime would set it)
