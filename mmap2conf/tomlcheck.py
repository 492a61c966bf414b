"""Typed fields of the suite's TOML records, checked with file:line errors.

The data files (tests/cases/*.toml, tests/clauses.toml, known-issues.toml) are
arrays of tables ([[case]], [[clause]], [[issue]]). Everything read from them is
checked here before use, so a malformed file is an error naming the file, the
line and the field, never a traceback:

    document = load(path, KnownIssueError)             # invalid TOML: path:line: ...
    for record in document.records("issue"):          # each [[issue]] with its lines
        check_fields(record, FIELDS, KnownIssueError)  # missing, unknown, wrongly typed

A Field names its type (a Kind below: STR, STR_LIST, INT, ...), whether it is
required, and optionally the values it may take (choices) and a further check (a
function of the value that returns why it is wrong, or None).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .model import REPO


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)


@dataclass(frozen=True)
class Kind:
    """A type of field: ``test(value)`` says whether a value has it."""
    name: str
    test: Callable[[object], bool]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


STR = Kind("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
ANY_STR = Kind("a string", lambda v: isinstance(v, str))
INT = Kind("an integer", _is_int)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
TABLE = Kind("a table", lambda v: isinstance(v, dict))
STR_LIST = Kind("a non-empty list of non-empty strings",
                lambda v: isinstance(v, list) and v != [] and all(STR.test(x) for x in v))
STR_TABLE = Kind("a table of strings", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))


def one_of(*kinds: Kind) -> Kind:
    return Kind(" or ".join(k.name for k in kinds), lambda v: any(k.test(v) for k in kinds))


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    required: bool = True
    choices: tuple | None = None
    check: Callable[[object], str | None] | None = None


class Record:
    """One table of an array of tables, with the lines of its keys."""

    def __init__(self, document: "Document", table: str, index: int, data):
        self.document, self.table, self.index, self.data = document, table, index, data
        self.line = document.header_line(table, index)

    def line_of(self, key: str | None = None) -> int:
        """The line of ``key = ...`` in this record's text, else of its header."""
        if key is None:
            return self.line
        return self.document.key_line(self.table, self.index, key) or self.line

    def where(self, key: str | None = None) -> str:
        return f"{shown(self.document.path)}:{self.line_of(key)}"


class Document:
    def __init__(self, path: Path, text: str, data: dict, error: type[Exception]):
        self.path, self.text, self.data, self.error = path, text, data, error
        self._lines = text.splitlines()

    def records(self, table: str, required: bool = True) -> list[Record]:
        """The [[table]] records; each must be a table."""
        value = self.data.get(table, [])
        if not isinstance(value, list):
            raise self.error(f"{shown(self.path)}:{self._assignment_line(table)}: {table} must be an "
                             f"array of tables [[{table}]]")
        if required and not value:
            raise self.error(f"{shown(self.path)}: no [[{table}]] records")
        records = []
        for index, data in enumerate(value):
            record = Record(self, table, index, data)
            if not isinstance(data, dict):
                raise self.error(f"{record.where()}: {table} #{index + 1} must be a table")
            records.append(record)
        return records

    def _headers(self, table: str) -> list[int]:
        header = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
        return [number for number, line in enumerate(self._lines, 1) if header.match(line)]

    def _assignment_line(self, key: str) -> int:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        return next((n for n, line in enumerate(self._lines, 1) if pattern.match(line)), 1)

    def header_line(self, table: str, index: int) -> int:
        headers = self._headers(table)
        return headers[index] if index < len(headers) else self._assignment_line(table)

    def key_line(self, table: str, index: int, key: str) -> int | None:
        headers = self._headers(table)
        if index >= len(headers):
            return None
        start = headers[index]
        # The record's text runs to the next table header of any kind.
        end = next((n for n in range(start + 1, len(self._lines) + 1)
                    if re.match(r"^\s*\[", self._lines[n - 1])), len(self._lines) + 1)
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
        return next((n for n in range(start + 1, end) if pattern.match(self._lines[n - 1])), None)


def load(path: Path, error: type[Exception]) -> Document:
    """Read and parse a TOML file; an unreadable file or invalid TOML is ``error``
    naming the file and, for a syntax error, the line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{shown(path)}: cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = f":{match.group(1)}" if match else ""
        message = re.sub(r"\s*\(at (?:line \d+, column \d+|end of document)\)", "", message)
        raise error(f"{shown(path)}{line}: invalid TOML: {message}") from None
    return Document(path, text, data, error)


def check_fields(record: Record, fields: list[Field], error: type[Exception] | None = None,
                 allow_unknown: bool = False) -> None:
    """Every required field present, no unknown field, each of its kind and choices."""
    error = error or record.document.error
    names = {f.name for f in fields}
    if not allow_unknown:   # first: a misspelt key is also a missing one
        unknown = [k for k in record.data if k not in names]
        if unknown:
            raise error(f"{record.where(unknown[0])}: unknown key {unknown[0]!r} in [[{record.table}]] "
                        f"#{record.index + 1} (known: {', '.join(sorted(names))})")
    missing = [f.name for f in fields if f.required and f.name not in record.data]
    if missing:
        raise error(f"{record.where()}: {record.table} #{record.index + 1}: missing {', '.join(missing)}")
    for field in fields:
        if field.name not in record.data:
            continue
        value = record.data[field.name]
        where = record.where(field.name)
        if not field.kind.test(value):
            raise error(f"{where}: {field.name} must be {field.kind.name}, not {_describe(value)}")
        if field.choices is not None and value not in field.choices:
            raise error(f"{where}: {field.name} {value!r} is not one of {', '.join(map(str, field.choices))}")
        if field.check is not None:
            why = field.check(value)
            if why:
                raise error(f"{where}: {field.name}: {why}")


def _describe(value) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"
