"""The engine: runs one case on one system under test and returns a typed record.

No pytest here: the pytest plugin, the benchmark and the CLI all drive this.
arches/ (model) x tests/cases/ (rows) x the systems of each configuration
(runners) give the instances; an instance's request goes to a helper session
(one per configuration, flavour, system, and tracer or scratch kind), kept while
the cases of its scope run, which come one scope after another; the session's
probe measures the system (sut.measure); the
oracle states what the case must observe there; known-issues.toml may turn a
failure into a strict xfail, only for its recorded symptom.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from . import build, cases, knownissues, libcs, model, oracle, scratch
from .machines import load_machines
from .dispatch import Guest
from .protocol import HelperSession, ProtocolError
from .runners import Options, Runner, RunnerUnavailable, systems
from .sut import Properties, SystemUnderTestError, measure


class Outcome(str, Enum):
    PASSED = "passed"
    FAILED = "failed"        # the system does not answer as it should
    XFAILED = "xfailed"      # ... as a known issue records, with its symptom
    XPASSED = "xpassed"      # a known issue's case passed: the record is out of date
    NA = "n.a."              # the row does not apply here (the reason says why)
    SKIPPED = "skipped"      # could not run here, and was not asked for by name
    ERROR = "error"          # the harness could not run what was asked, or broke


@dataclass
class Record:
    """One verdict: the same record goes to the terminal matrix, JSON, JUnit and HTML."""

    nodeid: str
    config: str
    flavour: str
    runner: str                    # the runner kind
    system: str                    # the system under test, as named in columns
    column: str                    # configuration@system
    case: str
    table: str
    case_file: str
    clause: str
    section: str
    call: str | None
    outcome: Outcome | None = None
    reason: str | None = None
    runner_version: str | None = None
    identity: dict | None = None    # what the system is: binary, --version line, kernel image, sha256
    properties: dict | None = None  # what the probe measured (sut.Properties)
    request: dict | None = None
    expected: dict | None = None
    observed: dict | None = None
    sources: list = field(default_factory=list)
    known_issue: str | None = None
    known_issue_kind: str | None = None
    # violates-manual or differs-from-linux, for an answer that is not the expected one, where
    # the row states the answers the manual page allows (oracle.deviation)
    deviation: str | None = None
    reproducer: str | None = None
    helper_process: str | None = None
    exchange_ms: float | None = None
    guest_start: dict | None = None  # a guest's start: {"how": "booted"|"restored", "seconds", "fallback", ...}
    # Where the harness's time for this case went (the benchmark reads it): "session" opening
    # the helper session (start and probe; 0 but for a session's first case), "engine" the
    # rest of Engine.run (record, request, oracle, known issues), and, from the plugin,
    # "between" the time since the previous case's Engine.run ended (pytest's hooks for one
    # item, the record's JSON). The exchange itself is exchange_ms.
    phases_ms: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        # A shallow copy: the nested values are made for this record, or shared read-only
        # (a system's identity); asdict's deep copy cost 0.2 ms per case.
        data = dict(self.__dict__)
        data["outcome"] = self.outcome.value if self.outcome else None
        return data


@dataclass(frozen=True)
class Instance:
    """One row run on one configuration, through one flavour, on one system."""

    config: model.Config
    flavour: str
    runner: Runner
    case: cases.Case
    not_applicable: str | None = None

    @property
    def spec(self) -> model.Flavour:
        return self.config.flavours[self.flavour]

    @property
    def group(self) -> str:
        return f"{self.config.name}/{self.flavour}/{self.runner.name}"

    @property
    def id(self) -> str:
        return f"{self.group}/{self.case.key}"


class Suite:
    """The data of a run, loaded and checked once: configurations, machines, rows, records."""

    def __init__(self, options: Options, arches: set[str] | None = None, flavours: set[str] | None = None,
                 require_all: bool = False, libc_prefixes: tuple[str, ...] = ()):
        self.configs = model.load_all()
        # Other builds of glibc and musl: libcs/*.toml, then --libc-prefix (libcs.LibcUsageError if malformed).
        self.prefixes = [libcs.parse_prefix(text, self.configs) for text in libc_prefixes]
        libcs.attach(self.configs, [*libcs.load(self.configs), *self.prefixes])
        options.machines = load_machines(self.configs)
        self.clauses = cases.load_clauses()
        self.cases = cases.load_cases(clauses=self.clauses)
        self.known_issues = knownissues.load_known_issues()
        knownissues.check_references(self.known_issues, self.configs, [c.key for c in self.cases],
                                     model.FLAVOUR_KINDS, cases.ERRNO_NAMES)
        self.options, self.arches, self.flavours, self.require_all = options, arches, flavours, require_all
        self._systems: dict[str, list[Runner]] = {}

    @property
    def flavour_names(self) -> set[str]:
        """Every flavour of every configuration: arches/, libcs/ and --libc-prefix."""
        return {name for config in self.configs.values() for name in config.flavours}

    def systems(self, config: model.Config) -> list[Runner]:
        if config.name not in self._systems:
            self._systems[config.name] = systems(config, self.options)
        return self._systems[config.name]

    def selected(self):
        """The (configuration, flavour) pairs of the run."""
        for config in self.configs.values():
            if self.arches is not None and config.name not in self.arches:
                continue
            for flavour in config.flavours:
                if self.flavours is None or flavour in self.flavours:
                    yield config, flavour

    def instances(self) -> list[Instance]:
        """Every instance; those of one shared system (a guest that serves every helper of
        its kernel) follow each other, so its one process is not ended and started again.
        Those of the systems that take one worker come first: they are the longest xdist
        scopes, and xdist hands scopes out in this order, so the short ones fill the end."""
        found = [instance for config, flavour in self.selected() for runner in self.systems(config)
                 for case in self.cases for instance in instances_for(config, flavour, runner, case)]
        first: dict[str, int] = {}
        for index, instance in enumerate(found):
            first.setdefault(scope(instance.runner, instance.group), index)
        return sorted(found, key=lambda instance: (not instance.runner.one_worker,
                                                   first[scope(instance.runner, instance.group)]))

    def one_worker_systems(self) -> set[str]:
        """The systems whose cases all go to one pytest-xdist worker."""
        return {runner.name for config, _ in self.selected() for runner in self.systems(config)
                if runner.one_worker}

    def shared_helpers(self, runner: Runner) -> list[Path]:
        """Every helper of the run that the shared system of ``runner`` serves, in the order
        of runner.serves() (its init first); those that cannot be built are left out (their
        sessions say why)."""
        chosen = {(config.name, flavour) for config, flavour in self.selected()}
        helpers = []
        for name in runner.serves():
            for system in self.systems(self.configs[name]):
                if system.kind != runner.kind or system.name != runner.name:
                    continue
                for flavour in self.configs[name].flavours:
                    if (name, flavour) in chosen:
                        try:
                            helpers.append(system.helper(flavour))
                        except build.BuildError:
                            pass
        return list(dict.fromkeys(helpers))

    def close(self) -> None:
        for close in self.options.closers:
            close()


def scope(runner: Runner, group: str) -> str:
    """What one process serves: the whole system where it is shared, else the group."""
    return f"{runner.kind}:{runner.name}" if runner.shared else group


def instances_for(config: model.Config, flavour: str, runner: Runner, case: cases.Case):
    if case.op == "probe":
        yield Instance(config, flavour, runner, case)
        return
    spec = config.flavours[flavour]
    wants_raw = case.call in cases.RAW_CALLS
    if wants_raw != (spec.kind == "raw"):
        return  # the raw flavour makes the system call, libc flavours call libc
    if case.trace and runner.tracer is None:
        # Only the check of libc's system call needs a tracer: the row's own answer (the
        # errno, the data) is judged here too, under its own clause, and says what is not.
        case = replace(case, trace=False, source=f"{case.source} (no system call tracer runs on {runner.name}: "
                                                 f"libc's answer is checked here, not the system call it made)")
    reason = None
    if case.call == "mmap2" and not config.has_mmap2:  # only mmap2 rows need it; extend, open: every ABI
        reason = f"n.a.: {config.name} has no mmap2 ({config.mmap2_nr.source})"
    elif case.not_for_libc(spec.libc, flavour):
        reason = case.not_for_libc(spec.libc, flavour)
    elif case.requires:
        name, _, value = case.requires.partition("=")
        fact = config.requirement(name)
        if fact is None:
            reason = f"n.a.: {config.name} states no {name}; the case needs {name} = {value}"
        elif isinstance(fact.value, dict):
            pass   # it depends on the system: decided once the probe has measured it (Case.not_for_system)
        elif str(fact.value).lower() != value.lower():
            reason = f"n.a.: {config.name} has {name} = {fact.value} ({fact.source}); the case needs {value}"
    yield Instance(config, flavour, runner, case, reason)


@dataclass
class _Session:
    helper: HelperSession
    properties: Properties
    probe: dict
    binary: object        # what the runner starts: the helper's path (or its name in an image)
    scope: str            # what its process serves (scope())


class Engine:
    """Helper sessions, kept while the cases of their scope run, and the judging of each case."""

    def __init__(self, suite: Suite):
        self.suite = suite
        self.open: dict[str, _Session] = {}
        self.guests: dict[str, Guest] = {}   # by scope(): the one process of each shared system
        self.unavailable: dict[str, str] = {}
        self.unbuilt: set[str] = set()   # sessions unavailable because their helper could not be built
        self.broken: set[str] = set()    # sessions whose system started and did not answer as it must
        self.identities: dict[str, dict | str] = {}

    def identity(self, runner: Runner) -> dict:
        """The system's identity, asked once; RunnerUnavailable with the reason otherwise."""
        key = f"{runner.config.name}@{runner.name}"
        if key not in self.identities:
            try:
                self.identities[key] = runner.identity()
            except RunnerUnavailable as exc:
                self.identities[key] = str(exc)
        found = self.identities[key]
        if isinstance(found, str):
            raise RunnerUnavailable(found)
        return found

    def record(self, instance: Instance, nodeid: str | None = None) -> Record:
        case = instance.case
        return Record(nodeid=nodeid or instance.id, config=instance.config.name, flavour=instance.flavour,
                      runner=instance.runner.kind, system=instance.runner.name,
                      column=f"{instance.config.name}@{instance.runner.name}", case=case.key, table=case.table,
                      case_file=case.where, clause=case.clause, section=self.suite.clauses[case.clause].section,
                      call=case.call, sources=[case.source])

    def session(self, instance: Instance) -> _Session | str:
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
            self._close_other_scopes(scope(instance.runner, instance.group))
            try:
                self.open[key] = self._start(instance, key, trace, scratch_kind)
            except (RunnerUnavailable, build.BuildError, scratch.ScratchUnavailable, SystemUnderTestError,
                    ProtocolError) as exc:
                self.unavailable[key] = f"unavailable: {exc}"
                if isinstance(exc, build.BuildError):
                    self.unbuilt.add(instance.group)
                # A system that started and then did not answer as a helper does (a guest that
                # never boots, a helper that dies, garbage) or that measures as no kernel of
                # the ABI can be, is broken: an error, not a system that is merely not here.
                if isinstance(exc, SystemUnderTestError) or (
                        isinstance(exc, ProtocolError) and exc.kind != "cannot-start"
                        and not (exc.kind == "exited" and exc.status == instance.runner.unavailable_status)):
                    self.broken.add(key)
                return self.unavailable[key]
        return self.open[key]

    def _start(self, instance: Instance, key: str, trace: bool, scratch_kind: str | None) -> _Session:
        runner = instance.runner
        self.identity(runner)
        helper = runner.helper(instance.flavour)
        if runner.shared:
            session = self._guest(runner, helper).serve(helper, scratch_kind == "noexec", key)
        else:
            runner.command(helper, Path("/"), trace)  # raises RunnerUnavailable early
            session = HelperSession(lambda workdir: runner.command(helper, workdir, trace),
                                    scratch_kind=scratch_kind, console=runner.console,
                                    preamble=runner.preamble(helper))
            session.label = key
        # Detect support by running it (e.g. IA32 emulation may be off): never assume it.
        try:
            probe = session.request({"op": "probe", "id": "startup"})
            properties = measure(instance.config, probe, runner.stated(), instance.spec.libc)
        except ProtocolError as exc:
            session.close()
            raise ProtocolError(f"the helper does not run here: {exc}", exc.kind, status=exc.status) from None
        except (SystemUnderTestError, RunnerUnavailable):
            session.close()
            raise
        return _Session(session, properties, probe, helper, scope(runner, instance.group))

    def _guest(self, runner: Runner, helper: Path) -> Guest:
        """The guest of ``runner``'s system, with ``helper`` among those it holds (one built
        after the guest booted, from a changed source, needs a guest of its own)."""
        where = scope(runner, "")
        if where in self.guests and helper not in self.guests[where].paths:
            self._close_guest(where)
        if where not in self.guests:
            helpers = self.suite.shared_helpers(runner)
            command = runner.dispatcher_command(helpers)   # raises RunnerUnavailable early
            self.guests[where] = Guest(lambda workdir: command, runner.console, helpers)
        return self.guests[where]

    def _close_other_scopes(self, where: str) -> None:
        """When a session of scope ``where`` opens, the sessions and guests of every other
        scope are closed. Cases come ordered by scope (and by it to xdist workers): none
        needs them again, and if one did, its helper would start (its guest boot) again.
        Kept to the end, they were every process a worker had started: 198 qemu-user
        helpers, 2.1 GB resident, at the end of qemu-user + native (measured); and an
        idle guest kernel still takes host CPU (the loongson-3 one spins a whole core)."""
        for other in [g for g in self.guests if g != where]:
            self._close_guest(other)
        for key in [k for k, s in self.open.items() if s.scope != where]:
            self.open.pop(key).helper.close()

    def _close_guest(self, where: str) -> None:
        for key in [k for k, s in self.open.items() if s.scope == where]:
            del self.open[key]
        self.guests.pop(where).close()

    def close(self) -> None:
        for session in self.open.values():
            session.helper.close()
        self.open.clear()
        for guest in self.guests.values():
            guest.close()
        self.guests.clear()

    def run(self, instance: Instance, nodeid: str | None = None) -> Record:
        """Run one case and return its verdict record; whatever goes wrong in the harness
        is a record too, an error with the reason, never a case without a verdict."""
        started = time.perf_counter_ns()
        record = self.record(instance, nodeid)
        try:
            self._run(instance, record)
        except Exception as exc:   # noqa: BLE001 - the harness broke: say so in the record
            record.outcome, record.reason = Outcome.ERROR, f"the harness broke: {type(exc).__name__}: {exc}"
        took = (time.perf_counter_ns() - started) / 1e6
        phases = record.phases_ms
        phases["engine"] = round(took - phases.setdefault("session", 0.0) - (record.exchange_ms or 0.0), 3)
        return record

    def _run(self, instance: Instance, record: Record) -> None:
        runner = instance.runner
        try:   # an n.a. record names its system too (reports group records by system and version)
            identity = self.identity(runner)
            record.identity, record.runner_version = identity, identity.get("version")
        except RunnerUnavailable:
            pass
        if instance.not_applicable:
            record.outcome, record.reason = Outcome.NA, instance.not_applicable
            return
        opening = time.perf_counter_ns()
        session = self.session(instance)
        record.phases_ms["session"] = round((time.perf_counter_ns() - opening) / 1e6, 3)
        if isinstance(session, str):
            # A flavour named by the user that cannot be built is an error on every system;
            # a system that cannot run is one only where it was named (or --require-all).
            by_name = runner.asked or (instance.spec.asked and instance.group in self.unbuilt)
            broken = any(key == instance.group or key.startswith(instance.group + "/") for key in self.broken)
            record.outcome = Outcome.ERROR if by_name or broken or self.suite.require_all else Outcome.SKIPPED
            record.reason = session + (" (asked for by name)" if by_name else " (the system is broken)" if broken
                                       else " (--require-all)" if self.suite.require_all else "")
            return
        record.properties = session.properties.as_dict()
        try:
            # A row for some releases of a libc (the release is the helper's own answer), or
            # one that needs a row fact arches/ states for some systems only.
            not_here = (instance.case.not_for_release(session.properties)
                        or instance.case.not_for_system(instance.config, session.properties))
            if not_here:
                record.outcome, record.reason = Outcome.NA, not_here
                return
            self._judge(instance, session, record)
        except (cases.CaseError, oracle.OracleError, knownissues.KnownIssueError, SystemUnderTestError) as exc:
            record.outcome, record.reason = Outcome.ERROR, f"the suite's data: {exc}"

    def _judge(self, instance: Instance, session: _Session, record: Record) -> None:
        config, case, properties = instance.config, instance.case, session.properties
        unit = config.unit_bytes(properties.page_size) if config.has_mmap2 else 4096
        request = case.concrete_inputs(properties.page_size, unit, {
            name: cases.fact_value(config, name, properties) for name in case.facts if name in model.ADDRESS_FACTS})
        record.request = request
        line = json.dumps(request, separators=(",", ":"))
        record.reproducer = instance.runner.reproducer(session.binary, line, case.scratch, bool(case.trace))
        helper = session.helper
        mark = helper.stderr_size()
        started = time.perf_counter()
        try:
            answer = helper.request(request)
        except ProtocolError as exc:
            record.outcome, record.reason = Outcome.ERROR, f"protocol: {exc}"
            return
        finally:
            record.guest_start = helper.guest_start   # the start that served this request
        record.exchange_ms = round((time.perf_counter() - started) * 1000, 3)
        # Which process answered (this worker, the session, the process's launch in this worker:
        # a helper started again, after it died or for its scope's cases out of order, is
        # another): the benchmark counts distinct values to count process starts.
        record.helper_process = f"{os.getpid()}:{helper.label}:{helper.launch}"
        if case.op == "probe":
            clause, expected, observed, sources, problems = oracle.judge_probe(config, properties, case, answer)
        else:
            expectation = oracle.expect_call(config, properties, case, request)
            clause, expected, sources = expectation.clause, expectation.describe(), expectation.sources
            observed, problems = oracle.judge_call(config, properties.page_size, case, request, answer, expectation)
            record.deviation = oracle.deviation(config, properties.page_size, case, request, answer, expectation,
                                                problems)
        if case.trace:
            # Waiting for a line that must not come would only cost time: wait for none then.
            until = oracle.traced_maps if case.trace is True else (lambda text: True)
            trace = helper.stderr_since(mark, until=until)
            traced_expected, traced, trace_problems = oracle.judge_trace(
                config, properties.page_size, request, trace, instance.runner.tracer, case.trace)
            if case.trace is True:   # the row checks which system call the wrapper made
                clause, sources = "mmap2.VERSIONS.glibc-wrapper", [oracle.MAN_GLIBC_WRAPPER, *sources]
            expected, observed = {**expected, **traced_expected}, {**observed, **traced}
            problems += trace_problems
        record.clause, record.section = clause, self.suite.clauses[clause].section
        record.expected, record.observed, record.sources = expected, observed, sources
        self._verdict(instance, properties, request, unit, observed, problems, record)

    def _verdict(self, instance, properties, request, unit, observed, problems, record) -> None:
        libc = (properties.libc, knownissues.libc_version(properties.libc_version)) if properties.libc else None
        issue = knownissues.find_issue(self.suite.known_issues, instance.case.key, instance.config.name,
                                       instance.spec.kind, properties, libc=libc)
        harness = bool(observed.get("setup_error"))
        # Where the row states the answers the manual page allows, the reason says which kind of
        # deviation this answer is, and only a record of that kind may cover it.
        found = ((f"{record.deviation}: " if record.deviation else "") + "; ".join(problems)) or None
        if issue is None:
            record.outcome = Outcome.ERROR if harness else Outcome.FAILED if problems else Outcome.PASSED
            record.reason = found
            return
        record.known_issue, record.known_issue_kind = issue.id, issue.kind
        if not problems:
            record.outcome = Outcome.XPASSED
            record.reason = f"XPASS(strict) {issue.reason()}"
            return
        offset = request.get("offset", 0)
        names = {"offset": offset, "page": properties.page_size, "unit": unit,
                 "byte_offset": offset * unit if instance.case.call == "mmap2" else offset}
        changed = issue.not_covered(observed, names, record.deviation)
        if changed:
            record.outcome = Outcome.ERROR if harness else Outcome.FAILED
            record.reason = f"{changed}; {found}"
            return
        record.outcome, record.reason = Outcome.XFAILED, issue.reason()
