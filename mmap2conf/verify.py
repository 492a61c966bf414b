"""Verify: a helper binary must be the ELF its configuration describes.

A helper built for the wrong ABI would run under the wrong emulator, or not at
all, and every answer it gave would be about something else. pyelftools reads
the header and program headers; each mismatch names the file and the field.
"""
from __future__ import annotations

from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .model import Config

_ENDIAN = {True: "little", False: "big"}


class VerifyError(Exception):
    pass


def elf_facts(path: Path) -> dict:
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            return {
                "machine": elf["e_machine"],
                "class": elf.elfclass,
                "endianness": _ENDIAN[elf.little_endian],
                "type": elf["e_type"],
                "entry": elf["e_entry"],
                "interp": any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments()),
                "dynamic": any(seg["p_type"] == "PT_DYNAMIC" for seg in elf.iter_segments()),
            }
    except (ELFError, OSError) as exc:
        raise VerifyError(f"{path}: not a readable ELF file: {exc}") from None


def verify_helper(path: Path, config: Config) -> dict:
    facts = elf_facts(path)
    wanted = {"machine": config.elf_machine, "class": config.elf_class, "endianness": config.endianness}
    problems = [f"[elf] {key} is {wanted[key]!r} in {config.path.name} but the binary has {facts[key]!r}"
                for key in wanted if facts[key] != wanted[key]]
    if facts["type"] != "ET_EXEC":
        problems.append(f"e_type is {facts['type']}, a static helper must be ET_EXEC")
    if facts["interp"] or facts["dynamic"]:
        problems.append("it is dynamically linked (PT_INTERP/PT_DYNAMIC); helpers must be static")
    if facts["entry"] == 0:
        problems.append("its entry point is 0")
    if problems:
        raise VerifyError(f"{path} does not match {config.path}: " + "; ".join(problems))
    return facts
