"""Case names for KCIDB and LAVA: the escaping of case ids, and every identifier of the
repository usable as a name component as it is."""
import re

import pytest

from mmap2conf import names
from mmap2conf.cases import load_cases, load_clauses
from mmap2conf.model import RUNNER_KINDS, load_all

KCIDB_PATH_COMPONENT = r"[a-zA-Z0-9_-]+"     # kcidb-io schema v5 test_path_re, between dots


@pytest.mark.parametrize("text, escaped", [
    ("pgoff=0x100001", "pgoff_3d0x100001"), ("a_b", "a_5fb"), ("1.5+2", "1_2e5_2b2"),
    ("x/y", "x_2fy"), ("é", "_c3_a9"), ("plain-id", "plain-id")])
def test_escaping_is_reversible(text, escaped):
    assert names.escape(text) == escaped
    assert names.unescape(escaped) == text


def test_an_escaped_name_decodes_one_way():
    with pytest.raises(names.BadName):
        names.unescape("a_zz")
    with pytest.raises(names.BadName):
        names.component("RETURN VALUE")
    with pytest.raises(names.BadName):
        names.escape("")


def test_every_identifier_of_the_repository_is_a_component():
    configs = load_all()
    clauses = load_clauses()
    for identifier in [*configs, *RUNNER_KINDS, "docker", *{f for c in configs.values() for f in c.flavours},
                       *(part for clause in clauses for part in clause.split("."))]:
        assert names.component(identifier) == identifier
    for case in load_cases(clauses=clauses):
        components = names.case_components(case.key)
        assert all(re.fullmatch(KCIDB_PATH_COMPONENT, c) for c in components), case.key
        assert names.split_case(components) == case.key
