"""The ELF verifier rejects a helper that is not the ABI its file describes."""
import shutil

import pytest

from mmap2conf import build, model
from mmap2conf.verify import VerifyError, elf_facts, verify_helper

CONFIGS = model.load_all()


def test_real_helpers_match_their_configuration():
    for name in ("i386", "or1k", "sparc32plus", "mips"):
        facts = verify_helper(build.helper_path(CONFIGS[name], "raw"), CONFIGS[name])
        assert facts["type"] == "ET_EXEC" and not facts["interp"]


def test_a_helper_built_for_another_abi_is_rejected():
    helper = build.helper_path(CONFIGS["i386"], "raw")
    with pytest.raises(VerifyError) as error:
        verify_helper(helper, CONFIGS["armhf"])
    assert "armhf.toml" in str(error.value)
    assert "[elf] machine is 'EM_ARM'" in str(error.value)


def test_endianness_is_checked():
    helper = build.helper_path(CONFIGS["mipsel"], "raw")
    with pytest.raises(VerifyError, match="endianness is 'big'"):
        verify_helper(helper, CONFIGS["mips"])


def test_a_dynamic_executable_is_rejected(tmp_path):
    dynamic = tmp_path / "true"
    shutil.copy(shutil.which("true"), dynamic)
    with pytest.raises(VerifyError, match="dynamically linked|ET_EXEC"):
        verify_helper(dynamic, CONFIGS["x86_64"])


def test_a_file_that_is_not_elf_is_rejected(tmp_path):
    text = tmp_path / "helper"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(VerifyError, match="not a readable ELF"):
        elf_facts(text)
