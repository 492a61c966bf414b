"""Cases: the rows of tests/cases/*.toml, validated and made concrete per configuration.

A row is self-describing: a stable id, the clause of the manual page it checks,
its inputs (numbers may be expressions over ``page`` and ``unit``), what it
expects, and the source of that expectation. Any mistake in a row is an error
naming the file and line, raised when the tables are loaded.
"""
from __future__ import annotations

import ast
import functools
import operator
import re
from dataclasses import dataclass
from pathlib import Path

from . import tomlcheck
from .model import ADDRESS_FACTS, HELPERS_DIR, LIBCS, REPO, ROW_FACTS, expression_names
from .report import SECTIONS
from .tomlcheck import STR, Field

CASES_DIR = REPO / "tests" / "cases"
CLAUSES_FILE = REPO / "tests" / "clauses.toml"

VOCABULARY_FILE = HELPERS_DIR / "vocabulary.h"
_ENTRY = re.compile(r"^([A-Z_]+)\(([^()]*)\)\s*$")
_ENTRY_ARITY = {"KEY": 3, "CALL": 2, "PROT": 1, "FLAG": 1, "OPEN": 1, "FD": 1, "ADDR_FROM": 1,
                "STACK": 1, "ERRNO": 1, "SIGNAL": 1, "HELPER_CONST": 1}
KEY_TYPES = {"s": str, "i": int, "a": list}
KEY_SCOPES = ("FRAME", "FILE", "MMAP", "HARNESS", "INIT")
CALL_KINDS = ("STUB_MMAP", "LIBC", "STUB_FILE")


class VocabularyError(Exception):
    pass


@dataclass(frozen=True)
class Vocabulary:
    """helpers/vocabulary.h as data: the one list of the protocol's words."""
    keys: dict[str, tuple[str, str]]    # name -> (type letter, scope)
    calls: dict[str, str]               # name -> kind
    prot: tuple[str, ...]
    flags: tuple[str, ...]
    open: tuple[str, ...]
    fd: tuple[str, ...]
    addr_from: tuple[str, ...]
    stack: tuple[str, ...]
    errno: tuple[str, ...]
    signals: tuple[str, ...]
    helper_consts: tuple[str, ...]

    def keys_of(self, *scopes: str, types: str = "sia") -> tuple[str, ...]:
        return tuple(k for k, (t, scope) in self.keys.items() if scope in scopes and t in types)

    def calls_of(self, *kinds: str) -> tuple[str, ...]:
        return tuple(c for c, kind in self.calls.items() if kind in kinds)


