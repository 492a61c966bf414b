"""The pytest plugin: options, case generation, helper sessions, records and the matrix.

Flow: arches/ (model) x tests/cases/ (rows) -> one test item per configuration,
flavour, runner and row -> the item sends its request to a helper process kept
while its configuration, flavour and runner's cases run -> oracle -> a verdict
record attached to the report ->
the controller (also under xdist) collects records, prints the matrix and
writes the JSON.
"""
from __future__ import annotations

import json
import platform
import signal
import subprocess
import time
from pathlib import Path

import pytest

from . import cases, kernels, knownissues, libcs, machines, model, report, scratch
from .engine import Engine, Instance, Outcome, Suite
from .runners import KINDS, Options
from .runners import ssh

FLAVOURS = model.FLAVOURS
RECORD = "conformance"
VERDICT = "conformance-verdict"   # on a case's call report: its record follows on the teardown one


def pytest_addoption(parser):
    group = parser.getgroup("mmap2-conformance", "mmap2(2) conformance")
    group.addoption("--arch", dest="m2_arch", metavar="NAME[,NAME]",
                    help="configurations from arches/, or tags such as ia64-like, to run (default: all)")
    group.addoption("--libc", dest="m2_libc", metavar="FLAVOUR[,FLAVOUR]",
                    help=f"helper flavours: {', '.join(FLAVOURS)}, those of libcs/ (glibc-2.41, musl-1.2.3, ...) "
                         "and of --libc-prefix (default: every one a configuration has)")
    group.addoption("--libc-prefix", dest="m2_libc_prefix", metavar="NAME=CONFIG:DIR", action="append",
                    default=[], help="add flavour NAME to configuration CONFIG: the helper compiled and linked "
                                     "statically against the glibc or musl build in DIR (README: the layouts "
                                     "accepted); repeatable")
    group.addoption("--runner", dest="m2_runner", metavar="KIND[,KIND]",
                    help=f"runner kinds: {', '.join(KINDS)} (default: every kind but docker and ssh)")
    group.addoption("--qemu-dir", dest="m2_qemu_dir", metavar="DIR", type=Path, action="append", default=[],
                    help="judge the qemu build in DIR (qemu-<arch> or qemu-<arch>-static; also qemu-system-*) "
                         "instead of the default releases; repeatable")
    group.addoption("--kernel", dest="m2_kernel", metavar="IMAGE", type=Path, action="append", default=[],
                    help="boot this kernel image under qemu-system instead of the default kernels; repeatable")
    group.addoption("--machine", dest="m2_machine", metavar="NAME",
                    help="the machine (machines/NAME.toml) --kernel images boot on, where the image does not say")
    group.addoption("--image", dest="m2_image", metavar="IMAGE",
                    help="the suite's container image for --runner docker (docker/Dockerfile)")
    group.addoption("--target", dest="m2_target", metavar="[USER@]HOST[:PORT]", action="append", default=[],
                    help="a board for --runner ssh: every configuration whose helper runs there is judged "
                         "there; repeatable")
    group.addoption("--ssh-option", dest="m2_ssh_option", metavar="KEY=VALUE", action="append", default=[],
                    help="an ssh_config(5) option for --runner ssh (ssh -o KEY=VALUE); repeatable")
    group.addoption("--ssh-identity", dest="m2_ssh_identity", metavar="PATH", type=Path,
                    help="the private key --runner ssh logs in with (ssh -i PATH, IdentitiesOnly=yes)")
    group.addoption("--ssh-known-hosts", dest="m2_ssh_known_hosts", metavar="PATH", type=Path,
                    help="the known_hosts file with the boards' host keys (UserKnownHostsFile=PATH)")
    group.addoption("--require-all", dest="m2_require_all", action="store_true",
                    help="a system that cannot run here fails instead of being skipped")
    group.addoption("--conformance-json", dest="m2_json", metavar="PATH", type=Path,
                    help="write one verdict record per case to PATH")


def _selection(config, option: str, valid, what: str) -> set[str] | None:
    value = config.getoption(option)
    if not value:
        return None
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    unknown = chosen - set(valid)
    if unknown:
        raise pytest.UsageError(f"unknown {what} {', '.join(sorted(unknown))}; "
                                f"valid: {', '.join(sorted(valid))}")
    return chosen


