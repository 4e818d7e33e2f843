"""Prometheus counters and histograms (prometheus-client), observed where things
happen: dispatch, results, leases, breakers. The fleet's gauges, read from Redis at
scrape time, and the ``/metrics`` body are ``web.fleet.gauges``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
REPLIES = Counter(
    "mia_reply_messages_total",
    "Messages this web process heard on its reply channel: result, piece, or stray "
    "(for a job it no longer waits for)",
    ["kind"],
)
TOKENS = Counter("mia_tokens_generated_total", "Completion tokens in delivered results")
REDIS_WAITS = Counter(
    "mia_redis_wait_total",
    "WAITs for a replica after a job's publish or a result's store, by outcome",
    ["outcome"],  # confirmed, alone (no replica online: nothing to wait for), unconfirmed
)


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
