"""What dispatch affinity costs the choice itself: ``reserve.lua`` with and without it.

    python -m bench.affinity --redis redis://127.0.0.1:6379/14 --samples 5000

On the Redis named (flushed: give it a database of its own), two live miners of 64
slots; in interleaved rounds, one ``RedisSelector.choose`` and its ``release`` per
sample: a job as today (no session, no system prompt), a session's turn, a job with
a long shared system prompt, and today's selector (no affinity at all). Prints one
JSON line of p50/p99 microseconds per kind and the ratio of each p50 to today's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import redis

from bench.measure import LONG_SYSTEM
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import Affinity, RedisSelector
from web.fleet.registry import Heartbeat, Registry

ROUNDS = 10
KINDS = ("today", "plain", "session", "prompt")


def job(kind: str, i: int) -> Job:
    head = [{"role": "system", "content": LONG_SYSTEM}] if kind == "prompt" else []
    session = f"bench-{i % 8}" if kind == "session" else ""  # 8 conversations
    return Job([*head, {"role": "user", "content": f"bench {i}"}], affinity=session)


def run(url: str, samples: int) -> dict[str, dict[str, float]]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    keys, scripts = Keys("bench"), Scripts(client)
    registry = Registry(client, keys, 600.0, scripts)
    for miner in ("m1", "m2"):
        registry.beat(Heartbeat(miner, "available", 64, 64, ["echo"], "echo"))
    selectors = {
        "today": RedisSelector(client, scripts, keys, 60),
        **{k: RedisSelector(client, scripts, keys, 60, Affinity(600)) for k in KINDS[1:]},
    }
    took: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(ROUNDS):
        for kind in KINDS:
            selector = selectors[kind]
            for i in range(samples // ROUNDS):
                one = job(kind, i)
                began = time.perf_counter()
                picked = selector.choose(one)
                took[kind].append((time.perf_counter() - began) * 1e6)
                assert picked, "no miner chosen"
                selector.release(picked)
    client.flushdb()
    out = {}
    for kind, values in took.items():
        values.sort()
        out[kind] = {
            "p50_us": round(statistics.median(values), 1),
            "p99_us": round(values[int(0.99 * (len(values) - 1))], 1),
        }
    for kind in KINDS[1:]:
        out[kind]["p50_vs_today"] = round(out[kind]["p50_us"] / out["today"]["p50_us"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.affinity", description=__doc__)
    parser.add_argument("--redis", required=True, help="a Redis database of its own (flushed)")
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.redis, args.samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
