"""Fixtures for the harness's own tests: copies of arches/ to break on purpose."""
import shutil

import pytest

from mmap2conf.model import ARCHES_DIR


@pytest.fixture
def arches_copy(tmp_path):
    target = tmp_path / "arches"
    shutil.copytree(ARCHES_DIR, target)
    return target


@pytest.fixture
def edit():
    """Replace the first ``old`` in a file by ``new``; the text must be there."""
    def replace(path, old, new):
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))
    return replace
