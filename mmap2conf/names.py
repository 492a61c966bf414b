"""Case names for the result formats that restrict them: KCIDB test paths and LAVA
test case names.

KCIDB allows only ``[a-zA-Z0-9_-]+`` between the dots of a test path (kcidb-io's
schema v5, ``test_path_re``); LAVA's lava-test-case signal splits each parameter on
``=`` and drops an id with a space (lava_dispatcher/actions/test/shell.py,
``handle_testcase``), keeps one result directory per id (``$LAVA_RESULT_DIR/results/$ID``,
so no ``/``), and its test definition schema allows names of ``[-_a-zA-Z0-9.]``
only (lava_common/schemas/test/definition.py). A case id (``table/id``, the part
after the ``/``) may hold ``=``, ``+``, ``.`` and more, so it is escaped:

    every byte of its UTF-8 text outside [A-Za-z0-9-] becomes "_" and the byte's two
    lowercase hex digits: "=" -> "_3d", "+" -> "_2b", "." -> "_2e", "_" -> "_5f".

The escaping is reversible (``unescape``), so two ids never get the same name. The
other components (clause parts, table, configuration, flavour, runner) are the suite's
own identifiers and are used as they are; ``component`` refuses one that is not a
valid component rather than escape it, so that a name always decodes one way
(tests/unit/test_names.py checks every identifier in the repository).
"""
from __future__ import annotations

import re
import string

SAFE = frozenset(string.ascii_letters + string.digits + "-")
COMPONENT = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"_([0-9a-f]{2})")


class BadName(ValueError):
    pass


def escape(text: str) -> str:
    """One path component for any text: bytes outside [A-Za-z0-9-] as _XX."""
    if not text:
        raise BadName("an empty text has no component")
    return "".join(chr(b) if chr(b) in SAFE else f"_{b:02x}" for b in text.encode())


def unescape(component: str) -> str:
    """The text of an escaped component (the inverse of escape)."""
    out, i = bytearray(), 0
    while i < len(component):
        if component[i] == "_":
            if not _ESCAPE.match(component, i):
                raise BadName(f"{component!r}: '_' at {i} is not followed by two hex digits")
            out.append(int(component[i + 1:i + 3], 16))
            i += 3
        else:
            out += component[i].encode()
            i += 1
    return out.decode()


def component(identifier: str) -> str:
    """One of the suite's own identifiers as a component, unchanged; it must be valid."""
    if not COMPONENT.fullmatch(identifier):
        raise BadName(f"{identifier!r} is not a valid name component ([A-Za-z0-9_-]+)")
    return identifier


def case_components(case: str) -> list[str]:
    """``table/id`` as two components: the table unchanged, the id escaped."""
    table, sep, case_id = case.partition("/")
    if not sep:
        raise BadName(f"case {case!r} is not table/id")
    return [component(table), escape(case_id)]


def split_case(components: list[str]) -> str:
    """The case key of the last two components (the inverse of case_components)."""
    table, case_id = components[-2:]
    return f"{table}/{unescape(case_id)}"
