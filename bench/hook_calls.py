"""The per-request hooks of the web tier, each called in-process as a ``POST
/chat/direct`` calls it (``bench.hooks`` runs this once per configuration).

    python -m bench.hook_calls --mode default|multiprocess|tracing [--iterations N]

A hook is called in batches of ``BATCH`` (tracing on: ``TRACING_BATCH``); its cost is
the median over batches of a batch's time over its size (wall clock, this thread),
beside it the median of this thread's CPU the same way, and the process's CPU (every
thread: a span exporter's work too) over all its calls. Then a cross-check in a real
Flask request: Flask's test client on one small view with the request-id hook
registered and without, in alternating batches, the medians' difference. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BATCH = 500  # calls per timed batch
# A tracing batch's spans stay under the BatchSpanProcessor's export threshold (512 spans,
# OTEL_BSP_MAX_EXPORT_BATCH_SIZE), so that its exporter thread, which holds the GIL while
# it encodes, runs in the flush after the batch (in the CPU figure) and not inside the
# timed batch, where a batch of 1,000 spans let it run in some batches and not in others.
TRACING_BATCH = 200
HEADERS = {"Content-Type": "application/json", "Content-Length": "34", "Host": "127.0.0.1"}
RESULT: dict[str, object] = {
    "response": "Hello",
    "miner_id": "gpu-0",
    "usage": {"prompt_tokens": 9, "completion_tokens": 1},
    "timings": {"queue_ms": 1.7, "inference_ms": 0.01, "total_ms": 4.1},
}
# The report's order and names: (key, what is called per request).


def timed(
    call: Callable[[], object],
    iterations: int,
    after_batch: Callable[[], object],
    batch: int = BATCH,
) -> dict[str, float]:
    """``call``'s median µs per call over batches (wall clock, and this thread's CPU),
    and the process's CPU µs per call (``after_batch`` included: a flush of what the
    batch queued)."""
    call()  # anything lazy happens here, not counted
    after_batch()
    per_call, thread, cpu = [], [], time.process_time()
    for _ in range(max(iterations // batch, 1)):
        started, started_cpu = time.perf_counter(), time.thread_time()
        for _ in range(batch):
            call()
        per_call.append((time.perf_counter() - started) / batch * 1e6)
        thread.append((time.thread_time() - started_cpu) / batch * 1e6)
        after_batch()
    calls = max(iterations // batch, 1) * batch
    cpu_us = (time.process_time() - cpu) / calls * 1e6
    return {
        "median_us": round(statistics.median(per_call), 2),
        "thread_cpu_us": round(statistics.median(thread), 2),
        "cpu_us": round(cpu_us, 2),
    }


def prometheus_call() -> Callable[[], object]:
    from tasks import metrics

    def call() -> None:
        metrics.observe_result(RESULT)
        metrics.REPLIES.labels("result").inc()

    return call


def stats_call() -> tuple[Callable[[], object], Callable[[], object]]:
    """``Watchdog.record``, and the clearing its housekeeping flush would do."""
    import redis

    from tasks.keys import Keys
    from web.fleet.watchdog import Watchdog

    stats = Watchdog(redis.Redis(), Keys("bench"))  # record() alone: never connects
    return (lambda: stats.record("gpu-0", 4.1, 1.7, True)), lambda: stats._pending.clear()


@contextmanager
def request_hooks(with_header: bool = False) -> Iterator[Callable[[], object]]:
    """The request-id hooks (``web.common.request_ids``), called as Flask calls them,
    inside one request context."""
    from flask import Flask, Response

    from web.common.request_ids import register_request_ids

    app = Flask(__name__)
    register_request_ids(app)
    (before,), (after,) = app.before_request_funcs[None], app.after_request_funcs[None]
    (teardown,) = app.teardown_request_funcs[None]
    headers = {**HEADERS, **({"X-Request-ID": "bench-request-1"} if with_header else {})}
    with app.test_request_context("/chat/direct", method="POST", headers=headers):
        response = Response("{}")

        def call() -> None:
            before()
            after(response)
            teardown(None)

        yield call


def log_call(path: Path) -> Callable[[], object]:
    """One line as the web tier writes one: its JSON format, its request id filter."""
    from tasks.logs import configure, request_id

    configure()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(path.open("a"))
    request_id.set("0123456789abcdef0123456789abcdef")
    log = logging.getLogger("web.views.chat")
    return lambda: log.info("POST /chat/direct 200 in %.3f ms", 4.1)


def tracing_call() -> Callable[[], object]:
    """The tracing calls of one request: its span (a child of the caller's headers),
    the dispatch span and the ``traceparent`` put into the task message."""
    from tasks import tracing

    def call() -> None:
        started = None
        if tracing.enabled():
            carrier = {field: HEADERS.get(field) for field in tracing.FIELDS}
            started = tracing.start("POST /chat/direct", carrier, request_id="r1")
        with tracing.span("mia.dispatch", job_id="j1", model=""):
            tracing.inject({})
        tracing.end(started)

    return call


def flask_on_off(iterations: int, after_pair: Callable[[], object]) -> dict[str, float]:
    """Median µs per test-client request on one small view, with the request-id hook
    registered and without (alternating batches), and the difference, in wall clock and
    in this thread's CPU; ``after_pair`` runs, untimed, after each pair of batches (a
    flush of the spans they queued)."""
    from flask import Flask, jsonify

    from web.common.request_ids import register_request_ids

    clients = {}
    for name in ("off", "on"):
        app = Flask(f"bench-{name}")
        app.add_url_rule("/chat/direct", "direct", lambda: jsonify(ok=True), methods=["POST"])
        if name == "on":
            register_request_ids(app)
        clients[name] = app.test_client()
    wall: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    batch = BATCH // 5
    for _ in range(max(iterations // batch // 4, 5)):
        for name, client in clients.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            for _ in range(batch):
                client.post("/chat/direct", data="{}", content_type="application/json")
            wall[name].append((time.perf_counter() - started) / batch * 1e6)
            cpu[name].append((time.thread_time() - started_cpu) / batch * 1e6)
        after_pair()
    off, on = (statistics.median(wall[k]) for k in ("off", "on"))
    cpu_off, cpu_on = (statistics.median(cpu[k]) for k in ("off", "on"))
    return {
        "off_us": round(off, 1),
        "on_us": round(on, 1),
        "cost_us": round(on - off, 1),
        "cost_thread_cpu_us": round(cpu_on - cpu_off, 1),
    }


def measure(mode: str, iterations: int, work: Path) -> dict[str, Any]:
    """The hooks of one configuration (``--mode``), measured in this process."""
    out: dict[str, Any] = {}
    if mode == "multiprocess":  # PROMETHEUS_MULTIPROC_DIR set by the parent
        out["prometheus_multiprocess"] = timed(prometheus_call(), iterations, lambda: None)
        return out
    if mode == "tracing":  # OTEL_EXPORTER_OTLP_ENDPOINT set by the parent
        from opentelemetry import trace

        from tasks import tracing

        tracing.setup("mia-web")
        flush = getattr(trace.get_tracer_provider(), "force_flush", lambda: None)
        out["tracing_on"] = timed(tracing_call(), iterations, flush, TRACING_BATCH)
        out["flask_tracing"] = flask_on_off(iterations, flush)
        tracing.shutdown()
        return out
    out["prometheus"] = timed(prometheus_call(), iterations, lambda: None)
    record, clear = stats_call()
    out["fleet_stats"] = timed(record, iterations, clear)
    with request_hooks() as call:
        out["request_id"] = timed(call, iterations, lambda: None)
    out["log_line"] = timed(log_call(work / "hooks.log"), iterations, lambda: None)
    out["tracing_off"] = timed(tracing_call(), iterations, lambda: None)
    out["flask"] = flask_on_off(iterations, lambda: None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hook_calls", description=__doc__)
    parser.add_argument("--mode", choices=("default", "multiprocess", "tracing"), required=True)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.mode, args.iterations, args.work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
