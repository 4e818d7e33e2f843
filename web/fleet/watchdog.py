"""Fleet statistics and anomaly alerts, shared by every web replica through Redis.

Each delivered result (or failure) is one observation on a capped Redis list (noted
in memory on the request thread, written in one call by the housekeeping thread), so
``GET /api/v2/stats`` answers the same on any replica: requests, average and p95
latency, error rate and per-miner throughput over the last minute. Once a minute one
replica (a Redis lock decides) logs that summary.

Every ``CHECK_S`` one replica compares each miner's last interval with its own
baseline (an exponentially weighted mean and deviation of its latency, kept in
Redis) and with the fleet, and the fleet's queue wait with its baseline. A miner
whose latency leaves its baseline (mean + 3 deviations and twice the mean) or runs
at three times the fleet median, or that fails most of its jobs, raises an alert:
logged, counted (``mia_alerts_total``), shown by ``/api/v2/stats`` for
``ALERT_WINDOW_S`` (each with its time ``t``), posted to
``MIA_ALERT_WEBHOOK`` when set, and with ``MIA_AUTO_DRAIN=1`` the miner is drained
(dispatch skips it for ``DRAIN_S``).
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis
import requests
from prometheus_client import Counter

from tasks import metrics
from tasks.keys import Keys
from web.fleet.registry import queue_drain, redis_now_ms

log = logging.getLogger(__name__)

WINDOW_S = 60.0
CHECK_S = 10.0
KEEP = 20000
MIN_SAMPLES = 5
ALPHA = 0.3
DRAIN_S = 300
ALERTS_KEPT = 100
ALERT_WINDOW_S = 600.0  # /api/v2/stats (and the dashboard) show alerts this recent

ALERTS = Counter("mia_alerts_total", "Anomaly alerts raised", ["kind"])
ALERT_KINDS = ("miner_latency", "miner_errors", "fleet_queue_wait")
metrics.declare(ALERTS, ALERT_KINDS)


@dataclass(frozen=True)
class Observation:
    t: float
    miner: str
    total_ms: float
    queue_ms: float
    ok: bool


@dataclass(frozen=True)
class Alert:
    kind: str  # miner_latency | miner_errors | fleet_queue_wait
    miner: str
    message: str
    value: float
    baseline: float
    t: float


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)]


class Watchdog:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        webhook: str = "",
        auto_drain: bool = False,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._webhook = webhook
        self._auto_drain = auto_drain
        self._pending: list[str] = []
        self._lock = threading.Lock()

    # -- observations ----------------------------------------------------------------

    def record(self, miner: str, total_ms: float, queue_ms: float, ok: bool) -> None:
        """Note one result; it reaches Redis with the next ``flush`` (off the request)."""
        item = json.dumps([round(time.time(), 3), miner, total_ms, queue_ms, ok])
        with self._lock:
            self._pending.append(item)

    def flush(self) -> None:
        """Write the noted results to Redis in one call (housekeeping, about every second)."""
        with self._lock:
            items, self._pending = self._pending, []
        if not items:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(self._keys.observations, *items)
        pipe.ltrim(self._keys.observations, -KEEP, -1)
        pipe.execute()

    def window(self, seconds: float = WINDOW_S, now: float | None = None) -> list[Observation]:
        since = (now or time.time()) - seconds
        found = []
        for raw in reversed(self._redis.lrange(self._keys.observations, 0, -1)):
            t, miner, total, queue, ok = json.loads(raw)
            if t < since:
                break
            found.append(Observation(t, miner, total, queue, ok))
        return found

    def summary(self, now: float | None = None) -> dict[str, Any]:
        self.flush()  # this process's latest results count too
        seen = self.window(WINDOW_S, now)
        latencies = [o.total_ms for o in seen]
        errors = sum(1 for o in seen if not o.ok)
        miners: dict[str, dict[str, float]] = {}
        for o in seen:
            if not o.miner:
                continue
            m = miners.setdefault(o.miner, {"requests": 0, "errors": 0, "latency_sum": 0.0})
            m["requests"] += 1
            m["errors"] += 0 if o.ok else 1
            m["latency_sum"] += o.total_ms
        per_miner = {
            name: {
                "requests": int(m["requests"]),
                "errors": int(m["errors"]),
                "throughput_per_s": round(m["requests"] / WINDOW_S, 3),
                "avg_ms": round(m["latency_sum"] / m["requests"], 3),
            }
            for name, m in sorted(miners.items())
        }
        return {
            "window_s": WINDOW_S,
            "requests": len(seen),
            "errors": errors,
            "error_rate": round(errors / len(seen), 4) if seen else 0.0,
            "avg_ms": round(statistics.fmean(latencies), 3) if latencies else 0.0,
            "p95_ms": round(p95(latencies), 3),
            "queue_p95_ms": round(p95([o.queue_ms for o in seen]), 3),
            "miners": per_miner,
            "alerts": self.alerts(now),
            "alert_window_s": ALERT_WINDOW_S,
        }

    # -- anomalies -------------------------------------------------------------------

    def check(self, now: float | None = None) -> list[Alert]:
        """Compare the last interval with the baselines; raise and act on alerts."""
        now = now or time.time()
        seen = self.window(CHECK_S, now)
        by_miner: dict[str, list[Observation]] = {}
        for o in seen:
            if o.miner:
                by_miner.setdefault(o.miner, []).append(o)
        means = {
            m: statistics.fmean(o.total_ms for o in obs if o.ok)
            for m, obs in by_miner.items()
            if sum(1 for o in obs if o.ok) >= MIN_SAMPLES
        }
        fleet_median = statistics.median(means.values()) if len(means) >= 3 else 0.0
        alerts = []
        for miner, obs in by_miner.items():
            alerts += self._check_miner(miner, obs, means.get(miner), fleet_median, now)
        alerts += self._check_queue([o.queue_ms for o in seen], now)
        for alert in alerts:
            self._raise(alert)
        return alerts

    def _check_miner(
        self, miner: str, obs: list[Observation], mean: float | None, fleet: float, now: float
    ) -> list[Alert]:
        found = []
        errors = sum(1 for o in obs if not o.ok)
        if len(obs) >= MIN_SAMPLES and errors / len(obs) > 0.5:
            found.append(
                Alert(
                    "miner_errors",
                    miner,
                    f"miner {miner} failed {errors} of {len(obs)} jobs",
                    errors / len(obs),
                    0.0,
                    now,
                )
            )
        if mean is None:
            return found
        base = self._baseline(f"latency:{miner}")
        own = base is not None and mean > base[0] + 3 * base[1] and mean > 2 * base[0]
        vs_fleet = fleet > 0 and mean > 3 * fleet
        if own or vs_fleet:
            reference = base[0] if own and base else fleet
            found.append(
                Alert(
                    "miner_latency",
                    miner,
                    f"miner {miner} answers in {mean:.1f} ms on average, against "
                    f"{'its usual' if own else 'the fleet'} {reference:.1f} ms",
                    mean,
                    reference,
                    now,
                )
            )
        else:
            self._learn(f"latency:{miner}", mean)
        return found

    def _check_queue(self, waits: list[float], now: float) -> list[Alert]:
        if len(waits) < MIN_SAMPLES:
            return []
        wait = p95(waits)
        base = self._baseline("queue")
        if base is not None and wait > 5 * base[0] and wait > 50:
            return [
                Alert(
                    "fleet_queue_wait",
                    "",
                    f"queue wait p95 {wait:.1f} ms, usually {base[0]:.1f} ms",
                    wait,
                    base[0],
                    now,
                )
            ]
        self._learn("queue", wait)
        return []

    def _baseline(self, name: str) -> tuple[float, float] | None:
        raw = self._redis.hget(self._keys.baselines, name)
        if raw is None:
            return None
        mean, dev, n = json.loads(raw)
        return (mean, dev) if n >= 3 else None

    def _learn(self, name: str, value: float) -> None:
        raw = self._redis.hget(self._keys.baselines, name)
        mean, dev, n = json.loads(raw) if raw else (value, 0.0, 0)
        dev = (1 - ALPHA) * dev + ALPHA * abs(value - mean)
        mean = (1 - ALPHA) * mean + ALPHA * value
        self._redis.hset(self._keys.baselines, name, json.dumps([mean, dev, n + 1]))

    def _raise(self, alert: Alert) -> None:
        log.warning("anomaly: %s", alert.message, extra={"alert": asdict(alert)})
        ALERTS.labels(alert.kind).inc()
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(self._keys.alerts, json.dumps(asdict(alert)))
        pipe.ltrim(self._keys.alerts, 0, ALERTS_KEPT - 1)
        if self._auto_drain and alert.miner:
            # dispatch skips it, and the miner, told, stops taking shared
            now_ms = redis_now_ms(self._redis)
            queue_drain(pipe, self._keys, alert.miner, alert.kind, DRAIN_S * 1000, now_ms)
        pipe.execute()
        if self._webhook:
            threading.Thread(target=self._post, args=(alert,), daemon=True).start()

    def _post(self, alert: Alert) -> None:
        try:
            with requests.Session() as http:
                http.post(self._webhook, json={"alert": asdict(alert)}, timeout=5)
        except requests.RequestException as exc:
            log.warning("alert webhook %s failed: %s", self._webhook, exc)

    def alerts(self, now: float | None = None) -> list[dict[str, Any]]:
        """The newest alerts, at most 20, raised in the last ``ALERT_WINDOW_S``."""
        since = (now or time.time()) - ALERT_WINDOW_S
        newest = [json.loads(a) for a in self._redis.lrange(self._keys.alerts, 0, 19)]
        return [a for a in newest if float(a.get("t", 0)) >= since]

    # -- housekeeping (one replica per interval) --------------------------------------

    def housekeeping(self) -> None:
        self.flush()
        now = time.time()
        if self._redis.set(self._keys.stats_lock("check"), 1, nx=True, px=int(CHECK_S * 900)):
            self.check(now)
        if self._redis.set(self._keys.stats_lock("summary"), 1, nx=True, px=int(WINDOW_S * 900)):
            summary = self.summary(now)
            summary.pop("alerts")
            log.info(
                "fleet summary: %d requests, p95 %.1f ms, error rate %.2f",
                summary["requests"],
                summary["p95_ms"],
                summary["error_rate"],
                extra={"summary": summary},
            )
