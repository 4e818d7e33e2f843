"""The fleet's Prometheus gauges and the ``GET /metrics`` body.

Gauges of the fleet (queue depths, live miners, free slots, and each miner's engine
and device figures, which miners push in their heartbeats) are read from Redis when
Prometheus scrapes, so every web replica reports the same truth: one scrape reads the
heartbeats (``Registry.live``), the queue lengths, and the breakers (one pipelined
read). Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` (``make run`` does) and the
counters of all worker processes (``tasks.metrics``) are added up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tasks.breaker import Breakers
from web.fleet.miner_state import MinerState
from web.fleet.registry import Registry

MB = 2**20
BREAKER_STATES = ("closed", "open", "half_open")


class FleetCollector(Collector):
    """Gauges read from Redis at scrape time."""

    def __init__(self, registry: Registry, breakers: Breakers | None = None) -> None:
        self._registry = registry
        self._breakers = breakers

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
        age = GaugeMetricFamily(
            "mia_heartbeat_age_seconds",
            "Seconds since the miner's last heartbeat",
            labels=["miner"],
        )
        for m in miners:
            free.add_metric([m.miner_id], m.free_slots)
            batch.add_metric([m.miner_id], m.slots - m.free_slots)
            age.add_metric([m.miner_id], m.heartbeat_age_ms / 1000)
            stats = m.engine_stats
            if stats:
                tps.add_metric([m.miner_id], stats.get("tokens_per_second", 0.0))
                ttft.add_metric([m.miner_id], stats.get("ttft_seconds", 0.0))
        depth = GaugeMetricFamily("mia_queue_depth", "Jobs waiting per queue", labels=["queue"])
        for queue, waiting in self._registry.queue_depths(miners).items():
            depth.add_metric([queue], waiting)
        yield from (live, free, depth, tps, ttft, batch, age)
        yield from _device_gauges(miners)
        if self._breakers is not None:
            yield from _breaker_gauges(self._breakers.states([m.miner_id for m in miners]))


def _device_gauges(miners: list[MinerState]) -> Iterator[Metric]:
    """Device memory and utilization (the heartbeat's ``memory``) and vLLM's own cache
    figures (its ``engine_stats``); a figure a miner does not send has no sample."""
    used = GaugeMetricFamily(
        "mia_device_memory_used_bytes",
        "Device memory in use (GPUs: all processes; CPU: the miner's resident memory)",
        labels=["miner"],
    )
    total = GaugeMetricFamily(
        "mia_device_memory_total_bytes", "Device memory the miner may use", labels=["miner"]
    )
    free = GaugeMetricFamily(
        "mia_device_memory_free_bytes",
        "Device memory free now (placement's figure)",
        labels=["miner"],
    )
    models = GaugeMetricFamily(
        "mia_device_memory_models_bytes", "Device memory the miner's models hold", labels=["miner"]
    )
    utilization = GaugeMetricFamily(
        "mia_device_utilization_ratio", "Device busy fraction (0-1)", labels=["miner"]
    )
    kv = GaugeMetricFamily(
        "mia_kv_cache_usage_ratio", "KV-cache blocks in use (0-1, vLLM's figure)", labels=["miner"]
    )
    prefix = GaugeMetricFamily(
        "mia_prefix_cache_hit_ratio",
        "Prefix-cache hits per query since the engine started (vLLM's counters)",
        labels=["miner"],
    )
    for m in miners:
        for family, source, key, scale in (
            (used, m.memory, "used_mb", MB),
            (total, m.memory, "total_mb", MB),
            (free, m.memory, "free_mb", MB),
            (models, m.memory, "models_mb", MB),
            (utilization, m.memory, "utilization", 1),
            (kv, m.engine_stats, "kv_cache_usage", 1),
            (prefix, m.engine_stats, "prefix_cache_hit_ratio", 1),
        ):
            value = source.get(key)
            if isinstance(value, int | float):
                family.add_metric([m.miner_id], float(value) * scale)
    yield from (used, total, free, models, utilization, kv, prefix)
    yield from _gpu_gauges(miners)


GPU_GAUGES = (  # (heartbeat figure, metric, help, scale)
    ("used_mb", "mia_gpu_memory_used_bytes", "GPU memory in use (all processes)", MB),
    ("total_mb", "mia_gpu_memory_total_bytes", "GPU memory", MB),
    ("process_mb", "mia_gpu_memory_miner_bytes", "GPU memory the miner's processes hold", MB),
    ("utilization", "mia_gpu_utilization_ratio", "GPU busy fraction (0-1, NVML)", 1),
    ("temperature_c", "mia_gpu_temperature_celsius", "GPU temperature (NVML)", 1),
)


def _gpu_gauges(miners: list[MinerState]) -> Iterator[Metric]:
    """Each GPU of each miner (the heartbeat's ``gpus``), labelled by miner and index;
    ``mia_gpu_info`` carries the GPU's name and UUID."""
    labels = ["miner", "gpu"]
    info = GaugeMetricFamily("mia_gpu_info", "A GPU a miner uses", labels=[*labels, "name", "uuid"])
    families = {k: GaugeMetricFamily(n, h, labels=labels) for k, n, h, _ in GPU_GAUGES}
    for m in miners:
        for gpu in m.gpus:
            index = str(gpu.get("index", ""))
            info.add_metric([m.miner_id, index, gpu.get("name", ""), gpu.get("uuid", "")], 1)
            for key, _, _, scale in GPU_GAUGES:
                if isinstance(gpu.get(key), int | float):
                    families[key].add_metric([m.miner_id, index], float(gpu[key]) * scale)
    yield info
    yield from families.values()


def _breaker_gauges(states: dict[str, str]) -> Iterator[Metric]:
    is_open = GaugeMetricFamily(
        "mia_breaker_open", "1 while dispatch skips the miner (breaker open)", labels=["miner"]
    )
    state = GaugeMetricFamily(
        "mia_breaker_state",
        "The miner's circuit breaker: 1 for its state (closed, open, half_open)",
        labels=["miner", "state"],
    )
    for miner_id, current in states.items():
        is_open.add_metric([miner_id], 1.0 if current == "open" else 0.0)
        for name in BREAKER_STATES:
            state.add_metric([miner_id, name], 1.0 if name == current else 0.0)
    yield from (is_open, state)


class Both(Collector):
    """The metrics of several collectors as one, for one exposition."""

    def __init__(self, *sources: Collector) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source.collect()


def exposition(fleet: Collector) -> bytes:
    """The ``/metrics`` body, in Prometheus' text format (``CONTENT_TYPE_LATEST``): this
    process's (or all gunicorn workers') counters and histograms, then the fleet's gauges,
    written in one pass."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        workers = CollectorRegistry()
        MultiProcessCollector(workers)  # type: ignore[no-untyped-call]
        return generate_latest(Both(workers, fleet))
    return generate_latest(Both(REGISTRY, fleet))
