"""Known issues: where a runner does not do what the manual page says, with evidence.

Each record in known-issues.toml names the cases, configurations, flavours and
runner it affects and the exact version range, and becomes a strict xfail for
exactly that range: a fixed emulator turns the case into an unexpected pass,
which fails the run until the record's range is closed.
"""
from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .model import REPO

KNOWN_ISSUES_FILE = REPO / "known-issues.toml"
REQUIRED = ("id", "title", "cases", "configs", "flavours", "runner", "versions",
            "input", "expected", "observed", "evidence", "upstream")


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
    data = tomllib.loads(path.read_text())
    issues, seen = [], set()
    for index, row in enumerate(data.get("issue", []), 1):
        where = f"{path}: issue #{index} ({row.get('id', '?')})"
        missing = [k for k in REQUIRED if k not in row]
        extra = [k for k in row if k not in REQUIRED]
        if missing or extra:
            raise KnownIssueError(f"{where}: missing {missing}" if missing else f"{where}: unknown {extra}")
        if row["id"] in seen:
            raise KnownIssueError(f"{where}: duplicate id")
        seen.add(row["id"])
        try:
            versions = SpecifierSet(row["versions"])
        except InvalidSpecifier as exc:
            raise KnownIssueError(f"{where}: versions: {exc}") from None
        if not str(versions):
            raise KnownIssueError(f"{where}: versions must bound the affected range")
        issues.append(KnownIssue(**{**row, "versions": versions,
                                    **{k: tuple(row[k]) for k in ("cases", "configs", "flavours")}}))
    return issues


def check_references(issues: list[KnownIssue], configs, case_keys, flavours, runners,
                     path: Path = KNOWN_ISSUES_FILE) -> None:
    """Every pattern of a record must name something that exists: a record for a
    configuration or case that was renamed would otherwise silently match nothing."""
    text = path.read_text()
    for issue in issues:
        line = text[:text.find(f'id = "{issue.id}"')].count("\n") + 1
        where = f"{path}:{line} ({issue.id})"
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
