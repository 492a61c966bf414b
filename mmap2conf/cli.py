"""The mmap2-conformance command.

    mmap2-conformance run [--arch A] [--libc L] [--runner R] [--qemu-dir D] [--require-all]
                          [--jobs N] [--reports DIR] [-- PYTEST-ARGS...]
    mmap2-conformance compare OLD.json NEW.json [--ignore-runner]
    mmap2-conformance html REPORT.json OUT.html
    mmap2-conformance screenshot REPORT.html OUT.png

`run` is the main job: the conformance cases through pytest (the plugin prints the
matrix), then reports/conformance.{json,xml,html} and a screenshot of the HTML.
Its exit status is pytest's: 0 only when every case passed, is n.a., or is a known
issue; an unexpected failure or an unexpected pass is non-zero. The reports are
written in a directory of the run's own and published when it ends: the report
files of an earlier run that this run did not write are removed, never left to
look current. An interrupt (Ctrl-C, SIGTERM, SIGHUP) is passed to pytest once, as
SIGINT, and the run waits for pytest's own clean-up; a second one kills it.

`compare`, `html` and `screenshot` exit with EXIT_NO_INPUT when a file cannot be
read, EXIT_BAD_REPORT when it is not a JSON report of this schema, EXIT_BAD_DATA
when this checkout's data files are malformed and EXIT_CANNOT_WRITE when the output
cannot be written, each with a one-line message.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import procs
from .cases import CaseError, load_clauses
from .htmlreport import write_html
from .knownissues import KnownIssueError, load_known_issues
from .model import REPO
from .report import ReportError, load_report

# sysexits.h: distinct from pytest's own statuses (0 to 5).
EXIT_BAD_REPORT = 65     # EX_DATAERR: not a JSON report of this schema
EXIT_NO_INPUT = 66       # EX_NOINPUT: a file that cannot be read
EXIT_CANNOT_WRITE = 73   # EX_CANTCREAT: an output that cannot be written
EXIT_BAD_DATA = 78       # EX_CONFIG: this checkout's data files are malformed
REPORT_FILES = ("conformance.json", "conformance.xml", "conformance.html", "conformance.png")
STAGING = re.compile(rf"\.run-({procs.TAG})$")

BROWSER_TIMEOUT = 120
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


class Failure(Exception):
    """A command's clear end: a one-line message and its exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def run(args: argparse.Namespace) -> int:
    reports = Path(args.reports)
    staging = _staging(reports)
    json_path, html_path = staging / "conformance.json", staging / "conformance.html"
    command = [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_conformance.py"),
               "-p", "no:cacheprovider", "-n", str(args.jobs),
               "--conformance-json", str(json_path), "--junitxml", str(staging / "conformance.xml")]
    for option in ("arch", "libc", "runner", "qemu_dir"):
        if getattr(args, option):
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if args.require_all:
        command.append("--require-all")
    try:
        status = _run_pytest(command + args.pytest_args)
        if json_path.exists():
            write_html(json_path, html_path, load_clauses(), {i.id: i for i in load_known_issues()})
            if shutil.which("chromium"):
                try:
                    screenshot(html_path, staging / "conformance.png")
                except Failure as exc:
                    print(f"no screenshot: {exc}")
            else:
                print("no screenshot: chromium is not installed (make bootstrap installs it)")
        published = _publish(staging, reports)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if published:
        print(f"reports: {', '.join(str(reports / name) for name in published)}")
    else:
        print(f"no reports: the run wrote none (earlier reports in {reports} were removed)")
    return status


def _staging(reports: Path) -> Path:
    """This run's own directory for its reports, in ``reports``; those of runs that are
    gone are removed."""
    try:
        reports.mkdir(parents=True, exist_ok=True)
        for entry in reports.iterdir():
            match = STAGING.fullmatch(entry.name)
            if match and not procs.owner_alive(match.group(1)):
                shutil.rmtree(entry, ignore_errors=True)
        staging = reports / f".run-{procs.owner()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise Failure(f"--reports {reports}: cannot write there: {exc.strerror or exc}", EXIT_CANNOT_WRITE) from None
    return staging


def _publish(staging: Path, reports: Path) -> list[str]:
    """Move this run's reports into place; remove the earlier run's that it did not write."""
    published = []
    for name in REPORT_FILES:
        if (staging / name).exists():
            os.replace(staging / name, reports / name)
            published.append(name)
        else:
            (reports / name).unlink(missing_ok=True)
    return published


