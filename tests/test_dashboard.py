"""The dashboard in a real headless Chromium (``tests/browser.py``): loads clean, shows a
miner, then its death."""

from __future__ import annotations

import time

from scripts.processes import kill, wait_for
from tasks.keys import Keys
from tasks.lua import Scripts
from tests.browser import needs_chromium
from web.fleet.registry import Heartbeat, Registry

pytestmark = needs_chromium


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


def test_the_dashboard_shows_each_gpu_and_keeps_figures_fresh(api, redis, settings, browser):
    """A GPU miner's heartbeat (as NVML figures make it) shows per GPU; a later
    heartbeat that changes only figures (no state event) still reaches the page."""

    registry = Registry(redis, Keys(settings.key_prefix), 30.0, Scripts(redis))
    gpu = {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-1",
        "total_mb": 81559.0,
        "used_mb": 73728.0,
        "free_mb": 7831.0,
        "utilization": 0.87,
        "temperature_c": 64.0,
    }
    memory = {"total_mb": 81559.0, "used_mb": 73728.0, "free_mb": 7831.0, "models_mb": 71680.0}

    def beat(**changes: float) -> None:
        registry.beat(
            Heartbeat(
                "h100",
                "available",
                8,
                8,
                ["m"],
                "vllm",
                memory=memory,
                gpus=[{**gpu, **changes}],
                seen_at=time.time(),
            )
        )

    beat()
    driver = browser
    driver.get(f"{api.base}/dashboard")

    def gpu_line() -> str:  # read in the page: a re-render cannot make it stale
        return str(
            driver.execute_script(
                "const e = document.querySelector('tr[data-device=\"h100\"] .gpu');"
                "return e ? e.textContent : '';"
            )
        )

    shown = wait_for(gpu_line, 15, "the GPU on the page")
    assert shown == "GPU 0 NVIDIA H100 80GB HBM3: 73728 / 81559 MB, 87 %, 64 °C"
    row = "return document.querySelector('tr[data-device=\"h100\"]').textContent;"
    assert "7831 MB free" in driver.execute_script(row)
    beat(temperature_c=71.0, utilization=0.5)
    wait_for(lambda: "50 %, 71 °C" in gpu_line(), 10, "the new figures")
    registry.beat(Heartbeat("h100", "offline", 0, 0, [], ""))
