"""Reports made by the suite itself: the HTML in a real headless browser, and the
compare mode on two real JSON reports (real_reports: tests/unit/conftest.py)."""
import shutil

import pytest

from mmap2conf.cli import CHROMIUM_FLAGS, compare, screenshot


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


@pytest.mark.skipif(shutil.which("chromedriver") is None, reason="chromium-driver is not installed (make bootstrap)")
def test_the_html_report_in_a_real_browser(real_reports, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    html = real_reports / "qemu-user" / "conformance.html"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.get(html.as_uri())
        matrix = browser.find_element(By.ID, "matrix")
        headers = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "tr:first-child th")]
        assert headers[1:] == ["i386@qemu-user"]
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
    assert shot.read_bytes().startswith(b"\x89PNG")
