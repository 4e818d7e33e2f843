"""``make bench``: the push path side by side with its floor and its baselines.

Starts its own redis-server, web tier (gunicorn, as ``make run``), one echo miner
(0 ms) and one stock Celery worker, then measures in one run:

- throughput: 64 keep-alive clients on ``POST /chat/direct`` from a separate
  process (``bench.load``) with two more 8-slot echo miners, and the CPU each part
  spent per request; in the full run, the same load on other serving stacks
  (``bench.throughput``);
- latency, in interleaved rounds after an uncounted warm-up: (a) Redis LPUSH->BRPOP,
  (b) stock Celery apply_async -> task start, (c) this project's dispatch, job
  accepted -> miner task start, (d) POST /chat/direct round trip; then (h) the
  restaurant assistant's two-stage overhead and (i, j) a turn over MQTT and HTTP;
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
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis

from bench import assistant, autotune, measure, report, scale, sections, throughput
from bench import mqtt as bench_mqtt
from bench.report import Row
from bench.stack import TOKEN, live_miners, start_stack
from scripts.processes import stop, wait_for
from scripts.stack import ROOT
from tasks.celery_app import create_celery
from web.services import build_services

RESULTS = ROOT / "bench" / "results"
SECTION_S: dict[str, float] = {}  # how long each part of the run took


@contextmanager
def timed(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        SECTION_S[name] = round(time.perf_counter() - started, 1)
        print(f"[bench] {name}: {SECTION_S[name]} s", file=sys.stderr, flush=True)


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
        client = redis.Redis.from_url(settings.redis_url)
        services = build_services(settings)
        stack.callback(services.waiter.close)  # before its Redis stops
        stock_client = create_celery("stock-client", settings, stock_transport=True)
        warm = max(samples // 10, 50)
        out["warmup"] = warm
        with timed("warm-up"):
            measure.stock_celery(stock_client, client, warm)
            measure.push_dispatch(services.jobs, warm)
            measure.chat_round_trip("127.0.0.1", settings.port, warm)
            assistant.two_stage_overhead("127.0.0.1", settings.port, warm // 5)
        rows = {
            "redis_floor": Row("redis_floor", "(a) Redis LPUSH->BRPOP floor", []),
            "celery": Row("celery", "(b) stock Celery publish->task start", []),
            "push": Row("push", "(c) MIA dispatch accepted->miner start", []),
            "chat": Row("chat", "(d) POST /chat/direct round trip (echo)", []),
        }
        # Interleave rounds so that machine noise lands on every row alike.
        rounds = 5
        with timed("latency rows"):
            for _ in range(rounds):
                n = samples // rounds
                floor = measure.redis_floor(client, settings.redis_url, n)
                rows["redis_floor"].samples.extend(floor)
                rows["celery"].samples.extend(measure.stock_celery(stock_client, client, n))
                rows["push"].samples.extend(measure.push_dispatch(services.jobs, n))
                rows["chat"].samples.extend(measure.chat_round_trip("127.0.0.1", settings.port, n))
        with timed("assistant"):
            two_stage = assistant.two_stage_overhead("127.0.0.1", settings.port, samples // 5)
        rows["two_stage"] = Row(
            "two_stage",
            "(h) 2-stage assistant: turn minus its two inferences",
            two_stage.pop("overhead_samples_ms"),
        )
        figures: dict[str, Any] = {
            "two_stage": two_stage,
            "conversation_push_ms": assistant.conversation("127.0.0.1", settings.port),
        }
        with timed("mqtt"):
            hop = sections.mqtt_hop(settings, work, max(samples // 10, 20))
        if hop is not None:
            over_mqtt, over_http = hop
            rows["mqtt"] = Row("mqtt", "(i) assistant turn over MQTT", over_mqtt)
            rows["mqtt_http"] = Row("mqtt_http", "(j) the same turn over HTTP", over_http)
        figures["mqtt"] = bench_mqtt.summary(*hop) if hop else {}
        stop(push_miner)
        wait_for(lambda: live_miners(settings.api_url) == 0, 10, "the push miner to leave")
        # The conversation runs beside the polling miner, before the long-poll one: a
        # long-poll still open when its miner stops would lease the next job to nobody,
        # and that job would wait out its lease (30 s).
        with timed("legacy"):
            polled, conversation = sections.legacy_rows(
                settings, services, work, poll_samples, 60 if quick else samples // 5, quick
            )
            figures["conversation_polling_ms"] = conversation
            rows.update((row.key, row) for row in polled)
        key = services.auth.register("bench-empty", TOKEN, "legacy").key
        rows["empty_poll"] = Row(
            "empty_poll",
            "(g) GET /get_work round trip, nothing queued (204)",
            measure.empty_poll("127.0.0.1", settings.port, key, samples // 5),
        )
        with timed("engines"):
            out["engines"] = sections.engine_rows(settings, work, quick)
    out["rows"], out["assistant"] = rows, figures
    return out


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a check in under a minute")
    parser.add_argument("--samples", type=int, default=0)
    args = parser.parse_args(argv)
    samples = args.samples or (600 if args.quick else 3000)
    poll_samples = 2 if args.quick else 24  # each waits up to a 2 s polling cycle
    started, before = time.time(), machine()
    found = run(samples, poll_samples, args.quick)
    rows: dict[str, Row] = found["rows"]
    figures: dict[str, Any] = found["assistant"]
    figures["classifier"] = assistant.classifier_quality()
    figures["prompt"] = assistant.prompt_sizes()
    # Sections with stacks of their own, run after the main one has stopped.
    with timed("scale"):
        scaled = None if args.quick else scale.run(quick=False)
    with timed("autotune"):
        tuned = autotune.run(quick=args.quick)
    summary = report.summary(rows)
    engine_summary = [row.summary() for row in found["engines"]]
    tp = found["throughput"]
    checks = {
        **report.targets(summary),
        "chat_req_per_s_ge_500_at_64_clients": tp["req_per_s"] >= 500 and tp["errors"] == 0,
        **(
            {
                "scale_dispatch_p50_le_1.2x_same_heartbeat_load": scaled["dispatch_ratio"] <= 1.2,
                "scale_dispatch_p50_le_1.2x_vs_no_heartbeats": scaled["dispatch_ratio_to_idle"]
                <= 1.2,
            }
            if scaled
            else {}
        ),
        **report.engine_targets(engine_summary),
        **report.assistant_targets(figures),
    }
    after = machine()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": before,
        "load_avg_after": after["load_avg"],
        "quick": args.quick,
        "seconds": round(time.time() - started),
        "section_s": SECTION_S,
        "warmup_samples_per_row": found["warmup"],
        "summary": summary,
        "throughput": tp,
        "serving": found["serving"],
        "scale": scaled,
        "autotune": tuned,
        "engines": engine_summary,
        "assistant": figures,
        "targets": checks,
    }
    markdown = "\n\n".join(
        [
            "# MIA push-path benchmark",
            report.preamble(meta, samples),
            "## Latency, side by side (one run, rounds interleaved)",
            report.table(list(rows.values()), rows["redis_floor"], rows["celery"]),
            "## Throughput: POST /chat/direct, 64 clients (echo)",
            throughput.markdown(tp, found["serving"]),
            scale.markdown(scaled) if scaled else "## Scale\n\nFull run only (`make bench`).",
            autotune.markdown(tuned),
            "## Engines (one miner, 8 slots, through the push path)",
            report.engine_table(engine_summary),
            "## Restaurant assistant",
            report.assistant_section(figures),
            "## Targets",
            "\n".join(f"- {k}: {v}" for k, v in checks.items()),
        ]
    )
    report.write(RESULTS, rows, markdown, meta)
    print(markdown)
    print(f"\nwritten to {RESULTS}/ (report.md, results.json, latency.png)")
    print(json.dumps({**summary, "req_per_s": tp["req_per_s"], "engines": engine_summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
