#!/usr/bin/env python3
"""Benchmark the full conformance matrix. It measures and prints; it asserts nothing.

    bench/bench_matrix.py [PYTEST-ARGS]     e.g. --runner qemu-user,native

Prints the wall time of a full run, the number of helper processes it started,
the number of cases, and the ratio of the cost of one case to one bare start of
`qemu-i386-static helper` measured on this machine in the same run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmap2conf import build, model  # noqa: E402
from mmap2conf.runners.qemu_user import QemuUser  # noqa: E402

BARE_RUNS = 30


def bare_start_seconds() -> float:
    """One qemu-user start of the i386 raw helper that exits at once (EOF on stdin)."""
    config = model.load_all()["i386"]
    command = QemuUser(config, "qemu", True, None).command(build.helper_path(config, "raw"), Path("/tmp"))
    times = []
    for _ in range(BARE_RUNS):
        start = time.perf_counter()
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=30)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    jobs = os.environ.get("JOBS", "0")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "bench.json"
        command = [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider",
                   "-n", jobs, "--conformance-json", str(report), *sys.argv[1:]]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, timeout=3600)
        wall = time.perf_counter() - start
        records = json.loads(report.read_text())["records"]
    ran = [r for r in records if r.get("helper_process")]
    processes = {r["helper_process"] for r in ran}
    columns = {(r["config"], r["flavour"], r["system"]) for r in records}
    bare = bare_start_seconds()
    per_case = wall / len(ran)
    exchange = statistics.mean(r["exchange_ms"] for r in ran) / 1000
    print(f"full matrix: {len(records)} cases ({len(ran)} ran), {len(columns)} configuration x flavour x runner")
    print(f"wall time: {wall:.2f} s with {jobs} pytest-xdist workers (0: serial), pytest start-up included")
    print(f"helper processes started: {len(processes)} (target: fewer than {2 * len(columns)})")
    print(f"bare qemu-i386 helper start: {bare * 1000:.2f} ms (median of {BARE_RUNS})")
    print(f"per-case cost, helper exchange only: {exchange * 1000:.2f} ms = {exchange / bare:.2f} x a bare qemu start")
    print(f"per-case cost, end to end (wall / cases): {per_case * 1000:.2f} ms = {per_case / bare:.2f} x a bare qemu start")


if __name__ == "__main__":
    main()
