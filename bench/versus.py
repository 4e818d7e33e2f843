"""The product against the stock stack (``bench.naive``), both up at once.

    python -m bench.versus [--quick]

(standalone: its own stack as ``make bench`` starts it). The stock stack runs on the
bench's own redis-server (its DB 1, so that the two kombu transports' bookkeeping keys
never meet): gunicorn gthread 2 x 8 and one solo-pool worker. Then, in one run:

- latency: ``POST /chat/direct`` on each, interleaved one request at a time (the
  order alternating), each on a new connection, after an uncounted warm-up;
- throughput: 64 keep-alive clients (``bench.load``) on each in turn, in interleaved
  rounds (the product with its throughput miners, as ``bench.throughput``), and the
  CPU each process spent per request.

Beside them, the stock stack's two frameworks alone (``bench.floor``): its front door
without Celery and a Celery round trip without the web tier, interleaved with the
round trips above and, for the front door, in the load's rounds. The figures' ratios,
issue 25's targets and the report's section: ``bench.versus_report``.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from bench import floor, throughput, versus_report
from bench.report import Row, percentile
from scripts.launch import BIN, answers_ok, free_port, scrubbed_environ, start
from scripts.processes import spawn, stop, wait_for
from tasks.settings import Settings

BODY = json.dumps({"message": "Hello", "max_tokens": 8})
HEADERS = {"content-type": "application/json"}
# What the 64 clients post to, by side (``bench.floor``: the front door alone).
PATHS = {"product": "/chat/direct", "stock": "/chat/direct", floor.FRONT_DOOR: floor.PATH}
# CPU roles (``bench.throughput.ROLES``) of each side, as the report names them.
STOCK_ROLES = {"stock web": "web", "stock worker": "miner / worker", "redis": "redis"}
CPU_ROLES = {
    "product": {"web": "web", "miner": "miner / worker", "redis": "redis"},
    "stock": STOCK_ROLES,
    floor.FRONT_DOOR: STOCK_ROLES,
}


def naive_argv(port: int) -> tuple[list[str], list[str]]:
    """The stock stack's web tier and worker, as its docstring (``bench.naive``) says.
    The worker, like the bench's miners, runs without mingle and gossip."""
    web = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    web += ["--worker-class", "gthread", "--threads", "8", "--no-control-socket"]
    worker = [str(BIN / "celery"), "-A", "bench.naive", "worker", "-P", "solo", "-Q", "naive"]
    worker += ["-n", "naive@%h", "--without-mingle", "--without-gossip"]
    return [*web, "bench.naive:create_app()"], worker


def answers_chat(port: int) -> bool:
    """Whether one ``POST /chat/direct`` on ``port`` answers 200 (its worker is up)."""
    try:
        return post(port) is not None
    except (OSError, RuntimeError):
        return False


@contextmanager
def naive_stack(redis_url: str, work: Path) -> Iterator[int]:
    """``bench.naive`` up on ``redis_url``; its port."""
    env = {**scrubbed_environ(), "NAIVE_REDIS_URL": redis_url}
    port = free_port()
    web_argv, worker_argv = naive_argv(port)
    ready = partial(answers_ok, f"http://127.0.0.1:{port}/healthz")
    web = start(web_argv, env, work / "naive-web.log", ready, 30, "the stock stack's web tier")
    worker = spawn(worker_argv, env, work / "naive-worker.log")
    try:
        wait_for(partial(answers_chat, port), 60, "the stock stack's worker", interval=0.2)
        yield port
    finally:
        stop(worker)
        stop(web)


def post(port: int, path: str = "/chat/direct") -> float:
    """One ``POST`` of the chat body on a new connection: its round trip in ms, connect
    included (RuntimeError unless 200)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, BODY, HEADERS)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"port {port} answered {response.status}: {payload!r}")
    return elapsed


def posts(ports: dict[str, int]) -> dict[str, Callable[[], float]]:
    """Each side's ``post``, by name."""
    return {side: partial(post, port) for side, port in ports.items()}