def load_vocabulary(path: Path = VOCABULARY_FILE) -> Vocabulary:
    """Read the X-macro lines of helpers/vocabulary.h (the C helper includes the same
    file): one entry a line, `NAME(arguments)`, outside comments and preprocessor lines."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), path.read_text(), flags=re.S)
    entries: dict[str, list[tuple[str, ...]]] = {name: [] for name in _ENTRY_ARITY}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENTRY.match(line)
        if not match or match.group(1) not in _ENTRY_ARITY:
            raise VocabularyError(f"{path}:{number}: not a vocabulary entry: {line!r}")
        args = tuple(a.strip() for a in match.group(2).split(","))
        if len(args) != _ENTRY_ARITY[match.group(1)] or not all(re.fullmatch(r"\w+", a) for a in args):
            raise VocabularyError(f"{path}:{number}: {match.group(1)} takes {_ENTRY_ARITY[match.group(1)]} "
                                  f"names: {line!r}")
        entries[match.group(1)].append(args)
    for name, rows in entries.items():
        firsts = [row[0] for row in rows]
        if len(set(firsts)) != len(firsts):
            raise VocabularyError(f"{path}: {name} lists {sorted({f for f in firsts if firsts.count(f) > 1})[0]!r} twice")
    for name, kind, scope in entries["KEY"]:
        if kind not in KEY_TYPES or scope not in KEY_SCOPES:
            raise VocabularyError(f"{path}: KEY({name}, {kind}, {scope}): type is one of {', '.join(KEY_TYPES)}, "
                                  f"scope one of {', '.join(KEY_SCOPES)}")
    for name, kind in entries["CALL"]:
        if kind not in CALL_KINDS:
            raise VocabularyError(f"{path}: CALL({name}, {kind}): kind is one of {', '.join(CALL_KINDS)}")
    one = {name: tuple(row[0] for row in rows) for name, rows in entries.items()}
    return Vocabulary(keys={n: (t, s) for n, t, s in entries["KEY"]}, calls=dict(entries["CALL"]),
                      prot=one["PROT"], flags=one["FLAG"], open=one["OPEN"], fd=one["FD"],
                      addr_from=one["ADDR_FROM"], stack=one["STACK"], errno=one["ERRNO"], signals=one["SIGNAL"],
                      helper_consts=one["HELPER_CONST"])


VOCABULARY = load_vocabulary()
CALLS = tuple(VOCABULARY.calls)
# The calls the raw flavour makes through its stub (every other call is a libc's).
RAW_CALLS = VOCABULARY.calls_of("STUB_MMAP", "STUB_FILE")
# The file calls make no mapping; they act on the case's file and take only the FILE
# inputs (helpers/PROTOCOL.md): extend writes the block that sets its size, open opens
# it again. extend opens nothing, so an `open` there would mean nothing: the harness
# refuses it (the helper accepts and ignores it).
FILE_CALLS = {call: tuple(k for k in VOCABULARY.keys_of("FILE") if not (call == "extend" and k == "open"))
              for call in VOCABULARY.calls_of("STUB_FILE")}
PROBE_CHECKS = ("mmap2-number", "page-size", "errno-numbers", "signal-numbers")
# high-mapping: above 2 GiB; mapping-below-top: a mapping that ends at or below task_size.
CALL_EXPECTS = ("mapping", "high-mapping", "mapping-below-top")
FILE_CALL_EXPECTS = ("success",)
# Inputs a row may give, with the type the helper protocol takes.
INT_INPUTS = VOCABULARY.keys_of("FILE", "MMAP", types="i")
STR_INPUTS = {key: None for key in VOCABULARY.keys_of("FILE", "MMAP", types="s")}
STR_INPUTS.update(fd=VOCABULARY.fd, addr_from=VOCABULARY.addr_from, stack=VOCABULARY.stack)
LIST_INPUTS = VOCABULARY.keys_of("FILE", "MMAP", types="a")
MAX_READS = 16
MAX_MARKERS = 4096       # the helper's longest array (PROTOCOL.md, protocol errors)
# Integers the helper protocol takes: non-negative, up to 2^64-1 (PROTOCOL.md, Input).
MAX_VALUE = (1 << 64) - 1
# Expressions: bounded, so that no row can make the loader compute for ever
# (7 ** 7 ** 10): every intermediate value within +-2^128, shifts and exponents
# at most 128, the text at most 200 characters.
MAX_INTERMEDIATE = 1 << 128
MAX_EXPONENT = 128
MAX_EXPRESSION = 200
# The page sizes (and mmap2 units) every row is evaluated for when the tables load, so
# that a row that is wrong for some system (negative, above 2^64-1) fails at load: the
# page sizes of arches/ (4 KiB; 8 KiB or1k, sparc; 16 KiB loongson-3; 64 KiB hexagon).
LOAD_PAGES = (4096, 8192, 16384, 65536)
# ... and the address facts (ADDRESS_FACTS) at the lowest and the highest top of a task
# that arches/ states: o32 on a 64-bit MIPS kernel, and 4 GiB less a 4 KiB page.
LOAD_TASK_SIZES = (0x7FFF8000, 0xFFFFF000)
META = ("id", "clause", "call", "op", "check", "expect", "source", "allowed", "allowed_source", "trace", "requires",
        "scratch", "libc", "libc_version")
SCRATCH = ("noexec", "large")
PROT_TOKENS = set(VOCABULARY.prot)
FLAG_TOKENS = set(VOCABULARY.flags)
OPEN_TOKENS = set(VOCABULARY.open)
TOKEN_SETS = {"prot": PROT_TOKENS, "flags": FLAG_TOKENS, "open": OPEN_TOKENS}
ERRNO_NAMES = VOCABULARY.errno
SIGNAL_NAMES = VOCABULARY.signals


class CaseError(Exception):
    pass


@dataclass(frozen=True)
class Clause:
    id: str
    section: str
    page: str
    text: str


@dataclass(frozen=True)
class Case:
    table: str
    id: str
    path: Path
    line: int
    clause: str
    op: str                  # "call" or "probe"
    call: str | None
    check: str | None
    expect: object           # str, or a table keyed by properties of the system (kernel_bits=32)
    source: str
    inputs: dict
    trace: bool | str = False  # check libc's system call from a tracer; "no-syscall": it made none
    requires: str | None = None  # "fact=value": the row applies only where arches/ says so
    scratch: str | None = None   # a special scratch directory the helper's files need
    # The row states one libc's own behaviour: it applies to the flavours built with that
    # libc (every build of it), and with libc_version (a PEP 440 specifier) only to the
    # releases it names, as the helper reports its release. Never a flavour's name.
    libc: str | None = None
    libc_version: str | None = None
    # Every answer the manual page allows, where it allows more than one (expect is
    # Linux's among them), with the source that says so; () where it allows only expect.
    allowed: tuple[str, ...] = ()
    allowed_source: str | None = None
    facts: tuple[str, ...] = ()  # the row facts of arches/ it needs: fact: expectations, ADDRESS_FACTS

    @property
    def key(self) -> str:
        return f"{self.table}/{self.id}"

    @functools.cached_property   # once: every run of the case names it (engine.Record.case_file)
    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"

    def not_for_libc(self, libc: str | None, flavour: str) -> str | None:
        """Why the row does not apply to a flavour built with ``libc`` (an n.a. reason),
        or None if it does. A flavour whose libc is not known yet (None for a libc flavour
        whose build could not be read) gets None: its sessions say what is wrong."""
        if self.libc is None or libc is None or libc == self.libc:
            return None
        return (f"n.a.: the row checks {self.libc} only (its source is that libc's own code); "
                f"the {flavour} flavour is built with {libc}")

    def not_for_release(self, properties) -> str | None:
        """Why the row does not apply to the libc release the helper reported, or None."""
        if self.libc_version is None:
            return None
        from packaging.specifiers import SpecifierSet

        from .sut import libc_version
        release = properties.libc_version
        if SpecifierSet(self.libc_version).contains(libc_version(release), prereleases=True):
            return None
        return (f"n.a.: the row checks {self.libc} {self.libc_version} only; the helper's {self.libc} "
                f"reports release {release}")

    def expectation_for(self, properties) -> str:
        """The row's answer on a system with these properties (sut.Properties): the one
        condition key that holds (``kernel_bits=32``), else ``default``."""
        found, value = choose(self.expect, properties, f"{self.where}: case {self.id!r}")
        if not found:
            raise CaseError(f"{self.where}: case {self.id!r} states no expectation for this system "
                            f"and no default")
        return value

    def not_for_system(self, config, properties) -> str | None:
        """Why the row does not apply to this system (an n.a. reason) by the row facts it
        needs, or None: arches/ states no such fact for it, or its requirement is unmet."""
        name, _, wanted = (self.requires or "").partition("=")
        system = f"kernel_bits {properties.kernel_bits}, page {properties.page_size}"
        from .sut import KernelConfigUnknown
        for needed in sorted({*self.facts, *([name] if name and name != "mmap2" else [])}):
            fact = config.requirement(needed)
            try:
                value = fact_value(config, needed, properties)
            except KernelConfigUnknown as exc:
                return f"n.a.: {exc}; {config.name}'s {needed} depends on it here ({system}): {fact.source}"
            if value is None:
                return f"n.a.: {config.name} states no {needed} for this system ({system}): {fact.source}"
            if needed == name and str(value).lower() != wanted.lower():
                return (f"n.a.: {config.name} has {name} = {value} on this system ({system}; {fact.source}); "
                        f"the case needs {wanted}")
        return None

    def concrete_inputs(self, page: int, unit: int, facts: dict | None = None) -> dict:
        """The protocol request for a system with this page size and mmap2 unit, and
        the values of the address facts it names there (ADDRESS_FACTS: fact_value)."""
        names = {"page": page, "unit": unit, **(facts or {})}
        request = {}
        for key, value in self.inputs.items():
            if key in INT_INPUTS:
                value = evaluate(value, names, self.where)
            elif key in LIST_INPUTS:
                value = [evaluate(item, names, self.where) for item in value]
            request[key] = value
        if self.op == "call":
            request["call"] = self.call
            if self.trace:
                # One process only: qemu -strace would interleave a child's lines with the parent's.
                request["fork"] = 0
            if request.get("fd") in ("file", "closed"):
                self._file_defaults(request, page, unit)
        return {"op": self.op, "id": self.key, **request}

    def _file_defaults(self, request: dict, page: int, unit: int) -> None:
        """Size the file to cover the mapping, mark every 4096-byte block the mapping
        covers, and read each of them back, unless the row says otherwise."""
        byte_offset = request.get("offset", 0) * (unit if self.call == "mmap2" else 1)
        first, count = byte_offset // 4096, -(-request["len"] // 4096)
        if "markers" not in request and min(count, request.get("file_blocks", count)) > MAX_MARKERS:
            raise CaseError(f"{self.where}: the mapping covers {count} blocks of the file, more than the "
                            f"{MAX_MARKERS} markers the helper takes: give markers = [...] (for page = "
                            f"{page}, unit = {unit})")
        # Past 4 GiB, also mark where a 32-bit truncation of the offset would land, so
        # that a wrong mapping can be reported with the offset it really mapped.
        truncated = (byte_offset % (1 << 32)) // 4096 if byte_offset >= 1 << 32 else None
        request.setdefault("file_blocks", first + count)
        request.setdefault("markers", sorted({b for start in (first, truncated) if start is not None
                                              for b in range(start, start + count) if b < request["file_blocks"]}))
        request.setdefault("reads", [i * 4096 for i in range(min(count, MAX_READS))])


def choose(table, properties, where: str) -> tuple[bool, object]:
    """(True, the value of the one condition of ``table`` that holds on a system with these
    properties, else its default), or (False, None) where neither exists; a plain value is
    its own answer everywhere."""
    if not isinstance(table, dict):
        return True, table
    from .sut import condition_holds
    holding = [key for key in table if key != "default" and condition_holds(key, properties)]
    if len(holding) > 1:
        raise CaseError(f"{where}: conditions {', '.join(holding)} all hold")
    if holding:
        return True, table[holding[0]]
    return ("default" in table), table.get("default")


def fact_value(config, name: str, properties):
    """Row fact ``name`` of arches/ on a system with these properties, or None where the
    configuration states none for it (an address fact is evaluated for its page and the
    kernel's configuration options). sut.KernelConfigUnknown where it depends on options
    the kernel's configuration, as read, does not give."""
    fact = config.requirement(name)
    if fact is None:
        return None
    where = f"{config.path.name}: {name}"
    found, value = choose(fact.value, properties, where)
    if found and name in ADDRESS_FACTS:
        options = {option: properties.kernel_option(option, where)
                   for option in expression_names(value) if option != "page"}
        value = evaluate(value, {"page": properties.page_size, **options}, where)
    return value if found else None


def _pow(base: int, exponent: int) -> int:
    if exponent < 0:
        raise ValueError(f"negative exponent {exponent}")
    if abs(base) > 1 and (exponent > MAX_EXPONENT or abs(base).bit_length() * exponent > 2 * MAX_EXPONENT):
        raise ValueError(f"{base} ** {exponent} is too large (values are at most 2^64-1)")
    return base ** exponent


def _lshift(value: int, count: int) -> int:
    if not 0 <= count <= MAX_EXPONENT:
        raise ValueError(f"shift by {count} (at most {MAX_EXPONENT})")
    return value << count


def _floordiv(left: int, right: int) -> int:
    if right == 0:
        raise ValueError("division by zero")
    return left // right


def _mod(left: int, right: int) -> int:
    if right == 0:
        raise ValueError("modulo by zero")
    return left % right


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: _floordiv, ast.Mod: _mod, ast.Pow: _pow, ast.LShift: _lshift}


