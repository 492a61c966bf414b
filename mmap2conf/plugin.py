"""The pytest plugin: options, case generation, helper sessions, records and the matrix.

Flow: arches/ (model) x tests/cases/ (rows) -> one test item per configuration,
flavour, runner and row -> the item sends its request to a helper process kept
for the whole session -> oracle -> a verdict record attached to the report ->
the controller (also under xdist) collects records, prints the matrix and
writes the JSON.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import build, cases, knownissues, model, oracle, report, scratch
from .protocol import HelperSession, ProtocolError
from .runners import RUNNER_CLASSES, RunnerUnavailable, helper_for, make_runner, semantics

FLAVOURS = model.FLAVOURS
RUNNERS = (*model.RUNNER_KINDS, "docker")
RECORD = "conformance"


@dataclass(frozen=True)
class Instance:
    """One row run on one configuration, through one flavour, by one runner."""

    config: model.Config
    flavour: str
    runner_kind: str
    case: cases.Case
    not_applicable: str | None = None

    @property
    def group(self) -> str:
        return f"{self.config.name}/{self.flavour}/{self.runner_kind}"

    @property
    def semantics(self) -> str:
        """The runner kind whose expectations, known issues and page facts apply."""
        return semantics(self.runner_kind)

    @property
    def id(self) -> str:
        return f"{self.group}/{self.case.key}"


def pytest_addoption(parser):
    group = parser.getgroup("mmap2-conformance", "mmap2(2) conformance")
    group.addoption("--arch", dest="m2_arch", metavar="NAME[,NAME]",
                    help="configurations from arches/, or tags such as ia64-like, to run (default: all)")
    group.addoption("--libc", dest="m2_libc", metavar="FLAVOUR[,FLAVOUR]",
                    help=f"helper flavours: {', '.join(FLAVOURS)} (default: every one a configuration has)")
    group.addoption("--runner", dest="m2_runner", metavar="KIND[,KIND]",
                    help=f"runner kinds: {', '.join(RUNNERS)} (default: every one a configuration declares)")
    group.addoption("--qemu-dir", dest="m2_qemu_dir", metavar="DIR", type=Path,
                    help="take the qemu-<arch>-static binaries from DIR instead of PATH")
    group.addoption("--image", dest="m2_image", metavar="IMAGE",
                    help="the suite's container image for --runner docker (docker/Dockerfile)")
    group.addoption("--require-all", dest="m2_require_all", action="store_true",
                    help="a configuration that cannot run here fails instead of being skipped")
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


class Suite:
    """Everything loaded once per pytest process."""

    def __init__(self, pytest_config):
        try:
            self.configs = model.load_all()
            self.clauses = cases.load_clauses()
            self.cases = cases.load_cases(clauses=self.clauses)
            self.known_issues = knownissues.load_known_issues()
            knownissues.check_references(self.known_issues, self.configs, [c.key for c in self.cases],
                                         FLAVOURS, model.RUNNER_KINDS)
        except (model.ModelError, cases.CaseError, knownissues.KnownIssueError) as exc:
            raise pytest.UsageError(str(exc)) from None
        by_name = {name: {name} for name in self.configs}
        by_tag = {tag: {c.name for c in self.configs.values() if tag in c.tags}
                  for config in self.configs.values() for tag in config.tags}
        chosen = _selection(pytest_config, "m2_arch", {**by_tag, **by_name}, "configuration or tag")
        self.arches = None if chosen is None else set().union(*({**by_tag, **by_name}[n] for n in chosen))
        self.flavours = _selection(pytest_config, "m2_libc", FLAVOURS, "flavour")
        self.runner_kinds = _selection(pytest_config, "m2_runner", RUNNERS, "runner")
        self.qemu_dir = pytest_config.getoption("m2_qemu_dir")
        if self.qemu_dir is not None and not self.qemu_dir.is_dir():
            raise pytest.UsageError(f"--qemu-dir {self.qemu_dir} is not a directory")
        self.require_all = pytest_config.getoption("m2_require_all")
        self.image = pytest_config.getoption("m2_image")
        if self.runner_kinds and "docker" in self.runner_kinds and not self.image:
            raise pytest.UsageError("--runner docker needs --image IMAGE (built from docker/Dockerfile)")
        self._engine = None
        self.versions: dict[tuple[str, str], str | None] = {}
        self.records: list[dict] = []

    def runner(self, config: model.Config, kind: str):
        return make_runner(kind, config, self.qemu_dir, self._docker() if kind == "docker" else None)

    def _docker(self):
        """(engine, image) for the docker runner; the engine is found or started once."""
        from . import containers
        if self._engine is None:
            try:
                self._engine = containers.find_engine()
            except containers.EngineUnavailable as exc:
                raise RunnerUnavailable(str(exc)) from None
            if not self._engine.has_image(self.image):
                raise RunnerUnavailable(f"no image {self.image} (build docker/Dockerfile)")
        return self._engine, self.image

    def close(self) -> None:
        if self._engine is not None:
            from . import containers
            containers.stop(self._engine)

    def version(self, config: model.Config, kind: str) -> str | None:
        key = (config.name, kind)
        if key not in self.versions:
            try:
                self.versions[key] = self.runner(config, kind).version()
            except RunnerUnavailable:
                self.versions[key] = None
        return self.versions[key]

    def instances(self):
        for config in self.configs.values():
            if self.arches is not None and config.name not in self.arches:
                continue
            for flavour in config.flavours:
                if self.flavours is not None and flavour not in self.flavours:
                    continue
                # The docker runner runs any qemu-user configuration, when asked for by name.
                wants_docker = self.runner_kinds and "docker" in self.runner_kinds and "qemu-user" in config.runners
                for kind in [*config.runners, *(["docker"] if wants_docker else [])]:
                    if self.runner_kinds is not None and kind not in self.runner_kinds:
                        continue
                    for case in self.cases:
                        yield from _instances_for(config, flavour, kind, case)


def _instances_for(config, flavour, kind, case):
    if case.op == "probe":
        yield Instance(config, flavour, kind, case)
        return
    wants_raw = case.call in cases.RAW_CALLS
    if wants_raw != (flavour == "raw"):
        return  # the raw flavour makes the system call, libc flavours call libc
    reason = None
    if case.call == "mmap2" and not config.has_mmap2:  # only mmap2 rows need it; extend, open: every ABI
        reason = f"n.a.: {config.name} has no mmap2 ({config.mmap2_nr.source})"
    elif case.not_for_flavour(flavour):
        reason = case.not_for_flavour(flavour)
    elif case.trace and RUNNER_CLASSES[kind].trace_shows is None:
        reason = f"n.a.: the {kind} runner has no system call tracer (the row checks libc's system call)"
    elif case.requires:
        name, _, value = case.requires.partition("=")
        fact = config.requirement(name)
        if fact is None:
            reason = f"n.a.: {config.name} states no {name}; the case needs {name} = {value}"
        elif str(fact.value).lower() != value.lower():
            reason = f"n.a.: {config.name} has {name} = {fact.value} ({fact.source}); the case needs {value}"
    yield Instance(config, flavour, kind, case, reason)


def pytest_unconfigure(config):
    if SUITE in config.stash:
        config.stash[SUITE].close()   # stops a container engine the run started


def pytest_configure(config):
    config.addinivalue_line("markers", "clause(id): the manual page clause a conformance case checks")
    config.addinivalue_line("markers", "known_issue(id): the known-issues.toml record a case is xfailed by")
    config.stash[SUITE] = Suite(config)


SUITE = pytest.StashKey[Suite]()


def pytest_generate_tests(metafunc):
    if "instance" not in metafunc.fixturenames:
        return
    suite = metafunc.config.stash[SUITE]
    params = []
    for instance in suite.instances():
        marks = [pytest.mark.clause(instance.case.clause)]
        if instance.not_applicable:
            marks.append(pytest.mark.skip(reason=instance.not_applicable))
        else:
            version = suite.version(instance.config, instance.runner_kind)
            issue = version and knownissues.find_issue(
                suite.known_issues, instance.case.key, instance.config.name, instance.flavour,
                instance.semantics, version)
            if issue:
                marks.append(pytest.mark.xfail(strict=True, reason=issue.reason()))
                marks.append(pytest.mark.known_issue(issue.id))
        params.append(pytest.param(instance, id=instance.id, marks=marks))
    if not params:
        raise pytest.UsageError("the selection runs no case")
    metafunc.parametrize("instance", params)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist, send all cases of one helper (configuration/flavour/runner) to
    one worker, so each helper process starts once per run, not once per worker."""
    from xdist.scheduler import LoadScopeScheduling

    class ByHelper(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            prefix = "test_conformance.py::test_case["
            if prefix not in nodeid:
                return nodeid
            return "/".join(nodeid.split(prefix, 1)[1].split("/", 3)[:3])

    return ByHelper(config, log)


def pytest_collection_modifyitems(session, config, items):
    suite = config.stash[SUITE]
    for item in items:
        instance = getattr(item, "callspec", None) and item.callspec.params.get("instance")
        if not isinstance(instance, Instance):
            continue
        issue = item.get_closest_marker("known_issue")
        case = instance.case
        item.user_properties.append((RECORD, {
            "nodeid": item.nodeid, "config": instance.config.name, "flavour": instance.flavour,
            "runner": instance.runner_kind,
            "runner_version": suite.version(instance.config, instance.runner_kind),
            "column": f"{instance.config.name}@{instance.runner_kind}",
            "case": case.key, "table": case.table, "case_file": case.where, "clause": case.clause,
            "section": suite.clauses[case.clause].section, "call": case.call,
            "known_issue": issue.args[0] if issue else None,
            "request": None, "expected": None, "observed": None, "sources": [case.source],
            "outcome": None, "reason": instance.not_applicable, "reproducer": None,
        }))


class Sessions:
    """Helper processes kept for the whole pytest session, one per configuration, flavour, runner."""

    def __init__(self, suite: Suite):
        self.suite, self.open, self.helpers, self.unavailable = suite, {}, {}, {}

    def get(self, instance: Instance):
        """The helper session for this instance, or a string saying why there is none."""
        trace, scratch_kind = bool(instance.case.trace), instance.case.scratch
        if scratch_kind == "large":
            # Every session's directory is in the scratch root, which was chosen for large files.
            _, _, why_not = scratch.scratch_root()
            if why_not:
                return f"unavailable: {why_not}"
            scratch_kind = None
        key = instance.group + ("/trace" if trace else "") + (f"/{scratch_kind}" if scratch_kind else "")
        if key in self.unavailable:
            return self.unavailable[key]
        if key not in self.open:
            self._close_other_guests(instance.group)
            try:
                runner = self.suite.runner(instance.config, instance.runner_kind)
                helper = helper_for(runner, instance.config, instance.flavour)
                runner.command(helper, Path("/"), trace)  # raises RunnerUnavailable early
            except (RunnerUnavailable, build.BuildError) as exc:
                self.unavailable[key] = f"unavailable: {exc}"
                return self.unavailable[key]
            self.helpers[instance.group] = (runner, helper)
            try:
                session = HelperSession(lambda workdir: runner.command(helper, workdir, trace),
                                        scratch_kind=scratch_kind, console=runner.console)
            except scratch.ScratchUnavailable as exc:
                self.unavailable[key] = f"unavailable: {exc}"
                return self.unavailable[key]
            session.label = key
            # Detect support by running it (e.g. IA32 emulation may be off): never assume it.
            try:
                session.request({"op": "probe", "id": "startup"})
            except ProtocolError as exc:
                session.close()
                self.unavailable[key] = f"unavailable: the helper does not run here: {exc}"
                return self.unavailable[key]
            self.open[key] = session
        return self.open[key]

    def _close_other_guests(self, group: str) -> None:
        """An idle guest kernel still takes host CPU (the loongson-3 one spins a whole core),
        so the guests of other groups are powered off when a group opens a session. Cases
        come ordered by group (and by group to xdist workers): none needs them again, and
        if one did, its guest would boot again."""
        for key in [k for k, s in self.open.items() if s.console is not None
                    and k != group and not k.startswith(group + "/")]:
            self.open.pop(key).close()

    def reproducer(self, instance: Instance, request: dict) -> str:
        runner, helper = self.helpers[instance.group]
        line = json.dumps(request, separators=(",", ":"))
        if hasattr(runner, "reproducer"):  # a guest's console, or a container
            return runner.reproducer(helper, line, instance.case.scratch)
        command = runner.command(helper, Path("DIR"), bool(instance.case.trace))[:-1]
        return f"echo {shlex.quote(line)} | {shlex.join(command)} \"$(mktemp -d)\""

    def close(self):
        for session in self.open.values():
            session.close()


@pytest.fixture(scope="session")
def helper_sessions(request):
    sessions = Sessions(request.config.stash[SUITE])
    yield sessions
    sessions.close()


def run_instance(instance: Instance, sessions: Sessions, record: dict) -> None:
    """Run one case and fill its record; fail the test on any problem."""
    session = sessions.get(instance)
    suite = sessions.suite
    if isinstance(session, str):
        if suite.require_all:
            pytest.fail(f"{session} (--require-all)")
        pytest.skip(session)
    config, case = instance.config, instance.case
    page = config.runners[instance.semantics].page_size
    unit = config.unit_bytes(page.value) if config.has_mmap2 else 4096
    request = case.concrete_inputs(page.value, unit)
    record["request"] = request
    record["reproducer"] = sessions.reproducer(instance, request)
    mark = session.stderr_size()
    started = time.perf_counter()
    try:
        answer = session.request(request)
    except ProtocolError as exc:
        pytest.fail(f"protocol: {exc}")
    record["exchange_ms"] = round((time.perf_counter() - started) * 1000, 3)
    # Which process answered: the benchmark counts distinct values to count process starts.
    record["helper_process"] = f"{os.getpid()}:{session.label}:{session.starts}"
    if case.op == "probe":
        clause, expected, observed, sources, problems = oracle.judge_probe(config, page, case, answer)
    else:
        expectation = oracle.expect_call(config, page.value, page.source, case,
                                         instance.semantics, request)
        clause, expected, sources = expectation.clause, expectation.describe(), expectation.sources
        observed, problems = oracle.judge_call(config, page.value, case, request, answer, expectation)
    if case.trace:
        runner = sessions.helpers[instance.group][0]
        # Waiting for a line that must not come would only cost time: wait for none then.
        until = oracle.traced_maps if case.trace is True else (lambda text: True)
        trace = session.stderr_since(mark, until=until)
        traced_expected, traced, trace_problems = oracle.judge_trace(
            config, page.value, request, trace, runner.trace_shows, case.trace)
        if case.trace is True:   # the row checks which system call the wrapper made
            clause, sources = "mmap2.VERSIONS.glibc-wrapper", [oracle.MAN_GLIBC_WRAPPER, *sources]
        expected, observed = {**expected, **traced_expected}, {**observed, **traced}
        problems += trace_problems
    record.update(clause=clause, section=suite.clauses[clause].section, expected=expected,
                  observed=observed, sources=sources)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def record(request):
    return next(value for name, value in request.node.user_properties if name == RECORD)


def _outcome(report) -> str | None:
    if report.when == "call":
        if report.passed:
            return "passed"
        if report.skipped:
            return "xfailed" if hasattr(report, "wasxfail") else "skipped"
        return "xpassed" if "XPASS(strict)" in str(report.longrepr) else "failed"
    if report.when == "setup" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "n.a." if reason.removeprefix("Skipped: ").startswith("n.a.") else "skipped"
    if report.failed:
        return "error"
    return None


def _reason(report) -> str | None:
    if report.passed:
        return None
    if isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    if hasattr(report, "wasxfail"):
        return report.wasxfail
    text = getattr(report.longrepr, "reprcrash", None)
    return text.message if text else str(report.longrepr).strip().splitlines()[-1]


JUNIT_PROPERTIES = ("config", "flavour", "runner", "runner_version", "case", "clause", "known_issue",
                    "expected", "observed", "reproducer")


@pytest.hookimpl(hookwrapper=True)   # old-style: Debian's pluggy 1.0 in the container image
def pytest_runtest_makereport(item, call):
    """Give JUnit XML (which writes user_properties) one property per field of the record."""
    report = (yield).get_result()
    for name, value in list(report.user_properties):
        if name == RECORD:
            report.user_properties = [(name, value)] + [
                (key, json.dumps(value[key]) if isinstance(value[key], (dict, list)) else value[key])
                for key in JUNIT_PROPERTIES if value.get(key) is not None]


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    outcome = _outcome(report)
    if outcome is None:
        return
    for name, value in report.user_properties:
        if name == RECORD:
            record = dict(value, outcome=outcome)
            record["reason"] = _reason(report) or record.get("reason")
            _collected.append(record)


_collected: list[dict] = []


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def environment() -> dict:
    root, fs, why_not = scratch.scratch_root()
    return {"host": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version(), "scratch": {"directory": root, "filesystem": fs,
                                                              "large_files": why_not or "yes"}}


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if _is_worker(config) or not _collected:
        return
    path = config.getoption("m2_json")
    if path:
        report.write_json(_collected, path, environment())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _is_worker(config) or not _collected:
        return
    suite = config.stash[SUITE]
    writer = terminalreporter
    colours = report.COLOURS

    def markup(text, outcome):
        return writer._tw.markup(text, **{colours[outcome]: True}) if writer.hasmarkup else text

    writer.write_sep("=", "mmap2 conformance matrix")
    for line in report.matrix_lines(_collected, suite.clauses, markup):
        writer.write_line(line)
    issues = report.known_issue_lines(_collected, {i.id: i for i in suite.known_issues})
    if issues:
        writer.write_sep("-", "known issues (known-issues.toml)")
        for line in issues:
            writer.write_line(line)
    differences = report.differential_lines(_collected)
    if differences:
        writer.write_sep("-", "answers that differ between runners (why: known issue, or expected of that runner)")
        for line in differences:
            writer.write_line(line)
    problems = report.problems_lines(_collected)
    if problems:
        writer.write_sep("-", "unexpected results")
        for line in problems:
            writer.write_line(line)


def pytest_report_header(config):
    suite = config.stash[SUITE]
    names = sorted(suite.arches or suite.configs)
    root, fs, why_not = scratch.scratch_root()
    return [f"mmap2 conformance: configurations {', '.join(names)}",
            f"  scratch files in {root} ({fs}); sparse files up to 2^45 bytes: {why_not or 'yes'}",
            f"  flavours {', '.join(sorted(suite.flavours or FLAVOURS))}; runners "
            f"{', '.join(sorted(suite.runner_kinds or RUNNERS))}"
            + (f"; qemu from {suite.qemu_dir}" if suite.qemu_dir else "")]
