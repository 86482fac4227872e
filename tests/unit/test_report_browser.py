"""The tag explorer in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The page must load without console errors, the search box must filter the list and clicking a tag must show
its per-dataset frequencies, merges and example queries. A screenshot is kept under the test's tmp folder
(and under $INSTAG_ARTIFACTS when set). Skipped, with the reason, where no Chromium or driver is installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from instag.report import browser, explorer
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "data" / "report" / "results"


def _driver_paths():
    chrome = browser.find_chromium()
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return chrome, driver


@pytest.fixture
def chrome(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    binary, driver = _driver_paths()
    if binary is None or driver is None:
        pytest.skip("no chromium/chromedriver: apt-get install -y chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in browser.FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument("--window-size=1280,900")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def keep(path: Path) -> None:
    dest = os.environ.get("INSTAG_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(dest) / path.name)


def test_explorer_in_chromium(chrome, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def listed(d) -> list[str]:
        """The tag names in the list, as shown now."""
        return [li.text.split("\n")[0] for li in d.find_elements(By.CSS_SELECTOR, "#list li")]

    def until_listed(want: list[str]) -> None:
        # each keystroke redraws the list: an element read mid-redraw is stale, so read it again
        seen = []
        wait = WebDriverWait(chrome, 10, ignored_exceptions=(StaleElementReferenceException,))
        try:
            wait.until(lambda d: seen.append(listed(d)) or seen[-1] == want)
        except Exception as exc:
            raise AssertionError(f"the list shows {seen[-1:]} where {want} was expected") from exc

    html = tmp_path / "explorer.html"
    explorer.write(
        FIXTURE / "tables" / "tag_mapping.tsv",
        FIXTURE / "normalize" / "normalized.jsonl",
        sorted((FIXTURE / "data").glob("*.jsonl")),
        html,
    )
    chrome.get(html.as_uri())
    WebDriverWait(chrome, 20).until(lambda d: d.execute_script("return window.explorerReady === true"))
    errors = [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors

    items = chrome.find_elements(By.CSS_SELECTOR, "#list li")
    n_all = len(items)
    assert n_all >= 5
    search = chrome.find_element(By.ID, "search")
    search.send_keys("math")
    until_listed(["mathematics"])
    names = [li.find_element(By.CSS_SELECTOR, ".name").text for li in chrome.find_elements(By.CSS_SELECTOR, "#list li")]
    assert names == ["mathematics"], names
    assert "1 of" in chrome.find_element(By.ID, "count").text

    chrome.find_elements(By.CSS_SELECTOR, "#list li")[0].click()
    WebDriverWait(chrome, 10).until(lambda d: d.find_elements(By.ID, "tag-name"))
    assert chrome.find_element(By.ID, "tag-name").text == "mathematics"
    merges = chrome.find_element(By.ID, "merges").text
    for raw in ("Math", "Mathematics", "Arithmetic"):
        assert raw in merges, merges
    assert "association" in merges and "semantic" in merges
    freq = chrome.find_element(By.ID, "freq").text
    assert "math" in freq
    examples = chrome.find_elements(By.CSS_SELECTOR, "#examples li")
    assert examples and "MATH question" in examples[0].text
    # the query text's "</script>" is shown as text, not run
    assert "</script>" in " ".join(e.text for e in examples)

    # searching a raw tag finds the tag it was merged into
    search.clear()
    search.send_keys("arithmetic")
    until_listed(["mathematics"])
    shot = tmp_path / "explorer_selenium.png"
    chrome.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    keep(shot)
    assert not [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_screenshot_command(tmp_path):
    if browser.find_chromium() is None:
        pytest.skip("no chromium: apt-get install -y chromium")
    html = tmp_path / "explorer.html"
    explorer.write(
        FIXTURE / "tables" / "tag_mapping.tsv",
        FIXTURE / "normalize" / "normalized.jsonl",
        sorted((FIXTURE / "data").glob("*.jsonl")),
        html,
    )
    out = browser.screenshot(html, tmp_path / "explorer.png", fragment="tag=", width=1000, height=700)
    png = Path(out["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    keep(png)