def evaluate(value, names: dict, where: str) -> int:
    """Evaluate an integer or a small arithmetic expression over ``names`` (``page``,
    ``unit``): an integer from 0 to 2^64-1, else a CaseError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CaseError(f"{where}: {value!r} is not an integer or an expression")

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            result = node.value
        elif isinstance(node, ast.Name) and node.id in names:
            result = names[node.id]
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            result = _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        else:
            raise ValueError(f"unsupported element {ast.dump(node)[:80]}")
        if abs(result) > MAX_INTERMEDIATE:
            raise ValueError("an intermediate value is out of range (values are at most 2^64-1)")
        return result

    if isinstance(value, int):
        result = value
    elif len(value) > MAX_EXPRESSION:
        raise CaseError(f"{where}: expression of {len(value)} characters (at most {MAX_EXPRESSION})")
    else:
        try:
            result = walk(ast.parse(value, mode="eval"))
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise CaseError(f"{where}: bad expression {value!r}: {exc}") from None
    shown = f"expression {value!r}" if isinstance(value, str) else f"value {value}"
    if result < 0:
        raise CaseError(f"{where}: {shown} is negative" + (f" ({result})" if isinstance(value, str) else ""))
    if result > MAX_VALUE:
        raise CaseError(f"{where}: {shown} is {result:#x}, above 2^64-1 (the largest integer of the helper "
                        f"protocol)")
    return result


CLAUSE_FIELDS = [Field("id", STR), Field("section", STR, choices=SECTIONS), Field("page", STR), Field("text", STR)]


def load_clauses(path: Path = CLAUSES_FILE) -> dict[str, Clause]:
    document = tomlcheck.load(path, CaseError)
    unknown = [k for k in document.data if k != "clause"]
    if unknown:
        raise CaseError(f"{tomlcheck.shown(path)}: unknown top-level key {unknown[0]!r} (the file holds "
                        f"[[clause]] records)")
    clauses = {}
    for record in document.records("clause"):
        tomlcheck.check_fields(record, CLAUSE_FIELDS)
        clause = Clause(**record.data)
        if clause.id in clauses:
            raise CaseError(f"{record.where('id')}: clause {clause.id!r} defined twice")
        clauses[clause.id] = clause
    return clauses


# The types of a row's own keys (its inputs are checked by _check_row itself).
META_FIELDS = {"id": tomlcheck.STR, "clause": tomlcheck.STR, "call": tomlcheck.STR, "op": tomlcheck.STR,
               "check": tomlcheck.STR, "source": tomlcheck.STR, "requires": tomlcheck.STR,
               "scratch": tomlcheck.STR, "allowed_source": tomlcheck.STR, "allowed": tomlcheck.STR_LIST,
               "expect": tomlcheck.one_of(tomlcheck.STR, tomlcheck.Kind(
                   "a table of conditions (or default) to strings",
                   lambda v: isinstance(v, dict) and v != {} and all(isinstance(x, str) for x in v.values()))),
               "trace": tomlcheck.one_of(tomlcheck.BOOL, tomlcheck.Kind('"no-syscall"', lambda v: v == "no-syscall"))}


def _check_row(row: dict, path: Path, line: int, clauses: dict) -> None:
    where = f"{path}:{line}"
    for key in row:
        if key == "flavours":
            raise CaseError(f"{where}: flavours: a row names the libc whose own answer it states "
                            f"(libc = \"musl\", libc_version = \">=1.2.4\"), never a flavour")
        if key not in META and key not in INT_INPUTS and key not in STR_INPUTS and key not in LIST_INPUTS:
            raise CaseError(f"{where}: unknown key {key!r}")
    for key in ("id", "clause", "expect", "source"):
        if key not in row:
            raise CaseError(f"{where}: missing {key!r}")
    for key, kind in META_FIELDS.items():
        if key in row and not kind.test(row[key]):
            raise CaseError(f"{where}: {key} must be {kind.name}, not {row[key]!r}"[:300])
    if not re.fullmatch(r"[a-z0-9][a-z0-9.=+_-]*", row["id"]):
        raise CaseError(f"{where}: id {row['id']!r} must be lower-case words joined by - . = + _")
    if row["clause"] not in clauses:
        raise CaseError(f"{where}: unknown clause {row['clause']!r} (see {CLAUSES_FILE.name})")
    op = row.get("op", "call")
    if op == "probe":
        if row.get("check") not in PROBE_CHECKS:
            raise CaseError(f"{where}: probe rows need check = one of {', '.join(PROBE_CHECKS)}")
    elif op == "call":
        if row.get("call") not in CALLS:
            raise CaseError(f"{where}: call must be one of {', '.join(CALLS)}")
        if row["call"] in FILE_CALLS:
            _check_file_call(row, where)
        elif "len" not in row:
            raise CaseError(f"{where}: missing 'len'")
        if isinstance(row["expect"], dict):
            from .sut import check_condition
            for key in row["expect"]:
                problem = key != "default" and check_condition(key)
                if problem:
                    raise CaseError(f"{where}: expect: {problem} (or default)")
        expects = row["expect"].values() if isinstance(row["expect"], dict) else [row["expect"]]
        for expect in expects:
            if row["call"] in FILE_CALLS:
                if expect not in FILE_CALL_EXPECTS and expect not in ERRNO_NAMES:
                    raise CaseError(f"{where}: unknown expectation {expect!r} for the {row['call']} call (an "
                                    f"errno name such as EFBIG, or {' or '.join(FILE_CALL_EXPECTS)}: it "
                                    f"makes no mapping)")
                continue
            if expect.startswith("fact:") and expect[5:] in ROW_FACTS:
                continue
            if expect not in CALL_EXPECTS and expect not in ERRNO_NAMES:
                raise CaseError(f"{where}: unknown expectation {expect!r} (an errno name such as EINVAL, "
                                f"fact:NAME with NAME in {', '.join(ROW_FACTS)}, or one of {', '.join(CALL_EXPECTS)})")
    else:
        raise CaseError(f"{where}: op must be 'call' or 'probe'")
    if "allowed" in row or "allowed_source" in row:
        _check_allowed(row, where)
    if "requires" in row:
        name, _, value = str(row["requires"]).partition("=")
        choices = {**ROW_FACTS, "mmap2": (bool, (True, False))}
        if (name not in choices or choices[name][1] is None
                or str(value).lower() not in [str(v).lower() for v in choices[name][1]]):
            raise CaseError(f"{where}: requires must be NAME=VALUE with a fact of arches/ "
                            f"({', '.join(f'{n}={v}' for n, (_, vs) in ROW_FACTS.items() for v in vs or ())})")
    if "libc" in row or "libc_version" in row:
        _check_libc(row, where)
    if row.get("scratch", SCRATCH[0]) not in SCRATCH:
        raise CaseError(f"{where}: scratch must be one of {', '.join(SCRATCH)}")
    if row.get("trace", False) not in (True, False, "no-syscall") or (row.get("trace") and row.get("call") in RAW_CALLS):
        raise CaseError(f"{where}: trace must be true, false or \"no-syscall\", and only for libc calls")
    for key, choices in STR_INPUTS.items():
        if key not in row:
            continue
        value = row[key]
        if not isinstance(value, str):
            raise CaseError(f"{where}: {key} must be a string")
        if choices and value not in choices:
            raise CaseError(f"{where}: {key} {value!r} is not one of {', '.join(choices)}")
        unknown = [t for t in value.split("|") if t and key in TOKEN_SETS and t not in TOKEN_SETS[key]]
        if unknown:
            raise CaseError(f"{where}: {key} token {unknown[0]!r} is not one of "
                            f"{', '.join(sorted(TOKEN_SETS[key]))}")
    for key in INT_INPUTS:
        value = row.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise CaseError(f"{where}: {key} must be an integer or an expression, not {value!r}"[:300])
        _evaluate_for_every_page(value, f"{where}: {key}")
    for key in LIST_INPUTS:
        if key not in row:
            continue
        if not isinstance(row[key], list) or any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in row[key]):
            raise CaseError(f"{where}: {key} must be a list of integers or expressions")
        if len(row[key]) > MAX_MARKERS:
            raise CaseError(f"{where}: {key} has {len(row[key])} entries (the helper takes at most {MAX_MARKERS})")
        for item in row[key]:
            _evaluate_for_every_page(item, f"{where}: {key}")


def load_systems():
    """(page, unit, address facts) every row is checked for at load."""
    return [(page, unit, dict.fromkeys(ADDRESS_FACTS, top)) for page in LOAD_PAGES for unit in sorted({4096, page})
            for top in LOAD_TASK_SIZES]


def _evaluate_for_every_page(value, where: str) -> None:
    for page, unit, facts in load_systems():
        try:
            evaluate(value, {"page": page, "unit": unit, **facts}, where)
        except CaseError as exc:
            raise CaseError(f"{exc} (for page = {page}, unit = {unit}"
                            + "".join(f", {k} = {v:#x}" for k, v in facts.items()) + ")"
                            if isinstance(value, str) else str(exc)) from None


def _check_allowed(row: dict, where: str) -> None:
    """allowed = [ANSWER, ...] with allowed_source: every answer the manual page allows, which
    must hold each answer expect gives (Linux's), and every value of a fact it names."""
    where = f"{where}: case {row['id']!r}"
    if "allowed" not in row or "allowed_source" not in row:
        raise CaseError(f"{where}: allowed and allowed_source go together: the answers the manual page "
                        f"allows, and the sentence that allows them")
    allowed = row["allowed"]
    answers = FILE_CALL_EXPECTS if row.get("call") in FILE_CALLS else CALL_EXPECTS
    unknown = [a for a in allowed if a not in answers and a not in ERRNO_NAMES]
    if unknown or row.get("op", "call") != "call":
        raise CaseError(f"{where}: allowed: {(unknown or allowed)[0]!r} is not an answer of a call (an errno "
                        f"name, or {' or '.join(answers)})")
    if len(set(allowed)) != len(allowed) or len(allowed) < 2:
        raise CaseError(f"{where}: allowed must list two or more different answers (a single one is expect "
                        f"itself: leave allowed out)")
    expects = row["expect"].values() if isinstance(row["expect"], dict) else [row["expect"]]
    for expect in expects:
        fact = expect.removeprefix("fact:")
        values = [str(v) for v in ROW_FACTS[fact][1]] if expect.startswith("fact:") else [expect]
        outside = [v for v in values if v not in allowed]
        if outside:
            what = f"expect {expect!r}" + (f" may be {outside[0]!r} (a value of that fact)" if outside != [expect] else "")
            raise CaseError(f"{where}: {what}, which allowed ({', '.join(allowed)}) does not hold: the expected "
                            f"answer, Linux's, must be one the manual page allows")


def _check_file_call(row: dict, where: str) -> None:
    """extend and open act on the case's file: its size, its markers and (open) its flags."""
    call, taken = row["call"], FILE_CALLS[row["call"]]
    stray = [key for key in row if key not in META and key not in taken]
    if stray:
        raise CaseError(f"{where}: {stray[0]!r} means nothing to the {call} call (it takes only "
                        f"{', '.join(taken)})")
    if call == "extend" and evaluate(row.get("file_blocks", 1), {"page": 4096, "unit": 4096}, where) < 1:
        raise CaseError(f"{where}: extend needs file_blocks of 1 or more (it writes the file's last block)")


def _check_libc(row: dict, where: str) -> None:
    """libc = NAME (and libc_version = SPECIFIER): the row states that libc's own answer."""
    libc = row.get("libc")
    if libc not in LIBCS:
        raise CaseError(f"{where}: libc must be one of {', '.join(LIBCS)}"
                        + (" (libc_version needs it)" if libc is None else f", not {libc!r}"))
    if row.get("op", "call") == "call" and row.get("call") in RAW_CALLS:
        raise CaseError(f"{where}: libc: a {row.get('call')} call is the raw flavour's, which has no libc "
                        f"({', '.join(RAW_CALLS)} go through the stub; mmap and mmap64 are the libcs')")
    if "libc_version" in row:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        value = row["libc_version"]
        try:
            if not isinstance(value, str) or not value.strip():
                raise InvalidSpecifier(repr(value))
            SpecifierSet(value)
        except InvalidSpecifier as exc:
            raise CaseError(f"{where}: libc_version must be a PEP 440 specifier such as \">=1.2.4\": {exc}") from None


def load_table(path: Path, clauses: dict) -> list[Case]:
    document = tomlcheck.load(path, CaseError)
    data = document.data
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise CaseError(f"{path}:{document.header_line('defaults', 0)}: defaults must be a table [defaults]")
    unknown = set(data) - {"defaults", "case"}
    if unknown:
        raise CaseError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (tables hold [defaults] and [[case]])")
    cases, seen = [], set()
    for record in document.records("case", required=False):
        own = record.data
        row = {**defaults, **own}   # a row's own keys override the table's defaults
        line = record.line_of("id")
        _check_row(row, path, line, clauses)
        if row["id"] in seen:
            raise CaseError(f"{path}:{line}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        inputs = {k: v for k, v in row.items() if k not in META}
        expects = row["expect"].values() if isinstance(row["expect"], dict) else [row["expect"]]
        facts = {e[5:] for e in expects if e.startswith("fact:")} | {
            n for v in inputs.values() for item in (v if isinstance(v, list) else [v])
            for n in expression_names(item) if n in ADDRESS_FACTS}
        cases.append(Case(table=path.stem, id=row["id"], path=path, line=line, clause=row["clause"],
                          op=row.get("op", "call"), call=row.get("call"), check=row.get("check"),
                          expect=row["expect"], source=row["source"], inputs=inputs,
                          trace=row.get("trace", False), requires=row.get("requires"),
                          scratch=row.get("scratch"), libc=row.get("libc"), libc_version=row.get("libc_version"),
                          allowed=tuple(row.get("allowed", ())), allowed_source=row.get("allowed_source"),
                          facts=tuple(sorted(facts))))
        if cases[-1].op == "call":
            for page, unit, facts in load_systems():   # the request every system would be sent
                cases[-1].concrete_inputs(page, unit, facts)
    if not cases:
        raise CaseError(f"{path}: no [[case]] rows")
    return cases


def load_cases(cases_dir: Path = CASES_DIR, clauses: dict | None = None) -> list[Case]:
    clauses = clauses if clauses is not None else load_clauses()
    return [case for path in sorted(cases_dir.glob("*.toml")) for case in load_table(path, clauses)]
