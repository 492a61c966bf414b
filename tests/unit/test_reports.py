"""Reports made by the suite itself: the HTML in a real headless browser, and the
compare mode on two real JSON reports (real_reports: tests/unit/conftest.py)."""
import json
import shutil
import struct

import pytest

from mmap2conf.cases import load_clauses
from mmap2conf.cli import CHROMIUM_FLAGS, compare, screenshot
from mmap2conf.htmlreport import write_html
from mmap2conf.knownissues import load_known_issues

NEEDS_BROWSER = pytest.mark.skipif(shutil.which("chromedriver") is None,
                                   reason="chromium-driver is not installed (make bootstrap)")


def test_compare_shows_what_qemu_gets_wrong_against_the_kernel(real_reports):
    rows = compare(real_reports / "qemu-user" / "conformance.json",
                   real_reports / "native" / "conformance.json", ignore_runner=True)
    by_case = {key: (before, after, issues) for key, before, after, issues in rows}
    assert by_case["i386/raw/errors/unknown-prot-bit"] == ("xfailed", "passed", "KI-1")
    assert by_case["i386/raw/large-offsets/pgoff=0x100001"] == ("xfailed", "passed", "KI-9")
    assert "i386/raw/offset-unit/pgoff=1" not in by_case       # both pass: not a difference
    assert all(before != after for before, after, _ in by_case.values())


def test_compare_of_a_report_with_itself_is_empty(real_reports):
    report = real_reports / "native" / "conformance.json"
    assert compare(report, report, ignore_runner=False) == []


def test_the_two_releases_of_each_libc_answer_alike_on_i386(real_reports):
    """Debian 12's glibc 2.36 and Debian 13's 2.41, zig's musl 1.2.5 and Debian 12's 1.2.3:
    their mmap and mmap64 are the same code (README, "Libc releases")."""
    import json
    report = real_reports / "native" / "conformance.json"
    records = json.loads(report.read_text())["records"]
    versions = {(r["flavour"], r["properties"]["libc_version"]) for r in records if (r["properties"] or {}).get("libc")}
    assert versions == {("glibc", "2.36"), ("glibc-2.41", "2.41"), ("musl", "1.2.5"), ("musl-1.2.3", "1.2.3")}
    assert compare(report, report, ignore_runner=False,
                   flavours=[("glibc", "glibc-2.41"), ("musl", "musl-1.2.3")]) == []


def browser_for(tmp_path):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1600,1400")
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def png_size(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@NEEDS_BROWSER
def test_the_html_report_in_a_real_browser(real_reports, tmp_path):
    from selenium.webdriver.common.by import By

    html = real_reports / "qemu-user" / "conformance.html"
    browser = browser_for(tmp_path)
    try:
        browser.get(html.as_uri())
        matrix = browser.find_element(By.ID, "matrix")
        headers = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "tr:first-child th")]
        assert headers[1:] == ["i386@qemu-dir"]
        clauses = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "tr th:first-child")]
        assert "mmap2.DESCRIPTION.unit" in clauses and "mmap.ERRORS.EBADF" in clauses
        cell = matrix.find_element(By.CSS_SELECTOR, "td.cell.xfailed a")
        target = cell.get_attribute("href").split("#", 1)[1]
        cell.click()
        section = browser.find_element(By.ID, target)
        assert section.is_displayed()
        reproducers = [td.get_attribute("textContent")
                       for td in browser.find_elements(By.XPATH, "//tr[th='reproduce']/td")]
        assert any("qemu-i386-static" in r and '"op":"call"' in r for r in reproducers)
    finally:
        browser.quit()
    shot = tmp_path / "report.png"
    screenshot(html, shot)
    assert png_size(shot)[0] > 0


@NEEDS_BROWSER
def test_the_screenshot_shows_every_column_of_a_wide_matrix(real_reports, tmp_path):
    """22 columns, as many as a full run has: the old 1600-pixel window showed ten."""
    document = json.loads((real_reports / "qemu-user" / "conformance.json").read_text())
    columns = [f"c{n:02d}@qemu-user" for n in range(22)]
    document["records"] = [dict(r, column=column, nodeid=f"{r['nodeid']}{column}")
                           for column in columns for r in document["records"]]
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(document))
    html = tmp_path / "wide.html"
    write_html(wide, html, load_clauses(), {i.id: i for i in load_known_issues()})
    browser = browser_for(tmp_path)
    try:
        browser.get(html.as_uri())
        matrix = browser.execute_script("return document.getElementById('matrix').getBoundingClientRect().toJSON()")
        verdicts = browser.execute_script("return document.getElementById('verdicts').getBoundingClientRect().height")
    finally:
        browser.quit()
    assert matrix["right"] > 1600                 # wider than the old window
    shot = tmp_path / "wide.png"
    screenshot(html, shot)
    width, height = png_size(shot)
    assert width >= matrix["right"] and height >= matrix["height"] + verdicts
