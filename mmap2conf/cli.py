"""The mmap2-conformance command.

    mmap2-conformance run [--arch A] [--libc L] [--libc-prefix NAME=CONFIG:DIR] [--runner R] [--qemu-dir D]
                          [--kernel IMAGE [--machine M]] [--target [USER@]HOST[:PORT]]... [--ssh-option KEY=VALUE]...
                          [--ssh-identity PATH] [--ssh-known-hosts PATH] [--require-all] [--jobs N] [--reports DIR]
                          [--ktap PATH] [-- PYTEST-ARGS...]
    mmap2-conformance compare OLD.json NEW.json [--ignore-runner] [--flavour OLD=NEW]...
    mmap2-conformance html REPORT.json OUT.html
    mmap2-conformance screenshot REPORT.html OUT.png
    mmap2-conformance ktap REPORT.json [-o PATH]                          (ktap.py)
    mmap2-conformance kcidb REPORT.json [--origin NAME] [--commit SHA] [-o PATH]   (kcidb.py)
    mmap2-conformance lava REPORT.json [-o PATH]                          (lava.py)

`run` is the main job: the conformance cases through pytest (the plugin prints the
matrix), then reports/conformance.{json,xml,html} and a screenshot of the HTML.
Its exit status (report.exit_status): 0 conformant (every case passed, is n.a. or
a known issue), 1 nonconformant (an unexpected failure or pass), 2 interrupted,
4 usage error, 6 could not run what was asked. `ktap`, `kcidb` and `lava` convert a
JSON report into what kernel CI systems read; without -o they print.

The reports are written in a directory of the run's own and published when it
ends: the report files of an earlier run that this run did not write are removed,
never left to look current. An interrupt (Ctrl-C, SIGTERM, SIGHUP) is passed to
pytest once, as SIGINT, and the run waits for pytest's own clean-up (its records
so far, status "interrupted"); a second one kills it.

The commands that read a report (`compare`, `html`, `ktap`, `kcidb`, `lava`) and
`screenshot` end with one line on stderr and a status of their own when they
cannot do their job: EXIT_NO_INPUT a file that cannot be read, EXIT_BAD_REPORT not
a JSON report of this schema, EXIT_BAD_DATA this checkout's data files are
malformed, EXIT_CANNOT_WRITE an output that cannot be written.
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from . import procs
from .cases import CaseError, load_clauses
from .htmlreport import write_html
from .knownissues import KnownIssueError, load_known_issues
from .ktap import write_ktap
from .model import REPO
from .report import ReportError, load_report

# sysexits.h: distinct from the run's own statuses (report.exit_status: 0 to 6).
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
    for option in ("arch", "libc", "runner", "machine", "ssh_identity", "ssh_known_hosts"):
        if getattr(args, option):
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    for option in ("qemu_dir", "kernel", "target", "ssh_option", "libc_prefix"):
        for value in getattr(args, option):
            command += [f"--{option.replace('_', '-')}", value]
    if args.require_all:
        command.append("--require-all")
    try:
        status = _run_pytest(command + args.pytest_args)
        if json_path.exists():
            write_html(json_path, html_path, load_clauses(), {i.id: i for i in load_known_issues()})
            if args.ktap:
                write_ktap(json_path, Path(args.ktap), known_issue_titles())
                print(f"KTAP: {args.ktap}")
            if screenshot_tools():
                try:
                    screenshot(html_path, staging / "conformance.png")
                except Failure as exc:
                    print(f"no screenshot: {exc}")
            else:
                print("no screenshot: it needs chromium and chromium-driver (make bootstrap installs them)")
        published = _publish(staging, reports)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if published:
        print(f"reports in {reports}: {', '.join(published)}")
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
        raise Failure(f"--reports {reports}: cannot write there: {exc.strerror or exc}",
                      EXIT_CANNOT_WRITE) from None
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
    then tears its sessions down and writes its reports); a second kills its group.
    A signal this run started with ignored (nohup; a script's background job) stays
    ignored. The handlers are in place before pytest starts: exec resets a handled
    signal to its default but keeps an ignored one ignored, and pytest must take SIGINT."""
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    ignored = {signum for signum in caught if signal.getsignal(signum) == signal.SIG_IGN}
    interrupts, process, passed_on = [], None, 0

    def pass_on():
        nonlocal passed_on
        while process is not None and passed_on < len(interrupts):
            passed_on += 1
            try:
                os.killpg(process.pid, signal.SIGINT if passed_on == 1 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    def interrupt(signum, frame):
        if signum not in ignored:
            interrupts.append(signum)
            pass_on()

    previous = {signum: signal.signal(signum, interrupt) for signum in caught}
    try:
        process = procs.popen(command, cwd=REPO)
        try:
            pass_on()           # an interrupt that came while it was starting
            procs.wait_exit(process, None)
        finally:
            status = procs.end(process)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if interrupts:
        print(f"interrupted by {signal.Signals(interrupts[0]).name}", file=sys.stderr)
    return status


def known_issue_titles() -> dict[str, str]:
    return {issue.id: issue.title for issue in load_known_issues()}


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)


