"""The suite's pytest plugin lives in the mmap2conf package; this file only loads it."""
pytest_plugins = ["mmap2conf.plugin"]
