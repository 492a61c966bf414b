"""Inside the image: python3 -m mmap2conf.runners exec CONFIG FLAVOUR [--trace]
starts the prebuilt helper under the image's qemu-user on the container's scratch tmpfs."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import libcs
from ..model import load_all
from . import clean_environment
from .docker import SCRATCH_IN_CONTAINER
from .qemu_user import QemuUser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mmap2conf.runners")
    parser.add_argument("action", choices=["exec"])
    parser.add_argument("config")
    parser.add_argument("flavour")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    configs = load_all()
    libcs.attach(configs, libcs.load(configs))   # the releases of libcs/, prebuilt in the image too
    config = configs[args.config]
    runner = QemuUser(config, "qemu-user", True, None)
    command = runner.command(runner.helper(args.flavour), Path(SCRATCH_IN_CONTAINER), args.trace)
    os.execve(command[0], command, clean_environment())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
