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
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from bench import throughput
from bench.report import Row, percentile
from scripts.launch import BIN, answers_ok, free_port, scrubbed_environ, start
from scripts.processes import spawn, stop, wait_for
from tasks.settings import Settings

BODY = json.dumps({"message": "Hello", "max_tokens": 8})
HEADERS = {"content-type": "application/json"}
SIDES = ("product", "stock")
# CPU roles (``bench.throughput.ROLES``) of each side, as the report names them.
CPU_ROLES = {
    "product": {"web": "web", "miner": "miner / worker", "redis": "redis"},
    "stock": {"stock web": "web", "stock worker": "miner / worker", "redis": "redis"},
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


def post(port: int) -> float:
    """One ``POST /chat/direct`` on a new connection: its round trip in ms, connect
    included (RuntimeError unless 200)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/chat/direct", BODY, HEADERS)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"port {port} answered {response.status}: {payload!r}")
    return elapsed


def interleaved(ports: dict[str, int], samples: int) -> dict[str, list[float]]:
    """``samples`` round trips per side, one side after another, the order turned by
    one side every round so that each side goes first (and last) as often as any."""
    out: dict[str, list[float]] = {side: [] for side in ports}
    order = list(ports)
    for i in range(samples):
        turn = i % len(order)
        for side in order[turn:] + order[:turn]:
            out[side].append(post(ports[side]))
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
    """64 clients on each side in turn, ``rounds`` times; ``seconds``: measured, warm-up."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    ports = {"product": settings.port, "stock": port}
    with throughput.miners(settings, work):
        for _ in range(rounds):
            for side in SIDES:
                measured = throughput.load(ports[side], throughput.CLIENTS, *seconds)
                runs[side].append({**measured, "cpu": side_cpu(side, measured)})
    return {side: mean_of(found) for side, found in runs.items()}


def run(settings: Settings, work: Path, quick: bool) -> tuple[dict[str, Any], list[Row]]:
    """Both sides measured: the figures (results.json's ``stock_stack``) and two rows
    for the latency table."""
    samples, warmup = (400, 50) if quick else (2000, 200)
    rounds, seconds = (1, (3.0, 1.0)) if quick else (2, (10.0, 2.0))
    naive_url = settings.redis_url.rsplit("/", 1)[0] + "/1"  # the same redis-server
    with naive_stack(naive_url, work) as port:
        ports = {"product": settings.port, "stock": port}
        interleaved(ports, warmup)
        latency = interleaved(ports, samples)
        load = loads(settings, work, port, rounds, seconds)
    found: dict[str, Any] = {
        "samples": samples,
        "warmup": warmup,
        "latency": {side: stats(latency[side]) for side in SIDES},
        "throughput": load,
    }
    lat, tp = found["latency"], found["throughput"]
    found["ratios"] = {
        "p50": round(lat["product"]["p50_ms"] / lat["stock"]["p50_ms"], 3),
        "p99": round(lat["product"]["p99_ms"] / lat["stock"]["p99_ms"], 3),
        "req_per_s": round(tp["product"]["req_per_s"] / tp["stock"]["req_per_s"], 3),
    }
    rows = [
        Row("chat_new_conn", "(k) POST /chat/direct, new connection each", latency["product"]),
        Row("stock_stack", "(l) the same on the stock stack (Flask + .get())", latency["stock"]),
    ]
    return found, rows


def targets(found: dict[str, Any]) -> dict[str, Any]:
    """Issue 25's point 2, against the stock stack measured in the same run."""
    r, tp = found["ratios"], found["throughput"]
    return {
        "chat_vs_stock_p50_ratio": r["p50"],
        "chat_p50_le_0.6x_stock": r["p50"] <= 0.6,
        "chat_p99_le_0.6x_stock": r["p99"] <= 0.6,
        "chat_req_per_s_ge_1.5x_stock": r["req_per_s"] >= 1.5
        and tp["product"]["errors"] == 0
        and tp["stock"]["errors"] == 0,
    }


def markdown(found: dict[str, Any]) -> str:
    lat, tp, r = found["latency"], found["throughput"], found["ratios"]
    names = {"product": "this product (echo, 0 ms)", "stock": "stock stack"}
    lines = [
        "Both up at once on the bench's redis-server: the stock stack (`bench.naive`) is one "
        "Flask view on gunicorn gthread 2 x 8 that publishes a no-op Celery task with "
        "`apply_async(queue=...)` and waits with `.get()`, one solo-pool worker, `acks_late`, "
        "prefetch 1, the project's pinned Celery, kombu and redis-py. Latency: "
        f"{found['samples']} requests each after {found['warmup']} not counted, "
        "interleaved one at a time, each on a new connection (connect included).",
        "",
        "| POST /chat/direct | n | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {names[s]} | {lat[s]['n']} | {lat[s]['p50_ms']} | {lat[s]['p99_ms']} "
            f"| {lat[s]['mean_ms']} |"
            for s in SIDES
        ),
        f"| **product / stock** | | **{r['p50']}x** | **{r['p99']}x** | |",
        "",
        f"{throughput.CLIENTS} keep-alive clients on each in turn, in interleaved rounds "
        "(the product with its two throughput miners beside its own, as above); CPU per "
        "request by process (ms, warm-up included):",
        "",
        "| | req/s | each round | errors | p50 ms | p99 ms "
        "| web | miner / worker | redis | load generator | all |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SIDES:
        t, cpu = tp[s], tp[s]["cpu_ms_per_request"]
        lines.append(
            f"| {names[s]} | {t['req_per_s']} | {t['rounds_req_per_s']} | {t['errors']} "
            f"| {t['p50_ms']} | {t['p99_ms']} | {cpu['web']} | {cpu['miner / worker']} "
            f"| {cpu['redis']} | {cpu['load generator']} | {cpu['all']} |"
        )
    lines.append(f"| **product / stock** | **{r['req_per_s']}x** | | | | | | | | | |")
    return "\n".join(lines)


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
    print(markdown(found))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
