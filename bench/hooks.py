"""What each per-request hook of the web tier costs, on and off (issue 25, point 4).

    python -m bench.hooks [--iterations 20000]

``bench.hook_calls`` calls each hook in-process as a request does (its docstring says
how it is timed), once per configuration, each in a process of its own, since
Prometheus's multiprocess mode and tracing are chosen once per process: ``default`` (as
the bench's web tier: Prometheus in-process, tracing off), ``multiprocess``
(``PROMETHEUS_MULTIPROC_DIR``, as ``make run``) and ``tracing`` (spans exported over
OTLP/HTTP to a sink here, that answers 200 and keeps nothing). Off, a hook is not
called; the tracing hook's off is tracing off (the checks the request path still makes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TARGET_MS = 0.1
HOOKS = (
    ("prometheus", "Prometheus: `observe_result` (2 histograms, 2 counters) + the reply counter"),
    ("prometheus_multiprocess", "the same with `PROMETHEUS_MULTIPROC_DIR` (as `make run`)"),
    ("fleet_stats", "fleet stats: `Watchdog.record` (one JSON line noted in memory)"),
    ("request_id", "request id: the before / after / teardown hooks, id made (uuid4)"),
    ("log_line", "one JSON log line with its request id, to a file"),
    ("tracing_off", "tracing off: the checks the request path still makes"),
    ("tracing_on", "tracing on: request span, dispatch span, `traceparent` injected"),
)


class Sink(ThreadingHTTPServer):
    """An OTLP/HTTP collector that keeps nothing: reads each export, answers 200, and
    counts them (``exports``)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.exports = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class SinkHandler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.exports += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def sink() -> Iterator[Sink]:
    """A ``Sink`` on a free port, serving for the ``with`` block."""
    server = Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run(iterations: int = 20000) -> dict[str, Any]:
    """Every configuration, each in a process of its own: the hooks' figures."""
    from scripts.launch import ROOT, scrubbed_environ

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mia-hooks-") as tmp, sink() as collector:
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_TRACES_SAMPLER": "always_on"}
        for mode, extra in (
            ("default", {}),
            ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": tmp}),
            ("tracing", traced),
        ):
            argv = [sys.executable, "-m", "bench.hook_calls", "--mode", mode, "--work", tmp]
            env = {**scrubbed_environ(), **extra}
            out = subprocess.run(
                [*argv, "--iterations", str(iterations)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if out.returncode:
                raise RuntimeError(f"bench.hooks --mode {mode} failed: {out.stderr[-2000:]}")
            found.update(json.loads(out.stdout.strip().splitlines()[-1]))
    found["iterations"], found["otlp_exports"] = iterations, collector.exports
    return found


def lines_per_request(log: Path, samples: int, send: Callable[[int], object]) -> float:
    """Lines the web tier wrote to ``log`` per request while ``send(samples)`` ran."""
    before = len(log.read_bytes().splitlines()) if log.is_file() else 0
    send(samples)
    return round((len(log.read_bytes().splitlines()) - before) / samples, 3)


def markdown(found: dict[str, Any], chat_p50_ms: float) -> str:
    """The hooks' table; ``chat_p50_ms``: the round trip of the same run, for the share."""
    lines = [
        f"Each hook called in-process as a request calls it, {found['iterations']} times in "
        "batches of 500 (tracing on: 200, its spans under the exporter's batch, exported "
        "in a flush after each batch; `bench.hook_calls`); median of the batches' time per "
        "call (this thread: wall clock, and its CPU), and the process's CPU per call over "
        "all threads (with tracing on, the span exporter's too: "
        f"{found['otlp_exports']} OTLP/HTTP exports to a local sink). "
        "Off, a hook is not called; tracing off is what the request path still checks. "
        f"Share: of the `/chat/direct` round trip's p50 in this run ({chat_p50_ms:.3f} ms).",
        "",
        "| hook (on) | ms of the round trip (median per call) | this thread's CPU ms "
        f"| CPU ms per call, all threads | share | <= {TARGET_MS} ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, label in HOOKS:
        hook = found[key]
        ms = hook["median_us"] / 1000
        lines.append(
            f"| {label} | {ms:.4f} | {hook.get('thread_cpu_us', 0) / 1000:.4f} "
            f"| {hook['cpu_us'] / 1000:.4f} "
            f"| {ms / chat_p50_ms:.1%} | {'yes' if ms <= TARGET_MS else '**no**'} |"
        )
    flask, traced = found["flask"], found["flask_tracing"]
    lines += [
        "",
        "In a real Flask request (the test client, one small view, with the request-id "
        "hook registered against without, alternating batches, medians): "
        f"{flask['off_us'] / 1000:.4f} -> {flask['on_us'] / 1000:.4f} ms, "
        f"**{flask['cost_us'] / 1000:.4f} ms** for the hook with tracing off; with tracing "
        f"on {traced['off_us'] / 1000:.4f} -> {traced['on_us'] / 1000:.4f} ms, "
        f"**{traced['cost_us'] / 1000:.4f} ms** (its request span); in this thread's CPU "
        f"{flask.get('cost_thread_cpu_us', 0) / 1000:.4f} and "
        f"{traced.get('cost_thread_cpu_us', 0) / 1000:.4f} ms.",
        f"Log lines the web tier wrote per `/chat/direct` request in this run: "
        f"{found.get('web_log_lines_per_request', 'not measured')} (gunicorn's access log "
        "is off; a successful request logs nothing).",
    ]
    return "\n".join(lines)


def targets(found: dict[str, Any]) -> dict[str, bool]:
    """Issue 25's point 4: each hook, on, at most 0.1 ms of the round trip."""
    return {f"hook_{key}_le_0.1ms": found[key]["median_us"] / 1000 <= TARGET_MS for key, _ in HOOKS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks", description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.iterations)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