def _options(config) -> Options:
    kinds = _selection(config, "m2_runner", KINDS, "runner")
    qemu_dirs = tuple(config.getoption("m2_qemu_dir"))
    for directory in qemu_dirs:
        if not directory.is_dir():
            raise pytest.UsageError(f"--qemu-dir {directory} is not a directory")
    kernel_images = tuple(config.getoption("m2_kernel"))
    for image in kernel_images:
        if not image.is_file():
            raise pytest.UsageError(f"--kernel {image} is not a file")
        try:
            kernels.image_kind(image.read_bytes())
        except kernels.KernelError as exc:
            raise pytest.UsageError(f"--kernel {image}: {exc}") from None
    image = config.getoption("m2_image")
    if kinds and "docker" in kinds and not image:
        raise pytest.UsageError("--runner docker needs --image IMAGE (built from docker/Dockerfile)")
    targets, ssh_args = _ssh_options(config, kinds)
    return Options(kinds=kinds, qemu_dirs=qemu_dirs, kernels=kernel_images,
                   machine=config.getoption("m2_machine"), image=image, targets=targets, ssh_args=ssh_args)


def _ssh_options(config, kinds: set[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """--target and the --ssh-* options: only with --runner ssh, which needs a target."""
    targets = tuple(config.getoption("m2_target"))
    identity, known_hosts = config.getoption("m2_ssh_identity"), config.getoption("m2_ssh_known_hosts")
    given = [name for name, value in (("--target", targets), ("--ssh-option", config.getoption("m2_ssh_option")),
                                      ("--ssh-identity", identity), ("--ssh-known-hosts", known_hosts)) if value]
    if not (kinds and "ssh" in kinds):
        if given:
            raise pytest.UsageError(f"{', '.join(given)} need --runner ssh")
        return (), ()
    if not targets:
        raise pytest.UsageError("--runner ssh needs --target [USER@]HOST[:PORT] (repeatable)")
    for path, option in ((identity, "--ssh-identity"), (known_hosts, "--ssh-known-hosts")):
        if path is not None and not path.is_file():
            raise pytest.UsageError(f"{option} {path} is not a file")
    try:
        names = [ssh.parse_target(target).name for target in targets]
        args = ssh.client_args(config.getoption("m2_ssh_option"), identity, known_hosts)
    except ssh.TargetError as exc:
        raise pytest.UsageError(str(exc)) from None
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise pytest.UsageError(f"--target: two targets name the same system {', '.join(repeated)}")
    return targets, args


def _suite(config) -> Suite:
    options = _options(config)
    try:
        suite = Suite(options, require_all=config.getoption("m2_require_all"),
                      libc_prefixes=tuple(config.getoption("m2_libc_prefix")))
    except (model.ModelError, cases.CaseError, knownissues.KnownIssueError, libcs.LibcUsageError) as exc:
        raise pytest.UsageError(str(exc)) from None
    machine = options.machine
    if machine is not None and machine not in options.machines:
        raise pytest.UsageError(f"unknown machine {machine}; valid: {', '.join(sorted(options.machines))}")
    for image in options.kernels:
        if machine is None:
            try:
                machines.machine_for_image(options.machines, kernels.image_kind(image.read_bytes()))
            except model.ModelError as exc:
                raise pytest.UsageError(f"--kernel {image}: {exc}") from None
    by_name = {name: {name} for name in suite.configs}
    by_tag = {tag: {c.name for c in suite.configs.values() if tag in c.tags}
              for c in suite.configs.values() for tag in c.tags}
    chosen = _selection(config, "m2_arch", {**by_tag, **by_name}, "configuration or tag")
    suite.arches = None if chosen is None else set().union(*({**by_tag, **by_name}[n] for n in chosen))
    suite.flavours = _selection(config, "m2_libc", suite.flavour_names, "flavour")
    for build in suite.prefixes:   # named by the user: --libc cannot leave them out, --arch must keep them
        if suite.arches is not None and build.config not in suite.arches:
            raise pytest.UsageError(f"{build.origin}: --arch leaves out {build.config}")
        if suite.flavours is not None:
            suite.flavours.add(build.name)
    path = config.getoption("m2_json")
    if path is not None:   # found now, not after the whole run
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a"):
                pass
        except OSError as exc:
            raise pytest.UsageError(f"--conformance-json {path}: {exc.strerror}") from None
    return suite


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name}")


def pytest_configure(config):
    config.addinivalue_line("markers", "clause(id): the manual page clause a conformance case checks")
    config.stash[SUITE] = _suite(config)
    # SIGTERM and SIGHUP (a CI job cancelled, a closed terminal) end the run as Ctrl-C does:
    # sessions closed, the JSON written with status "interrupted", exit status 2. One the
    # run started with ignored (nohup) stays ignored.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _interrupt)


def pytest_unconfigure(config):
    if SUITE in config.stash:
        config.stash[SUITE].close()   # stops a container engine the run started


SUITE = pytest.StashKey[Suite]()


def pytest_generate_tests(metafunc):
    if "instance" not in metafunc.fixturenames:
        return
    suite = metafunc.config.stash[SUITE]
    params = [pytest.param(instance, id=instance.id, marks=[pytest.mark.clause(instance.case.clause)])
              for instance in suite.instances()]
    if not params:
        raise pytest.UsageError("the selection runs no case")
    metafunc.parametrize("instance", params)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist, send all cases of one helper (configuration/flavour, on every
    system that runs it) to one worker, so each helper process starts once per run, and
    the helper's build is looked up once per run (30 to 140 ms: the libc build checked,
    the compiler asked), not once per worker; and all cases of a system that takes them
    on one worker (a board, a guest kernel that serves every helper of the run) to one
    worker."""
    from xdist.scheduler import LoadScopeScheduling
    whole = config.stash[SUITE].one_worker_systems()

    class ByHelper(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, whole)

    return ByHelper(config, log)


def scope_of(nodeid: str, whole: set[str]) -> str:
    """The xdist scope of a case: configuration/flavour, or the system where all its
    cases go to one worker."""
    prefix = "test_conformance.py::test_case["
    if prefix not in nodeid:
        return nodeid
    config, flavour, system = nodeid.split(prefix, 1)[1].split("/", 3)[:3]
    return system if system in whole else f"{config}/{flavour}"


@pytest.fixture(scope="session")
def conformance_engine(request):
    running = Engine(request.config.stash[SUITE])
    yield running
    running.close()


def run_instance(instance: Instance, running: Engine, node) -> None:
    """Run one case through the engine; its record rides on the test report."""
    started = time.perf_counter_ns()
    record = running.run(instance, node.nodeid)
    stash = node.config.stash
    if PREVIOUS_END in stash:   # pytest's hooks for one item in this process, the record's JSON
        record.phases_ms["between"] = round((started - stash[PREVIOUS_END]) / 1e6, 3)
    stash[PREVIOUS_END] = time.perf_counter_ns()
    node.user_properties.append((RECORD, record.to_json()))
    outcome = record.outcome
    if outcome is Outcome.PASSED:
        return
    if outcome in (Outcome.NA, Outcome.SKIPPED):
        pytest.skip(record.reason)
    if outcome is Outcome.XFAILED:
        # pytest.xfail() as it raises it, but without a traceback, as pytest.fail(pytrace=False):
        # the record says why, and a traceback costs pytest about 10 ms (it parses each frame's file).
        raise pytest.xfail.Exception(record.reason, pytrace=False)
    pytest.fail(f"{outcome.value}: {record.reason}", pytrace=False)


PREVIOUS_END = pytest.StashKey[int]()   # perf_counter_ns when the latest case's Engine.run returned


JUNIT_PROPERTIES = ("config", "flavour", "runner", "runner_version", "case", "clause", "known_issue",
                    "known_issue_kind", "deviation", "expected", "observed", "reproducer")


@pytest.hookimpl(hookwrapper=True)   # old-style: Debian's pluggy 1.0 in the container image
def pytest_runtest_makereport(item, call):
    """The record rides on the teardown report alone, the one JUnit XML takes its properties
    from (a report's user_properties cross from an xdist worker with it: one copy, not one
    per phase); with --junitxml, one property per field of the record beside it."""
    report = (yield).get_result()
    record = next((value for name, value in report.user_properties if name == RECORD), None)
    if record is None:
        return
    if call.when != "teardown":
        report.user_properties = [(VERDICT, record["outcome"])]   # a failure here is a verdict
        return
    # As JSON text: xdist's channel (execnet) serializes a nested dict item by item in
    # Python, 20 times the cost of json's C encoder; JUnit XML shows it as JSON, too.
    text = json.dumps(record)
    if item.config.option.xmlpath:
        report.user_properties = [(RECORD, text)] + [
            (key, json.dumps(record[key]) if isinstance(record[key], (dict, list)) else record[key])
            for key in JUNIT_PROPERTIES if record.get(key) is not None]
    else:
        report.user_properties = [(RECORD, text)]


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    for name, value in report.user_properties:
        if name == RECORD:
            _collected.append(json.loads(value))
        if name in (RECORD, VERDICT):
            return
    if report.failed:   # a failure with no verdict record: the harness itself broke
        _broken.append(f"{report.nodeid} ({report.when}): {report.longrepr}")


_collected: list[dict] = []
_broken: list[str] = []


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _suite_commit() -> dict:
    """The suite's own commit (the KCIDB checkout), and whether the tree differs from it."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=model.REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def environment() -> dict:
    root, fs, why_not = scratch.scratch_root()
    return {"host": f"{platform.system()} {platform.release()} {platform.machine()}", "suite": _suite_commit(),
            "python": platform.python_version(), "scratch": {"directory": root, "filesystem": fs,
                                                              "large_files": why_not or "yes"}}


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if _is_worker(config):
        return
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    if exitstatus in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR) or not _collected:
        return
    session.exitstatus = report.exit_status(_collected, interrupted, broken=bool(_broken))
    path = config.getoption("m2_json")
    if path:
        report.write_json(_collected, path, environment(),
                          "interrupted" if interrupted else report.STATUS_NAMES[session.exitstatus], _broken)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _is_worker(config) or not _collected:
        return
    suite = config.stash[SUITE]
    writer = terminalreporter
    colours = report.COLOURS

    def markup(text, outcome):
        return writer._tw.markup(text, **{colours[outcome]: True}) if writer.hasmarkup else text

    writer.write_sep("=", "mmap2 conformance matrix")
    width = writer._tw.fullwidth
    for line in report.matrix_lines(_collected, suite.clauses, markup, width=width):
        writer.write_line(line)
    issues = report.known_issue_lines(_collected, {i.id: i for i in suite.known_issues}, width=width)
    if issues:
        writer.write_sep("-", "known issues (known-issues.toml)")
        for line in issues:
            writer.write_line(line)
    differences = report.differential_lines(_collected, width=width)
    if differences:
        writer.write_sep("-", "answers that differ between systems (why: known issue, or expected there)")
        for line in differences:
            writer.write_line(line)
    releases = report.release_lines(_collected)
    if releases:
        writer.write_sep("-", "answers that differ between releases of one libc (why: known issue, or expected)")
        for line in releases:
            writer.write_line(line)
    problems = report.problems_lines(_collected)
    if problems:
        writer.write_sep("-", "unexpected results")
        for line in problems:
            writer.write_line(line)
    if _broken:
        writer.write_sep("-", "harness errors (tests that failed without a verdict)")
        for line in _broken:
            writer.write_line(line)


def pytest_report_header(config):
    suite = config.stash[SUITE]
    names = sorted(suite.arches or suite.configs)
    root, fs, why_not = scratch.scratch_root()
    return [f"mmap2 conformance: configurations {', '.join(names)}",
            f"  scratch files in {root} ({fs}); sparse files up to 2^45 bytes: {why_not or 'yes'}",
            f"  flavours {', '.join(sorted(suite.flavours or suite.flavour_names))}; runner kinds "
            f"{', '.join(sorted(suite.options.kinds or KINDS))}"
            + "".join(f"; qemu from {d}" for d in suite.options.qemu_dirs)
            + "".join(f"; kernel {k}" for k in suite.options.kernels)
            + "".join(f"; board {t}" for t in suite.options.targets)]
