#!/usr/bin/env python3
"""Benchmark the conformance matrix. It measures and prints; it asserts nothing.

    bench/bench_matrix.py [PYTEST-ARGS]     e.g. --arch i386 (applies to both runs)

One call prints the whole story (issue 14):
  1. the default matrix, timed (every runner kind of the default selection);
  2. qemu-user and native alone (the same PYTEST-ARGS plus --runner qemu-user,native);
  3. the guests of run 1: started, booted or restored (each record's optional
     guest_start field), the median restore per kernel and the median cold boot
     (run 1's boots, and a third run of each kernel's self-checks alone with
     saved guest states off, so that a warm run has a boot to compare with);
  4. helper processes started, and one bare start of `qemu-i386 helper` (median);
  5. per case in run 2: end to end (wall / cases run) against a bare start; the
     helper exchange against the harness's own time, split by the records'
     phases_ms (engine.Record); inside the helper, the median cost of a line
     that forks nothing, of a forked case with an anonymous mapping and of one
     with a file (qemu-i386, the raw helper); pytest alone: as many empty
     parametrized items as run 2 has, with the same workers; and the floor of
     the design, one pytest item and one forked case per case run;
  6. the issue's targets, each met or not met.
JOBS (environment) is the number of pytest-xdist workers of both runs (0: serial).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmap2conf import build, model, procs  # noqa: E402
from mmap2conf.protocol import HelperSession, ProtocolError  # noqa: E402
from mmap2conf.runners.qemu_user import QemuUser  # noqa: E402

BARE_RUNS = 30
HELPER_RUNS = 100
QEMU_USER_NATIVE = ["--runner", "qemu-user,native"]
COLD_BOOTS = ["-k", "self-checks and linux"]   # each kernel's guest, booted, for a few cases
COLD_ENVIRONMENT = {"MMAP2CONF_GUEST_STATES": "off"}
# The targets.
FULL_MATRIX_SECONDS = 30
WARM_SESSION_SECONDS = 1
RESTORE_SPEEDUP = 5
PER_CASE_BARE_STARTS = 0.3
# Requests whose cost, one after another in one helper process, splits an exchange.
FORKED_CASE = "a forked case, anonymous mapping"
HELPER_REQUESTS = {
    "a line that forks nothing (a protocol error)": {"op": "call", "call": "no-such-call"},
    FORKED_CASE: {"op": "call", "call": "mmap2", "len": 4096, "prot": "READ", "flags": "PRIVATE|ANONYMOUS",
                  "reads": []},
    "a forked case, a one-block file": {"op": "call", "call": "mmap2", "len": 4096, "prot": "READ",
                                       "flags": "PRIVATE", "fd": "file"},
}


def timed_run(command: list[str], timeout: float, check: bool = True, **popen) -> float:
    """The seconds from the start of ``command`` until it ends, seen the moment it ends
    (procs.wait_exit: a pidfd); with ``check``, a status other than 0 ends the bench.
    subprocess.run(timeout=) polls with sleeps that double from 0.5 ms: a 4 ms qemu start
    measured there as 7.5 ms."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, process_group=0, **popen)
    try:
        finished = procs.wait_exit(process, timeout)
        seconds = time.perf_counter() - start
    finally:
        status = procs.end(process)
    if not finished:
        sys.exit(f"bench: {' '.join(command)} took more than {timeout} s")
    if check and status != 0:
        sys.exit(f"bench: {' '.join(command)} ended with status {status}")
    return seconds


