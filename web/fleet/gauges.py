"""The fleet's Prometheus gauges and the ``GET /metrics`` body.

Gauges of the fleet (queue depths, live miners, free slots, and each miner's engine
figures, which miners push in their heartbeats) are read from Redis when Prometheus
scrapes, so every web replica reports the same truth. Under gunicorn, set
``PROMETHEUS_MULTIPROC_DIR`` (``make run`` does) and the counters of all worker
processes (``tasks.metrics``) are added up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from web.fleet.registry import Registry


class FleetCollector(Collector):
    """Gauges read from Redis at scrape time."""

    def __init__(self, registry: Registry) -> None:
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
