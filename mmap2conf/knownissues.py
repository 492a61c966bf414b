"""Known issues: where a system under test does not answer as it should, with evidence.

Each record of known-issues.toml names what is at fault (qemu, the kernel or a
libc) and the exact version range of it (a libc's: the release its helper
reports), the cases, configurations and flavours it affects (raw, glibc, musl:
a libc covers every flavour built with it, whatever the release), further properties the system must have (``where``), its kind (it
violates the manual page, or it only differs from Linux where the manual page
allows both answers) and the symptom it records in a checkable form. A case is
a strict xfail only where the record matches the system *and* the observation
matches the symptom: a fixed system is an unexpected pass, and any other failure,
above all an error of the harness, stays a failure that says the symptom changed.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .model import LIBCS, REPO

KNOWN_ISSUES_FILE = REPO / "known-issues.toml"
KINDS = ("violates-manual", "differs-from-linux")
COMPONENTS = ("qemu", "kernel", "libc")
SYMPTOM_KEYS = {"errno": str, "result": str, "block": str, "signal": str}
RESULTS = ("mapped", "success")
TEXT_FIELDS = ("title", "input", "expected", "observed", "evidence", "upstream")
LIST_FIELDS = ("cases", "configs", "flavours")
FIELDS = ("id", "kind", "component", "versions", "libc", "where", "symptom", *TEXT_FIELDS, *LIST_FIELDS)


class KnownIssueError(Exception):
    pass


@dataclass(frozen=True)
class KnownIssue:
    id: str
    title: str
    kind: str
    component: str
    versions: object            # packaging SpecifierSet over the component's version
    libc: str | None
    where: tuple[tuple[str, str], ...]   # (property, value) the system must have
    cases: tuple[str, ...]      # glob patterns over "table/case-id"
    configs: tuple[str, ...]    # glob patterns over configuration names
    flavours: tuple[str, ...]   # raw, glibc, musl: a libc covers every flavour built with it
    symptom: tuple[tuple[tuple[str, str], ...], ...]   # alternatives, each (key, value) pairs
    input: str
    expected: str
    observed: str
    evidence: str
    upstream: str
    line: int = 0

    def component_version(self, properties, libc: tuple[str, str] | None) -> str | None:
        """The version of the component at fault on this system, or None if it is not there."""
        if self.component == "qemu":
            return properties.emulator_version if properties.emulator == "qemu-user" else None
        if self.component == "kernel":
            return properties.kernel_version if properties.emulator == "none" else None
        return libc[1] if libc is not None and libc[0] == self.libc else None

    @cached_property
    def _globs(self) -> tuple[re.Pattern, re.Pattern]:
        """``configs`` and ``cases``, each one regular expression: every case asks every
        record (fnmatch pattern by pattern: 56 us a case for 41 records; this: 15 us)."""
        return tuple(re.compile("|".join(map(fnmatch.translate, patterns)) or "(?!)")
                     for patterns in (self.configs, self.cases))

    def applies(self, case_key: str, config: str, flavour: str, properties, libc=None) -> bool:
        from packaging.version import InvalidVersion, Version
        configs, cases = self._globs
        if flavour not in self.flavours or not configs.match(config) or not cases.match(case_key):
            return False
        from .sut import condition_holds
        if not all(condition_holds(where_condition(name, value), properties) for name, value in self.where):
            return False
        version = self.component_version(properties, libc)
        if version is None:
            return False
        try:
            return self.versions.contains(Version(version), prereleases=True)
        except InvalidVersion:
            raise KnownIssueError(f"{self.id}: the {self.component} version {version!r} is not a "
                                  f"PEP 440 version") from None

    def symptom_problem(self, observed: dict, names: dict) -> str | None:
        """None if ``observed`` shows one of this record's symptoms, else what differs.
        ``names``: what a block expression may use (offset, byte_offset, page, unit)."""
        if observed.get("setup_error") or "result" not in observed:   # the harness failed, not the system
            return f"{self.id} records {self.symptom_text()}; observed {_summary(observed)}"
        for symptom in self.symptom:
            if all(_shows(key, value, observed, names, self.line) for key, value in symptom):
                return None
        return f"{self.id} records {self.symptom_text()}; observed {_summary(observed)}"

    def not_covered(self, observed: dict, names: dict, deviation: str | None = None) -> str | None:
        """None if this record covers the observation: it shows one of the symptoms and, where
        the kind of the deviation is known (the row states the answers the manual page allows,
        oracle.deviation), the record is of that kind; else why not."""
        changed = self.symptom_problem(observed, names)
        if changed:
            return f"the symptom changed: {changed}"
        if deviation not in (None, self.kind):
            return f"{self.id} records a deviation of kind {self.kind}, this answer is one of kind {deviation}"
        return None

    def symptom_text(self) -> str:
        return " or ".join(", ".join(f"{k} {v}" for k, v in symptom) for symptom in self.symptom)

    def reason(self) -> str:
        return f"{self.id} ({self.kind}): {self.title} (expected {self.expected}; observed {self.observed})"


def where_condition(name: str, value) -> str:
    """A `where` entry as a condition (sut.condition_holds): kernel_bits = 64 is
    kernel_bits=64; kernel_version = ">=6.4" is kernel_version>=6.4."""
    return f"{name}{value}" if name == "kernel_version" else f"{name}={value}"


def _shows(key: str, value: str, observed: dict, names: dict, line: int) -> bool:
    if key == "signal" and value == "none":   # the answer came without the child dying
        return observed.get("signal") is None
    if key == "block":
        if value == "zero":
            return observed.get("block") == "zero"
        from .cases import evaluate
        return observed.get("block") == evaluate(value, names, f"{KNOWN_ISSUES_FILE.name}:{line}")
    return observed.get(key) == value


def _summary(observed: dict) -> str:
    if observed.get("setup_error"):
        return f"a harness error: {observed['setup_error']}"
    if observed.get("signal"):
        return observed["signal"]
    if observed.get("result") == "error":
        return observed.get("errno", "an error")
    block = observed.get("block")
    return f"{observed.get('result')}" + (f" with block {block:#x}" if isinstance(block, int) else
                                          f" ({block})" if block else "")


def _lines(text: str) -> list[int]:
    """The line of each [[issue]] header, for file:line errors."""
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[issue]]"]


def load_known_issues(path: Path = KNOWN_ISSUES_FILE) -> list[KnownIssue]:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from . import tomlcheck
    document = tomlcheck.load(path, KnownIssueError)   # unreadable, or invalid TOML: file:line
    text, data = document.text, document.data
    if set(data) - {"issue"}:
        raise KnownIssueError(f"{path}: unknown top-level key {sorted(set(data) - {'issue'})[0]!r}")
    lines = _lines(text)
    issues, seen = [], set()
    # Each [[issue]] must be a table (tomlcheck: a file:line error otherwise).
    for index, row in enumerate(r.data for r in document.records("issue", required=False)):
        line = lines[index] if index < len(lines) else 0
        where = f"{path}:{line} ({row.get('id', '?')})"

        def bad(message):
            return KnownIssueError(f"{where}: {message}")

        extra = [k for k in row if k not in FIELDS]
        if extra:
            raise bad(f"unknown field {extra[0]!r} (fields: {', '.join(FIELDS)})")
        for key in ("id", "kind", "component", "versions", "symptom", *TEXT_FIELDS, *LIST_FIELDS):
            if key not in row:
                raise bad(f"missing {key!r}")
        for key in ("id", "kind", "component", "versions", *TEXT_FIELDS):
            if not isinstance(row[key], str) or not row[key].strip():
                raise bad(f"{key} must be a non-empty string")
        for key in LIST_FIELDS:
            if not isinstance(row[key], list) or not row[key] or not all(isinstance(v, str) and v for v in row[key]):
                raise bad(f"{key} must be a non-empty list of strings")
        if row["kind"] not in KINDS:
            raise bad(f"kind {row['kind']!r} is not one of {', '.join(KINDS)}")
        if row["component"] not in COMPONENTS:
            raise bad(f"component {row['component']!r} is not one of {', '.join(COMPONENTS)}")
        if (row["component"] == "libc") != ("libc" in row):
            raise bad("libc names the libc exactly when component is libc")
        if "libc" in row and (row["libc"] not in LIBCS or list(row["flavours"]) != [row["libc"]]):
            raise bad(f"libc must be one of {', '.join(LIBCS)}, and flavours = [its name]: a libc record "
                      f"covers the builds of that libc whose release is in versions")
        if row["id"] in seen:
            raise bad("duplicate id")
        seen.add(row["id"])
        try:
            versions = SpecifierSet(row["versions"])
        except InvalidSpecifier as exc:
            raise bad(f"versions: {exc}") from None
        conditions = row.get("where", {})
        if not isinstance(conditions, dict):
            raise bad("where must be a table of properties")
        from .sut import check_condition
        for name, value in conditions.items():
            problem = check_condition(where_condition(name, value))
            if problem:
                raise bad(f"where: {problem}")
        symptoms = row["symptom"] if isinstance(row["symptom"], list) else [row["symptom"]]
        for symptom in symptoms:
            problem = _symptom_problem(symptom)
            if problem:
                raise bad(f"symptom: {problem}")
        issues.append(KnownIssue(
            id=row["id"], title=row["title"], kind=row["kind"], component=row["component"], versions=versions,
            libc=row.get("libc"), where=tuple((k, str(v)) for k, v in conditions.items()),
            symptom=tuple(tuple(symptom.items()) for symptom in symptoms), line=line,
            **{k: row[k] for k in ("input", "expected", "observed", "evidence", "upstream")},
            **{k: tuple(row[k]) for k in LIST_FIELDS}))
    return issues


def _symptom_problem(symptom) -> str | None:
    if not isinstance(symptom, dict) or not symptom:
        return ('a table (or a list of tables, alternatives): { errno = NAME }, { result = "mapped" '
                '[, block = EXPR or "zero"] [, signal = "none"] }, { signal = NAME } or { result = "success" }')
    for key, value in symptom.items():
        if key not in SYMPTOM_KEYS or not isinstance(value, str):
            return f"{key!r} is not one of {', '.join(SYMPTOM_KEYS)} with a string value"
    if "result" in symptom and symptom["result"] not in RESULTS:
        return f"result {symptom['result']!r} is not one of {', '.join(RESULTS)}"
    if "signal" in symptom and symptom["signal"] == "none" and symptom.get("result") != "mapped":
        return 'signal = "none" goes with result = "mapped"'
    if "block" in symptom and symptom.get("result") != "mapped":
        return 'block goes with result = "mapped"'
    if "block" in symptom and symptom["block"] != "zero":
        from .cases import CaseError, evaluate
        try:
            evaluate(symptom["block"], {"offset": 1, "byte_offset": 4096, "page": 4096, "unit": 4096}, "symptom")
        except CaseError as exc:
            return str(exc)
    return None


def check_references(issues: list[KnownIssue], configs, case_keys, flavours, errno_names,
                     path: Path = KNOWN_ISSUES_FILE) -> None:
    """Every pattern of a record must name something that exists: a record for a
    configuration or case that was renamed would otherwise silently match nothing."""
    for issue in issues:
        where = f"{path}:{issue.line} ({issue.id})"
        for pattern in issue.configs:
            if not any(fnmatch.fnmatchcase(c, pattern) for c in configs):
                raise KnownIssueError(f"{where}: configs: {pattern!r} matches no configuration in arches/")
        for pattern in issue.cases:
            if not any(fnmatch.fnmatchcase(k, pattern) for k in case_keys):
                raise KnownIssueError(f"{where}: cases: {pattern!r} matches no case in tests/cases/")
        unknown = set(issue.flavours) - set(flavours)
        if unknown:
            raise KnownIssueError(f"{where}: flavours: unknown {sorted(unknown)} (known: {', '.join(flavours)}; "
                                  f"a libc's name covers every build of it, its releases through component "
                                  f"libc and versions)")
        for symptom in issue.symptom:
            errno = dict(symptom).get("errno")
            if errno is not None and errno not in errno_names:
                raise KnownIssueError(f"{where}: symptom: errno {errno!r} is not an errno name the cases know")


def libc_version(release: str) -> str:
    """The PEP 440 form of a libc's release string, which ``versions`` ranges match."""
    from .sut import libc_version as pep440
    return pep440(release)


def find_issue(issues: list[KnownIssue], case_key: str, config: str, flavour: str, properties,
               libc=None) -> KnownIssue | None:
    """The record for this case on this system, or None. ``flavour`` is the flavour's
    kind (raw, glibc or musl: every build of that libc) and ``libc`` the (name, PEP 440
    version) of the helper's libc, which records of component libc match."""
    found = [i for i in issues if i.applies(case_key, config, flavour, properties, libc)]
    if len(found) > 1:
        raise KnownIssueError(f"{case_key} on {config}/{flavour} matches several known issues: "
                              f"{', '.join(i.id for i in found)}")
    return found[0] if found else None
