"""Known issues: where a runner does not do what the manual page says, with evidence.

Each record in known-issues.toml names the cases, configurations, flavours and
runner it affects and the exact version range, and becomes a strict xfail for
exactly that range: a fixed emulator turns the case into an unexpected pass,
which fails the run until the record's range is closed.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from . import tomlcheck
from .model import REPO
from .tomlcheck import STR, STR_LIST, Field

KNOWN_ISSUES_FILE = REPO / "known-issues.toml"


def _specifier(value: str) -> str | None:
    """Why ``value`` is not a PEP 440 specifier that bounds a range, or None."""
    try:
        versions = SpecifierSet(value)
    except InvalidSpecifier as exc:
        return str(exc)
    return None if str(versions) else "must bound the affected range"


# Every field of a record, with its type (tomlcheck.check_fields checks them, with the
# line of the field). The schema is being redesigned (schema v2): a new field is one line.
FIELDS = [Field("id", STR), Field("title", STR), Field("cases", STR_LIST), Field("configs", STR_LIST),
          Field("flavours", STR_LIST), Field("runner", STR), Field("versions", tomlcheck.ANY_STR, check=_specifier),
          Field("input", STR), Field("expected", STR), Field("observed", STR), Field("evidence", STR),
          Field("upstream", STR)]
REQUIRED = tuple(f.name for f in FIELDS if f.required)


class KnownIssueError(Exception):
    pass


@dataclass(frozen=True)
class KnownIssue:
    id: str
    title: str
    cases: tuple[str, ...]      # glob patterns over "table/case-id"
    configs: tuple[str, ...]    # glob patterns over configuration names
    flavours: tuple[str, ...]
    runner: str
    versions: SpecifierSet
    input: str
    expected: str
    observed: str
    evidence: str
    upstream: str

    def matches(self, case_key: str, config: str, flavour: str, runner: str, version: str) -> bool:
        try:
            in_range = Version(version) in self.versions
        except InvalidVersion:
            return False
        return (runner == self.runner and in_range and flavour in self.flavours
                and any(fnmatch.fnmatchcase(config, p) for p in self.configs)
                and any(fnmatch.fnmatchcase(case_key, p) for p in self.cases))

    def reason(self) -> str:
        return f"{self.id}: {self.title} (expected {self.expected}; observed {self.observed})"


def load_known_issues(path: Path = KNOWN_ISSUES_FILE) -> list[KnownIssue]:
    document = tomlcheck.load(path, KnownIssueError)
    unknown = [k for k in document.data if k != "issue"]
    if unknown:
        raise KnownIssueError(f"{tomlcheck.shown(path)}: unknown top-level key {unknown[0]!r} "
                              f"(the file holds [[issue]] records)")
    issues, seen = [], set()
    for record in document.records("issue", required=False):
        tomlcheck.check_fields(record, FIELDS)
        row = record.data
        if row["id"] in seen:
            raise KnownIssueError(f"{record.where('id')}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        issues.append(KnownIssue(**{**row, "versions": SpecifierSet(row["versions"]),
                                    **{k: tuple(row[k]) for k in ("cases", "configs", "flavours")}}))
    return issues


def check_references(issues: list[KnownIssue], configs, case_keys, flavours, runners,
                     path: Path = KNOWN_ISSUES_FILE) -> None:
    """Every pattern of a record must name something that exists: a record for a
    configuration or case that was renamed would otherwise silently match nothing."""
    records = {r.data.get("id"): r for r in tomlcheck.load(path, KnownIssueError).records("issue", required=False)}
    for issue in issues:
        record = records.get(issue.id)
        where = f"{record.where('id') if record else tomlcheck.shown(path)} ({issue.id})"
        for pattern in issue.configs:
            if not any(fnmatch.fnmatchcase(c, pattern) for c in configs):
                raise KnownIssueError(f"{where}: configs: {pattern!r} matches no configuration in arches/")
        for pattern in issue.cases:
            if not any(fnmatch.fnmatchcase(k, pattern) for k in case_keys):
                raise KnownIssueError(f"{where}: cases: {pattern!r} matches no case in tests/cases/")
        unknown = set(issue.flavours) - set(flavours)
        if unknown:
            raise KnownIssueError(f"{where}: flavours: unknown {sorted(unknown)} (known: {', '.join(flavours)})")
        if issue.runner not in runners:
            raise KnownIssueError(f"{where}: runner: unknown {issue.runner!r} (known: {', '.join(runners)})")


def find_issue(issues: list[KnownIssue], case_key: str, config: str, flavour: str, runner: str,
               version: str) -> KnownIssue | None:
    found = [i for i in issues if i.matches(case_key, config, flavour, runner, version)]
    if len(found) > 1:
        raise KnownIssueError(f"{case_key} on {config}/{flavour}@{runner} {version} matches several "
                              f"known issues: {', '.join(i.id for i in found)}")
    return found[0] if found else None
