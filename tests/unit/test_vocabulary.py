"""One vocabulary: helpers/vocabulary.h is the only list of the protocol's words.

The helper includes it, cases.py reads it, and these tests fail when
helpers/PROTOCOL.md, the errno families of arches/errno/ or the helper's source
say something else."""
import re
import tomllib

import pytest

from mmap2conf import cases
from mmap2conf.cases import VocabularyError, load_vocabulary
from mmap2conf.model import ARCHES_DIR, HELPERS_DIR

VOCABULARY = cases.VOCABULARY
PROTOCOL = (HELPERS_DIR / "PROTOCOL.md").read_text()
HELPER_SOURCE = (HELPERS_DIR / "mmap2_helper.c").read_text()
TYPE_WORDS = {"string": "s", "int": "i", "array": "a"}


def input_table() -> dict[str, tuple[str, str]]:
    """PROTOCOL.md's Input table: key -> (type letter, the meaning column)."""
    section = PROTOCOL.split("## Input", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.*) \|$", section, flags=re.M)
    return {key: (TYPE_WORDS.get(kind, kind), meaning) for key, kind, meaning in rows}


def words_after(text: str, lead: str) -> list[list[str]]:
    return [group.split() for group in re.findall(re.escape(lead) + r"\s+`([\w ]+)`", text)]


def test_protocol_md_lists_every_key_with_its_type():
    table = {key: kind for key, (kind, _) in input_table().items()}
    assert table == {key: kind for key, (kind, _) in VOCABULARY.keys.items()}


@pytest.mark.parametrize("key, words", [
    ("call", "calls"), ("fd", "fd"), ("addr_from", "addr_from"), ("stack", "stack"),
])
def test_protocol_md_lists_the_choices_of_a_key(key, words):
    meaning = input_table()[key][1]
    assert words_after(meaning, "one of") == [list(getattr(VOCABULARY, words))]


@pytest.mark.parametrize("key, tokens", [("prot", "prot"), ("flags", "flags"), ("open", "open")])
def test_protocol_md_lists_the_tokens_of_a_key(key, tokens):
    meaning = input_table()[key][1]
    assert words_after(meaning, "tokens:") == [list(getattr(VOCABULARY, tokens))]


def test_protocol_md_lists_the_errno_signal_and_helper_names():
    groups = words_after(PROTOCOL, "one of")
    for names in (VOCABULARY.errno, VOCABULARY.signals, VOCABULARY.helper_consts):
        assert list(names) in groups


def test_protocol_md_names_the_keys_a_file_call_takes():
    sentence = re.search(r"They take only (.*?); any other key", PROTOCOL, flags=re.S).group(1)
    assert set(re.findall(r"`(\w+)`", sentence)) == set(VOCABULARY.keys_of("FRAME", "FILE"))


def test_protocol_md_names_no_word_the_vocabulary_lacks():
    # Every "one of" / "tokens:" list in the document is one of the vocabulary's lists.
    known = [list(VOCABULARY.calls), list(VOCABULARY.fd), list(VOCABULARY.addr_from), list(VOCABULARY.stack),
             list(VOCABULARY.prot), list(VOCABULARY.flags), list(VOCABULARY.open),
             list(VOCABULARY.errno), list(VOCABULARY.signals), list(VOCABULARY.helper_consts)]
    for group in words_after(PROTOCOL, "one of") + words_after(PROTOCOL, "tokens:"):
        assert group in known, f"PROTOCOL.md lists {group}, which helpers/vocabulary.h does not"


def test_the_errno_families_name_exactly_the_vocabularys_errnos_and_signals():
    for path in sorted((ARCHES_DIR / "errno").glob("*.toml")):
        family = tomllib.loads(path.read_text())
        assert list(family["errno"]) == list(VOCABULARY.errno), path.name
        assert list(family["signals"]) == list(VOCABULARY.signals), path.name


def test_the_helper_spells_no_word_of_the_vocabulary_itself():
    # The helper's tables are expansions of vocabulary.h: no quoted token, call,
    # descriptor kind, errno or signal name, and no positional string of key types.
    # (Key names do appear quoted: the answer's keys are spelt like some input keys.)
    code = re.sub(r"/\*.*?\*/", "", HELPER_SOURCE, flags=re.S)
    literals = set(re.findall(r'"(\w+)"', code))
    words = {*VOCABULARY.calls, *VOCABULARY.prot, *VOCABULARY.flags, *VOCABULARY.open,
             *VOCABULARY.fd, *VOCABULARY.errno, *VOCABULARY.signals, *VOCABULARY.helper_consts}
    # "call" is also the op the helper dispatches on, which is not a vocabulary list.
    assert literals & words <= {"call"}
    assert not re.search(r'"[sia]{8,}"', HELPER_SOURCE)
    assert HELPER_SOURCE.count('#include "vocabulary.h"') >= 10


def test_the_harness_reads_its_lists_from_the_vocabulary():
    assert cases.CALLS == tuple(VOCABULARY.calls)
    assert set(cases.RAW_CALLS) == {"mmap2", "extend", "open"}
    assert set(cases.FILE_CALLS) == {"extend", "open"}
    assert cases.ERRNO_NAMES == VOCABULARY.errno
    assert set(cases.INT_INPUTS) | set(cases.STR_INPUTS) | set(cases.LIST_INPUTS) == \
        set(VOCABULARY.keys_of("FILE", "MMAP"))
    assert cases.STR_INPUTS["fd"] == VOCABULARY.fd


@pytest.mark.parametrize("line, message", [
    ("KEY(op, s)", "KEY takes 3 names"),
    ("KEY(op, x, FRAME)", "type is one of"),
    ("CALL(mmap2, KERNEL)", "kind is one of"),
    ("WORD(x)", "not a vocabulary entry"),
    ("FLAG(SHARED)\nFLAG(SHARED)", "lists 'SHARED' twice"),
])
def test_a_broken_vocabulary_line_is_an_error_naming_the_file(tmp_path, line, message):
    path = tmp_path / "vocabulary.h"
    path.write_text(f"/* a comment\n   over lines */\n#ifndef KEY\n#define KEY(a, b, c)\n#endif\n{line}\n")
    with pytest.raises(VocabularyError, match=re.escape(message)):
        load_vocabulary(path)


def test_comments_and_preprocessor_lines_are_not_entries(tmp_path):
    path = tmp_path / "vocabulary.h"
    path.write_text("/* FLAG(NOT_ONE) */\n#define FLAG(t)\nFLAG(SHARED) /* trailing */\n#undef FLAG\n")
    assert load_vocabulary(path).flags == ("SHARED",)