def run_matrix(args: list[str], jobs: str, environment: dict | None = None) -> tuple[float, list[dict]]:
    """Wall time (pytest start-up included) and the records of one pytest run."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "bench.json"
        command = [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider",
                   "-n", jobs, "--conformance-json", str(report), *args]
        # pytest's status is the verdicts' (a failed case is 1): the records tell them.
        wall = timed_run(command, 3600, check=False, cwd=REPO, env={**os.environ, **(environment or {})})
        if not report.exists():
            sys.exit(f"bench: {' '.join(command)} wrote no records")
        return wall, json.loads(report.read_text())["records"]


def i386_raw_command(workdir: Path) -> list[str]:
    config = model.load_all()["i386"]
    return QemuUser(config, "qemu", True, None).command(build.helper_path(config, "raw"), workdir)


def bare_start_seconds() -> float:
    """One qemu-user start of the i386 raw helper that exits at once (EOF on stdin)."""
    command = i386_raw_command(Path("/tmp"))
    return statistics.median(timed_run(command, 30, stdin=subprocess.DEVNULL) for _ in range(BARE_RUNS))


def empty_items_seconds(count: int, jobs: str) -> float:
    """The wall time of pytest (and xdist) alone over ``count`` parametrized items that do
    nothing, with the suite's own plugin options: what one pytest item per case costs
    before any case runs."""
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "pytest.ini").write_text("[pytest]\n")
        Path(scratch, "test_empty.py").write_text(
            f"import pytest\n\n@pytest.mark.parametrize('i', range({count}))\ndef test_item(i):\n    pass\n")
        command = [sys.executable, "-m", "pytest", "test_empty.py", "-q", "-p", "no:cacheprovider",
                   "-p", "no:logging", "-n", jobs]
        return timed_run(command, 600, cwd=scratch)


def helper_costs() -> dict[str, float]:
    """The median exchange of each HELPER_REQUESTS kind, in seconds, in one helper process."""
    session = HelperSession(i386_raw_command)
    costs = {}
    try:
        for name, request in HELPER_REQUESTS.items():
            times = []
            for index in range(HELPER_RUNS):
                start = time.perf_counter()
                try:
                    session.request({**request, "id": str(index)})
                except ProtocolError as exc:   # the first kind's answer; any other is a broken helper
                    if exc.kind != "rejected":
                        raise
                times.append(time.perf_counter() - start)
            costs[name] = statistics.median(times)
    finally:
        session.close()
    return costs


def ran(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("helper_process")]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "not met"


def describe_run(title: str, wall: float, records: list[dict], jobs: str) -> None:
    groups = {(r["config"], r["flavour"], r["system"]) for r in records}
    processes = {r["helper_process"] for r in ran(records)}
    print(f"{title}: {len(records)} cases ({len(ran(records))} ran), {len(groups)} configuration x flavour x "
          f"system; {wall:.2f} s wall with {jobs} pytest-xdist workers (0: serial), pytest start-up included; "
          f"{len(processes)} helper processes started")


def guest_starts(records: list[dict]) -> dict[str, list[dict]]:
    """Each guest started, once, by kernel (the system's name). The helpers one guest serves
    have helper_process values of their own ("pid:label:launch"), but the same worker's
    process id, kernel and launch (the number of the guest's process in that worker)."""
    seen, by_kernel = set(), defaultdict(list)
    for record in records:
        start, process = record.get("guest_start"), record.get("helper_process")
        if not (start and process):
            continue
        key = (process.split(":", 1)[0], record["system"], process.rsplit(":", 1)[1])
        if key not in seen:
            seen.add(key)
            by_kernel[record["system"]].append(start)
    return by_kernel


def describe_guests(records: list[dict], cold: list[dict]) -> list[tuple[str, bool | None, str]]:
    """Prints the guests of ``records`` and the boots of ``cold``; returns the warm-session
    target per kernel, with its numbers."""
    kernels = guest_starts(records)
    cold_boots = guest_starts(cold)
    kernel_records = [r for r in records if r["runner"] == "linux" and r.get("helper_process")]
    if not kernels:
        print("guests: " + ("no guest_start in records" if kernel_records else "no kernel guest ran"))
        return []
    targets = []
    total = sum(len(starts) for starts in kernels.values())
    booted = sum(1 for starts in kernels.values() for s in starts if s["how"] == "booted")
    print(f"guests started: {total} ({booted} booted, {total - booted} restored)")
    for kernel, starts in sorted(kernels.items()):
        boots = [s["seconds"] for s in starts + cold_boots.get(kernel, []) if s["how"] == "booted"]
        restores = [s["seconds"] for s in starts if s["how"] == "restored"]
        fallbacks = sorted({s["fallback"] for s in starts if s.get("fallback")})
        boot = statistics.median(boots) if boots else None
        restore = statistics.median(restores) if restores else None
        line = f"  {kernel}: {len(boots)} booted, the cold-boot run's included" + (
            f" (median {boot:.2f} s)" if boots else "")
        line += f", {len(restores)} restored" + (f" (median {restore:.2f} s)" if restores else "")
        print(line + (f"; fell back to a boot: {'; '.join(fallbacks)}" if fallbacks else ""))
        met = None if restore is None or boot is None else (
            restore < WARM_SESSION_SECONDS and boot >= RESTORE_SPEEDUP * restore)
        numbers = "" if met is None else f"{restore:.2f} s restored, {boot:.2f} s booted: {boot / restore:.1f}x"
        targets.append((kernel, met, numbers))
    return targets


def describe_per_case(wall: float, records: list[dict], bare: float, jobs: str) -> float:
    """Prints the per-case breakdown of a run; returns the end-to-end cost in bare starts."""
    cases = ran(records)
    if not cases:
        print("per case: no case ran")
        return float("nan")
    per_case = wall / len(cases)
    print(f"per case, end to end (wall / cases run): {ms(per_case)} = {per_case / bare:.2f} x a bare qemu start")

    def phase(name: str) -> list[float]:
        return [r.get("phases_ms", {}).get(name, 0.0) / 1000 for r in cases]

    exchange = [r["exchange_ms"] / 1000 for r in cases]
    sessions = len({r["helper_process"] for r in cases})
    rows = [("helper exchange (request written to answer read)", exchange),
            ("harness: Engine.run but the exchange (record, request, oracle, known issues)", phase("engine")),
            ("harness: between cases (pytest's hooks for an item, the record's JSON)", phase("between")),
            (f"harness: opening {sessions} helper sessions (build lookup, start, probe)", phase("session"))]
    summed = 0.0
    print(f"  {'mean per case':>14} {'median':>9}  (medians over the cases; a session's opening counts once)")
    for title, values in rows:
        mean = sum(values) / len(cases)
        summed += mean
        print(f"  {ms(mean):>14} {ms(statistics.median(values)):>9}  {title}")
    workers = max(1, int(jobs))
    fixed = wall - summed * len(cases) / workers
    print(f"  {ms(fixed / len(cases)):>14} {'':>9}  the rest: pytest start-up and collection, reports, closing "
          f"({fixed:.2f} s of the wall{'' if workers == 1 else f'; the phases summed over {workers} workers'})")
    return per_case / bare


def main() -> None:
    jobs = os.environ.get("JOBS", "0")
    args = sys.argv[1:]
    full_wall, full = run_matrix(args, jobs)
    fast_wall, fast = run_matrix([*args, *QEMU_USER_NATIVE], jobs)
    kernels = any(r["runner"] == "linux" and r.get("helper_process") for r in full)
    cold = run_matrix([*args, *COLD_BOOTS], jobs, COLD_ENVIRONMENT)[1] if kernels else []
    bare = bare_start_seconds()
    inside = helper_costs()
    empty = empty_items_seconds(len(fast), jobs)
    narrowed = f"; narrowed by {' '.join(args)}: not the full matrix" if args else ""

    describe_run(f"default matrix{f' ({narrowed[2:]})' if args else ''}", full_wall, full, jobs)
    describe_run("qemu-user + native", fast_wall, fast, jobs)
    warm = describe_guests(full, cold)
    print(f"bare qemu-i386 helper start: {ms(bare)} (median of {BARE_RUNS})")
    print("qemu-user + native:")
    bare_starts = describe_per_case(fast_wall, fast, bare, jobs)
    print(f"inside the i386 raw helper under qemu-user (median of {HELPER_RUNS} exchanges, one process):")
    for name, seconds in inside.items():
        print(f"  {ms(seconds):>10}  {name}")
    cases_run = len(ran(fast)) or 1
    print(f"pytest alone: {len(fast)} empty items in {empty:.2f} s wall, with the same workers: "
          f"{ms(empty / cases_run)} a case run = {empty / cases_run / bare:.2f} bare starts, before any case's "
          f"own cost (a forked case above)")
    # Every case is one pytest item and one forked child of its helper (its isolation); the
    # workers fork side by side.
    floor = empty / cases_run + inside[FORKED_CASE] / max(1, int(jobs))
    print(f"floor of this design: one pytest item per case run and one forked case, the forks shared among "
          f"the workers: {ms(floor)} = {floor / bare:.2f} bare starts, before opening sessions, judging or "
          f"reporting")

    print("targets (issue 14):")
    print(f"  full default matrix under {FULL_MATRIX_SECONDS} s: {verdict(full_wall < FULL_MATRIX_SECONDS)} "
          f"({full_wall:.2f} s{narrowed})")
    if not warm:
        print(f"  warm kernel session under {WARM_SESSION_SECONDS} s and {RESTORE_SPEEDUP}x faster than a boot: "
              "not measured (no guest_start in records)")
    for kernel, met, numbers in warm:
        print(f"  warm {kernel} session under {WARM_SESSION_SECONDS} s and {RESTORE_SPEEDUP}x faster than its boot: "
              f"{verdict(met)} ({numbers or 'needs a boot and a restore in this run'})")
    print(f"  qemu-user + native per case at most {PER_CASE_BARE_STARTS} bare starts: "
          f"{verdict(bare_starts <= PER_CASE_BARE_STARTS)} ({bare_starts:.2f}; the floor {floor / bare:.2f})")


if __name__ == "__main__":
    main()
