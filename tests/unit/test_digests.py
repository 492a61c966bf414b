"""The digest memo (digests.py) with real files: the sha256 of the content, kept for
another process, and a new one for a file that changed in place or was replaced."""
import hashlib
import os

import pytest

from mmap2conf import build, digests


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """A cache of its own, and a fresh process's view of it (no digest kept in memory)."""
    monkeypatch.setattr(build, "CACHE_DIR", tmp_path / "cache")
    digests._digest_of.cache_clear()
    yield tmp_path / "cache" / "digests"
    digests._digest_of.cache_clear()


def sha256(data: bytes) -> str:
    return hashlib.sha256(big(data)).hexdigest()


def big(data: bytes) -> bytes:
    """A file of the size that gets a memo, beginning with ``data``."""
    return data.ljust(digests.MEMO_MIN_SIZE, b"\0")


def test_a_digest_is_the_content_s_and_another_process_reads_it_from_the_memo(tmp_path, memo, monkeypatch):
    image = tmp_path / "vmlinuz"
    image.write_bytes(big(b"kernel one"))
    assert digests.file_digest(image) == sha256(b"kernel one")
    [kept] = memo.iterdir()
    assert kept.read_text() == sha256(b"kernel one")
    digests._digest_of.cache_clear()
    monkeypatch.setattr(digests.hashlib, "file_digest", None)   # hashing again would fail
    assert digests.file_digest(image) == sha256(b"kernel one")
    link = tmp_path / "link"
    link.symlink_to(image)
    assert digests.file_digest(link) == sha256(b"kernel one")   # keyed by the real path: the same memo
    assert len(list(memo.iterdir())) == 1


def test_a_file_changed_in_place_or_replaced_gets_a_new_digest(tmp_path, memo):
    image = tmp_path / "vmlinuz"
    image.write_bytes(big(b"kernel one"))
    before = image.stat()
    assert digests.file_digest(image) == sha256(b"kernel one")
    with open(image, "r+b") as file:   # the same inode and size, written a second later
        file.write(b"kernel two")   # the rest of the file as it was: big(b"kernel two")
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert digests.file_digest(image) == sha256(b"kernel two")
    replacement = tmp_path / "new"
    replacement.write_bytes(big(b"kernel 3rd"))    # the same size and mtime, another inode
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    os.replace(replacement, image)
    assert digests.file_digest(image) == sha256(b"kernel 3rd")
    digests._digest_of.cache_clear()          # another process: the memo has all three versions
    assert digests.file_digest(image) == sha256(b"kernel 3rd")


def test_a_damaged_memo_is_hashed_again(tmp_path, memo):
    image = tmp_path / "vmlinuz"
    image.write_bytes(big(b"kernel one"))
    digests.file_digest(image)
    [kept] = memo.iterdir()
    kept.write_text("half a dig")
    digests._digest_of.cache_clear()
    assert digests.file_digest(image) == sha256(b"kernel one")
    assert kept.read_text() == sha256(b"kernel one")


def test_a_small_file_gets_no_memo(tmp_path, memo):
    small = tmp_path / "config"
    small.write_bytes(b"CONFIG_MMU=y\n")
    assert digests.file_digest(small) == hashlib.sha256(b"CONFIG_MMU=y\n").hexdigest()
    assert not memo.exists() or not list(memo.iterdir())


def test_the_digest_from_an_offset_is_the_rest_s_and_kept_apart_from_the_whole_file_s(tmp_path, memo):
    state = tmp_path / "guest.state"
    state.write_bytes(b"header" + big(b"stream"))
    rest = hashlib.sha256(big(b"stream")).hexdigest()
    assert digests.file_digest(state, 6) == rest
    assert digests.file_digest(state) == hashlib.sha256(b"header" + big(b"stream")).hexdigest()
    digests._digest_of.cache_clear()
    assert digests.file_digest(state, 6) == rest and len(list(memo.iterdir())) == 2


def test_a_digest_remembered_as_its_file_is_written_needs_no_hash_until_the_file_changes(tmp_path, memo,
                                                                                         monkeypatch):
    state = tmp_path / "guest.state"
    state.write_bytes(b"header" + big(b"stream"))
    digests.remember(state, 6, state.stat(), hashlib.sha256(big(b"stream")).hexdigest())
    with monkeypatch.context() as patch:
        patch.setattr(digests.hashlib, "file_digest", None)   # hashing would fail
        assert digests.file_digest(state, 6) == hashlib.sha256(big(b"stream")).hexdigest()
    before = state.stat()
    with open(state, "r+b") as file:   # changed after it was written: its content is hashed
        file.write(b"header" + b"broken")
    os.utime(state, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert digests.file_digest(state, 6) == hashlib.sha256(b"broken" + big(b"stream")[6:]).hexdigest()


def test_a_memo_that_cannot_be_written_costs_a_hash_later_not_an_error(tmp_path, memo):
    memo.parent.write_bytes(b"")   # a file where the cache directory would be: no memo can be written
    image = tmp_path / "vmlinuz"
    image.write_bytes(big(b"kernel one"))
    digests.remember(image, 0, image.stat(), sha256(b"kernel one"))
    assert digests.file_digest(image) == sha256(b"kernel one")