def _run_pytest(command: list[str]) -> int:
    """Run pytest in a process group of its own, so that a terminal's Ctrl-C reaches it
    once, from here: the first SIGINT, SIGTERM or SIGHUP is passed on as SIGINT (pytest
    then tears its sessions down and writes its reports); a second kills its group."""
    process = procs.popen(command, cwd=REPO)
    interrupts = []

    def interrupt(signum, frame):
        interrupts.append(signum)
        try:
            if len(interrupts) == 1:
                os.killpg(process.pid, signal.SIGINT)
            else:
                os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in caught}
    try:
        procs.wait_exit(process, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        status = procs.end(process)
    if interrupts:
        print(f"interrupted by {signal.Signals(interrupts[0]).name}", file=sys.stderr)
    return status


def screenshot(html_path: Path, png_path: Path) -> None:
    """A PNG of an HTML report by headless Chromium, with a profile directory of its own
    (two runs sharing --reports never share one), removed afterwards."""
    if not html_path.is_file():
        raise Failure(f"{html_path}: no such file", EXIT_NO_INPUT)
    if shutil.which("chromium") is None:
        raise Failure("chromium is not installed (make bootstrap installs it)", EXIT_NO_INPUT)
    profile = Path(tempfile.mkdtemp(prefix=f"mmap2conf-chromium-{procs.owner()}-"))
    try:
        result = procs.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1400",
                            f"--screenshot={png_path.resolve()}", html_path.resolve().as_uri()],
                           timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure(f"chromium made no screenshot of {html_path} within {BROWSER_TIMEOUT} s",
                      EXIT_CANNOT_WRITE) from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if result.returncode != 0 or not png_path.exists():
        raise Failure(f"chromium made no screenshot of {html_path} (status {result.returncode}): "
                      f"{result.stderr.strip().splitlines()[-1:] or ''}", EXIT_CANNOT_WRITE)


def compare(old_path: Path, new_path: Path, ignore_runner: bool) -> list[tuple]:
    """(key, old outcome, new outcome, known issues) for every case whose outcome differs."""
    def index(path: Path) -> dict:
        records = {}
        for record in load_report(path)["records"]:
            key = (record["config"], record["flavour"], *(() if ignore_runner else (record["runner"],)),
                   record["case"])
            if key in records:
                raise Failure(f"{path}: several records for {'/'.join(key)}; "
                              f"select one runner per configuration or drop --ignore-runner", 2)
            records[key] = record
        return records

    old, new = index(old_path), index(new_path)
    rows = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        outcome_before = before["outcome"] if before else "absent"
        outcome_after = after["outcome"] if after else "absent"
        if outcome_before != outcome_after:
            issues = sorted({r["known_issue"] for r in (before, after) if r and r.get("known_issue")})
            rows.append(("/".join(key), outcome_before, outcome_after, ",".join(issues)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmap2-conformance", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the conformance cases and write the reports")
    run_parser.add_argument("--arch", help="configurations or tags, comma-separated (default: all)")
    run_parser.add_argument("--libc", help="flavours: raw, glibc, musl (default: all)")
    run_parser.add_argument("--runner", help="runner kinds, comma-separated (default: all)")
    run_parser.add_argument("--qemu-dir", help="take qemu-<arch>-static from this directory")
    run_parser.add_argument("--require-all", action="store_true", help="fail instead of skipping what cannot run")
    run_parser.add_argument("--jobs", type=int, default=0, help="pytest-xdist workers (default 0: serial)")
    run_parser.add_argument("--reports", default=str(REPO / "reports"), help="report directory (default: reports/)")
    run_parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    compare_parser = commands.add_parser("compare", help="cases whose outcome differs between two JSON reports")
    compare_parser.add_argument("old", type=Path)
    compare_parser.add_argument("new", type=Path)
    compare_parser.add_argument("--ignore-runner", action="store_true",
                                help="match records across runners (e.g. qemu-user against a real kernel)")
    html_parser = commands.add_parser("html", help="the HTML report of a JSON report")
    html_parser.add_argument("report", type=Path)
    html_parser.add_argument("output", type=Path)
    shot_parser = commands.add_parser("screenshot", help="a PNG of an HTML report, by headless Chromium")
    shot_parser.add_argument("report", type=Path)
    shot_parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except Failure as exc:
        print(f"mmap2-conformance {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except ReportError as exc:
        print(f"mmap2-conformance {args.command}: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT if exc.missing else EXIT_BAD_REPORT
    except (CaseError, KnownIssueError) as exc:
        print(f"mmap2-conformance {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        return run(args)
    if args.command == "compare":
        rows = compare(args.old, args.new, args.ignore_runner)
        width = max([len(r[0]) for r in rows] + [4])
        print(f"{'case'.ljust(width)}  {args.old.name:>12}  {args.new.name:>12}  known issues")
        for key, before, after, issues in rows:
            print(f"{key.ljust(width)}  {before:>12}  {after:>12}  {issues}")
        print(f"{len(rows)} case(s) differ")
        return 0
    if args.command == "html":
        try:
            write_html(args.report, args.output, load_clauses(), {i.id: i for i in load_known_issues()})
        except OSError as exc:
            raise Failure(f"{args.output}: cannot be written: {exc.strerror or exc}", EXIT_CANNOT_WRITE) from None
        return 0
    screenshot(args.report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
