"""Build recipes: a flavour's compiler from arches/, recipe words filled in, zig's
cache under the build cache, and the flags in the order that makes them work."""
import sys
from pathlib import Path

import pytest

from mmap2conf import build, model

CONFIGS = model.load_all()


def test_a_zig_recipe_runs_the_pinned_package_with_this_interpreter():
    command = build.compile_command(CONFIGS["i386"], "musl", Path("OUT"))
    assert command[:4] == [sys.executable, "-m", "ziglang", "cc"]
    assert "-DHELPER_LIBC" in command and '-DHELPER_FLAVOUR="musl"' in command
    source = command.index(str(build.HELPER_SOURCE))
    assert command[source + 1:] == ["-target", "x86-linux-musl"]


def test_the_flavours_own_flags_follow_the_source_so_libraries_link_after_it():
    command = build.compile_command(CONFIGS["mips"], "raw", Path("OUT"))
    assert command[0] == "mips-linux-gnu-gcc"
    source = command.index(str(build.HELPER_SOURCE))
    assert command[source + 1:] == ["-mno-abicalls", "-G0", "-fno-tree-loop-distribute-patterns", "-lgcc"]
    assert "-DHELPER_FREESTANDING" in command[:source] and '-DHELPER_FLAVOUR="raw"' in command[:source]


def test_zig_lib_is_the_packages_own_header_tree():
    command = build.compile_command(CONFIGS["hexagon"], "raw", Path("OUT"))
    includes = [command[i + 1] for i, word in enumerate(command) if word == "-isystem"]
    assert includes and all("{" not in path for path in includes)
    assert all((Path(path) / "asm" / "unistd.h").exists() or (Path(path) / "linux").is_dir()
               for path in includes)


def test_zigs_cache_lives_under_the_build_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "CACHE_DIR", tmp_path / "cache")
    env = build.build_environment()
    assert env["ZIG_GLOBAL_CACHE_DIR"] == str(tmp_path / "cache" / "zig")
    assert env["ZIG_LOCAL_CACHE_DIR"] == str(tmp_path / "cache" / "zig")


def test_a_missing_ziglang_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(build.BuildError, match="ziglang package is not installed.*make bootstrap"):
        build.compile_command(CONFIGS["riscv32"], "raw", Path("OUT"))


def test_a_compiler_that_does_not_answer_is_a_build_error():
    with pytest.raises(build.BuildError, match="--version failed"):
        build.compiler_version("{python} -m mmap2conf_no_such_module cc")
    with pytest.raises(build.BuildError, match="not found on PATH"):
        build.compiler_version("no-such-cross-gcc")


def test_every_recipe_word_has_a_value():
    assert set(build.RECIPE_VALUES) == set(model.RECIPE_WORDS)
    assert build.compiler("{python} -m ziglang cc")[0] == sys.executable
