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
round trips above and, for the front door, in the load's rounds.
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

from bench import floor, throughput
from bench.report import Row, percentile
from scripts.launch import BIN, answers_ok, free_port, scrubbed_environ, start
from scripts.processes import spawn, stop, wait_for
from tasks.settings import Settings

BODY = json.dumps({"message": "Hello", "max_tokens": 8})
HEADERS = {"content-type": "application/json"}
SIDES = ("product", "stock")
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
    found["ratios"] = ratios(found["latency"], found["throughput"])
    rows = [
        Row("chat_new_conn", "(k) POST /chat/direct, new connection each", latency["product"]),
        Row("stock_stack", "(l) the same on the stock stack (Flask + .get())", latency["stock"]),
    ]
    return found, rows


def ratios(lat: dict[str, Any], tp: dict[str, Any]) -> dict[str, float]:
    """The product's figures, and the frameworks' alone (``floor.FLOORS``, where measured),
    over the stock stack's."""
    product, stock = tp["product"], tp["stock"]
    return {
        "p50": round(lat["product"]["p50_ms"] / lat["stock"]["p50_ms"], 3),
        "p99": round(lat["product"]["p99_ms"] / lat["stock"]["p99_ms"], 3),
        "req_per_s": round(product["req_per_s"] / stock["req_per_s"], 3),
        **{
            f"{name}_{q}": round(lat[name][f"{q}_ms"] / lat["stock"][f"{q}_ms"], 3)
            for name in floor.FLOORS
            if name in lat
            for q in ("p50", "p99")
        },
        "cpu": round(product["cpu_ms_per_request"]["all"] / stock["cpu_ms_per_request"]["all"], 3),
    }


def targets(found: dict[str, Any]) -> dict[str, Any]:
    """Issue 25's point 2, against the stock stack measured in the same run; and whether
    0.6x is below what the stock stack's frameworks alone take (``bench.floor``)."""
    r, tp = found["ratios"], found["throughput"]
    lowest = floor.lowest(r)
    return {
        "chat_vs_stock_p50_ratio": r["p50"],
        "chat_p50_le_0.6x_stock": r["p50"] <= 0.6,
        "chat_p99_le_0.6x_stock": r["p99"] <= 0.6,
        "chat_req_per_s_ge_1.5x_stock": r["req_per_s"] >= 1.5
        and tp["product"]["errors"] == 0
        and tp["stock"]["errors"] == 0,
        "frameworks_alone_vs_stock_p50_ratio": lowest,
        "frameworks_alone_above_0.6x_stock": lowest > 0.6,
    }


def markdown(found: dict[str, Any]) -> str:
    lat, tp, r = found["latency"], found["throughput"], found["ratios"]
    names = {
        "product": "this product (echo, 0 ms)",
        "stock": "stock stack",
        floor.FRONT_DOOR: "stock stack's front door alone (`/chat/none`)",
        floor.GRANIAN: "the same front door under granian 2 x 8",
        floor.CELERY: "a Celery round trip alone (stock worker)",
        "floor": "front door + Celery, added round by round",
        "floor, granian": "front door under granian + Celery, added round by round",
    }
    cpu = floor.cpu(tp)
    lines = [
        "Both up at once on the bench's redis-server: the stock stack (`bench.naive`) is one "
        "Flask view on gunicorn gthread 2 x 8 that publishes a no-op Celery task with "
        "`apply_async(queue=...)` and waits with `.get()`, one solo-pool worker, `acks_late`, "
        "prefetch 1, the project's pinned Celery, kombu and redis-py. Latency: "
        f"{found['samples']} requests each after {found['warmup']} not counted, "
        "interleaved one at a time, each on a new connection (connect included). Beside "
        "them, the stock stack's two frameworks alone (`bench.floor`): its view without "
        "Celery (under its gunicorn, and under granian, the fastest WSGI server the bench "
        "has, which cannot serve the product's WebSocket), and a task message pushed from "
        "the bench's process with no Celery client code, its result heard on a "
        "subscription made once. Both halves are on the path of any product with a Flask "
        "web tier and Celery workers.",
        "",
        "| POST /chat/direct | n | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {names[s]} | {lat[s]['n']} | {lat[s]['p50_ms']} | {lat[s]['p99_ms']} "
            f"| {lat[s]['mean_ms']} |"
            for s in names
            if s in lat
        ),
        f"| **product / stock** | | **{r['p50']}x** | **{r['p99']}x** | |",
        *(
            f"| **{names[name]} / stock** | | **{r[f'{name}_p50']}x** | **{r[f'{name}_p99']}x** | |"
            for name in floor.FLOORS
            if f"{name}_p50" in r
        ),
        "",
        f"{throughput.CLIENTS} keep-alive clients on each in turn, in interleaved rounds "
        "(the product with its two throughput miners beside its own, as above); CPU per "
        "request by process (ms, warm-up included):",
        "",
        "| | req/s | each round | errors | p50 ms | p99 ms "
        "| web | miner / worker | redis | load generator | all |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in PATHS:
        t, c = tp[s], tp[s]["cpu_ms_per_request"]
        lines.append(
            f"| {names[s]} | {t['req_per_s']} | {t['rounds_req_per_s']} | {t['errors']} "
            f"| {t['p50_ms']} | {t['p99_ms']} | {c['web']} | {c['miner / worker']} "
            f"| {c['redis']} | {c['load generator']} | {c['all']} |"
        )
    lines += [
        f"| **product / stock** | **{r['req_per_s']}x** | | | | | | | | | **{r['cpu']}x** |",
        "",
        f"The frameworks alone spend at least {cpu['frameworks']} ms of CPU per request (the front "
        f"door's web tier {cpu['front_door_web']}, the stock worker {cpu['stock_worker']}); "
        "at 1.5x the stock stack's requests/s the product could spend "
        f"{cpu['product_budget_at_1.5x']} ms in all.",
    ]
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
