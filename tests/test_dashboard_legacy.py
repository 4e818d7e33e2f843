"""The dashboard lists legacy polling miners (they send no heartbeat, so the WebSocket
never names them): their status, jobs in hand and last poll, in headless Chromium."""

from __future__ import annotations

import requests

from scripts.processes import wait_for
from tests.browser import needs_chromium
from tests.conftest import TOKEN
from tests.legacy_client import bearer

pytestmark = needs_chromium


def test_the_dashboard_lists_legacy_miners_and_their_stop(api, browser):
    from selenium.webdriver.common.by import By

    base = api.base
    driver = browser
    driver.get(f"{base}/dashboard")
    token = {"Authorization": f"Bearer {TOKEN}"}
    key = api.post(f"{base}/register_miner", json={"miner_id": "old-d"}, headers=token).json()
    assert (
        requests.get(f"{base}/get_work", headers=bearer(key["key"]), timeout=5).status_code == 204
    )

    def row() -> str:  # read in the page: a re-render cannot make it stale
        script = "const r = document.querySelector('tr[data-legacy=\"old-d\"]');"
        return str(driver.execute_script(script + "return r ? r.textContent : '';"))

    shown = wait_for(lambda: "available" in row() and row(), 15, "old-d on the page")
    assert "s ago" in str(shown) and driver.find_element(By.ID, "legacy-card").is_displayed()
    assert api.post(f"{base}/unregister_miner", headers=bearer(key["key"])).status_code == 200
    wait_for(lambda: "offline" in row(), 10, "old-d offline on the page")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
