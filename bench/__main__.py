"""``make bench``: the push path side by side with its floor and its baselines.

Starts its own redis-server, web tier (gunicorn, as ``make run``), one echo miner
(0 ms) and one stock Celery worker, then measures in one run:

- throughput: 64 keep-alive clients on ``POST /chat/direct`` from a separate
  process (``bench.load``) with two more 8-slot echo miners, and the CPU each part
  spent per request; in the full run, each serving stack, the WebSocket included
  (``bench.serving``);
- latency, in interleaved rounds after an uncounted warm-up: (a) Redis LPUSH->BRPOP,
  (b) stock Celery apply_async -> task start, (c) this project's dispatch, job
  accepted -> miner task start, (d) POST /chat/direct round trip; then (h) the
  restaurant assistant's two-stage overhead and (i, j) a turn over MQTT and HTTP;
- against the stock stack (``bench.versus``: a Flask view on gunicorn that waits on a
  no-op Celery task's ``.get()``, up beside the product): (k, l) the round trip of
  each, interleaved, a new connection each, and both at 64 clients with the CPU each
  process spent per request; beside them the stock stack's two frameworks alone
  (``bench.floor``: its front door without Celery, a bare Celery round trip), what any
  Flask + Celery product takes at least; then each per-request hook of the web tier on
  and off (``bench.hooks``);
- with the push miner stopped, the pickup latency (job accepted -> leased) of a real
  legacy miner (``python -m miners.legacy``): (e) polling ``/get_work`` every 2 s,
  (f) long-polling, and (g) the round trip of an empty poll;
- per engine this machine has (``bench.engines``; echo alone with ``--quick``):
  tokens/s of one miner sequential vs 8 concurrent jobs, and time to first token
  over SSE against the engine called in-process.

Then, each with a stack of its own: scale, 2 vs 1,000 simulated live miners
(``bench.scale``, full run only), and the slot count auto-tuning chooses per engine
(``bench.autotune``). Prints the report and, last, one JSON line; writes report.md,
results.json and latency.png under bench/results/. The machine's cores and load
average before and after are part of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench import assistant, autotune, document, measure, report, scale, sections, versus
from bench import mqtt as bench_mqtt
from bench.clients import Clients, connect, legacy_key
from bench.report import Row
from bench.stack import live_miners, start_stack
from scripts.launch import ROOT
from scripts.processes import stop, wait_for
from tasks.celery_app import create_celery
from tasks.settings import Settings

RESULTS = ROOT / "bench" / "results"
SECTION_S: dict[str, float] = {}  # how long each part of the run took
ROUNDS = 5  # the core rows' interleaved rounds


@contextmanager
def timed(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        SECTION_S[name] = round(time.perf_counter() - started, 1)
        print(f"[bench] {name}: {SECTION_S[name]} s", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Bench:
    """The bench's stack and what it measures it with: its settings, the product's job
    client (``bench.clients``), a Redis client and a stock Celery client."""

    settings: Settings
    work: Path
    clients: Clients
    redis: redis.Redis
    stock: Celery

    @property
    def port(self) -> int:
        return self.settings.port


def open_bench(stack: ExitStack, settings: Settings, work: Path) -> Bench:
    """The clients of ``Bench`` for the stack of ``settings``, closed with ``stack``."""
    clients = stack.enter_context(connect(settings))  # closed before its Redis stops
    client = redis.Redis.from_url(settings.redis_url)
    stock = create_celery("stock-client", settings, stock_transport=True)
    return Bench(settings, work, clients, client, stock)


def warm_up(bench: Bench, n: int) -> None:
    """Connections, pools, Lua scripts and imports warm on every path; not counted."""
    measure.stock_celery(bench.stock, bench.redis, n)
    measure.push_dispatch(bench.clients.jobs, n)
    measure.chat_round_trip("127.0.0.1", bench.port, n)
    assistant.two_stage_overhead("127.0.0.1", bench.port, n // 5)


def core_rows(bench: Bench, samples: int) -> dict[str, Row]:
    """(a) to (d), in interleaved rounds so that machine noise lands on every row alike."""
    rows = {
        "redis_floor": Row("redis_floor", "(a) Redis LPUSH->BRPOP floor", []),
        "celery": Row("celery", "(b) stock Celery publish->task start", []),
        "push": Row("push", "(c) MIA dispatch accepted->miner start", []),
        "push_session": Row("push_session", "(c) the same, a session's turns (affinity)", []),
        "push_prompt": Row("push_prompt", "(c) the same, a shared long system prompt", []),
        "chat": Row("chat", "(d) POST /chat/direct round trip (echo)", []),
    }
    n = samples // ROUNDS
    for _ in range(ROUNDS):
        rows["redis_floor"].samples.extend(
            measure.redis_floor(bench.redis, bench.settings.redis_url, n)
        )
        rows["celery"].samples.extend(measure.stock_celery(bench.stock, bench.redis, n))
        rows["push"].samples.extend(measure.push_dispatch(bench.clients.jobs, n))
        for kind in ("session", "prompt"):
            rows[f"push_{kind}"].samples.extend(
                measure.push_dispatch(bench.clients.jobs, n, affinity=kind)
            )
        rows["chat"].samples.extend(measure.chat_round_trip("127.0.0.1", bench.port, n))
    return rows


def assistant_rows(bench: Bench, samples: int, rows: dict[str, Row]) -> dict[str, Any]:
    """(h) the two-stage overhead and one conversation, then (i, j) a turn over MQTT and
    over HTTP: rows added to ``rows``; the assistant's figures."""
    with timed("assistant"):
        two_stage = assistant.two_stage_overhead("127.0.0.1", bench.port, samples // 5)
    overhead = two_stage.pop("overhead_samples_ms")
    label = "(h) 2-stage assistant: turn minus its two inferences"
    rows["two_stage"] = Row("two_stage", label, overhead)
    figures: dict[str, Any] = {
        "two_stage": two_stage,
        "conversation_push_ms": assistant.conversation("127.0.0.1", bench.port),
    }
    with timed("mqtt"):
        hop = sections.mqtt_hop(bench.settings, bench.work, max(samples // 10, 20))
    if hop is not None:
        over_mqtt, over_http = hop
        rows["mqtt"] = Row("mqtt", "(i) assistant turn over MQTT", over_mqtt)
        rows["mqtt_http"] = Row("mqtt_http", "(j) the same turn over HTTP", over_http)
    figures["mqtt"] = bench_mqtt.summary(*hop) if hop else {}
    return figures


def legacy_rows(
    bench: Bench, push_miner: subprocess.Popen[bytes], sizes: tuple[int, int], quick: bool
) -> tuple[dict[str, Row], list[float]]:
    """(e), (f) and (g) with the push miner stopped: the rows, and the conversation's
    turns with only the polling miner to answer. ``sizes``: samples, poll samples."""
    samples, poll_samples = sizes
    stop(push_miner)
    wait_for(lambda: live_miners(bench.settings.api_url) == 0, 10, "the push miner to leave")
    # The conversation runs beside the polling miner, before the long-poll one: a
    # long-poll still open when its miner stops would lease the next job to nobody,
    # and that job would wait out its lease (30 s).
    with timed("legacy"):
        polled, conversation = sections.legacy_rows(
            bench.settings,
            bench.clients.jobs,
            bench.work,
            poll_samples,
            60 if quick else samples // 5,
            quick,
        )
    rows = {row.key: row for row in polled}
    key = legacy_key(bench.settings, "bench-empty")
    rows["empty_poll"] = Row(
        "empty_poll",
        "(g) GET /get_work round trip, nothing queued (204)",
        measure.empty_poll("127.0.0.1", bench.port, key, samples // 5),
    )
    return rows, conversation


def run(samples: int, poll_samples: int, quick: bool = False) -> dict[str, Any]:
    """Every measurement that needs the bench's own stack, in one run."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-bench-{os.getpid()}"
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        with timed("stack start"):
            settings, push_miner = start_stack(stack, work)
        # First, while nothing else of the bench's listens to results in this process.
        with timed("throughput"):
            out["throughput"], out["serving"] = sections.throughput_section(settings, work, quick)
        bench = open_bench(stack, settings, work)
        out["warmup"] = max(samples // 10, 50)
        with timed("warm-up"):
            warm_up(bench, out["warmup"])
        with timed("latency rows"):
            rows = core_rows(bench, samples)
        with timed("stock stack"):
            out["stock_stack"], stock_rows = versus.run(settings, work, quick)
        rows.update({row.key: row for row in stock_rows})
        with timed("hooks"):
            out["hooks"] = sections.hooks_section(settings, work, quick)
        figures = assistant_rows(bench, samples, rows)
        polled, figures["conversation_polling_ms"] = legacy_rows(
            bench, push_miner, (samples, poll_samples), quick
        )
        rows.update(polled)
        with timed("engines"):
            out["engines"] = sections.engine_rows(settings, work, quick)
    out["rows"], out["assistant"] = rows, figures
    return out


def measure_all(args: argparse.Namespace, samples: int) -> tuple[dict[str, Any], dict[str, Row]]:
    """Every section, in order: the report's ``meta`` (results.json) and the rows."""
    started, before = time.time(), report.machine()
    found = run(samples, 2 if args.quick else 24, args.quick)  # each poll waits up to 2 s
    rows: dict[str, Row] = found["rows"]
    figures: dict[str, Any] = found["assistant"]
    figures["classifier"] = assistant.classifier_quality()
    figures["prompt"] = assistant.prompt_sizes()
    # Sections with stacks of their own, run after the main one has stopped.
    with timed("scale"):
        scaled = None if args.quick else scale.run(quick=False)
    with timed("autotune"):
        tuned = autotune.run(quick=args.quick)
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": before,
        "load_avg_after": report.machine()["load_avg"],
        "quick": args.quick,
        "seconds": round(time.time() - started),
        "section_s": SECTION_S,
        "warmup_samples_per_row": found["warmup"],
        "summary": report.summary(rows),
        "throughput": found["throughput"],
        "serving": found["serving"],
        "stock_stack": found["stock_stack"],
        "hooks": found["hooks"],
        "scale": scaled,
        "autotune": tuned,
        "engines": [row.summary() for row in found["engines"]],
        "assistant": figures,
    }
    meta["targets"] = document.targets(meta)
    return meta, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a check in under a minute")
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    args = parser.parse_args(argv)
    samples = args.samples or (600 if args.quick else 3000)
    meta, rows = measure_all(args, samples)
    markdown = document.document(meta, rows, samples)
    report.write(args.out, rows, markdown, meta)
    print(markdown)
    print(f"\nwritten to {args.out}/ (report.md, results.json, latency.png)")
    headline = {**meta["summary"], "req_per_s": meta["throughput"]["req_per_s"]}
    headline["vs_stock_stack"] = meta["stock_stack"]["ratios"]
    print(json.dumps({**headline, "engines": meta["engines"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
