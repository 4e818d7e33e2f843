"""A real headless Chromium for the pages' tests (the ``browser`` fixture, a plugin of
``tests/conftest.py``), and the mark that skips them where it is missing.

Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped locally,
with this reason, where they are missing, but never in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and not os.environ.get("CI"),  # in CI: fail, never skip
    reason="no chromium/chromedriver: apt-get install chromium chromium-driver (.ci/run does)",
)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A Chromium driven by selenium; its console is kept (``get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def severe(driver: Any) -> list[dict[str, Any]]:
    """The page's console errors so far."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
