"""Prometheus counters and histograms (prometheus-client), observed where things
happen: dispatch, results, leases, breakers, HTTP requests. The fleet's gauges, read
from Redis at scrape time, and the ``/metrics`` body are ``web.fleet.gauges``.

Every labelled counter starts with a sample at 0 for each of its documented label
values (``LABEL_VALUES``), so a rate or an alert on it works before its first event
(docs/operations.md lists them; a test checks that list against a fresh process).
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

HTTP_REQUESTS = Counter(
    "mia_http_requests_total",
    "HTTP requests answered, by route (its rule), method and status class (2xx, 4xx, ...)",
    ["route", "method", "status"],
)
HTTP_STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")  # each route's, at 0 from start-up

LABEL_VALUES: dict[Counter, tuple[str, ...]] = {
    JOBS: ("done", "failed", "timeout", "requeued"),
    BREAKER_CHANGES: ("opened", "closed"),
    RECOVERED: ("moved", "parked", "finished", "gone", "failed"),
    REPLIES: ("result", "piece", "stray"),
    REDIS_WAITS: ("confirmed", "alone", "unconfirmed", "not_master"),
}


def declare(counter: Counter, values: tuple[str, ...]) -> None:
    """A sample at 0 for each of ``values`` (the counter's one label), from now on."""
    for value in values:
        counter.labels(value)


for _counter, _values in LABEL_VALUES.items():
    declare(_counter, _values)


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
