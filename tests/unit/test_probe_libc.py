"""The probe names the helper's libc and its release (helpers/PROTOCOL.md), which the
properties of every record carry and known issues and rows match as PEP 440 versions."""
import pytest

from mmap2conf.model import load_all
from mmap2conf.sut import SystemUnderTestError, libc_version, measure

CONFIGS = load_all()
PROBE = {"auxv_pagesz": 4096, "uname": {"machine": "x86_64", "release": "6.18.0", "version": "#1"}}


def test_the_probe_reports_the_libc_and_its_release():
    properties = measure(CONFIGS["i386"], {**PROBE, "libc": {"name": "glibc", "version": "2.41"}}, {}, "glibc")
    assert (properties.libc, properties.libc_version) == ("glibc", "2.41")
    assert "gnu_get_libc_version" in properties.sources["libc_version"]
    assert properties.as_dict()["libc_version"] == "2.41"
    raw = measure(CONFIGS["i386"], {**PROBE, "libc": None}, {})
    assert (raw.libc, raw.libc_version) == (None, None)
    with pytest.raises(SystemUnderTestError, match="names libc 'musl'; the flavour is built with glibc"):
        measure(CONFIGS["i386"], {**PROBE, "libc": {"name": "musl", "version": "1.2.5"}}, {}, "glibc")
    with pytest.raises(SystemUnderTestError, match="no libc version"):
        measure(CONFIGS["i386"], PROBE, {}, "musl")
    with pytest.raises(SystemUnderTestError, match="the raw helper's probe names a libc"):
        measure(CONFIGS["i386"], {**PROBE, "libc": {"name": "musl", "version": "1.2.5"}}, {})


@pytest.mark.parametrize("release, version", [
    ("2.41", "2.41"), ("2.41.9000", "2.41.9000"), ("1.2.5", "1.2.5"), ("1.2.5-git-12-gabc", "1.2.5+git.12.gabc"),
])
def test_a_libc_release_as_a_pep_440_version(release, version):
    assert libc_version(release) == version


def test_a_release_that_is_no_version_is_an_error():
    with pytest.raises(SystemUnderTestError, match="does not start with a version number"):
        libc_version("unknown")
