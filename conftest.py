"""The suite's pytest plugin lives in the mmap2conf package; this file only loads it,
and first checks the environment settings: a bad one is a usage error, not a skip."""
import pytest

pytest_plugins = ["mmap2conf.plugin"]


def pytest_configure(config):
    from mmap2conf import protocol, scratch
    try:
        scratch.check_setting()
        protocol.check_settings()
    except (scratch.ScratchSettingError, protocol.SettingError) as exc:
        raise pytest.UsageError(str(exc)) from None
