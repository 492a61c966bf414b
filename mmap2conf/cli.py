"""The mmap2-conformance command.

    mmap2-conformance run [--arch A] [--libc L] [--runner R] [--qemu-dir D] [--kernel IMAGE [--machine M]]
                          [--target [USER@]HOST[:PORT]]... [--ssh-option KEY=VALUE]... [--ssh-identity PATH]
                          [--ssh-known-hosts PATH] [--require-all] [--jobs N] [--reports DIR] [-- PYTEST-ARGS...]
    mmap2-conformance compare OLD.json NEW.json [--ignore-runner]
    mmap2-conformance html REPORT.json OUT.html
    mmap2-conformance screenshot REPORT.html OUT.png

`run` is the main job: the conformance cases through pytest (the plugin prints the
matrix), then reports/conformance.{json,xml,html} and a screenshot of the HTML.
Its exit status (report.exit_status): 0 conformant (every case passed, is n.a. or
a known issue), 1 nonconformant (an unexpected failure or pass), 2 interrupted,
4 usage error, 6 could not run what was asked.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .cases import load_clauses
from .htmlreport import write_html
from .knownissues import load_known_issues
from .model import REPO

BROWSER_TIMEOUT = 120
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def run(args: argparse.Namespace) -> int:
    reports = Path(args.reports)
    json_path, html_path = reports / "conformance.json", reports / "conformance.html"
    command = [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_conformance.py"),
               "-p", "no:cacheprovider", "-n", str(args.jobs),
               "--conformance-json", str(json_path), "--junitxml", str(reports / "conformance.xml")]
    for option in ("arch", "libc", "runner", "machine", "ssh_identity", "ssh_known_hosts"):
        if getattr(args, option):
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    for option in ("qemu_dir", "kernel", "target", "ssh_option"):
        for value in getattr(args, option):
            command += [f"--{option.replace('_', '-')}", value]
    if args.require_all:
        command.append("--require-all")
    status = subprocess.run(command + args.pytest_args, cwd=REPO).returncode
    if json_path.exists():
        write_html(json_path, html_path, load_clauses(), {i.id: i for i in load_known_issues()})
        print(f"reports: {json_path}, {reports / 'conformance.xml'}, {html_path}")
        if shutil.which("chromium"):
            screenshot(html_path, reports / "conformance.png")
            print(f"screenshot: {reports / 'conformance.png'}")
        else:
            print("no screenshot: chromium is not installed (make bootstrap installs it)")
    return status


def screenshot(html_path: Path, png_path: Path) -> None:
    with_profile = Path(png_path.parent / ".chromium-profile")
    try:
        subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={with_profile}", "--window-size=1600,1400",
                        f"--screenshot={png_path.resolve()}", html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=BROWSER_TIMEOUT)
    finally:
        shutil.rmtree(with_profile, ignore_errors=True)


def compare(old_path: Path, new_path: Path, ignore_runner: bool) -> list[tuple]:
    """(key, old outcome, new outcome, known issues) for every case whose outcome differs."""
    def index(path: Path) -> dict:
        records = {}
        for record in json.loads(path.read_text())["records"]:
            key = (record["config"], record["flavour"], *(() if ignore_runner else (record["system"],)),
                   record["case"])
            if key in records:
                raise SystemExit(f"{path}: several records for {'/'.join(key)}; "
                                 f"select one runner per configuration or drop --ignore-runner")
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
    run_parser.add_argument("--qemu-dir", action="append", default=[],
                            help="judge the qemu build in this directory (qemu-<arch>[-static]); repeatable")
    run_parser.add_argument("--kernel", action="append", default=[],
                            help="boot this kernel image under qemu-system; repeatable")
    run_parser.add_argument("--machine", help="the machine (machines/) --kernel images boot on")
    run_parser.add_argument("--target", action="append", default=[], metavar="[USER@]HOST[:PORT]",
                            help="a board for --runner ssh; repeatable")
    run_parser.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                            help="an ssh_config(5) option for --runner ssh; repeatable")
    run_parser.add_argument("--ssh-identity", metavar="PATH", help="the private key --runner ssh logs in with")
    run_parser.add_argument("--ssh-known-hosts", metavar="PATH", help="the known_hosts file with the boards' keys")
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
        write_html(args.report, args.output, load_clauses(), {i.id: i for i in load_known_issues()})
        return 0
    screenshot(args.report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
