"""Docs: the README's configuration table is generated from arches/ (and libcs/), so it cannot drift.

    python3 -m mmap2conf.docs          # rewrite the table in README.md
    python3 -m mmap2conf.docs --check  # exit 1 if README.md is stale (tests/unit/test_docs.py)
"""
from __future__ import annotations

import sys

from . import libcs
from .machines import load_machines
from .model import FLAVOUR_KINDS, REPO, load_all

README = REPO / "README.md"
BEGIN, END = "<!-- configurations:begin -->", "<!-- configurations:end -->"


def configuration_table() -> str:
    rows = ["| configuration | description | runners | page sizes | mmap2 | offset unit | flavours | tags |",
            "|---|---|---|---|---|---|---|---|"]
    configs = load_all()
    libcs.attach(configs, libcs.load(configs))
    machines = load_machines(configs)
    for config in configs.values():
        runners = ", ".join([*config.runners, *(f"linux on {m.name}" for m in machines.values()
                                                if config.name in m.runs)])
        pages = ", ".join(f"{size // 1024}K" for size in config.page_sizes.value)
        number = config.mmap2_nr.value if config.has_mmap2 else "none"
        unit = config.offset_unit.value if config.has_mmap2 else "-"
        rows.append(f"| `{config.name}` | {config.description} | {runners} | {pages} | {number} | {unit} | "
                    f"{', '.join(sorted(config.flavours, key=lambda n: _order(config.flavours[n])))} | "
                    f"{', '.join(config.tags)} |")
    return "\n".join(rows)


def _order(flavour) -> tuple:
    """raw, then each libc: arches/' own flavour first, then its other releases."""
    return (FLAVOUR_KINDS.index(flavour.kind), flavour.build is not None, flavour.name)


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{configuration_table()}\n{END}{tail}"


def main() -> int:
    current = README.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            print("README.md's configuration table is stale: run python3 -m mmap2conf.docs")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
