"""The dashboard in a real headless Chromium: loads clean, shows a miner, then its death.

Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped
locally, with this reason, where they are missing, but never in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from scripts.processes import kill, wait_for

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and not os.environ.get("CI"),  # in CI: fail, never skip
    reason="no chromium/chromedriver: apt-get install chromium chromium-driver (.ci/run does)",
)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_shows_a_miner_come_and_go(api, miner, browser, tmp_path):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{api.base}/dashboard")
    wait_for(lambda: driver.find_element(By.ID, "conn").text == "live", 15, "the WebSocket")
    found = miner("7", MIA_DEVICE_MEMORY_MB="4000")

    def row() -> object:
        rows = driver.find_elements(By.CSS_SELECTOR, 'tr[data-device="7"]')
        return rows[0] if rows else None

    shown = wait_for(row, 15, "the miner on the page")
    text = shown.text  # type: ignore[attr-defined]
    assert "echo" in text and "2/2 free" in text and "4000 MB" in text
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, 'tr[data-queue="gpu-7"]'), 10, "queues")
    driver.save_screenshot(str(tmp_path / "dashboard.png"))
    kill(found.proc)  # no goodbye: its heartbeat key expires, the page hears "gone"
    wait_for(lambda: row() is None, 20, "the dead miner to leave the page")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
