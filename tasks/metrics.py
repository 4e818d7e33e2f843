"""Prometheus metrics of the web tier (``GET /metrics``), with prometheus-client.

Counters and histograms are observed where things happen (dispatch, results,
leases). Gauges of the fleet (queue depths, live miners, free slots, and each
miner's engine figures, which miners push in their heartbeats) are read from Redis
when Prometheus scrapes, so every web replica reports the same truth. Under
gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` (``make run`` does) and the counters of
all worker processes are added up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tasks.keys import Keys
from tasks.registry import Registry

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)

DISPATCH = Histogram(
    "mia_dispatch_seconds",
    "Job accepted by the web tier -> its miner starts it",
    buckets=LATENCY_BUCKETS,
)
END_TO_END = Histogram(
    "mia_request_seconds",
    "Job accepted -> its result reached the caller",
    buckets=LATENCY_BUCKETS,
)
JOBS = Counter("mia_jobs_total", "Jobs by outcome", ["outcome"])
SHARED_FALLBACKS = Counter(
    "mia_shared_fallbacks_total", "Jobs published on shared because no miner was free"
)
LEASES = Counter("mia_legacy_leases_total", "Jobs leased to legacy polling miners")
BREAKER_CHANGES = Counter(
    "mia_breaker_changes_total", "Circuit breakers opened or closed", ["change"]
)
RECOVERED = Counter(
    "mia_recovered_jobs_total",
    "Jobs of dead or restarted miners, by what became of them",
    ["outcome"],
)
TOKENS = Counter("mia_tokens_generated_total", "Completion tokens in delivered results")


def observe_result(result: dict[str, object]) -> None:
    """A result delivered to its caller: latency, tokens, outcome."""
    timings = result.get("timings")
    if isinstance(timings, dict):
        DISPATCH.observe(float(timings.get("queue_ms", 0.0)) / 1000)
        END_TO_END.observe(float(timings.get("total_ms", 0.0)) / 1000)
    usage = result.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        TOKENS.inc(usage["completion_tokens"])
    JOBS.labels("done").inc()


class FleetCollector(Collector):
    """Gauges read from Redis at scrape time."""

    def __init__(self, client: redis.Redis, keys: Keys, registry: Registry) -> None:
        self._redis = client
        self._keys = keys
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        miners = self._registry.live()
        live = GaugeMetricFamily("mia_live_miners", "Miners with a live heartbeat")
        live.add_metric([], len(miners))
        free = GaugeMetricFamily("mia_free_slots", "Free slots per miner", labels=["miner"])
        tps = GaugeMetricFamily(
            "mia_miner_tokens_per_second", "Recent generation speed", labels=["miner"]
        )
        ttft = GaugeMetricFamily(
            "mia_miner_time_to_first_token_seconds", "Recent time to first token", labels=["miner"]
        )
        batch = GaugeMetricFamily("mia_miner_batch_size", "Jobs running at once", labels=["miner"])
        for m in miners:
            free.add_metric([m.miner_id], m.free_slots)
            batch.add_metric([m.miner_id], m.slots - m.free_slots)
            stats = m.engine_stats
            if stats:
                tps.add_metric([m.miner_id], stats.get("tokens_per_second", 0.0))
                ttft.add_metric([m.miner_id], stats.get("ttft_seconds", 0.0))
        depth = GaugeMetricFamily("mia_queue_depth", "Jobs waiting per queue", labels=["queue"])
        for queue, waiting in self._registry.queue_depths(miners).items():
            depth.add_metric([queue], waiting)
        yield from (live, free, depth, tps, ttft, batch)


def exposition(fleet: Collector) -> bytes:
    """The ``/metrics`` body: this process's (or all gunicorn workers') metrics + the fleet."""
    fleet_only = CollectorRegistry()
    fleet_only.register(fleet)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        workers = CollectorRegistry()
        MultiProcessCollector(workers)  # type: ignore[no-untyped-call]
        return generate_latest(workers) + generate_latest(fleet_only)
    return generate_latest(REGISTRY) + generate_latest(fleet_only)
