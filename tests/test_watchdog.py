"""Fleet statistics and anomaly alerts, on real Redis, with made-up observations."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from scripts.launch import free_port
from scripts.processes import wait_for
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from web.fleet.registry import Heartbeat, Registry
from web.fleet.watchdog import ALERT_WINDOW_S, CHECK_S, Watchdog

KEYS = Keys("mia")


def feed(stats: Watchdog, redis, t: float, latencies: dict[str, float], ok: bool = True) -> None:
    """Six observations per miner, stamped just before ``t``."""
    for miner, ms in latencies.items():
        for i in range(6):
            item = json.dumps([t - 1 - i * 0.1, miner, ms, 2.0, ok])
            redis.rpush(KEYS.observations, item)


def test_the_summary_counts_the_last_minute(redis):
    stats = Watchdog(redis, KEYS)
    for i in range(4):
        stats.record("a", 10.0 + i, 1.0, ok=i != 3)
    stats.record("b", 100.0, 5.0, ok=True)
    found = stats.summary()
    assert (found["requests"], found["errors"]) == (5, 1)
    assert found["error_rate"] == 0.2
    assert found["p95_ms"] == 100.0
    assert found["miners"]["a"]["requests"] == 4 and found["miners"]["a"]["errors"] == 1


def test_a_miner_slower_than_its_baseline_and_the_fleet_is_flagged_and_drained(redis):
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stats = Watchdog(redis, KEYS, webhook=f"http://127.0.0.1:{port}/alert", auto_drain=True)
        t = 1_000_000.0
        for _ in range(4):  # a calm fleet builds its baselines
            t += CHECK_S
            feed(stats, redis, t, {"a": 20.0, "b": 22.0, "c": 21.0})
            assert stats.check(t) == []
        t += CHECK_S
        feed(stats, redis, t, {"a": 20.0, "b": 22.0, "c": 400.0})
        (alert,) = stats.check(t)
        assert (alert.kind, alert.miner) == ("miner_latency", "c")
        assert redis.get(KEYS.drain("c")) == b"miner_latency"
        assert stats.summary(t)["alerts"][0]["miner"] == "c"
        wait_for(lambda: received, 10, "the webhook")
        assert received[0]["alert"]["kind"] == "miner_latency"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_miner_and_a_queue_wait_spike_are_flagged(redis):
    stats = Watchdog(redis, KEYS)
    t = 2_000_000.0
    for _ in range(4):
        t += CHECK_S
        feed(stats, redis, t, {"a": 20.0, "b": 20.0})
        assert stats.check(t) == []
    t += CHECK_S
    feed(stats, redis, t, {"b": 20.0}, ok=False)
    for i in range(6):  # long waits on shared
        redis.rpush(KEYS.observations, json.dumps([t - 0.5 - i * 0.01, "a", 500.0, 480.0, True]))
    kinds = {(a.kind, a.miner) for a in stats.check(t)}
    assert ("miner_errors", "b") in kinds
    assert ("fleet_queue_wait", "") in kinds


def test_dispatch_skips_a_drained_miner(redis):
    registry = Registry(redis, KEYS, 30)
    for miner in ("a", "b"):
        registry.beat(Heartbeat(miner, "available", 4, 4, ["echo"], "echo"))
    registry.drain("a", "miner_latency")
    selector = RedisSelector(redis, Scripts(redis), KEYS, 60)
    picks = {selector.choose(Job(messages=[{"role": "user", "content": "x"}])) for _ in range(4)}
    assert picks == {"b"}


def test_stats_over_http(api, miner):
    miner("0")
    for i in range(3):
        api.post(f"{api.base}/chat/direct", json={"message": f"s{i}"})
    found = api.get(f"{api.base}/api/v2/stats").json()
    assert found["requests"] == 3 and found["miners"]["0"]["requests"] == 3


def test_alerts_are_shown_with_their_time_for_the_window_only(redis):
    stats = Watchdog(redis, KEYS)
    t = 3_000_000.0
    for age, message in ((ALERT_WINDOW_S + 1, "old"), (ALERT_WINDOW_S - 1, "recent")):
        redis.lpush(
            KEYS.alerts, json.dumps({"kind": "miner_errors", "message": message, "t": t - age})
        )
    found = stats.summary(t)
    assert [a["message"] for a in found["alerts"]] == ["recent"]
    assert found["alerts"][0]["t"] == t - ALERT_WINDOW_S + 1
    assert found["alert_window_s"] == ALERT_WINDOW_S
    assert stats.alerts(t + 2) == []  # it ages out