def interleaved(probes: dict[str, Callable[[], float]], samples: int) -> dict[str, list[float]]:
    """``samples`` round trips per side (each a call of its probe: ms), one side after
    another, the order turned by one side every round so that each side goes first
    (and last) as often as any."""
    out: dict[str, list[float]] = {side: [] for side in probes}
    order = list(probes)
    for i in range(samples):
        turn = i % len(order)
        for side in order[turn:] + order[:turn]:
            out[side].append(probes[side]())
    return out


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


def side_cpu(side: str, measured: dict[str, Any]) -> dict[str, float]:
    """CPU ms per request of ``side``'s own processes, the load generator's, in all."""
    cpu = measured["cpu_ms_per_request"]
    out = {name: float(cpu.get(role, 0.0)) for role, name in CPU_ROLES[side].items()}
    out["load generator"] = float(cpu.get("load generator", 0.0))
    out["all"] = round(sum(out.values()), 3)
    return out


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's throughput rounds: each round's requests/s, the means, the errors."""
    cpu = {k: round(statistics.fmean(r["cpu"][k] for r in runs), 3) for k in runs[0]["cpu"]}
    return {
        "rounds_req_per_s": [r["req_per_s"] for r in runs],
        "req_per_s": round(statistics.fmean(r["req_per_s"] for r in runs), 1),
        "errors": sum(int(r["errors"]) for r in runs),
        "p50_ms": round(statistics.fmean(r["p50_ms"] for r in runs), 2),
        "p99_ms": round(statistics.fmean(r["p99_ms"] for r in runs), 2),
        "cpu_ms_per_request": cpu,
    }


def loads(
    settings: Settings, work: Path, port: int, rounds: int, seconds: tuple[float, float]
) -> dict[str, Any]:
    """64 clients on each side (and the stock stack's front door alone) in turn,
    ``rounds`` times; ``seconds``: measured, warm-up."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in PATHS}
    ports = {"product": settings.port, "stock": port, floor.FRONT_DOOR: port}
    with throughput.miners(settings, work):
        for _ in range(rounds):
            for side, path in PATHS.items():
                measured = throughput.load(ports[side], throughput.CLIENTS, *seconds, path)
                runs[side].append({**measured, "cpu": side_cpu(side, measured)})
    return {side: mean_of(found) for side, found in runs.items()}


def run(settings: Settings, work: Path, quick: bool) -> tuple[dict[str, Any], list[Row]]:
    """Both sides measured: the figures (results.json's ``stock_stack``) and two rows
    for the latency table."""
    samples, warmup = (400, 50) if quick else (2000, 200)
    rounds, seconds = (1, (3.0, 1.0)) if quick else (2, (10.0, 2.0))
    naive_url = settings.redis_url.rsplit("/", 1)[0] + "/1"  # the same redis-server
    with naive_stack(naive_url, work) as port:
        probes: dict[str, Callable[[], float]] = {
            **posts({"product": settings.port, "stock": port}),
            floor.FRONT_DOOR: partial(post, port, floor.PATH),
        }
        with ExitStack() as halves:
            granian = halves.enter_context(floor.granian_front_door(naive_url, work))
            if granian is not None:
                probes[floor.GRANIAN] = partial(post, granian, floor.PATH)
            probes[floor.CELERY] = halves.enter_context(floor.CeleryRoundTrip(naive_url))
            interleaved(probes, warmup)
            latency = interleaved(probes, samples)
        load = loads(settings, work, port, rounds, seconds)
    latency |= floor.added(latency)
    found: dict[str, Any] = {
        "samples": samples,
        "warmup": warmup,
        "latency": {side: stats(times) for side, times in latency.items()},
        "throughput": load,
    }
    found["ratios"] = versus_report.ratios(found["latency"], found["throughput"])
    rows = [
        Row("chat_new_conn", "(k) POST /chat/direct, new connection each", latency["product"]),
        Row("stock_stack", "(l) the same on the stock stack (Flask + .get())", latency["stock"]),
    ]
    return found, rows


def main(argv: list[str] | None = None) -> int:
    """This section alone, on a stack of its own as ``make bench`` starts it."""
    import argparse
    import os
    from contextlib import ExitStack

    from bench.stack import start_stack

    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-versus-{os.getpid()}"
    with ExitStack() as stack:
        settings, _ = start_stack(stack, work)
        found, _rows = run(settings, work, args.quick)
    print(versus_report.markdown(found))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