# The region of the screenshot: from the matrix's heading to the end of the verdicts,
# as wide as the matrix (its cells do not wrap), measured at the width it is shot at.
SHOT_REGION = """
const top = document.getElementById('matrix-heading').getBoundingClientRect().top + window.scrollY;
const matrix = document.getElementById('matrix').getBoundingClientRect();
const end = document.getElementById('verdicts').getBoundingClientRect();
return [Math.ceil(matrix.right + matrix.left), Math.floor(top), Math.ceil(end.bottom + window.scrollY + 12)];
"""


def screenshot_tools() -> tuple[str, str] | None:
    """chromium and its WebDriver (Debian's chromium and chromium-driver), or None."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def screenshot(html_path: Path, png_path: Path) -> None:
    """A PNG of the whole matrix and the verdicts of an HTML report, however many columns:
    headless Chromium through WebDriver, the viewport sized to the matrix, the region
    captured beyond the viewport (DevTools Page.captureScreenshot)."""
    from selenium import webdriver   # late: only the screenshot needs it
    from selenium.common.exceptions import WebDriverException

    tools = screenshot_tools()
    if tools is None:
        raise Failure("a screenshot needs chromium and chromedriver (make bootstrap installs them)", EXIT_NO_INPUT)
    if not html_path.is_file():
        raise Failure(f"{html_path}: no such file", EXIT_NO_INPUT)
    # A profile of its own, named after its owner (the sweep removes it if the run dies):
    # two runs sharing --reports never share one.
    profile = Path(tempfile.mkdtemp(prefix=f"mmap2conf-chromium-{procs.owner()}-"))
    options = webdriver.ChromeOptions()
    options.binary_location = tools[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile.resolve()}")
    try:
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=tools[1]))
        try:
            browser.set_page_load_timeout(BROWSER_TIMEOUT)
            browser.get(html_path.resolve().as_uri())
            width, _, _ = browser.execute_script(SHOT_REGION)
            # At the matrix's width the text around it reflows: measure the height there.
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": max(width, 800), "height": 800, "deviceScaleFactor": 1, "mobile": False})
            width, top, bottom = browser.execute_script(SHOT_REGION)
            shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": top, "width": max(width, 800), "height": bottom - top, "scale": 1}})
        finally:
            browser.quit()
        png_path.parent.mkdir(parents=True, exist_ok=True)
        png_path.write_bytes(base64.b64decode(shot["data"]))
    except WebDriverException as exc:
        raise Failure(f"chromium made no screenshot of {html_path}: {str(exc.msg or exc).strip().splitlines()[0]}",
                      EXIT_CANNOT_WRITE) from None
    except OSError as exc:
        raise Failure(f"{png_path}: cannot be written: {exc.strerror or exc}", EXIT_CANNOT_WRITE) from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def compare(old_path: Path, new_path: Path, ignore_runner: bool,
            flavours: list[tuple[str, str]] | None = None) -> list[tuple]:
    """(key, old outcome, new outcome, known issues) for every case whose outcome differs.

    ``flavours`` ([(OLD, NEW)], --flavour OLD=NEW) matches the records of flavour OLD in
    the old report with those of NEW in the new one (which may be the same file), and
    leaves the other flavours out (and the configurations without both): two releases of
    a libc, or a release and one's own build."""
    def index(path: Path, side: int) -> dict:
        records = {}
        for record in load_report(path)["records"]:
            labels = ([f"{o}={n}" for o, n in flavours if (o, n)[side] == record["flavour"]] if flavours
                      else [record["flavour"]])
            for label in labels:
                key = (record["config"], label, *(() if ignore_runner else (record["system"],)), record["case"])
                if key in records:
                    raise Failure(f"{path}: several records for {'/'.join(key)}; "
                                  f"select one runner per configuration or drop --ignore-runner", 2)
                records[key] = record
        return records

    old, new = index(old_path, 0), index(new_path, 1)
    if flavours:   # a configuration that has only one of the two flavours compares nothing
        both = {key[:2] for key in old} & {key[:2] for key in new}
        old = {key: r for key, r in old.items() if key[:2] in both}
        new = {key: r for key, r in new.items() if key[:2] in both}
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
    run_parser.add_argument("--libc", help="flavours: raw, glibc, musl, those of libcs/ and of --libc-prefix "
                                           "(default: all)")
    run_parser.add_argument("--libc-prefix", action="append", default=[], metavar="NAME=CONFIG:DIR",
                            help="add flavour NAME to CONFIG, built against the glibc or musl build in DIR; "
                                 "repeatable")
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
    run_parser.add_argument("--ktap", help="also write the KTAP of the run's JSON report to this path")
    run_parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    compare_parser = commands.add_parser("compare", help="cases whose outcome differs between two JSON reports")
    compare_parser.add_argument("old", type=Path)
    compare_parser.add_argument("new", type=Path)
    compare_parser.add_argument("--ignore-runner", action="store_true",
                                help="match records across runners (e.g. qemu-user against a real kernel)")
    compare_parser.add_argument("--flavour", action="append", default=[], metavar="OLD=NEW",
                                help="match flavour OLD of the old report with NEW of the new one (the same "
                                     "file may be given twice: glibc=glibc-2.41); repeatable")
    html_parser = commands.add_parser("html", help="the HTML report of a JSON report")
    html_parser.add_argument("report", type=Path)
    html_parser.add_argument("output", type=Path)
    shot_parser = commands.add_parser("screenshot", help="a PNG of an HTML report, by headless Chromium")
    shot_parser.add_argument("report", type=Path)
    shot_parser.add_argument("output", type=Path)
    ktap_parser = commands.add_parser("ktap", help="KTAP version 1 of a JSON report (one subtest per column)")
    ktap_parser.add_argument("report", type=Path)
    ktap_parser.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    kcidb_parser = commands.add_parser("kcidb", help="KCIDB I/O JSON of a JSON report (validated by kcidb-io)")
    kcidb_parser.add_argument("report", type=Path)
    kcidb_parser.add_argument("--origin", default="mmap2_conformance",
                              help="the submitting CI system, [a-z0-9_]+ (default: mmap2_conformance)")
    kcidb_parser.add_argument("--commit", help="the suite's commit, when the report does not record it "
                                                "(default: this checkout's HEAD)")
    kcidb_parser.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    lava_parser = commands.add_parser("lava", help="one `lava-test-case NAME --result R` line per case")
    lava_parser.add_argument("report", type=Path)
    lava_parser.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    try:
        return _command(args, parser)
    except Failure as exc:
        print(f"mmap2-conformance {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except ReportError as exc:
        print(f"mmap2-conformance {args.command}: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT if exc.missing else EXIT_BAD_REPORT
    except (CaseError, KnownIssueError) as exc:
        print(f"mmap2-conformance {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA


def _command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    if args.command == "run":
        return run(args)
    if args.command == "compare":
        mapping = []
        for pair in args.flavour:
            old_flavour, equals, new_flavour = pair.partition("=")
            if not equals or not old_flavour or not new_flavour:
                parser.error(f"--flavour {pair}: expected OLD=NEW, e.g. glibc=glibc-2.41")
            mapping.append((old_flavour, new_flavour))
        rows = compare(args.old, args.new, args.ignore_runner, mapping or None)
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
    if args.command in ("ktap", "kcidb", "lava"):
        load_report(args.report)      # a file that is not a report of this schema: one line
    if args.command == "ktap":
        _emit(write_ktap(args.report, args.output, known_issue_titles()), args.output)
        return 0
    if args.command == "kcidb":
        from .kcidb import write_kcidb   # late: kcidb-io and jsonschema are only needed here
        try:
            text = write_kcidb(args.report, args.output, args.origin, args.commit,
                               {i.id: i for i in load_known_issues()})
        except ValueError as exc:
            parser.error(str(exc))
        _emit(text, args.output)
        return 0
    if args.command == "lava":
        from .lava import write_lava
        _emit(write_lava(args.report, args.output), args.output)
        return 0
    screenshot(args.report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
