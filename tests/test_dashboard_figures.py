"""The dashboard's figures stay true while the page is open (headless Chromium,
``tests/browser.py``): heartbeat ages tick and stay small for a healthy idle miner
(whatever the browser's clock says), the latency chart has labelled axes and values,
and alerts carry their time and leave once they are old."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import pytest

from scripts.processes import wait_for
from tasks.keys import Keys
from tasks.lua import Scripts
from tests.browser import needs_chromium, severe
from web.fleet.registry import Heartbeat, Registry
from web.fleet.watchdog import ALERT_WINDOW_S

pytestmark = needs_chromium
SKEW_S = 120  # the browser's clock runs this far ahead of the server's

AGE = "return (document.querySelector('tr[data-device=\"idle\"] td.age') || {}).textContent;"


def idle(status: str, free: int) -> Heartbeat:
    """A heartbeat as ``POST /heartbeat`` records it: received now (the server's clock)."""
    return Heartbeat("idle", status, 2, free, ["m"], "echo", memory={}, seen_at=time.time())


@pytest.fixture
def idle_miner(redis, settings) -> Iterator[Registry]:
    """A healthy idle miner: a heartbeat every 0.5 s, nothing in it ever changes (so
    the WebSocket announces it once, when it appears)."""
    registry = Registry(redis, Keys(settings.key_prefix), 3.0, Scripts(redis))
    stop = threading.Event()

    def beat() -> None:
        while True:
            registry.beat(idle("available", 2))
            if stop.wait(0.5):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        stop.set()
        thread.join(5)
        registry.beat(Heartbeat("idle", "offline", 0, 0, [], ""))


def skewed(driver, seconds: float) -> None:
    """From the next page on, the page's clock (``Date.now``) is ``seconds`` ahead."""
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": f"const real = Date.now; Date.now = () => real() + {seconds * 1000};"},
    )


def test_an_idle_miner_s_heartbeat_age_ticks_and_stays_fresh(api, browser, idle_miner):
    skewed(browser, SKEW_S)
    browser.get(f"{api.base}/dashboard")
    wait_for(lambda: browser.execute_script(AGE), 15, "the idle miner's age")
    seen: list[float] = []
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        text = browser.execute_script(AGE)
        seen.append(float(re.fullmatch(r"([\d.]+) s ago", text).group(1)))  # type: ignore[union-attr]
        time.sleep(0.25)  # a reading every quarter second, for 7 s
    assert max(seen) < 3.5, seen  # a heartbeat every 0.5 s: never older than a refresh
    rises = sum(later > earlier for earlier, later in zip(seen, seen[1:], strict=False))
    assert rises >= 5, seen  # it ticks between refreshes
    assert severe(browser) == []


def test_a_device_announced_over_the_websocket_is_fresh_whatever_the_browser_clock(
    api, browser, idle_miner
):
    skewed(browser, SKEW_S)
    browser.get(f"{api.base}/dashboard")
    wait_for(lambda: browser.execute_script(AGE), 15, "the idle miner's age")
    busy = "return document.querySelector('tr[data-device=\"idle\"] .status').textContent;"
    idle_miner.beat(idle("busy", 1))  # a change: announced over the WebSocket
    wait_for(lambda: browser.execute_script(busy) == "busy", 5, "the change on the page")
    text = browser.execute_script(AGE)
    assert float(text.split()[0]) < 3.5, text


def test_the_latency_chart_has_labelled_axes_and_values(api, miner, browser):
    miner("0")
    for i in range(3):
        assert api.post(f"{api.base}/chat/direct", json={"message": f"c{i}"}).ok
    browser.get(f"{api.base}/dashboard")

    def labels(kind: str) -> list[str]:
        return list(
            browser.execute_script(
                f"return [...document.querySelectorAll('#chart text.{kind}')]"
                ".map((t) => t.textContent);"
            )
        )

    wait_for(lambda: len(labels("tick-x")) >= 2, 15, "the chart's time axis")
    ys = labels("tick-y")
    assert len(ys) >= 3 and all(re.fullmatch(r"\d+(\.\d+)?", y) for y in ys), ys
    assert ys[0] == "0" and float(ys[-1]) > 0
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", x) for x in labels("tick-x")), labels("tick-x")
    assert set(labels("axis")) == {"ms", "time"}
    stats = api.get(f"{api.base}/api/v2/stats").json()
    legend = dict(re.fullmatch(r"(avg|p95) ([\d.]+) ms", t).groups() for t in labels("legend"))  # type: ignore[union-attr]
    assert set(legend) == {"avg", "p95"}
    assert abs(float(legend["p95"]) - stats["p95_ms"]) <= 0.051, legend
    assert severe(browser) == []


def test_alerts_show_their_time_and_leave_when_old(api, redis, settings, browser):
    keys = Keys(settings.key_prefix)
    now = time.time()

    def alert(message: str, t: float) -> str:
        fields = {"kind": "miner_latency", "miner": "x", "message": message}
        return json.dumps({**fields, "value": 1.0, "baseline": 1.0, "t": t})

    redis.lpush(keys.alerts, alert("stale one", now - ALERT_WINDOW_S - 60))
    redis.lpush(keys.alerts, alert("fresh one", now - 30))
    browser.get(f"{api.base}/dashboard")
    items = "return [...document.querySelectorAll('#alerts li')].map((li) => li.textContent);"
    shown = wait_for(lambda: [i for i in browser.execute_script(items) if "one" in i], 15, "alerts")
    clock = time.strftime("%H:%M:%S", time.localtime(now - 30))
    assert shown == [f"{clock} fresh one"]  # the stale one is not shown at all
    redis.delete(keys.alerts)  # the fresh one ages past the window: the page drops it
    redis.lpush(keys.alerts, alert("fresh one", now - ALERT_WINDOW_S - 1))
    wait_for(lambda: browser.execute_script(items) == ["none"], 10, "the old alert to leave")
